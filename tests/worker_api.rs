//! The producer API against a real worker and a throwaway Redis: cancelling tasks, unique
//! (caller-chosen) task ids, and typed results.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::{
    task, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskInfo, TaskRequest,
    TaskState, Worker, WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};
use serde::{Deserialize, Serialize};

/// Executions by task id, with the argument each run saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<String, Vec<u32>>>>);

impl Seen {
    fn of(&self, id: &TaskId) -> Vec<u32> {
        self.0
            .lock()
            .unwrap()
            .get(id.id())
            .cloned()
            .unwrap_or_default()
    }
}

/// Records that it ran with `n`.
#[task(name = "note", queue = "api")]
async fn note(ctx: TaskContext, n: u32) -> Result<(), TaskError> {
    let seen = ctx.state::<Seen>()?;
    seen.0
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default()
        .push(n);
    Ok(())
}

/// Runs for `ms` milliseconds.
#[task(name = "linger", queue = "api")]
async fn linger(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A structured result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    total: u64,
    label: String,
    parts: Vec<u32>,
    note: Option<String>,
}

/// Sums its parts into a [`Summary`].
#[task(name = "summarise", queue = "api")]
async fn summarise(label: String, parts: Vec<u32>) -> Result<Summary, TaskError> {
    Ok(Summary {
        total: parts.iter().map(|&p| u64::from(p)).sum(),
        label,
        parts,
        note: None,
    })
}

/// Returns nothing.
#[task(name = "nothing", queue = "api")]
async fn nothing() {}

