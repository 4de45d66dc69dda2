//! Many worker hosts: several worker processes (`test_worker` of `tools/chaos`, separate OS processes)
//! share one queue against a throwaway Redis. Every task runs once, promotion spreads over the
//! processes (the balance is printed), and a process that leaves, by SIGTERM or SIGKILL, leaves its
//! partitions to the others: tasks due after it left still run, within about a lock TTL.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scheduler::redis::{self, AsyncCommands};
use scheduler::{task, Client, ClientConfig, TaskContext, TaskError, TaskId, TaskRequest};
use scheduler_testkit::{tool_bin, ChildGuard, RedisServer};

/// The task `test_worker` (`tools/chaos`) registers; declared here only to build calls.
#[task(name = "sleep_then_record", max_retries = 3)]
async fn sleep_then_record(_ctx: TaskContext, _ms: u64, _tag: String) -> Result<(), TaskError> {
    unreachable!("run by the worker processes")
}

const SHARDS: u16 = 16;

fn spawn(url: &str, ns: &str, queue: &str, list: &str, lock_ttl_ms: u64) -> ChildGuard {
    let child = Command::new(tool_bin("test_worker"))
        .args(["--redis-url", url, "--namespace", ns, "--queue", queue])
        .args(["--concurrency", "32", "--lease-ms", "5000"])
        .args(["--lock-ttl-ms", &lock_ttl_ms.to_string()])
        .args(["--shutdown-timeout-ms", "2000", "--record-list", list])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the test worker");
    ChildGuard(child)
}

