//! The promoter: moves each partition's tasks to the ready set at their exact due time and
//! recovers expired leases, taking a partition's lock only while that partition has work due.
//!
//! Timing: every worker learns each partition's earliest due time (the head) from the enqueue
//! and retry scripts' notifications, from the replies of its own promote calls, and from a slow
//! sweep. It sleeps until the earliest head it knows (mapped from the Redis clock to a local
//! instant through the server time each call returns). The script reads the server clock itself,
//! so waking a little early only costs a call; it never runs a task early.
//!
//! Locks: at a due time the worker takes the partition's lock (`SET NX PX` with a random token),
//! promotes, and keeps the lock (renewed every third of its TTL by compare-and-expire) while more
//! work is due within one TTL; otherwise it releases it (compare-and-delete). A worker that finds
//! the lock taken looks again one TTL later, so the partitions of a worker that died are taken over
//! within a TTL. An idle partition costs no lock traffic at all. A lock only avoids wasted work:
//! two promoters on one partition are harmless, because promote moves each task atomically, once.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::shared::{Counters, PromoterEvent, Shared};

/// Maps Redis server time to local instants, to the microsecond: `at` is the local instant at
/// which the server clock read `server_us` (the midpoint of the call that read it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Instant,
    server_us: i64,
}

impl Clock {
    /// The local instant at which the server clock reaches `server_ms`.
    fn instant_of(&self, server_ms: i64) -> Instant {
        let d = server_ms * 1000 - self.server_us;
        if d <= 0 {
            self.at
        } else {
            self.at + Duration::from_micros(d as u64)
        }
    }
}

/// What this worker knows of one partition.
#[derive(Debug, Default, Clone)]
struct Part {
    /// When to promote next (the head's due time, or a retry time).
    due: Option<Instant>,
    /// When to reap next (the earliest lease deadline, or a retry time).
    reap: Option<Instant>,
    /// Our lock token, while we hold the partition's lock.
    lock: Option<String>,
}

struct Promoter {
    shared: Arc<Shared>,
    parts: Vec<Part>,
    clock: Option<Clock>,
}

/// Runs until intake stops, then releases every lock it holds.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PromoterEvent>) {
    let mut pr = Promoter {
        parts: vec![Part::default(); shared.partitions.len()],
        shared: Arc::clone(&shared),
        clock: None,
    };
    let mut renew = tokio::time::interval(shared.cfg.lock_ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate: the sweep at start finds existing work.
    let mut sweep = tokio::time::interval(shared.cfg.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = pr.next_wake();
        tokio::select! {
            biased;
            () = shared.stop_intake.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(PromoterEvent::Head(idx, due)) => pr.on_head(idx, due),
                Some(PromoterEvent::SweepAll) => pr.sweep().await,
                None => break,
            },
            () = tokio::time::sleep_until(wake) => pr.on_timer().await,
            _ = renew.tick() => pr.renew().await,
            _ = sweep.tick() => pr.sweep().await,
        }
    }
    pr.release_all().await;
}

