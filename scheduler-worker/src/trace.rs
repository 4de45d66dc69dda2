//! How a run span relates to the trace its task carries: [`TraceMode`], set with
//! [`crate::WorkerBuilder::trace_mode`].
//!
//! The producer's enqueue span writes its W3C trace context (`traceparent`) into the task's
//! headers (feature `otel` on the producer); the worker's run span (`task`) continues it, on
//! every attempt: retries and runs after a promotion see the same headers, so every run of a
//! task hangs off the one enqueue span.
//!
//! Whatever the mode and even without the `otel` feature, the run span records the trace id in
//! its `trace_id` field, so that every log line of the run carries it (`logging` feature).

use scheduler_core::headers::Headers;
use tracing::Span;

/// How the worker's run span continues the trace a task carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TraceMode {
    /// The run span is a child of the producer's enqueue span: one trace from the request that
    /// enqueued the task to its runs (the default). Best when a task is the continuation of one
    /// request; a task delayed by days makes a trace that long.
    #[default]
    Child,
    /// The run span starts a trace of its own with a link to the producer's enqueue span: for
    /// tasks run long after their enqueue, or many tasks enqueued by one request, where one
    /// huge trace would be hard to read. Logs then carry the run's own trace id.
    Link,
}

/// Makes `span` (a run span) continue the trace `headers` carry, as `mode` says, and records its
/// trace id in the span's `trace_id` field. Nothing when the span is disabled.
pub(crate) fn follow(span: &Span, headers: &Headers, mode: TraceMode) {
    if span.is_disabled() {
        return;
    }
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        let remote = scheduler_core::otel::extract(headers);
        let remote_span = remote.span().span_context().clone();
        if remote_span.is_valid() {
            match mode {
                TraceMode::Child => {
                    let _ = span.set_parent(remote);
                }
                TraceMode::Link => span.add_link(remote_span),
            }
        }
        let own = span.context().span().span_context().trace_id();
        if own != opentelemetry::trace::TraceId::INVALID {
            span.record("trace_id", tracing::field::display(own));
            return;
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = mode;
    // No OpenTelemetry layer: the producer's trace id, read from the header itself.
    if let Some(id) = headers
        .get("traceparent")
        .and_then(|tp| scheduler_core::trace::trace_id_of(tp))
    {
        span.record("trace_id", id);
    }
}
