//! What the store says about a task or a queue: [`TaskInfo`] (with its [`Progress`]),
//! [`TaskState`], [`QueueStats`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::id::TaskId;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskState {
    /// Waiting for its due time (also between retries).
    Scheduled,
    /// Due, waiting for a worker.
    Ready,
    /// A worker holds a lease on it and runs it.
    Running,
    /// Finished successfully; the result, if any, is kept until the result TTL.
    Succeeded,
    /// Failed for good (retries exhausted, a non-retryable error, unknown task name, undecodable
    /// arguments); it stays in the dead set with its last error.
    Dead,
    /// Withdrawn before it started.
    Cancelled,
    /// Not started by its deadline ([`crate::TaskRequest::expires_in`]): it never ran (or, when a
    /// retry would have started after the deadline, never ran again).
    Expired,
}

impl TaskState {
    /// Every state, in the order a task lives through them.
    pub const ALL: [TaskState; 7] = [
        TaskState::Scheduled,
        TaskState::Ready,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Dead,
        TaskState::Cancelled,
        TaskState::Expired,
    ];

    /// The name stored in the task hash's `state` field.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Scheduled => "scheduled",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Dead => "dead",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
        }
    }

    /// Whether the task will never change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Dead | TaskState::Cancelled | TaskState::Expired
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "scheduled" => TaskState::Scheduled,
            "ready" => TaskState::Ready,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "dead" => TaskState::Dead,
            "cancelled" => TaskState::Cancelled,
            "expired" => TaskState::Expired,
            other => return Err(format!("unknown task state {other:?}")),
        })
    }
}

/// A snapshot of one task record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task.
    pub id: TaskId,
    /// Handler name.
    pub name: String,
    /// Current state.
    pub state: TaskState,
    /// Runs started so far (a run lost with its worker counts).
    pub attempts: u32,
    /// Runs lost with their worker (expired leases); counted apart from handler failures, so
    /// the task may run `max_retries + 1 + lost` times in all.
    pub lost: u32,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Priority 0..=9.
    pub priority: u8,
    /// Time limit of one run, ms.
    pub timeout_ms: u64,
    /// When it is (or was last) due, unix ms.
    pub run_at_ms: i64,
    /// When it was enqueued, unix ms.
    pub enqueued_at_ms: i64,
    /// Its deadline, unix ms, if it has one ([`crate::TaskRequest::expires_in`]).
    pub expires_at_ms: Option<i64>,
    /// When it finished, unix ms, if it did.
    pub finished_at_ms: Option<i64>,
    /// The last error, if any run failed.
    pub last_error: Option<String>,
    /// The worker running it now (`running`), or the one that ran it (`succeeded`); `None` in
    /// the other states.
    pub worker: Option<String>,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// Result, MessagePack, once succeeded with a result.
    pub result: Option<Vec<u8>>,
    /// Headers set by the producer ([`crate::headers`]); empty when none (or unreadable: a
    /// record edited by hand).
    pub headers: crate::headers::Headers,
    /// The last progress a run reported ([`crate::TaskContext::progress`]); `None` when no run
    /// did.
    pub progress: Option<Progress>,
    /// Its last failed attempts (retried, buried, or lost with their worker), oldest first, at
    /// most 10: the record's `attempt_log` field, written by `retry.lua` and `reap.lua`. Empty
    /// when no attempt failed (or the field is unreadable: a hand edit). The attempt running or
    /// finished now is described by `attempts`, `worker`, `finished_at_ms` and `last_error`.
    pub attempt_log: Vec<FailedAttempt>,
}

/// One failed attempt of a task, from its record's `attempt_log` ([`TaskInfo::attempt_log`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct FailedAttempt {
    /// Which run it was (1 for the first; the record's `attempts` when it failed).
    pub attempt: u32,
    /// When the run started (unix ms, Redis clock); `None` when the record did not say.
    #[serde(default)]
    pub started_at: Option<i64>,
    /// When the failure was recorded (unix ms, Redis clock): the worker's report, or the
    /// reaper's finding of an expired lease.
    pub failed_at: i64,
    /// The worker that ran it (`<worker id>#<claim>`); empty when unknown.
    #[serde(default)]
    pub worker: String,
    /// The error, cut to its first 200 bytes.
    #[serde(default)]
    pub error: String,
}

impl FailedAttempt {
    /// The log in a record's `attempt_log` field; empty when it cannot be read. Invalid UTF-8
    /// (an error text cut inside a character) is replaced, not refused.
    pub fn parse_log(raw: &[u8]) -> Vec<Self> {
        serde_json::from_str(&String::from_utf8_lossy(raw)).unwrap_or_default()
    }
}

/// The last progress report of a task's run: what [`crate::TaskContext::progress`] recorded,
/// from the fields `progress`, `progress_msg`, `progress_at` and `progress_attempt` of its
/// record (docs/redis-layout.md).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Percent done, 0 to 100.
    pub percent: u8,
    /// The message; empty when the report had none.
    pub message: String,
    /// When it was recorded, unix ms on the Redis server's clock.
    pub at_ms: i64,
    /// The run that reported it (1 for the first): less than [`TaskInfo::attempts`] when the
    /// current run has not reported yet.
    pub attempt: u32,
}

