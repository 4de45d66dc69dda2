//! The queue gauges: when `queue_metrics_interval` is set, reads how many tasks each served queue
//! has in each state (four `ZCARD`s per partition, one pipelined round trip) and publishes them
//! as the `scheduler_queue_tasks` gauge, the backlog metric to alert and autoscale on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio_util::sync::CancellationToken;

/// What the queue gauges use.
pub(crate) struct GaugesParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// [`crate::WorkerConfig::queue_metrics_interval`]; `None`: off.
    pub(crate) queue_metrics_interval: Option<Duration>,
    /// Ends it (intake stops).
    pub(crate) stop_intake: CancellationToken,
}

/// Runs until intake stops; returns at once when the interval is not set.
pub(crate) async fn run(params: Arc<GaugesParams>) {
    let Some(every) = params.queue_metrics_interval else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = params.stop_intake.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut pipe = redis::pipe();
        for p in params.partitions.iter() {
            pipe.zcard(p.keys.scheduled())
                .zcard(p.keys.ready())
                .zcard(p.keys.active())
                .zcard(p.keys.dead());
        }
        // Partitions live in different cluster slots: query_pipeline groups by slot.
        let counts: Vec<u64> = match params.store.query_pipeline(&pipe).await {
            Ok(values) => values
                .into_iter()
                .map(|v| redis::from_redis_value(v).unwrap_or(0))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "could not read queue gauges");
                continue;
            }
        };
        let mut per_queue: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
        for (p, c) in params.partitions.iter().zip(counts.chunks(4)) {
            let sums = per_queue.entry(p.queue.as_str()).or_default();
            for (s, v) in sums.iter_mut().zip(c) {
                *s += v;
            }
        }
        for (queue, sums) in per_queue {
            for (state, n) in ["scheduled", "ready", "running", "dead"]
                .into_iter()
                .zip(sums)
            {
                crate::metrics::queue_tasks(queue, state, n);
            }
        }
    }
}
