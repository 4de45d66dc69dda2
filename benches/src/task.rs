//! The benchmark's task and what each run records.
//!
//! Arguments are `(u64, String)`: a sequence number and a 90-character string, about 100 bytes of
//! MessagePack (1 array byte, up to 9 for the number, 2 + 90 for the string). The sequence number
//! is how the bench counts every task exactly once (lost, duplicates).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use scheduler::{task, TaskCall, TaskContext, TaskError};

/// The queue every scenario uses (each run has a namespace of its own).
pub(crate) const QUEUE: &str = "bench";

/// Length of the string argument: with the sequence number, ~100 bytes of arguments.
pub(crate) const PAD_LEN: usize = 90;

/// The 90-character string argument.
pub(crate) fn pad() -> String {
    "x".repeat(PAD_LEN)
}

/// One run of the benchmark task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    /// The task's sequence number.
    pub(crate) seq: u64,
    /// Claimed-at minus due, both on the Redis clock, in ms (what `TaskContext` reports).
    pub(crate) late_ms: i64,
    /// Handler start (local clock plus the measured offset to the Redis clock) minus due, in µs.
    pub(crate) late_start_us: i64,
    /// The due time, unix ms on the Redis clock (a schedule's tick time).
    pub(crate) due_ms: i64,
    /// Handler end (local clock plus the offset to the Redis clock), unix µs; the start for
    /// `noop`, which does nothing.
    pub(crate) end_us: i64,
}

/// Every run of this process, shared with the handler through the worker's state.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Redis clock minus local clock, µs (0 when Redis runs on this host).
    pub(crate) offset_us: i64,
    runs: Mutex<Vec<Run>>,
    count: AtomicU64,
}

impl Recorder {
    /// A recorder for a process whose clock is `offset_us` behind Redis's.
    pub(crate) fn new(offset_us: i64) -> Self {
        Self {
            offset_us,
            ..Self::default()
        }
    }

    /// Runs so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes every run recorded so far.
    pub(crate) fn take(&self) -> Vec<Run> {
        std::mem::take(&mut *self.runs.lock().expect("recorder poisoned"))
    }

    fn record(&self, run: Run) {
        self.runs.lock().expect("recorder poisoned").push(run);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Local wall clock, µs since the epoch.
pub(crate) fn local_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The benchmark task: does nothing but record which task ran and how late it started.
#[task(queue = "bench", max_retries = 0, timeout = "60s")]
pub(crate) async fn noop(ctx: TaskContext, seq: u64, pad: String) -> Result<(), TaskError> {
    let start_us = local_us();
    debug_assert_eq!(pad.len(), PAD_LEN);
    let rec = ctx.state::<Arc<Recorder>>()?;
    rec.record(Run {
        seq,
        late_ms: ctx.claimed_at_ms() - ctx.due_ms(),
        late_start_us: start_us + rec.offset_us - ctx.due_ms() * 1000,
        due_ms: ctx.due_ms(),
        end_us: start_us + rec.offset_us,
    });
    Ok(())
}

/// The `limits` scenario's task: runs `ms` milliseconds, then records its run like `noop`
/// with its end time.
#[task(queue = "bench", max_retries = 0, timeout = "60s")]
pub(crate) async fn held(ctx: TaskContext, seq: u64, ms: u64) -> Result<(), TaskError> {
    let start_us = local_us();
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let rec = ctx.state::<Arc<Recorder>>()?;
    rec.record(Run {
        seq,
        late_ms: ctx.claimed_at_ms() - ctx.due_ms(),
        late_start_us: start_us + rec.offset_us - ctx.due_ms() * 1000,
        due_ms: ctx.due_ms(),
        end_us: local_us() + rec.offset_us,
    });
    Ok(())
}

/// A call of the benchmark task with sequence number `seq`.
pub(crate) fn call(seq: u64, pad: &str) -> TaskCall<noop> {
    noop::new(seq, pad.to_owned())
}
