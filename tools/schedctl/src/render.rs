//! Turning stored values into text for people and JSON for programs: times (ISO-8601 UTC plus
//! "in 29 s" / "3 min ago"), durations, MessagePack payloads, aligned tables. The formatting of
//! times, spans and payloads is the dashboard's ([`scheduler::dashboard::format`]), so both
//! show the same text.

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

pub(crate) use scheduler::dashboard::format::{iso_utc, msgpack_text, relative, span as human_ms};

/// `2026-03-01T12:00:29.123Z (in 29 s)`.
pub(crate) fn when(t_ms: i64, now_ms: i64) -> String {
    format!("{} ({})", iso_utc(t_ms), relative(t_ms, now_ms))
}

/// Parses a duration such as `60s`, `500ms`, `5m`, `5min`, `2h`, `1d`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 500ms, 5m, 2h, 1d)"))?;
    let per = match unit.trim() {
        "ms" => 1,
        "" | "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(per)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// A MessagePack payload as JSON ([`scheduler::dashboard::format::msgpack_json`]); bytes that
/// are not one MessagePack value become `{"undecodable_hex": "..."}`.
pub(crate) fn msgpack_json(bytes: &[u8]) -> Json {
    scheduler::dashboard::format::msgpack_json(bytes)
        .unwrap_or_else(|| json!({ "undecodable_hex": scheduler::dashboard::format::hex(bytes) }))
}

/// A text table: a header row, then rows; columns separated by two spaces, numbers right-aligned.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers; a header ending in `>` marks a right-aligned column (the `>`
    /// is not printed).
    pub(crate) fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn render(&self) -> String {
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let w = width.get(i).copied().unwrap_or(0);
                if self.right.get(i).copied().unwrap_or(false) {
                    let _ = write!(line, "{cell:>w$}");
                } else {
                    let _ = write!(line, "{cell:<w$}");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the values aligned: `name         send_reminder`.
pub(crate) fn pairs(rows: &[(String, String)]) -> String {
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter().fold(String::new(), |mut out, (k, v)| {
        let _ = writeln!(out, "{:<w$}  {v}", k);
        out
    })
}

/// The URL with any password replaced by `***`, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None if !userinfo.is_empty() => format!("{scheme}://***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations in the units an operator types.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(60_000));
        assert_eq!(parse_duration("60"), Ok(60_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }

    /// MessagePack as rmp-serde writes it, shown as text and JSON; garbage shown in hex.
    #[test]
    fn msgpack() {
        let args = b"\x92\x06\xaareminder 6";
        assert_eq!(msgpack_text(args), r#"[6, "reminder 6"]"#);
        assert_eq!(msgpack_json(args), json!([6, "reminder 6"]));
        let map = b"\x81\xa1a\xc3";
        assert_eq!(msgpack_text(map), r#"{"a": true}"#);
        assert_eq!(msgpack_json(map), json!({"a": true}));
        assert_eq!(msgpack_text(b"\xc0"), "nil");
        assert_eq!(
            msgpack_text(b"\x92\x06"),
            "<2 bytes, not MessagePack: 9206>"
        );
        // Two values where one is expected.
        assert_eq!(
            msgpack_json(b"\x06\x07"),
            json!({"undecodable_hex": "0607"})
        );
    }

    /// Passwords never reach an error message.
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(redact_url("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    }

    /// Columns line up; `>` columns are right-aligned.
    #[test]
    fn tables() {
        let mut t = Table::new(&["QUEUE", "READY>"]);
        t.row(vec!["emails".into(), "12".into()]);
        t.row(vec!["q".into(), "3".into()]);
        assert_eq!(t.render(), "QUEUE   READY\nemails     12\nq           3\n");
    }
}
