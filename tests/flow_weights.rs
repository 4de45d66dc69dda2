//! Queue selection of a worker serving several queues (`docs/flow-control.md`, section 4):
//! weights give each queue its share of the claims while all have ready work, strict priority
//! drains the first queue before the next, and a weight of zero is refused at build. Against a
//! real redis-server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::{
    task, Client, ClientConfig, Error, Result, TaskContext, TaskError, TaskRequest, Worker,
    WorkerBuilder,
};
use scheduler_testkit::{RedisServer, Running};

/// The queue of each task, in the order they started.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<String>>>);

impl Starts {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Records its queue.
#[task(name = "rec", queue = "default")]
async fn rec(ctx: TaskContext, _n: u32) -> std::result::Result<(), TaskError> {
    let starts = ctx.state::<Starts>()?;
    starts.0.lock().unwrap().push(ctx.id().queue().to_owned());
    Ok(())
}

const QUEUES: [&str; 3] = ["critical", "default", "low"];
const SHARDS: u16 = 4;

async fn client(url: &str, ns: &str) -> Client {
    let mut cfg = ClientConfig::new(url).namespace(ns);
    for q in QUEUES {
        cfg = cfg.queue_shards(q, SHARDS);
    }
    Client::with_config(cfg).await.unwrap()
}

/// Enqueues `per_queue` tasks in each queue, due now or after `delay`.
async fn fill(client: &Client, per_queue: u32, delay: Option<Duration>) {
    let mut reqs = Vec::new();
    for q in QUEUES {
        for i in 0..per_queue {
            let r = TaskRequest::new("rec", q, &(i,)).unwrap();
            reqs.push(match delay {
                Some(d) => r.countdown(d),
                None => r,
            });
        }
    }
    client.enqueue_bulk(reqs).await.unwrap();
}

fn worker(url: &str, ns: &str, starts: &Starts) -> WorkerBuilder {
    let mut b = Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .register(rec)
        .state(starts.clone())
        .concurrency(4);
    for q in QUEUES {
        b = b.queue_shards(q, SHARDS);
    }
    b
}

async fn wait_for(starts: &Starts, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while starts.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} starts not within 15 s: {}",
            starts.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shares of each queue among the first `n` starts.
fn shares(starts: &Starts, n: usize) -> [f64; 3] {
    let s = starts.0.lock().unwrap();
    let mut counts = [0usize; 3];
    for q in &s[..n] {
        counts[QUEUES.iter().position(|x| x == q).unwrap()] += 1;
    }
    counts.map(|c| c as f64 / n as f64)
}

const PER_QUEUE: u32 = 1000;
/// Starts looked at: while every queue still has ready work (low has 1,000, and gets 10% of
/// these).
const FIRST: usize = 1500;

fn assert_near(got: [f64; 3], want: [f64; 3], tolerance: f64) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tolerance,
            "shares {got:?}, expected {want:?} ± {tolerance}"
        );
    }
}

/// Three queues saturated with ready tasks, weights 6:3:1: the first 1,500 starts are close to
/// 60%, 30%, 10% (stride scheduling makes them exact to a claim or two; the tolerance is 5
/// points). Then every task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_give_their_shares_of_the_claims() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "weights";
    let c = client(&url, ns).await;
    fill(&c, PER_QUEUE, None).await;
    let starts = Starts::default();
    let w = Running::start(worker(&url, ns, &starts).queue_weights([
        ("critical", 6),
        ("default", 3),
        ("low", 1),
    ]))
    .await;
    wait_for(&starts, FIRST).await;
    let got = shares(&starts, FIRST);
    eprintln!("weights 6:3:1, ready tasks: shares of the first {FIRST} starts {got:?}");
    assert_near(got, [0.6, 0.3, 0.1], 0.05);
    wait_for(&starts, 3 * PER_QUEUE as usize).await;
    w.stop().await;
}

/// The same with tasks that fall due together (promoted by the worker, which leases some to
/// itself as it promotes them, per partition and only into free execution slots): the shares
/// still follow the weights, as the fetcher claims nearly all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_hold_for_tasks_that_fall_due_together() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "weights_due";
    let c = client(&url, ns).await;
    let starts = Starts::default();
    let w = Running::start(worker(&url, ns, &starts).queue_weights([
        ("critical", 6),
        ("default", 3),
        ("low", 1),
    ]))
    .await;
    fill(&c, PER_QUEUE, Some(Duration::from_millis(500))).await;
    wait_for(&starts, FIRST).await;
    let got = shares(&starts, FIRST);
    eprintln!(
        "weights 6:3:1, tasks falling due together: shares of the first {FIRST} starts {got:?}"
    );
    assert_near(got, [0.6, 0.3, 0.1], 0.05);
    wait_for(&starts, 3 * PER_QUEUE as usize).await;
    w.stop().await;
}

