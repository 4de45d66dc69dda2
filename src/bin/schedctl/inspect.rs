//! Read-only Redis queries shared by the subcommands. Every key name comes from
//! `scheduler::keys` (through [`Store::keys`] and [`Store::partition`]); nothing here formats one.
//!
//! Reads of several shards go out as one pipeline per queue: one round trip, however many shards.
//! They are not one snapshot (a worker may move a task between two reads of the pipeline); for
//! counts on a live system that is fine.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context as _, Result};
use scheduler::id::validate_queue;
use scheduler::redis;
use scheduler::Store;

/// The Redis server's clock in unix ms: the clock every script judges due times by.
pub(crate) async fn server_now_ms(store: &Store) -> Result<i64> {
    let (s, us): (i64, i64) = redis::cmd("TIME")
        .query_async(&mut store.conn())
        .await
        .context("reading the Redis server time")?;
    Ok(s * 1000 + us / 1000)
}

/// Every queue recorded in `<ns>:queues`, with its shard count, by name.
pub(crate) async fn queues(store: &Store) -> Result<BTreeMap<String, u16>> {
    let all: HashMap<String, u16> = redis::cmd("HGETALL")
        .arg(store.keys().queues())
        .query_async(&mut store.conn())
        .await
        .context("reading the queue registry")?;
    Ok(all.into_iter().collect())
}

/// The shard count recorded for `queue`. Unlike `Client::shards`, an unknown queue is an error
/// rather than registered: looking at a queue must not create it.
pub(crate) async fn shards_of(store: &Store, queue: &str) -> Result<u16> {
    validate_queue(queue)?;
    let key = store.keys().queues();
    let n: Option<u16> = redis::cmd("HGET")
        .arg(&key)
        .arg(queue)
        .query_async(&mut store.conn())
        .await
        .context("reading the queue registry")?;
    match n {
        Some(n) => Ok(n),
        None => bail!(
            "unknown queue {queue:?}: not in {key} (known: {})",
            known(store).await
        ),
    }
}

async fn known(store: &Store) -> String {
    match queues(store).await {
        Ok(q) if q.is_empty() => "none".to_owned(),
        Ok(q) => q.into_keys().collect::<Vec<_>>().join(", "),
        Err(_) => "?".to_owned(),
    }
}

/// Task counts of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) scheduled: u64,
    pub(crate) ready: u64,
    pub(crate) running: u64,
    pub(crate) dead: u64,
    /// Scheduled tasks whose due time is <= the server's now: due, not promoted yet.
    pub(crate) due_now: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, o: &Counts) {
        self.scheduled += o.scheduled;
        self.ready += o.ready;
        self.running += o.running;
        self.dead += o.dead;
        self.due_now += o.due_now;
    }
}

/// The counts of every shard of `queue`, in shard order, `now_ms` deciding what is due.
pub(crate) async fn shard_counts(
    store: &Store,
    queue: &str,
    shards: u16,
    now_ms: i64,
) -> Result<Vec<Counts>> {
    let mut pipe = redis::pipe();
    for shard in 0..shards {
        let k = store.partition(queue, shard).keys;
        pipe.zcard(k.scheduled())
            .zcard(k.ready())
            .zcard(k.active())
            .zcard(k.dead())
            .zcount(k.scheduled(), "-inf", now_ms);
    }
    let v: Vec<u64> = pipe
        .query_async(&mut store.conn())
        .await
        .with_context(|| format!("counting the tasks of queue {queue}"))?;
    Ok(v.chunks_exact(5)
        .map(|c| Counts {
            scheduled: c[0],
            ready: c[1],
            running: c[2],
            dead: c[3],
            due_now: c[4],
        })
        .collect())
}

/// The lifetime counters (`…:stats`) of every shard of `queue`, in shard order.
pub(crate) async fn shard_counters(
    store: &Store,
    queue: &str,
    shards: u16,
) -> Result<Vec<HashMap<String, u64>>> {
    let mut pipe = redis::pipe();
    for shard in 0..shards {
        pipe.hgetall(store.partition(queue, shard).keys.stats());
    }
    // Shards live in different cluster slots: query_pipeline groups by slot.
    let values = store
        .query_pipeline(&pipe)
        .await
        .with_context(|| format!("reading the counters of queue {queue}"))?;
    values
        .into_iter()
        .map(|v| redis::from_redis_value(v).map_err(|e| anyhow::anyhow!("reading counters: {e}")))
        .collect()
}

/// Counter names in the order the task life runs through them; others follow by name.
const COUNTER_ORDER: [&str; 8] = [
    "enqueued",
    "promoted",
    "succeeded",
    "retried",
    "dead",
    "reaped",
    "cancelled",
    "requeued",
];

/// `counters` in display order, the known ones always (0 when never incremented).
pub(crate) fn ordered_counters(counters: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = COUNTER_ORDER
        .iter()
        .map(|k| ((*k).to_owned(), counters.get(*k).copied().unwrap_or(0)))
        .collect();
    let mut rest: Vec<(String, u64)> = counters
        .iter()
        .filter(|(k, _)| !COUNTER_ORDER.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    rest.sort();
    out.extend(rest);
    out
}
