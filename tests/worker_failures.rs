//! Failed runs on a real worker against a throwaway Redis: retries with backoff, `retry_after`,
//! `fail` (no retry), the dead-letter set, panics and timeouts, and a worker that keeps serving
//! other tasks through all of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::redis::aio::ConnectionManager;
use scheduler::redis::AsyncCommands;
use scheduler::{
    task, Backoff, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskState, Worker,
    WorkerBuilder,
};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};

/// One run of a task as the handler saw it: attempt number, due time and start time (Redis
/// clock, unix ms).
#[derive(Debug, Clone, Copy)]
struct Run {
    attempt: u32,
    due: i64,
    start: i64,
}

/// Runs by task id, with a connection to read the Redis clock.
#[derive(Clone)]
struct RunLog {
    conn: ConnectionManager,
    runs: Arc<Mutex<HashMap<String, Vec<Run>>>>,
}

impl RunLog {
    async fn new(url: &str) -> Self {
        let conn = scheduler::redis::Client::open(url)
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        Self {
            conn,
            runs: Arc::default(),
        }
    }

    /// Records the run of `ctx`, stamped with the Redis clock.
    async fn record(&self, ctx: &TaskContext) -> Result<(), TaskError> {
        let (s, us): (i64, i64) = scheduler::redis::cmd("TIME")
            .query_async(&mut self.conn.clone())
            .await?;
        self.runs
            .lock()
            .unwrap()
            .entry(ctx.id().id().to_owned())
            .or_default()
            .push(Run {
                attempt: ctx.attempt(),
                due: ctx.due_ms(),
                start: s * 1000 + us / 1000,
            });
        Ok(())
    }

    fn of(&self, id: &TaskId) -> Vec<Run> {
        self.runs
            .lock()
            .unwrap()
            .get(id.id())
            .cloned()
            .unwrap_or_default()
    }
}

/// Fails its first `fail_times` runs with a retryable error, then returns its attempt number.
#[task(name = "flaky", queue = "failures")]
async fn flaky(ctx: TaskContext, fail_times: u32) -> Result<u32, TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    if ctx.attempt() <= fail_times {
        return Err(TaskError::retry(format!(
            "flaky failure {} of {fail_times}",
            ctx.attempt()
        )));
    }
    Ok(ctx.attempt())
}

/// First run asks to be retried after exactly `wait_ms`; the second succeeds.
#[task(name = "rate_limited", queue = "failures")]
async fn rate_limited(ctx: TaskContext, wait_ms: u64) -> Result<(), TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            "rate limited",
            Duration::from_millis(wait_ms),
        ));
    }
    Ok(())
}

/// Fails for good, at once.
#[task(name = "hopeless", queue = "failures", max_retries = 5)]
async fn hopeless(ctx: TaskContext, reason: String) -> Result<(), TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    Err(TaskError::fail(reason))
}

/// Always fails with a retryable error carrying its attempt number.
#[task(name = "always_fails", queue = "failures")]
async fn always_fails(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    Err(TaskError::retry(format!(
        "always fails (attempt {})",
        ctx.attempt()
    )))
}

/// Panics on every run.
#[task(name = "panicky", queue = "failures")]
async fn panicky(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    panic!("boom at attempt {}", ctx.attempt());
}

/// Sleeps far past any timeout it is given.
#[task(name = "sleeper", queue = "failures")]
async fn sleeper(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<RunLog>()?.record(&ctx).await?;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    Ok(())
}

