//! The W3C trace context in task headers (feature `otel`): [`inject`] writes the current span's
//! context (`traceparent`, and `tracestate` when it has one) into a task's headers at enqueue;
//! [`extract`] reads it back on the worker.
//!
//! The propagator is W3C Trace Context itself, not the global one: the headers' format is part of
//! the task record, the same whatever a process configured for its HTTP calls.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::headers::Headers;

struct Carrier<'a>(&'a mut Headers);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Reader<'a>(&'a Headers);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes the context of the current `tracing` span into `headers`, replacing a `traceparent`
/// given before. Nothing when the span has no OpenTelemetry context (no OpenTelemetry layer
/// installed, or the span is disabled): a task then carries no trace headers.
pub fn inject(headers: &mut Headers) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    TraceContextPropagator::new().inject_context(&cx, &mut Carrier(headers));
}

/// The remote context carried by `headers`; its span context is invalid when they carry none.
pub fn extract(headers: &Headers) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Reader(headers))
}
