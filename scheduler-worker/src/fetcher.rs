//! The fetcher: claims ready tasks in batches, as many as there are free execution slots, from
//! partitions flagged as having work, and hands each to an executor. Flags are set by wake-up
//! notifications and by the promoter's sweep; an idle fetcher sends Redis nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
        match shared
            .store
            .claim(p, want as u32, lease_ms, &shared.worker_id)
            .await
        {
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
                tokio::select! {
                    () = shared.stop_intake.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
