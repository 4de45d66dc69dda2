//! The metrics a worker serves over HTTP (`WorkerBuilder::metrics_addr`), scraped the way
//! Prometheus does after tasks ran: names, labels and values of the worker's, the client's, the
//! promoter's, the queue gauges' and the process's series.
//!
//! One test in this file: the Prometheus recorder is global to the process.

use std::net::SocketAddr;
use std::time::Duration;

use scheduler::{task, Client, ClientConfig, TaskContext, TaskError, TaskRequest, Worker};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{free_port, RedisServer, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Succeeds.
#[task(name = "tally", queue = "metered")]
async fn tally(n: u32) -> Result<u32, TaskError> {
    Ok(n + 1)
}

/// Fails its first attempt, then succeeds.
#[task(name = "flaky", queue = "metered", max_retries = 3)]
async fn flaky(ctx: TaskContext) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            "first attempt fails",
            Duration::ZERO,
        ));
    }
    Ok(())
}

/// The body of `GET /metrics` on `addr` (HTTP/1.0: the reply is the body, then close).
async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the series `name` whose labels include every one of `labels`, if there is one.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, val)| rest.contains(&format!("{k}=\"{val}\"")));
            all.then(|| v.parse().ok()).flatten()
        })
}

/// After a run, a retried run, a delayed task and a refused enqueue, `/metrics` shows each of
/// them in its series, with the queue and task labels, plus the queue gauges (sampled by this
/// only worker), Redis round trips and the process metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_over_http_after_tasks_ran() {
    let redis = RedisServer::start();
    let url = redis.url();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("m")
            .register(tally)
            .register(flaky)
            .metrics_addr(addr)
            .queue_metrics(Duration::from_millis(50)),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace("m"))
        .await
        .unwrap();

    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(tally::new(n).send(&client).await.unwrap());
    }
    ids.push(
        tally::new(9)
            .countdown(Duration::from_millis(300))
            .send(&client)
            .await
            .unwrap(),
    );
    ids.push(flaky::new().send(&client).await.unwrap());
    for id in &ids {
        wait_finished(&client, id, Duration::from_secs(20)).await;
    }
    let refused = TaskRequest::new("tally", "metered", &(1u32,))
        .unwrap()
        .priority(12);
    let err = client.enqueue_request(refused).await.unwrap_err();
    assert_eq!(err.kind(), "invalid_priority");

    // The outcomes are written, and the gauges read, after the tasks finished: poll until the
    // gauges show the empty queue and every run is counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = scrape(addr).await;
        let settled = ["scheduled", "ready", "running", "dead"]
            .iter()
            .all(|state| {
                value(
                    &text,
                    "scheduler_queue_tasks",
                    &[("queue", "metered"), ("state", state)],
                ) == Some(0.0)
            });
        let done = settled
            && value(
                &text,
                "scheduler_task_runs_total",
                &[("task", "flaky"), ("outcome", "success")],
            ) == Some(1.0);
        if done {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never settled:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let q = ("queue", "metered");

    // Producer side.
    assert_eq!(
        value(
            &text,
            "scheduler_tasks_enqueued_total",
            &[q, ("task", "tally")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &text,
            "scheduler_tasks_enqueued_total",
            &[q, ("task", "flaky")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "scheduler_enqueue_errors_total",
            &[("kind", "invalid_priority")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "scheduler_enqueue_duration_seconds_count", &[]),
        Some(6.0)
    );
    // Worker side: five tasks, six runs (flaky ran twice), one claim each.
    assert_eq!(
        value(&text, "scheduler_tasks_claimed_total", &[q]),
        Some(6.0)
    );
    assert_eq!(
        value(
            &text,
            "scheduler_task_runs_total",
            &[q, ("task", "flaky"), ("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "scheduler_task_runs_total",
            &[q, ("task", "flaky"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "scheduler_task_lateness_seconds_count", &[q]),
        Some(6.0)
    );
    assert_eq!(
        value(
            &text,
            "scheduler_task_duration_seconds_count",
            &[q, ("task", "tally")]
        ),
        Some(4.0)
    );
    assert_eq!(value(&text, "scheduler_tasks_running", &[]), Some(0.0));
    // The delayed task went through the scheduled set (flaky's retry may too: a zero delay).
    let promoted = value(&text, "scheduler_tasks_promoted_total", &[q]).expect("promoted");
    assert!((1.0..=2.0).contains(&promoted), "promoted: {promoted}");
    let lag = value(&text, "scheduler_promoter_lag_seconds_count", &[q]).expect("promoter lag");
    assert!(
        (1.0..=promoted).contains(&lag),
        "promote batches measured: {lag}"
    );
    // Queue gauges, read by this worker, which holds the queue's sampler key.
    assert_eq!(value(&text, "scheduler_queue_sampler", &[q]), Some(1.0));
    for state in ["scheduled", "ready", "running", "dead"] {
        assert_eq!(
            value(&text, "scheduler_queue_tasks", &[q, ("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    // Redis round trips and the process.
    assert!(value(&text, "scheduler_redis_round_trip_seconds_count", &[]).unwrap() > 10.0);
    assert!(
        value(
            &text,
            "scheduler_redis_round_trip_seconds_bucket",
            &[("le", "+Inf")]
        )
        .unwrap()
            > 10.0
    );
    assert!(value(&text, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&text, "process_open_fds", &[]).unwrap() >= 3.0);
    assert!(value(&text, "process_cpu_seconds_total", &[]).is_some());
    w.stop().await;
}
