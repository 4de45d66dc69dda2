//! The fetcher: claims ready tasks in batches, as many as there are free execution slots, from
//! partitions flagged as having work, and hands each to an executor. Flags are set by wake-up
//! notifications and by the promoter's sweep; an idle fetcher sends Redis nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use scheduler_core::store::retry_transient;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::executor;
use crate::shared::{Counters, Inflight, Shared};

/// Runs until intake stops. `slots` holds one permit per task that may run at once; each
/// executor keeps its permit until its outcome is handed to the acker.
pub(crate) async fn run(shared: Arc<Shared>, slots: Arc<Semaphore>, tracker: TaskTracker) {
    let n = shared.partitions.len();
    let mut cursor = 0usize;
    let mut backoff = Duration::from_millis(50);
    let mut claims = 0u64;
    loop {
        // Wait for one free slot, then take every other free slot up to a batch without waiting.
        let mut permit = tokio::select! {
            () = shared.stop_intake.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        while permit.num_permits() < shared.cfg.claim_batch.max(1) {
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => permit.merge(p),
                Err(_) => break,
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
                () = shared.stop_intake.cancelled() => return,
                () = shared.ready_notify.notified() => {}
            }
        };
        // Clear before claiming: a notification that arrives during the claim sets it again.
        shared.ready_flags[idx].store(false, Ordering::Release);
        let want = permit.num_permits();
        let p = &shared.partitions[idx];
        let lease_ms = shared.cfg.lease.as_millis() as u64;
        // The claim's tag, recorded as the tasks' `worker`: finds them again if the reply is lost.
        claims += 1;
        let tag = format!("{}#{claims}", shared.worker_id);
        match shared.store.claim(p, want as u32, lease_ms, &tag).await {
            Ok(claim) => {
                backoff = Duration::from_millis(50);
                if claim.popped as usize >= want {
                    // A full batch: there may be more.
                    shared.ready_flags[idx].store(true, Ordering::Release);
                }
                Counters::add(&shared.counters.claimed, claim.tasks.len() as u64);
                crate::metrics::claimed(&p.queue, claim.tasks.len() as u64);
                for task in claim.tasks {
                    let one = permit.split(1).expect("one permit per claimed task");
                    let key = (idx, task.id.clone());
                    let token = task.token;
                    // Insert under the lock before the executor can look for its own entry.
                    let mut inflight = shared.inflight.lock().expect("inflight poisoned");
                    let handle = tracker.spawn(executor::execute(
                        Arc::clone(&shared),
                        idx,
                        task,
                        claim.server_now_ms,
                        one,
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
                shared.ready_flags[idx].store(true, Ordering::Release);
                tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "claim failed; backing off");
                // The claim may have run and only its reply been lost: hand its tasks back now
                // instead of after their lease.
                tokio::spawn(release_lost_claim(Arc::clone(&shared), idx, tag));
                tokio::select! {
                    () = shared.stop_intake.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
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
