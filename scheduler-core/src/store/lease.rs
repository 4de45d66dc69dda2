//! The lease scripts: `claim.lua` takes ready tasks into leases, `extend.lua` renews them,
//! `release.lua` and `release_claim.lua` hand them back; `progress.lua` records a running
//! task's progress under its lease.

use std::sync::LazyLock;

use redis::Script;

use super::script::script;
use redis::Value;

use super::reply::{
    array, bytes, code, codes, int, Outcome, EXTEND as EXTEND_CODES, FENCED,
    RELEASE as RELEASE_CODES,
};
use super::{Partition, Store, MAX_BATCH};
use crate::error::{Error, Result};

static CLAIM: LazyLock<Script> = script!("claim");
static EXTEND: LazyLock<Script> = script!("extend");
static RELEASE: LazyLock<Script> = script!("release");
static RELEASE_CLAIM: LazyLock<Script> = script!("release_claim");
static PROGRESS: LazyLock<Script> = script!("progress");

/// A task taken into a lease by [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Task id.
    pub id: String,
    /// Fencing token: present it to ack, retry, extend or release.
    pub token: i64,
    /// Which run this is (1 = first).
    pub attempt: u32,
    /// Handler name.
    pub name: String,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// Headers, as stored ([`crate::headers::encode`]); empty when the task has none.
    pub headers: Vec<u8>,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Time limit of one run, in milliseconds.
    pub timeout_ms: u64,
    /// When this run was due (unix ms, Redis clock).
    pub due_ms: i64,
    /// Runs of the earlier attempts lost with their worker (expired leases, `lost`); they use
    /// up no retry: `attempt - lost` is the run of the retry budget this is.
    pub lost: u32,
}

/// A batch of claimed tasks and the server time of the claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The Redis server's clock at the claim (unix ms).
    pub server_now_ms: i64,
    /// Ids taken from the ready set, including any dropped because their task was gone or not
    /// ready; fewer than the batch size means the ready set is now empty.
    pub popped: u32,
    /// Popped records that could not be read, each handled on its own: ids without a task hash
    /// dropped, hashes with no known `state` or an unreadable number field (`token`, `attempts`,
    /// `lost`, `max_retries`, `timeout_ms`) moved to the dead set with the reason. Worth a
    /// warning: only a hand edit or a bug makes one.
    pub corrupt: u32,
    /// Popped tasks whose deadline was passed: they ended `expired` instead of starting.
    pub expired: u32,
    /// The tasks.
    pub tasks: Vec<Claimed>,
}

