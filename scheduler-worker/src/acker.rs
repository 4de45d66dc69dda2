//! The acker: collects finished runs and writes their outcomes in batches, one pipelined round
//! trip for the acks of many partitions, one retry-or-bury call per partition for failures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use scheduler_core::scripts::{AckItem, FailItem, Outcome};
use scheduler_core::store::retry_transient;
use tokio::sync::{mpsc, oneshot};

use crate::shared::{Counters, Shared};

/// What a run asks the store to do.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Succeeded with this result (MessagePack).
    Ack(Vec<u8>),
    /// Failed; retry after this delay if attempts remain, else bury.
    Retry(String, Duration),
    /// Failed in a way retrying cannot fix: bury now.
    Bury(String),
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) idx: usize,
    pub(crate) id: String,
    pub(crate) token: i64,
    pub(crate) verdict: Verdict,
}

/// Messages to the acker.
#[derive(Debug)]
pub(crate) enum AckMsg {
    Done(Completion),
    /// Write everything received before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// Most completions written in one round.
const MAX_BATCH: usize = 1000;

/// Runs until the channel closes (every sender dropped).
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushes = Vec::new();
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
        write(&shared, std::mem::take(&mut batch)).await;
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
    }
}

async fn write(shared: &Shared, batch: Vec<Completion>) {
    if batch.is_empty() {
        return;
    }
    let ttl_ms = shared.cfg.result_ttl.as_millis() as u64;
    let mut acks: HashMap<usize, Vec<AckItem<'_>>> = HashMap::new();
    let mut fails: HashMap<usize, Vec<FailItem<'_>>> = HashMap::new();
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
            Verdict::Bury(e) => fails
                .entry(c.idx)
                .or_default()
                .push((&c.id, c.token, e, None)),
        }
    }
    // Writes are retried through Redis restarts and failovers for up to about a minute; every
    // script here is fenced, so a repeated write is rejected rather than applied twice. If we
    // still fail, the lease runs out and the task runs again: at-least-once, never lost.
    let groups: Vec<_> = acks
        .iter()
        .map(|(idx, items)| (&shared.partitions[*idx], items.clone()))
        .collect();
    for chunk in groups.chunks(64) {
        match retry_transient(30, || shared.store.ack_many(chunk, ttl_ms)).await {
            Ok(replies) => {
                for ((p, items), outs) in chunk.iter().zip(replies) {
                    for ((id, _, _), o) in items.iter().zip(outs) {
                        if o == Outcome::StaleLease {
                            Counters::add(&shared.counters.stale, 1);
                            crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
                            tracing::warn!(queue = %p.queue, id, "ack rejected: lease lost, the task was handed to another worker");
                        } else {
                            Counters::add(&shared.counters.succeeded, 1);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write acks; their leases will expire and the tasks run again")
            }
        }
    }
    for (idx, items) in &fails {
        let p = &shared.partitions[*idx];
        match retry_transient(30, || shared.store.retry(p, items)).await {
            Ok(outs) => {
                for ((id, _, _, _), o) in items.iter().zip(outs) {
                    match o {
                        Outcome::Dead => {
                            Counters::add(&shared.counters.dead, 1);
                            crate::metrics::count(crate::metrics::DEAD, &p.queue, 1);
                        }
                        Outcome::Corrupt => {
                            Counters::add(&shared.counters.dead, 1);
                            crate::metrics::count(crate::metrics::DEAD, &p.queue, 1);
                            tracing::warn!(queue = %p.queue, id, "task record unreadable (edited by hand?): moved to the dead set with the reason");
                        }
                        Outcome::StaleLease => {
                            Counters::add(&shared.counters.stale, 1);
                            crate::metrics::count(crate::metrics::STALE, &p.queue, 1);
                            tracing::warn!(queue = %p.queue, id, "failure report rejected: lease lost");
                        }
                        _ => Counters::add(&shared.counters.retried, 1),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write failures; their leases will expire and the tasks run again")
            }
        }
    }
}
