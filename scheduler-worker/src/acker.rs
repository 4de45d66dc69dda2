//! The acker: collects finished runs and writes their outcomes in batches: the acks of many
//! partitions in one pipelined round trip, and the failures and hand-backs of every partition
//! at the same time. Several batches may be in flight at once, so the round trip to Redis bounds
//! the latency of an outcome, not the rate at which outcomes are written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use scheduler_core::scripts::{AckItem, FailItem, Outcome};
use scheduler_core::store::retry_transient;
use scheduler_core::store::Partition;
use scheduler_core::trace::ack_span;
use scheduler_core::Store;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
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
        if !batch.is_empty() {
            writes.spawn(write(Arc::clone(&params), std::mem::take(&mut batch)));
        }
        if !flushes.is_empty() {
            while writes.join_next().await.is_some() {}
            for tx in flushes.drain(..) {
                let _ = tx.send(());
            }
        }
    }
    while writes.join_next().await.is_some() {}
}

async fn write(params: Arc<AckerParams>, batch: Vec<Completion>) {
    let ttl_ms = params.result_ttl.as_millis() as u64;
    let mut acks: HashMap<usize, Vec<AckItem<'_>>> = HashMap::new();
    let mut fails: HashMap<usize, Vec<FailItem<'_>>> = HashMap::new();
    let mut releases: HashMap<usize, Vec<(&str, i64)>> = HashMap::new();
    let mut cancels: Vec<(usize, &str, i64, &str)> = Vec::new();
    for c in &batch {
        match &c.verdict {
            // A unit result encodes as MessagePack nil; store nothing, readers default to nil.
            Verdict::Ack(r) => acks.entry(c.idx).or_default().push((
                &c.id,
                c.token,
                if r.as_slice() == [0xc0] { &[] } else { &r[..] },
            )),
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
            Verdict::Cancel(how) => cancels.push((c.idx, &c.id, c.token, how)),
        }
    }
    // Writes are retried through Redis restarts and failovers for up to about a minute; every
    // script here is fenced, so a repeated write is rejected rather than applied twice. If we
    // still fail, the lease runs out and the task runs again: at-least-once, never lost.
    let groups: Vec<_> = acks
        .iter()
        .map(|(idx, items)| (&params.partitions[*idx], items.clone()))
        .collect();
    let params = &*params;
    let ack_rounds = groups.chunks(64).map(|chunk| {
        let n = chunk.iter().map(|(_, items)| items.len()).sum();
        let queue = chunk.first().map_or("", |(p, _)| p.queue.as_str());
        write_acks(params, chunk, ttl_ms).instrument(ack_span("ack", queue, n))
    });
    let fail_rounds = fails.iter().map(|(idx, items)| {
        let span = ack_span("retry", &params.partitions[*idx].queue, items.len());
        write_fails(params, *idx, items).instrument(span)
    });
    let release_rounds = releases
        .iter()
        .map(|(idx, items)| write_releases(params, *idx, items));
    let cancel_rounds = cancels
        .iter()
        .map(|&(idx, id, token, how)| write_cancel(params, idx, id, token, how));
    futures::join!(
        join_all(ack_rounds),
        join_all(fail_rounds),
        join_all(release_rounds),
        join_all(cancel_rounds)
    );
}

/// Ends a run whose cancellation was requested as `cancelled` (`cancel_run.lua`, one call per
/// task: cancellations are rare). Its record's TTL is the one the canceller recorded.
async fn write_cancel(params: &AckerParams, idx: usize, id: &str, token: i64, how: &str) {
    let p = &params.partitions[idx];
    let ttl_ms = scheduler_core::defaults::CANCELLED_TTL.as_millis() as u64;
    match retry_transient(params.outcome_write_attempts, || {
        params.store.cancel_run(p, id, token, how, ttl_ms)
    })
    .await
    {
        Ok(Outcome::Done) => {
            Counters::add(&params.counters.cancelled, 1);
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

async fn write_acks(
    params: &AckerParams,
    chunk: &[(&scheduler_core::store::Partition, Vec<AckItem<'_>>)],
    ttl_ms: u64,
) {
    match retry_transient(params.outcome_write_attempts, || {
        params.store.ack_many(chunk, ttl_ms)
    })
    .await
    {
        Ok(replies) => {
            for ((p, items), outs) in chunk.iter().zip(replies) {
                for ((id, _, _), o) in items.iter().zip(outs) {
                    if o == Outcome::StaleLease {
                        Counters::add(&params.counters.stale, 1);
                        crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
                        tracing::warn!(queue = %p.queue, id, "ack rejected: lease lost, the task was handed to another worker");
                    } else {
                        Counters::add(&params.counters.succeeded, 1);
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write acks; their leases will expire and the tasks run again")
        }
    }
}

async fn write_fails(params: &AckerParams, idx: usize, items: &[FailItem<'_>]) {
    let p = &params.partitions[idx];
    match retry_transient(params.outcome_write_attempts, || {
        params.store.retry(p, items)
    })
    .await
    {
        Ok(outs) => {
            for ((id, _, _, _), o) in items.iter().zip(outs) {
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
                    _ => Counters::add(&params.counters.retried, 1),
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "could not write failures; their leases will expire and the tasks run again")
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
