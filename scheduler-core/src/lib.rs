//! Core of the scheduler: the Redis task store, its Lua state machine, and the producer client.
//!
//! Tasks live in Redis, split into partitions (queue, shard); every key of a partition shares one
//! hash tag, so each Lua script touches one partition (one Redis Cluster slot). Every state change
//! of a task is one script; the Redis server clock decides what is due.
//!
//! Applications use it through the `scheduler` crate. The modules `conn`, `id`, `keys`,
//! `scripts` and `store` are the broker layer the worker uses: hidden, and exempt from semver.
//!
//! # Layout
//!
//! - `keys` — every Redis key name, one function each.
//! - `store` — `Store`, the connection, the pipelines, and one typed wrapper per Lua script of
//!   `lua/` (a file per script family; reply codes decoded in `store/reply.rs`).
//! - `scripts` — the script types at their former paths (re-exports of `store`).
//! - `conn` — connection modes (one Redis, Cluster, Sentinel; TLS) and `conn::Conn`.
//! - [`defaults`] — the defaults every part shares, each written once.
//! - [`client`] — [`Client`], the producer API (enqueue, bulk enqueue, cancel, status, results);
//!   [`client::middleware`]: [`EnqueueMiddleware`], hooks around every enqueue.
//! - [`task`] — the [`Task`] trait `#[task]` implements, [`TaskContext`], [`TaskError`].
//! - `id` — [`TaskId`], queue-name rules and the shard hash.
//! - [`inspector`] — [`Inspector`], the operators' view.
//! - [`info`] — [`TaskInfo`], [`Progress`], [`FailedAttempt`], [`TaskState`], [`QueueStats`].
//! - [`lateness`] — [`LatenessHistogram`], run lateness in mergeable buckets (worker heartbeats).
//! - [`schedule`] — [`Schedule`], periodic schedules: cron or interval, tick computation
//!   (time zones, DST), misfire and overlap policies.
//! - [`schedules`] — [`Schedules`], schedules stored in Redis: add, remove, pause, resume,
//!   trigger, list, and the pass every worker runs to fire due ticks exactly once.
//! - [`backup`] — [`backup::Exporter`] and [`backup::Importer`]: logical export and import of
//!   tasks and schedules, and the export file format (`backup/format.rs`).
//! - [`metrics`] — names of the metrics the client and the store record (enqueues, Redis round
//!   trips).
//! - [`headers`] — [`Headers`], a task's string metadata: encoding and bounds.
//! - [`limits`] — [`limits::Limit`] and [`limits::LimitScope`], flow-control limits that hold
//!   across every worker: concurrency and rate, per task name, queue or key.
//! - `otel` (feature `otel`) — the W3C trace context of the enqueuing span, carried in headers.
//! - [`trace`] — the `tracing` spans of a task's life (enqueue, claim, run, ack) with the
//!   OpenTelemetry messaging attributes.
//! - [`events`] — [`TaskEvent`], [`EventStream`]: task events, per-queue opt-in, published on
//!   the queue's channel (`Client::events`, `Client::watch`).
//! - [`error`] — [`Error`].

pub mod backup;
pub mod client;
#[doc(hidden)]
pub mod conn;
pub mod defaults;
pub mod error;
pub mod events;
pub mod headers;
#[doc(hidden)]
pub mod id;
pub mod info;
pub mod inspector;
#[doc(hidden)]
pub mod keys;
pub mod lateness;
pub mod limits;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod schedule;
pub mod schedules;
#[doc(hidden)]
pub mod scripts;
#[doc(hidden)]
pub mod store;
pub mod task;
pub mod trace;
pub mod workflow;

pub use client::{
    Cancellation, Client, ClientConfig, EnqueueMiddleware, IntoTaskRequest, TaskCall, TaskRequest,
};
pub use conn::{HealthCheck, TlsConfig};
pub use error::{Error, Result};
pub use events::{EventKind, EventStream, TaskEvent};
pub use headers::Headers;
pub use id::TaskId;
pub use info::{FailedAttempt, Progress, QueueStats, TaskInfo, TaskState};
pub use inspector::{
    Counts, DueSummary, Inspector, PurgeTally, QueueCounts, QueueSummary, RequeueTally, TaskDetail,
    TaskPage, TaskSummary, WorkerInfo,
};
pub use lateness::LatenessHistogram;
pub use schedule::{Misfire, Overlap, Schedule, Spec};
pub use schedules::{Declared, FireReport, ScheduleInfo, Schedules};
#[doc(hidden)]
pub use store::Store;
pub use task::{StateMap, Task, TaskContext, TaskError, TaskErrorKind};

/// The attribute an `impl` of [`EnqueueMiddleware`] (and of the worker's `Middleware`) carries
/// (re-exported so that users need no dependency of their own).
pub use async_trait::async_trait;
pub use redis;
/// The token of [`TaskContext::cancellation_token`] (re-exported so that versions cannot drift).
pub use tokio_util::sync::CancellationToken;

/// What `#[task]`-generated code reaches; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::client::TaskCall;
    pub use crate::id::TaskId;
    pub use crate::task::{Task, TaskContext, TaskError};
}
