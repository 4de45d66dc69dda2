//! The lease renewer: while tasks run, extends their leases every third of the lease length, in
//! one script call per partition, so a lease only runs out when this process is gone or stalled.

use std::collections::HashMap;
use std::sync::Arc;

use scheduler_core::scripts::Outcome;

use crate::shared::Shared;

/// Runs until the whole worker stops (after shutdown has handed back what was still running).
pub(crate) async fn run(shared: Arc<Shared>) {
    let lease_ms = shared.cfg.lease.as_millis() as u64;
    let mut tick = tokio::time::interval(shared.cfg.lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = shared.stop_all.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot: HashMap<usize, Vec<(String, i64)>> = {
            let inflight = shared.inflight.lock().expect("inflight poisoned");
            let mut m: HashMap<usize, Vec<(String, i64)>> = HashMap::new();
            for ((idx, id), f) in inflight.iter() {
                m.entry(*idx).or_default().push((id.clone(), f.token));
            }
            m
        };
        for (idx, items) in snapshot {
            let p = &shared.partitions[idx];
            for chunk in items.chunks(500) {
                let refs: Vec<(&str, i64)> = chunk.iter().map(|(i, t)| (i.as_str(), *t)).collect();
                match shared.store.extend(p, lease_ms, &refs).await {
                    Ok(outs) => {
                        for ((id, _), o) in refs.iter().zip(outs) {
                            if o == Outcome::StaleLease {
                                tracing::warn!(queue = %p.queue, id, "lease lost while running; the task may run elsewhere too");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew leases; retrying next tick")
                    }
                }
            }
        }
    }
}
