//! Failover runs: a producer that enqueues steadily and records every acknowledged task, a task
//! that records every run, and the accounting of what was lost, duplicated or run early.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scheduler::{task, Client, Error, TaskContext, TaskError, TaskId, TaskRequest, WorkerBuilder};

/// What a run saw: every acknowledged enqueue and every execution, timed from `start`.
#[derive(Debug)]
pub struct Ledger {
    /// When the run started.
    pub start: Instant,
    /// id -> (when the enqueue was acknowledged, shard).
    pub acked: Mutex<HashMap<String, (Duration, u16)>>,
    /// id -> start of each run.
    pub runs: Mutex<HashMap<String, Vec<Duration>>>,
    /// Runs that started before their due time (Redis clock).
    pub early: AtomicU64,
}

impl Ledger {
    /// An empty ledger, its clock started now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            acked: Mutex::default(),
            runs: Mutex::default(),
            early: AtomicU64::new(0),
        })
    }

    /// Time since the start.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Records its run in the worker's [`Ledger`].
#[task(name = "ha_note", queue = "ha")]
pub async fn ha_note(ctx: TaskContext) -> Result<(), TaskError> {
    let ledger = ctx.state::<Arc<Ledger>>()?;
    if ctx.claimed_at_ms() < ctx.due_ms() {
        ledger.early.fetch_add(1, Ordering::Relaxed);
    }
    let at = ledger.now();
    ledger
        .runs
        .lock()
        .unwrap()
        .entry(ctx.id().id().to_owned())
        .or_default()
        .push(at);
    Ok(())
}

/// A worker on queue `ha` for HA runs: short lease (a lost ack is retried quickly), short lock
/// TTL and sweep.
pub fn ha_worker(url: &str, ns: &str, shards: u16, ledger: &Arc<Ledger>) -> WorkerBuilder {
    scheduler::Worker::builder()
        .redis_url(url)
        .namespace(ns)
        .queues(["ha"])
        .queue_shards("ha", shards)
        .register(ha_note)
        .state(Arc::clone(ledger))
        .concurrency(32)
        .lease(Duration::from_secs(3))
        .lock_ttl(Duration::from_secs(1))
        .sweep_interval(Duration::from_secs(1))
        .shutdown_timeout(Duration::from_secs(5))
}

/// What the producer did.
#[derive(Debug, Default, Clone)]
pub struct Produced {
    /// Batches acknowledged.
    pub batches_ok: u64,
    /// Batches that failed after the client's retries.
    pub batches_failed: u64,
    /// Longest time between two acknowledged batches.
    pub longest_stall: Duration,
}

/// Enqueues `batch` tasks every `every` until `until` (ids `<prefix><n>`): half due now, half
/// after 50-1000 ms. Records each acknowledged task in `ledger`.
pub async fn produce(
    client: Client,
    ledger: Arc<Ledger>,
    shards: u16,
    prefix: &str,
    batch: usize,
    every: Duration,
    until: Instant,
) -> Produced {
    let mut out = Produced::default();
    let mut n = 0u64;
    let mut last_ok = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        tick.tick().await;
        let reqs: Vec<TaskRequest> = (0..batch)
            .map(|k| {
                n += 1;
                let r = TaskRequest::new("ha_note", "ha", &())
                    .unwrap()
                    .id(format!("{prefix}{n}"));
                if k % 2 == 0 {
                    r
                } else {
                    r.countdown(Duration::from_millis(50 + (n * 37) % 950))
                }
            })
            .collect();
        match client.enqueue_bulk(reqs).await {
            Ok(ids) => {
                let at = ledger.now();
                let now = Instant::now();
                out.longest_stall = out.longest_stall.max(now - last_ok);
                last_ok = now;
                out.batches_ok += 1;
                let mut acked = ledger.acked.lock().unwrap();
                for (id, _) in ids {
                    acked.insert(id.id().to_owned(), (at, id.shard(shards)));
                }
            }
            Err(e) => {
                out.batches_failed += 1;
                eprintln!("producer: batch failed after retries: {e}");
            }
        }
    }
    out
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Tasks whose enqueue was acknowledged.
    pub acked: usize,
    /// Acknowledged tasks that ran at least once.
    pub ran: usize,
    /// Acknowledged, never ran, and no record in Redis: the enqueue was lost.
    pub lost: Vec<(String, Duration, u16)>,
    /// Acknowledged, not run by the deadline, record still in Redis.
    pub stuck: Vec<String>,
    /// Ran more than once: (id, runs).
    pub duplicated: Vec<(String, usize)>,
    /// Runs that started before their due time.
    pub early: u64,
}

/// Waits until every acknowledged task ran or is known lost (no record in Redis), or until
/// `deadline`, and accounts for everything.
pub async fn settle(client: &Client, ledger: &Ledger, deadline: Instant) -> Outcome {
    let mut gone: HashSet<String> = HashSet::new();
    loop {
        let pending: Vec<String> = {
            let acked = ledger.acked.lock().unwrap();
            let runs = ledger.runs.lock().unwrap();
            acked
                .keys()
                .filter(|id| !runs.contains_key(*id) && !gone.contains(*id))
                .cloned()
                .collect()
        };
        let mut stuck = Vec::new();
        for id in &pending {
            let tid = TaskId::new("ha", id.clone());
            match client.status(&tid).await {
                Err(Error::NotFound(_)) => {
                    gone.insert(id.clone());
                }
                _ => stuck.push(id.clone()),
            }
        }
        if stuck.is_empty() || Instant::now() >= deadline {
            let acked = ledger.acked.lock().unwrap();
            let runs = ledger.runs.lock().unwrap();
            let mut lost: Vec<(String, Duration, u16)> = gone
                .iter()
                .filter(|id| !runs.contains_key(*id))
                .map(|id| {
                    let (at, shard) = acked[id];
                    (id.clone(), at, shard)
                })
                .collect();
            lost.sort_by_key(|l| l.1);
            let mut duplicated: Vec<(String, usize)> = runs
                .iter()
                .filter(|(_, r)| r.len() > 1)
                .map(|(id, r)| (id.clone(), r.len()))
                .collect();
            duplicated.sort();
            return Outcome {
                acked: acked.len(),
                ran: acked.keys().filter(|id| runs.contains_key(*id)).count(),
                lost,
                stuck,
                duplicated,
                early: ledger.early.load(Ordering::Relaxed),
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// First acknowledged enqueue, and first run of a task acknowledged, after `event` in `shards`:
/// how long producers and workers took to resume there.
pub fn resume_after(
    ledger: &Ledger,
    event: Duration,
    shards: &HashSet<u16>,
) -> (Option<Duration>, Option<Duration>) {
    let acked = ledger.acked.lock().unwrap();
    let runs = ledger.runs.lock().unwrap();
    let after: Vec<(&String, Duration)> = acked
        .iter()
        .filter(|(_, (at, s))| *at > event && shards.contains(s))
        .map(|(id, (at, _))| (id, *at))
        .collect();
    let write = after.iter().map(|(_, at)| *at - event).min();
    let run = after
        .iter()
        .filter_map(|(id, _)| runs.get(*id).and_then(|r| r.first()))
        // A run can precede its task's acknowledgement (the enqueue reply was delayed or
        // retried): only runs after the event count.
        .filter_map(|r| r.checked_sub(event))
        .min();
    (write, run)
}
