//! Many tasks at once against a throwaway Redis: a bulk enqueue over several queues and shard
//! counts runs every task exactly once, and several workers whose promoters race on the same
//! partitions (with their locks deliberately broken, and a rogue promoter on top) never deliver a
//! task twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::redis::AsyncCommands;
use scheduler::{task, Client, ClientConfig, TaskContext, TaskError, TaskRequest, Worker};
use scheduler_testkit::oracle::wait_for;
use scheduler_testkit::{RedisServer, Running};

/// Executions by "queue/id".
#[derive(Clone, Default)]
struct Executions(Arc<Mutex<HashMap<String, u32>>>);

impl Executions {
    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().map(|&n| u64::from(n)).sum()
    }

    fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn duplicates(&self) -> Vec<(String, u32)> {
        let mut d: Vec<_> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        d.sort();
        d
    }
}

/// Counts its execution.
#[task(name = "count_me")]
async fn count_me(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
    let ex = ctx.state::<Executions>()?;
    *ex.0
        .lock()
        .unwrap()
        .entry(ctx.id().to_string())
        .or_default() += 1;
    Ok(n)
}

/// 5,000 tasks over three queues with 1, 4 and 16 shards, some due now and some a little later,
/// go in one bulk call (all created) and each runs exactly once; the queues end empty with 5,000
/// successes counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_runs_every_task_once() {
    const N: u32 = 5_000;
    let queues = [("bulk-a", 1u16), ("bulk-b", 4), ("bulk-c", 16)];
    let redis = RedisServer::start();
    let url = redis.url();
    let mut cfg = ClientConfig::new(&url).namespace("bulk");
    for (q, s) in queues {
        cfg = cfg.queue_shards(q, s);
    }
    let client = Client::with_config(cfg).await.unwrap();

    let reqs: Vec<TaskRequest> = (0..N)
        .map(|i| {
            let (queue, _) = queues[i as usize % queues.len()];
            let call = count_me::new(i).queue(queue);
            let call = if i % 2 == 0 {
                call
            } else {
                call.countdown(Duration::from_millis(u64::from(i % 500)))
            };
            call.into_request().unwrap()
        })
        .collect();
    let out = client.enqueue_bulk(reqs).await.unwrap();
    assert_eq!(out.len(), N as usize);
    assert!(out.iter().all(|(_, created)| *created));
    let distinct: std::collections::HashSet<_> = out.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(distinct.len(), N as usize);

    let ex = Executions::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("bulk")
            .queues(queues.map(|(q, _)| q))
            .register(count_me)
            .state(ex.clone())
            .concurrency(64)
            .result_ttl(Duration::ZERO)
            .lock_ttl(Duration::from_secs(1))
            .sweep_interval(Duration::from_secs(1)),
    )
    .await;
    wait_for("5,000 executions", Duration::from_secs(60), || {
        ex.total() >= u64::from(N)
    })
    .await;
    let report = w.stop().await;
    assert_eq!(ex.duplicates(), Vec::<(String, u32)>::new());
    assert_eq!((ex.total(), ex.distinct()), (u64::from(N), N as usize));
    for (id, _) in &out {
        assert!(ex.0.lock().unwrap().contains_key(&id.to_string()), "{id}");
    }
    assert_eq!(report.succeeded, u64::from(N));
    for (q, shards) in queues {
        let stats = client.queue_stats(q).await.unwrap();
        assert_eq!(stats.shards, shards);
        assert_eq!(
            (stats.scheduled, stats.ready, stats.running, stats.dead),
            (0, 0, 0, 0),
            "{q}"
        );
        let expected = N / 3 + u32::from(queues.iter().position(|x| x.0 == q).unwrap() < 2);
        assert_eq!(
            stats.counters.get("succeeded"),
            Some(&u64::from(expected)),
            "{q}"
        );
    }
}

