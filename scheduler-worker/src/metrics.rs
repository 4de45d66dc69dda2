//! Metric names, one constant each, and the helpers that record them through the `metrics`
//! facade. The library only records; with no recorder installed, recording costs a call that
//! returns at once. The `prometheus` feature serves them (`WorkerBuilder::metrics_addr`).
//! The names the client and the store record (enqueues, Redis round trips) are re-exported here
//! so that one module lists them all; `docs/operations.md` explains each.

pub use scheduler_core::metrics::{ENQUEUED, ENQUEUE_DURATION, ENQUEUE_ERRORS, REDIS_ROUND_TRIP};

use std::time::Duration;

/// Counter, labels `queue`: tasks claimed into a lease.
pub const CLAIMED: &str = "scheduler_tasks_claimed_total";
/// Counter, labels `queue`, `task`, `outcome` (`success`, `failure`, `panic`, `timeout`,
/// `fatal` — a failure that is not retried, `cancelled` — stopped or aborted after a
/// cancellation request): runs finished by this worker.
pub const RUNS: &str = "scheduler_task_runs_total";
/// Histogram (seconds), labels `queue`: how late runs started (claim time minus due time, both on
/// the Redis clock). Never negative: a task never starts early.
pub const LATENESS: &str = "scheduler_task_lateness_seconds";
/// Histogram (seconds), labels `queue`, `task`: run durations.
pub const DURATION: &str = "scheduler_task_duration_seconds";
/// Gauge: tasks running in this worker now.
pub const RUNNING: &str = "scheduler_tasks_running";
/// Counter, labels `queue`: tasks moved to the dead set by this worker's failure reports.
pub const DEAD: &str = "scheduler_tasks_dead_total";
/// Counter, labels `queue`: outcomes rejected because the lease had been lost (the task ran or
/// runs elsewhere too: a duplicate execution).
pub const STALE: &str = "scheduler_stale_outcomes_total";
/// Counter, labels `queue`: tasks this worker ended `expired`: found past their deadline by its
/// claims and promotes, or failed with a retry that would start after it.
pub const EXPIRED: &str = "scheduler_tasks_expired_total";
/// Counter, labels `queue`: claimed tasks a flow-control limit did not let start; each waits
/// again in its partition until the limit lets it (`docs/flow-control.md`).
pub const LIMITED: &str = "scheduler_tasks_limited_total";
/// Counter, labels `queue`: tasks this worker promoted from scheduled to ready.
pub const PROMOTED: &str = "scheduler_tasks_promoted_total";
/// Counter, labels `queue`: expired leases this worker recovered (tasks of lost workers).
pub const REAPED: &str = "scheduler_leases_reaped_total";
/// Counter, labels `queue`: partitions this worker took over from a promoter lock holder that
/// missed its due work (dead, stopped or cut off).
pub const TAKEOVERS: &str = "scheduler_promoter_takeovers_total";
/// Counter, labels `queue`: running tasks handed back at shutdown.
pub const RELEASED: &str = "scheduler_tasks_released_total";
/// Gauge, labels `queue`, `state` (`scheduled`, `ready`, `running`, `dead`): tasks in Redis, read
/// every `queue_metrics_interval` when that is set (the backlog metric to autoscale on), by one
/// worker per queue at a time: the one whose [`QUEUE_SAMPLER`] is 1.
pub const QUEUE_TASKS: &str = "scheduler_queue_tasks";
/// Gauge, labels `queue`: 1 while this worker is the one reading the queue's [`QUEUE_TASKS`],
/// 0 once another took over (its last [`QUEUE_TASKS`] values are then stale). Dashboards
/// multiply by it: `scheduler_queue_tasks * on(instance, queue) group_left scheduler_queue_sampler`.
pub const QUEUE_SAMPLER: &str = "scheduler_queue_sampler";
/// Histogram (seconds), labels `queue`: promoter lag, how long after its due time (Redis clock)
/// the oldest task of each promote batch left the scheduled set, measured against the head due
/// time this worker last learned (a head enqueued since with an earlier due time is not seen).
pub const PROMOTER_LAG: &str = "scheduler_promoter_lag_seconds";

