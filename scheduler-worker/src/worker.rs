//! [`Worker`] and its builder: wires the background components together and runs the graceful
//! shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use scheduler_core::conn::{HealthCheck, TlsConfig};
use scheduler_core::limits::{Limit, LimitScope};
use scheduler_core::store::Partition;
use scheduler_core::{Client, ClientConfig, Error, Schedule, Schedules, StateMap, Store, Task};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::{self, AckerParams};
use crate::backoff::Backoff;
use crate::config::{QueueOrder, WorkerConfig};
use crate::executor::ExecutorParams;
use crate::fetcher::{FetcherParams, Intake};
use crate::gauges::GaugesParams;
use crate::heartbeat::HeartbeatParams;
use crate::janitor::JanitorParams;
use crate::lease::LeaseParams;
use crate::messages::AckMsg;
use crate::notify::NotifyParams;
use crate::promoter::PromoterParams;
use crate::registry::Registry;
use crate::shared::{Counters, InflightMap, Ready};
use crate::ticker::TickerParams;
use crate::{fetcher, gauges, heartbeat, janitor, lease, notify, promoter, ticker};

/// Builds a [`Worker`]: register tasks, set options, then [`WorkerBuilder::build`].
///
/// The settings that decide how the worker behaves when another worker or the network fails,
/// shown with their defaults (each is documented on its method and in [`WorkerConfig`]):
///
/// ```
/// use std::time::Duration;
/// use scheduler_worker::Worker;
///
/// let builder = Worker::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     // A claimed task's lease: a lost worker's tasks run again after it.
///     .lease(Duration::from_secs(30))
///     // Runs lost with their worker that a task may have before it is buried (apart from
///     // handler failures, which `max_retries` of the task bounds).
///     .max_lost_leases(5)
///     // Due work or an expired lease left untouched this long by a partition's lock holder:
///     // another worker takes the partition over.
///     .takeover_after(Duration::from_millis(50))
///     // How often partitions with recent activity are read (to learn other workers' leases),
///     // and every partition (a backstop for lost notifications).
///     .warm_sweep_interval(Duration::from_secs(1))
///     .sweep_interval(Duration::from_secs(30))
///     // A PING per second on each connection; no reply in 3 s replaces the connection.
///     .health_check(Duration::from_secs(1), Duration::from_secs(3))
///     // Cap of the adaptive prefetch (tasks claimed ahead of free slots, as a multiple of the
///     // concurrency): it only covers the claim round trip.
///     .prefetch_multiplier(8);
/// # drop(builder);
/// ```
/// Every setter records its value; [`WorkerBuilder::build`] checks them all (the valid values are
/// on each setter and on [`WorkerConfig::validate`]) and returns [`Error::InvalidConfig`] for a
/// bad one, before connecting.
///
/// **Rule for [`WorkerBuilder::config`]:** it replaces every setting a [`WorkerConfig`] holds
/// (all the setters below except [`WorkerBuilder::redis_url`], [`WorkerBuilder::tls`],
/// [`WorkerBuilder::register`], [`WorkerBuilder::state`] and [`WorkerBuilder::middleware`],
/// which it never touches), so call it first and the setters that override it after.
#[derive(Debug)]
pub struct WorkerBuilder {
    cfg: WorkerConfig,
    redis_url: String,
    registry: Registry,
    state: StateMap,
    tls: Option<TlsConfig>,
    schedules: Vec<Schedule>,
    /// The schedules of registered `#[task(cron)]` tasks, checked at build.
    task_schedules: Vec<Result<Schedule, Error>>,
    schedule_poll: Duration,
    schedule_lookahead: Duration,
    middleware: crate::middleware::Stack,
    limits: Vec<(LimitScope, Limit)>,
    #[cfg(feature = "prometheus")]
    metrics_addr: Option<std::net::SocketAddr>,
    #[cfg(feature = "archive")]
    archive: Option<crate::archive::ArchiveConfig>,
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        Self {
            cfg: WorkerConfig::default(),
            redis_url: DEFAULT_REDIS_URL.to_owned(),
            registry: Registry::default(),
            state: StateMap::default(),
            tls: None,
            schedules: Vec::new(),
            task_schedules: Vec::new(),
            schedule_poll: Duration::from_secs(1),
            schedule_lookahead: Duration::from_secs(5),
            middleware: crate::middleware::Stack::default(),
            limits: Vec::new(),
            #[cfg(feature = "prometheus")]
            metrics_addr: None,
            #[cfg(feature = "archive")]
            archive: None,
        }
    }
}