/// Three workers on one queue of 16 shards, 10,000 tasks due within about a second: their
/// promoters race on the same partitions because a chaos task keeps deleting the promoter locks
/// and a rogue promoter calls the promote script on every partition in a loop. Every task runs
/// exactly once, none is promoted twice, and no outcome is rejected as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_promoters_never_double_deliver() {
    const N: u32 = 10_000;
    const SHARDS: u16 = 16;
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::with_config(
        ClientConfig::new(&url)
            .namespace("race")
            .queue_shards("race", SHARDS),
    )
    .await
    .unwrap();

    let ex = Executions::default();
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            Running::start(
                Worker::builder()
                    .redis_url(&url)
                    .namespace("race")
                    .queues(["race"])
                    .register(count_me)
                    .state(ex.clone())
                    .concurrency(32)
                    .result_ttl(Duration::ZERO)
                    .lock_ttl(Duration::from_millis(300))
                    .sweep_interval(Duration::from_millis(100)),
            )
            .await,
        );
    }

    // Chaos: delete every promoter lock every 20 ms, so partitions keep changing hands and
    // several promoters believe they own the same partition at once.
    let lock_keys: Vec<String> = (0..SHARDS)
        .map(|s| client.store().partition("race", s).keys.lock())
        .collect();
    let mut conn = client.store().conn();
    let chaos = tokio::spawn(async move {
        loop {
            let _: () = conn.del(&lock_keys).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // A rogue promoter that ignores locks altogether.
    let store = client.store().clone();
    let rogue_moved = Arc::new(AtomicU64::new(0));
    let moved = Arc::clone(&rogue_moved);
    let rogue = tokio::spawn(async move {
        loop {
            for s in 0..SHARDS {
                let r = store
                    .promote(&store.partition("race", s), 50)
                    .await
                    .unwrap();
                moved.fetch_add(r.moved, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // Every task is scheduled (due 100 ms to ~1.1 s from now), so every one must be promoted.
    let reqs: Vec<TaskRequest> = (0..N)
        .map(|i| {
            count_me::new(i)
                .queue("race")
                .countdown(Duration::from_millis(100 + u64::from(i % 1_000)))
                .into_request()
                .unwrap()
        })
        .collect();
    let out = client.enqueue_bulk(reqs).await.unwrap();
    assert!(out.iter().all(|(_, created)| *created));

    wait_for("10,000 executions", Duration::from_secs(30), || {
        ex.total() >= u64::from(N)
    })
    .await;
    chaos.abort();
    rogue.abort();
    let mut reports = Vec::new();
    for w in workers {
        reports.push(w.stop().await);
    }
    assert_eq!(
        ex.duplicates(),
        Vec::<(String, u32)>::new(),
        "double delivery"
    );
    assert_eq!((ex.total(), ex.distinct()), (u64::from(N), N as usize));
    let succeeded: u64 = reports.iter().map(|r| r.succeeded).sum();
    let stale: u64 = reports.iter().map(|r| r.stale).sum();
    assert_eq!(succeeded, u64::from(N));
    assert_eq!(stale, 0);
    assert!(
        reports.iter().filter(|r| r.claimed > 0).count() >= 2,
        "several workers took part: {reports:?}"
    );
    let by_workers: u64 = reports.iter().map(|r| r.promoted).sum();
    let by_rogue = rogue_moved.load(Ordering::SeqCst);
    assert_eq!(
        by_workers + by_rogue,
        u64::from(N),
        "promotions counted by the movers: workers {by_workers}, rogue {by_rogue}"
    );
    let stats = client.queue_stats("race").await.unwrap();
    assert_eq!(
        stats.counters.get("promoted"),
        Some(&u64::from(N)),
        "each task promoted exactly once"
    );
    assert_eq!(stats.counters.get("succeeded"), Some(&u64::from(N)));
    assert_eq!((stats.scheduled, stats.ready, stats.running), (0, 0, 0));
}
