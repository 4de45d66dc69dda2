//! Flow-control limits ([`crate::limits`], `docs/flow-control.md`): the table in `<ns>:limits`,
//! and the scripts of a budget (`limit_acquire.lua`, `limit_release.lua`, `limit_extend.lua`,
//! `limit_wait.lua`) and of a partition (`limit_park.lua`, `limit_wake.lua`).

use std::sync::LazyLock;

use redis::{Script, Value};

use super::reply::{array, bytes, codes, int, Outcome, FENCED};
use super::script::script;
use super::{Partition, Store};
use crate::error::{Error, Result};
use crate::limits::{Budget, Limit, LimitScope, LimitTable};

static LIMIT_ACQUIRE: LazyLock<Script> = script!("limit_acquire");
static LIMIT_RELEASE: LazyLock<Script> = script!("limit_release");
static LIMIT_EXTEND: LazyLock<Script> = script!("limit_extend");
static LIMIT_WAIT: LazyLock<Script> = script!("limit_wait");
static LIMIT_PARK: LazyLock<Script> = script!("limit_park");
static LIMIT_WAKE: LazyLock<Script> = script!("limit_wake");

/// What `limit_acquire.lua` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// The start was taken, at this server time (unix ms).
    Granted(i64),
    /// No room: the task should wait until this server time (unix ms).
    Denied(i64),
}

/// A holder of a budget: one run of one claim, `<queue>\n<shard>\n<id>\n<token>`.
pub fn holder(p: &Partition, id: &str, token: i64) -> String {
    format!("{}\n{}\n{id}\n{token}", p.queue, p.shard)
}

/// A waiter of a budget: a task, `<queue>\n<shard>\n<id>`.
pub fn waiter(p: &Partition, id: &str) -> String {
    format!("{}\n{}\n{id}", p.queue, p.shard)
}

