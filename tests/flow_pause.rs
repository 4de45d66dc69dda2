//! Pausing and resuming a queue (`docs/flow-control.md`) against real workers and a throwaway
//! Redis: workers stop claiming within a second, enqueue and promotion go on, nothing is lost,
//! and the state is visible with plain Redis commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::{
    task, Client, ClientConfig, Error, Inspector, TaskContext, TaskError, TaskId, TaskState,
    Worker, WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};

/// Runs of each task id.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<HashMap<String, u32>>>);

impl Runs {
    fn total(&self) -> u32 {
        self.0.lock().unwrap().values().sum()
    }
}

/// Counts that it ran.
#[task(name = "tick", queue = "flow")]
async fn tick(ctx: TaskContext, _n: u32) -> Result<(), TaskError> {
    let runs = ctx.state::<Runs>()?;
    *runs
        .0
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default() += 1;
    Ok(())
}

fn worker(url: &str, ns: &str, runs: &Runs) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .queues(["flow"])
        .queue_shards("flow", 4)
        .register(tick)
        .state(runs.clone())
        .concurrency(4)
        .lock_ttl(Duration::from_secs(1))
        .sweep_interval(Duration::from_secs(1))
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A paused queue: a worker running before the pause and one started during it claim nothing
/// from one second after the pause on (tasks due now and tasks promoted meanwhile wait in the
/// ready set, none running); `<ns>:paused` shows it to `redis-cli` and `Inspector::queues`;
/// resuming runs every task exactly once. Pausing twice, resuming twice and pausing an unknown
/// or malformed queue give the documented answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_claims_and_resume_restarts_them() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "pause";
    let runs = Runs::default();
    let w1 = Running::start(worker(&url, ns, &runs)).await;
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(ns)
            .queue_shards("flow", 4),
    )
    .await
    .unwrap();
    let inspector = Inspector::new(&client);

    // The worker is live: a task runs.
    tick::new(0).send(&client).await.unwrap();
    let r = runs.clone();
    wait_until("the first task runs", Duration::from_secs(30), || {
        r.total() == 1
    })
    .await;

    assert!(inspector.pause("flow").await.unwrap());
    assert!(!inspector.pause("flow").await.unwrap(), "paused twice");
    // Visible with redis-cli: HGET <ns>:paused <queue> is the pause time, unix ms.
    let at: i64 = redis::cmd("HGET")
        .arg("pause:paused")
        .arg("flow")
        .query(&mut redis.conn())
        .unwrap();
    assert!(at > 1_700_000_000_000, "{at}");
    let listed = inspector.queues().await.unwrap();
    assert_eq!(listed[0].paused_at_ms, Some(at));

    // The bound: one second after the pause no worker claims.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A worker that starts while the queue is paused learns it when it subscribes.
    let w2 = Running::start(worker(&url, ns, &runs)).await;
    let mut ids: Vec<TaskId> = Vec::new();
    for n in 0..20 {
        ids.push(tick::new(n).send(&client).await.unwrap());
    }
    for n in 0..10 {
        ids.push(
            tick::new(100 + n)
                .countdown(Duration::from_millis(300))
                .send(&client)
                .await
                .unwrap(),
        );
    }
    // Long enough for the delayed ones to be promoted, and for a claim to have happened.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(runs.total(), 1, "a paused queue's task ran");
    for id in &ids {
        assert_eq!(client.status(id).await.unwrap().state, TaskState::Ready);
    }
    let counts = inspector.queue("flow").await.unwrap();
    assert_eq!(
        (
            counts.total.ready,
            counts.total.scheduled,
            counts.total.due_now
        ),
        (30, 0, 0),
        "enqueue and promotion go on while paused"
    );

    assert!(inspector.resume("flow").await.unwrap());
    assert!(!inspector.resume("flow").await.unwrap(), "resumed twice");
    assert_eq!(inspector.queues().await.unwrap()[0].paused_at_ms, None);
    let r = runs.clone();
    wait_until(
        "every task runs after resume",
        Duration::from_secs(30),
        || r.total() == 31,
    )
    .await;
    for id in &ids {
        assert_eq!(client.status(id).await.unwrap().state, TaskState::Succeeded);
    }
    assert!(runs.0.lock().unwrap().values().all(|&n| n == 1));

    assert!(matches!(
        inspector.pause("nowhere").await,
        Err(Error::UnknownQueue(q)) if q == "nowhere"
    ));
    assert!(matches!(
        inspector.pause("bad{name}").await,
        Err(Error::InvalidQueueName(_))
    ));
    w1.stop().await;
    w2.stop().await;
}

/// A pause written by hand with `redis-cli HSET <ns>:paused <queue> ...` (no message published)
/// is read by the workers at their next refresh (the sweep interval, 1 s here), and so is its
/// removal with `HDEL`: tasks wait, then run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_written_by_hand_is_read_within_the_sweep_interval() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "byhand";
    let runs = Runs::default();
    let w = Running::start(worker(&url, ns, &runs)).await;
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace(ns)
            .queue_shards("flow", 4),
    )
    .await
    .unwrap();
    redis.cmd(&["HSET", "byhand:paused", "flow", "1"]).unwrap();
    // One refresh interval plus a margin.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let id = tick::new(1).send(&client).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(runs.total(), 0, "ran while paused by hand");
    assert_eq!(client.status(&id).await.unwrap().state, TaskState::Ready);
    redis.cmd(&["HDEL", "byhand:paused", "flow"]).unwrap();
    let r = runs.clone();
    wait_until(
        "the task runs once the pause is removed",
        Duration::from_secs(30),
        || r.total() == 1,
    )
    .await;
    w.stop().await;
}