impl Store {
    /// `claim.lua`: takes at most `batch` ready tasks of `p` into leases of `lease_ms`; a task
    /// past its deadline ends `expired` instead (kept [`crate::defaults::EXPIRED_TTL`]), and in
    /// a queue with task events on ([`Store::events_on`]) the script publishes its `expired`
    /// event.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn claim(
        &self,
        p: &Partition,
        batch: u32,
        lease_ms: u64,
        worker: &str,
    ) -> Result<Claim> {
        let mut inv = CLAIM.prepare_invoke();
        inv.key(p.keys.ready())
            .key(p.keys.active())
            .key(p.keys.dead())
            .key(p.keys.drained())
            .key(p.keys.stats())
            .key(p.keys.archive())
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(lease_ms)
            .arg(worker)
            .arg(crate::defaults::EXPIRED_TTL.as_millis() as u64)
            .arg(self.archive_bound());
        // The `expired` events, published by the script, in a queue with events on only: off,
        // the call is the same as without events.
        if self.events_on(&p.queue) {
            inv.arg(self.keys.events_channel(&p.queue));
        }
        let mut it = array(self.run_script(&inv).await?)?.into_iter();
        let now = it
            .next()
            .ok_or_else(|| Error::Protocol("claim returned nothing".into()))?;
        let server_now_ms = int(&now)?;
        let popped = int(&it
            .next()
            .ok_or_else(|| Error::Protocol("claim returned no count".into()))?)?
            as u32;
        let corrupt = int(&it
            .next()
            .ok_or_else(|| Error::Protocol("claim returned no corrupt count".into()))?)?
            as u32;
        let expired = int(&it
            .next()
            .ok_or_else(|| Error::Protocol("claim returned no expired count".into()))?)?
            as u32;
        let tasks = claimed_tasks(it.collect())?;
        Ok(Claim {
            server_now_ms,
            popped,
            corrupt,
            expired,
            tasks,
        })
    }

    /// `extend.lua`: renews the leases `(id, token)` of `p` to `lease_ms` from now.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn extend(
        &self,
        p: &Partition,
        lease_ms: u64,
        items: &[(&str, i64)],
    ) -> Result<Vec<Outcome>> {
        let mut inv = EXTEND.prepare_invoke();
        inv.key(p.keys.active())
            .arg(p.keys.task_prefix())
            .arg(lease_ms);
        for (id, token) in items {
            inv.arg(*id).arg(*token);
        }
        codes("extend", EXTEND_CODES, self.run_script(&inv).await?)
    }

    /// `release.lua`: hands running tasks `(id, token)` of `p` back to the ready set at once,
    /// without counting the attempt.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn release(&self, p: &Partition, items: &[(&str, i64)]) -> Result<Vec<Outcome>> {
        let mut inv = RELEASE.prepare_invoke();
        inv.key(p.keys.active())
            .key(p.keys.ready())
            .key(p.keys.drained())
            .key(p.keys.stats())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        for (id, token) in items {
            inv.arg(*id).arg(*token);
        }
        codes("release", RELEASE_CODES, self.run_script(&inv).await?)
    }

    /// `progress.lua`: records `percent` and `message` on task `id` of `p` if it is running
    /// under lease `token`: [`Outcome::Done`], or [`Outcome::StaleLease`] (nothing changed).
    /// In a queue with task events on ([`Store::events_on`]) the script also publishes the
    /// `progress` event.
    /// The caller checks the bounds (percent at most 100, message at most
    /// [`crate::task::MAX_PROGRESS_MESSAGE_BYTES`]).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn progress(
        &self,
        p: &Partition,
        id: &str,
        token: i64,
        percent: u8,
        message: &str,
    ) -> Result<Outcome> {
        let mut inv = PROGRESS.prepare_invoke();
        // The `progress` event, published by the script, in a queue with events on.
        let channel = if self.events_on(&p.queue) {
            self.keys.events_channel(&p.queue)
        } else {
            String::new()
        };
        inv.key(p.keys.task(id))
            .arg(token)
            .arg(percent)
            .arg(message)
            .arg(channel)
            .arg(id);
        code("progress", FENCED, &self.run_script(&inv).await?)
    }

    /// `release_claim.lua`: hands back the tasks that a claim tagged `tag` took but whose reply
    /// never arrived (they are `running` under that tag in their `worker` field); examines at most
    /// `limit` unexpired leases of `p`. Returns how many were handed back.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn release_claim(&self, p: &Partition, tag: &str, limit: u32) -> Result<u64> {
        let mut inv = RELEASE_CLAIM.prepare_invoke();
        inv.key(p.keys.active())
            .key(p.keys.ready())
            .key(p.keys.drained())
            .key(p.keys.stats())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(limit.max(1))
            .arg(tag);
        Ok(int(&self.run_script(&inv).await?)?.max(0) as u64)
    }
}

/// The tasks of a claim reply (`claim.lua`, `promote.lua`): 9 values each.
pub(super) fn claimed_tasks(rest: Vec<Value>) -> Result<Vec<Claimed>> {
    if !rest.len().is_multiple_of(9) {
        return Err(Error::Protocol(format!(
            "claim returned {} task values",
            rest.len()
        )));
    }
    let mut tasks = Vec::with_capacity(rest.len() / 9);
    let mut it = rest.into_iter();
    while let Some(id) = it.next() {
        let mut next = || {
            it.next()
                .ok_or_else(|| Error::Protocol("short claim reply".into()))
        };
        let token = int(&next()?)?;
        let attempt = int(&next()?)? as u32;
        let name = String::from_utf8_lossy(&bytes(next()?)?).into_owned();
        // `{ args, headers }` for a task with headers (see lease_task in _prelude.lua).
        let (args, headers) = match next()? {
            Value::Array(pair) if pair.len() == 2 => {
                let mut pair = pair.into_iter();
                let args = bytes(pair.next().unwrap_or(Value::Nil))?;
                (args, bytes(pair.next().unwrap_or(Value::Nil))?)
            }
            v => (bytes(v)?, Vec::new()),
        };
        let max_retries = int(&next()?)? as u32;
        let timeout_ms = int(&next()?)? as u64;
        let due_ms = int(&next()?)?;
        let lost = int(&next()?)? as u32;
        tasks.push(Claimed {
            id: String::from_utf8_lossy(&bytes(id)?).into_owned(),
            token,
            attempt,
            name,
            args,
            headers,
            max_retries,
            timeout_ms,
            due_ms,
            lost,
        });
    }
    Ok(tasks)
}
