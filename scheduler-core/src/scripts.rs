//! One typed wrapper per Lua script of `lua/`; nothing else calls a script.
//!
//! The scripts are compiled into the binary (`include_str!`), each prefixed with the parts of
//! `lua/_prelude.lua` (the server clock and shared helpers) it uses ([`with_prelude`]). Their
//! headers document keys, arguments and every reply; the wrappers below turn replies into types.

use std::sync::LazyLock;

use redis::{Script, Value};

use crate::error::{Error, Result};
use crate::store::{Partition, Store};

macro_rules! script {
    ($name:literal) => {
        LazyLock::new(|| {
            Script::new(&with_prelude(include_str!(concat!(
                "../../lua/",
                $name,
                ".lua"
            ))))
        })
    };
}

/// `lua/_prelude.lua`, whose definitions scripts share.
const PRELUDE: &str = include_str!("../../lua/_prelude.lua");

/// The source Redis runs for the script `body`: the definitions of `lua/_prelude.lua` that the
/// body uses (directly or through another definition), in the prelude's order, then the body.
///
/// Redis runs a script's whole text on every call, and each `local function` of the prelude is
/// a closure made anew each time: the full prelude cost every call about 23,000 instructions
/// (`valgrind --tool=callgrind` on redis-server, a script returning 1), a third of a claim's
/// per-call work, whether the script used those helpers or not.
///
/// The prelude is a sequence of blocks separated by blank lines; a block defines the name after
/// its first `local function` or `local` (comments before it belong to it). A block without a
/// definition (the file's header) is left out.
pub fn with_prelude(body: &str) -> String {
    let blocks: Vec<(&str, &str)> = PRELUDE
        .split("\n\n")
        .filter_map(|block| {
            let def = block.lines().find(|l| l.starts_with("local "))?;
            let rest = def
                .trim_start_matches("local ")
                .trim_start_matches("function ");
            let name = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()?;
            Some((name, block))
        })
        .collect();
    // Code without its comments: a helper named in a comment is not used.
    let code = |text: &str| {
        text.lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let uses = |text: &str, name: &str| {
        text.match_indices(name).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    // Walk backwards: a block may only use blocks defined before it.
    let mut keep = vec![false; blocks.len()];
    let mut needed = code(body);
    for (i, (name, block)) in blocks.iter().enumerate().rev() {
        if uses(&needed, name) {
            keep[i] = true;
            needed.push_str(&code(block));
        }
    }
    let mut out = String::new();
    for ((_, block), kept) in blocks.iter().zip(keep) {
        if kept {
            out.push_str(block);
            out.push_str("\n\n");
        }
    }
    out.push_str(body);
    out
}

static ENQUEUE: LazyLock<Script> = script!("enqueue");
static PROMOTE: LazyLock<Script> = script!("promote");
static CLAIM: LazyLock<Script> = script!("claim");
static ACK: LazyLock<Script> = script!("ack");
static RETRY: LazyLock<Script> = script!("retry");
static REAP: LazyLock<Script> = script!("reap");
static EXTEND: LazyLock<Script> = script!("extend");
static RELEASE: LazyLock<Script> = script!("release");
static RELEASE_CLAIM: LazyLock<Script> = script!("release_claim");
static CANCEL: LazyLock<Script> = script!("cancel");
static TRIM_DEAD: LazyLock<Script> = script!("trim_dead");
static REQUEUE: LazyLock<Script> = script!("requeue");
static LOCK_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/lock_renew.lua")));
static LOCK_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/lock_release.lua")));

/// Largest batch one script call takes: keeps each call around a few milliseconds at most.
pub const MAX_BATCH: u32 = 5000;

/// One acknowledgement: task id, lease token, result (MessagePack, empty for none).
pub type AckItem<'a> = (&'a str, i64, &'a [u8]);

/// One failure report: task id, lease token, error text, retry delay in ms (`None`: bury now).
pub type FailItem<'a> = (&'a str, i64, &'a str, Option<u64>);

/// When a new task becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// This many milliseconds after the Redis server's now (0: at once).
    Delay(u64),
    /// At this unix time in milliseconds (in the past: at once).
    At(i64),
}

/// A task to create, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    /// Task id, unique within its queue.
    pub id: String,
    /// Handler name.
    pub name: String,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// When it becomes due.
    pub due: Due,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Time limit of one run, in milliseconds.
    pub timeout_ms: u64,
    /// Priority 0..=9, higher first.
    pub priority: u8,
}

