//! The listener: one pub/sub connection per worker process, subscribed to the wake-up channel of
//! each served queue. It turns `r:<shard>` into "claim from this partition" for the fetcher and
//! `s:<shard>:<due>` into "new head" for the promoter. Idle workers wait here instead of polling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::shared::{PromoterEvent, Shared};

/// Runs until intake stops, reconnecting with backoff whenever the connection drops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            () = shared.stop_intake.cancelled() => return,
            res = listen(&shared) => {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            () = shared.stop_intake.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn listen(shared: &Shared) -> Result<(), scheduler_core::Error> {
    // A fresh connection each time: in Cluster or Sentinel mode it lands on a live node.
    let mut pubsub = shared.store.pubsub().await?;
    let mut queue_of: HashMap<String, String> = HashMap::new();
    for p in &shared.partitions {
        if !queue_of.contains_key(&p.channel) {
            pubsub.subscribe(&p.channel).await?;
            queue_of.insert(p.channel.clone(), p.queue.clone());
        }
    }
    // Anything published before the subscription took effect was missed: look everywhere once.
    shared.mark_all_ready();
    let _ = shared.promoter_tx.send(PromoterEvent::SweepAll);
    tracing::debug!(channels = queue_of.len(), "listening for wake-ups");
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let Some(queue) = queue_of.get(msg.get_channel_name()) else {
            continue;
        };
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        dispatch(shared, queue, &payload);
    }
    Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")).into())
}

fn dispatch(shared: &Shared, queue: &str, payload: &str) {
    let mut parts = payload.split(':');
    let kind = parts.next();
    let Some(shard) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return;
    };
    let Some(&idx) = shared.index.get(&(queue.to_owned(), shard)) else {
        return;
    };
    match kind {
        Some("r") => shared.mark_ready(idx),
        Some("s") => {
            if let Some(due) = parts.next().and_then(|s| s.parse::<i64>().ok()) {
                let _ = shared.promoter_tx.send(PromoterEvent::Head(idx, due));
            }
        }
        _ => {}
    }
}