/// Succeeds and counts itself.
#[task(name = "fine", queue = "failures")]
async fn fine(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<Arc<AtomicU64>>()?
        .fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A worker for these tests: every task above, quick leases, locks and sweeps.
fn worker(url: &str, ns: &str, log: &RunLog) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .queues(["failures"])
        .register(flaky)
        .register(rate_limited)
        .register(hopeless)
        .register(always_fails)
        .register(panicky)
        .register(sleeper)
        .register(fine)
        .state(log.clone())
        .lease(Duration::from_secs(5))
        .lock_ttl(Duration::from_secs(1))
        .sweep_interval(Duration::from_secs(1))
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// Whether `id` is a member of its partition's dead set.
async fn in_dead_set(client: &Client, id: &TaskId) -> bool {
    let shards = client.shards(id.queue()).await.unwrap();
    let p = client.store().partition(id.queue(), id.shard(shards));
    let score: Option<f64> = client
        .store()
        .conn()
        .zscore(p.keys.dead(), id.id())
        .await
        .unwrap();
    score.is_some()
}

/// A task failing twice then succeeding, with exponential backoff 100 ms, x2, capped at 1 s, runs
/// three times and succeeds; each retry starts no earlier than its backoff after the failed run
/// (Redis clock), and is due exactly when the worker said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_backoff() {
    let redis = RedisServer::start();
    let url = redis.url();
    let log = RunLog::new(&url).await;
    let w = Running::start(worker(&url, "retry", &log).backoff(Backoff::exponential(
        Duration::from_millis(100),
        2.0,
        Duration::from_secs(1),
    )))
    .await;
    let client = client(&url, "retry").await;

    let id = flaky::new(2).send(&client).await.unwrap();
    let out: u32 = client
        .wait_result(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        out, 3,
        "the third attempt succeeded and returned its number"
    );
    let info = client.status(&id).await.unwrap();
    assert_eq!(info.state, TaskState::Succeeded);
    assert_eq!(info.attempts, 3);

    let runs = log.of(&id);
    assert_eq!(
        runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    for (pair, backoff_ms) in runs.windows(2).zip([100i64, 200]) {
        let (prev, next) = (pair[0], pair[1]);
        assert!(
            next.due - prev.start >= backoff_ms,
            "retry {} due {} ms after the failed run, backoff is {backoff_ms} ms",
            next.attempt,
            next.due - prev.start
        );
        assert!(
            next.start >= next.due,
            "retry {} ran early: {next:?}",
            next.attempt
        );
        assert!(next.start - prev.start >= backoff_ms);
    }
    let report = w.stop().await;
    assert_eq!((report.retried, report.succeeded), (2, 1));
}

/// `TaskError::retry_after(d)` overrides the backoff: the retry waits at least `d`, not the
/// configured (much shorter) backoff; `TaskError::fail` sends the task to the dead set after one
/// attempt with its message, although retries remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_and_fail_now() {
    let redis = RedisServer::start();
    let url = redis.url();
    let log = RunLog::new(&url).await;
    let w = Running::start(
        worker(&url, "after", &log).backoff(Backoff::Fixed(Duration::from_millis(10))),
    )
    .await;
    let client = client(&url, "after").await;

    let limited = rate_limited::new(400).send(&client).await.unwrap();
    let doomed = hopeless::new("the account is closed".into())
        .send(&client)
        .await
        .unwrap();

    let info = wait_finished(&client, &limited, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Succeeded);
    assert_eq!(info.attempts, 2);
    let runs = log.of(&limited);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[1].due - runs[0].start >= 400,
        "retry_after(400 ms) was not honoured: {runs:?}"
    );
    assert!(runs[1].start >= runs[1].due, "{runs:?}");

    let info = wait_finished(&client, &doomed, Duration::from_secs(30)).await;
    assert_eq!(info.state, TaskState::Dead);
    assert_eq!(info.attempts, 1, "fail() must not retry");
    assert_eq!(info.last_error.as_deref(), Some("the account is closed"));
    assert!(in_dead_set(&client, &doomed).await);
    assert_eq!(log.of(&doomed).len(), 1);
    let report = w.stop().await;
    assert_eq!(report.dead, 1);
}

