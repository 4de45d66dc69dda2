//! Who may look and act. Without credentials configured, everyone who reaches the address may.
//! Otherwise a request needs one of: `Authorization: Bearer <token>`, the login cookie (the
//! token, set by the login form: `HttpOnly`, `SameSite=Strict`, scoped to the prefix), or
//! `Authorization: Basic` with the configured user. Comparisons are constant-time.
//!
//! Actions are `POST`s; one whose `Origin` names another host is refused (403) even with
//! credentials, since a browser sends basic-auth credentials along with a cross-site form.

use std::sync::Arc;

use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use maud::html;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use crate::error::{Failure, PageError};
use crate::view::{layout, Frame, Nav};
use crate::App;

/// The login cookie's name.
const COOKIE: &str = "sched_dashboard";

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The token the login cookie carries, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request carries valid credentials (always, when none are configured).
pub(crate) fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let c = &app.config;
    if !c.requires_auth() {
        return true;
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(token) = &c.token {
        if let Some(given) = auth.strip_prefix("Bearer ") {
            if same(given.trim(), token) {
                return true;
            }
        }
        if let Some(given) = cookie_token(headers) {
            if same(&given, token) {
                return true;
            }
        }
    }
    if let Some((user, password)) = &c.basic {
        if let Some(b64) = auth.strip_prefix("Basic ") {
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                    // Both compared, whatever the first gives: no timing hint on the user.
                    let ok_user = same(u, user);
                    let ok_password = same(p, password);
                    if ok_user & ok_password {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// Whether a login cookie (rather than a header) is what lets the request in.
fn via_cookie(app: &App, headers: &HeaderMap) -> bool {
    app.config.token.is_some() && cookie_token(headers).is_some()
}

/// The middleware guarding every page but the login page and the assets.
pub(crate) async fn require(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let prefix = app.config.prefix.clone();
    if !authorized(&app, req.headers()) {
        return refused(&app, req.headers(), req.uri().path());
    }
    if req.method() == Method::POST {
        if app.config.read_only {
            return Failure {
                error: PageError::Forbidden(
                    "This dashboard is read-only: actions are disabled.".to_owned(),
                ),
                prefix,
            }
            .into_response();
        }
        if !same_origin(req.headers()) {
            return Failure {
                error: PageError::Forbidden(
                    "Refused: the action was sent from another site.".to_owned(),
                ),
                prefix,
            }
            .into_response();
        }
    }
    next.run(req).await
}

/// `Origin` absent (not a browser's cross-site form), or naming the host asked for.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let forwarded = headers
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host == host || Some(origin_host) == forwarded
}

/// 401: the login form for a token, a basic-auth challenge for a user; JSON callers get JSON.
fn refused(app: &App, headers: &HeaderMap, path: &str) -> Response {
    let c = &app.config;
    let wants_json = path.contains("/api/")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
    let challenge = if c.token.is_none() {
        "Basic realm=\"scheduler dashboard\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"scheduler dashboard\""
    };
    let tried = headers.contains_key(header::AUTHORIZATION) || cookie_token(headers).is_some();
    let message = if tried {
        "Wrong or expired credentials."
    } else {
        "Credentials required."
    };
    if wants_json || c.token.is_none() {
        let body = serde_json::json!({ "error": message }).to_string();
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, challenge),
                (header::CONTENT_TYPE, "application/json"),
            ],
            body,
        )
            .into_response();
    }
    let next = safe_next(&c.prefix, path);
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        login_form(app, &next, Some(message)),
    )
        .into_response()
}

/// A local path under the prefix to go back to after logging in; the overview otherwise.
fn safe_next(prefix: &str, next: &str) -> String {
    let ok = next.starts_with(&format!("{prefix}/"))
        && !next.starts_with("//")
        && !next.contains("://")
        && !next.contains('\\');
    if ok {
        next.to_owned()
    } else {
        format!("{prefix}/")
    }
}

fn login_form(app: &App, next: &str, message: Option<&str>) -> maud::Markup {
    let p = &app.config.prefix;
    layout(
        &Frame {
            prefix: p,
            title: "Log in",
            nav: Nav::None,
            read_only: app.config.read_only,
            logout: false,
            notice: None,
        },
        html! {
            section.card.login {
                h1 { "Log in" }
                @if let Some(m) = message { p.error #login-error { (m) } }
                form method="post" action={ (p) "/login" } {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Dashboard token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus;
                    button.primary type="submit" { "Log in" }
                }
            }
        },
    )
}

/// The query of `GET /login`.
#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
}

/// `GET /login`.
pub(crate) async fn login_page(
    State(app): State<Arc<App>>,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = safe_next(&app.config.prefix, q.next.as_deref().unwrap_or(""));
    login_form(&app, &next, None).into_response()
}

/// The form of `POST /login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: a right token sets the cookie and goes on; a wrong one is 401 again.
pub(crate) async fn login(State(app): State<Arc<App>>, Form(f): Form<LoginForm>) -> Response {
    let c = &app.config;
    let next = safe_next(&c.prefix, f.next.as_deref().unwrap_or(""));
    let ok = c.token.as_deref().is_some_and(|t| same(&f.token, t));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            login_form(&app, &next, Some("Wrong token.")),
        )
            .into_response();
    }
    // The token is sent only over what the operator exposes: `Secure` would break plain-HTTP
    // loopback use, so it is left to the reverse proxy terminating TLS.
    let cookie = format!(
        "{COOKIE}={}; Path={}/; HttpOnly; SameSite=Strict",
        f.token, c.prefix
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

/// `POST /logout`: forgets the cookie.
pub(crate) async fn logout(State(app): State<Arc<App>>) -> Response {
    let p = &app.config.prefix;
    let cookie = format!("{COOKIE}=; Path={p}/; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{p}/login")),
    )
        .into_response()
}

/// Whether to show a logout button: the request came in with the login cookie.
pub(crate) fn shows_logout(app: &App, headers: &HeaderMap) -> bool {
    via_cookie(app, headers)
}
