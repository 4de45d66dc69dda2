//! The acker: collects finished runs and writes their outcomes in batches: the acks of many
//! partitions in one pipelined round trip, and the failures and hand-backs of every partition
//! at the same time. Several batches may be in flight at once, so the round trip to Redis bounds
//! the latency of an outcome, not the rate at which outcomes are written.
//!
//! Acks may ride on a promote: a success of partition `p` whose next promote by this worker is
//! due within [`crate::WorkerConfig::ack_ride_window`] is held in [`Rides`] and written by that
//! promote's own script call (`promote.lua` acknowledges before it promotes), one Redis call
//! instead of two; a held ack whose promote did not come is written alone once the window is
//! over. A steady flow of precisely timed tasks is acknowledged so.
//!
//! Once Redis confirms that a failure buried its task, the acker starts the run's `on_dead`
//! middleware hooks, if any.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use scheduler_core::scripts::{AckItem, FailItem, Outcome};
use scheduler_core::store::retry_transient;
use scheduler_core::store::Partition;
use scheduler_core::trace::ack_span;
use scheduler_core::{EventKind, Store};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::messages::{AckMsg, Completion, Verdict};
use crate::shared::Counters;

/// What the acker uses.
pub(crate) struct AckerParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// Counts the outcomes written.
    pub(crate) counters: Arc<Counters>,
    /// [`crate::WorkerConfig::result_ttl`].
    pub(crate) result_ttl: Duration,
    /// [`crate::WorkerConfig::outcome_write_attempts`].
    pub(crate) outcome_write_attempts: u32,
    /// [`crate::WorkerConfig::release_attempts`].
    pub(crate) release_attempts: u32,
    /// Acks held for their partition's next promote.
    pub(crate) rides: Rides,
    /// Where the `on_dead` hooks of middleware run; shutdown waits for them.
    pub(crate) hooks: TaskTracker,
    /// Task events (`succeeded`, `retried`, `failed`, `dead`, `cancelled`, `expired`), for
    /// queues with events on: handed over once Redis confirmed the change.
    pub(crate) events: crate::events::Sink,
}

/// Acks held back to ride on their partition's next promote (see the module docs).
pub(crate) struct Rides {
    /// [`crate::WorkerConfig::ack_ride_window`]; zero: no ack is held.
    window: Duration,
    /// The origin of `next`.
    base: Instant,
    /// Per partition: when this worker promotes it next, in nanoseconds after `base`, while it
    /// holds the partition's lock; 0 when it does not (or does not know).
    next: Box<[AtomicU64]>,
    /// Per partition: the acks held.
    held: Box<[Mutex<Vec<Completion>>]>,
}

impl Rides {
    pub(crate) fn new(partitions: usize, window: Duration) -> Self {
        Self {
            window,
            base: Instant::now(),
            next: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            held: (0..partitions).map(|_| Mutex::default()).collect(),
        }
    }

    /// The promoter's next promote of `idx` (`None`: not ours, or none planned).
    pub(crate) fn set_next(&self, idx: usize, at: Option<Instant>) {
        let v = at.map_or(0, |at| {
            (at.saturating_duration_since(self.base).as_nanos() as u64).max(1)
        });
        self.next[idx].store(v, Ordering::Relaxed);
    }

    /// Whether an ack of `idx` finished at `now` waits for the next promote: there is one, due
    /// within the window (or overdue: it is about to run, or running, and the one after it, or
    /// the flush at the end of the window, takes the ack).
    fn rides(&self, idx: usize, now: Instant) -> bool {
        let v = self.next[idx].load(Ordering::Relaxed);
        if v == 0 || self.window.is_zero() {
            return false;
        }
        let at = self.base + Duration::from_nanos(v);
        at <= now + self.window
    }

    /// The acks held for `idx`, taken (by its promote, or by the flush after the window).
    pub(crate) fn take(&self, idx: usize) -> Vec<Completion> {
        std::mem::take(&mut *self.held[idx].lock().expect("rides poisoned"))
    }

