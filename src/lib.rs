//! A Redis-backed distributed task scheduler and worker framework: millions of delayed tasks,
//! each run on time, on many hosts, none lost.
//!
//! This is the crate applications depend on, and what it shows is the whole public API:
//!
//! - producing: [`Client`], [`ClientConfig`], [`TaskRequest`], [`TaskCall`] (what `#[task]`
//!   generates calls of), [`TaskId`];
//! - running: [`Worker`], [`WorkerBuilder`], [`WorkerConfig`], [`WorkerReport`],
//!   [`ShutdownHandle`], [`Backoff`], the `#[task]` attribute (feature `macros`, on by default),
//!   [`TaskContext`], [`TaskError`], [`metrics`] (metric names), `prometheus` (feature
//!   `prometheus`: `WorkerBuilder::metrics_addr` and `prometheus::install` serve the metrics), `logging` (feature `logging`, on by default: text
//!   or JSON log lines);
//! - hooks and progress: [`middleware`] (the guide: run hooks on the worker, enqueue hooks on
//!   the client, `TaskContext::progress`), [`Progress`];
//! - looking and administering: [`Inspector`] and what it returns, [`TaskInfo`], [`TaskState`],
//!   [`QueueStats`];
//! - connecting: [`TlsConfig`], [`HealthCheck`]; errors: [`Error`];
//! - the web dashboard, `dashboard` (feature `dashboard`, off by default);
//! - test helpers, `testing` (feature `testing`, for dev-dependencies): a throwaway redis-server,
//!   time travel, drain;
//! - the `redis` crate, re-exported so that versions cannot drift.
//!
//! The Redis operations underneath (script wrappers, keys, the store) are internal: they change
//! with the Redis layout and are not part of the API.
//!
//! ```no_run
//! use scheduler::{task, Client, TaskError, Worker};
//! use std::time::Duration;
//!
//! #[task(queue = "emails", max_retries = 5, timeout = "30s")]
//! async fn send_reminder(user_id: u64, text: String) -> Result<(), TaskError> {
//!     println!("to {user_id}: {text}");
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! send_reminder::new(42, "hi".into())
//!     .countdown(Duration::from_secs(30))
//!     .send(&client)
//!     .await?;
//! Worker::builder()
//!     .redis_url("redis://127.0.0.1:6379")
//!     .register(send_reminder)
//!     .build()
//!     .await?
//!     .run_until_shutdown_signal()
//!     .await?;
//! # Ok(()) }
//! ```

pub use scheduler_core::backup;
pub use scheduler_core::client::encode_args;
pub use scheduler_core::conn::{HealthCheck, TlsConfig};
pub use scheduler_core::defaults;
pub use scheduler_core::headers;
pub use scheduler_core::limits;
pub use scheduler_core::Headers;
pub use scheduler_core::{
    async_trait, redis, Cancellation, CancellationToken, Client, ClientConfig, Counts, Declared,
    DueSummary, EnqueueMiddleware, Error, EventKind, EventStream, FailedAttempt, FireReport,
    Inspector, IntoTaskRequest, LatenessHistogram, Misfire, Overlap, Progress, PurgeTally,
    QueueCounts, QueueStats, QueueSummary, RequeueTally, Result, Schedule, ScheduleInfo, Schedules,
    Spec, StateMap, Task, TaskCall, TaskContext, TaskDetail, TaskError, TaskErrorKind, TaskEvent,
    TaskId, TaskInfo, TaskPage, TaskRequest, TaskState, TaskSummary, WorkerInfo,
};
/// The task history archive in PostgreSQL (feature `archive`; see `docs/storage.md`).
#[cfg(feature = "archive")]
pub use scheduler_worker::archive;
#[cfg(feature = "logging")]
pub use scheduler_worker::logging;
#[cfg(feature = "otlp")]
pub use scheduler_worker::otel;
#[cfg(feature = "prometheus")]
pub use scheduler_worker::prometheus;
#[cfg(feature = "macros")]
pub use scheduler_worker::task;
pub use scheduler_worker::{
    metrics, trace, Backoff, QueueOrder, ShutdownHandle, TraceMode, Worker, WorkerBuilder,
    WorkerConfig, WorkerReport,
};

#[doc = include_str!("../docs/workflows.md")]
pub mod workflow {
    pub use scheduler_core::workflow::*;
}

#[doc = include_str!("../docs/events.md")]
pub mod events {
    pub use scheduler_core::events::{EventKind, EventStream, TaskEvent};
}

#[doc = include_str!("../docs/middleware.md")]
pub mod middleware {
    pub use scheduler_core::client::middleware::EnqueueMiddleware;
    pub use scheduler_core::task::MAX_PROGRESS_MESSAGE_BYTES;
    pub use scheduler_core::{async_trait, Progress};
    pub use scheduler_worker::middleware::{Middleware, Run, RunOutcome};
}

/// The web dashboard as an `axum::Router` to mount in your own service (feature `dashboard`):
/// [`dashboard::router`] and [`dashboard::DashboardConfig`]. Guide: `docs/dashboard.md`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use scheduler::dashboard::{router, DashboardConfig};
///
/// let client = scheduler::Client::connect("redis://127.0.0.1:6379").await?;
/// let ops = router(&client, DashboardConfig::new().token("s3cret").prefix("/ops"));
/// // your_app.merge(ops), or serve it alone:
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// scheduler::dashboard::axum::serve(listener, ops).await?;
/// # Ok(()) }
/// ```
#[cfg(feature = "dashboard")]
pub use scheduler_dashboard as dashboard;

#[cfg(feature = "testing")]
pub mod testing;

/// What `#[task]`-generated code reaches; not a public API.
#[doc(hidden)]
pub use scheduler_core::__private;

/// The broker layer: the store, one wrapper per Lua script, key names, connections. Used by the
/// worker, the benchmarks, the chaos harness and the tests; **not a public API**, exempt from
/// semver (a script's arguments change with the Redis layout).
#[doc(hidden)]
pub mod broker {
    pub use scheduler_core::store::*;
    pub use scheduler_core::task::LeaseStore;
    pub use scheduler_core::{conn, id, info, keys, scripts, store};
}
