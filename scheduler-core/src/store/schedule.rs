//! `promote.lua` and `reap.lua`: moving due tasks to the ready set, recovering expired leases.

use std::sync::LazyLock;

use redis::Script;

use super::lease::claimed_tasks;
use super::reply::{array, int, opt_time};
use super::script::script;
use super::{Partition, Store, MAX_BATCH};
use crate::error::{Error, Result};
use crate::store::Claimed;

static PROMOTE: LazyLock<Script> = script!("promote");
static REAP: LazyLock<Script> = script!("reap");

/// What promote did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Tasks moved to the ready set (not counting those leased to the caller by
    /// [`Store::promote_claim`]).
    pub moved: u64,
    /// Due time of the new head of the scheduled set (unix ms), if any.
    pub next_due_ms: Option<i64>,
    /// The Redis server's clock at the time of the call (unix ms).
    pub server_now_ms: i64,
    /// The same instant in unix microseconds.
    pub server_now_us: i64,
    /// Records that could not be read, each handled on its own: ids without a task hash dropped
    /// from the scheduled set, hashes with no known `state` moved to the dead set with the
    /// reason. Worth a warning: only a hand edit or a bug makes one.
    pub corrupt: u64,
}

/// What reap did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Tasks whose lease expired, put back in the ready set.
    pub requeued: u64,
    /// Tasks whose lease expired with no retries left, moved to the dead set.
    pub buried: u64,
    /// Earliest lease deadline still held (unix ms), if any.
    pub next_deadline_ms: Option<i64>,
    /// Records that could not be read, each handled on its own (not counted in `buried`): ids
    /// without a task hash dropped from the active set, hashes with no known `state` or an
    /// unreadable `attempts` or `lost` moved to the dead set with the reason. Worth a warning.
    pub corrupt: u64,
}

impl Store {
    /// `promote.lua`: moves at most `batch` due tasks of `p` to its ready set.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn promote(&self, p: &Partition, batch: u32) -> Result<Promoted> {
        Ok(self.promote_claim(p, batch, 0, 0, "").await?.0)
    }

    /// `promote.lua`: moves at most `batch` due tasks of `p`, the first `want` of them straight
    /// into leases of `lease_ms` for the caller (tagged `worker`, as [`Store::claim`] does), the
    /// rest to the ready set. One call where a promote, its wake-up and a claim took three.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn promote_claim(
        &self,
        p: &Partition,
        batch: u32,
        want: u32,
        lease_ms: u64,
        worker: &str,
    ) -> Result<(Promoted, Vec<Claimed>)> {
        let mut inv = PROMOTE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.dead())
            .key(p.keys.drained())
            .key(p.keys.active())
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(&p.channel)
            .arg(p.shard)
            .arg(want.min(MAX_BATCH))
            .arg(lease_ms)
            .arg(worker);
        let mut v = array(self.run_script(&inv).await?)?;
        if v.len() < 5 {
            return Err(Error::Protocol(format!("promote returned {v:?}")));
        }
        let tasks = claimed_tasks(v.split_off(5))?;
        let promoted = Promoted {
            moved: int(&v[0])? as u64,
            next_due_ms: opt_time(int(&v[1])?),
            server_now_ms: int(&v[2])?,
            server_now_us: int(&v[3])?,
            corrupt: int(&v[4])? as u64,
        };
        Ok((promoted, tasks))
    }

    /// `reap.lua`: recovers at most `batch` tasks of `p` whose lease expired. A task goes back to
    /// its ready set while its count of expired leases (`lost`, this one included) is at most
    /// `max_lost`, and to the dead set beyond; handler failures (`retry.lua`) do not count here.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn reap(&self, p: &Partition, batch: u32, max_lost: u32) -> Result<Reaped> {
        let mut inv = REAP.prepare_invoke();
        inv.key(p.keys.active())
            .key(p.keys.ready())
            .key(p.keys.dead())
            .key(p.keys.stats())
            .key(p.keys.drained())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(&p.channel)
            .arg(p.shard)
            .arg(max_lost)
            .arg(self.archive_bound());
        let v = array(self.run_script(&inv).await?)?;
        if v.len() != 4 {
            return Err(Error::Protocol(format!("reap returned {v:?}")));
        }
        Ok(Reaped {
            requeued: int(&v[0])? as u64,
            buried: int(&v[1])? as u64,
            next_deadline_ms: opt_time(int(&v[2])?),
            corrupt: int(&v[3])? as u64,
        })
    }
}
