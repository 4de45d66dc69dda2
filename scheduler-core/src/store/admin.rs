//! Operator scripts: `cancel.lua`, `delete.lua`, `requeue.lua` (dead tasks back to ready), `trim_dead.lua`
//! (the janitor's retention).

use std::sync::LazyLock;

use redis::Script;

use super::reply::{
    code, codes, int, CANCEL as CANCEL_CODES, DELETE as DELETE_CODES, REQUEUE as REQUEUE_CODES,
};
pub use super::reply::{CancelReply, DeleteReply, RequeueReply};
use super::script::script;
use super::{Partition, Store, MAX_BATCH};
use crate::error::Result;

static CANCEL: LazyLock<Script> = script!("cancel");
static TRIM_DEAD: LazyLock<Script> = script!("trim_dead");
static REQUEUE: LazyLock<Script> = script!("requeue");
static DELETE: LazyLock<Script> = script!("delete");

impl Store {
    /// `cancel.lua`: withdraws task `id` of `p` unless it started; its record then expires after
    /// `ttl_ms` (0: deleted at once). A running task gets a cancellation request, published to
    /// the worker running it ([`CancelReply::Running`]).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn cancel(&self, p: &Partition, id: &str, ttl_ms: u64) -> Result<CancelReply> {
        let mut inv = CANCEL.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(ttl_ms)
            .arg(id)
            .arg(&p.channel)
            .arg(p.shard)
            .arg(self.archive_bound());
        let v = self.run_script(&inv).await?;
        code("cancel", CANCEL_CODES, &v)
    }

    /// `delete.lua`: removes task `id` of `p` unless it runs: its record and its entry in the
    /// scheduled, ready or dead set.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn delete(&self, p: &Partition, id: &str) -> Result<DeleteReply> {
        let mut inv = DELETE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.dead())
            .key(p.keys.stats())
            .arg(p.keys.task_prefix())
            .arg(id);
        let v = self.run_script(&inv).await?;
        code("delete", DELETE_CODES, &v)
    }

    /// `trim_dead.lua`: deletes at most `batch` dead tasks of `p` that died more than
    /// `max_age_ms` ago or exceed the newest `max_len`; returns how many it deleted.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn trim_dead(
        &self,
        p: &Partition,
        max_age_ms: u64,
        max_len: u64,
        batch: u32,
    ) -> Result<u64> {
        let mut inv = TRIM_DEAD.prepare_invoke();
        inv.key(p.keys.dead())
            .arg(p.keys.task_prefix())
            .arg(max_age_ms)
            .arg(max_len)
            .arg(batch.clamp(1, MAX_BATCH));
        Ok(int(&self.run_script(&inv).await?)? as u64)
    }

    /// `requeue.lua`: puts the dead tasks `ids` of `p` back in its ready set, attempts reset to 0,
    /// last error kept; one reply per id. The caller bounds `ids` (at most [`MAX_BATCH`]).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn requeue(&self, p: &Partition, ids: &[&str]) -> Result<Vec<RequeueReply>> {
        let mut inv = REQUEUE.prepare_invoke();
        inv.key(p.keys.dead())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.drained())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        for id in ids {
            inv.arg(*id);
        }
        let v = self.run_script(&inv).await?;
        codes("requeue", REQUEUE_CODES, v)
    }
}
