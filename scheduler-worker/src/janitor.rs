//! The janitor: every few minutes, enforces the dead set's retention (maximum age and length) in
//! every partition this worker serves. Idempotent, so every worker may run it; no lock.

use std::sync::Arc;

use crate::shared::Shared;

/// Runs until intake stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.janitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_age = shared.cfg.dead_max_age.as_millis() as u64;
    let batch = 500;
    loop {
        tokio::select! {
            () = shared.stop_intake.cancelled() => return,
            _ = tick.tick() => {}
        }
        for p in &shared.partitions {
            loop {
                match shared
                    .store
                    .trim_dead(p, max_age, shared.cfg.dead_max_len, batch)
                    .await
                {
                    Ok(n) if n >= u64::from(batch) => continue,
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(queue = %p.queue, shard = p.shard, deleted = n, "trimmed the dead set");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "janitor could not trim a dead set; next round");
                        break;
                    }
                }
            }
        }
    }
}