/// The Redis URL a [`WorkerBuilder`] uses unless told otherwise.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl WorkerBuilder {
    /// Redis URL, any form of [`scheduler_core::conn`] (`redis://`, `rediss://`,
    /// `redis+cluster://`, `redis+sentinel://`). Default [`DEFAULT_REDIS_URL`]. Not part of
    /// [`WorkerConfig`]: [`WorkerBuilder::config`] keeps it.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = url.into();
        self
    }

    /// Key namespace. Default `sched`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.cfg.namespace = ns.into();
        self
    }

    /// Certificates for a `rediss` URL. Default: from the environment
    /// ([`TlsConfig::from_env`]), else the system's roots. Not part of [`WorkerConfig`]:
    /// [`WorkerBuilder::config`] keeps it.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Registers task `T` (pass the unit struct `#[task]` generates). A task with a cron
    /// schedule (`#[task(cron = "...")]`, [`Task::cron`]) also declares it, named after the
    /// task, as [`WorkerBuilder::schedule`] does; a bad expression or time zone makes
    /// [`WorkerBuilder::build`] fail.
    pub fn register<T: Task>(mut self, _task: T) -> Self {
        self.registry.register::<T>();
        if let Some((expr, tz, call)) = T::cron() {
            self.task_schedules
                .push(Schedule::cron(T::NAME, expr, tz).and_then(|s| s.task(call)));
        }
        self
    }

    /// Declares periodic schedule `s`: [`WorkerBuilder::build`] stores it in Redis unless an
    /// identical one is there (every worker declares its schedules at start; that changes and
    /// fires nothing), and updates it when its definition changed (from the next tick not yet
    /// enqueued). Removing a declaration from the code deletes nothing: remove it with
    /// [`scheduler_core::Schedules::remove`]. Its task must be registered on this worker.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use scheduler_core::{Task, TaskCall, TaskContext, TaskError};
    /// # struct Report;
    /// # impl Task for Report {
    /// #     const NAME: &'static str = "report";
    /// #     type Args = (u32,);
    /// #     type Output = ();
    /// #     async fn run(_: TaskContext, _: (u32,)) -> Result<(), TaskError> { Ok(()) }
    /// # }
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::Schedule;
    /// use scheduler_worker::Worker;
    /// let worker = Worker::builder()
    ///     .register(Report)
    ///     .schedule(Schedule::cron("daily-report", "0 30 2 * * *", "Europe/Paris")?
    ///         .task(TaskCall::<Report>::new((7,)))?)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn schedule(mut self, s: Schedule) -> Self {
        self.schedules.push(s);
        self
    }

    /// Declares a flow-control limit ([`scheduler_core::limits`], `docs/flow-control.md`),
    /// written to Redis at build when it differs from the one stored: the same as
    /// [`scheduler_core::Inspector::set_limit`], for every worker of the namespace. A limit
    /// removed from the code stays in Redis until removed there (`schedctl limits rm`).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::limits::{Limit, LimitScope};
    /// let worker = scheduler_worker::Worker::builder()
    ///     .limit(LimitScope::task("charge_card")?, Limit::rate(100, Duration::from_secs(1))?)
    ///     .limit(LimitScope::key("tenant")?, Limit::concurrency(5)?)
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, scope: LimitScope, limit: Limit) -> Self {
        self.limits.push((scope, limit));
        self
    }

    /// How often the schedule component looks for due ticks. Default 1 s. Not part of
    /// [`WorkerConfig`].
    pub fn schedule_poll(mut self, t: Duration) -> Self {
        self.schedule_poll = t;
        self
    }

    /// How long before its time a tick is enqueued as a delayed task. Default 5 s; keep it
    /// above twice [`WorkerBuilder::schedule_poll`] so ticks are enqueued ahead while any
    /// worker runs. Not part of [`WorkerConfig`].
    pub fn schedule_lookahead(mut self, t: Duration) -> Self {
        self.schedule_lookahead = t;
        self
    }

    /// Adds `m` to the hooks around each run of a task ([`crate::middleware::Middleware`]:
    /// before, after with the outcome, on dead). Middlewares are layers: the first added is the
    /// outermost, so its `before` runs first and its `after` and `on_dead` last. Default: none,
    /// and a run without middleware pays one check of an empty list. Not part of
    /// [`WorkerConfig`]: [`WorkerBuilder::config`] keeps it. See `docs/middleware.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use scheduler_core::async_trait;
    /// # use scheduler_worker::middleware::{Middleware, Run, RunOutcome};
    /// # struct Audit;
    /// # #[async_trait]
    /// # impl Middleware for Audit {}
    /// # struct Timing;
    /// # #[async_trait]
    /// # impl Middleware for Timing {}
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_worker::Worker;
    /// // Audit sees each run first and its outcome last; Timing sits inside it.
    /// let worker = Worker::builder().middleware(Audit).middleware(Timing).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn middleware(mut self, m: impl crate::middleware::Middleware) -> Self {
        self.middleware = self.middleware.push(Arc::new(m));
        self
    }

    /// Adds shared state reachable from tasks with `ctx.state::<T>()`.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Queues to serve, replacing the default (the registered tasks' queues), served in turn
    /// ([`QueueOrder::RoundRobin`]: it also undoes [`WorkerBuilder::queue_weights`] and
    /// [`WorkerBuilder::strict_priority`]).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.queues = queues.into_iter().map(Into::into).collect();
        self.cfg.queue_order = QueueOrder::RoundRobin;
        self
    }

    /// Queues to serve with their weights, in the manner of asynq's
    /// `{critical: 6, default: 3, low: 1}`: while several have ready work, each queue gets a
    /// share of this worker's claimed tasks proportional to its weight (60%, 30%, 10% here); a
    /// queue without ready work leaves its share to the others. Replaces
    /// [`WorkerBuilder::queues`]. See [`QueueOrder::Weighted`] and `docs/flow-control.md`.
    ///
    /// A weight of zero, or a queue named twice, is [`Error::InvalidConfig`] at
    /// [`WorkerBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use scheduler_worker::Worker;
    ///
    /// let worker = Worker::builder()
    ///     .queue_weights([("critical", 6), ("default", 3), ("low", 1)])
    ///     .build()
    ///     .await?;
    /// # drop(worker); Ok(()) }
    /// ```
    pub fn queue_weights<I, S>(mut self, weights: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let (queues, weights): (Vec<String>, Vec<u32>) =
            weights.into_iter().map(|(q, w)| (q.into(), w)).unzip();
        self.cfg.queues = queues;
        self.cfg.queue_order = QueueOrder::Weighted(weights);
        self
    }

    /// Queues to serve in strict priority order, first highest: each claim goes to the first
    /// queue that has ready work, so a queue is served only while every queue before it has
    /// none. Replaces [`WorkerBuilder::queues`]. See [`QueueOrder::Strict`] and
    /// `docs/flow-control.md`.
    ///
    /// A queue named twice is [`Error::InvalidConfig`] at [`WorkerBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use scheduler_worker::Worker;
    ///
    /// let b = Worker::builder().strict_priority(["critical", "default", "low"]);
    /// assert_eq!(b.settings().queues(), ["critical", "default", "low"]);
    /// ```
    pub fn strict_priority<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cfg.queues = queues.into_iter().map(Into::into).collect();
        self.cfg.queue_order = QueueOrder::Strict;
        self
    }

    /// Tasks run at once. Default 64; at least 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.cfg.concurrency = n;
        self
    }

    /// Most tasks one claim takes. Default 100; at least 1.
    pub fn claim_batch(mut self, n: usize) -> Self {
        self.cfg.claim_batch = n;
        self
    }

    /// Most tasks one promote or reap call moves: see [`WorkerConfig::promote_batch`]. Default
    /// 200; at least 1.
    pub fn promote_batch(mut self, n: u32) -> Self {
        self.cfg.promote_batch = n;
        self
    }

    /// Tasks claimed ahead of free slots, as a multiple of the concurrency: see
    /// [`WorkerConfig::prefetch_multiplier`]. Default 8; 0 claims only for free slots.
    pub fn prefetch_multiplier(mut self, n: usize) -> Self {
        self.cfg.prefetch_multiplier = n;
        self
    }

    /// Connection health checks: a `PING` every `interval` on the pub/sub and command
    /// connections; one without a reply within `timeout` gets its connection replaced. See
    /// [`WorkerConfig::health_check_interval`]. Defaults 1 s and 3 s; each at least
    /// [`MIN_INTERVAL`](crate::config::MIN_INTERVAL).
    pub fn health_check(mut self, interval: Duration, timeout: Duration) -> Self {
        self.cfg.health_check_interval = interval;
        self.cfg.health_check_timeout = timeout;
        self
    }

    /// Shards of a queue this worker is the first to use. Default 16; at least 1.
    pub fn default_shards(mut self, shards: u16) -> Self {
        self.cfg.default_shards = shards;
        self
    }

    /// Requires `queue` to have `shards` shards (at least 1).
    pub fn queue_shards(mut self, queue: impl Into<String>, shards: u16) -> Self {
        self.cfg.queue_shards.insert(queue.into(), shards);
        self
    }

    /// How long shutdown waits for running tasks before handing them back. Default 30 s; zero
    /// hands them back at once.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.cfg.shutdown_timeout = t;
        self
    }

    /// How long a running task whose cancellation was requested (`Client::cancel_task`) may
    /// take to return once its `ctx.cancelled()` fired, before it is aborted; either way it ends
    /// `cancelled`, not retried. Default 5 s; zero aborts it at once.
    pub fn cancel_grace(mut self, t: Duration) -> Self {
        self.cfg.cancel_grace = t;
        self
    }

    /// Lease length of a claimed task. Default 30 s; at least [`MIN_LEASE`](crate::config::MIN_LEASE) (300 ms).
    pub fn lease(mut self, t: Duration) -> Self {
        self.cfg.lease = t;
        self
    }

    /// Expired leases a task may have before it is buried, counted apart from its handler's
    /// failures (see [`WorkerConfig::max_lost_leases`]). Default 5.
    pub fn max_lost_leases(mut self, n: u32) -> Self {
        self.cfg.max_lost_leases = n;
        self
    }

    /// Promoter lock TTL. Default 10 s; at least [`MIN_LEASE`](crate::config::MIN_LEASE) (300 ms).
    pub fn lock_ttl(mut self, t: Duration) -> Self {
        self.cfg.lock_ttl = t;
        self
    }

    /// Full safety sweep interval (every partition's heads). Default 30 s; at least
    /// [`MIN_INTERVAL`](crate::config::MIN_INTERVAL).
    pub fn sweep_interval(mut self, t: Duration) -> Self {
        self.cfg.sweep_interval = t;
        self
    }

    /// Warm sweep interval (the heads of partitions with recent activity, which is how leases
    /// taken by other workers are learnt). Default 1 s; at least [`MIN_INTERVAL`](crate::config::MIN_INTERVAL).
    pub fn warm_sweep_interval(mut self, t: Duration) -> Self {
        self.cfg.warm_sweep_interval = t;
        self
    }

    /// How long a partition's due work may sit untouched before another worker takes the
    /// partition over from its lock holder. Default 50 ms; at least 2 ms.
    pub fn takeover_after(mut self, t: Duration) -> Self {
        self.cfg.takeover_after = t;
        self
    }

    /// How long results of succeeded tasks are kept. Default 24 h; zero deletes the record on
    /// success.
    pub fn result_ttl(mut self, t: Duration) -> Self {
        self.cfg.result_ttl = t;
        self
    }

    /// How long a success may wait to ride on its partition's next promote by this worker,
    /// when that promote is due within it: one Redis call acknowledges it and promotes, instead
    /// of two (a steady flow of precisely timed tasks costs Redis about a third less, see
    /// `docs/benchmarks.md`). A held success whose promote does not come is written alone once
    /// the window is over, so a result may become visible up to this much later. Default 10 ms;
    /// zero writes every success at once; at most 1 s.
    pub fn ack_ride_window(mut self, window: Duration) -> Self {
        self.cfg.ack_ride_window = window;
        self
    }

    /// Retry backoff. Default exponential with full jitter; its factor must be finite and not
    /// negative.
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.cfg.backoff = b;
        self
    }

    /// How each run span continues the trace its task's headers carry: as a child of the
    /// producer's enqueue span, or in a trace of its own linked to it. Default
    /// [`TraceMode::Child`](crate::trace::TraceMode::Child). See [`crate::trace`].
    pub fn trace_mode(mut self, mode: crate::trace::TraceMode) -> Self {
        self.cfg.trace_mode = mode;
        self
    }

    /// Largest argument payload run, and largest result stored, in bytes. Default 1 MiB; at
    /// least 1.
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.cfg.max_payload_bytes = n;
        self
    }

    /// Dead-set retention: maximum age, and maximum length per partition. Defaults 90 days and
    /// 10,000.
    pub fn dead_retention(mut self, max_age: Duration, max_len_per_partition: u64) -> Self {
        self.cfg.dead_max_age = max_age;
        self.cfg.dead_max_len = max_len_per_partition;
        self
    }

    /// How often the janitor enforces the dead-set retention. Default 5 minutes; at least
    /// [`MIN_INTERVAL`](crate::config::MIN_INTERVAL).
    pub fn janitor_interval(mut self, t: Duration) -> Self {
        self.cfg.janitor_interval = t;
        self
    }

    /// Heartbeat period; the heartbeat key lives three periods. Default 5 s; at least
    /// [`MIN_INTERVAL`](crate::config::MIN_INTERVAL).
    pub fn heartbeat_interval(mut self, t: Duration) -> Self {
        self.cfg.heartbeat_interval = t;
        self
    }

    /// Publishes the served queues' task counts per state as the `scheduler_queue_tasks` gauge
    /// every `every` (at least [`MIN_INTERVAL`](crate::config::MIN_INTERVAL)). Default off.
    pub fn queue_metrics(mut self, every: Duration) -> Self {
        self.cfg.queue_metrics_interval = Some(every);
        self
    }

    /// Serves every metric of this process (the worker's, the client's, Redis round trips and
    /// the process's CPU, memory and open file descriptors) in the Prometheus format on `addr`
    /// over HTTP: [`build`](WorkerBuilder::build) calls [`crate::prometheus::install`]. Default
    /// off. Feature `prometheus`. Pair it with [`queue_metrics`](WorkerBuilder::queue_metrics)
    /// for the backlog gauges.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use std::time::Duration;
    /// use scheduler_worker::Worker;
    ///
    /// Worker::builder()
    ///     .queues(["emails"])
    ///     .metrics_addr("0.0.0.0:9090".parse().unwrap())
    ///     .queue_metrics(Duration::from_secs(15))
    ///     .build()
    ///     .await?
    ///     .run_until_shutdown_signal()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Attempts at writing a task's outcome while Redis fails transiently: see
    /// [`WorkerConfig::outcome_write_attempts`]. Default [`DEFAULT_OUTCOME_WRITE_ATTEMPTS`](crate::config::DEFAULT_OUTCOME_WRITE_ATTEMPTS);
    /// at least 1.
    pub fn outcome_write_attempts(mut self, n: u32) -> Self {
        self.cfg.outcome_write_attempts = n;
        self
    }

    /// Attempts at handing tasks back while Redis fails transiently: see
    /// [`WorkerConfig::release_attempts`]. Default [`DEFAULT_RELEASE_ATTEMPTS`](crate::config::DEFAULT_RELEASE_ATTEMPTS); at least 1.
    pub fn release_attempts(mut self, n: u32) -> Self {
        self.cfg.release_attempts = n;
        self
    }

    /// Replaces every setting a [`WorkerConfig`] holds, keeping the Redis URL, the TLS
    /// settings, the registered tasks and the shared state. Setters called before it are
    /// overridden (except those four); call it first.
    pub fn config(mut self, cfg: WorkerConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// The settings recorded so far (not yet checked: [`WorkerBuilder::build`] does).
    pub fn settings(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// Runs the task history archive (feature `archive`): [`WorkerBuilder::build`] connects to
    /// its PostgreSQL (migrating the schema) and turns the archive on for the namespace with the
    /// config's bound; [`Worker::run`] then runs an [`crate::archive::Archiver`] for this
    /// worker's partitions. Without it the worker still follows the namespace's archive setting
    /// (its finishing scripts append to the streams while it is on) but stores nothing.
    /// See `docs/storage.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_worker::{archive::ArchiveConfig, Worker};
    /// let worker = Worker::builder()
    ///     .archive(ArchiveConfig::new("postgres://postgres@127.0.0.1/history"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "archive")]
    pub fn archive(mut self, cfg: crate::archive::ArchiveConfig) -> Self {
        self.archive = Some(cfg);
        self
    }

    /// Connects to Redis and resolves the partitions to serve.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a bad setting (see [`WorkerConfig::validate`]) or a metrics
    /// address that cannot be served, before any connection is made; [`Error::InvalidUrl`], a Redis error when Redis cannot be
    /// reached, [`Error::InvalidQueueName`], [`Error::ShardMismatch`];
    /// [`Error::UnknownScheduleTask`] for a declared schedule whose task is not registered (before
    /// connecting, nothing stored), [`Error::InvalidSchedule`] for the cron expression or time
    /// zone of a registered `#[task(cron)]`, or the errors of
    /// [`scheduler_core::Schedules::declare`]; [`Error::Archive`] when the archive's PostgreSQL
    /// cannot be reached (feature `archive`).
    pub async fn build(mut self) -> Result<Worker, Error> {
        self.cfg.validate()?;
        for s in std::mem::take(&mut self.task_schedules) {
            self.schedules.push(s?);
        }
        if self.schedule_poll.is_zero() || self.schedule_lookahead.is_zero() {
            return Err(Error::InvalidConfig(
                "schedule_poll and schedule_lookahead must be above 0".into(),
            ));
        }
        #[cfg(feature = "prometheus")]
        if let Some(addr) = self.metrics_addr {
            crate::prometheus::install(addr)?;
        }
        for s in &self.schedules {
            let task = s.task_name().unwrap_or_default();
            if self.registry.get(task).is_none() {
                return Err(Error::UnknownScheduleTask {
                    schedule: s.name().to_owned(),
                    task: task.to_owned(),
                });
            }
        }
        let mut ccfg = ClientConfig::new(&self.redis_url)
            .namespace(&self.cfg.namespace)
            .default_shards(self.cfg.default_shards)
            .health_check(Some(HealthCheck {
                interval: self.cfg.health_check_interval,
                timeout: self.cfg.health_check_timeout,
            }));
        for (q, n) in &self.cfg.queue_shards {
            ccfg = ccfg.queue_shards(q, *n);
        }
        if let Some(tls) = &self.tls {
            ccfg = ccfg.tls(tls.clone());
        }
        let client = Client::with_config(ccfg).await?;
        #[cfg(feature = "archive")]
        let archive = match self.archive {
            Some(cfg) => Some((crate::archive::start(client.store(), &cfg).await?, cfg)),
            None => None,
        };
        let mut queues = self.cfg.queues.clone();
        if queues.is_empty() {
            queues = self
                .registry
                .default_queues()
                .iter()
                .map(|q| (*q).to_owned())
                .collect();
        }
        if queues.is_empty() {
            queues.push("default".to_owned());
        }
        let mut partitions = Vec::new();
        for q in &queues {
            let shards = client.shards(q).await?;
            for s in 0..shards {
                partitions.push(client.store().partition(q, s));
            }
        }
        warn_on_eviction(&client).await;
        if !self.limits.is_empty() {
            let (stored, _) = client.store().limits().await?;
            for (scope, limit) in &self.limits {
                if stored.get(scope) != Some(limit) {
                    client.store().set_limit(scope, *limit).await?;
                }
            }
        }
        let schedules = Schedules::new(&client);
        for s in &self.schedules {
            let what = schedules.declare(s).await?;
            tracing::debug!(schedule = s.name(), ?what, "schedule declared");
        }
        Ok(Worker {
            schedule_poll: self.schedule_poll,
            schedule_lookahead: self.schedule_lookahead,
            schedules,
            client,
            cfg: self.cfg,
            registry: self.registry,
            state: Arc::new(self.state),
            middleware: self.middleware,
            partitions,
            stop: CancellationToken::new(),
            #[cfg(feature = "archive")]
            archive,
        })
    }
}

async fn warn_on_eviction(client: &Client) {
    let mut conn = client.store().conn();
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await;
    if let Ok(v) = policy {
        if let Some(p) = v.get(1).filter(|p| p.as_str() != "noeviction") {
            tracing::warn!(policy = %p, "Redis maxmemory-policy is not noeviction: Redis may evict task records under memory pressure and lose tasks");
        }
    }
}

/// A worker process: runs registered tasks from its queues, promotes due tasks, recovers tasks
/// of dead workers.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_worker::Worker;
/// Worker::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .queues(["emails"])
///     .concurrency(64)
///     .build()
///     .await?
///     .run_until_shutdown_signal()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Worker {
    client: Client,
    cfg: WorkerConfig,
    registry: Registry,
    state: Arc<StateMap>,
    middleware: crate::middleware::Stack,
    partitions: Vec<scheduler_core::store::Partition>,
    stop: CancellationToken,
    schedules: Schedules,
    schedule_poll: Duration,
    schedule_lookahead: Duration,
    #[cfg(feature = "archive")]
    archive: Option<(crate::archive::HistoryDb, crate::archive::ArchiveConfig)>,
}

