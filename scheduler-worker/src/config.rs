//! [`WorkerConfig`]: every setting of a worker, with its default.

use std::collections::HashMap;
use std::time::Duration;

use crate::backoff::Backoff;

/// Settings of a worker process. Build with [`crate::Worker::builder`]; every field has a
/// documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Redis URL. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Key namespace. Default `sched`.
    pub namespace: String,
    /// Queues to serve. Default (empty): the default queues of the registered tasks.
    pub queues: Vec<String>,
    /// Shards of a queue this worker is the first to use. Default 16.
    pub default_shards: u16,
    /// Required shard counts per queue (an error at start if Redis records another).
    pub queue_shards: HashMap<String, u16>,
    /// Tasks run at once by this process. Default 64.
    pub concurrency: usize,
    /// Most tasks one claim takes. Default 100 (capped by the free prefetch budget).
    pub claim_batch: usize,
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
    pub prefetch_multiplier: usize,
    /// Most tasks one promote or reap call moves. Default 200: one call stays around a
    /// millisecond even with a million tasks due in one partition (each move is a few sorted-set
    /// operations, logarithmic in the set's size).
    pub promote_batch: u32,
    /// Lease (visibility timeout) of a claimed task; renewed every third of it while the task
    /// runs, so it only runs out when the worker is gone or stalled. Default 30 s.
    pub lease: Duration,
    /// Expired leases (worker killed, hung or cut off while running the task) a task may have
    /// before it is buried. Counted apart from handler failures, which `max_retries` bounds:
    /// a task whose worker is lost during a run goes back to the ready set while its count of
    /// lost leases (`lost` in its record) is at most this, and to the dead set with the reason
    /// "lease expired N times" beyond. Default 5.
    pub max_lost_leases: u32,
    /// TTL of a promoter lock; renewed every third of it while its partition has work due within
    /// one TTL. It only bounds how long a lock outlives a holder that stopped renewing it: other
    /// workers do not wait for it to expire (see `takeover_after`). Default 10 s.
    pub lock_ttl: Duration,
    /// A worker that finds a partition's lock held by another watches that partition's heads;
    /// a due task or an expired lease left untouched this long past its time (and unmoved between
    /// two reads) means the holder is dead, stopped or cut off, and the watcher takes the
    /// partition over. Watched partitions are read at most twice per this period, and only while
    /// they have work falling due. Default 50 ms.
    pub takeover_after: Duration,
    /// Warm sweep: how often the heads of the partitions with recent activity (ready work, a
    /// lock, a known lease or a watch) are read, three reads per partition in one round trip;
    /// an idle worker reads nothing. It is how a worker learns of leases taken by other workers
    /// (claims publish nothing), so a crashed worker's tasks are reaped within one lease plus
    /// about `takeover_after` whenever the lease is longer than this. Default 1 s.
    pub warm_sweep_interval: Duration,
    /// Full sweep: how often every partition's heads are read even without a notification.
    /// Notifications are not lost while the pub/sub connection lives, and a reconnect triggers a
    /// sweep, so this is a backstop. Default 30 s.
    pub sweep_interval: Duration,
    /// How long a graceful shutdown waits for running tasks before handing them back. Default 30 s.
    pub shutdown_timeout: Duration,
    /// How long a succeeded task's record and result are kept. Default 24 h; zero deletes the
    /// record on success.
    pub result_ttl: Duration,
    /// Largest argument payload run, and largest result stored, in bytes; a task with bigger
    /// arguments, or whose run returns a bigger result, is dead-lettered. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Delay before retries. Default: exponential from 1 s, doubling, capped at 10 min, full
    /// jitter.
    pub backoff: Backoff,
    /// Dead tasks older than this are deleted by the janitor. Default 90 days.
    pub dead_max_age: Duration,
    /// At most this many dead tasks are kept per partition (queue shard); the oldest go first.
    /// Default 10,000.
    pub dead_max_len: u64,
    /// How often the janitor enforces the dead-set retention. Default 5 minutes.
    pub janitor_interval: Duration,
    /// When set, how often the worker reads each served queue's task counts per state and
    /// publishes them as the `scheduler_queue_tasks` gauge (four reads per partition). Default
    /// `None`: one worker per deployment is enough to enable it on.
    pub queue_metrics_interval: Option<Duration>,
    /// Heartbeat period; the heartbeat key lives three periods. Default 5 s.
    pub heartbeat_interval: Duration,
    /// How often the worker checks that its connections to Redis still answer: a `PING` on the
    /// pub/sub connection and on the command connection (single-node mode). A connection whose
    /// `PING` gets no reply within [`WorkerConfig::health_check_timeout`] is replaced: a
    /// connection silently cut (a black hole, a half-open connection after a network fault)
    /// never fails by itself, and wake-ups would never arrive on it again. Default 1 s.
    pub health_check_interval: Duration,
    /// How long a health-check `PING` may wait for its reply before the connection is replaced.
    /// Keep it well above the round trip to Redis. Default 3 s.
    pub health_check_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".into(),
            namespace: "sched".into(),
            queues: Vec::new(),
            default_shards: 16,
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
            result_ttl: Duration::from_secs(24 * 3600),
            max_payload_bytes: 1 << 20,
            backoff: Backoff::default(),
            heartbeat_interval: Duration::from_secs(5),
            dead_max_age: Duration::from_secs(90 * 24 * 3600),
            dead_max_len: 10_000,
            janitor_interval: Duration::from_secs(300),
            queue_metrics_interval: None,
            health_check_interval: Duration::from_secs(1),
            health_check_timeout: Duration::from_secs(3),
        }
    }
}
