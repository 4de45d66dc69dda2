//! The lease renewer: while tasks run (or wait for a slot after a prefetch), extends their leases
//! every third of the lease length, in one script call per partition, all partitions at once,
//! so a lease only runs out when this process is gone or stalled.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use scheduler_core::scripts::Outcome;
use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

use crate::shared::InflightMap;

/// What the lease renewer uses.
pub(crate) struct LeaseParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// [`crate::WorkerConfig::lease`]: renewed every third of it.
    pub(crate) lease: Duration,
    /// The tasks whose leases it renews.
    pub(crate) inflight: Arc<InflightMap>,
    /// Ends it (the last step of shutdown).
    pub(crate) stop_all: CancellationToken,
}

/// Runs until the whole worker stops (after shutdown has handed back what was still running).
pub(crate) async fn run(params: Arc<LeaseParams>) {
    let lease_ms = params.lease.as_millis() as u64;
    let mut tick = tokio::time::interval(params.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = params.stop_all.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot: HashMap<usize, Vec<(String, i64)>> = {
            let inflight = params.inflight.lock().expect("inflight poisoned");
            let mut m: HashMap<usize, Vec<(String, i64)>> = HashMap::new();
            for ((idx, id), f) in inflight.iter() {
                m.entry(*idx).or_default().push((id.clone(), f.token));
            }
            m
        };
        // Every partition at once: the calls share the multiplexed connection, so a round of
        // renewals costs about one round trip however many partitions there are.
        let rounds = snapshot
            .iter()
            .flat_map(|(idx, items)| items.chunks(500).map(move |chunk| (*idx, chunk)))
            .map(|(idx, chunk)| extend(&params, lease_ms, idx, chunk));
        futures::future::join_all(rounds).await;
    }
}

/// Renews the leases of `chunk`, tasks of partition `idx`.
async fn extend(params: &LeaseParams, lease_ms: u64, idx: usize, chunk: &[(String, i64)]) {
    let p = &params.partitions[idx];
    let refs: Vec<(&str, i64)> = chunk.iter().map(|(i, t)| (i.as_str(), *t)).collect();
    match params.store.extend(p, lease_ms, &refs).await {
        Ok(outs) => {
            let lost = lost_leases(&refs, &outs, |id, token| {
                params
                    .inflight
                    .lock()
                    .expect("inflight poisoned")
                    .get(&(idx, id.to_owned()))
                    .is_some_and(|f| f.token == token)
            });
            for id in lost {
                tracing::warn!(queue = %p.queue, id, "lease lost while running; the task may run elsewhere too");
            }
            // A cancellation whose `c:` message this worker missed (its pub/sub connection was
            // down): the renewal reply carries it, within a third of a lease.
            for ((id, token), o) in refs.iter().zip(&outs) {
                if *o != Outcome::Cancelled {
                    continue;
                }
                let inflight = params.inflight.lock().expect("inflight poisoned");
                if let Some(f) = inflight.get(&(idx, (*id).to_owned())) {
                    if f.token == *token && !f.cancel.is_cancelled() {
                        tracing::info!(queue = %p.queue, id, "cancellation requested (learned at lease renewal)");
                        f.cancel.cancel();
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not renew leases; retrying next tick")
        }
    }
}

/// The ids whose lease was really lost: the extend script refused them (stale token) and they
/// are still running here under the same token. A task that finished between the snapshot and
/// the extend call (its executor removed it from the in-flight map, the acker may already have
/// acked it) is refused as well, but nothing was lost: it is skipped.
fn lost_leases<'a>(
    items: &[(&'a str, i64)],
    outcomes: &[Outcome],
    still_running: impl Fn(&str, i64) -> bool,
) -> Vec<&'a str> {
    items
        .iter()
        .zip(outcomes)
        .filter(|((id, token), o)| **o == Outcome::StaleLease && still_running(id, *token))
        .map(|((id, _), _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_finished_before_the_extend_is_not_reported_lost() {
        let items = [("done", 1), ("running", 2), ("renewed", 3), ("requeued", 4)];
        let outcomes = [
            Outcome::StaleLease,
            Outcome::StaleLease,
            Outcome::Done,
            Outcome::StaleLease,
        ];
        // "done" left the in-flight map (acked meanwhile); "requeued" runs here again under a
        // newer token; only "running" still runs under the refused token.
        let lost = lost_leases(&items, &outcomes, |id, token| match id {
            "running" => token == 2,
            "requeued" => token == 5,
            "renewed" => true,
            _ => false,
        });
        assert_eq!(lost, vec!["running"]);
    }
}