    fn take_all(&self) -> Vec<Completion> {
        (0..self.held.len())
            .flat_map(|idx| self.take(idx))
            .collect()
    }
}

/// The stored form of a success's result: a unit result encodes as MessagePack nil; nothing is
/// stored for it, readers default to nil.
pub(crate) fn stored_result(r: &[u8]) -> &[u8] {
    if r == [0xc0] {
        &[]
    } else {
        r
    }
}

/// Counts the outcomes `outs` of the acks `items` of `p` (written by an ack or by a promote),
/// runs `attempts` (in the order of `items`); publishes their `succeeded` events.
pub(crate) fn record_acks(
    counters: &Counters,
    events: &crate::events::Sink,
    p: &Partition,
    items: &[AckItem<'_>],
    attempts: &[u32],
    outs: &[Outcome],
) {
    let evented = events.on(&p.queue);
    for (i, ((id, _, _), o)) in items.iter().zip(outs).enumerate() {
        if evented && *o == Outcome::Done {
            let attempt = attempts.get(i).copied().unwrap_or(0);
            events.emit(&p.queue, id, EventKind::Succeeded, attempt, "");
        }
        if *o == Outcome::StaleLease {
            Counters::add(&counters.stale, 1);
            crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
            tracing::warn!(queue = %p.queue, id, "ack rejected: lease lost, the task was handed to another worker");
        } else {
            Counters::add(&counters.succeeded, 1);
        }
    }
}

/// Most completions written in one round.
const MAX_BATCH: usize = 1000;

/// Most rounds in flight at once.
const MAX_WRITES: usize = 4;

/// Runs until the channel closes (every sender dropped).
pub(crate) async fn run(params: Arc<AckerParams>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
    let mut writes = JoinSet::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                AckMsg::Done(c) => batch.push(c),
                AckMsg::Flush(tx) => flushes.push(tx),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // While the most rounds are in flight, completions gather into the next, bigger batch.
        while writes.len() >= MAX_WRITES {
            let _ = writes.join_next().await;
        }
        if flushes.is_empty() {
            if !batch.is_empty() {
                writes.spawn(write(Arc::clone(&params), std::mem::take(&mut batch)));
            }
        } else {
            // Everything received before the flush is written before the answer, held acks
            // included (once the writes in flight, which may hold some, are done).
            if !batch.is_empty() {
                writes.spawn(write_now(Arc::clone(&params), std::mem::take(&mut batch)));
            }
            while writes.join_next().await.is_some() {}
            let held = params.rides.take_all();
            if !held.is_empty() {
                write_now(Arc::clone(&params), held).await;
            }
            for tx in flushes.drain(..) {
                let _ = tx.send(());
            }
        }
    }
    while writes.join_next().await.is_some() {}
    let held = params.rides.take_all();
    if !held.is_empty() {
        write_now(params, held).await;
    }
}

/// Writes the acks held for `idx` that no promote took within the window.
async fn flush_after_window(params: Arc<AckerParams>, idx: usize) {
    tokio::time::sleep(params.rides.window + Duration::from_millis(1)).await;
    let held = params.rides.take(idx);
    if !held.is_empty() {
        write_now(params, held).await;
    }
}

/// Writes a batch of completions; acks that can ride on a promote are held instead.
async fn write(params: Arc<AckerParams>, mut batch: Vec<Completion>) {
    if !params.rides.window.is_zero() {
        let now = Instant::now();
        let (held, rest): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|c| matches!(c.verdict, Verdict::Ack(_)) && params.rides.rides(c.idx, now));
        batch = rest;
        let mut held_in: Vec<usize> = Vec::new();
        for c in held {
            if !held_in.contains(&c.idx) {
                held_in.push(c.idx);
            }
            params.rides.held[c.idx]
                .lock()
                .expect("rides poisoned")
                .push(c);
        }
        for idx in held_in {
            tokio::spawn(flush_after_window(Arc::clone(&params), idx));
        }
        if batch.is_empty() {
            return;
        }
    }
    write_now(params, batch).await;
}

