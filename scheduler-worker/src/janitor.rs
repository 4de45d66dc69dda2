//! The janitor: every few minutes, enforces the dead set's retention (maximum age and length) in
//! every partition this worker serves, and sweeps the unfinished workflows
//! (`Client::sweep_workflows`, docs/workflows.md). Idempotent, so every worker may run it; no
//! lock.

use std::sync::Arc;
use std::time::Duration;

use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

/// What the janitor uses.
pub(crate) struct JanitorParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// How often it runs ([`crate::WorkerConfig::janitor_interval`]).
    pub(crate) janitor_interval: Duration,
    /// [`crate::WorkerConfig::dead_max_age`].
    pub(crate) dead_max_age: Duration,
    /// [`crate::WorkerConfig::dead_max_len`].
    pub(crate) dead_max_len: u64,
    /// Ends it (intake stops).
    pub(crate) stop_intake: CancellationToken,
    /// Sweeps the workflows.
    pub(crate) client: scheduler_core::Client,
}

/// Runs until intake stops.
pub(crate) async fn run(params: Arc<JanitorParams>) {
    let mut tick = tokio::time::interval(params.janitor_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let max_age = params.dead_max_age.as_millis() as u64;
    let batch = 500;
    loop {
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            _ = tick.tick() => {}
        }
        // One ZRANGE of an empty index when no workflow runs.
        if let Err(e) = params.client.sweep_workflows().await {
            tracing::debug!(error = %e, "janitor could not sweep the workflows; next round");
        }
        for p in params.partitions.iter() {
            loop {
                match params
                    .store
                    .trim_dead(p, max_age, params.dead_max_len, batch)
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
