//! Flow control: `pause.lua` (pause and resume a queue), the read of the paused queues that
//! workers make when they (re)subscribe and every sweep interval, and `cancel_run.lua` (a worker
//! ends a run whose cancellation was requested) (`docs/flow-control.md`).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;

use super::reply::{code, int, Outcome};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;
use crate::id::validate_queue;

static PAUSE: LazyLock<Script> = script!("pause");
static CANCEL_RUN_SCRIPT: LazyLock<Script> = script!("cancel_run");

impl Store {
    /// `pause.lua`: pauses `queue` (`pause`) or resumes it, and publishes the change on its
    /// wake-up channel; `true` when that changed something (`false`: already so).
    ///
    /// # Errors
    ///
    /// [`crate::Error::InvalidQueueName`], or a Redis error.
    pub async fn set_paused(&self, queue: &str, pause: bool) -> Result<bool> {
        validate_queue(queue)?;
        let mut inv = PAUSE.prepare_invoke();
        inv.key(self.keys().paused())
            .arg(queue)
            .arg(if pause { "1" } else { "0" })
            .arg(self.keys().wake_channel(queue));
        let v = self.run_script(&inv).await?;
        Ok(int(&v)? == 1)
    }

    /// The paused queues, with when each was paused (unix ms, Redis clock): one `HGETALL`.
    /// Values that are not integers (a hand edit) read as 0: the queue is paused all the same.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn paused_queues(&self) -> Result<HashMap<String, i64>> {
        let mut conn = self.conn();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys().paused())
            .query_async(&mut conn)
            .await?;
        Ok(all
            .into_iter()
            .map(|(q, at)| (q, at.parse().unwrap_or(0)))
            .collect())
    }

    /// `cancel_run.lua`: ends the run of task `id` of `p` under lease `token` as `cancelled`
    /// (its cancellation was requested while it ran), `why` saying what became of the run. Its
    /// record expires after the TTL the canceller chose (`ttl_ms` when none is recorded).
    /// [`Outcome::Done`], or [`Outcome::StaleLease`] when the lease is no longer this token.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn cancel_run(
        &self,
        p: &Partition,
        id: &str,
        token: i64,
        why: &str,
        ttl_ms: u64,
    ) -> Result<Outcome> {
        let mut inv = CANCEL_RUN_SCRIPT.prepare_invoke();
        inv.key(p.keys.active())
            .key(p.keys.stats())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(id)
            .arg(token)
            .arg(why)
            .arg(ttl_ms)
            .arg(self.archive_bound());
        code(
            "cancel_run",
            super::reply::FENCED,
            &self.run_script(&inv).await?,
        )
    }
}
