//! Unique-for windows against real throwaway Redis servers and in-process workers: throttle
//! within the window, after the first task finished and its record expired (result TTL 0), after
//! the window; debounce replacing a pending task's arguments and due time (the run sees the
//! last ones), and creating a new task once the first started; bulk enqueues mixing plain and
//! unique requests; bad input.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::redis::AsyncCommands;
use scheduler::{
    task, Client, ClientConfig, Error, TaskCall, TaskContext, TaskError, TaskRequest, TaskState,
    Worker, WorkerBuilder,
};
use scheduler_testkit::oracle::wait_for;
use scheduler_testkit::{RedisServer, Running};

/// What each run saw: (task id, n, pad length).
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, u64, usize)>>>);

impl Seen {
    fn all(&self) -> Vec<(String, u64, usize)> {
        self.0.lock().unwrap().clone()
    }
}

/// Records its arguments, then takes `ms` milliseconds.
#[task(name = "note", queue = "uq")]
async fn note(ctx: TaskContext, n: u64, pad: String, ms: u64) -> Result<(), TaskError> {
    let seen = ctx.state::<Seen>()?;
    seen.0
        .lock()
        .unwrap()
        .push((ctx.id().id().to_owned(), n, pad.len()));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

fn worker(redis: &RedisServer, ns: &str, seen: &Seen) -> WorkerBuilder {
    Worker::builder()
        .redis_url(redis.url())
        .namespace(ns)
        .register(note)
        .queues(["uq"])
        .default_shards(4)
        .result_ttl(Duration::ZERO)
        .state(seen.clone())
}

async fn client(redis: &RedisServer, ns: &str) -> Client {
    Client::with_config(
        ClientConfig::new(redis.url())
            .namespace(ns)
            .default_shards(4),
    )
    .await
    .unwrap()
}

fn call(n: u64) -> TaskCall<note> {
    TaskCall::<note>::new((n, String::new(), 0))
}

/// Keys of namespace `ns` matching `pattern` (after `ns:`).
async fn keys(client: &Client, ns: &str, pattern: &str) -> Vec<String> {
    let mut conn = client.store().conn();
    conn.keys(format!("{ns}:{pattern}")).await.unwrap()
}

/// Within the window, the same name and arguments (or the same caller key) create nothing and
/// return the first id; other arguments are another window; a plain enqueue is untouched.
#[tokio::test]
async fn throttle_returns_the_first_id_within_the_window() {
    let redis = RedisServer::start();
    let c = client(&redis, "t1").await;
    let w = Duration::from_secs(30);
    let first = call(1).unique_for(w).send(&c).await.unwrap();
    let again = c.enqueue_bulk([call(1).unique_for(w)]).await.unwrap();
    assert_eq!(again, vec![(first.clone(), false)]);
    let other = call(2).unique_for(w).send(&c).await.unwrap();
    assert_ne!(other, first);
    // A caller key: one window whatever the arguments.
    let k1 = call(3)
        .unique_key("user-7")
        .unique_for(w)
        .send(&c)
        .await
        .unwrap();
    let k2 = call(4)
        .unique_key("user-7")
        .unique_for(w)
        .send(&c)
        .await
        .unwrap();
    assert_eq!(k1, k2);
    assert_eq!(
        c.status(&k1).await.unwrap().args,
        c.status(&k2).await.unwrap().args
    );
    // One bulk call: plain and unique mixed, a duplicate inside the call, order kept.
    let out = c
        .enqueue_bulk([
            call(5),
            call(1).unique_for(w),
            call(6).unique_for(w),
            call(6).unique_for(w),
        ])
        .await
        .unwrap();
    assert!(out[0].1);
    assert_eq!(out[1], (first.clone(), false));
    assert!(out[2].1);
    assert_eq!(out[3], (out[2].0.clone(), false));
    let stats = c.queue_stats("uq").await.unwrap();
    // 1, 2, user-7, plain 5, 6: five tasks.
    assert_eq!(stats.ready, 5);
    assert_eq!(stats.counters.get("enqueued"), Some(&5));
    // The window keys: 1, 2, user-7, 6. A plain enqueue writes none.
    assert_eq!(keys(&c, "t1", "*:u:*").await.len(), 4);
    // Each key lives in its task's partition, with the window as TTL.
    for k in keys(&c, "t1", "*:u:*").await {
        let mut conn = c.store().conn();
        let id: String = conn.get(&k).await.unwrap();
        let tag = &k[..k.find(":u:").unwrap()];
        let exists: bool = conn.exists(format!("{tag}:t:{id}")).await.unwrap();
        assert!(exists, "{k} -> {id} not in its partition");
        let ttl: i64 = conn.pttl(&k).await.unwrap();
        assert!(ttl > 0 && ttl <= 30_000, "{ttl}");
    }
}

/// The window outlives the task: after it ran and its record expired (result TTL 0), the same
/// enqueue still returns its id and creates nothing; after the window, a new task is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttle_holds_after_the_task_finished_and_ends_with_the_window() {
    let redis = RedisServer::start();
    let seen = Seen::default();
    let w = Running::start(worker(&redis, "t2", &seen)).await;
    let c = client(&redis, "t2").await;
    let window = Duration::from_secs(5);
    let first = call(1).unique_for(window).send(&c).await.unwrap();
    wait_for("the first run", Duration::from_secs(10), || {
        seen.all().len() == 1
    })
    .await;
    // Result TTL 0: the record goes with the ack.
    let mut gone = false;
    for _ in 0..100 {
        if matches!(c.status(&first).await, Err(Error::NotFound(_))) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the record of {first} expired");
    let (again, created) = c
        .enqueue_bulk([call(1).unique_for(window)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again, created), (first.clone(), false));
    assert!(matches!(c.status(&first).await, Err(Error::NotFound(_))));
    assert_eq!(seen.all().len(), 1);
    // After the window: a new task, which runs.
    tokio::time::sleep(window).await;
    let (next, created) = c
        .enqueue_bulk([call(1).unique_for(window)])
        .await
        .unwrap()
        .remove(0);
    assert!(created);
    assert_ne!(next, first);
    wait_for("the second run", Duration::from_secs(10), || {
        seen.all().len() == 2
    })
    .await;
    let ids: Vec<String> = seen.all().into_iter().map(|s| s.0).collect();
    assert_eq!(ids, vec![first.id().to_owned(), next.id().to_owned()]);
    w.stop().await;
}

/// A short window (300 ms) expires by the Redis clock: the next enqueue creates a task.
#[tokio::test]
async fn throttle_window_expires() {
    let redis = RedisServer::start();
    let c = client(&redis, "t3").await;
    let w = Duration::from_millis(300);
    let first = call(1).unique_for(w).send(&c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (second, created) = c
        .enqueue_bulk([call(1).unique_for(w)])
        .await
        .unwrap()
        .remove(0);
    assert!(created);
    assert_ne!(first, second);
    assert_eq!(c.queue_stats("uq").await.unwrap().ready, 2);
}

/// Debounce (by a caller key: the default key, name and arguments, would make every other
/// argument list another window): a later enqueue replaces the pending task's arguments (long
/// to short: no stale piece left) and due time (a far countdown becomes now: scheduled to ready)
/// and returns its id; the run sees the last arguments, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_replaces_a_pending_task() {
    let redis = RedisServer::start();
    let seen = Seen::default();
    let c = client(&redis, "d1").await;
    let w = Duration::from_secs(30);
    let long = "x".repeat(300);
    let first = TaskCall::<note>::new((1, long.clone(), 0))
        .countdown(Duration::from_secs(3600))
        .unique_key("doc-9")
        .debounce(w)
        .send(&c)
        .await
        .unwrap();
    let info = c.status(&first).await.unwrap();
    assert_eq!(info.state, TaskState::Scheduled);
    let far = info.run_at_ms;
    // Replaced while scheduled: still scheduled, new args, new due time.
    let (id, created) = c
        .enqueue_bulk([TaskCall::<note>::new((2, long, 0))
            .countdown(Duration::from_secs(7200))
            .unique_key("doc-9")
            .debounce(w)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!((&id, created), (&first, false));
    let info = c.status(&first).await.unwrap();
    assert_eq!(info.state, TaskState::Scheduled);
    assert!(
        info.run_at_ms >= far + 3_000_000,
        "{} vs {far}",
        info.run_at_ms
    );
    // Replaced again, due now and with short args: ready, the old pieces gone.
    let id = call(3)
        .unique_key("doc-9")
        .debounce(w)
        .send(&c)
        .await
        .unwrap();
    assert_eq!(id, first);
    let info = c.status(&first).await.unwrap();
    assert_eq!(info.state, TaskState::Ready);
    assert_eq!(info.args, rmp_serde::to_vec(&(3u64, "", 0u64)).unwrap());
    let rec = keys(&c, "d1", &format!("*:t:{}", first.id())).await;
    let mut conn = c.store().conn();
    let fields: Vec<String> = conn.hkeys(&rec[0]).await.unwrap();
    assert!(!fields.iter().any(|f| f.starts_with("args:")), "{fields:?}");
    let stats = c.queue_stats("uq").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready), (0, 1));
    assert_eq!(stats.counters.get("enqueued"), Some(&1));
    let run = Running::start(worker(&redis, "d1", &seen)).await;
    wait_for("the run", Duration::from_secs(10), || {
        !seen.all().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.all(), vec![(first.id().to_owned(), 3, 0)]);
    run.stop().await;
}

/// Debounce once the first task started: a new task, a new window; the running one is left
/// alone, and both runs see their own arguments. After the second finished (record gone with
/// result TTL 0), the next enqueue creates a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_after_start_creates_a_new_task() {
    let redis = RedisServer::start();
    let seen = Seen::default();
    let run = Running::start(worker(&redis, "d2", &seen)).await;
    let c = client(&redis, "d2").await;
    let w = Duration::from_secs(30);
    let slow = |n| {
        TaskCall::<note>::new((n, String::new(), 1500))
            .unique_key("feed")
            .debounce(w)
    };
    let first = slow(1).send(&c).await.unwrap();
    wait_for("the first run started", Duration::from_secs(10), || {
        seen.all().len() == 1
    })
    .await;
    let (second, created) = c.enqueue_bulk([slow(2)]).await.unwrap().remove(0);
    assert!(created);
    assert_ne!(second, first);
    wait_for("the second run", Duration::from_secs(10), || {
        seen.all().len() == 2
    })
    .await;
    let mut gone = false;
    for _ in 0..300 {
        if matches!(c.status(&second).await, Err(Error::NotFound(_))) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the record of {second} expired");
    let third = slow(3).send(&c).await.unwrap();
    assert_ne!(third, second);
    wait_for("the third run", Duration::from_secs(10), || {
        seen.all().len() == 3
    })
    .await;
    let got: Vec<(String, u64)> = seen.all().into_iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        got,
        vec![
            (first.id().to_owned(), 1),
            (second.id().to_owned(), 2),
            (third.id().to_owned(), 3)
        ]
    );
    run.stop().await;
}

/// Bad input is a typed error at the call, and nothing is stored, also for the plain requests
/// of the same bulk call.
#[tokio::test]
async fn bad_unique_options_are_refused() {
    let redis = RedisServer::start();
    let c = client(&redis, "b1").await;
    let bad = [
        call(1).unique_for(Duration::ZERO).into_request().unwrap(),
        call(1)
            .debounce(Duration::from_micros(500))
            .into_request()
            .unwrap(),
        call(1).unique_key("k").into_request().unwrap(),
        call(1)
            .unique_key("")
            .unique_for(Duration::from_secs(1))
            .into_request()
            .unwrap(),
        call(1)
            .id("mine")
            .unique_for(Duration::from_secs(1))
            .into_request()
            .unwrap(),
        TaskRequest::new("note", "uq", &(1u64, "", 0u64))
            .unwrap()
            .debounce(Duration::ZERO),
    ];
    for req in bad {
        let plain = call(9).into_request().unwrap();
        let err = c.enqueue_bulk([plain, req.clone()]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidUnique(_)), "{req:?}: {err:?}");
        assert_eq!(err.kind(), "invalid_unique");
    }
    let mut conn = c.store().conn();
    let all: Vec<String> = conn.keys("b1:*:t:*").await.unwrap();
    assert!(all.is_empty(), "{all:?}");
}
