//! Task deadlines (`expires_in`, `expires_at`) against real throwaway Redis servers and
//! in-process workers: a task not started by its deadline ends `expired` and never runs (while
//! its queue was paused, and when a worker's promote leases it), a retry that would start after
//! the deadline expires the task instead of running it again, and bad deadlines are refused at
//! the call with nothing stored.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use scheduler::{
    task, Client, ClientConfig, Error, Inspector, TaskCall, TaskContext, TaskError, TaskState,
    Worker, WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};

/// Runs of [`flaky`] so far.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicU32>);

/// Counts its run, then fails with a retry after `retry_ms` (or succeeds when it is 0).
#[task(name = "flaky", queue = "dl", max_retries = 5)]
async fn flaky(ctx: TaskContext, retry_ms: u64) -> Result<(), TaskError> {
    ctx.state::<Runs>()?.0.fetch_add(1, Ordering::SeqCst);
    if retry_ms == 0 {
        return Ok(());
    }
    Err(TaskError::retry_after(
        "not yet",
        Duration::from_millis(retry_ms),
    ))
}

fn worker(redis: &RedisServer, ns: &str, runs: &Runs) -> WorkerBuilder {
    Worker::builder()
        .redis_url(redis.url())
        .namespace(ns)
        .register(flaky)
        .queues(["dl"])
        .default_shards(2)
        .state(runs.clone())
}

async fn client(redis: &RedisServer, ns: &str) -> Client {
    Client::with_config(
        ClientConfig::new(redis.url())
            .namespace(ns)
            .default_shards(2),
    )
    .await
    .unwrap()
}

/// The state of `id` once it is finished, polled for up to 10 s.
async fn finished(c: &Client, id: &scheduler::TaskId) -> scheduler::TaskInfo {
    for _ in 0..500 {
        let info = c.status(id).await.unwrap();
        if info.state.is_finished() {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} did not finish within 10 s");
}

/// Tasks held back past their deadline (their queue paused) end `expired` when the worker
/// reaches them, counted and visible in status, and never run; `wait_result` says so; a task
/// with a deadline ahead runs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_not_started_by_their_deadline_expire_and_never_run() {
    let redis = RedisServer::start();
    let runs = Runs::default();
    let c = client(&redis, "e1").await;
    let inspector = Inspector::new(&c);
    c.shards("dl").await.unwrap();
    inspector.pause("dl").await.unwrap();
    let w = Running::start(worker(&redis, "e1", &runs)).await;
    // Ready at once, and due in 100 ms (promoted while paused: to the ready set): both with a
    // deadline 300 ms after the enqueue, which passes while the queue is paused.
    let now = TaskCall::<flaky>::new((0,))
        .expires_in(Duration::from_millis(300))
        .send(&c)
        .await
        .unwrap();
    let soon = TaskCall::<flaky>::new((0,))
        .countdown(Duration::from_millis(100))
        .expires_at(SystemTime::now() + Duration::from_millis(300))
        .send(&c)
        .await
        .unwrap();
    let info = c.status(&now).await.unwrap();
    assert_eq!(info.state, TaskState::Ready);
    tokio::time::sleep(Duration::from_millis(600)).await;
    inspector.resume("dl").await.unwrap();
    for id in [&now, &soon] {
        let info = finished(&c, id).await;
        assert_eq!(info.state, TaskState::Expired, "{id}");
        assert!(
            info.last_error
                .as_deref()
                .is_some_and(|e| e.contains("passed before the task started")),
            "{id}: {:?}",
            info.last_error
        );
        assert!(matches!(
            c.wait_result::<()>(id, Duration::from_secs(1)).await,
            Err(Error::Expired(_))
        ));
    }
    // A deadline far ahead: it runs.
    let fine = TaskCall::<flaky>::new((0,))
        .expires_in(Duration::from_secs(60))
        .send(&c)
        .await
        .unwrap();
    c.wait_result::<()>(&fine, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        runs.0.load(Ordering::SeqCst),
        1,
        "only the task in time ran"
    );
    let stats = c.queue_stats("dl").await.unwrap();
    assert_eq!(stats.counters.get("expired").copied(), Some(2));
    w.stop().await;
}

