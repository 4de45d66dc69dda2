//! What several background components of one worker process share: the in-flight map, the
//! counters and the ready flags. Each component takes only what it uses, in a parameter struct
//! of its own (`XParams` in its file, in the manner of asynq's `forwarderParams`), which
//! [`crate::worker`] builds; the messages they send each other are in [`crate::messages`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use scheduler_core::LatenessHistogram;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A task this process is running.
#[derive(Debug)]
pub(crate) struct Inflight {
    pub(crate) token: i64,
    pub(crate) abort: AbortHandle,
    /// Fired by the listener when the task's cancellation is requested (`c:` message).
    pub(crate) cancel: CancellationToken,
}

/// Tasks running here, by (partition, id). A std mutex: only held for map operations, never
/// across an await. An executor removes its entry before reporting its outcome; shutdown
/// removes the entries it hands back, so exactly one of the two acts on each task.
pub(crate) type InflightMap = Mutex<HashMap<(usize, String), Inflight>>;

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
    /// Runs ended `cancelled` after a cancellation request.
    pub(crate) cancelled: AtomicU64,
    /// Tasks ended `expired` (deadline passed) by this worker's claims, promotes and failure
    /// reports.
    pub(crate) expired: AtomicU64,
    /// Peak of the tasks held (received by claims, not finished) beyond `concurrency`.
    pub(crate) prefetch_peak: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which partitions may have ready work, for the fetcher. Set by the listener (a notification
/// from any process), by the promoter (after it moved tasks to a ready set itself, without
/// waiting for the echo of its own notification) and by sweeps; cleared by the fetcher.
#[derive(Debug)]
pub(crate) struct Ready {
    /// One flag per partition: "its ready set may have work". Cleared by the fetcher just
    /// before it claims (so a notification during the claim is kept).
    pub(crate) flags: Vec<AtomicBool>,
    /// One flag per partition: "it had ready work since the promoter's last warm sweep", so
    /// leases may have been taken there. Set with the ready flag, cleared by that sweep.
    pub(crate) touched: Vec<AtomicBool>,
    /// One flag per partition: "its queue is paused" (`<ns>:paused`, learned by the listener
    /// from `pause` / `resume` messages and from its reads of that hash). The fetcher does not
    /// claim from a paused partition and the promoter leases nothing there; both only read this
    /// flag, so an unpaused queue costs no Redis command for it.
    pub(crate) paused: Vec<AtomicBool>,
    /// Wakes the fetcher when a flag was set. `notify_one` stores a permit when nobody waits,
    /// so a wake-up between the fetcher's scan and its wait is not lost.
    pub(crate) notify: Notify,
}

impl Ready {
    /// Flags for `n` partitions, none set.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            flags: (0..n).map(|_| AtomicBool::new(false)).collect(),
            touched: (0..n).map(|_| AtomicBool::new(false)).collect(),
            paused: (0..n).map(|_| AtomicBool::new(false)).collect(),
            notify: Notify::new(),
        }
    }

    /// Partition `idx` may have ready work.
    pub(crate) fn mark(&self, idx: usize) {
        self.flags[idx].store(true, Ordering::Release);
        self.touched[idx].store(true, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Whether partition `idx`'s queue is paused.
    pub(crate) fn is_paused(&self, idx: usize) -> bool {
        self.paused[idx].load(Ordering::Acquire)
    }

    /// Pauses or resumes partition `idx`. A resumed partition is flagged as having ready work:
    /// what was promoted while it was paused waits in its ready set, and its `r:` wake-ups may
    /// have been spent while the fetcher skipped it.
    pub(crate) fn set_paused(&self, idx: usize, paused: bool) {
        let was = self.paused[idx].swap(paused, Ordering::AcqRel);
        if was && !paused {
            self.mark(idx);
        }
    }

    /// Every partition may have ready work (notifications may have been lost).
    pub(crate) fn mark_all(&self) {
        for f in &self.flags {
            f.store(true, Ordering::Release);
        }
        for f in &self.touched {
            f.store(true, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }
}

/// How late this worker's runs started over about the last minute, per queue: what the
/// heartbeat writes (field `lateness:<queue>`, [`LatenessHistogram::encode`]). In process only:
/// a run costs a lock and a histogram increment, no Redis command.
#[derive(Debug)]
pub(crate) struct Lateness {
    /// The queue (index into `windows`) of each partition.
    queue_of: Vec<usize>,
    /// Per queue, its name and its window.
    windows: Vec<(String, Mutex<Window>)>,
    /// The origin of the windows' slots.
    start: Instant,
}

/// Slots of [`LATENESS_SLOT`] each; the window is the last [`LATENESS_SLOTS`] of them.
#[derive(Debug, Default)]
struct Window {
    /// (slot number since `start`, its runs), slot number modulo the length.
    slots: [(u64, LatenessHistogram); LATENESS_SLOTS],
}

/// The length of one slot of the lateness window.
pub(crate) const LATENESS_SLOT: Duration = Duration::from_secs(10);
/// Slots in the lateness window: with [`LATENESS_SLOT`], the last 50 to 60 seconds.
const LATENESS_SLOTS: usize = 6;

impl Lateness {
    /// Windows for the queues of `partitions` (the queue of each partition, in order).
    pub(crate) fn new<'a>(partitions: impl Iterator<Item = &'a str>) -> Self {
        let mut windows: Vec<(String, Mutex<Window>)> = Vec::new();
        let mut queue_of = Vec::new();
        for q in partitions {
            let i = match windows.iter().position(|(name, _)| name == q) {
                Some(i) => i,
                None => {
                    windows.push((q.to_owned(), Mutex::default()));
                    windows.len() - 1
                }
            };
            queue_of.push(i);
        }
        Self {
            queue_of,
            windows,
            start: Instant::now(),
        }
    }

    fn slot_now(&self) -> u64 {
        self.start.elapsed().as_secs() / LATENESS_SLOT.as_secs()
    }

    /// A run of partition `idx` started `ms` late.
    pub(crate) fn record(&self, idx: usize, ms: i64) {
        let slot = self.slot_now();
        let Some((_, w)) = self.queue_of.get(idx).map(|&q| &self.windows[q]) else {
            return;
        };
        let mut w = w.lock().expect("lateness poisoned");
        let s = &mut w.slots[(slot % LATENESS_SLOTS as u64) as usize];
        if s.0 != slot {
            *s = (slot, LatenessHistogram::default());
        }
        s.1.record(ms);
    }

    /// Each queue's runs in the window.
    pub(crate) fn snapshot(&self) -> Vec<(&str, LatenessHistogram)> {
        let slot = self.slot_now();
        self.windows
            .iter()
            .map(|(q, w)| {
                let w = w.lock().expect("lateness poisoned");
                let mut h = LatenessHistogram::default();
                for (n, s) in &w.slots {
                    if slot.saturating_sub(*n) < LATENESS_SLOTS as u64 && !s.is_empty() {
                        h.merge(s);
                    }
                }
                (q.as_str(), h)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs are counted per queue, in the queue of their partition.
    #[test]
    fn lateness_is_kept_per_queue() {
        let l = Lateness::new(["a", "a", "b"].into_iter());
        l.record(0, 5);
        l.record(1, 7);
        l.record(2, 0);
        let snap = l.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!((snap[0].0, snap[0].1.count()), ("a", 2));
        assert_eq!((snap[1].0, snap[1].1.quantile(0.5)), ("b", Some(0)));
    }
}
