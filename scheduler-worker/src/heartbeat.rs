//! The heartbeat: a hash per live worker process, refreshed every interval and expiring after
//! three, so operators (and the CLI) see who runs what; deleted at a clean shutdown (or left to
//! expire when Redis does not answer within a second).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::AsyncCommands;

use crate::shared::Shared;

/// Runs until the whole worker stops, then deletes its key.
pub(crate) async fn run(shared: Arc<Shared>, started_ms: i64) {
    let key = shared.store.keys().worker(&shared.worker_id);
    let ttl_ms = (shared.cfg.heartbeat_interval * 3).as_millis() as i64;
    let queues: Vec<&str> = {
        let mut q: Vec<&str> = shared.partitions.iter().map(|p| p.queue.as_str()).collect();
        q.dedup();
        q
    };
    let queues = queues.join(",");
    let mut tick = tokio::time::interval(shared.cfg.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.stop_all.cancelled() => break,
            _ = tick.tick() => {}
        }
        let running = shared.inflight.lock().map(|m| m.len()).unwrap_or(0);
        let c = &shared.counters;
        let mut conn = shared.store.conn();
        // HSET with several pairs (not HMSET, deprecated): the documented ACL rules allow HSET.
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&key)
            .arg(
                &[
                    ("pid", std::process::id().to_string()),
                    ("queues", queues.clone()),
                    ("concurrency", shared.cfg.concurrency.to_string()),
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
            () = shared.stop_all.cancelled() => break,
            r = beat => r,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }
    let mut conn = shared.store.conn();
    let del = conn.del::<_, ()>(&key);
    if tokio::time::timeout(std::time::Duration::from_secs(1), del)
        .await
        .is_err()
    {
        tracing::debug!("heartbeat key not deleted within 1 s at shutdown; it expires by itself");
    }
}