/// SIGTERM, wait, and parse the `key=value` report the test worker prints.
fn stop(mut child: ChildGuard) -> HashMap<String, u64> {
    child.signal(15);
    let status = child
        .wait_timeout(Duration::from_secs(30))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out.lines()
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

async fn client(url: &str, ns: &str, queue: &str) -> Client {
    Client::with_config(
        ClientConfig::new(url)
            .namespace(ns)
            .queue_shards(queue, SHARDS),
    )
    .await
    .unwrap()
}

/// Enqueues `n` tasks tagged `<prefix><i>` due uniformly over `spread_ms`.
async fn enqueue(
    client: &Client,
    queue: &str,
    prefix: &str,
    n: u64,
    spread_ms: u64,
) -> Vec<TaskId> {
    let reqs: Vec<TaskRequest> = (0..n)
        .map(|i| {
            sleep_then_record::new(0, format!("{prefix}{i}"))
                .queue(queue)
                .countdown(Duration::from_millis(i * spread_ms / n))
                .into_request()
                .unwrap()
        })
        .collect();
    client
        .enqueue_bulk(reqs)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Waits until the record list holds `n` entries (or the deadline passes) and returns them.
async fn records(client: &Client, list: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut conn = client.store().conn();
    loop {
        let got: Vec<String> = conn.lrange(list, 0, -1).await.unwrap();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tags that ran more than once, and how many distinct tags ran.
fn tally(records: &[String]) -> (Vec<String>, usize) {
    let mut runs: HashMap<&str, u32> = HashMap::new();
    for r in records {
        let tag = r.rsplit_once(':').map_or(r.as_str(), |(t, _)| t);
        *runs.entry(tag).or_default() += 1;
    }
    let twice = runs
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t.to_string())
        .collect();
    (twice, runs.len())
}

/// Three worker processes on one 16-shard queue, 3,000 tasks due over 3 s: each runs exactly
/// once, and every run is counted once by the process that ran it (the balance is printed). How
/// the runs spread is not asserted: a promoting process leases what falls due to itself while it
/// has idle slots, so a process that holds no partition's lock may run nothing while the others
/// keep up (docs/architecture.md, "Precise timing without polling").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_queue() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("mp", "mp", "mp:record");
    let client = client(&url, ns, queue).await;
    let workers: Vec<ChildGuard> = (0..3).map(|_| spawn(&url, ns, queue, list, 2000)).collect();
    // Let them subscribe before the first due times.
    tokio::time::sleep(Duration::from_millis(500)).await;
    enqueue(&client, queue, "t", 3000, 3000).await;
    let got = records(&client, list, 3000, Duration::from_secs(60)).await;
    let reports: Vec<HashMap<String, u64>> = workers.into_iter().map(stop).collect();

    let (twice, distinct) = tally(&got);
    assert_eq!(
        (distinct, got.len()),
        (3000, 3000),
        "every task once; twice: {twice:?}"
    );
    let field = |k: &str| reports.iter().map(|r| r[k]).collect::<Vec<_>>();
    println!(
        "balance over 3 processes: claimed {:?}, promoted {:?}",
        field("claimed"),
        field("promoted")
    );
    assert_eq!(field("claimed").iter().sum::<u64>(), 3000);
    // Task 0 has countdown 0: enqueue puts it straight into the ready set; the rest are promoted.
    assert_eq!(field("promoted").iter().sum::<u64>(), 2999);
}

/// A process that leaves by SIGTERM and one killed with SIGKILL: tasks due after they left are
/// promoted by the survivor. After SIGKILL the dead process's locks expire within the lock TTL
/// (1 s here), so no task starts more than about a TTL late; the worst lateness is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_processes_hand_their_partitions_over() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("leave", "leave", "leave:record");
    let client = client(&url, ns, queue).await;
    let mut workers: Vec<ChildGuard> = (0..3).map(|_| spawn(&url, ns, queue, list, 1000)).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Due over 6 s: the first two seconds run with three processes.
    let ids = enqueue(&client, queue, "t", 1200, 6000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaving = workers.remove(0);
    let term_report = stop(leaving);
    let mut killed = workers.remove(0);
    killed.signal(9);
    let _ = killed.wait_timeout(Duration::from_secs(10));
    let got = records(&client, list, 1200, Duration::from_secs(60)).await;
    let survivor = stop(workers.remove(0));

    let (twice, distinct) = tally(&got);
    assert_eq!(
        distinct, 1200,
        "every task ran after two of three processes left"
    );
    // A run the killed process had started may have completed twice (at-least-once); with
    // no-op tasks this is rare. Report it rather than hide it.
    println!(
        "SIGTERM'd process promoted {}, survivor promoted {} and reaped {}; duplicates {}",
        term_report["promoted"],
        survivor["promoted"],
        survivor["reaped"],
        twice.len()
    );
    assert!(survivor["promoted"] > 0);
    // Lateness of every task from its record (claim time minus due time, Redis clock): the worst
    // shows the takeover delay. Generous bound: a correctness check (the tasks of the killed
    // process's partitions were not stranded), not a speed target.
    let mut worst = 0i64;
    let mut conn = client.store().conn();
    for id in &ids {
        let key = client
            .store()
            .partition(queue, id.shard(SHARDS))
            .keys
            .task(id.id());
        let (started, due): (i64, i64) = redis::cmd("HMGET")
            .arg(&key)
            .arg("started_at")
            .arg("run_at")
            .query_async(&mut conn)
            .await
            .unwrap();
        worst = worst.max(started - due);
        assert!(started >= due, "{id} started early");
    }
    println!(
        "worst start lateness after two of three processes left: {worst} ms (lock TTL 1000 ms)"
    );
    assert!(worst < 10_000, "{worst} ms");
}

/// A lock holder that is stopped (SIGSTOP: alive, connected, silent) while its partitions have
/// work due does not stall them: the other process sees their due work untouched and takes them
/// over. The lock TTL is 10 minutes here, so lock expiry cannot be what rescues them (before
/// takeovers existed, those partitions waited for it). The worst lateness of the tasks the stopped
/// process had not claimed is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_lock_holder_does_not_stall_its_partitions() {
    let redis = RedisServer::start();
    let url = redis.url();
    let (ns, queue, list) = ("stop", "stop", "stop:record");
    let client = client(&url, ns, queue).await;
    let mut workers: Vec<ChildGuard> = (0..2)
        .map(|_| spawn(&url, ns, queue, list, 600_000))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = 800;
    let ids = enqueue(&client, queue, "t", n, 6000).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Stop the process holding the most promoter locks (tokens start with `<host>:<pid>:`).
    let mut conn = client.store().conn();
    let mut held = [0usize; 2];
    for shard in 0..SHARDS {
        let key = client.store().partition(queue, shard).keys.lock();
        let token: Option<String> = conn.get(&key).await.unwrap();
        for (i, w) in workers.iter().enumerate() {
            if token
                .as_deref()
                .is_some_and(|t| t.contains(&format!(":{}:", w.0.id())))
            {
                held[i] += 1;
            }
        }
    }
    let victim = usize::from(held[1] > held[0]);
    assert!(held[victim] > 0, "no process holds a lock: {held:?}");
    workers[victim].signal(19);
    let stopped_at = Instant::now();
    let got = records(&client, list, n as usize, Duration::from_secs(40)).await;
    let waited = stopped_at.elapsed();
    workers[victim].signal(18);
    let survivor = stop(workers.remove(1 - victim));
    let _ = stop(workers.remove(0));

    let (twice, distinct) = tally(&got);
    assert_eq!(
        distinct, n as usize,
        "every task ran while the holder of {} of {SHARDS} locks was stopped (waited {waited:?}; lock TTL 10 min)",
        held[victim]
    );
    assert!(survivor["promoted"] > 0);
    let mut worst = 0i64;
    for id in &ids {
        let key = client
            .store()
            .partition(queue, id.shard(SHARDS))
            .keys
            .task(id.id());
        let (started, due, attempts): (i64, i64, i64) = redis::cmd("HMGET")
            .arg(&key)
            .arg("started_at")
            .arg("run_at")
            .arg("attempts")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(started >= due, "{id} started early");
        if attempts == 1 {
            worst = worst.max(started - due);
        }
    }
    println!(
        "holder of {} of {SHARDS} locks stopped: every task ran {waited:?} after the stop; worst start lateness of tasks it had not claimed {worst} ms (takeover_after 50 ms, lock TTL 10 min); duplicates {}",
        held[victim],
        twice.len()
    );
}