/// A delayed task whose deadline passes while no worker runs is expired by the promote that
/// would have leased it to a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_past_its_deadline_is_not_leased_by_the_promoter() {
    let redis = RedisServer::start();
    let runs = Runs::default();
    let c = client(&redis, "e2").await;
    let id = TaskCall::<flaky>::new((0,))
        .countdown(Duration::from_millis(100))
        .expires_in(Duration::from_millis(200))
        .send(&c)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let w = Running::start(worker(&redis, "e2", &runs)).await;
    assert_eq!(finished(&c, &id).await.state, TaskState::Expired);
    let report = w.stop().await;
    assert_eq!(runs.0.load(Ordering::SeqCst), 0);
    assert_eq!(report.succeeded, 0);
}

/// A failed run whose retry would start after the deadline ends the task `expired` at once,
/// with the run's error in the reason; it ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_deadline_expires_the_task() {
    let redis = RedisServer::start();
    let runs = Runs::default();
    let w = Running::start(worker(&redis, "e3", &runs)).await;
    let c = client(&redis, "e3").await;
    let id = TaskCall::<flaky>::new((60_000,))
        .expires_in(Duration::from_secs(30))
        .send(&c)
        .await
        .unwrap();
    let info = finished(&c, &id).await;
    assert_eq!(info.state, TaskState::Expired);
    let why = info.last_error.unwrap_or_default();
    assert!(
        why.contains("not yet") && why.contains("would start after the deadline"),
        "{why}"
    );
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
    w.stop().await;
}

/// Deadlines that cannot hold are refused with `InvalidDeadline` and store nothing: zero,
/// passed, before the countdown or the eta (checked by the client), before a countdown's due
/// time when given as a moment (only the Redis clock can tell), on the plain and the unique
/// path alike.
#[tokio::test]
async fn bad_deadlines_are_refused_and_store_nothing() {
    let redis = RedisServer::start();
    let c = client(&redis, "e4").await;
    let now = SystemTime::now();
    let bad = [
        TaskCall::<flaky>::new((0,)).expires_in(Duration::ZERO),
        TaskCall::<flaky>::new((0,)).expires_at(now - Duration::from_secs(1)),
        TaskCall::<flaky>::new((0,))
            .countdown(Duration::from_secs(10))
            .expires_in(Duration::from_secs(5)),
        TaskCall::<flaky>::new((0,))
            .eta(now + Duration::from_secs(10))
            .expires_at(now + Duration::from_secs(5)),
        TaskCall::<flaky>::new((0,))
            .countdown(Duration::from_secs(10))
            .expires_at(now + Duration::from_secs(5)),
    ];
    for (i, call) in bad.into_iter().enumerate() {
        match call.send(&c).await {
            Err(e @ Error::InvalidDeadline(_)) => assert_eq!(e.kind(), "invalid_deadline"),
            other => panic!("case {i}: {other:?}"),
        }
    }
    let unique = TaskCall::<flaky>::new((0,))
        .unique_for(Duration::from_secs(5))
        .countdown(Duration::from_secs(10))
        .expires_at(now + Duration::from_secs(5))
        .send(&c)
        .await;
    assert!(
        matches!(unique, Err(Error::InvalidDeadline(_))),
        "{unique:?}"
    );
    let stats = c.queue_stats("dl").await.unwrap();
    assert_eq!(
        (stats.scheduled, stats.ready, stats.counters.get("enqueued")),
        (0, 0, None)
    );
}

/// Unique-for windows carry deadlines too: a throttled task stores its deadline; a debounce
/// replaces it with the later request's (or removes it when that one has none).
#[tokio::test]
async fn unique_tasks_carry_their_deadline() {
    let redis = RedisServer::start();
    let c = client(&redis, "e5").await;
    let w = Duration::from_secs(30);
    let id = TaskCall::<flaky>::new((1,))
        .countdown(Duration::from_secs(60))
        .unique_for(w)
        .expires_in(Duration::from_secs(120))
        .send(&c)
        .await
        .unwrap();
    let info = c.status(&id).await.unwrap();
    let expires = info.expires_at_ms.expect("a deadline");
    assert!((110_000..=120_000).contains(&(expires - info.enqueued_at_ms)));
    let d = TaskCall::<flaky>::new((2,))
        .countdown(Duration::from_secs(60))
        .debounce(w)
        .expires_in(Duration::from_secs(90))
        .send(&c)
        .await
        .unwrap();
    let first = c
        .status(&d)
        .await
        .unwrap()
        .expires_at_ms
        .expect("a deadline");
    let again = TaskCall::<flaky>::new((2,))
        .countdown(Duration::from_secs(60))
        .debounce(w)
        .send(&c)
        .await
        .unwrap();
    assert_eq!(again, d, "debounce replaced the pending task");
    assert!(first > 0);
    assert_eq!(c.status(&d).await.unwrap().expires_at_ms, None);
}
