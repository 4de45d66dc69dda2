//! The promoter: owns partitions through per-partition locks and, for each partition it owns,
//! moves tasks to the ready set at their exact due time and reaps expired leases.
//!
//! Timing: it sleeps until the earliest due time among its partitions (mapped from the Redis clock
//! to a local instant through the server time each promote call returns), and is woken early when
//! an enqueue publishes a new, earlier head. A slow sweep covers lost notifications. The script
//! reads the server clock itself, so waking a little early only costs a call; it never runs a
//! task early.
//!
//! Locks: `SET NX PX` with a random token, renewed every third of the TTL by compare-and-expire,
//! released by compare-and-delete at shutdown. A lock only avoids wasted work: two promoters on one
//! partition are harmless, because promote moves each task atomically, once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::shared::{Counters, PromoterEvent, Shared};

/// Maps Redis server time (unix ms) to local instants.
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Instant,
    server_ms: i64,
}

impl Clock {
    fn instant_of(&self, server_ms: i64) -> Instant {
        let d = server_ms - self.server_ms;
        if d <= 0 {
            self.at
        } else {
            self.at + Duration::from_millis(d as u64)
        }
    }
}

#[derive(Debug)]
struct Owned {
    token: String,
    next_due: Option<Instant>,
    next_reap: Instant,
}

struct Promoter {
    shared: Arc<Shared>,
    owned: HashMap<usize, Owned>,
    clock: Option<Clock>,
}

/// Runs until intake stops, then releases every lock it holds.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<PromoterEvent>) {
    let mut pr = Promoter {
        shared: Arc::clone(&shared),
        owned: HashMap::new(),
        clock: None,
    };
    let mut lock_tick = tokio::time::interval(shared.cfg.lock_ttl / 3);
    lock_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(shared.cfg.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await;
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
            _ = lock_tick.tick() => pr.locks().await,
            _ = sweep.tick() => pr.sweep().await,
        }
    }
    pr.release_all().await;
}

impl Promoter {
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.owned
            .values()
            .flat_map(|o| o.next_due.into_iter().chain([o.next_reap]))
            .min()
            .unwrap_or(far)
    }

    fn on_head(&mut self, idx: usize, due_ms: i64) {
        let at = match self.clock {
            Some(c) => c.instant_of(due_ms),
            None => Instant::now(),
        };
        if let Some(o) = self.owned.get_mut(&idx) {
            o.next_due = Some(o.next_due.map_or(at, |d| d.min(at)));
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .owned
            .iter()
            .filter(|(_, o)| o.next_due.is_some_and(|d| d <= now))
            .map(|(i, _)| *i)
            .collect();
        for idx in due {
            self.promote(idx).await;
        }
        let reap: Vec<usize> = self
            .owned
            .iter()
            .filter(|(_, o)| o.next_reap <= now)
            .map(|(i, _)| *i)
            .collect();
        for idx in reap {
            self.reap(idx).await;
        }
    }

    async fn sweep(&mut self) {
        let all: Vec<usize> = self.owned.keys().copied().collect();
        for idx in all {
            self.promote(idx).await;
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
                    let rtt = sent.elapsed();
                    self.clock = Some(Clock {
                        at: sent + rtt / 2,
                        server_ms: r.server_now_ms,
                    });
                    Counters::add(&shared.counters.promoted, r.moved);
                    if r.moved >= u64::from(batch) {
                        continue;
                    }
                    let next = r
                        .next_due_ms
                        .map(|ms| self.clock.expect("set above").instant_of(ms));
                    if let Some(o) = self.owned.get_mut(&idx) {
                        o.next_due = next;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "promote failed; retrying in 1 s");
                    if let Some(o) = self.owned.get_mut(&idx) {
                        o.next_due = Some(Instant::now() + Duration::from_secs(1));
                    }
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
            match shared.store.reap(p, batch).await {
                Ok(r) => {
                    Counters::add(&shared.counters.reaped, r.requeued + r.buried);
                    if r.requeued + r.buried > 0 {
                        tracing::info!(queue = %p.queue, shard = p.shard, requeued = r.requeued, buried = r.buried, "recovered tasks of lost workers");
                    }
                    if r.requeued + r.buried >= u64::from(batch) {
                        continue;
                    }
                    // With no lease held, look again one lease length from now: a lease taken
                    // after this call cannot expire before then.
                    break match (r.next_deadline_ms, self.clock) {
                        (Some(ms), Some(c)) => c
                            .instant_of(ms)
                            .max(Instant::now() + Duration::from_millis(1)),
                        _ => Instant::now() + shared.cfg.lease,
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "reap failed; retrying in 1 s");
                    break Instant::now() + Duration::from_secs(1);
                }
            }
        };
        if let Some(o) = self.owned.get_mut(&idx) {
            o.next_reap = next;
        }
    }

    /// Renews the locks we hold and tries to take the partitions nobody holds.
    async fn locks(&mut self) {
        let shared = Arc::clone(&self.shared);
        let ttl_ms = shared.cfg.lock_ttl.as_millis() as u64;
        let held: Vec<(usize, String)> = self
            .owned
            .iter()
            .map(|(i, o)| (*i, o.token.clone()))
            .collect();
        for (idx, token) in held {
            let p = &shared.partitions[idx];
            match shared.store.lock_renew(p, &token, ttl_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(queue = %p.queue, shard = p.shard, "promoter lock lost to another worker");
                    self.owned.remove(&idx);
                }
                // Keep it: if the lock really expired, another promoter takes over, which is
                // harmless; we find out at the next renewal.
                Err(e) => tracing::warn!(error = %e, "could not renew a promoter lock"),
            }
        }
        let mut newly = Vec::new();
        for idx in 0..shared.partitions.len() {
            if self.owned.contains_key(&idx) {
                continue;
            }
            let token = format!("{}:{:016x}", shared.worker_id, rand::rng().random::<u64>());
            match shared
                .store
                .lock_acquire(&shared.partitions[idx], &token, ttl_ms)
                .await
            {
                Ok(true) => {
                    self.owned.insert(
                        idx,
                        Owned {
                            token,
                            next_due: None,
                            next_reap: Instant::now(),
                        },
                    );
                    newly.push(idx);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not take promoter locks; trying next tick");
                    break;
                }
            }
        }
        if !newly.is_empty() {
            tracing::debug!(partitions = newly.len(), "took promoter locks");
        }
        for idx in newly {
            self.promote(idx).await;
        }
    }

    async fn release_all(&mut self) {
        for (idx, o) in self.owned.drain() {
            let p = &self.shared.partitions[idx];
            if let Err(e) = self.shared.store.lock_release(p, &o.token).await {
                tracing::warn!(error = %e, "could not release a promoter lock; it expires by itself");
            }
        }
    }
}
