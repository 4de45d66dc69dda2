//! [`WorkerConfig`]: every setting of a worker, with its default.

use std::collections::HashMap;
use std::time::Duration;

use scheduler_core::Error;

use crate::backoff::Backoff;

/// Default of [`WorkerConfig::outcome_write_attempts`].
pub const DEFAULT_OUTCOME_WRITE_ATTEMPTS: u32 = 30;
/// Default of [`WorkerConfig::release_attempts`].
pub const DEFAULT_RELEASE_ATTEMPTS: u32 = 10;
/// The shortest period any interval setting accepts (a shorter one would spin).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// The shortest lease and promoter lock TTL accepted: both are renewed every third of their
/// length, and a renewal needs a round trip.
pub const MIN_LEASE: Duration = Duration::from_millis(300);
/// The longest duration any setting accepts (ten years): a guard against overflows in the
/// arithmetic on deadlines, never a limit in practice.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Settings of a worker process, read-only: set them with the setters of
/// [`crate::WorkerBuilder`] (each documents its default and its valid values), read them with
/// the getters here. [`crate::WorkerBuilder::build`] checks every value and returns
/// [`Error::InvalidConfig`] naming the first bad one, so no setting can make the worker panic.
///
/// The connection (Redis URL, TLS), the registered tasks and the shared state are not part of
/// it: [`crate::WorkerBuilder::config`] copies a whole `WorkerConfig` (from
/// [`crate::WorkerBuilder::settings`] or [`crate::Worker::config`]) into another builder without
/// touching them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use scheduler_worker::{Worker, WorkerConfig};
///
/// assert_eq!(WorkerConfig::default().lease(), Duration::from_secs(30));
/// // One set of settings for several workers, each with its own Redis URL.
/// let shared = Worker::builder().concurrency(8).lease(Duration::from_secs(10));
/// let cfg: WorkerConfig = shared.settings().clone();
/// let b = Worker::builder().redis_url("redis://10.0.0.2:6379").config(cfg);
/// assert_eq!(b.settings().concurrency(), 8);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    // Documented on their getters, below.
    pub(crate) namespace: String,
    pub(crate) queues: Vec<String>,
    pub(crate) default_shards: u16,
    pub(crate) queue_shards: HashMap<String, u16>,
    pub(crate) concurrency: usize,
    pub(crate) claim_batch: usize,
    pub(crate) prefetch_multiplier: usize,
    pub(crate) promote_batch: u32,
    pub(crate) lease: Duration,
    pub(crate) max_lost_leases: u32,
    pub(crate) lock_ttl: Duration,
    pub(crate) takeover_after: Duration,
    pub(crate) warm_sweep_interval: Duration,
    pub(crate) sweep_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) cancel_grace: Duration,
    pub(crate) result_ttl: Duration,
    pub(crate) ack_ride_window: Duration,
    pub(crate) max_payload_bytes: usize,
    pub(crate) backoff: Backoff,
    pub(crate) dead_max_age: Duration,
    pub(crate) dead_max_len: u64,
    pub(crate) janitor_interval: Duration,
    pub(crate) queue_metrics_interval: Option<Duration>,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) health_check_interval: Duration,
    pub(crate) health_check_timeout: Duration,
    pub(crate) outcome_write_attempts: u32,
    pub(crate) release_attempts: u32,
    pub(crate) trace_mode: crate::trace::TraceMode,
    pub(crate) queue_order: QueueOrder,
}

