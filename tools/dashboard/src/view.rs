//! The page layout (header, navigation, footer) and how values are shown: times in UTC and
//! relative to the Redis clock, counts with thousands separators, MessagePack as JSON.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use maud::{html, Markup, DOCTYPE};

pub(crate) use crate::format::{iso_utc as utc, span};
use crate::format::{msgpack_json as to_json, not_msgpack, relative};

/// The stylesheet, shipped in the crate.
const STYLE: &str = include_str!("../assets/style.css");
/// The live-refresh script, shipped in the crate.
const SCRIPT: &str = include_str!("../assets/app.js");

/// `GET /assets/style.css`.
pub(crate) async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        STYLE,
    )
}

/// `GET /assets/app.js`.
pub(crate) async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        SCRIPT,
    )
}

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Workers,
    Schedules,
    History,
    Limits,
    Workflows,
    None,
}

/// What the layout shows around a page.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) title: &'a str,
    pub(crate) nav: Nav,
    pub(crate) read_only: bool,
    /// A logout button: credentials were given through the login form.
    pub(crate) logout: bool,
    /// A notice at the top (the outcome of an action).
    pub(crate) notice: Option<&'a str>,
}

/// The whole page around `body`.
pub(crate) fn layout(f: &Frame<'_>, body: Markup) -> Markup {
    let p = f.prefix;
    let item = |nav: Nav, href: String, label: &str| {
        html! {
            a href=(href) class=@if f.nav == nav { "active" } { (label) }
        }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " · scheduler" }
                link rel="stylesheet" href={ (p) "/assets/style.css" };
                script src={ (p) "/assets/app.js" } defer {}
            }
            body data-prefix=(p) {
                header.top {
                    a.brand href={ (p) "/" } { span.logo { "◷" } " scheduler" }
                    nav {
                        (item(Nav::Overview, format!("{p}/"), "Overview"))
                        (item(Nav::Workers, format!("{p}/workers"), "Workers"))
                        (item(Nav::Schedules, format!("{p}/schedules"), "Schedules"))
                        (item(Nav::History, format!("{p}/history"), "History"))
                        (item(Nav::Limits, format!("{p}/limits"), "Limits"))
                        (item(Nav::Workflows, format!("{p}/workflows"), "Workflows"))
                    }
                    div.right {
                        @if f.read_only { span.badge.ro title="Actions are disabled" { "read-only" } }
                        @if f.logout {
                            form method="post" action={ (p) "/logout" } {
                                button.link type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main {
                    @if let Some(n) = f.notice { div.notice role="status" { (n) } }
                    (body)
                }
                footer { "Counts and times by the Redis server's clock · times in UTC" }
            }
        }
    }
}

/// A failure inside the layout.
pub(crate) fn error_page(prefix: &str, status: StatusCode, message: &str) -> Markup {
    let title = status.canonical_reason().unwrap_or("Error");
    layout(
        &Frame {
            prefix,
            title,
            nav: Nav::None,
            read_only: false,
            logout: false,
            notice: None,
        },
        html! {
            section.card.error {
                h1 { (status.as_u16()) " " (title) }
                p #error-message { (message) }
                p { a href={ (prefix) "/" } { "Back to the overview" } }
            }
        },
    )
}

/// `1234567` as `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time: relative, with the UTC time in its tooltip.
pub(crate) fn when(t: i64, now: i64) -> Markup {
    html! { time datetime=(utc(t)) title=(utc(t)) { (relative(t, now)) } }
}

/// A MessagePack payload as pretty JSON; bytes that are not one MessagePack value in hex.
pub(crate) fn msgpack_json(bytes: &[u8]) -> String {
    match to_json(bytes) {
        Some(j) => serde_json::to_string_pretty(&j).unwrap_or_else(|_| j.to_string()),
        None => not_msgpack(bytes),
    }
}

/// An inline POST form with one button (an action), with an optional browser confirmation.
pub(crate) fn action(href: &str, label: &str, class: &str, confirm: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(href) data-confirm=[confirm] {
            button type="submit" class=(class) { (label) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts get thousands separators; times are UTC with ms; payloads decode to JSON.
    #[test]
    fn formatting() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
        assert_eq!(utc(1_772_366_429_123), "2026-03-01T12:00:29.123Z");
        assert_eq!(relative(31_000, 1_000), "in 30 s");
        assert_eq!(relative(0, 180_000), "3 min ago");
        assert_eq!(relative(500, 0), "now");
        let bytes = rmp_serde_like(&rmpv::Value::Array(vec![
            rmpv::Value::from(7),
            rmpv::Value::from("hi"),
        ]));
        assert_eq!(msgpack_json(&bytes), "[\n  7,\n  \"hi\"\n]");
        assert_eq!(
            msgpack_json(&[0x92, 0x01]),
            "<2 bytes, not MessagePack: 9201>"
        );
    }

    fn rmp_serde_like(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).expect("encode");
        out
    }
}
