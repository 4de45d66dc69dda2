//! What the subcommands share on top of [`scheduler::Inspector`]: the queue check with the
//! known queues in its message.

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