/// How a worker serving several queues chooses the queue of its next claim, when more than one
/// has ready work ([`WorkerConfig::queue_order`]; guide: `docs/flow-control.md`, section 4).
///
/// Only the fetcher's claims follow it. The promoter's promote-and-lease (a task falling due is
/// leased to the promoting worker at once) fills only execution slots that no task in hand is
/// using or waiting for, so it takes nothing while the worker is saturated, which is when the
/// order matters.
///
/// # Examples
///
/// ```
/// use scheduler_worker::config::QueueOrder;
/// use scheduler_worker::Worker;
///
/// let b = Worker::builder().queue_weights([("critical", 6), ("default", 3), ("low", 1)]);
/// assert_eq!(b.settings().queues(), ["critical", "default", "low"]);
/// assert!(matches!(b.settings().queue_order(), QueueOrder::Weighted(w) if w == &[6, 3, 1]));
/// let b = Worker::builder().strict_priority(["critical", "default", "low"]);
/// assert!(matches!(b.settings().queue_order(), QueueOrder::Strict));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueOrder {
    /// The default: every partition (queue shard) flagged as having ready work in turn, whatever
    /// its queue.
    #[default]
    RoundRobin,
    /// The weight of each queue of [`WorkerConfig::queues`], in the same order (each at least
    /// 1): while several queues have ready work, each gets a share of the claimed tasks
    /// proportional to its weight (`[6, 3, 1]`: 60%, 30%, 10%). A queue without ready work
    /// gives its share to the others and gets no credit for the time it was idle.
    Weighted(Vec<u32>),
    /// [`WorkerConfig::queues`] in priority order, first highest: a claim goes to the first queue
    /// with ready work, so a queue is served only while every queue before it has none.
    Strict,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            namespace: scheduler_core::defaults::NAMESPACE.into(),
            queues: Vec::new(),
            default_shards: scheduler_core::defaults::SHARDS,
            queue_shards: HashMap::new(),
            concurrency: 64,
            claim_batch: 100,
            prefetch_multiplier: 8,
            promote_batch: 200,
            lease: Duration::from_secs(30),
            max_lost_leases: 5,
            lock_ttl: Duration::from_secs(10),
            takeover_after: Duration::from_millis(50),
            warm_sweep_interval: Duration::from_secs(1),
            sweep_interval: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(5),
            result_ttl: Duration::from_secs(24 * 3600),
            ack_ride_window: Duration::from_millis(10),
            max_payload_bytes: scheduler_core::defaults::MAX_PAYLOAD_BYTES,
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(5),
            dead_max_age: Duration::from_secs(90 * 24 * 3600),
            dead_max_len: 10_000,
            janitor_interval: Duration::from_secs(300),
            queue_metrics_interval: None,
            health_check_interval: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(3),
            outcome_write_attempts: DEFAULT_OUTCOME_WRITE_ATTEMPTS,
            release_attempts: DEFAULT_RELEASE_ATTEMPTS,
            trace_mode: crate::trace::TraceMode::default(),
            queue_order: QueueOrder::RoundRobin,
        }
    }
}

impl WorkerConfig {
    /// How a run span continues the trace its task carries. Default
    /// [`crate::trace::TraceMode::Child`].
    pub fn trace_mode(&self) -> crate::trace::TraceMode {
        self.trace_mode
    }

    /// How the queue of the next claim is chosen when several have ready work. Default
    /// [`QueueOrder::RoundRobin`]; set with [`crate::WorkerBuilder::queue_weights`] or
    /// [`crate::WorkerBuilder::strict_priority`].
    pub fn queue_order(&self) -> &QueueOrder {
        &self.queue_order
    }

    /// Key namespace. Default `sched`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues to serve. Default (empty): the default queues of the registered tasks.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Shards of a queue this worker is the first to use. Default 16.
    pub fn default_shards(&self) -> u16 {
        self.default_shards
    }

    /// Required shard counts per queue (an error at start if Redis records another).
    pub fn queue_shards(&self) -> &HashMap<String, u16> {
        &self.queue_shards
    }

    /// Tasks run at once by this process. Default 64.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Most tasks one claim takes. Default 100 (capped by the free prefetch budget).
    pub fn claim_batch(&self) -> usize {
        self.claim_batch
    }

    /// Cap of the adaptive prefetch: besides its running tasks, this worker holds at most
    /// `concurrency × prefetch_multiplier` tasks claimed ahead, in claims still in flight
    /// (several partitions are claimed from at once) or waiting here for a free slot, so that a
    /// slot does not wait a round trip to Redis for its next task. Default 8; 0 claims only for
    /// free slots.
    ///
    /// Within the cap, the prefetch is adaptive: the tasks held beyond `concurrency` are about
    /// what this worker finishes during one claim round trip, times 2 (`ceil(2 × completion rate
    /// × claim latency)`, both measured as moving averages; `min(concurrency, claim_batch, cap)`
    /// until a task has finished). Near Redis that is a task or two (concurrency 8, 50 ms tasks,
    /// local Redis: at most 1 or 2 tasks claimed and not started once running, against 64 with a
    /// fixed prefetch), so other workers and later higher-priority tasks are not kept waiting
    /// and a killed worker strands few leases. Far from Redis, where claims limit throughput,
    /// the target grows about twofold per round trip up to the cap, and throughput is bounded
    /// by about `concurrency × (1 + prefetch_multiplier) / round trip`: with concurrency 100 at
    /// a 200 ms round trip, about 430 tasks/s with 0, 1,800 with 4 and 2,800 with 8
    /// (`tests/worker_network.rs`). Lower the cap only to bound what a far worker may hold.
    ///
    /// A task's lease starts when it is claimed, and a task waiting here is renewed like a
    /// running one but is not available to other workers. At shutdown, prefetched tasks that
    /// have not started are handed back at once. [`crate::WorkerReport::prefetch_peak`] reports
    /// the most tasks held beyond `concurrency`.
    pub fn prefetch_multiplier(&self) -> usize {
        self.prefetch_multiplier
    }

