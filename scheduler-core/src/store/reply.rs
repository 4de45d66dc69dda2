//! Decoding script replies: the value shapes (integers, strings, arrays), and the reply-code
//! tables of every script, the one place a script's integer codes are read. Each table mirrors
//! the `Output:` section of its script's header in `lua/`; negative codes are refusals.

use redis::Value;

use crate::error::{Error, Result};

/// Reply codes of the scripts that take a batch (negative codes are refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done as asked (created, acknowledged, extended, handed back).
    Done,
    /// Enqueue only: a task with this id existed already; nothing changed.
    Exists,
    /// Retry only: the task went to the dead set.
    Dead,
    /// Retry and release: its cancellation had been requested while it ran (`Client::cancel`),
    /// so it ended `cancelled` instead of being retried or handed back. Extend: the lease was
    /// renewed, and the task's cancellation has been requested.
    Cancelled,
    /// Retry only: the task's record could not be read (`attempts`, `max_retries` or `lost` not a
    /// decimal integer, edited by hand): it went to the dead set with the reason and the error.
    Corrupt,
    /// Enqueue only: a value of this task was out of range (an empty id...); nothing was written
    /// for it, and the other tasks of the call were handled as usual.
    Invalid,
    /// Enqueue only: the task's deadline is passed already, or before its due time (it could
    /// never start); nothing was written for it.
    DeadlinePassed,
    /// Retry only: the retry would have started after the task's deadline, so the task ended
    /// `expired` instead.
    Expired,
    /// The task is no longer running under this lease token (the lease expired and was reaped, or
    /// another worker holds it now): nothing changed.
    StaleLease,
}

/// What cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReply {
    /// Withdrawn.
    Cancelled,
    /// Running: its cancellation was requested; the worker running it stops it.
    Running,
    /// Succeeded, dead or cancelled before.
    Finished,
    /// No such task.
    NotFound,
}

/// What delete did with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReply {
    /// Its record and set entry are gone.
    Deleted,
    /// Running: its cancellation was requested; the worker running it stops it.
    Running,
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

/// What `schedule_write.lua` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleWrite {
    /// Applied; this many tasks were created (ids that existed are not counted).
    Done(u64),
    /// The schedule's revision was not the one expected: another process wrote first.
    Stale,
    /// The plan reached Redis after its deadline (the caller was paused): nothing changed.
    TooLate,
    /// Overlap guard: the previous run is still queued or running, the tick is not reached yet.
    Busy,
    /// Overlap guard: the previous run is still queued or running and the tick is reached.
    BusyPastTick,
}

/// `schedule_write.lua`, refusals (an applied write replies an array).
pub(super) const SCHEDULE_WRITE: Codes<ScheduleWrite> = &[
    (-1, ScheduleWrite::Stale),
    (-3, ScheduleWrite::TooLate),
    (-4, ScheduleWrite::Busy),
    (-5, ScheduleWrite::BusyPastTick),
];

/// The reply codes of one script: each integer it may return and what it means.
pub(super) type Codes<T> = &'static [(i64, T)];

/// `enqueue.lua`, one code per task.
pub(super) const ENQUEUE: Codes<Outcome> = &[
    (1, Outcome::Done),
    (0, Outcome::Exists),
    (-2, Outcome::Invalid),
    (-3, Outcome::DeadlinePassed),
];

/// `restore.lua`, one code per task.
pub(super) const RESTORE: Codes<Outcome> = &[
    (1, Outcome::Done),
    (0, Outcome::Exists),
    (-2, Outcome::Invalid),
];

/// `retry.lua`, one code per task.
pub(super) const RETRY: Codes<Outcome> = &[
    (1, Outcome::Done),
    (2, Outcome::Dead),
    (3, Outcome::Corrupt),
    (4, Outcome::Cancelled),
    (5, Outcome::Expired),
    (-1, Outcome::StaleLease),
];

