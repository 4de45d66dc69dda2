//! `enqueue.lua`: creating tasks, alone or in pipelined batches, optionally waiting for replicas.

use std::sync::LazyLock;

use redis::{Script, Value};

use super::reply::{codes, Outcome, ENQUEUE as CODES};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static ENQUEUE: LazyLock<Script> = script!("enqueue");

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
    /// Headers, encoded by [`crate::headers::encode`]; empty: none (nothing stored).
    pub headers: Vec<u8>,
    /// Its deadline: if it has not started by then, it ends `expired` and never runs
    /// ([`Due::Delay`]: that long after the Redis server's now at enqueue). `None`: no deadline.
    pub expires: Option<Due>,
}

/// A deadline as the enqueue scripts take it: (expire-after ms or -1, expire-at unix ms or 0);
/// (-1, 0) for none.
pub(super) fn deadline_args(expires: Option<Due>) -> (i64, i64) {
    match expires {
        Some(Due::Delay(ms)) => (ms as i64, 0),
        Some(Due::At(ms)) => (-1, ms.max(1)),
        None => (-1, 0),
    }
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
    /// [`crate::Error::NotReplicated`] when fewer replicas confirmed within the timeout (the tasks are
    /// on the master; calling again is safe), [`crate::Error::InvalidConfig`] on a Cluster, or a Redis
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
                // 9 values per task only when one of them has headers, 11 when one has a
                // deadline: a call with neither sends what it sent before those fields existed.
                let with_deadlines = tasks.iter().any(|t| t.expires.is_some());
                let with_headers = with_deadlines || tasks.iter().any(|t| !t.headers.is_empty());
                let mut inv = ENQUEUE.prepare_invoke();
                inv.key(p.keys.scheduled())
                    .key(p.keys.ready())
                    .key(p.keys.stats())
                    .key(p.keys.drained())
                    .arg(p.keys.task_prefix())
                    .arg(&p.channel)
                    .arg(p.shard)
                    .arg(match (with_headers, with_deadlines) {
                        (_, true) => 11,
                        (true, false) => 9,
                        (false, false) => 8,
                    });
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
                    if with_headers {
                        inv.arg(&t.headers[..]);
                    }
                    if with_deadlines {
                        let (after, at) = deadline_args(t.expires);
                        inv.arg(after).arg(at);
                    }
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
                codes("enqueue", CODES, v)
            })
            .collect())
    }
}
