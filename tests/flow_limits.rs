//! Flow-control limits (`docs/flow-control.md`) against real workers and a throwaway Redis: a
//! concurrency limit per key holds across several workers while unlimited tasks of the same
//! partitions keep flowing; a rate limit spaces starts; a killed worker's slots come back after
//! its lease; every counter is back to empty at the end.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::limits::{Limit, LimitScope};
use scheduler::redis::AsyncCommands;
use scheduler::{
    task, Client, ClientConfig, Error, Inspector, TaskContext, TaskError, TaskId, TaskState,
    Worker, WorkerBuilder,
};
use scheduler_testkit::{tool_bin, ChildGuard, RedisServer, Running};

/// What the runs saw: runs at once per limit key (now and at most), start times (Redis clock,
/// the moment the limits let the run start), and when each run ended.
#[derive(Clone, Default)]
struct Seen {
    now: Arc<Mutex<HashMap<String, u32>>>,
    most: Arc<Mutex<HashMap<String, u32>>>,
    starts: Arc<Mutex<Vec<(String, i64)>>>,
    done: Arc<AtomicU32>,
}

/// Runs `ms` milliseconds, counting itself as running under its limit key (or `-`).
#[task(name = "limited", queue = "lim")]
async fn limited(ctx: TaskContext, ms: u64) -> Result<(), TaskError> {
    record(ctx, ms).await
}

/// The test worker's task, by name: here it runs 50 ms, counted like `limited`.
#[task(name = "sleep_then_record", queue = "lim")]
async fn sleep_then_record(ctx: TaskContext, _ms: u64, _tag: String) -> Result<(), TaskError> {
    record(ctx, 50).await
}

async fn record(ctx: TaskContext, ms: u64) -> Result<(), TaskError> {
    let seen = ctx.state::<Seen>()?;
    let key = ctx
        .header("sched.limit.tenant")
        .unwrap_or("-")
        .chars()
        .take(16)
        .collect::<String>();
    {
        let mut now = seen.now.lock().unwrap();
        let n = now.entry(key.clone()).or_default();
        *n += 1;
        let mut most = seen.most.lock().unwrap();
        let m = most.entry(key.clone()).or_default();
        *m = (*m).max(*n);
    }
    seen.starts
        .lock()
        .unwrap()
        .push((ctx.id().id().to_owned(), ctx.claimed_at_ms()));
    tokio::time::sleep(Duration::from_millis(ms)).await;
    *seen.now.lock().unwrap().get_mut(&key).unwrap() -= 1;
    seen.done.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

fn worker(url: &str, ns: &str, seen: &Seen) -> WorkerBuilder {
    Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .queues(["lim"])
        .queue_shards("lim", 4)
        .register(limited)
        .register(sleep_then_record)
        .state(seen.clone())
        .concurrency(8)
        .lock_ttl(Duration::from_secs(1))
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns).queue_shards("lim", 4))
        .await
        .unwrap()
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

/// The budget keys left in Redis (`<ns>:{lim:*}`) that still hold holders or waiters.
async fn budget_leftovers(client: &Client, ns: &str) -> Vec<String> {
    let mut conn = client.store().conn();
    let keys: Vec<String> = conn.keys(format!("{ns}:{{lim:*")).await.unwrap();
    keys.into_iter()
        .filter(|k| k.ends_with(":run") || k.ends_with(":wait"))
        .collect()
}