/// Counter, labels `queue`: finished attempts this process stored in the history archive
/// (feature `archive`).
pub const ARCHIVED: &str = "scheduler_archive_stored_total";
/// Histogram (seconds), labels `queue`: archive lag, from a task's finishing (Redis clock) to
/// its row's insert (this host's clock), per stored attempt (feature `archive`).
pub const ARCHIVE_LAG: &str = "scheduler_archive_lag_seconds";
/// Counter: failed rounds of this process' archiver (PostgreSQL or Redis errors; the entries
/// wait in Redis).
pub const ARCHIVE_ERRORS: &str = "scheduler_archive_errors_total";
/// Gauge, labels `queue`: finished attempts waiting in the queue's archive streams (`XLEN`),
/// read every 5 s by each archiver.
pub const ARCHIVE_BACKLOG: &str = "scheduler_archive_backlog";
/// Counter, labels `queue`: finished attempts dropped from the archive streams over their
/// bound, never stored (the namespace's total from Redis, `archive_dropped` of the stats
/// hashes, read every 5 s by each archiver).
pub const ARCHIVE_DROPPED: &str = "scheduler_archive_dropped_total";

#[cfg(feature = "archive")]
pub(crate) fn archived(queue: &str, stored: u64, entries: &[scheduler_core::store::ArchiveEntry]) {
    metrics::counter!(ARCHIVED, "queue" => queue.to_owned()).increment(stored);
    let now = crate::archive::now_ms();
    let h = metrics::histogram!(ARCHIVE_LAG, "queue" => queue.to_owned());
    for e in entries {
        h.record((now - e.finished_at_ms).max(0) as f64 / 1000.0);
    }
}

#[cfg(feature = "archive")]
pub(crate) fn archive_error() {
    metrics::counter!(ARCHIVE_ERRORS).increment(1);
}

#[cfg(feature = "archive")]
pub(crate) fn archive_backlog(queue: &str, len: u64, dropped: u64) {
    metrics::gauge!(ARCHIVE_BACKLOG, "queue" => queue.to_owned()).set(len as f64);
    metrics::counter!(ARCHIVE_DROPPED, "queue" => queue.to_owned()).absolute(dropped);
}

pub(crate) fn claimed(queue: &str, n: u64) {
    metrics::counter!(CLAIMED, "queue" => queue.to_owned()).increment(n);
}

pub(crate) fn started(queue: &str, lateness_ms: i64) {
    metrics::histogram!(LATENESS, "queue" => queue.to_owned())
        .record(lateness_ms.max(0) as f64 / 1000.0);
    metrics::gauge!(RUNNING).increment(1.0);
}

pub(crate) fn limited(queue: &str) {
    metrics::counter!(LIMITED, "queue" => queue.to_owned()).increment(1);
}

pub(crate) fn finished(queue: &str, task: &str, outcome: &'static str, took: Duration) {
    metrics::gauge!(RUNNING).decrement(1.0);
    metrics::counter!(RUNS, "queue" => queue.to_owned(), "task" => task.to_owned(), "outcome" => outcome).increment(1);
    metrics::histogram!(DURATION, "queue" => queue.to_owned(), "task" => task.to_owned())
        .record(took.as_secs_f64());
}

pub(crate) fn count(name: &'static str, queue: &str, n: u64) {
    if n > 0 {
        metrics::counter!(name, "queue" => queue.to_owned()).increment(n);
    }
}

pub(crate) fn queue_tasks(queue: &str, state: &'static str, n: u64) {
    metrics::gauge!(QUEUE_TASKS, "queue" => queue.to_owned(), "state" => state).set(n as f64);
}

pub(crate) fn queue_sampler(queue: &str, sampling: bool) {
    metrics::gauge!(QUEUE_SAMPLER, "queue" => queue.to_owned()).set(if sampling {
        1.0
    } else {
        0.0
    });
}

pub(crate) fn promoter_lag(queue: &str, lag_ms: i64) {
    metrics::histogram!(PROMOTER_LAG, "queue" => queue.to_owned())
        .record(lag_ms.max(0) as f64 / 1000.0);
}