/// Reply codes of the scripts that take a batch (negative codes are refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked (created, acknowledged, extended, handed back).
    Done,
    /// Enqueue only: a task with this id existed already; nothing changed.
    Exists,
    /// Retry only: the task went to the dead set.
    Dead,
    /// Retry only: the task's record could not be read (`attempts`, `max_retries` or `lost` not a
    /// decimal integer, edited by hand): it went to the dead set with the reason and the error.
    Corrupt,
    /// Enqueue only: a value of this task was out of range (an empty id...); nothing was written
    /// for it, and the other tasks of the call were handled as usual.
    Invalid,
    /// The task is no longer running under this lease token (the lease expired and was reaped, or
    /// another worker holds it now): nothing changed.
    StaleLease,
}

/// What promote did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promoted {
    /// Tasks moved to the ready set.
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
    /// The tasks.
    pub tasks: Vec<Claimed>,
}

/// What cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReply {
    /// Withdrawn.
    Cancelled,
    /// Running: left alone.
    Running,
    /// Succeeded, dead or cancelled before.
    Finished,
    /// No such task.
    NotFound,
}

/// What requeue did with one dead task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueReply {
    /// Back in the ready set with its attempts reset to 0.
    Requeued,
    /// Not dead (scheduled, ready, running, succeeded or cancelled): left alone.
    NotDead,
    /// No such task (a leftover id is dropped from the dead set).
    NotFound,
}

fn protocol(what: &str, v: &Value) -> Error {
    Error::Protocol(format!("{what}: {v:?}"))
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol("expected an integer", v)),
        _ => Err(protocol("expected an integer", v)),
    }
}

fn bytes(v: Value) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(protocol("expected a string", &other)),
    }
}

fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(protocol("expected an array", &other)),
    }
}

fn opt_time(i: i64) -> Option<i64> {
    (i >= 0).then_some(i)
}

fn outcomes(v: Value, map: fn(i64) -> Option<Outcome>) -> Result<Vec<Outcome>> {
    array(v)?
        .iter()
        .map(|x| int(x).and_then(|i| map(i).ok_or_else(|| protocol("unknown reply code", x))))
        .collect()
}