/// Writes a batch of completions now; then starts the `on_dead` hooks of the runs whose task
/// was buried.
pub(crate) async fn write_now(params: Arc<AckerParams>, mut batch: Vec<Completion>) {
    let buried = write_batch(&params, &batch).await;
    // Middleware (rare): the `on_dead` hooks of the runs whose task Redis just buried, each on
    // a task of its own, so that a slow hook holds up no outcome; shutdown waits for them.
    if !buried.is_empty() {
        for c in &mut batch {
            if !buried.iter().any(|(i, id)| *i == c.idx && *id == c.id) {
                continue;
            }
            let (Some(hook), Verdict::Retry(e, _) | Verdict::Dead(e)) =
                (c.dead_hook.take(), &c.verdict)
            else {
                continue;
            };
            params.hooks.spawn(hook.call(e.clone()));
        }
    }
}

/// Writes the outcomes of `batch`; returns the runs with `on_dead` hooks whose task was buried
/// (always empty without middleware).
async fn write_batch(params: &AckerParams, batch: &[Completion]) -> Vec<(usize, String)> {
    let ttl_ms = params.result_ttl.as_millis() as u64;
    // Whether a run of the batch has `on_dead` hooks (never without middleware).
    let mut hooked = false;
    let mut acks: HashMap<usize, Vec<AckItem<'_>>> = HashMap::new();
    // The runs' attempt numbers, in the order of `acks` (for their events).
    let mut ack_attempts: HashMap<usize, Vec<u32>> = HashMap::new();
    let mut fails: HashMap<usize, Vec<FailItem<'_>>> = HashMap::new();
    let mut releases: HashMap<usize, Vec<(&str, i64)>> = HashMap::new();
    let mut cancels: Vec<(usize, &str, i64, u32, &str)> = Vec::new();
    let mut parks: HashMap<usize, Vec<(&str, i64, i64, &str)>> = HashMap::new();
    for c in batch {
        hooked |= c.dead_hook.is_some();
        match &c.verdict {
            Verdict::Ack(r) => {
                acks.entry(c.idx)
                    .or_default()
                    .push((&c.id, c.token, stored_result(r)));
                ack_attempts.entry(c.idx).or_default().push(c.attempt);
            }
            Verdict::Retry(e, d) => fails.entry(c.idx).or_default().push((
                &c.id,
                c.token,
                e,
                Some(d.as_millis() as u64),
            )),
            Verdict::Dead(e) => fails
                .entry(c.idx)
                .or_default()
                .push((&c.id, c.token, e, None)),
            Verdict::Release => releases.entry(c.idx).or_default().push((&c.id, c.token)),
            Verdict::Cancel(how) => cancels.push((c.idx, &c.id, c.token, c.attempt, how)),
            Verdict::Park(until, label) => parks
                .entry(c.idx)
                .or_default()
                .push((&c.id, c.token, *until, label)),
        }
    }
    // Writes are retried through Redis restarts and failovers for up to about a minute; every
    // script here is fenced, so a repeated write is rejected rather than applied twice. If we
    // still fail, the lease runs out and the task runs again: at-least-once, never lost.
    let groups: Vec<_> = acks
        .iter()
        .map(|(idx, items)| (&params.partitions[*idx], items.clone()))
        .collect();
    let attempts: Vec<&[u32]> = acks
        .keys()
        .map(|idx| ack_attempts.get(idx).map_or(&[][..], Vec::as_slice))
        .collect();
    let ack_rounds = groups
        .chunks(64)
        .zip(attempts.chunks(64))
        .map(|(chunk, attempts)| {
            let n = chunk.iter().map(|(_, items)| items.len()).sum();
            let queue = chunk.first().map_or("", |(p, _)| p.queue.as_str());
            let span = ack_span("ack", queue, n);
            // Links to the runs whose successes this call writes (only when exported).
            crate::trace::link_runs(
                &span,
                batch
                    .iter()
                    .filter(|c| {
                        matches!(c.verdict, Verdict::Ack(_))
                            && chunk
                                .iter()
                                .any(|(p, _)| std::ptr::eq(*p, &params.partitions[c.idx]))
                    })
                    .map(|c| &c.run),
            );
            write_acks(params, chunk, attempts, ttl_ms).instrument(span)
        });
    let fail_rounds = fails.iter().map(|(idx, items)| {
        let span = ack_span("retry", &params.partitions[*idx].queue, items.len());
        crate::trace::link_runs(
            &span,
            batch
                .iter()
                .filter(|c| {
                    c.idx == *idx && matches!(c.verdict, Verdict::Retry(..) | Verdict::Dead(_))
                })
                .map(|c| &c.run),
        );
        write_fails(params, *idx, items).instrument(span)
    });
    let release_rounds = releases
        .iter()
        .map(|(idx, items)| write_releases(params, *idx, items));
    let cancel_rounds = cancels
        .iter()
        .map(|&(idx, id, token, attempt, how)| write_cancel(params, idx, id, token, attempt, how));
    let park_rounds = parks
        .iter()
        .map(|(idx, items)| write_parks(params, *idx, items));
    let (_, fail_outs, _, _, _) = futures::join!(
        join_all(ack_rounds),
        join_all(fail_rounds),
        join_all(release_rounds),
        join_all(cancel_rounds),
        join_all(park_rounds)
    );
    // Task events of the failures, in queues with events on.
    for ((idx, items), outs) in fails.iter().zip(&fail_outs) {
        let queue = &params.partitions[*idx].queue;
        if !params.events.on(queue) {
            continue;
        }
        let runs = batch.iter().filter(|c| {
            c.idx == *idx && matches!(c.verdict, Verdict::Retry(..) | Verdict::Dead(_))
        });
        for (((id, _, error, retry), o), c) in items.iter().zip(outs).zip(runs) {
            let kind = match o {
                Outcome::Dead | Outcome::Corrupt if retry.is_some() => EventKind::Dead,
                Outcome::Dead | Outcome::Corrupt => EventKind::Failed,
                Outcome::Cancelled => EventKind::Cancelled,
                Outcome::Expired => EventKind::Expired,
                Outcome::StaleLease => continue,
                _ => EventKind::Retried,
            };
            params.events.emit(queue, id, kind, c.attempt, error);
        }
    }
    let mut buried = Vec::new();
    if hooked {
        for ((idx, items), outs) in fails.iter().zip(fail_outs) {
            for ((id, _, _, _), o) in items.iter().zip(outs) {
                if matches!(o, Outcome::Dead | Outcome::Corrupt) {
                    buried.push((*idx, (*id).to_owned()));
                }
            }
        }
    }
    buried
}