fn min_opt(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

impl Promoter {
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.parts
            .iter()
            .flat_map(|p| p.due.into_iter().chain(p.reap))
            .min()
            .unwrap_or(far)
    }

    fn instant_of(&self, server_ms: i64) -> Instant {
        self.clock
            .map_or_else(Instant::now, |c| c.instant_of(server_ms))
    }

    fn on_head(&mut self, idx: usize, due_ms: i64) {
        let at = self.instant_of(due_ms);
        let p = &mut self.parts[idx];
        p.due = Some(min_opt(p.due, at));
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        for idx in 0..self.parts.len() {
            let p = &self.parts[idx];
            let promote = p.due.is_some_and(|d| d <= now);
            let reap = p.reap.is_some_and(|r| r <= now);
            if !(promote || reap) {
                continue;
            }
            if !self.lock(idx).await {
                continue;
            }
            if promote {
                self.promote(idx).await;
            }
            if reap {
                self.reap(idx).await;
            }
            self.maybe_release(idx).await;
        }
    }

    /// Takes (or confirms we hold) the lock of `idx`. When another worker holds it, we look again
    /// one TTL later: by then it has either done the work or died and let the lock expire.
    async fn lock(&mut self, idx: usize) -> bool {
        if self.parts[idx].lock.is_some() {
            return true;
        }
        let shared = Arc::clone(&self.shared);
        let ttl = shared.cfg.lock_ttl;
        let token = format!("{}:{:016x}", shared.worker_id, rand::rng().random::<u64>());
        let later = Instant::now() + ttl;
        match shared
            .store
            .lock_acquire(&shared.partitions[idx], &token, ttl.as_millis() as u64)
            .await
        {
            Ok(true) => {
                self.parts[idx].lock = Some(token);
                true
            }
            Ok(false) => {
                let p = &mut self.parts[idx];
                p.due = p.due.map(|_| later);
                p.reap = p.reap.map(|_| later);
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not take a promoter lock; retrying in 1 s");
                let soon = Instant::now() + Duration::from_secs(1);
                let p = &mut self.parts[idx];
                p.due = p.due.map(|_| soon);
                p.reap = p.reap.map(|_| soon);
                false
            }
        }
    }

    /// Releases the lock of `idx` unless more work is due there within one TTL.
    async fn maybe_release(&mut self, idx: usize) {
        let horizon = Instant::now() + self.shared.cfg.lock_ttl;
        let p = &self.parts[idx];
        let busy = p.due.is_some_and(|d| d <= horizon) || p.reap.is_some_and(|r| r <= horizon);
        if busy {
            return;
        }
        if let Some(token) = self.parts[idx].lock.take() {
            let part = &self.shared.partitions[idx];
            if let Err(e) = self.shared.store.lock_release(part, &token).await {
                tracing::debug!(error = %e, "could not release a promoter lock; it expires by itself");
            }
        }
    }

    /// Safety net, at start, on reconnect and every sweep interval: reads every partition's
    /// heads (one pipelined round trip of three reads per partition) and flags ready work.
    async fn sweep(&mut self) {
        let shared = Arc::clone(&self.shared);
        for (chunk_no, chunk) in shared.partitions.chunks(64).enumerate() {
            let mut pipe = redis::pipe();
            pipe.cmd("TIME");
            for p in chunk {
                pipe.cmd("ZRANGE")
                    .arg(p.keys.scheduled())
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
                pipe.zcard(p.keys.ready());
                pipe.cmd("ZRANGE")
                    .arg(p.keys.active())
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
            }
            type Head = Vec<(String, i64)>;
            let sent = Instant::now();
            // Split by cluster slot on a cluster (one round trip per node, sent concurrently).
            let res = shared.store.query_pipeline(&pipe).await;
            let values = match res {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed; trying again next sweep");
                    return;
                }
            };
            let mut it = values.into_iter();
            if let Some(Ok((secs, micros))) = it.next().map(redis::from_redis_value::<(i64, i64)>) {
                self.clock = Some(Clock {
                    at: sent + sent.elapsed() / 2,
                    server_us: secs * 1_000_000 + micros,
                });
            }
            for k in 0..chunk.len() {
                let idx = chunk_no * 64 + k;
                let sched: Head = it
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or_default();
                let ready: u64 = it
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or(0);
                let active: Head = it
                    .next()
                    .and_then(|v| redis::from_redis_value(v).ok())
                    .unwrap_or_default();
                if let Some((_, due)) = sched.first() {
                    self.on_head(idx, *due);
                }
                if let Some((_, deadline)) = active.first() {
                    let at = self.instant_of(*deadline);
                    let p = &mut self.parts[idx];
                    p.reap = Some(min_opt(p.reap, at));
                }
                if ready > 0 {
                    shared.mark_ready(idx);
                }
            }
        }
    }

    /// Promotes everything due in partition `idx`, a batch per call, and notes the next due time.
    async fn promote(&mut self, idx: usize) {
        let shared = Arc::clone(&self.shared);
        let p = &shared.partitions[idx];
        let batch = shared.cfg.promote_batch.max(1);
        loop {
            let sent = Instant::now();
            match shared.store.promote(p, batch).await {
                Ok(r) => {
                    self.clock = Some(Clock {
                        at: sent + sent.elapsed() / 2,
                        server_us: r.server_now_us,
                    });
                    Counters::add(&shared.counters.promoted, r.moved);
                    crate::metrics::count(crate::metrics::PROMOTED, &p.queue, r.moved);
                    if r.moved >= u64::from(batch) {
                        continue;
                    }
                    self.parts[idx].due = r.next_due_ms.map(|ms| self.instant_of(ms));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "promote failed; retrying in 1 s");
                    self.parts[idx].due = Some(Instant::now() + Duration::from_secs(1));
                    return;
                }
            }
        }
    }

    /// Recovers expired leases of partition `idx` and notes the next deadline.
    async fn reap(&mut self, idx: usize) {
        let shared = Arc::clone(&self.shared);
        let p = &shared.partitions[idx];
        let batch = shared.cfg.promote_batch.max(1);
        let next = loop {
            match shared
                .store
                .reap(p, batch, shared.cfg.max_lost_leases)
                .await
            {
                Ok(r) => {
                    Counters::add(&shared.counters.reaped, r.requeued + r.buried);
                    crate::metrics::count(crate::metrics::REAPED, &p.queue, r.requeued + r.buried);
                    if r.requeued + r.buried > 0 {
                        tracing::info!(queue = %p.queue, shard = p.shard, requeued = r.requeued, buried = r.buried, "recovered tasks of lost workers");
                    }
                    if r.requeued + r.buried >= u64::from(batch) {
                        continue;
                    }
                    // No lease held: nothing to reap until someone claims, and a lease taken
                    // from now on ends at least one lease length away; the sweep finds it.
                    break r.next_deadline_ms.map(|ms| {
                        self.instant_of(ms)
                            .max(Instant::now() + Duration::from_millis(1))
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "reap failed; retrying in 1 s");
                    break Some(Instant::now() + Duration::from_secs(1));
                }
            }
        };
        self.parts[idx].reap = next;
    }

    /// Renews the locks we hold.
    async fn renew(&mut self) {
        let shared = Arc::clone(&self.shared);
        let ttl = shared.cfg.lock_ttl;
        for idx in 0..self.parts.len() {
            let Some(token) = self.parts[idx].lock.clone() else {
                continue;
            };
            let p = &shared.partitions[idx];
            match shared
                .store
                .lock_renew(p, &token, ttl.as_millis() as u64)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(queue = %p.queue, shard = p.shard, "promoter lock lost to another worker");
                    let later = Instant::now() + ttl;
                    let part = &mut self.parts[idx];
                    part.lock = None;
                    part.due = part.due.map(|_| later);
                    part.reap = part.reap.map(|_| later);
                }
                // Keep it: if the lock really expired, another promoter takes over, which is
                // harmless; we find out at the next renewal.
                Err(e) => tracing::warn!(error = %e, "could not renew a promoter lock"),
            }
        }
    }

    async fn release_all(&mut self) {
        for idx in 0..self.parts.len() {
            if let Some(token) = self.parts[idx].lock.take() {
                let p = &self.shared.partitions[idx];
                if let Err(e) = self.shared.store.lock_release(p, &token).await {
                    tracing::warn!(error = %e, "could not release a promoter lock; it expires by itself");
                }
            }
        }
    }
}