impl Store {
    /// `enqueue.lua`: creates `tasks` in partition `p`, idempotently (existing ids untouched).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn enqueue(&self, p: &Partition, tasks: &[NewTask]) -> Result<Vec<Outcome>> {
        let mut replies = self.enqueue_many(&[(p, tasks)]).await?;
        Ok(replies.pop().unwrap_or_default())
    }

    /// `enqueue.lua` for several partitions in one pipelined round trip; one reply per group.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn enqueue_many(
        &self,
        groups: &[(&Partition, &[NewTask])],
    ) -> Result<Vec<Vec<Outcome>>> {
        self.enqueue_many_replicated(groups, None).await
    }

    /// As [`Store::enqueue_many`]; with `wait` = `Some((replicas, timeout_ms))` it succeeds only
    /// once that many replicas confirmed the writes (`WAIT`), so that a failover cannot lose the
    /// tasks. Single node and Sentinel only.
    ///
    /// # Errors
    ///
    /// [`Error::NotReplicated`] when fewer replicas confirmed within the timeout (the tasks are
    /// on the master; calling again is safe), [`Error::InvalidConfig`] on a Cluster, or a Redis
    /// error.
    pub async fn enqueue_many_replicated(
        &self,
        groups: &[(&Partition, &[NewTask])],
        wait: Option<(u32, u64)>,
    ) -> Result<Vec<Vec<Outcome>>> {
        self.enqueue_each(groups, wait).await?.into_iter().collect()
    }

    /// As [`Store::enqueue_many_replicated`], with one result per group: a group that Redis
    /// refused (out of memory...) has its error in its place while the other groups keep their
    /// outcomes. The outer error is for the whole round trip (connection lost, replicas).
    ///
    /// # Errors
    ///
    /// As [`Store::enqueue_many_replicated`], for the pipeline as a whole.
    pub async fn enqueue_each(
        &self,
        groups: &[(&Partition, &[NewTask])],
        wait: Option<(u32, u64)>,
    ) -> Result<Vec<Result<Vec<Outcome>>>> {
        let invs: Vec<_> = groups
            .iter()
            .map(|(p, tasks)| {
                let mut inv = ENQUEUE.prepare_invoke();
                inv.key(p.keys.scheduled())
                    .key(p.keys.ready())
                    .key(p.keys.stats())
                    .key(p.keys.drained())
                    .arg(p.keys.task_prefix())
                    .arg(&p.channel)
                    .arg(p.shard);
                for t in tasks.iter() {
                    let (delay, at) = match t.due {
                        Due::Delay(ms) => (ms as i64, 0),
                        Due::At(ms) => (-1, ms),
                    };
                    inv.arg(&t.id)
                        .arg(&t.name)
                        .arg(&t.args[..])
                        .arg(delay)
                        .arg(at)
                        .arg(t.max_retries)
                        .arg(t.timeout_ms)
                        .arg(t.priority);
                }
                inv
            })
            .collect();
        let replies = match wait {
            None => self.run_pipeline_each(&invs, true).await?,
            Some((replicas, timeout_ms)) => {
                self.run_pipeline_replicated(&invs, replicas, timeout_ms)
                    .await?
            }
        };
        Ok(replies
            .into_iter()
            .map(|v| {
                if let Value::ServerError(e) = v {
                    return Err(redis::RedisError::from(e).into());
                }
                outcomes(v, |i| match i {
                    1 => Some(Outcome::Done),
                    0 => Some(Outcome::Exists),
                    -2 => Some(Outcome::Invalid),
                    _ => None,
                })
            })
            .collect())
    }

    /// `promote.lua`: moves at most `batch` due tasks of `p` to its ready set.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn promote(&self, p: &Partition, batch: u32) -> Result<Promoted> {
        let mut inv = PROMOTE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.dead())
            .key(p.keys.drained())
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(&p.channel)
            .arg(p.shard);
        let v = array(self.run_script(&inv).await?)?;
        if v.len() != 5 {
            return Err(Error::Protocol(format!("promote returned {v:?}")));
        }
        Ok(Promoted {
            moved: int(&v[0])? as u64,
            next_due_ms: opt_time(int(&v[1])?),
            server_now_ms: int(&v[2])?,
            server_now_us: int(&v[3])?,
            corrupt: int(&v[4])? as u64,
        })
    }

    /// `claim.lua`: takes at most `batch` ready tasks of `p` into leases of `lease_ms`.
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
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(lease_ms)
            .arg(worker);
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
        let rest: Vec<Value> = it.collect();
        if !rest.len().is_multiple_of(9) {
            return Err(Error::Protocol(format!(
                "claim returned {} values",
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
            let args = bytes(next()?)?;
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
                max_retries,
                timeout_ms,
                due_ms,
                lost,
            });
        }
        Ok(Claim {
            server_now_ms,
            popped,
            corrupt,
            tasks,
        })
    }

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
                    .arg(p.keys.task_prefix())
                    .arg(result_ttl_ms);
                for (id, token, result) in items {
                    inv.arg(*id).arg(*token).arg(*result);
                }
                inv
            })
            .collect();
        self.run_pipeline(&invs)
            .await?
            .into_iter()
            .map(|v| outcomes(v, fenced))
            .collect()
    }

    /// `retry.lua`: after failed runs, schedules each `(id, token, error, delay)` again after
    /// `delay` ms, or buries it (delay `None`, or no retries left).
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
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        for (id, token, error, delay) in items {
            inv.arg(*id)
                .arg(*token)
                .arg(*error)
                .arg(delay.map_or(-1, |d| d as i64));
        }
        outcomes(self.run_script(&inv).await?, |i| match i {
            1 => Some(Outcome::Done),
            2 => Some(Outcome::Dead),
            3 => Some(Outcome::Corrupt),
            -1 => Some(Outcome::StaleLease),
            _ => None,
        })
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
            .arg(p.keys.task_prefix())
            .arg(batch.clamp(1, MAX_BATCH))
            .arg(&p.channel)
            .arg(p.shard)
            .arg(max_lost);
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
        outcomes(self.run_script(&inv).await?, fenced)
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
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        for (id, token) in items {
            inv.arg(*id).arg(*token);
        }
        outcomes(self.run_script(&inv).await?, fenced)
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
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(limit.max(1))
            .arg(tag);
        Ok(int(&self.run_script(&inv).await?)?.max(0) as u64)
    }

    /// `cancel.lua`: withdraws task `id` of `p` unless it started; its record then expires after
    /// `ttl_ms` (0: deleted at once).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn cancel(&self, p: &Partition, id: &str, ttl_ms: u64) -> Result<CancelReply> {
        let mut inv = CANCEL.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .arg(p.keys.task_prefix())
            .arg(ttl_ms)
            .arg(id);
        let v = self.run_script(&inv).await?;
        match int(&v)? {
            1 => Ok(CancelReply::Cancelled),
            2 => Ok(CancelReply::Running),
            3 => Ok(CancelReply::Finished),
            0 => Ok(CancelReply::NotFound),
            _ => Err(protocol("cancel", &v)),
        }
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
        array(v)?
            .iter()
            .map(|x| match int(x)? {
                1 => Ok(RequeueReply::Requeued),
                2 => Ok(RequeueReply::NotDead),
                0 => Ok(RequeueReply::NotFound),
                _ => Err(protocol("requeue", x)),
            })
            .collect()
    }

    /// Takes the promoter lock of `p` with `token` for `ttl_ms` (`SET NX PX`); true if we got it.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_acquire(&self, p: &Partition, token: &str, ttl_ms: u64) -> Result<bool> {
        let mut conn = self.conn();
        let v: Option<String> = redis::cmd("SET")
            .arg(p.keys.lock())
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await?;
        Ok(v.is_some())
    }

    /// Takes the promoter lock of `p` with `token` for `ttl_ms` whoever holds it (`SET PX GET`),
    /// returning the previous holder's token. For a promoter that found the partition's due work
    /// untouched past its holder's due time: the holder is stalled, dead or cut off, and a lock
    /// only avoids wasted work, so taking it over is always safe.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_take_over(
        &self,
        p: &Partition,
        token: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>> {
        let mut conn = self.conn();
        let v: Option<String> = redis::cmd("SET")
            .arg(p.keys.lock())
            .arg(token)
            .arg("PX")
            .arg(ttl_ms)
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        Ok(v)
    }

    /// `lock_renew.lua`: extends our promoter lock of `p`; false if we no longer hold it.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_renew(&self, p: &Partition, token: &str, ttl_ms: u64) -> Result<bool> {
        let mut inv = LOCK_RENEW.prepare_invoke();
        inv.key(p.keys.lock()).arg(token).arg(ttl_ms);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }

    /// `lock_release.lua`: deletes our promoter lock of `p` (compare-and-delete).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn lock_release(&self, p: &Partition, token: &str) -> Result<bool> {
        let mut inv = LOCK_RELEASE.prepare_invoke();
        inv.key(p.keys.lock()).arg(token);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }
}