/// Puts tasks a rate limit held back to wait in their partition (`limit_park.lua`, one call per
/// partition and batch). Should it fail, their leases run out and the reaper hands them back.
async fn write_parks(params: &AckerParams, idx: usize, items: &[(&str, i64, i64, &str)]) {
    let p = &params.partitions[idx];
    if let Err(e) = retry_transient(params.outcome_write_attempts, || {
        params.store.limit_park(p, items)
    })
    .await
    {
        tracing::warn!(queue = %p.queue, shard = p.shard, tasks = items.len(), error = %e, "could not put tasks held back by a limit back to wait; their leases will run out and they will be handed back");
    }
}

/// Ends a run whose cancellation was requested as `cancelled` (`cancel_run.lua`, one call per
/// task: cancellations are rare). Its record's TTL is the one the canceller recorded.
async fn write_cancel(
    params: &AckerParams,
    idx: usize,
    id: &str,
    token: i64,
    attempt: u32,
    how: &str,
) {
    let p = &params.partitions[idx];
    let ttl_ms = scheduler_core::defaults::CANCELLED_TTL.as_millis() as u64;
    match retry_transient(params.outcome_write_attempts, || {
        params.store.cancel_run(p, id, token, how, ttl_ms)
    })
    .await
    {
        Ok(Outcome::Done) => {
            Counters::add(&params.counters.cancelled, 1);
            params
                .events
                .emit(&p.queue, id, EventKind::Cancelled, attempt, how);
        }
        Ok(_) => {
            Counters::add(&params.counters.stale, 1);
            crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
            tracing::warn!(queue = %p.queue, id, "cancellation rejected: lease lost");
        }
        Err(e) => {
            tracing::error!(error = %e, queue = %p.queue, id, "could not end a cancelled run; its lease will expire and the reaper ends it cancelled")
        }
    }
}

