//! The ticker: every `schedule_poll` (1 s), enqueues the due ticks of every periodic schedule
//! ([`scheduler_core::Schedules::fire_due`]) as ordinary delayed tasks, `schedule_lookahead`
//! (5 s) before their time, so that they start on time through the promoter like any delayed
//! task. Every worker runs it; no lock: each write is a compare-and-set on the schedule's
//! revision, so two tickers never enqueue one tick twice (`docs/schedules.md`).

use std::sync::Arc;
use std::time::Duration;

use scheduler_core::Schedules;
use tokio_util::sync::CancellationToken;

/// What the ticker uses.
pub(crate) struct TickerParams {
    pub(crate) schedules: Schedules,
    /// How often it looks ([`crate::WorkerBuilder::schedule_poll`]).
    pub(crate) poll: Duration,
    /// How far ahead ticks are enqueued ([`crate::WorkerBuilder::schedule_lookahead`]).
    pub(crate) lookahead: Duration,
    /// Ends it (intake stops).
    pub(crate) stop_intake: CancellationToken,
}

/// Runs until intake stops.
pub(crate) async fn run(params: Arc<TickerParams>) {
    let mut tick = tokio::time::interval(params.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            _ = tick.tick() => {}
        }
        match params.schedules.fire_due(params.lookahead).await {
            Ok(r) if r.created > 0 => {
                tracing::debug!(created = r.created, "schedule ticks enqueued");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not fire schedules; next round");
            }
        }
    }
}