/// Stops a running [`Worker`] gracefully from elsewhere.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

/// What one run of a worker did, returned when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Tasks claimed.
    pub claimed: u64,
    /// Runs acknowledged as succeeded.
    pub succeeded: u64,
    /// Failed runs scheduled for retry.
    pub retried: u64,
    /// Failed runs buried in the dead set.
    pub dead: u64,
    /// Outcomes rejected because the lease had been lost.
    pub stale: u64,
    /// Runs that panicked.
    pub panicked: u64,
    /// Runs that hit their time limit.
    pub timed_out: u64,
    /// Tasks this process promoted.
    pub promoted: u64,
    /// Expired leases this process recovered.
    pub reaped: u64,
    /// Partitions this process took over from a promoter that missed its due work.
    pub takeovers: u64,
    /// Tasks handed back at shutdown: prefetched ones that had not started, and running ones
    /// still running at the end of the shutdown timeout.
    pub released: u64,
    /// Peak of the tasks this worker held beyond its concurrency: received by its claims
    /// (leased to it) and not finished, so running or waiting for a free slot, less
    /// `concurrency`. It measures the adaptive prefetch (see
    /// [`crate::WorkerConfig::prefetch_multiplier`]): at most `concurrency ×
    /// prefetch_multiplier`, and near Redis a few tasks.
    pub prefetch_peak: u64,
}