impl Store {
    /// The limits in force (`HGETALL <ns>:limits`), and the fields that could not be read (a
    /// hand edit), which limit nothing.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limits(&self) -> Result<(LimitTable, Vec<String>)> {
        let mut conn = self.conn();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.keys().limits())
            .query_async(&mut conn)
            .await?;
        let mut table = LimitTable::new();
        let mut unreadable = Vec::new();
        for (field, value) in all {
            match (LimitScope::from_field(&field), Limit::decode(&value)) {
                (Some(scope), Ok(limit)) => {
                    table.insert(scope, limit);
                }
                _ => unreadable.push(format!("{field} = {value:?}")),
            }
        }
        Ok((table, unreadable))
    }

    /// Writes `limit` for `scope` (replacing what was there), then publishes `limits` on the
    /// wake-up channel of every registered queue, so that running workers read the table again
    /// at once. Returns whether the scope had no limit before.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn set_limit(&self, scope: &LimitScope, limit: Limit) -> Result<bool> {
        let mut conn = self.conn();
        let new: i64 = redis::cmd("HSET")
            .arg(self.keys().limits())
            .arg(scope.field())
            .arg(limit.encode())
            .query_async(&mut conn)
            .await?;
        self.announce_limits().await?;
        Ok(new == 1)
    }

    /// Removes the limit of `scope`; `false` when it had none. Tasks it held back start when
    /// their wait ends (at most the wait it was told), then unlimited.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn remove_limit(&self, scope: &LimitScope) -> Result<bool> {
        let mut conn = self.conn();
        let n: i64 = redis::cmd("HDEL")
            .arg(self.keys().limits())
            .arg(scope.field())
            .query_async(&mut conn)
            .await?;
        self.announce_limits().await?;
        Ok(n == 1)
    }

    /// `PUBLISH <ns>:wake:<queue> limits` for every registered queue.
    async fn announce_limits(&self) -> Result<()> {
        let mut conn = self.conn();
        let queues: Vec<String> = redis::cmd("HKEYS")
            .arg(self.keys().queues())
            .query_async(&mut conn)
            .await?;
        for q in queues {
            let _: i64 = redis::cmd("PUBLISH")
                .arg(self.keys().wake_channel(&q))
                .arg("limits")
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// `limit_acquire.lua`: takes a start from `budget` for each task of `tasks`, given as
    /// ([`holder`], [`waiter`]), in order, in one call; the answer for each, in the same order.
    /// `lease_ms`: how long a concurrency slot holds without [`Store::limit_extend`];
    /// `longest_wait_ms`: the wake-up of last resort of a task denied a concurrency slot.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_acquire(
        &self,
        budget: &Budget,
        lease_ms: u64,
        longest_wait_ms: u64,
        tasks: &[(String, String)],
    ) -> Result<Vec<Acquired>> {
        let [run, log, wait, next] = self.keys().limit_budget(&budget.digest);
        let (rate, per) = budget
            .limit
            .max_rate()
            .map_or((0, 0), |(n, per)| (n, per.as_millis() as u64));
        let mut inv = LIMIT_ACQUIRE.prepare_invoke();
        inv.key(run)
            .key(log)
            .key(wait)
            .key(next)
            .arg(budget.limit.max_concurrency().unwrap_or(0))
            .arg(rate)
            .arg(per)
            .arg(lease_ms)
            .arg(longest_wait_ms);
        for (holder, waiter) in tasks {
            inv.arg(holder).arg(waiter);
        }
        let reply = array(self.run_script(&inv).await?)?;
        if reply.len() != 2 * tasks.len() {
            return Err(Error::Protocol(format!(
                "limit_acquire returned {} values for {} tasks",
                reply.len(),
                tasks.len()
            )));
        }
        reply
            .chunks(2)
            .map(|pair| {
                let t = int(&pair[1])?;
                Ok(if int(&pair[0])? == 1 {
                    Acquired::Granted(t)
                } else {
                    Acquired::Denied(t)
                })
            })
            .collect()
    }

    /// `limit_release.lua`: gives back the slot of `holder` in `budget` (and, with `unlog`, its
    /// start in the rate window: the run never started); `holder` empty releases nothing. Returns
    /// the waiter handed a freed concurrency slot, as (queue, shard, id), if any.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_release(
        &self,
        budget: &Budget,
        holder: &str,
        unlog: bool,
    ) -> Result<Option<(String, u16, String)>> {
        let [run, log, wait, _] = self.keys().limit_budget(&budget.digest);
        let mut inv = LIMIT_RELEASE.prepare_invoke();
        inv.key(run)
            .key(log)
            .key(wait)
            .arg(holder)
            .arg(if unlog { "1" } else { "0" })
            .arg(budget.limit.max_concurrency().unwrap_or(0));
        match self.run_script(&inv).await? {
            Value::Nil => Ok(None),
            v => {
                let w = String::from_utf8_lossy(&bytes(v)?).into_owned();
                let mut parts = w.splitn(3, '\n');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(q), Some(s), Some(id)) => {
                        Ok(s.parse().ok().map(|s| (q.to_owned(), s, id.to_owned())))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// `limit_extend.lua`: the concurrency slots `holders` of the budget `digest` hold for
    /// `lease_ms` more; returns how many were still held.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_extend(
        &self,
        digest: &str,
        lease_ms: u64,
        holders: &[String],
    ) -> Result<u64> {
        let [run, ..] = self.keys().limit_budget(digest);
        let mut inv = LIMIT_EXTEND.prepare_invoke();
        inv.key(run).arg(lease_ms);
        for h in holders {
            inv.arg(h);
        }
        Ok(int(&self.run_script(&inv).await?)?.max(0) as u64)
    }

    /// `limit_wait.lua`: `waiter` joins the waiters of `budget` (concurrency limit `conc`),
    /// unless a slot is free: then `true`, and the caller makes the task due at once.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_wait(&self, budget: &Budget, conc: u32, waiter: &str) -> Result<bool> {
        let [run, _, wait, _] = self.keys().limit_budget(&budget.digest);
        let mut inv = LIMIT_WAIT.prepare_invoke();
        inv.key(run).key(wait).arg(conc).arg(waiter);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }

    /// `limit_park.lua`: tasks of `p` given as (id, lease token, due time, limit label), each
    /// running under its token, wait again in the scheduled set until their due time (unix ms,
    /// Redis clock), their attempt not counted; the label (the limit) is recorded as `limited`.
    /// One [`Outcome::Done`] or [`Outcome::StaleLease`] (nothing changed) per task.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_park(
        &self,
        p: &Partition,
        items: &[(&str, i64, i64, &str)],
    ) -> Result<Vec<Outcome>> {
        let mut inv = LIMIT_PARK.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.active())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard);
        for (id, token, due, label) in items {
            inv.arg(*id).arg(*token).arg(*due).arg(*label);
        }
        codes("limit_park", FENCED, self.run_script(&inv).await?)
    }

    /// `limit_wake.lua`: task `id` of `p`, parked by a limit, is due now; `false` when it was
    /// not waiting any more (cancelled, deleted, or started meanwhile).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_wake(&self, p: &Partition, id: &str) -> Result<bool> {
        let mut inv = LIMIT_WAKE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .arg(p.keys.task_prefix())
            .arg(id)
            .arg(&p.channel)
            .arg(p.shard);
        Ok(int(&self.run_script(&inv).await?)? == 1)
    }
}
