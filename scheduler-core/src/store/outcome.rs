//! The outcome scripts: `ack.lua` (succeeded) and `retry.lua` (failed: again later, or buried).

use std::sync::LazyLock;

use redis::Script;

use super::reply::{codes, Outcome, FENCED, RETRY as RETRY_CODES};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static ACK: LazyLock<Script> = script!("ack");
static RETRY: LazyLock<Script> = script!("retry");

/// One acknowledgement: task id, lease token, result (MessagePack, empty for none).
pub type AckItem<'a> = (&'a str, i64, &'a [u8]);

/// One failure report: task id, lease token, error text, retry delay in ms (`None`: bury now).
pub type FailItem<'a> = (&'a str, i64, &'a str, Option<u64>);

impl Store {
    /// `ack.lua`: marks tasks succeeded, each `(id, token, result)`, for several partitions in one
    /// pipelined round trip. Results expire after `result_ttl_ms` (0: the task is deleted).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn ack_many(
        &self,
        groups: &[(&Partition, Vec<AckItem<'_>>)],
        result_ttl_ms: u64,
    ) -> Result<Vec<Vec<Outcome>>> {
        let invs: Vec<_> = groups
            .iter()
            .map(|(p, items)| {
                let mut inv = ACK.prepare_invoke();
                inv.key(p.keys.active())
                    .key(p.keys.stats())
                    .key(p.keys.archive())
                    .arg(p.keys.task_prefix())
                    .arg(result_ttl_ms)
                    .arg(self.archive_bound());
                for (id, token, result) in items {
                    inv.arg(*id).arg(*token).arg(*result);
                }
                inv
            })
            .collect();
        self.run_pipeline(&invs)
            .await?
            .into_iter()
            .map(|v| codes("ack", FENCED, v))
            .collect()
    }

    /// `retry.lua`: after failed runs, schedules each `(id, token, error, delay)` again after
    /// `delay` ms, or buries it (delay `None`, or no retries left); a retry that would start
    /// after the task's deadline ends it `expired` ([`Outcome::Expired`]).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn retry(&self, p: &Partition, items: &[FailItem<'_>]) -> Result<Vec<Outcome>> {
        let mut inv = RETRY.prepare_invoke();
        inv.key(p.keys.active())
            .key(p.keys.scheduled())
            .key(p.keys.dead())
            .key(p.keys.stats())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(self.archive_bound())
            .arg(crate::defaults::EXPIRED_TTL.as_millis() as u64);
        for (id, token, error, delay) in items {
            inv.arg(*id)
                .arg(*token)
                .arg(*error)
                .arg(delay.map_or(-1, |d| d as i64));
        }
        codes("retry", RETRY_CODES, self.run_script(&inv).await?)
    }
}