/// The fenced scripts `ack.lua` (one code per task), `cancel_run.lua` and `progress.lua` (one
/// code each).
pub(super) const FENCED: Codes<Outcome> = &[(1, Outcome::Done), (-1, Outcome::StaleLease)];

/// `extend.lua`, one code per task.
pub(super) const EXTEND: Codes<Outcome> = &[
    (1, Outcome::Done),
    (2, Outcome::Cancelled),
    (-1, Outcome::StaleLease),
];

/// `release.lua`, one code per task.
pub(super) const RELEASE: Codes<Outcome> = &[
    (1, Outcome::Done),
    (2, Outcome::Cancelled),
    (-1, Outcome::StaleLease),
];

/// `cancel.lua`, one code.
pub(super) const CANCEL: Codes<CancelReply> = &[
    (1, CancelReply::Cancelled),
    (2, CancelReply::Running),
    (3, CancelReply::Finished),
    (0, CancelReply::NotFound),
];

/// `delete.lua`.
pub(super) const DELETE: Codes<DeleteReply> = &[
    (1, DeleteReply::Deleted),
    (2, DeleteReply::Running),
    (0, DeleteReply::NotFound),
];

/// `requeue.lua`, one code per id.
pub(super) const REQUEUE: Codes<RequeueReply> = &[
    (1, RequeueReply::Requeued),
    (2, RequeueReply::NotDead),
    (0, RequeueReply::NotFound),
];

/// Decodes a reply of one code with `table`; `script` names it in the error.
pub(super) fn code<T: Copy>(script: &str, table: Codes<T>, v: &Value) -> Result<T> {
    let i = int(v)?;
    table
        .iter()
        .find(|(c, _)| *c == i)
        .map(|(_, t)| *t)
        .ok_or_else(|| protocol(&format!("{script}: unknown reply code"), v))
}

/// Decodes a reply of one code per item (an array) with `table`.
pub(super) fn codes<T: Copy>(script: &str, table: Codes<T>, v: Value) -> Result<Vec<T>> {
    array(v)?.iter().map(|x| code(script, table, x)).collect()
}

pub(super) fn protocol(what: &str, v: &Value) -> Error {
    Error::Protocol(format!("{what}: {v:?}"))
}

pub(super) fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| protocol("expected an integer", v)),
        _ => Err(protocol("expected an integer", v)),
    }
}

pub(super) fn bytes(v: Value) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(protocol("expected a string", &other)),
    }
}

pub(super) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(protocol("expected an array", &other)),
    }
}

pub(super) fn opt_time(i: i64) -> Option<i64> {
    (i >= 0).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table decodes each of its codes to its meaning, has no code twice, and refuses a
    /// code it does not list with a protocol error.
    #[test]
    fn every_code_table_decodes_its_codes_and_refuses_others() {
        fn check<T: Copy + PartialEq + std::fmt::Debug>(name: &str, table: Codes<T>) {
            for (c, t) in table {
                assert_eq!(
                    code(name, table, &Value::Int(*c)).unwrap(),
                    *t,
                    "{name} {c}"
                );
                assert_eq!(
                    table.iter().filter(|(d, _)| d == c).count(),
                    1,
                    "{name} {c}"
                );
            }
            assert!(matches!(
                code(name, table, &Value::Int(99)),
                Err(Error::Protocol(_))
            ));
        }
        check("enqueue", ENQUEUE);
        check("retry", RETRY);
        check("fenced", FENCED);
        check("release", RELEASE);
        check("extend", EXTEND);
        check("cancel", CANCEL);
        check("delete", DELETE);
        check("requeue", REQUEUE);
        check("schedule_write", SCHEDULE_WRITE);
        let arr = Value::Array(vec![Value::Int(1), Value::Int(-1)]);
        assert_eq!(
            codes("ack", FENCED, arr).unwrap(),
            [Outcome::Done, Outcome::StaleLease]
        );
    }
}
