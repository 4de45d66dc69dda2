//! The scheduler's web dashboard: every queue with its counts (live), tasks by state paged, one
//! task decoded with its actions, workers, periodic schedules; requeue, delete and cancel; and,
//! with feature `history` and `DashboardConfig::history`, the history of finished tasks read
//! from the PostgreSQL archive.
//!
//! It is an [`axum::Router`] built by [`router`] from a [`Client`] and a [`DashboardConfig`]:
//! mount it in your own service (the `scheduler` crate re-exports this crate as
//! `scheduler::dashboard` behind its `dashboard` feature), or run `schedctl serve`. Every read
//! and action goes through the public [`Inspector`] and
//! [`Schedules`], the same calls `schedctl` makes, so both show the
//! same numbers. Pages are rendered on the server (maud); a few lines of script refresh the
//! overview from a JSON endpoint; the stylesheet and the script ship inside the crate.
//!
//! Cost: a page reads Redis with O(shards) commands, or a bounded page of tasks (at most
//! [`MAX_PAGE`](scheduler_core::inspector::MAX_PAGE)); the workers page reads the worker index
//! and one heartbeat hash per worker. A guide with screenshots: `docs/dashboard.md`.
//!
//! ```no_run
//! use scheduler_core::Client;
//! use scheduler_dashboard::{router, DashboardConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let app = router(&client, DashboardConfig::new().token("s3cret").prefix("/ops"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! scheduler_dashboard::axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `lib.rs`: [`DashboardConfig`], [`router`] (the routes).
//! - `auth.rs`: token, cookie and basic-auth checks, the login page, the same-origin check of
//!   actions, read-only mode.
//! - `pages.rs`: one handler per page and action.
//! - `history.rs`: the history page (finished attempts from the PostgreSQL archive, feature
//!   `history`).
//! - `view.rs`: the page layout, counts, actions.
//! - `format.rs`: times, spans and payloads as people read them, shared with `schedctl`.
//! - `error.rs`: what a failure looks like to the browser (status, message; Redis errors are
//!   logged, never shown).
//! - `assets/`: the stylesheet and the refresh script.

/// The axum this router is built with, so that a service mounting it uses the same version.
pub use axum;

mod auth;
mod error;
pub mod format;
mod history;
mod pages;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use scheduler_core::{Client, Inspector, Schedules};

/// How the dashboard is reached and what it allows.
///
/// Defaults: no credentials (anyone who reaches the address can look and act: bind it to
/// loopback, or set a token or a user), actions allowed, served at the root path, overview
/// refreshed every 2 s.
///
/// # Examples
///
/// ```
/// use scheduler_dashboard::DashboardConfig;
/// use std::time::Duration;
///
/// let config = DashboardConfig::new()
///     .token("s3cret")
///     .basic_auth("ops", "pa55")
///     .read_only(true)
///     .prefix("/admin/tasks")
///     .refresh(Duration::from_secs(5));
/// assert!(config.is_read_only());
/// ```
#[derive(Clone, Default)]
pub struct DashboardConfig {
    token: Option<String>,
    basic: Option<(String, String)>,
    read_only: bool,
    prefix: String,
    refresh: Option<Duration>,
    #[cfg(feature = "history")]
    history: Option<scheduler_worker::archive::HistoryDb>,
}

impl std::fmt::Debug for DashboardConfig {
    // Credentials stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("basic_user", &self.basic.as_ref().map(|(u, _)| u))
            .field("read_only", &self.read_only)
            .field("prefix", &self.prefix)
            .field("refresh", &self.refresh_interval())
            .field("history", &self.has_history())
            .finish()
    }
}

impl DashboardConfig {
    /// The defaults above.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires this token: sent as `Authorization: Bearer <token>` (programs), or typed once
    /// in the login page, which keeps it in an `HttpOnly`, `SameSite=Strict` cookie (browsers).
    /// An empty token is ignored. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let t = token.into();
        self.token = (!t.is_empty()).then_some(t);
        self
    }

    /// Accepts HTTP basic auth with this user and password (besides the token, if one is
    /// set). Default: none.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic = Some((user.into(), password.into()));
        self
    }

    /// Read-only: the pages show no action, and every action is refused with 403. Default:
    /// `false`.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether read-only mode is on.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Serves every page under this path (e.g. `/admin/tasks`), as the links say: for a
    /// reverse proxy that forwards `/admin/tasks/...` unchanged. A trailing `/` is ignored;
    /// empty (the default) is the root.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let p = prefix.into();
        let p = p.trim_end_matches('/');
        self.prefix = if p.is_empty() || p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        };
        self
    }

    /// How often the overview refreshes its counts. Default: 2 s; at least 500 ms.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = Some(every.max(Duration::from_millis(500)));
        self
    }

    /// Shows the history page: finished attempts (succeeded, dead, cancelled, expired) of the client's
    /// namespace read from the task history archive in PostgreSQL, searchable by task id, name,
    /// queue, state and time range, paged. Without it the page says that history is not
    /// configured. Feature `history` (brings `sqlx`); see `docs/storage.md` for the archive.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_dashboard::DashboardConfig;
    /// use scheduler_worker::archive::HistoryDb;
    ///
    /// let db = HistoryDb::connect("postgres://postgres@127.0.0.1/history", 2).await?;
    /// let config = DashboardConfig::new().history(db);
    /// assert!(config.has_history());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "history")]
    pub fn history(mut self, db: scheduler_worker::archive::HistoryDb) -> Self {
        self.history = Some(db);
        self
    }

    /// Whether the history page reads an archive (`DashboardConfig::history`); always `false`
    /// without the `history` feature.
    pub fn has_history(&self) -> bool {
        #[cfg(feature = "history")]
        {
            self.history.is_some()
        }
        #[cfg(not(feature = "history"))]
        {
            false
        }
    }

    fn refresh_interval(&self) -> Duration {
        self.refresh.unwrap_or(Duration::from_secs(2))
    }

    fn requires_auth(&self) -> bool {
        self.token.is_some() || self.basic.is_some()
    }
}

