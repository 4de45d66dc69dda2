//! The queue gauges: when `queue_metrics_interval` is set, reads how many tasks each served queue
//! has in each state (four `ZCARD`s per partition, one pipelined round trip) and publishes them
//! as the `scheduler_queue_tasks` gauge, the backlog metric to alert and autoscale on.
//!
//! One worker per queue reads it, not every worker: each tick, every worker tries
//! `SET <ns>:gauges:<queue> <worker id> NX PX <3 intervals>` and reads the key back; the worker
//! named there reads the queue's counts and renews the key (`PEXPIRE`) in the same round trip.
//! The holder keeps the queue while it lives and reaches Redis; when it stops, another worker
//! takes over within three intervals. The `scheduler_queue_sampler` gauge says which worker
//! samples each queue (1), so that the stale values of a worker that lost the key can be told
//! apart. A race at takeover costs at most one extra read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

/// What the queue gauges use.
pub(crate) struct GaugesParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// [`crate::WorkerConfig::queue_metrics_interval`]; `None`: off.
    pub(crate) queue_metrics_interval: Option<Duration>,
    /// This worker's id, the value of the sampler keys it holds.
    pub(crate) worker_id: String,
    /// Ends it (intake stops).
    pub(crate) stop_intake: CancellationToken,
}

/// Runs until intake stops; returns at once when the interval is not set.
pub(crate) async fn run(params: Arc<GaugesParams>) {
    let Some(every) = params.queue_metrics_interval else {
        return;
    };
    let ttl_ms = (every * 3).as_millis() as u64;
    let mut queues: Vec<&str> = params.partitions.iter().map(|p| p.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let keys = params.store.keys();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            _ = tick.tick() => {}
        }
        // 1. Who samples each queue: take the key if free, then read who holds it.
        let mut pipe = redis::pipe();
        for q in &queues {
            let key = keys.queue_gauges(q);
            pipe.cmd("SET")
                .arg(&key)
                .arg(&params.worker_id)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .get(&key);
        }
        let held: Vec<bool> = match params.store.query_pipeline(&pipe).await {
            Ok(values) => values
                .chunks(2)
                .map(|c| matches!(&c[1], Value::BulkString(b) if *b == params.worker_id.as_bytes()))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "could not read the queue gauge keys");
                continue;
            }
        };
        let mut mine: Vec<&str> = Vec::new();
        for (q, h) in queues.iter().zip(held) {
            crate::metrics::queue_sampler(q, h);
            if h {
                mine.push(q);
            }
        }
        if mine.is_empty() {
            continue;
        }
        // 2. Renew what we hold and read its counts, one round trip.
        let mut pipe = redis::pipe();
        for q in &mine {
            pipe.cmd("PEXPIRE").arg(keys.queue_gauges(q)).arg(ttl_ms);
        }
        let sampled: Vec<&Partition> = params
            .partitions
            .iter()
            .filter(|p| mine.contains(&p.queue.as_str()))
            .collect();
        for p in &sampled {
            pipe.zcard(p.keys.scheduled())
                .zcard(p.keys.ready())
                .zcard(p.keys.active())
                .zcard(p.keys.dead());
        }
        // Partitions live in different cluster slots: query_pipeline groups by slot.
        let counts: Vec<u64> = match params.store.query_pipeline(&pipe).await {
            Ok(values) => values
                .into_iter()
                .skip(mine.len())
                .map(|v| redis::from_redis_value(v).unwrap_or(0))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "could not read queue gauges");
                continue;
            }
        };
        let mut per_queue: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for (p, c) in sampled.iter().zip(counts.chunks(4)) {
            let sums = per_queue.entry(p.queue.as_str()).or_default();
            for (s, v) in sums.iter_mut().zip(c) {
                *s += v;
            }
        }
        for (queue, sums) in per_queue {
            for (state, n) in ["scheduled", "ready", "running", "dead"]
                .into_iter()
                .zip(sums)
            {
                crate::metrics::queue_tasks(queue, state, n);
            }
        }
    }
}
