//! `scheduler::logging` in JSON: every line logged during a task's run, by the worker or by the
//! handler, carries the run's task id, queue, task name and attempt, and the trace id when the
//! task carries a trace context (here without any OpenTelemetry layer: read from its headers).
//!
//! One test in this file: the subscriber is global to the process.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::logging::{self, LogFormat};
use scheduler::{task, Client, ClientConfig, TaskContext, TaskError, Worker};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};

/// Logs a line, and fails its first attempt.
#[task(name = "chatty", queue = "logged", max_retries = 2)]
async fn chatty(ctx: TaskContext) -> Result<(), TaskError> {
    tracing::info!(step = "inside", "handler says hi");
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            "first attempt fails",
            Duration::ZERO,
        ));
    }
    Ok(())
}

/// A W3C trace context, as a traced producer would put in a task's headers.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// Its trace id.
const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// What the subscriber wrote.
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

/// A task that logs and is retried once: its handler's lines and the worker's "will retry" line
/// are JSON objects whose `span` names the task (id, queue, name) and the attempt they belong to.
/// A second one, enqueued with a W3C `traceparent` header, has its trace id on every line of
/// both runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_run_carries_the_task_fields() {
    let out = Captured::default();
    let sink = out.clone();
    logging::init_with_writer(LogFormat::Json, move || sink.clone()).unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("logs")
            .register(chatty),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace("logs"))
        .await
        .unwrap();
    let id = chatty::new().send(&client).await.unwrap();
    let traced = chatty::new()
        .header("traceparent", TRACEPARENT)
        .send(&client)
        .await
        .unwrap();
    wait_finished(&client, &id, Duration::from_secs(20)).await;
    wait_finished(&client, &traced, Duration::from_secs(20)).await;
    w.stop().await;

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_run: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "task")
        .collect();
    let (in_traced, in_run): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = in_run
        .into_iter()
        .partition(|l| l["span"]["task_id"] == traced.id());
    for l in &in_run {
        let span = &l["span"];
        assert_eq!(span["task_id"], id.id(), "{l}");
        assert_eq!(span["queue"], "logged", "{l}");
        assert_eq!(span["task_name"], "chatty", "{l}");
        assert!(span["attempt"].is_u64(), "{l}");
        assert!(span.get("trace_id").is_none(), "{l}");
    }
    // The traced task: both runs' lines (2 handler lines, the retry warning) carry its trace id.
    assert!(in_traced.len() >= 3, "{text}");
    for l in &in_traced {
        let span = &l["span"];
        assert_eq!(span["queue"], "logged", "{l}");
        assert_eq!(span["task_name"], "chatty", "{l}");
        assert!(span["attempt"].is_u64(), "{l}");
        assert_eq!(span["trace_id"], TRACE_ID, "{l}");
    }
    let attempt_of = |message: &str| -> Vec<u64> {
        in_run
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .map(|l| l["span"]["attempt"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(attempt_of("handler says hi"), vec![1, 2]);
    assert_eq!(attempt_of("failed; will retry if attempts remain"), vec![1]);
    // The handler's own fields are there too.
    assert!(in_run.iter().any(|l| l["fields"]["step"] == "inside"));
    // Lines outside any run have no task span.
    assert!(lines
        .iter()
        .any(|l| l["fields"]["message"] == "worker started" && l.get("span").is_none()));
}
