//! `promote.lua` and `reap.lua`: moving due tasks to the ready set, recovering expired leases.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::lease::claimed_tasks;
use super::outcome::AckItem;
use super::reply::{array, bytes, codes, int, opt_time, Outcome, FENCED};
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
    /// Due tasks whose deadline was passed: they ended `expired` instead of being moved.
    pub expired: u64,
}

/// Acks riding on a promote ([`Store::promote_claim_ack`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Riders<'a> {
    /// Each `(id, token, result)`, as [`Store::ack_many`] takes them.
    pub acks: &'a [AckItem<'a>],
    /// How long their results are kept (ms; 0 deletes the task on success).
    pub result_ttl_ms: u64,
}

/// What reap did.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The workflow members among the tasks buried or cancelled: each its
    /// [`crate::workflow::WORKFLOW_HEADER`] and how it ended (its error), for
    /// [`crate::Client::workflow_member_finished`].
    pub workflow_members: Vec<(String, String)>,
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
    /// A task past its deadline ends `expired` instead; in a queue with task events on
    /// ([`Store::events_on`]) the script publishes its `expired` event.
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
        let (promoted, tasks, _) = self
            .promote_claim_ack(p, batch, want, lease_ms, worker, Riders::default())
            .await?;
        Ok((promoted, tasks))
    }

    /// [`Store::promote_claim`] carrying acks of `p` as well (`riders`, written exactly as
    /// [`Store::ack_many`] writes them): one call where an ack and a promote took two. Returns
    /// the acks' outcomes in order ([`Outcome::Done`] or [`Outcome::StaleLease`]), after the
    /// promote's.
    ///
    /// # Errors
    ///
    /// A Redis error (then none of it, or all of it, was applied: one script call).
    pub async fn promote_claim_ack(
        &self,
        p: &Partition,
        batch: u32,
        want: u32,
        lease_ms: u64,
        worker: &str,
        riders: Riders<'_>,
    ) -> Result<(Promoted, Vec<Claimed>, Vec<Outcome>)> {
        let Riders {
            acks,
            result_ttl_ms,
        } = riders;
        let mut inv = PROMOTE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.dead())
            .key(p.keys.drained())
            .key(p.keys.active())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(&p.channel)
            .arg(p.shard)
            .arg(want.min(MAX_BATCH))
            .arg(lease_ms)
            .arg(worker)
            .arg(crate::defaults::EXPIRED_TTL.as_millis() as u64)
            .arg(self.archive_bound())
            .arg(result_ttl_ms)
            // The `expired` events, published by the script, in a queue with events on.
            .arg(if self.events_on(&p.queue) {
                self.keys.events_channel(&p.queue)
            } else {
                String::new()
            });
        for (id, token, result) in acks {
            inv.arg(*id).arg(*token).arg(*result);
        }
        let mut v = array(self.run_script(&inv).await?)?;
        if v.len() < 7 {
            return Err(Error::Protocol(format!("promote returned {v:?}")));
        }
        let tasks = claimed_tasks(v.split_off(7))?;
        let acked = codes("promote acks", FENCED, v.pop().unwrap_or(Value::Nil))?;
        if acked.len() != acks.len() {
            return Err(Error::Protocol(format!(
                "promote answered {} of {} acks",
                acked.len(),
                acks.len()
            )));
        }
        let promoted = Promoted {
            moved: int(&v[0])? as u64,
            next_due_ms: opt_time(int(&v[1])?),
            server_now_ms: int(&v[2])?,
            server_now_us: int(&v[3])?,
            corrupt: int(&v[4])? as u64,
            expired: int(&v[5])? as u64,
        };
        Ok((promoted, tasks, acked))
    }

    /// `reap.lua`: recovers at most `batch` tasks of `p` whose lease expired. A task goes back to
    /// its ready set while its count of expired leases (`lost`, this one included) is at most
    /// `max_lost`, and to the dead set beyond; handler failures (`retry.lua`) do not count here.
    /// In a queue with task events on, the script publishes their `retried`, `dead` and
    /// `cancelled` events. The workflow members buried or cancelled are listed
    /// ([`Reaped::workflow_members`]): the caller records their end in their workflows.
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
            .arg(self.archive_bound())
            .arg(if self.events_on(&p.queue) {
                self.keys.events_channel(&p.queue)
            } else {
                String::new()
            });
        let mut v = array(self.run_script(&inv).await?)?;
        if v.len() < 4 || !(v.len() - 4).is_multiple_of(3) {
            return Err(Error::Protocol(format!("reap returned {v:?}")));
        }
        let mut workflow_members = Vec::new();
        let mut rest = v.split_off(4).into_iter();
        while let (Some(id), Some(headers), Some(ended)) = (rest.next(), rest.next(), rest.next()) {
            let headers = crate::headers::decode(&bytes(headers)?);
            match headers.map(|mut h| h.remove(crate::workflow::WORKFLOW_HEADER)) {
                Ok(Some(wf)) => {
                    workflow_members.push((wf, String::from_utf8_lossy(&bytes(ended)?).into()));
                }
                // The script matched the header's name anywhere in the headers' bytes.
                Ok(None) => {}
                Err(e) => {
                    let id = String::from_utf8_lossy(&bytes(id)?).into_owned();
                    tracing::warn!(queue = %p.queue, id, error = %e, "reaped task's headers unreadable; the workflow sweep records it");
                }
            }
        }
        Ok(Reaped {
            requeued: int(&v[0])? as u64,
            buried: int(&v[1])? as u64,
            next_deadline_ms: opt_time(int(&v[2])?),
            corrupt: int(&v[3])? as u64,
            workflow_members,
        })
    }
}