/// A task that always fails, with max_retries 2, runs three times and lands in the dead set with
/// its last error; `wait_result` reports `Error::TaskFailed` with that text, and the queue's
/// counters show two retries and one death.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_the_dead_letter_set() {
    let redis = RedisServer::start();
    let url = redis.url();
    let log = RunLog::new(&url).await;
    let w = Running::start(
        worker(&url, "dead", &log).backoff(Backoff::Fixed(Duration::from_millis(20))),
    )
    .await;
    let client = client(&url, "dead").await;

    let id = always_fails::new()
        .max_retries(2)
        .send(&client)
        .await
        .unwrap();
    match client.wait_result::<()>(&id, Duration::from_secs(30)).await {
        Err(Error::TaskFailed { id: failed, error }) => {
            assert_eq!(failed, id);
            assert_eq!(error, "always fails (attempt 3)");
        }
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    let info = client.status(&id).await.unwrap();
    assert_eq!(info.state, TaskState::Dead);
    assert_eq!(info.attempts, 3);
    assert_eq!(info.max_retries, 2);
    assert_eq!(info.last_error.as_deref(), Some("always fails (attempt 3)"));
    assert!(info.finished_at_ms.is_some());
    assert!(
        in_dead_set(&client, &id).await,
        "the task is in the dead set"
    );
    assert_eq!(log.of(&id).len(), 3);

    let stats = client.queue_stats("failures").await.unwrap();
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.running + stats.ready + stats.scheduled, 0);
    assert_eq!(stats.counters.get("retried"), Some(&2));
    assert_eq!(stats.counters.get("dead"), Some(&1));
    let report = w.stop().await;
    assert_eq!((report.retried, report.dead), (2, 1));
}

/// A panicking handler is caught: retried, then dead with "panicked: <message>"; a handler that
/// outlives its timeout is cancelled and dead with "timed out"; with only two execution slots,
/// the worker still runs every other task afterwards (slots are freed, the worker lives on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_timeouts_fail_the_run_not_the_worker() {
    let redis = RedisServer::start();
    let url = redis.url();
    let log = RunLog::new(&url).await;
    let done = Arc::new(AtomicU64::new(0));
    let w = Running::start(
        worker(&url, "panics", &log)
            .state(Arc::clone(&done))
            .concurrency(2)
            .backoff(Backoff::Fixed(Duration::from_millis(20))),
    )
    .await;
    let client = client(&url, "panics").await;

    let mut panicking = Vec::new();
    let mut slow = Vec::new();
    for _ in 0..2 {
        panicking.push(panicky::new().max_retries(1).send(&client).await.unwrap());
        slow.push(
            sleeper::new()
                .max_retries(0)
                .timeout(Duration::from_millis(200))
                .send(&client)
                .await
                .unwrap(),
        );
    }
    let mut good = Vec::new();
    for _ in 0..5 {
        good.push(fine::new().send(&client).await.unwrap());
    }

    for id in &panicking {
        let info = wait_finished(&client, id, Duration::from_secs(30)).await;
        assert_eq!(info.state, TaskState::Dead, "{id}");
        assert_eq!(info.attempts, 2, "a panic is retried like a failure");
        let err = info.last_error.unwrap_or_default();
        assert!(
            err.starts_with("panicked: ") && err.contains("boom at attempt 2"),
            "{err}"
        );
        assert!(in_dead_set(&client, id).await);
    }
    for id in &slow {
        let info = wait_finished(&client, id, Duration::from_secs(30)).await;
        assert_eq!(info.state, TaskState::Dead, "{id}");
        assert_eq!(info.attempts, 1);
        let err = info.last_error.unwrap_or_default();
        assert!(err.contains("timed out"), "{err}");
    }
    for id in &good {
        let info = wait_finished(&client, id, Duration::from_secs(30)).await;
        assert_eq!(info.state, TaskState::Succeeded, "{id}");
    }
    assert_eq!(done.load(Ordering::SeqCst), 5);

    // Still alive: a task enqueued after all of that runs too.
    let late = fine::new().send(&client).await.unwrap();
    client
        .wait_result::<()>(&late, Duration::from_secs(30))
        .await
        .unwrap();

    let report = w.stop().await;
    assert_eq!(report.panicked, 4, "two tasks, two attempts each");
    assert_eq!(report.timed_out, 2);
    assert_eq!(report.dead, 4);
    assert_eq!(report.succeeded, 6);
}