    /// Most tasks one promote or reap call moves. Default 200: one call stays around a
    /// millisecond even with a million tasks due in one partition (each move is a few sorted-set
    /// operations, logarithmic in the set's size).
    pub fn promote_batch(&self) -> u32 {
        self.promote_batch
    }

    /// Lease (visibility timeout) of a claimed task; renewed every third of it while the task
    /// runs, so it only runs out when the worker is gone or stalled. Default 30 s.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Expired leases (worker killed, hung or cut off while running the task) a task may have
    /// before it is buried. Counted apart from handler failures, which `max_retries` bounds:
    /// a task whose worker is lost during a run goes back to the ready set while its count of
    /// lost leases (`lost` in its record) is at most this, and to the dead set with the reason
    /// "lease expired N times" beyond. Default 5.
    pub fn max_lost_leases(&self) -> u32 {
        self.max_lost_leases
    }

    /// TTL of a promoter lock; renewed every third of it while its partition has work due within
    /// one TTL. It only bounds how long a lock outlives a holder that stopped renewing it: other
    /// workers do not wait for it to expire (see `takeover_after`). Default 10 s.
    pub fn lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// A worker that finds a partition's lock held by another watches that partition's heads;
    /// a due task or an expired lease left untouched this long past its time (and unmoved between
    /// two reads) means the holder is dead, stopped or cut off, and the watcher takes the
    /// partition over. Watched partitions are read at most twice per this period, and only while
    /// they have work falling due. Default 50 ms.
    pub fn takeover_after(&self) -> Duration {
        self.takeover_after
    }

    /// Warm sweep: how often the heads of the partitions with recent activity (ready work, a
    /// lock, a known lease or a watch) are read, three reads per partition in one round trip;
    /// an idle worker reads nothing. It is how a worker learns of leases taken by other workers
    /// (claims publish nothing), so a crashed worker's tasks are reaped within one lease plus
    /// about `takeover_after` whenever the lease is longer than this. Default 1 s.
    pub fn warm_sweep_interval(&self) -> Duration {
        self.warm_sweep_interval
    }

    /// Full sweep: how often every partition's heads are read even without a notification.
    /// Notifications are not lost while the pub/sub connection lives, and a reconnect triggers a
    /// sweep, so this is a backstop. Default 30 s.
    pub fn sweep_interval(&self) -> Duration {
        self.sweep_interval
    }

    /// How long a graceful shutdown waits for running tasks before handing them back. Default 30 s.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// How long a running task whose cancellation was requested may take to return once told
    /// (`ctx.cancelled()` fired) before it is aborted. Default 5 s; zero aborts at once.
    pub fn cancel_grace(&self) -> Duration {
        self.cancel_grace
    }

    /// How long a succeeded task's record and result are kept. Default 24 h; zero deletes the
    /// record on success.
    pub fn result_ttl(&self) -> Duration {
        self.result_ttl
    }

    /// How long a success may wait to ride on its partition's next promote by this worker (one
    /// Redis call writes both, instead of two) when that promote is due within it; a success
    /// whose promote does not come is written alone once the window is over. Default 10 ms;
    /// zero writes every success at once; at most 1 s.
    pub fn ack_ride_window(&self) -> Duration {
        self.ack_ride_window
    }

    /// Largest argument payload run, and largest result stored, in bytes; a task with bigger
    /// arguments, or whose run returns a bigger result, is dead-lettered. Default 1 MiB.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Delay before retries. Default: exponential from 1 s, doubling, capped at 10 min, full
    /// jitter.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Dead tasks older than this are deleted by the janitor. Default 90 days.
    pub fn dead_max_age(&self) -> Duration {
        self.dead_max_age
    }