impl Progress {
    /// The report in the fields of a task hash, removing them; `None` without a readable
    /// `progress` field.
    fn take(f: &mut HashMap<String, Vec<u8>>) -> Option<Self> {
        let num = |f: &mut HashMap<String, Vec<u8>>, k: &str| -> Option<i64> {
            std::str::from_utf8(&f.remove(k)?).ok()?.parse().ok()
        };
        let percent = num(f, "progress");
        let at_ms = num(f, "progress_at").unwrap_or(0);
        let attempt = num(f, "progress_attempt").unwrap_or(0);
        let message = take_blob(f, "progress_msg")
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .unwrap_or_default();
        Some(Self {
            percent: u8::try_from(percent?).ok()?.min(100),
            message,
            at_ms,
            attempt: u32::try_from(attempt).unwrap_or(0),
        })
    }
}

impl TaskInfo {
    /// Builds the snapshot from the fields of the task hash (`HGETALL`); `None` when the hash is
    /// empty or has no valid state.
    pub fn from_fields(id: TaskId, mut f: HashMap<String, Vec<u8>>) -> Option<Self> {
        let text = |f: &mut HashMap<String, Vec<u8>>, k: &str| {
            f.remove(k)
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let num = |f: &mut HashMap<String, Vec<u8>>, k: &str| -> Option<i64> {
            text(f, k).and_then(|s| s.parse().ok())
        };
        let state = text(&mut f, "state")?.parse().ok()?;
        Some(Self {
            id,
            name: text(&mut f, "name").unwrap_or_default(),
            state,
            attempts: num(&mut f, "attempts").unwrap_or(0) as u32,
            lost: num(&mut f, "lost").unwrap_or(0) as u32,
            max_retries: num(&mut f, "max_retries").unwrap_or(0) as u32,
            priority: num(&mut f, "priority").unwrap_or(0) as u8,
            timeout_ms: num(&mut f, "timeout_ms").unwrap_or(0) as u64,
            run_at_ms: num(&mut f, "run_at").unwrap_or(0),
            enqueued_at_ms: num(&mut f, "enqueued_at").unwrap_or(0),
            expires_at_ms: num(&mut f, "expires"),
            finished_at_ms: num(&mut f, "finished_at"),
            last_error: text(&mut f, "error"),
            worker: text(&mut f, "worker"),
            args: take_blob(&mut f, "args").unwrap_or_default(),
            result: take_blob(&mut f, "result"),
            headers: take_blob(&mut f, "headers")
                .and_then(|b| crate::headers::decode(&b).ok())
                .unwrap_or_default(),
            progress: Progress::take(&mut f),
            attempt_log: f
                .remove("attempt_log")
                .map(|raw| FailedAttempt::parse_log(&raw))
                .unwrap_or_default(),
        })
    }
}

/// Removes a binary value from the fields of a task hash and returns it whole.
///
/// The scripts store `args` and `result` in pieces of at most 64 bytes (`args`, `args:1`,
/// `args:2`, ...), so that the hash stays listpack-encoded (compact) in Redis; this joins them.
/// `None` when the field is absent.
pub fn take_blob(f: &mut HashMap<String, Vec<u8>>, field: &str) -> Option<Vec<u8>> {
    let mut v = f.remove(field)?;
    for n in 1.. {
        match f.remove(&format!("{field}:{n}")) {
            Some(piece) => v.extend_from_slice(&piece),
            None => break,
        }
    }
    Some(v)
}

/// Counts of one queue, summed over its shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Its shard count.
    pub shards: u16,
    /// Tasks waiting for their due time.
    pub scheduled: u64,
    /// Tasks due and waiting for a worker.
    pub ready: u64,
    /// Tasks running under a lease (the partition's `active` set).
    pub running: u64,
    /// Tasks in the dead set.
    pub dead: u64,
    /// Lifetime counters from the partitions' `stats` hashes (enqueued, promoted, succeeded,
    /// retried, dead, reaped, cancelled, expired).
    pub counters: HashMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::TaskState;

    /// The Lua scripts name states through the prelude's constants only, and those spell each
    /// state as [`TaskState::as_str`] does.
    #[test]
    fn lua_spells_states_as_rust_does() {
        let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/../lua");
        let prelude = std::fs::read_to_string(format!("{lua}/_prelude.lua")).unwrap();
        for s in TaskState::ALL {
            let line = format!("local {} = '{}'", s.as_str().to_uppercase(), s.as_str());
            assert!(prelude.contains(&line), "_prelude.lua lacks {line:?}");
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(s));
        }
        for entry in std::fs::read_dir(lua).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for s in TaskState::ALL {
                for pattern in [
                    format!("'state', '{}'", s.as_str()),
                    format!("== '{}'", s.as_str()),
                    format!("~= '{}'", s.as_str()),
                    format!("state = '{}'", s.as_str()),
                ] {
                    assert!(
                        !text.contains(&pattern),
                        "{}: {pattern:?}: use the prelude's {}",
                        path.display(),
                        s.as_str().to_uppercase()
                    );
                }
            }
        }
    }
}
