//! `enqueue_unique.lua`: one task created under a unique-for window (throttle or debounce).

use std::sync::LazyLock;

use redis::{Script, Value};

use super::enqueue::{Due, NewTask};
use super::reply::{array, bytes, int, protocol};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static ENQUEUE_UNIQUE: LazyLock<Script> = script!("enqueue_unique");

/// What a second enqueue within an open window does (see `docs/unique.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UniqueMode {
    /// Creates nothing and returns the id of the task holding the window.
    Throttle,
    /// Replaces the pending task's arguments, due time and options and restarts the window; a
    /// task that started or finished is left alone and a new one is created.
    Debounce,
}

impl UniqueMode {
    /// The mode's name in the script's arguments.
    fn as_str(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::Debounce => "debounce",
        }
    }
}

/// What `enqueue_unique.lua` did, with the id of the task concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueReply {
    /// A new task with this id was created; it holds the window now.
    Created(String),
    /// A window is open (throttle), or the id existed already: nothing changed; this task holds it.
    Existing(String),
    /// Debounce: this still pending task got the new arguments and due time.
    Replaced(String),
    /// A value was out of range: nothing written.
    Invalid,
    /// The deadline is passed by the Redis clock, or before the due time: nothing written.
    DeadlinePassed,
}

impl Store {
    /// `enqueue_unique.lua`: creates `task` in partition `p` unless the window of the unique key
    /// `digest` is open; what an open window does depends on `mode`. `window_ms` >= 1. With
    /// `wait` = `Some((replicas, timeout_ms))`, as [`Store::enqueue_many_replicated`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotReplicated`] (see `wait`), or a Redis error.
    pub async fn enqueue_unique(
        &self,
        p: &Partition,
        digest: &str,
        mode: UniqueMode,
        window_ms: u64,
        task: &NewTask,
        wait: Option<(u32, u64)>,
    ) -> Result<UniqueReply> {
        let (delay, at) = match task.due {
            Due::Delay(ms) => (ms as i64, 0),
            Due::At(ms) => (-1, ms),
        };
        let mut inv = ENQUEUE_UNIQUE.prepare_invoke();
        inv.key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.drained())
            .key(p.keys.unique(digest))
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(mode.as_str())
            .arg(window_ms)
            .arg(&task.id)
            .arg(&task.name)
            .arg(&task.args[..])
            .arg(delay)
            .arg(at)
            .arg(task.max_retries)
            .arg(task.timeout_ms)
            .arg(task.priority)
            .arg(&task.headers[..]);
        let (after, at) = super::enqueue::deadline_args(task.expires);
        inv.arg(after).arg(at);
        let v = match wait {
            None => self.run_script(&inv).await?,
            Some((replicas, timeout_ms)) => self
                .run_pipeline_replicated(&[inv], replicas, timeout_ms)
                .await?
                .pop()
                .ok_or_else(|| protocol("enqueue_unique: no reply", &Value::Nil))?,
        };
        if let Value::ServerError(e) = v {
            return Err(redis::RedisError::from(e).into());
        }
        let a = array(v)?;
        let [code, id]: [Value; 2] = a
            .try_into()
            .map_err(|a| protocol("enqueue_unique: unexpected reply", &Value::Array(a)))?;
        let code = int(&code)?;
        let id = String::from_utf8(bytes(id)?)
            .map_err(|e| crate::error::Error::Protocol(format!("enqueue_unique: id {e}")))?;
        match code {
            1 => Ok(UniqueReply::Created(id)),
            0 => Ok(UniqueReply::Existing(id)),
            2 => Ok(UniqueReply::Replaced(id)),
            -2 => Ok(UniqueReply::Invalid),
            -3 => Ok(UniqueReply::DeadlinePassed),
            c => Err(protocol("enqueue_unique: unknown code", &Value::Int(c))),
        }
    }
}
