//! Worker runtime of the scheduler: runs registered tasks from Redis with a concurrency limit,
//! time limits, retries and leases; promotes delayed tasks at their due time; recovers the tasks
//! of dead workers; shuts down gracefully.
//!
//! Applications use it through the `scheduler` crate, which re-exports its API; with the
//! `macros` feature (default) it re-exports the `#[task]` attribute.
//!
//! # Layout
//!
//! One background component per file, each a task spawned by [`Worker::run`]:
//!
//! - `notify`: the pub/sub listener; wakes the fetcher and the promoter.
//! - `promoter`: per-partition locks; moves due tasks to ready at their exact time; reaps
//!   expired leases.
//! - `fetcher`: claims ready tasks in batches into free execution slots, choosing the next
//!   partition in turn, by queue weight or by strict queue priority ([`QueueOrder`]).
//! - `executor`: runs one task with its time limit, catches panics, decides ack/retry/bury;
//!   calls the [`middleware`] hooks around the run when some are registered.
//! - `acker`: writes outcomes in batches; starts the `on_dead` hooks of buried tasks.
//! - `lease`: renews leases of running tasks.
//! - `heartbeat`: advertises the live worker.
//! - `janitor`: enforces the dead set's retention.
//! - `gauges`: optional per-queue task counts for metrics.
//! - `ticker`: enqueues the due ticks of periodic schedules ahead of their time (only when
//!   some schedule exists: one `HGETALL` of the empty index per second otherwise).
//!
//! Each takes a parameter struct of its own (`PromoterParams`, `FetcherParams`...) holding only
//! what it uses; `messages` holds what they send each other (`AckMsg`, `PromoterEvent`) and
//! `shared` what several of them share (the in-flight map, counters, ready flags).
//!
//! - `archive` (feature `archive`): the task history archive in PostgreSQL; its archiver runs
//!   when [`WorkerBuilder::archive`] is set.
//!
//! And: [`worker`] (builder, run, graceful shutdown), [`config`], [`middleware`] (hooks around
//! each run: [`middleware::Middleware`]), [`backoff`], [`metrics`] (metric
//! names), `prometheus` (feature `prometheus`: serving the metrics over HTTP), `logging`
//! (feature `logging`: text or JSON log lines), [`trace`] (how run spans continue the trace a task
//! carries), `otel` (feature `otlp`: an OTLP exporter for worker binaries).

mod acker;
#[cfg(feature = "archive")]
pub mod archive;
pub mod backoff;
pub mod config;
mod events;
mod executor;
mod fetcher;
mod gauges;
mod heartbeat;
mod janitor;
mod lease;
mod limiter;
#[cfg(feature = "logging")]
pub mod logging;
mod messages;
pub mod metrics;
pub mod middleware;
mod notify;
#[cfg(feature = "otlp")]
pub mod otel;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod promoter;
mod registry;
mod shared;
mod ticker;
pub mod trace;
pub mod worker;

pub use backoff::Backoff;
pub use config::{QueueOrder, WorkerConfig};
pub use middleware::{Middleware, Run, RunOutcome};
pub use trace::TraceMode;
pub use worker::{ShutdownHandle, Worker, WorkerBuilder, WorkerReport};

#[cfg(feature = "macros")]
pub use scheduler_macros::task;