    /// At most this many dead tasks are kept per partition (queue shard); the oldest go first.
    /// Default 10,000.
    pub fn dead_max_len(&self) -> u64 {
        self.dead_max_len
    }

    /// How often the janitor enforces the dead-set retention. Default 5 minutes.
    pub fn janitor_interval(&self) -> Duration {
        self.janitor_interval
    }

    /// When set, how often the worker reads each served queue's task counts per state and
    /// publishes them as the `scheduler_queue_tasks` gauge (four reads per partition). Default
    /// `None`: one worker per deployment is enough to enable it on.
    pub fn queue_metrics_interval(&self) -> Option<Duration> {
        self.queue_metrics_interval
    }

    /// Heartbeat period; the heartbeat key lives three periods. Default 5 s.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// How often the worker checks that its connections to Redis still answer: a `PING` on the
    /// pub/sub connection and on the command connection (single-node mode). A connection whose
    /// `PING` gets no reply within [`WorkerConfig::health_check_timeout`] is replaced: a
    /// connection silently cut (a black hole, a half-open connection after a network fault)
    /// never fails by itself, and wake-ups would never arrive on it again. Default 1 s.
    pub fn health_check_interval(&self) -> Duration {
        self.health_check_interval
    }

    /// How long a health-check `PING` may wait for its reply before the connection is replaced.
    /// Keep it well above the round trip to Redis. Default 3 s.
    pub fn health_check_timeout(&self) -> Duration {
        self.health_check_timeout
    }

    /// Attempts at writing a task's outcome (ack, retry, bury) while Redis fails transiently,
    /// backing off 50 ms doubling up to 2 s (about 50 s in all), before the outcome is given up
    /// and the task runs again after its lease expires. Default
    /// [`DEFAULT_OUTCOME_WRITE_ATTEMPTS`] (30).
    pub fn outcome_write_attempts(&self) -> u32 {
        self.outcome_write_attempts
    }

    /// Attempts at handing tasks back (shutdown, a claim whose reply was lost) while Redis fails
    /// transiently; tasks not handed back return when their lease expires. Default
    /// [`DEFAULT_RELEASE_ATTEMPTS`] (10): a shutdown should not wait long.
    pub fn release_attempts(&self) -> u32 {
        self.release_attempts
    }
}

