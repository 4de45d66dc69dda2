//! The `tracing` spans of a task's life, with the OpenTelemetry messaging semantic-convention
//! attributes as field names (on the run span, set directly on the OpenTelemetry span, feature
//! `otel`) (`messaging.system`, `messaging.operation.type`,
//! `messaging.destination.name` = queue, `messaging.message.id` = task id...), plus
//! `scheduler.task.name` and `scheduler.task.attempt`. `otel.name` and `otel.kind` are the span
//! name and kind `tracing-opentelemetry` gives the exported span.
//!
//! | span | kind | where | `messaging.operation.type` |
//! |---|---|---|---|
//! | `enqueue` | producer | [`crate::Client::enqueue_bulk`] and all enqueues | `send` |
//! | `claim` | client | each claim (`claim.lua`) or promote-and-lease (`promote.lua`) call | `receive` |
//! | `task` | consumer | each run of a task on a worker | `process` |
//! | `ack` | client | each batch of outcomes written (`ack.lua`, `retry.lua`) | `settle` |
//!
//! `claim` and `ack` spans are per batch, not per task: the worker gives them span links to the
//! traces of the tasks they carry (`scheduler_worker::trace`).
//!
//! Spans cost one check of a cached flag when no subscriber wants them: fields are computed
//! only for an enabled span.

use tracing::field::Empty;
use tracing::Span;

/// `messaging.system` of every span.
pub const MESSAGING_SYSTEM: &str = "redis-scheduler";

/// The span of one enqueue call of `n` tasks, the first of `queue` and named `name`; with one
/// task, [`record_message_id`] records its id once it is known.
#[doc(hidden)]
pub fn enqueue_span(queue: &str, name: &str, n: usize) -> Span {
    let span = tracing::info_span!(
        "enqueue",
        otel.name = format_args!("enqueue {queue}"),
        otel.kind = "producer",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "send",
        messaging.operation.name = "enqueue",
        messaging.destination.name = queue,
        messaging.message.id = Empty,
        messaging.batch.message_count = Empty,
        scheduler.task.name = name,
    );
    if n != 1 {
        span.record("messaging.batch.message_count", count(n));
    }
    span
}

/// Records `messaging.message.id` on an [`enqueue_span`] of one task.
#[doc(hidden)]
pub fn record_message_id(span: &Span, ids: &[crate::TaskId]) {
    if let [id] = ids {
        if !span.is_disabled() {
            span.record("messaging.message.id", id.id());
        }
    }
}

/// The span of one claim of `queue`'s `shard` (`claim.lua`, or `promote.lua` leasing to its
/// caller); [`record_count`] records how many tasks it took.
#[doc(hidden)]
pub fn claim_span(queue: &str, shard: u16) -> Span {
    tracing::info_span!(
        "claim",
        otel.name = format_args!("claim {queue}"),
        otel.kind = "client",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "receive",
        messaging.operation.name = "claim",
        messaging.destination.name = queue,
        messaging.destination.partition.id = shard,
        messaging.batch.message_count = Empty,
    )
}

/// The span of one batch of `n` outcomes written: `op` is `ack` (successes, `ack.lua`, one
/// pipeline that may span partitions: `queue` is its first partition's) or `retry` (failures of
/// one partition of `queue`, `retry.lua`: retried or buried).
#[doc(hidden)]
pub fn ack_span(op: &'static str, queue: &str, n: usize) -> Span {
    tracing::info_span!(
        "ack",
        otel.name = format_args!("{op} {queue}"),
        otel.kind = "client",
        messaging.system = MESSAGING_SYSTEM,
        messaging.operation.type = "settle",
        messaging.operation.name = op,
        messaging.destination.name = queue,
        messaging.batch.message_count = count(n),
    )
}

/// Records `messaging.batch.message_count` on a [`claim_span`].
#[doc(hidden)]
pub fn record_count(span: &Span, n: usize) {
    if !span.is_disabled() {
        span.record("messaging.batch.message_count", count(n));
    }
}

/// A count as an `i64` field: `tracing-opentelemetry` exports `u64` fields as strings, `i64`
/// ones as integers (what `messaging.batch.message_count` is).
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The span of one run of a task: the `task` span of the worker's log lines, with `task_id`,
/// `queue`, `task_name`, `attempt`, and `trace_id`, recorded by the worker when the task
/// carries a trace context. With the `otel` feature, the messaging attributes are set on the
/// OpenTelemetry span directly (not as `tracing` fields), so log lines stay short.
#[doc(hidden)]
pub fn run_span(queue: &str, id: &str, name: &str, attempt: u32) -> Span {
    #[cfg(feature = "otel")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!(
            "task",
            task_id = %id,
            queue = %queue,
            task_name = %name,
            attempt,
            trace_id = Empty,
            otel.name = format_args!("run {queue}"),
            otel.kind = "consumer",
            otel.status_code = Empty,
        );
        if !span.is_disabled() {
            span.set_attribute("messaging.system", MESSAGING_SYSTEM);
            span.set_attribute("messaging.operation.type", "process");
            span.set_attribute("messaging.operation.name", "run");
            span.set_attribute("messaging.destination.name", queue.to_owned());
            span.set_attribute("messaging.message.id", id.to_owned());
            span.set_attribute("scheduler.task.name", name.to_owned());
            span.set_attribute("scheduler.task.attempt", i64::from(attempt));
        }
        span
    }
    #[cfg(not(feature = "otel"))]
    tracing::info_span!(
        "task",
        task_id = %id,
        queue = %queue,
        task_name = %name,
        attempt,
        trace_id = Empty,
    )
}

/// Records a run's outcome (`success`, `failure`, `panic`, `timeout`, `fatal`, the `outcome`
/// label of the run metrics) on its [`run_span`]: with the `otel` feature, span status `ERROR`
/// and `error.type` for anything but a success.
#[doc(hidden)]
pub fn record_outcome(span: &Span, outcome: &'static str) {
    #[cfg(feature = "otel")]
    if outcome != "success" && !span.is_disabled() {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.record("otel.status_code", "ERROR");
        span.set_attribute("error.type", outcome);
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, outcome);
}

/// The trace id (32 hex digits) of a W3C `traceparent` value (`00-<trace id>-<span id>-<flags>`),
/// or `None` when the value is not one.
///
/// # Examples
///
/// ```
/// use scheduler_core::trace::trace_id_of;
///
/// let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// assert_eq!(trace_id_of(tp), Some("0af7651916cd43dd8448eb211c80319c"));
/// assert_eq!(trace_id_of("garbage"), None);
/// ```
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then_some(id)
}
