//! State shared by the background components of one worker process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use scheduler_core::store::Partition;
use scheduler_core::{StateMap, Store};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::acker::AckMsg;
use crate::config::WorkerConfig;
use crate::registry::Registry;

/// A task this process is running.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) token: i64,
    pub(crate) abort: AbortHandle,
}

/// Counters of one worker process, for logs, metrics and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) claimed: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) promoted: AtomicU64,
    pub(crate) reaped: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) released: AtomicU64,
    /// Peak of the tasks held (received by claims, not finished) beyond `concurrency`.
    pub(crate) prefetch_peak: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Events for the promoter.
#[derive(Debug)]
pub(crate) enum PromoterEvent {
    /// Partition `idx` got a new earliest due time (unix ms, Redis clock).
    Head(usize, i64),
    /// Notifications may have been lost: check every owned partition.
    SweepAll,
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) cfg: WorkerConfig,
    pub(crate) worker_id: String,
    pub(crate) registry: Registry,
    pub(crate) state: Arc<StateMap>,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) index: HashMap<(String, u16), usize>,
    /// One flag per partition: "its ready set may have work". Set by notifications and sweeps,
    /// cleared by the fetcher just before it claims (so a notification during the claim is kept).
    pub(crate) ready_flags: Vec<AtomicBool>,
    /// One flag per partition: "it had ready work since the promoter's last warm sweep", so
    /// leases may have been taken there. Set with the ready flag, cleared by that sweep.
    pub(crate) touched: Vec<AtomicBool>,
    /// Wakes the fetcher when a flag was set. `notify_one` stores a permit when nobody waits, so a
    /// wake-up between the fetcher's scan and its wait is not lost.
    pub(crate) ready_notify: Notify,
    pub(crate) promoter_tx: mpsc::UnboundedSender<PromoterEvent>,
    pub(crate) acker_tx: mpsc::UnboundedSender<AckMsg>,
    /// Tasks running here, by (partition, id). A std mutex: only held for map operations, never
    /// across an await. An executor removes its entry before reporting its outcome; shutdown
    /// removes the entries it hands back, so exactly one of the two acts on each task.
    pub(crate) inflight: Mutex<HashMap<(usize, String), Inflight>>,
    pub(crate) counters: Counters,
    /// Stops fetching, promoting and listening (first step of shutdown).
    pub(crate) stop_intake: CancellationToken,
    /// Stops the lease renewer and heartbeat (last step of shutdown).
    pub(crate) stop_all: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("worker_id", &self.worker_id)
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn mark_ready(&self, idx: usize) {
        self.ready_flags[idx].store(true, Ordering::Release);
        self.touched[idx].store(true, Ordering::Relaxed);
        self.ready_notify.notify_one();
    }

    pub(crate) fn mark_all_ready(&self) {
        for f in &self.ready_flags {
            f.store(true, Ordering::Release);
        }
        for f in &self.touched {
            f.store(true, Ordering::Relaxed);
        }
        self.ready_notify.notify_one();
    }
}
