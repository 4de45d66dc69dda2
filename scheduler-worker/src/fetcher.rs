//! The fetcher: claims ready tasks in batches from partitions flagged as having work and hands
//! each to an executor. Flags are set by wake-up notifications and by the promoter's sweep; an
//! idle fetcher sends Redis nothing.
//!
//! Round trips are not paid one at a time: several claims (on different partitions) are in
//! flight at once, and the fetcher claims ahead of free slots up to a bounded prefetch
//! ([`crate::WorkerConfig::prefetch_multiplier`]), so a slot that frees takes its next task from
//! here instead of waiting a round trip. Every task in hand (in a claim in flight, waiting for a
//! slot, or running) holds one permit of the prefetch budget; a claim asks for as many tasks as
//! it holds permits, and gives back the permits of the tasks it did not get.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler_core::store::retry_transient;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::executor;
use crate::shared::{Counters, Inflight, Shared};

/// After a failed claim no claim is sent before `until`; the delay doubles with each failure in a
/// row (50 ms to 5 s) and starts again after a success.
#[derive(Debug)]
struct Pause {
    until: Option<Instant>,
    next: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// What the claims in flight share with the fetcher loop.
struct Ctx {
    shared: Arc<Shared>,
    /// One permit per task that may run at once; an executor takes one before it runs.
    slots: Arc<Semaphore>,
    executors: TaskTracker,
    pause: Mutex<Pause>,
    /// Claims in flight.
    in_flight: AtomicUsize,
    /// Signalled when a claim ends, so the loop can lower the size it waits for.
    claim_done: Notify,
}

/// Runs until intake stops, then waits for its claims in flight. `slots` holds one permit per
/// task that may run at once; each executor keeps its permit until its outcome is handed to the
/// acker.
pub(crate) async fn run(shared: Arc<Shared>, slots: Arc<Semaphore>, tracker: TaskTracker) {
    let n = shared.partitions.len();
    let batch = shared.cfg.claim_batch.max(1);
    let concurrency = shared.cfg.concurrency.max(1);
    let budget = concurrency
        .saturating_mul(shared.cfg.prefetch_multiplier.saturating_add(1))
        .min(Semaphore::MAX_PERMITS);
    let hand = Arc::new(Semaphore::new(budget));
    let ctx = Arc::new(Ctx {
        shared: Arc::clone(&shared),
        slots,
        executors: tracker,
        pause: Mutex::new(Pause {
            until: None,
            next: FIRST_PAUSE,
        }),
        in_flight: AtomicUsize::new(0),
        claim_done: Notify::new(),
    });
    let claims = TaskTracker::new();
    let mut cursor = 0usize;
    let mut seq = 0u64;
    'fetch: loop {
        // Budget: one task when no claim is in flight; otherwise a quarter batch, so that permits
        // coming back one by one do not turn into a stream of tiny claims.
        let mut permit = loop {
            let min = if ctx.in_flight.load(Ordering::Acquire) == 0 {
                1
            } else {
                (batch / 4).clamp(1, budget)
            };
            tokio::select! {
                () = shared.stop_intake.cancelled() => break 'fetch,
                p = Arc::clone(&hand).acquire_many_owned(min as u32) => match p {
                    Ok(p) => break p,
                    Err(_) => break 'fetch,
                },
                () = ctx.claim_done.notified() => {}
            }
        };
        while permit.num_permits() < batch {
            match Arc::clone(&hand).try_acquire_owned() {
                Ok(p) => permit.merge(p),
                Err(_) => break,
            }
        }
        let until = ctx.pause.lock().expect("pause poisoned").until;
        if let Some(until) = until {
            tokio::select! {
                () = shared.stop_intake.cancelled() => break 'fetch,
                () = tokio::time::sleep_until(until) => {}
            }
        }
        // Find a partition that may have work, round-robin so no partition starves.
        let idx = loop {
            let found = (0..n)
                .map(|k| (cursor + k) % n)
                .find(|&i| shared.ready_flags[i].load(Ordering::Acquire));
            if let Some(i) = found {
                cursor = (i + 1) % n;
                break i;
            }
            tokio::select! {
                () = shared.stop_intake.cancelled() => break 'fetch,
                () = shared.ready_notify.notified() => {}
            }
        };
        // Clear before claiming: a notification that arrives during the claim sets it again.
        // While this claim is in flight, no other claim goes to this partition unless a
        // notification flags it again.
        shared.ready_flags[idx].store(false, Ordering::Release);
        seq += 1;
        ctx.in_flight.fetch_add(1, Ordering::AcqRel);
        claims.spawn(claim(Arc::clone(&ctx), idx, permit, seq));
    }
    // A claim's reply carries leased tasks: let the claims in flight finish (their tasks are
    // handed back at once, as intake has stopped).
    claims.close();
    claims.wait().await;
}