impl Worker {
    /// A builder with default settings.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// A handle that starts the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// The settings this worker runs with.
    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// A client sharing this worker's connection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs until SIGTERM or SIGINT (Ctrl-C), then shuts down gracefully.
    ///
    /// # Errors
    ///
    /// When the signal handlers cannot be installed.
    pub async fn run_until_shutdown_signal(self) -> Result<WorkerReport, Error> {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Error::Protocol(format!("cannot install SIGTERM handler: {e}")))?;
        let signal = async move {
            #[cfg(unix)]
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown signal received");
        };
        Ok(self.run(signal).await)
    }

    /// Runs until `shutdown` completes or a [`ShutdownHandle`] fires, then shuts down: stops
    /// fetching and promoting, waits up to the shutdown timeout for running tasks, hands the rest
    /// back to the ready set at once, writes every outcome, and returns what it did.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> WorkerReport {
        let worker_id = worker_id();
        let (promoter_tx, promoter_rx) = mpsc::unbounded_channel();
        let (acker_tx, acker_rx) = mpsc::unbounded_channel();
        let index: HashMap<(String, u16), usize> = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.queue.clone(), p.shard), i))
            .collect();
        let n = self.partitions.len();
        let cfg = self.cfg;
        let store = self.client.store().clone();
        let partitions: Arc<[Partition]> = self.partitions.into();
        // What several components share; each gets only what it uses, below.
        let ready = Arc::new(Ready::new(n));
        // A queue paused before this worker started must not be claimed from before the
        // listener has subscribed and read the pause state: read it once before the fetcher
        // and promoter start (the listener keeps it up to date from then on).
        match store.paused_queues().await {
            Ok(paused) => {
                for (idx, p) in partitions.iter().enumerate() {
                    ready.set_paused(idx, paused.contains_key(&p.queue));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the paused queues at start; the listener reads them when it subscribes");
            }
        }
        // The limits in force, read before the first claim (the listener keeps them up to
        // date from then on).
        let limiter = Arc::new(crate::limiter::Limiter::new(store.clone(), cfg.lease));
        if let Err(e) = limiter.reload().await {
            tracing::warn!(error = %e, "could not read the limits at start; the listener reads them when it subscribes");
        }
        let inflight: Arc<InflightMap> = Arc::default();
        let counters: Arc<Counters> = Arc::default();
        // Stops fetching, promoting and listening (first step of shutdown).
        let stop_intake = self.stop.clone();
        // Stops the lease renewer and heartbeat (last step of shutdown).
        let stop_all = CancellationToken::new();
        tracing::info!(worker = %worker_id, partitions = n, tasks = ?self.registry.names(), concurrency = cfg.concurrency, "worker started");
        let slots = Arc::new(Semaphore::new(cfg.concurrency));
        let executors = TaskTracker::new();
        let started_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let bg = TaskTracker::new();
        // The `on_dead` hooks of middleware, started by the acker; waited for at the end.
        let hooks = TaskTracker::new();
        // Task events of queues with events on; the publisher ends with the last sink.
        let (events, publisher) = crate::events::Sink::new(store.clone());
        let publisher = tokio::spawn(publisher);
        let acker_params = Arc::new(AckerParams {
            store: store.clone(),
            partitions: Arc::clone(&partitions),
            counters: Arc::clone(&counters),
            result_ttl: cfg.result_ttl,
            outcome_write_attempts: cfg.outcome_write_attempts,
            release_attempts: cfg.release_attempts,
            rides: acker::Rides::new(n, cfg.ack_ride_window),
            hooks: hooks.clone(),
            events: events.clone(),
        });
        let acker = tokio::spawn(acker::run(Arc::clone(&acker_params), acker_rx));
        bg.spawn(notify::run(Arc::new(NotifyParams {
            store: store.clone(),
            partitions: Arc::clone(&partitions),
            index,
            ready: Arc::clone(&ready),
            promoter_tx,
            health_check_interval: cfg.health_check_interval,
            health_check_timeout: cfg.health_check_timeout,
            paused_refresh: cfg.sweep_interval,
            limiter: Arc::clone(&limiter),
            inflight: Arc::clone(&inflight),
            stop_intake: stop_intake.clone(),
        })));
        let lateness = Arc::new(crate::shared::Lateness::new(
            partitions.iter().map(|p| p.queue.as_str()),
        ));
        let executor = Arc::new(ExecutorParams {
            partitions: Arc::clone(&partitions),
            worker_id: worker_id.clone(),
            registry: self.registry,
            state: self.state,
            lease_store: Arc::new(scheduler_core::task::LeaseStore::new(
                store.clone(),
                Arc::clone(&partitions),
            )),
            middleware: self.middleware,
            max_payload_bytes: cfg.max_payload_bytes,
            trace_mode: cfg.trace_mode,
            backoff: cfg.backoff.clone(),
            inflight: Arc::clone(&inflight),
            counters: Arc::clone(&counters),
            acker_tx: acker_tx.clone(),
            stop_intake: stop_intake.clone(),
            cancel_grace: cfg.cancel_grace,
            events: events.clone(),
            limiter,
            lateness: Arc::clone(&lateness),
            client: self.client.clone(),
        });
        let intake = Intake::new(
            Arc::new(FetcherParams {
                store: store.clone(),
                partitions: Arc::clone(&partitions),
                worker_id: worker_id.clone(),
                ready: Arc::clone(&ready),
                inflight: Arc::clone(&inflight),
                counters: Arc::clone(&counters),
                executor,
                concurrency: cfg.concurrency,
                claim_batch: cfg.claim_batch,
                prefetch_multiplier: cfg.prefetch_multiplier,
                lease: cfg.lease,
                release_attempts: cfg.release_attempts,
                queues: cfg.queues.clone(),
                queue_order: cfg.queue_order.clone(),
                stop_intake: stop_intake.clone(),
                stop_all: stop_all.clone(),
            }),
            Arc::clone(&slots),
            executors.clone(),
        );
        bg.spawn(promoter::run(
            Arc::new(PromoterParams {
                store: store.clone(),
                partitions: Arc::clone(&partitions),
                worker_id: worker_id.clone(),
                ready: Arc::clone(&ready),
                counters: Arc::clone(&counters),
                lock_ttl: cfg.lock_ttl,
                takeover_after: cfg.takeover_after,
                warm_sweep_interval: cfg.warm_sweep_interval,
                sweep_interval: cfg.sweep_interval,
                promote_batch: cfg.promote_batch,
                max_lost_leases: cfg.max_lost_leases,
                intake: Arc::clone(&intake),
                lease: cfg.lease,
                stop_intake: stop_intake.clone(),
                heads_ms: (0..n).map(|_| AtomicI64::new(i64::MAX)).collect(),
                acker: Arc::clone(&acker_params),
                client: self.client.clone(),
            }),
            promoter_rx,
        ));
        bg.spawn(janitor::run(Arc::new(JanitorParams {
            store: store.clone(),
            partitions: Arc::clone(&partitions),
            janitor_interval: cfg.janitor_interval,
            dead_max_age: cfg.dead_max_age,
            dead_max_len: cfg.dead_max_len,
            stop_intake: stop_intake.clone(),
            client: self.client.clone(),
        })));
        bg.spawn(gauges::run(Arc::new(GaugesParams {
            store: store.clone(),
            partitions: Arc::clone(&partitions),
            queue_metrics_interval: cfg.queue_metrics_interval,
            worker_id: worker_id.clone(),
            stop_intake: stop_intake.clone(),
        })));
        bg.spawn(ticker::run(Arc::new(TickerParams {
            schedules: self.schedules,
            poll: self.schedule_poll,
            lookahead: self.schedule_lookahead,
            stop_intake: stop_intake.clone(),
        })));
        bg.spawn(fetcher::run(Arc::clone(&intake)));
        let lease = tokio::spawn(lease::run(Arc::new(LeaseParams {
            store: store.clone(),
            partitions: Arc::clone(&partitions),
            lease: cfg.lease,
            inflight: Arc::clone(&inflight),
            stop_all: stop_all.clone(),
        })));
        let beat = tokio::spawn(heartbeat::run(
            Arc::new(HeartbeatParams {
                store: store.clone(),
                partitions: Arc::clone(&partitions),
                worker_id: worker_id.clone(),
                concurrency: cfg.concurrency,
                heartbeat_interval: cfg.heartbeat_interval,
                inflight: Arc::clone(&inflight),
                counters: Arc::clone(&counters),
                lateness,
                stop_all: stop_all.clone(),
            }),
            started_ms,
        ));
        #[cfg(feature = "archive")]
        let archiver = self.archive.map(|(db, acfg)| {
            let a = crate::archive::Archiver::new(
                store.clone(),
                db,
                partitions.to_vec(),
                acfg,
                worker_id.clone(),
            );
            tokio::spawn(a.run(stop_all.clone()))
        });

        tokio::select! {
            () = shutdown => {}
            () = self.stop.cancelled() => {}
        }
        // 1. Stop taking work: fetcher, promoter (releases its locks) and listener end.
        stop_intake.cancel();
        bg.close();
        bg.wait().await;
        // 2. Let running tasks finish, up to the shutdown timeout.
        executors.close();
        let finished = tokio::time::timeout(cfg.shutdown_timeout, executors.wait())
            .await
            .is_ok();
        // 3. Hand back, at once, whatever still runs.
        if !finished {
            let left: Vec<((usize, String), i64)> = {
                let mut inflight = inflight.lock().expect("inflight poisoned");
                inflight
                    .drain()
                    .map(|(k, f)| {
                        f.abort.abort();
                        (k, f.token)
                    })
                    .collect()
            };
            release(&store, &partitions, cfg.release_attempts, &counters, left).await;
            executors.wait().await;
        }
        // 4. Write every outcome still queued, then stop the rest.
        let (tx, rx) = oneshot::channel();
        if acker_tx.send(AckMsg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
        // The events of those outcomes.
        events.flush().await;
        // The `on_dead` hooks the last outcomes started (none without middleware), for at most
        // the shutdown timeout: a hook that hangs must not keep the process from stopping.
        hooks.close();
        if tokio::time::timeout(cfg.shutdown_timeout, hooks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = hooks.len(),
                "on_dead middleware hooks still running at the end of the shutdown timeout; not waited for"
            );
        }
        stop_all.cancel();
        let _ = lease.await;
        let _ = beat.await;
        #[cfg(feature = "archive")]
        if let Some(a) = archiver {
            let _ = a.await;
        }
        acker.abort();
        publisher.abort();
        let c = &counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let report = WorkerReport {
            claimed: get(&c.claimed),
            succeeded: get(&c.succeeded),
            retried: get(&c.retried),
            dead: get(&c.dead),
            stale: get(&c.stale),
            panicked: get(&c.panicked),
            timed_out: get(&c.timed_out),
            promoted: get(&c.promoted),
            reaped: get(&c.reaped),
            takeovers: get(&c.takeovers),
            released: get(&c.released),
            prefetch_peak: get(&c.prefetch_peak),
        };
        tracing::info!(worker = %worker_id, ?report, "worker stopped");
        report
    }
}