fn fenced(i: i64) -> Option<Outcome> {
    match i {
        1 => Some(Outcome::Done),
        -1 => Some(Outcome::StaleLease),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::with_prelude;

    #[test]
    fn a_script_gets_the_prelude_definitions_it_uses_and_nothing_else() {
        let src = with_prelude("-- uses put_blob? no: only a comment\nreturn now_ms()\n");
        assert!(src.contains("local function now_ms()"));
        // now_ms calls now_us, defined before it.
        assert!(src.find("local function now_us()") < src.find("local function now_ms()"));
        assert!(!src.contains("local function put_blob("));
        assert!(!src.contains("local function get_blob("));
        assert!(src.ends_with("return now_ms()\n"));
    }

    #[test]
    fn a_helper_brings_what_it_calls() {
        // get_blob reads PIECE; put_blob is not needed.
        let src = with_prelude("return get_blob(KEYS[1], 'args', false, false)\n");
        assert!(src.contains("local PIECE = 64"));
        assert!(src.contains("local function get_blob("));
        assert!(!src.contains("local function put_blob("));
    }

    #[test]
    fn every_script_keeps_every_helper_it_calls() {
        // A name used but left out would be a nil global at run time; the integration tests run
        // every script, this checks the assembly alone against the prelude's own names.
        for body in [
            include_str!("../../lua/enqueue.lua"),
            include_str!("../../lua/claim.lua"),
            include_str!("../../lua/reap.lua"),
        ] {
            let src = with_prelude(body);
            for name in ["now_ms", "int_of", "zadd_all"] {
                if body.contains(&format!("{name}(")) {
                    assert!(src.contains(&format!("local function {name}(")), "{name}");
                }
            }
        }
    }
}