/// What every handler shares.
#[derive(Debug)]
struct App {
    inspector: Inspector,
    schedules: Schedules,
    /// Reads workflows (`Client::workflow`).
    client: Client,
    config: DashboardConfig,
    /// The client's namespace: the history archive is searched in it.
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    namespace: String,
}

/// The dashboard's routes, at [`DashboardConfig::prefix`], reading and acting through `client`
/// (its namespace and retry policy).
///
/// | route | what |
/// |---|---|
/// | `GET /` | overview: every queue, counts per state, live |
/// | `GET /api/overview` | the same counts as JSON |
/// | `GET /queues/{queue}` | one queue: counts per shard, what is due soon, lifetime counters |
/// | `GET /queues/{queue}/{state}?cursor=&limit=` | its tasks in `scheduled`, `ready`, `running` or `dead`, paged |
/// | `GET /tasks/{queue}/{id}` | one task, every field, arguments and result as JSON |
/// | `POST /tasks/{queue}/{id}/{cancel,requeue,delete}` | act on one task |
/// | `GET`, `POST /queues/{queue}/requeue-dead` | confirm, then requeue every dead task |
/// | `GET /workers` | live workers |
/// | `GET /schedules`, `POST /schedules/{name}/{pause,resume,trigger}` | periodic schedules |
/// | `GET /history?id=&name=&queue=&state=&since=&until=&after=&limit=` | finished attempts from the PostgreSQL archive, paged (`DashboardConfig::history`; else a page saying it is not configured) |
/// | `GET /limits?family=&key=` | the flow-control limits in force, what each task and queue limit holds now (running, waiting, starts in the window), and a keyed limit's budget of one key |
/// | `GET /workflows?id=` | one workflow by id: its state and each member's task and outcome |
/// | `GET`, `POST /login`, `POST /logout` | the token form |
/// | `GET /assets/{style.css,app.js}` | stylesheet and script |
///
/// Answers: 401 without valid credentials, 403 for an action in read-only mode or from another
/// origin, 400 for a malformed queue name, task id, state, cursor or limit key, 404 for an unknown queue,
/// task or schedule or a page past the end, 409 for an action the task's state forbids, 503
/// when Redis or the history database fails (the detail goes to the log, not to the page).
pub fn router(client: &Client, config: DashboardConfig) -> Router {
    let prefix = config.prefix.clone();
    let app = Arc::new(App {
        inspector: Inspector::new(client),
        schedules: Schedules::new(client),
        client: client.clone(),
        config,
        namespace: client.store().keys().namespace().to_owned(),
    });
    let guarded = Router::new()
        .route("/", get(pages::overview))
        .route("/api/overview", get(pages::overview_json))
        .route("/queues/{queue}", get(pages::queue))
        .route(
            "/queues/{queue}/requeue-dead",
            get(pages::requeue_dead_confirm).post(pages::requeue_dead),
        )
        .route("/queues/{queue}/{state}", get(pages::tasks))
        .route("/tasks/{queue}/{id}", get(pages::task))
        .route("/tasks/{queue}/{id}/{action}", post(pages::task_action))
        .route("/workers", get(pages::workers))
        .route("/schedules", get(pages::schedules))
        .route("/schedules/{name}/{action}", post(pages::schedule_action))
        .route("/history", get(history::history))
        .route("/limits", get(pages::limits))
        .route("/workflows", get(pages::workflows))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require,
        ));
    let open = Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/style.css", get(view::style))
        .route("/assets/app.js", get(view::script));
    let inner = open.merge(guarded).with_state(app);
    if prefix.is_empty() {
        inner
    } else {
        // `/prefix` is the overview (a nested `/`); `/prefix/`, what the links say, leads there.
        let home = prefix.clone();
        Router::new()
            .route(
                &format!("{prefix}/"),
                get(move || async move { axum::response::Redirect::to(&home) }),
            )
            .nest(&prefix, inner)
    }
}
