//! OpenTelemetry traces across the queue (feature `otel`): the producer's enqueue span carries
//! its trace context in the task's headers, and the worker's run span continues it on every
//! attempt, as a child (default) or linked; spans carry the messaging attributes; JSON log lines
//! of a run carry the trace id. Spans are collected by the SDK's in-memory exporter; the Redis is
//! a real redis-server.
//!
//! One test in this file: the subscriber is global to the process.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use scheduler::workflow::chain;
use scheduler::{task, Client, ClientConfig, TaskContext, TaskError, TraceMode, Worker};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Headers each run saw: (attempt, tenant header, traceparent present).
static SEEN: Mutex<Vec<(u32, Option<String>, bool)>> = Mutex::new(Vec::new());

/// Logs a line, notes its headers, and fails its first attempt.
#[task(name = "flaky", queue = "traced", max_retries = 2)]
async fn flaky(ctx: TaskContext) -> Result<(), TaskError> {
    tracing::info!("handler ran");
    SEEN.lock().unwrap().push((
        ctx.attempt(),
        ctx.header("tenant").map(str::to_owned),
        ctx.header("traceparent").is_some(),
    ));
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            "first attempt fails",
            Duration::from_millis(50),
        ));
    }
    Ok(())
}

/// A workflow step: returns its argument.
#[task(name = "step", queue = "steps")]
async fn step(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

/// Runs once, on a worker whose run spans link to their producer instead.
#[task(name = "linked", queue = "linked")]
async fn linked() -> Result<(), TaskError> {
    tracing::info!("linked ran");
    Ok(())
}

/// What the JSON log layer wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn attr<'a>(s: &'a SpanData, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn attr_str(s: &SpanData, key: &str) -> String {
    attr(s, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

/// Whether `cx` (a link's target) is the span `s`.
fn is(cx: &SpanContext, s: &SpanData) -> bool {
    (cx.trace_id(), cx.span_id()) == (s.span_context.trace_id(), s.span_context.span_id())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// A task enqueued inside a `checkout` span, failed once and retried after a promotion: its
/// enqueue span (producer, child of `checkout`) and both run spans (consumer, children of the
/// enqueue span, attempts 1 and 2, the first with status error) are one trace, with the
/// messaging attributes; claim and ack spans are there too, linked to the enqueue span and to
/// the runs whose outcomes they write; the handler saw the producer's
/// headers on both attempts; every JSON log line of both runs carries the trace id. A chain of
/// two workflow steps started in the same span: both runs in its trace. A worker in link mode
/// starts a new trace per run, linked to the enqueue span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_goes_from_producer_to_every_run() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(move || sink.clone()),
        )
        .with(tracing_subscriber::EnvFilter::new("info"));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let redis = RedisServer::start();
    let url = redis.url();
    let child = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("otel")
            .register(flaky)
            .register(step),
    )
    .await;
    let link = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("otel")
            .trace_mode(TraceMode::Link)
            .register(linked),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace("otel"))
        .await
        .unwrap();
    let checkout = tracing::info_span!("checkout");
    let (id, linked_id, steps) = async {
        let a = flaky::new().header("tenant", "42").send(&client).await;
        let b = linked::new().send(&client).await;
        let wf = chain(step::new(1)).then(step::new(2)).build().unwrap();
        let c = client.start_workflow(wf).await;
        (a.unwrap(), b.unwrap(), c.unwrap())
    }
    .instrument(checkout.clone())
    .await;
    drop(checkout);
    let info = wait_finished(&client, &id, Duration::from_secs(20)).await;
    wait_finished(&client, &linked_id, Duration::from_secs(20)).await;
    let last: u32 = client
        .wait_workflow(&steps, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(last, 2);
    child.stop().await;
    link.stop().await;
    provider.force_flush().unwrap();

    // Headers: kept across the retry, shown by status, with the trace context added.
    assert_eq!(info.attempts, 2);
    assert_eq!(info.headers["tenant"], "42");
    assert!(
        info.headers.contains_key("traceparent"),
        "{:?}",
        info.headers
    );
    assert_eq!(
        *SEEN.lock().unwrap(),
        vec![(1, Some("42".into()), true), (2, Some("42".into()), true)]
    );

    let spans = exporter.get_finished_spans().unwrap();
    let root = named(&spans, "checkout")[0];
    let trace = root.span_context.trace_id();
    let enq: Vec<_> = named(&spans, "enqueue traced");
    assert_eq!(
        enq.len(),
        1,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let enq = enq[0];
    assert_eq!(enq.span_context.trace_id(), trace);
    assert_eq!(enq.parent_span_id, root.span_context.span_id());
    assert_eq!(enq.span_kind, SpanKind::Producer);
    assert_eq!(attr_str(enq, "messaging.system"), "redis-scheduler");
    assert_eq!(attr_str(enq, "messaging.operation.type"), "send");
    assert_eq!(attr_str(enq, "messaging.destination.name"), "traced");
    assert_eq!(attr_str(enq, "messaging.message.id"), id.id());
    assert_eq!(attr_str(enq, "scheduler.task.name"), "flaky");

    let mut runs = named(&spans, "run traced");
    runs.sort_by_key(|s| attr(s, "scheduler.task.attempt").map(|v| v.as_str().into_owned()));
    assert_eq!(runs.len(), 2);
    for (n, run) in runs.iter().enumerate() {
        assert_eq!(run.span_context.trace_id(), trace, "run {n}");
        assert_eq!(run.parent_span_id, enq.span_context.span_id(), "run {n}");
        assert!(run.parent_span_is_remote);
        assert_eq!(run.span_kind, SpanKind::Consumer);
        assert_eq!(attr_str(run, "messaging.system"), "redis-scheduler");
        assert_eq!(attr_str(run, "messaging.operation.type"), "process");
        assert_eq!(attr_str(run, "messaging.destination.name"), "traced");
        assert_eq!(attr_str(run, "messaging.message.id"), id.id());
        assert_eq!(attr_str(run, "scheduler.task.name"), "flaky");
        assert_eq!(
            attr(run, "scheduler.task.attempt"),
            Some(&Value::I64(n as i64 + 1))
        );
    }
    assert!(
        matches!(runs[0].status, Status::Error { .. }),
        "{:?}",
        runs[0].status
    );
    assert_eq!(attr_str(runs[0], "error.type"), "failure");
    assert!(!matches!(runs[1].status, Status::Error { .. }));

    // Claims (by the fetcher, or by the promoter as it leases the retry) and outcome writes.
    // Both are batched: they are roots of their own, linked to the task's enqueue span (a
    // claim, one link per task leased, with its id) and to the runs whose outcomes they write.
    let claims: Vec<_> = named(&spans, "claim traced")
        .into_iter()
        .filter(|s| attr(s, "messaging.batch.message_count").is_some_and(|v| v != &Value::I64(0)))
        .collect();
    // One claim per attempt at least: the first by the fetcher, the retry by the fetcher or the
    // promoter.
    assert!(claims.len() >= 2, "{claims:#?}");
    for c in &claims {
        assert_eq!(c.span_kind, SpanKind::Client);
        assert_eq!(attr_str(c, "messaging.operation.type"), "receive");
        assert_eq!(attr_str(c, "messaging.destination.name"), "traced");
        assert_ne!(c.span_context.trace_id(), trace);
        let to_enqueue: Vec<_> = c
            .links
            .links
            .iter()
            .filter(|l| is(&l.span_context, enq))
            .collect();
        assert_eq!(to_enqueue.len(), 1, "{:#?}", c.links);
        assert_eq!(
            to_enqueue[0]
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "messaging.message.id")
                .map(|kv| kv.value.as_str().into_owned()),
            Some(id.id().to_owned())
        );
    }
    for name in ["retry traced", "ack traced"] {
        let s = named(&spans, name);
        assert!(!s.is_empty(), "no {name} span");
        assert_eq!(attr_str(s[0], "messaging.operation.type"), "settle");
    }
    // The failure of run 1 is written by a retry span linked to it; the success of run 2 by an
    // ack span (or a promoter's claim span, when the ack rides on a promote) linked to it.
    let writes_of = |run: &SpanData| -> Vec<&str> {
        spans
            .iter()
            .filter(|s| s.links.links.iter().any(|l| is(&l.span_context, run)))
            .map(|s| s.name.as_ref())
            .collect()
    };
    assert_eq!(writes_of(runs[0]), ["retry traced"]);
    let ack_of_2 = writes_of(runs[1]);
    assert!(
        ack_of_2 == ["ack traced"] || ack_of_2 == ["claim traced"],
        "{ack_of_2:?}"
    );

    // Workflow steps: the second is released when the first succeeds, and both runs continue
    // the trace of the span that started the workflow, children of its enqueue spans.
    let wf_enqueues: Vec<_> = named(&spans, "enqueue steps");
    assert!(!wf_enqueues.is_empty());
    let step_runs = named(&spans, "run steps");
    assert_eq!(step_runs.len(), 2, "{step_runs:#?}");
    for run in &step_runs {
        assert_eq!(run.span_context.trace_id(), trace);
        assert!(
            wf_enqueues
                .iter()
                .any(|e| e.span_context.span_id() == run.parent_span_id
                    && e.parent_span_id == root.span_context.span_id()),
            "{run:#?}"
        );
    }

    // Link mode: a trace of its own, linked to the producer's enqueue span.
    let enq_linked = named(&spans, "enqueue linked")[0];
    let run_linked = named(&spans, "run linked")[0];
    assert_ne!(run_linked.span_context.trace_id(), trace);
    assert_eq!(run_linked.parent_span_id, SpanId::INVALID);
    let to = &run_linked.links.links[0].span_context;
    assert_eq!(
        (to.trace_id(), to.span_id()),
        (
            enq_linked.span_context.trace_id(),
            enq_linked.span_context.span_id()
        )
    );
    // Its claim links to the enqueue span, its ack to the run (the run's own trace).
    assert!(named(&spans, "claim linked").iter().any(|c| c
        .links
        .links
        .iter()
        .any(|l| is(&l.span_context, enq_linked))));
    assert!(spans
        .iter()
        .filter(|s| s.name == "ack linked" || s.name == "claim linked")
        .any(|a| a
            .links
            .links
            .iter()
            .any(|l| is(&l.span_context, run_linked))));

    // Every log line of the runs carries the trace id (the run's own in link mode).
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_run: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "task" && l["span"]["task_id"] == id.id())
        .collect();
    assert!(in_run.len() >= 3, "{text}"); // 2 handler lines + the retry warning
    for l in &in_run {
        assert_eq!(l["span"]["trace_id"], trace.to_string(), "{l}");
    }
    let linked_line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "linked ran")
        .unwrap();
    assert_eq!(
        linked_line["span"]["trace_id"],
        run_linked.span_context.trace_id().to_string()
    );
}
