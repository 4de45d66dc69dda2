//! Metric names recorded by the producer side (the [`crate::Client`]) and by the store (Redis
//! round trips of every process), one constant each, recorded through the `metrics` facade.
//!
//! The library only records: with no recorder installed (the `metrics` default), recording is a
//! call that returns at once. A process that wants them installs an exporter; the worker's
//! `prometheus` feature does (`WorkerBuilder::metrics_addr`), and the worker re-exports these
//! names beside its own in `scheduler::metrics`. `docs/operations.md` lists every metric.

use std::time::Duration;

/// Counter, labels `queue`, `task`: tasks this process created with [`crate::Client`]'s enqueue
/// calls (an enqueue of an id that exists already creates nothing and is not counted).
pub const ENQUEUED: &str = "scheduler_tasks_enqueued_total";
/// Counter, label `kind` ([`crate::Error::kind`]: `redis_transient`, `payload_too_large`...):
/// enqueue calls that returned an error.
pub const ENQUEUE_ERRORS: &str = "scheduler_enqueue_errors_total";
/// Histogram (seconds): how long one enqueue call took (one task or a bulk), from the call to
/// its reply, retries included.
pub const ENQUEUE_DURATION: &str = "scheduler_enqueue_duration_seconds";
/// Histogram (seconds): round trips to Redis (one pipeline or one script call, as sent by this
/// process; a cluster pipeline spanning nodes counts one round trip per node).
pub const REDIS_ROUND_TRIP: &str = "scheduler_redis_round_trip_seconds";

pub(crate) fn enqueued(queue: &str, task: &str, n: u64) {
    metrics::counter!(ENQUEUED, "queue" => queue.to_owned(), "task" => task.to_owned())
        .increment(n);
}

pub(crate) fn enqueue_finished<T>(took: Duration, result: &crate::Result<T>) {
    metrics::histogram!(ENQUEUE_DURATION).record(took.as_secs_f64());
    if let Err(e) = result {
        metrics::counter!(ENQUEUE_ERRORS, "kind" => e.kind()).increment(1);
    }
}

pub(crate) fn round_trip(took: Duration) {
    metrics::histogram!(REDIS_ROUND_TRIP).record(took.as_secs_f64());
}