/// Writes the acks of `chunk`, runs `attempts` (per partition, in the order of its items).
async fn write_acks(
    params: &AckerParams,
    chunk: &[(&scheduler_core::store::Partition, Vec<AckItem<'_>>)],
    attempts: &[&[u32]],
    ttl_ms: u64,
) {
    match retry_transient(params.outcome_write_attempts, || {
        params.store.ack_many(chunk, ttl_ms)
    })
    .await
    {
        Ok(replies) => {
            for (((p, items), outs), attempts) in chunk.iter().zip(replies).zip(attempts) {
                record_acks(&params.counters, &params.events, p, items, attempts, &outs);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write acks; their leases will expire and the tasks run again")
        }
    }
}

/// Writes the failures of partition `idx`; returns each one's outcome (none when the write
/// failed).
async fn write_fails(params: &AckerParams, idx: usize, items: &[FailItem<'_>]) -> Vec<Outcome> {
    let p = &params.partitions[idx];
    match retry_transient(params.outcome_write_attempts, || {
        params.store.retry(p, items)
    })
    .await
    {
        Ok(outs) => {
            for ((id, _, _, _), o) in items.iter().zip(&outs) {
                let o = *o;
                match o {
                    Outcome::Dead => {
                        Counters::add(&params.counters.dead, 1);
                        crate::metrics::count(crate::metrics::DEAD, &p.queue, 1);
                    }
                    Outcome::Corrupt => {
                        Counters::add(&params.counters.dead, 1);
                        crate::metrics::count(crate::metrics::DEAD, &p.queue, 1);
                        tracing::warn!(queue = %p.queue, id, "task record unreadable (edited by hand?): moved to the dead set with the reason");
                    }
                    Outcome::StaleLease => {
                        Counters::add(&params.counters.stale, 1);
                        crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
                        tracing::warn!(queue = %p.queue, id, "failure report rejected: lease lost");
                    }
                    Outcome::Cancelled => {
                        Counters::add(&params.counters.cancelled, 1);
                    }
                    Outcome::Expired => {
                        Counters::add(&params.counters.expired, 1);
                        crate::metrics::count(crate::metrics::EXPIRED, &p.queue, 1);
                    }
                    _ => Counters::add(&params.counters.retried, 1),
                }
            }
            outs
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write failures; their leases will expire and the tasks run again");
            Vec::new()
        }
    }
}

async fn write_releases(params: &AckerParams, idx: usize, items: &[(&str, i64)]) {
    let p = &params.partitions[idx];
    match retry_transient(params.release_attempts, || params.store.release(p, items)).await {
        Ok(outs) => {
            let n = outs.iter().filter(|o| **o == Outcome::Done).count() as u64;
            Counters::add(&params.counters.released, n);
            crate::metrics::count(crate::metrics::RELEASED, &p.queue, n);
            tracing::info!(queue = %p.queue, shard = p.shard, released = n, "handed prefetched tasks back");
        }
        Err(e) => {
            tracing::error!(error = %e, "could not hand prefetched tasks back; they return when their lease expires")
        }
    }
}
