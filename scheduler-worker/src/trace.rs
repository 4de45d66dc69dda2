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
//!
//! Claims and outcome writes are batched, so their spans (`claim`, `ack`, `retry`) belong to no
//! task's trace; they carry span links instead: a claim span one link per task it leased, to
//! the task's producer context (`link_producers`), an outcome write one link per outcome, to
//! the run span that produced it (`link_runs`, `RunLink`). Links are added only when the
//! batch span has an OpenTelemetry context (an OpenTelemetry layer installed and the span
//! enabled): otherwise nothing is decoded or kept.

use scheduler_core::headers::Headers;
use scheduler_core::store::Claimed;
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

/// Whether `span` is exported: enabled, with an OpenTelemetry context. Costs one check of a
/// cached flag when no subscriber wants the span.
#[cfg(feature = "otel")]
fn exported(span: &Span) -> bool {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    !span.is_disabled() && span.context().span().span_context().is_valid()
}

/// Links a claim span to the producer context of each task it leased (the enqueue span whose
/// `traceparent` the task's headers carry), each link with the task's `messaging.message.id`.
/// Nothing unless the claim span is exported ([`exported`]); tasks without a trace context add
/// no link.
pub(crate) fn link_producers(span: &Span, tasks: &[Claimed]) {
    #[cfg(feature = "otel")]
    if !tasks.is_empty() && exported(span) {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        for t in tasks.iter().filter(|t| !t.headers.is_empty()) {
            let Ok(headers) = scheduler_core::headers::decode(&t.headers) else {
                continue;
            };
            let remote = scheduler_core::otel::extract(&headers);
            span.add_link_with_attributes(
                remote.span().span_context().clone(),
                vec![opentelemetry::KeyValue::new(
                    "messaging.message.id",
                    t.id.clone(),
                )],
            );
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, tasks);
}

/// The span context of a finished run span, carried with its outcome to the acker so that the
/// span of the write links to it ([`link_runs`]). Empty (and without the `otel` feature, of
/// size zero) when the run span is not exported.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunLink(#[cfg(feature = "otel")] Option<opentelemetry::trace::SpanContext>);

impl RunLink {
    /// The link to `run` (a run span), empty when it is not exported.
    pub(crate) fn of(run: &Span) -> Self {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::trace::TraceContextExt;
            use tracing_opentelemetry::OpenTelemetrySpanExt;

            if run.is_disabled() {
                return Self(None);
            }
            let sc = run.context().span().span_context().clone();
            Self(sc.is_valid().then_some(sc))
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = run;
            Self()
        }
    }
}

/// Links an outcome-write span (`ack`, `retry`) to the run spans whose outcomes it writes.
/// `runs` is iterated only when the span is exported ([`exported`]).
pub(crate) fn link_runs<'a>(span: &Span, runs: impl IntoIterator<Item = &'a RunLink>) {
    #[cfg(feature = "otel")]
    if exported(span) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;

        for RunLink(sc) in runs {
            if let Some(sc) = sc {
                span.add_link(sc.clone());
            }
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, runs.into_iter());
}
