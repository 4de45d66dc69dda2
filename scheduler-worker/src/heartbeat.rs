//! The heartbeat: a hash per live worker process, refreshed every interval and expiring after
//! three, so operators (and the CLI) see who runs what; deleted at a clean shutdown (or left to
//! expire when Redis does not answer within a second). Each beat also stamps the worker's id in
//! the worker index (`<ns>:workers`), which is how readers find the hashes without scanning
//! the keyspace. Each beat carries, per served queue, how late the runs of the last minute
//! started (`lateness:<queue>`, a histogram counted in process by the executors:
//! `crate::shared::Lateness`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

use crate::shared::{Counters, InflightMap, Lateness};

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
    /// Read for each queue's lateness over the last minute (`lateness:<queue>` fields).
    pub(crate) lateness: Arc<Lateness>,
    /// Ends it (the last step of shutdown).
    pub(crate) stop_all: CancellationToken,
}

/// Index members that have not beaten for this long (by the clock of the host reading them) are
/// removed by any worker's heartbeat: stopped workers whose clean shutdown did not reach Redis.
/// A live worker removed by a host whose clock is off adds itself again at its next beat.
const INDEX_KEEP_MS: i64 = 3_600_000;

/// Stale index members removed per beat at most (one `ZRANGEBYSCORE ... LIMIT`, one `ZREM`).
const INDEX_PRUNE: usize = 100;

/// Stamps `id` in the worker index and removes members that have not beaten for an hour. Its
/// own round trips, apart from the hash's: on a Redis Cluster the index and the hash are in
/// different slots. Only commands the documented worker ACL allows (`ZADD`, `ZRANGEBYSCORE`,
/// `ZREM`).
async fn stamp_index(store: &Store, index: &str, id: &str) -> redis::RedisResult<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut conn = store.conn();
    let mut pipe = redis::pipe();
    pipe.zadd(index, id, now_ms)
        .ignore()
        .cmd("ZRANGEBYSCORE")
        .arg(index)
        .arg("-inf")
        .arg(now_ms - INDEX_KEEP_MS)
        .arg("LIMIT")
        .arg(0)
        .arg(INDEX_PRUNE);
    let (stale,): (Vec<String>,) = pipe.query_async(&mut conn).await?;
    if !stale.is_empty() {
        conn.zrem::<_, _, ()>(index, &stale).await?;
    }
    Ok(())
}

/// Runs until the whole worker stops, then deletes its key and its index entry.
pub(crate) async fn run(params: Arc<HeartbeatParams>, started_ms: i64) {
    let key = params.store.keys().worker(&params.worker_id);
    let index = params.store.keys().worker_index();
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
        // Each queue's lateness over the last minute, written even when empty (so a value
        // from an earlier beat does not stay).
        let lateness: Vec<(String, String)> = params
            .lateness
            .snapshot()
            .into_iter()
            .map(|(q, h)| (format!("lateness:{q}"), h.encode()))
            .collect();
        // HSET with several pairs (not HMSET, deprecated): the documented ACL rules allow HSET.
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(&lateness[..])
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
        let stamp = tokio::select! {
            () = params.stop_all.cancelled() => break,
            r = stamp_index(&params.store, &index, &params.worker_id) => r,
        };
        if let Err(e) = stamp {
            tracing::debug!(error = %e, "worker index not stamped");
        }
        // The history archive's namespace setting: the bound the finishing scripts get (0: off).
        let archive = tokio::select! {
            () = params.stop_all.cancelled() => break,
            r = params.store.load_archive_setting() => r,
        };
        if let Err(e) = archive {
            tracing::debug!(error = %e, "archive setting not read");
        }
        // The queues with task events on.
        let events = tokio::select! {
            () = params.stop_all.cancelled() => break,
            r = params.store.load_events_setting() => r,
        };
        if let Err(e) = events {
            tracing::debug!(error = %e, "task events setting not read");
        }
    }
    let mut conn = params.store.conn();
    // Two commands, not one pipeline: the hash and the index may live on different cluster
    // nodes.
    let del = async {
        conn.del::<_, ()>(&key).await?;
        conn.zrem::<_, _, ()>(&index, &params.worker_id).await
    };
    if tokio::time::timeout(std::time::Duration::from_secs(1), del)
        .await
        .is_err()
    {
        tracing::debug!("heartbeat key not deleted within 1 s at shutdown; it expires by itself, and its index entry goes within the hour");
    }
}
