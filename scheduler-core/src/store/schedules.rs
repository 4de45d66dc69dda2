//! `schedule_write.lua`: every change of a periodic schedule, with the tasks of its ticks, as one
//! compare-and-set on the schedule's revision.

use std::sync::LazyLock;

use redis::{Script, Value};

pub use super::reply::ScheduleWrite;
use super::reply::{array, code, int, protocol, SCHEDULE_WRITE as CODES};
use super::script::script;
use super::{Partition, Store};
use crate::error::Result;

static SCHEDULE_WRITE: LazyLock<Script> = script!("schedule_write");

/// One task a schedule write creates (a tick's run), already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTask {
    /// Task id (the tick id, see `docs/schedules.md`).
    pub id: String,
    /// Handler name.
    pub name: String,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// Due time, unix ms (in the past: ready at once).
    pub due_ms: i64,
    /// Retries allowed after the first run.
    pub max_retries: u32,
    /// Time limit of one run, ms.
    pub timeout_ms: u64,
    /// Priority 0..=9.
    pub priority: u8,
}

/// The inputs of one `schedule_write.lua` call.
#[derive(Debug, Clone, Default)]
pub struct ScheduleWriteArgs {
    /// The revision the caller read (0: the record must not exist).
    pub expected_rev: i64,
    /// Server unix ms after which the plan is stale (0: none).
    pub deadline_ms: i64,
    /// Delete the record instead of writing it.
    pub delete: bool,
    /// Overlap guard: the tick time of the task to create.
    pub guard_tick_ms: Option<i64>,
    /// Ticks skipped by this write.
    pub skipped: u64,
    /// Fields to set on the record.
    pub fields: Vec<(String, Vec<u8>)>,
    /// Tasks to create.
    pub tasks: Vec<ScheduleTask>,
}

impl Store {
    /// `schedule_write.lua`: applies `w` to schedule `name` of partition `p`, if its revision is
    /// still `w.expected_rev`.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn schedule_write(
        &self,
        p: &Partition,
        name: &str,
        w: &ScheduleWriteArgs,
    ) -> Result<ScheduleWrite> {
        let mut inv = SCHEDULE_WRITE.prepare_invoke();
        inv.key(p.keys.schedule(name))
            .key(p.keys.scheduled())
            .key(p.keys.ready())
            .key(p.keys.stats())
            .key(p.keys.drained())
            .arg(p.keys.task_prefix())
            .arg(&p.channel)
            .arg(p.shard)
            .arg(w.expected_rev)
            .arg(w.deadline_ms)
            .arg(if w.delete { "del" } else { "set" })
            .arg(w.guard_tick_ms.unwrap_or(-1))
            .arg(w.skipped)
            // The ticks' `enqueued` events, published by the script, in a queue with events on.
            .arg(if self.events_on(&p.queue) {
                self.keys.events_channel(&p.queue)
            } else {
                String::new()
            })
            .arg(w.fields.len());
        for (f, v) in &w.fields {
            inv.arg(f).arg(&v[..]);
        }
        for t in &w.tasks {
            inv.arg(&t.id)
                .arg(&t.name)
                .arg(&t.args[..])
                .arg(t.due_ms)
                .arg(t.max_retries)
                .arg(t.timeout_ms)
                .arg(t.priority);
        }
        let v = self.run_script(&inv).await?;
        if let Value::Array(_) = v {
            let a = array(v)?;
            return match a.as_slice() {
                [_, created] => Ok(ScheduleWrite::Done(int(created)? as u64)),
                _ => Err(protocol(
                    "schedule_write: unexpected reply",
                    &Value::Array(a),
                )),
            };
        }
        code("schedule_write", CODES, &v)
    }
}