/// Hands `left`, tasks still running at the end of the shutdown timeout, back to their ready
/// sets.
async fn release(
    store: &Store,
    partitions: &[Partition],
    attempts: u32,
    counters: &Counters,
    left: Vec<((usize, String), i64)>,
) {
    let mut by_part: HashMap<usize, Vec<(String, i64)>> = HashMap::new();
    for ((idx, id), token) in left {
        by_part.entry(idx).or_default().push((id, token));
    }
    for (idx, items) in by_part {
        let p = &partitions[idx];
        let refs: Vec<(&str, i64)> = items.iter().map(|(i, t)| (i.as_str(), *t)).collect();
        match scheduler_core::store::retry_transient(attempts, || store.release(p, &refs)).await {
            Ok(outs) => {
                let n = outs
                    .iter()
                    .filter(|o| **o == scheduler_core::scripts::Outcome::Done)
                    .count();
                Counters::add(&counters.released, n as u64);
                crate::metrics::count(crate::metrics::RELEASED, &p.queue, n as u64);
                tracing::info!(queue = %p.queue, shard = p.shard, released = n, "handed running tasks back");
            }
            Err(e) => {
                tracing::error!(error = %e, "could not hand tasks back; they return when their lease expires")
            }
        }
    }
}

/// `<host>:<pid>:<random>`: unique per process, readable by operators.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}