fn worker(url: &str, ns: &str, seen: &Seen) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .queues(["api"])
        .register(note)
        .register(linger)
        .register(summarise)
        .register(nothing)
        .state(seen.clone())
        .lease(Duration::from_secs(5))
        .lock_ttl(Duration::from_secs(1))
        .sweep_interval(Duration::from_secs(1))
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// Polls the task's status every 20 ms until `pred` holds; panics after `timeout`.
async fn wait_state(
    client: &Client,
    id: &TaskId,
    timeout: Duration,
    pred: impl Fn(TaskState) -> bool,
) -> TaskInfo {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = client.status(id).await.unwrap();
        if pred(info.state) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} not in the awaited state within {timeout:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cancelled scheduled task never runs (a sentinel due at the same time runs, proving the
/// worker was there) and reads `cancelled`; waiting for its result says `Cancelled`. Cancelling a
/// finished task is `AlreadyFinished`, a running one is told to stop (`Requested`; this one
/// ignores it and succeeds within the grace period, which stands), an unknown id `NotFound`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_withdraws_a_scheduled_task() {
    let redis = RedisServer::start();
    let url = redis.url();
    let seen = Seen::default();
    // One slot: tasks run in ready order, so the sentinel's run implies the cancelled task's slot
    // in the order has passed.
    let w = Running::start(worker(&url, "cancel", &seen).concurrency(1)).await;
    let client = client(&url, "cancel").await;

    let doomed = note::new(1)
        .countdown(Duration::from_millis(500))
        .send(&client)
        .await
        .unwrap();
    let sentinel = note::new(2)
        .countdown(Duration::from_millis(600))
        .send(&client)
        .await
        .unwrap();
    assert_eq!(
        client.status(&doomed).await.unwrap().state,
        TaskState::Scheduled
    );
    client.cancel(&doomed).await.unwrap();
    assert_eq!(
        client.status(&doomed).await.unwrap().state,
        TaskState::Cancelled
    );

    wait_state(&client, &sentinel, Duration::from_secs(30), |s| {
        s == TaskState::Succeeded
    })
    .await;
    assert_eq!(seen.of(&sentinel), [2]);
    assert!(seen.of(&doomed).is_empty(), "a cancelled task ran");
    let info = client.status(&doomed).await.unwrap();
    assert_eq!(info.state, TaskState::Cancelled);
    assert_eq!(info.attempts, 0);
    assert!(matches!(
        client.wait_result::<()>(&doomed, Duration::from_secs(1)).await,
        Err(Error::Cancelled(id)) if id == doomed
    ));
    assert!(matches!(
        client.cancel(&doomed).await,
        Err(Error::AlreadyFinished(id)) if id == doomed
    ));
    assert!(matches!(
        client.cancel(&sentinel).await,
        Err(Error::AlreadyFinished(id)) if id == sentinel
    ));

    let missing = TaskId::new("api", "no-such-task");
    assert!(matches!(
        client.cancel(&missing).await,
        Err(Error::NotFound(id)) if id == missing
    ));

    let busy = linger::new(1_500).send(&client).await.unwrap();
    wait_state(&client, &busy, Duration::from_secs(30), |s| {
        s == TaskState::Running
    })
    .await;
    // A running task is told to stop (docs/flow-control.md; tests/flow_cancel.rs has the rest);
    // this handler ignores it and returns success within the grace period (5 s by default), so
    // its success stands.
    assert_eq!(
        client.cancel_task(&busy).await.unwrap(),
        scheduler::Cancellation::Requested
    );
    client
        .wait_result::<()>(&busy, Duration::from_secs(30))
        .await
        .expect("a success within the grace period stands");

    let stats = client.queue_stats("api").await.unwrap();
    assert_eq!(stats.counters.get("cancelled"), Some(&1));
    w.stop().await;
}

/// A caller-chosen id makes enqueue idempotent: a second enqueue (alone, or twice in one bulk
/// call, or after the task finished) reports `created = false`, keeps the first arguments, and
/// the task runs exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_ids_enqueue_once_and_run_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let seen = Seen::default();
    let client = client(&url, "unique").await;

    let req = |id: &str, n: u32| {
        note::new(n)
            .id(id)
            .countdown(Duration::from_millis(200))
            .into_request()
            .unwrap()
    };
    let first = client.enqueue_bulk(vec![req("order-1", 1)]).await.unwrap();
    let again = client.enqueue_bulk(vec![req("order-1", 2)]).await.unwrap();
    let same_id = TaskId::new("api", "order-1");
    assert_eq!(first, [(same_id.clone(), true)]);
    assert_eq!(again, [(same_id.clone(), false)]);
    // The single-task API returns the existing id as well.
    let id = note::new(3).id("order-1").send(&client).await.unwrap();
    assert_eq!(id, same_id);

    let twice = client
        .enqueue_bulk(vec![
            req("order-2", 10),
            req("order-2", 20),
            req("order-3", 30),
        ])
        .await
        .unwrap();
    assert_eq!(
        twice,
        [
            (TaskId::new("api", "order-2"), true),
            (TaskId::new("api", "order-2"), false),
            (TaskId::new("api", "order-3"), true),
        ]
    );
    let stats = client.queue_stats("api").await.unwrap();
    assert_eq!(stats.scheduled, 3, "three distinct tasks exist");

    // One slot, so the later sentinel finishing means everything before it has run.
    let w = Running::start(worker(&url, "unique", &seen).concurrency(1)).await;
    let sentinel = note::new(99)
        .countdown(Duration::from_millis(400))
        .send(&client)
        .await
        .unwrap();
    client
        .wait_result::<()>(&sentinel, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(seen.of(&same_id), [1], "ran once, with the first arguments");
    assert_eq!(seen.of(&TaskId::new("api", "order-2")), [10]);
    assert_eq!(seen.of(&TaskId::new("api", "order-3")), [30]);

    // Enqueueing a finished task's id again is still a no-op.
    let after = client.enqueue_bulk(vec![req("order-1", 4)]).await.unwrap();
    assert_eq!(after, [(same_id.clone(), false)]);
    let sentinel2 = note::new(98).send(&client).await.unwrap();
    client
        .wait_result::<()>(&sentinel2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(seen.of(&same_id), [1]);
    let info = client.status(&same_id).await.unwrap();
    assert_eq!((info.state, info.attempts), (TaskState::Succeeded, 1));

    let report = w.stop().await;
    assert_eq!(report.succeeded, 5, "order-1, -2, -3 and two sentinels");
}

/// A task returning a struct gives it back through `wait_result::<T>` and `result::<T>`; a unit
/// task's `wait_result::<()>` works; a result not yet there is `Ok(None)`; reading a result as
/// the wrong type is a `Decode` error, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_come_back_typed() {
    let redis = RedisServer::start();
    let url = redis.url();
    let seen = Seen::default();
    let client = client(&url, "results").await;

    let later = summarise::new("later".into(), vec![1])
        .countdown(Duration::from_secs(60))
        .send(&client)
        .await
        .unwrap();
    assert_eq!(client.result::<Summary>(&later).await.unwrap(), None);
    assert!(matches!(
        client
            .wait_result::<Summary>(&later, Duration::from_millis(100))
            .await,
        Err(Error::Timeout(id)) if id == later
    ));

    let w = Running::start(worker(&url, "results", &seen)).await;
    let sum = summarise::new("weekly".into(), vec![3, 4, 5])
        .send(&client)
        .await
        .unwrap();
    let unit = nothing::new().send(&client).await.unwrap();
    // An untyped request for the same task works the same way.
    let untyped = client
        .enqueue_request(
            TaskRequest::new("summarise", "api", &("raw".to_owned(), vec![7u32])).unwrap(),
        )
        .await
        .unwrap();

    let got: Summary = client
        .wait_result(&sum, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        got,
        Summary {
            total: 12,
            label: "weekly".into(),
            parts: vec![3, 4, 5],
            note: None,
        }
    );
    assert_eq!(client.result::<Summary>(&sum).await.unwrap(), Some(got));
    client
        .wait_result::<()>(&unit, Duration::from_secs(30))
        .await
        .unwrap();
    let raw: Summary = client
        .wait_result(&untyped, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!((raw.total, raw.label.as_str()), (7, "raw"));

    assert!(matches!(
        client.result::<Vec<String>>(&sum).await,
        Err(Error::Decode(_))
    ));
    w.stop().await;
}

/// Every bad setting makes `build()` return `Error::InvalidConfig` naming the setting, before
/// any connection is made (the URL points at a port nothing listens on) and without a panic:
/// before, a zero lease, lock TTL or interval reached `tokio::time::interval`, which panics.
#[tokio::test]
async fn bad_settings_are_typed_errors_from_build() {
    type Set = fn(WorkerBuilder) -> WorkerBuilder;
    let cases: Vec<(&str, Set)> = vec![
        ("concurrency", |b| b.concurrency(0)),
        ("claim_batch", |b| b.claim_batch(0)),
        ("promote_batch", |b| b.promote_batch(0)),
        ("default_shards", |b| b.default_shards(0)),
        ("queue_shards", |b| b.queue_shards("api", 0)),
        ("max_payload_bytes", |b| b.max_payload_bytes(0)),
        ("outcome_write_attempts", |b| b.outcome_write_attempts(0)),
        ("release_attempts", |b| b.release_attempts(0)),
        ("lease", |b| b.lease(Duration::ZERO)),
        ("lease", |b| b.lease(Duration::from_millis(299))),
        ("lease", |b| b.lease(Duration::MAX)),
        ("lock_ttl", |b| b.lock_ttl(Duration::ZERO)),
        ("takeover_after", |b| b.takeover_after(Duration::ZERO)),
        ("warm_sweep_interval", |b| {
            b.warm_sweep_interval(Duration::ZERO)
        }),
        ("sweep_interval", |b| b.sweep_interval(Duration::ZERO)),
        ("janitor_interval", |b| b.janitor_interval(Duration::ZERO)),
        ("heartbeat_interval", |b| {
            b.heartbeat_interval(Duration::ZERO)
        }),
        ("heartbeat_interval", |b| {
            b.heartbeat_interval(Duration::MAX)
        }),
        ("health_check_interval", |b| {
            b.health_check(Duration::ZERO, Duration::from_secs(3))
        }),
        ("health_check_timeout", |b| {
            b.health_check(Duration::from_secs(1), Duration::ZERO)
        }),
        ("queue_metrics_interval", |b| {
            b.queue_metrics(Duration::ZERO)
        }),
        ("shutdown_timeout", |b| b.shutdown_timeout(Duration::MAX)),
        ("cancel_grace", |b| b.cancel_grace(Duration::MAX)),
        ("result_ttl", |b| b.result_ttl(Duration::MAX)),
        ("dead_max_age", |b| b.dead_retention(Duration::MAX, 10)),
        ("backoff", |b| {
            b.backoff(scheduler::Backoff::Fixed(Duration::MAX))
        }),
        ("backoff.factor", |b| {
            b.backoff(scheduler::Backoff::exponential(
                Duration::from_secs(1),
                f64::NAN,
                Duration::from_secs(60),
            ))
        }),
    ];
    for (setting, set) in cases {
        // Port 1: nothing listens there, so reaching the connection would be a different error.
        let builder = set(Worker::builder().redis_url("redis://127.0.0.1:1"));
        match builder.build().await {
            Err(Error::InvalidConfig(msg)) => assert!(
                msg.starts_with(setting),
                "{setting}: the message names another setting: {msg}"
            ),
            Err(e) => panic!("{setting}: expected InvalidConfig, got {e}"),
            Ok(_) => panic!("{setting}: a bad value was accepted"),
        }
    }
}

/// `config()` replaces the settings a `WorkerConfig` holds and keeps the Redis URL (it used
/// to reset it to the default): a worker built from a copied config reaches the URL set
/// before `config()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_keeps_the_redis_url_set_before_it() {
    let server = RedisServer::start();
    let template = Worker::builder()
        .namespace("cfg-keep")
        .concurrency(3)
        .lease(Duration::from_secs(7));
    let cfg = template.settings().clone();
    let worker = Worker::builder()
        .redis_url(server.url())
        .config(cfg)
        .queues(["api"])
        .build()
        .await
        .expect("the URL set before config() is kept");
    assert_eq!(worker.config().concurrency(), 3);
    assert_eq!(worker.config().lease(), Duration::from_secs(7));
    assert_eq!(worker.config().namespace(), "cfg-keep");
}

/// After promoting a task, the promoter flags its partition for this process's fetcher at once:
/// it does not wait for the echo of the script's own `r:` notification. The worker here runs
/// as an ACL user that may not subscribe, so no notification ever reaches it, and its sweeps
/// are a minute apart: the task still runs right after its due time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_task_runs_without_the_pubsub_echo() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut admin = redis.conn();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("nosub")
        .arg("on")
        .arg(">nosub-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-subscribe")
        .arg("-psubscribe")
        .arg("-ssubscribe")
        .query(&mut admin)
        .unwrap();
    let client = client(&url, "echo").await;
    // Enqueued before the worker starts: its first sweep learns the due time (the `s:`
    // notification of the enqueue would not reach it).
    let id = note::new(7)
        .countdown(Duration::from_millis(1_500))
        .send(&client)
        .await
        .unwrap();
    let seen = Seen::default();
    let worker_url = format!("redis://nosub:nosub-pw@127.0.0.1:{}", redis.port());
    let w = Running::start(
        worker(&worker_url, "echo", &seen)
            .sweep_interval(Duration::from_secs(60))
            .warm_sweep_interval(Duration::from_secs(60)),
    )
    .await;
    wait_state(&client, &id, Duration::from_secs(8), |s| {
        s == TaskState::Succeeded
    })
    .await;
    assert_eq!(seen.of(&id), [7]);
    w.stop().await;
}