impl WorkerConfig {
    /// Checks every setting; [`crate::WorkerBuilder::build`] calls it before connecting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first bad setting and its value: a zero count
    /// (`concurrency`, `claim_batch`, `promote_batch`, `default_shards`, a `queue_shards` entry,
    /// `max_payload_bytes`, `outcome_write_attempts`, `release_attempts`), an interval below
    /// [`MIN_INTERVAL`], a `lease` or `lock_ttl` below [`MIN_LEASE`], a `takeover_after` below
    /// 2 ms, any duration above [`MAX_DURATION`], a backoff that is not finite, or a
    /// [`QueueOrder`] that does not fit [`WorkerConfig::queues`] (a weight of zero, a weight
    /// count that differs from the queue count, a queue named twice, or no queue named).
    pub fn validate(&self) -> Result<(), Error> {
        fn bad(name: &str, value: impl std::fmt::Debug, rule: &str) -> Error {
            Error::InvalidConfig(format!("{name} = {value:?}: {rule}"))
        }
        self.validate_queue_order()?;
        let counts = [
            ("concurrency", self.concurrency as u64),
            ("claim_batch", self.claim_batch as u64),
            ("promote_batch", u64::from(self.promote_batch)),
            ("default_shards", u64::from(self.default_shards)),
            ("max_payload_bytes", self.max_payload_bytes as u64),
            (
                "outcome_write_attempts",
                u64::from(self.outcome_write_attempts),
            ),
            ("release_attempts", u64::from(self.release_attempts)),
        ];
        for (name, n) in counts {
            if n == 0 {
                return Err(bad(name, n, "must be at least 1"));
            }
        }
        if let Some((q, n)) = self.queue_shards.iter().find(|(_, n)| **n == 0) {
            return Err(bad(
                &format!("queue_shards[{q:?}]"),
                n,
                "must be at least 1",
            ));
        }
        let mins = [
            ("lease", self.lease, MIN_LEASE),
            ("lock_ttl", self.lock_ttl, MIN_LEASE),
            (
                "takeover_after",
                self.takeover_after,
                Duration::from_millis(2),
            ),
            (
                "warm_sweep_interval",
                self.warm_sweep_interval,
                MIN_INTERVAL,
            ),
            ("sweep_interval", self.sweep_interval, MIN_INTERVAL),
            ("janitor_interval", self.janitor_interval, MIN_INTERVAL),
            ("heartbeat_interval", self.heartbeat_interval, MIN_INTERVAL),
            (
                "health_check_interval",
                self.health_check_interval,
                MIN_INTERVAL,
            ),
            (
                "health_check_timeout",
                self.health_check_timeout,
                MIN_INTERVAL,
            ),
            (
                "queue_metrics_interval",
                self.queue_metrics_interval.unwrap_or(MIN_INTERVAL),
                MIN_INTERVAL,
            ),
            ("shutdown_timeout", self.shutdown_timeout, Duration::ZERO),
            ("cancel_grace", self.cancel_grace, Duration::ZERO),
            ("result_ttl", self.result_ttl, Duration::ZERO),
            ("ack_ride_window", self.ack_ride_window, Duration::ZERO),
            ("dead_max_age", self.dead_max_age, Duration::ZERO),
        ];
        if self.ack_ride_window > Duration::from_secs(1) {
            return Err(bad(
                "ack_ride_window",
                self.ack_ride_window,
                "must be at most 1 s",
            ));
        }
        for (name, d, min) in mins {
            if d < min {
                return Err(bad(name, d, &format!("must be at least {min:?}")));
            }
            if d > MAX_DURATION {
                return Err(bad(name, d, "must be at most 10 years"));
            }
        }
        match &self.backoff {
            Backoff::Fixed(d) if *d > MAX_DURATION => {
                return Err(bad("backoff", d, "must be at most 10 years"));
            }
            Backoff::Exponential {
                min, max, factor, ..
            } => {
                if !factor.is_finite() || *factor < 0.0 {
                    return Err(bad(
                        "backoff.factor",
                        factor,
                        "must be finite and not negative",
                    ));
                }
                if *min > MAX_DURATION || *max > MAX_DURATION {
                    return Err(bad(
                        "backoff",
                        (min, max),
                        "min and max must be at most 10 years",
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// The checks of [`WorkerConfig::queue_order`] against [`WorkerConfig::queues`].
    fn validate_queue_order(&self) -> Result<(), Error> {
        let name = match &self.queue_order {
            QueueOrder::RoundRobin => return Ok(()),
            QueueOrder::Weighted(_) => "queue_weights",
            QueueOrder::Strict => "strict_priority",
        };
        let bad = |rule: String| Err(Error::InvalidConfig(format!("{name}: {rule}")));
        if self.queues.is_empty() {
            return bad("names no queue".into());
        }
        for (i, q) in self.queues.iter().enumerate() {
            if self.queues[..i].contains(q) {
                return bad(format!("queue {q:?} named twice"));
            }
        }
        if let QueueOrder::Weighted(w) = &self.queue_order {
            if w.len() != self.queues.len() {
                return bad(format!(
                    "{} weights for {} queues (set the queues with queue_weights, not queues)",
                    w.len(),
                    self.queues.len()
                ));
            }
            if let Some(i) = w.iter().position(|&w| w == 0) {
                return bad(format!(
                    "weight of queue {:?} = 0: must be at least 1",
                    self.queues[i]
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights and strict priority are checked against the queues.
    #[test]
    fn queue_order_is_checked() {
        let cfg = |queues: &[&str], order: QueueOrder| WorkerConfig {
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            queue_order: order,
            ..WorkerConfig::default()
        };
        let err = |c: WorkerConfig| match c.validate() {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        cfg(&["a", "b"], QueueOrder::Weighted(vec![2, 1]))
            .validate()
            .unwrap();
        cfg(&["a", "b"], QueueOrder::Strict).validate().unwrap();
        assert!(err(cfg(&["a", "b"], QueueOrder::Weighted(vec![2, 0]))).contains("\"b\" = 0"));
        assert!(err(cfg(&["a"], QueueOrder::Weighted(vec![2, 1]))).contains("2 weights for 1"));
        assert!(err(cfg(&["a", "a"], QueueOrder::Strict)).contains("named twice"));
        assert!(err(cfg(&[], QueueOrder::Strict)).contains("no queue"));
    }

    /// The defaults pass the checks.
    #[test]
    fn defaults_are_valid() {
        WorkerConfig::default().validate().unwrap();
    }
}
