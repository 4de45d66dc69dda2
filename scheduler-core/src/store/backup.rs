//! `export_page.lua` and `restore.lua`: the Redis side of logical backups ([`crate::backup`]).

use std::collections::HashMap;
use std::sync::LazyLock;

use redis::{Script, Value};

use super::reply::{codes, protocol, Outcome, RESTORE as CODES};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static EXPORT_PAGE: LazyLock<Script> = script!("export_page");
static RESTORE: LazyLock<Script> = script!("restore");

/// One member of a set page, with its record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedTask {
    /// Task id.
    pub id: String,
    /// Its score in the set, as Redis printed it (the next page's cursor).
    pub score: String,
    /// Every field of its record (`HGETALL`); empty when the member had no record.
    pub fields: HashMap<String, Vec<u8>>,
}

/// One page of [`Store::export_page`].
pub type SetPage = Vec<ExportedTask>;

/// A task to recreate with `restore.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTask {
    /// Task id.
    pub id: String,
    /// Handler name.
    pub name: String,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// `scheduled`, `ready` or `dead`.
    pub state: &'static str,
    /// When it is (or was last) due, unix ms.
    pub run_at_ms: i64,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Time limit of one run, ms.
    pub timeout_ms: u64,
    /// Priority 0..=9.
    pub priority: u8,
    /// Runs started so far.
    pub attempts: u32,
    /// Runs lost with their worker.
    pub lost: u32,
    /// The last error, if any.
    pub error: Option<String>,
    /// When it was first enqueued, unix ms.
    pub enqueued_at_ms: i64,
    /// When it died, unix ms (dead tasks only).
    pub finished_at_ms: Option<i64>,
    /// Headers, encoded ([`crate::headers::encode`]); empty: none.
    pub headers: Vec<u8>,
}

impl Store {
    /// `export_page.lua`: at most `limit` members of `set` (one of `p`'s sorted sets) after the
    /// cursor (score and id of the previous page's last member; `None` for the first page),
    /// each with its record, read atomically.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn export_page(
        &self,
        p: &Partition,
        set: &str,
        after: Option<(&str, &str)>,
        limit: u32,
    ) -> Result<SetPage> {
        let (score, id) = after.unwrap_or(("", ""));
        let mut inv = EXPORT_PAGE.prepare_invoke();
        inv.key(set)
            .arg(p.keys.task_prefix())
            .arg(score)
            .arg(id)
            .arg(limit.clamp(1, 1000));
        let v = self.run_script(&inv).await?;
        let Value::Array(items) = v else {
            return Err(protocol("export_page: expected an array", &v));
        };
        items
            .chunks_exact(3)
            .map(|c| {
                let (id, score, fields): (String, String, HashMap<String, Vec<u8>>) =
                    redis::from_redis_value(Value::Array(c.to_vec()))
                        .map_err(|e| crate::Error::Protocol(format!("export_page: {e}")))?;
                Ok(ExportedTask { id, score, fields })
            })
            .collect()
    }

    /// `restore.lua` for several partitions in one pipelined round trip (one per cluster slot);
    /// one reply per group: [`Outcome::Done`] restored, [`Outcome::Exists`] skipped,
    /// [`Outcome::Invalid`] refused. Safe to send again: a task restored once is skipped after.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn restore(
        &self,
        groups: &[(&Partition, &[RestoreTask])],
    ) -> Result<Vec<Vec<Outcome>>> {
        let invs: Vec<_> = groups
            .iter()
            .map(|(p, tasks)| {
                let mut inv = RESTORE.prepare_invoke();
                inv.key(p.keys.scheduled())
                    .key(p.keys.ready())
                    .key(p.keys.dead())
                    .key(p.keys.stats())
                    .key(p.keys.drained())
                    .arg(p.keys.task_prefix())
                    .arg(&p.channel)
                    .arg(p.shard);
                for t in tasks.iter() {
                    inv.arg(&t.id)
                        .arg(&t.name)
                        .arg(&t.args[..])
                        .arg(t.state)
                        .arg(t.run_at_ms)
                        .arg(t.max_retries)
                        .arg(t.timeout_ms)
                        .arg(t.priority)
                        .arg(t.attempts)
                        .arg(t.lost)
                        .arg(t.error.as_deref().unwrap_or(""))
                        .arg(t.enqueued_at_ms)
                        .arg(t.finished_at_ms.unwrap_or(0))
                        .arg(&t.headers[..]);
                }
                inv
            })
            .collect();
        self.run_pipeline(&invs)
            .await?
            .into_iter()
            .map(|v| codes("restore", CODES, v))
            .collect()
    }
}