/// One claim of as many tasks as `permit` holds, from partition `idx`.
async fn claim(ctx: Arc<Ctx>, idx: usize, mut permit: OwnedSemaphorePermit, seq: u64) {
    let shared = &ctx.shared;
    let want = permit.num_permits();
    let p = &shared.partitions[idx];
    let lease_ms = shared.cfg.lease.as_millis() as u64;
    // The claim's tag, recorded as the tasks' `worker`: finds them again if the reply is lost.
    let tag = format!("{}#{seq}", shared.worker_id);
    match shared.store.claim(p, want as u32, lease_ms, &tag).await {
        Ok(claim) => {
            {
                let mut pause = ctx.pause.lock().expect("pause poisoned");
                pause.until = None;
                pause.next = FIRST_PAUSE;
            }
            if claim.popped as usize >= want {
                // A full batch: there may be more.
                shared.mark_ready(idx);
            }
            Counters::add(&shared.counters.claimed, claim.tasks.len() as u64);
            crate::metrics::claimed(&p.queue, claim.tasks.len() as u64);
            for task in claim.tasks {
                let one = permit.split(1).expect("one permit per claimed task");
                let key = (idx, task.id.clone());
                let token = task.token;
                // Insert under the lock before the executor can look for its own entry.
                let mut inflight = shared.inflight.lock().expect("inflight poisoned");
                let handle = ctx.executors.spawn(executor::execute(
                    Arc::clone(shared),
                    idx,
                    task,
                    claim.server_now_ms,
                    executor::Permits {
                        hand: one,
                        slots: Arc::clone(&ctx.slots),
                    },
                ));
                inflight.insert(
                    key,
                    Inflight {
                        token,
                        abort: handle.abort_handle(),
                    },
                );
            }
        }
        Err(e) => {
            {
                let mut pause = ctx.pause.lock().expect("pause poisoned");
                pause.until = Some(Instant::now() + pause.next);
                pause.next = (pause.next * 2).min(Duration::from_secs(5));
            }
            shared.mark_ready(idx);
            tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "claim failed; backing off");
            // The claim may have run and only its reply been lost: hand its tasks back now
            // instead of after their lease.
            tokio::spawn(release_lost_claim(Arc::clone(shared), idx, tag));
        }
    }
    // The permits of tasks not received go back now.
    drop(permit);
    ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
    ctx.claim_done.notify_one();
}

/// Leases examined when looking for the tasks of a lost claim.
const LOST_CLAIM_SCAN: u32 = 10_000;

/// Hands back the tasks a failed claim took, if it ran (`release_claim.lua`); retried through a
/// Redis restart, given up at shutdown. Left alone, they would run after their lease.
async fn release_lost_claim(shared: Arc<Shared>, idx: usize, tag: String) {
    let p = &shared.partitions[idx];
    let released = tokio::select! {
        () = shared.stop_all.cancelled() => return,
        r = retry_transient(10, || shared.store.release_claim(p, &tag, LOST_CLAIM_SCAN)) => r,
    };
    match released {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(queue = %p.queue, shard = p.shard, tag, released = n, "handed back the tasks of a claim whose reply was lost");
        }
        Err(e) => {
            tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, tag, "could not hand back the tasks of a lost claim; they run again after their lease");
        }
    }
}
