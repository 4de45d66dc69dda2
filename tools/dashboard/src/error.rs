//! What a failure looks like to the browser: a status and a message a person can act on. Redis
//! failures are logged with their detail and shown as a plain "Redis is unavailable" (503), so
//! no server internals reach the page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use scheduler_core::Error;

/// A page that could not be served.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Malformed input: 400.
    BadRequest(String),
    /// Credentials are fine, the request is not allowed: 403.
    Forbidden(String),
    /// No such queue, task, schedule or page: 404.
    NotFound(String),
    /// The task's state forbids the action: 409.
    Conflict(String),
    /// Redis failed or answered something unexpected: 503, detail in the log only.
    Unavailable,
    /// The history database (PostgreSQL) failed: 503, detail in the log only.
    HistoryUnavailable,
}

impl PageError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PageError::Forbidden(_) => StatusCode::FORBIDDEN,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Conflict(_) => StatusCode::CONFLICT,
            PageError::Unavailable | PageError::HistoryUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            PageError::BadRequest(m)
            | PageError::Forbidden(m)
            | PageError::NotFound(m)
            | PageError::Conflict(m) => m.clone(),
            PageError::Unavailable => {
                "Redis is unavailable or answered unexpectedly; the dashboard's log has the detail."
                    .to_owned()
            }
            PageError::HistoryUnavailable => {
                "The history database is unavailable; the dashboard's log has the detail."
                    .to_owned()
            }
        }
    }
}

impl From<Error> for PageError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidQueueName(_)
            | Error::InvalidTaskId(_)
            | Error::InvalidCursor(_)
            | Error::NotListed(_)
            | Error::InvalidLimit(_) => PageError::BadRequest(e.to_string()),
            Error::UnknownQueue(_) | Error::NotFound(_) | Error::ScheduleNotFound(_) => {
                PageError::NotFound(e.to_string())
            }
            Error::Running(_) | Error::AlreadyFinished(_) | Error::Cancelled(_) => {
                PageError::Conflict(e.to_string())
            }
            Error::Archive(detail) => {
                tracing::warn!(error = %detail, "dashboard: history database request failed");
                PageError::HistoryUnavailable
            }
            other => {
                tracing::warn!(error = %other, "dashboard: Redis request failed");
                PageError::Unavailable
            }
        }
    }
}

/// A [`PageError`] with what it takes to render it inside the layout (the path prefix, for
/// the links): what handlers return on failure.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: PageError,
    pub(crate) prefix: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let page = crate::view::error_page(&self.prefix, status, &self.error.message());
        (status, page).into_response()
    }
}
