//! What the subcommands share on top of [`scheduler::Inspector`]: the queue check with the
//! known queues in its message, and the order counters are shown in.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use scheduler::Inspector;

/// The shard count recorded for `queue`. Unlike `Client::shards`, an unknown queue is an error
/// rather than registered: looking at a queue must not create it.
pub(crate) async fn shards_of(inspector: &Inspector, queue: &str) -> Result<u16> {
    match inspector.shards(queue).await {
        Err(scheduler::Error::UnknownQueue(q)) => {
            let known = match inspector.queues().await {
                Ok(all) if all.is_empty() => "none".to_owned(),
                Ok(all) => all
                    .into_iter()
                    .map(|q| q.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                Err(_) => "?".to_owned(),
            };
            Err(anyhow!(
                "unknown queue {q:?}: not registered (known: {known})"
            ))
        }
        other => Ok(other?),
    }
}

/// Counter names in the order the task life runs through them; others follow by name.
const COUNTER_ORDER: [&str; 9] = [
    "enqueued",
    "promoted",
    "succeeded",
    "retried",
    "dead",
    "reaped",
    "cancelled",
    "requeued",
    "deleted",
];

/// `counters` in display order, the known ones always (0 when never incremented).
pub(crate) fn ordered_counters(counters: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = COUNTER_ORDER
        .iter()
        .map(|k| ((*k).to_owned(), counters.get(*k).copied().unwrap_or(0)))
        .collect();
    // A BTreeMap iterates by name.
    out.extend(
        counters
            .iter()
            .filter(|(k, _)| !COUNTER_ORDER.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), *v)),
    );
    out
}
