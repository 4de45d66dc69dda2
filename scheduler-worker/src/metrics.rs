//! Metric names, one constant each, and the helpers that record them through the `metrics`
//! facade. The library only records; a binary installs an exporter (see `examples/worker.rs`,
//! which serves them in the Prometheus format).

use std::time::Duration;

/// Counter, labels `queue`: tasks claimed into a lease.
pub const CLAIMED: &str = "scheduler_tasks_claimed_total";
/// Counter, labels `queue`, `task`, `outcome` (`success`, `failure`, `panic`, `timeout`,
/// `fatal` — a failure that is not retried): runs finished by this worker.
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
/// every `queue_metrics_interval` when that is set (the backlog metric to autoscale on).
pub const QUEUE_TASKS: &str = "scheduler_queue_tasks";

pub(crate) fn claimed(queue: &str, n: u64) {
    metrics::counter!(CLAIMED, "queue" => queue.to_owned()).increment(n);
}

pub(crate) fn started(queue: &str, lateness_ms: i64) {
    metrics::histogram!(LATENESS, "queue" => queue.to_owned())
        .record(lateness_ms.max(0) as f64 / 1000.0);
    metrics::gauge!(RUNNING).increment(1.0);
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
