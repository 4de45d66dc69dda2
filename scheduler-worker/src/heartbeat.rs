//! The heartbeat: a hash per live worker process, refreshed every interval and expiring after
//! three, so operators (and the CLI) see who runs what; deleted at a clean shutdown (or left to
//! expire when Redis does not answer within a second).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

use crate::shared::{Counters, InflightMap};

/// What the heartbeat uses.
pub(crate) struct HeartbeatParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    pub(crate) worker_id: String,
    /// Advertised as the worker's concurrency.
    pub(crate) concurrency: usize,
    /// [`crate::WorkerConfig::heartbeat_interval`].
    pub(crate) heartbeat_interval: Duration,
    /// Read for the number of running tasks.
    pub(crate) inflight: Arc<InflightMap>,
    /// Read for the succeeded and failed counts.
    pub(crate) counters: Arc<Counters>,
    /// Ends it (the last step of shutdown).
    pub(crate) stop_all: CancellationToken,
}

/// Runs until the whole worker stops, then deletes its key.
pub(crate) async fn run(params: Arc<HeartbeatParams>, started_ms: i64) {
    let key = params.store.keys().worker(&params.worker_id);
    let ttl_ms = (params.heartbeat_interval * 3).as_millis() as i64;
    let queues: Vec<&str> = {
        let mut q: Vec<&str> = params.partitions.iter().map(|p| p.queue.as_str()).collect();
        q.dedup();
        q
    };
    let queues = queues.join(",");
    let mut tick = tokio::time::interval(params.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = params.stop_all.cancelled() => break,
            _ = tick.tick() => {}
        }
        let running = params.inflight.lock().map(|m| m.len()).unwrap_or(0);
        let c = &params.counters;
        let mut conn = params.store.conn();
        // HSET with several pairs (not HMSET, deprecated): the documented ACL rules allow HSET.
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(
                &[
                    ("pid", std::process::id().to_string()),
                    ("queues", queues.clone()),
                    ("concurrency", params.concurrency.to_string()),
                    ("running", running.to_string()),
                    ("succeeded", c.succeeded.load(Ordering::Relaxed).to_string()),
                    (
                        "failed",
                        (c.retried.load(Ordering::Relaxed) + c.dead.load(Ordering::Relaxed))
                            .to_string(),
                    ),
                    ("started_at", started_ms.to_string()),
                ][..],
            )
            .ignore()
            .pexpire(&key, ttl_ms)
            .ignore();
        let beat = pipe.query_async::<()>(&mut conn);
        // A write can hang on a dead node (a Redis Cluster client retries it for tens of
        // seconds): it must not hold a shutdown back.
        let res = tokio::select! {
            () = params.stop_all.cancelled() => break,
            r = beat => r,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        // The history archive's namespace setting: the bound the finishing scripts get (0: off).
        let archive = tokio::select! {
            () = params.stop_all.cancelled() => break,
            r = params.store.load_archive_setting() => r,
        };
        if let Err(e) = archive {
            tracing::debug!(error = %e, "archive setting not read");
        }
    }
    let mut conn = params.store.conn();
    let del = conn.del::<_, ()>(&key);
    if tokio::time::timeout(std::time::Duration::from_secs(1), del)
        .await
        .is_err()
    {
        tracing::debug!("heartbeat key not deleted within 1 s at shutdown; it expires by itself");
    }
}