/// Three workers, a concurrency limit of 2 per tenant: two tenants' 12 tasks each never run more
/// than 2 at once per tenant, while 40 tasks without a key (same queue, same partitions) all finish
/// before the limited ones do: no head-of-line blocking. Every task runs once, its attempt not
/// counted by its waits; the budgets end empty. A key of any bytes works (braces, colons,
/// unicode, 1 KiB), and a malformed one is a typed error at enqueue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_per_key_holds_across_workers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "conc";
    let client = client(&url, ns).await;
    let inspector = Inspector::new(&client);
    assert!(inspector
        .set_limit(
            &LimitScope::key("tenant").unwrap(),
            Limit::concurrency(2).unwrap()
        )
        .await
        .unwrap());
    let seen = Seen::default();
    let workers = [
        Running::start(worker(&url, ns, &seen)).await,
        Running::start(worker(&url, ns, &seen)).await,
        Running::start(worker(&url, ns, &seen)).await,
    ];
    let odd_key = format!("{{a}}:b ü {}", "x".repeat(1000));
    let mut limited_ids = Vec::new();
    for i in 0..24 {
        let key = if i % 2 == 0 { "acme" } else { odd_key.as_str() };
        limited_ids.push(
            limited::new(100)
                .limit_key("tenant", key)
                .send(&client)
                .await
                .unwrap(),
        );
    }
    let mut free_ids = Vec::new();
    for _ in 0..40 {
        free_ids.push(limited::new(0).send(&client).await.unwrap());
    }
    // Unlimited tasks are not stuck behind the waiting ones.
    wait_until(
        "the unlimited tasks finish",
        Duration::from_secs(20),
        || seen.done.load(Ordering::SeqCst) >= 40,
    )
    .await;
    let mut still_waiting = 0;
    for id in &limited_ids {
        if client.status(id).await.unwrap().state != TaskState::Succeeded {
            still_waiting += 1;
        }
    }
    assert!(
        still_waiting > 0,
        "the unlimited tasks finished before the limited ones"
    );
    wait_until("every task finishes", Duration::from_secs(60), || {
        seen.done.load(Ordering::SeqCst) >= 64
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    let most = seen.most.lock().unwrap().clone();
    assert_eq!(most.get("acme"), Some(&2), "{most:?}");
    let odd: String = odd_key.chars().take(16).collect();
    assert_eq!(most.get(&odd), Some(&2), "{most:?}");
    for id in &limited_ids {
        let info = client.status(id).await.unwrap();
        assert_eq!(info.state, TaskState::Succeeded);
        assert_eq!(info.attempts, 1, "waiting for a limit counts no attempt");
    }
    assert_eq!(seen.starts.lock().unwrap().len(), 64, "every task ran once");
    assert_eq!(budget_leftovers(&client, ns).await, Vec::<String>::new());
    // Bad input: typed errors, nothing enqueued.
    let err = limited::new(1)
        .limit_key("ten{ant}", "x")
        .send(&client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidLimit(_)), "{err}");
    let err = limited::new(1)
        .limit_key("tenant", &"x".repeat(1025))
        .send(&client)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidLimit(_)), "{err}");
    assert_eq!(
        inspector.limits().await.unwrap(),
        vec![(
            LimitScope::key("tenant").unwrap(),
            Limit::concurrency(2).unwrap()
        )]
    );
    let mut conn = client.store().conn();
    let raw: String = conn
        .hget(format!("{ns}:limits"), "key:tenant")
        .await
        .unwrap();
    assert_eq!(raw, "concurrency=2");
    assert!(inspector
        .remove_limit(&LimitScope::key("tenant").unwrap())
        .await
        .unwrap());
}

/// A rate limit of 4 starts per 400 ms on a task name, two workers: in every window of 400 ms
/// (Redis clock, the moments the limit let the runs start) at most 4 of the 20 runs start; all
/// run, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_spaces_starts_across_workers() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "rate";
    let client = client(&url, ns).await;
    let seen = Seen::default();
    let workers = [
        Running::start(worker(&url, ns, &seen).limit(
            LimitScope::task("limited").unwrap(),
            Limit::rate(4, Duration::from_millis(400)).unwrap(),
        ))
        .await,
        Running::start(worker(&url, ns, &seen)).await,
    ];
    for _ in 0..20 {
        limited::new(0).send(&client).await.unwrap();
    }
    wait_until("every task runs", Duration::from_secs(30), || {
        seen.done.load(Ordering::SeqCst) >= 20
    })
    .await;
    for w in workers {
        w.stop().await;
    }
    let mut starts: Vec<i64> = seen.starts.lock().unwrap().iter().map(|s| s.1).collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 20);
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|u| **u < t + 400).count();
        assert!(
            in_window <= 4,
            "{in_window} starts in 400 ms from {t}: {starts:?}"
        );
    }
    // 20 starts at 4 per 400 ms take at least 1.6 s from the first.
    assert!(starts[19] - starts[0] >= 1_600, "{starts:?}");
}

/// A worker process killed with SIGKILL while it holds both slots of a concurrency limit of 2
/// (lease 1 s): its slots come back once its leases run out, another worker runs everything,
/// never more than 2 at once, and the budget ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_slots_come_back_after_its_lease() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "killed";
    let client = client(&url, ns).await;
    Inspector::new(&client)
        .set_limit(
            &LimitScope::task("sleep_then_record").unwrap(),
            Limit::concurrency(2).unwrap(),
        )
        .await
        .unwrap();
    let child = Command::new(tool_bin("test_worker"))
        .args(["--redis-url", &url, "--namespace", ns, "--queue", "lim"])
        .args([
            "--lease-ms",
            "1000",
            "--lock-ttl-ms",
            "1000",
            "--concurrency",
            "4",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the test worker");
    let mut child = ChildGuard(child);
    let mut ids: Vec<TaskId> = Vec::new();
    for i in 0..6 {
        ids.push(
            sleep_then_record::new(60_000, format!("t{i}"))
                .send(&client)
                .await
                .unwrap(),
        );
    }
    let running = |infos: &[scheduler::TaskInfo]| {
        infos
            .iter()
            .filter(|i| i.state == TaskState::Running)
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut infos = Vec::new();
        for id in &ids {
            infos.push(client.status(id).await.unwrap());
        }
        if running(&infos) == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "two tasks run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let seen = Seen::default();
    let w = Running::start(worker(&url, ns, &seen).lease(Duration::from_secs(1))).await;
    wait_until(
        "every task runs in the new worker",
        Duration::from_secs(60),
        || seen.done.load(Ordering::SeqCst) >= 6,
    )
    .await;
    w.stop().await;
    assert_eq!(seen.most.lock().unwrap().get("-"), Some(&2));
    for id in &ids {
        assert_eq!(client.status(id).await.unwrap().state, TaskState::Succeeded);
    }
    assert_eq!(budget_leftovers(&client, ns).await, Vec::<String>::new());
}