/// Strict priority with three queues full of ready tasks: every critical task starts before
/// any default one, every default one before any low one (one task at a time: concurrency 1,
/// no prefetch, so no claim is in flight to another queue when one drains).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_priority_drains_queues_in_order() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "strict";
    let c = client(&url, ns).await;
    let per_queue = 200;
    fill(&c, per_queue, None).await;
    let starts = Starts::default();
    let w = Running::start(
        worker(&url, ns, &starts)
            .concurrency(1)
            .prefetch_multiplier(0)
            .strict_priority(QUEUES),
    )
    .await;
    wait_for(&starts, 3 * per_queue as usize).await;
    w.stop().await;
    let s = starts.0.lock().unwrap();
    let n = per_queue as usize;
    for (i, q) in QUEUES.iter().enumerate() {
        assert!(
            s[i * n..(i + 1) * n].iter().all(|x| x == q),
            "starts {}..{} are not all {q}",
            i * n,
            (i + 1) * n
        );
    }
}

/// Strict priority at the default concurrency and prefetch: claims to several partitions are in
/// flight at once, so when a queue drains the next queue's first claims may overlap its last
/// ones; the overlap stays within what one worker holds (counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_priority_with_prefetch_overlaps_only_at_the_boundary() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "strict_prefetch";
    let c = client(&url, ns).await;
    let per_queue = 500u32;
    fill(&c, per_queue, None).await;
    let starts = Starts::default();
    let w = Running::start(worker(&url, ns, &starts).strict_priority(QUEUES)).await;
    wait_for(&starts, 3 * per_queue as usize).await;
    w.stop().await;
    let s = starts.0.lock().unwrap();
    let last = |q: &str| s.iter().rposition(|x| x == q).unwrap();
    let first = |q: &str| s.iter().position(|x| x == q).unwrap();
    let overlap_cd = last("critical").saturating_sub(first("default"));
    let overlap_dl = last("default").saturating_sub(first("low"));
    eprintln!("strict, concurrency 4: overlap critical/default {overlap_cd} starts, default/low {overlap_dl}");
    // Concurrency 4 and the prefetch: at most a few claims' worth around each boundary.
    assert!(
        overlap_cd < 100 && overlap_dl < 100,
        "{overlap_cd} {overlap_dl}"
    );
    assert!(last("critical") < first("low"));
}

/// A weight of zero, or a queue named twice, is `InvalidConfig` at build, before connecting.
#[tokio::test]
async fn a_zero_weight_is_refused_at_build() {
    let b = Worker::builder()
        .redis_url("redis://127.0.0.1:1")
        .queue_weights([("critical", 6), ("low", 0)]);
    match b.build().await {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("\"low\" = 0"), "{m}"),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
    }
    let b = Worker::builder()
        .redis_url("redis://127.0.0.1:1")
        .strict_priority(["a", "b", "a"]);
    let r: Result<Worker> = b.build().await;
    assert!(matches!(r, Err(Error::InvalidConfig(m)) if m.contains("named twice")));
}

/// Redis commands (from `INFO commandstats`, the test's own `CONFIG` and `INFO` aside) for one
/// worker draining the three queues, round-robin then weighted: command name -> calls.
async fn command_counts(weighted: bool) -> std::collections::BTreeMap<String, u64> {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "cost";
    let c = client(&url, ns).await;
    fill(&c, PER_QUEUE, None).await;
    let mut admin = redis.conn();
    let _: () = scheduler::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .unwrap();
    let starts = Starts::default();
    let b = worker(&url, ns, &starts);
    let b = if weighted {
        b.queue_weights([("critical", 6), ("default", 3), ("low", 1)])
    } else {
        b.queues(QUEUES)
    };
    let w = Running::start(b).await;
    wait_for(&starts, 3 * PER_QUEUE as usize).await;
    w.stop().await;
    let info: String = scheduler::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin)
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| !l.starts_with("info:") && !l.starts_with("config|"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Weights cost no Redis command per task: the commands each task's life makes inside the
/// scripts (`hmget`, `hset`, `pexpire`: one claim and one ack of every task) are the same in
/// number for a weighted worker and a round-robin one, and the weighted one sends no kind of
/// command the other does not. (The totals per task vary from run to run with the claims'
/// sizes, 6.3 to 7.2 either way, so they are printed, not compared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_cost_no_redis_command() {
    let rr = command_counts(false).await;
    let weighted = command_counts(true).await;
    let per_task = |m: &std::collections::BTreeMap<String, u64>| {
        m.values().sum::<u64>() as f64 / f64::from(3 * PER_QUEUE)
    };
    eprintln!(
        "Redis commands per task: round-robin {:.2}, weighted {:.2}",
        per_task(&rr),
        per_task(&weighted)
    );
    for cmd in ["hmget", "hset", "pexpire"] {
        assert_eq!(
            rr.get(cmd),
            weighted.get(cmd),
            "{cmd}: {rr:?} / {weighted:?}"
        );
    }
    for cmd in weighted.keys() {
        assert!(
            rr.contains_key(cmd),
            "weighted sends {cmd}: {rr:?} / {weighted:?}"
        );
    }
}
