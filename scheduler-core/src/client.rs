//! The producer side: [`Client`] enqueues, cancels and inspects tasks; [`TaskCall`] is one call
//! of a task with its options.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncCommands;
use serde::de::DeserializeOwned;

use crate::conn::{ConnectOptions, HealthCheck, Mode, TlsConfig};
use crate::defaults;
use crate::error::{Error, Result};
use crate::events::{EventKind, EventStream, TaskEvent};
use crate::headers::Headers;
use crate::id::{validate_id, validate_queue, TaskId};
use crate::info::{QueueStats, TaskInfo, TaskState};
use crate::scripts::{CancelReply, Due, NewTask, Outcome, RequeueReply};
use crate::store::{retry_transient_for, Partition, Store};
use crate::task::Task;

pub mod middleware;
mod unique;

pub use middleware::EnqueueMiddleware;

/// Settings of a [`Client`]. Every field has a documented default; build with
/// [`ClientConfig::new`] and the setters.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    url: String,
    namespace: String,
    default_shards: u16,
    queue_shards: HashMap<String, u16>,
    max_payload_bytes: usize,
    cancelled_ttl: Duration,
    retry_attempts: u32,
    loading_wait: Duration,
    replica_wait: Option<(u32, Duration)>,
    tls: Option<TlsConfig>,
    health_check: Option<HealthCheck>,
    middleware: middleware::EnqueueStack,
}

impl ClientConfig {
    /// Settings for the Redis at `url` (any URL form of [`crate::conn`]: single node, Cluster,
    /// Sentinel, TLS), with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            namespace: defaults::NAMESPACE.into(),
            default_shards: defaults::SHARDS,
            queue_shards: HashMap::new(),
            max_payload_bytes: defaults::MAX_PAYLOAD_BYTES,
            cancelled_ttl: Duration::from_secs(3600),
            retry_attempts: 5,
            loading_wait: crate::store::DEFAULT_LOADING_WAIT,
            replica_wait: None,
            tls: None,
            health_check: Some(HealthCheck::default()),
            middleware: middleware::EnqueueStack::default(),
        }
    }

    /// Key namespace, the prefix of every key. Default `sched`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Shards of a queue this process is the first to use. Default 16. A queue already recorded in
    /// Redis keeps its recorded count.
    pub fn default_shards(mut self, shards: u16) -> Self {
        self.default_shards = shards.max(1);
        self
    }

    /// Requires `queue` to have exactly `shards` shards: recorded on first use, and an
    /// [`Error::ShardMismatch`] if Redis records another count.
    pub fn queue_shards(mut self, queue: impl Into<String>, shards: u16) -> Self {
        self.queue_shards.insert(queue.into(), shards.max(1));
        self
    }

    /// Largest encoded argument payload accepted, in bytes. Default 1 MiB.
    pub fn max_payload_bytes(mut self, max: usize) -> Self {
        self.max_payload_bytes = max;
        self
    }

    /// How long a cancelled task's record is kept. Default 1 hour; zero deletes it at once.
    pub fn cancelled_ttl(mut self, ttl: Duration) -> Self {
        self.cancelled_ttl = ttl;
        self
    }

    /// Acknowledge an enqueue only once `replicas` replicas have it (Redis `WAIT`, at most
    /// `timeout` per call); until then the client retries it like any transient failure (safe:
    /// enqueue is idempotent by task id) and, once its retries are spent, returns
    /// [`Error::NotReplicated`]. Default: off (an enqueue is acknowledged when the master applied
    /// it).
    ///
    /// Redis replicates asynchronously, so without this an enqueue acknowledged just before the
    /// master fails can be lost; with Sentinel, also one acknowledged by the old master during
    /// the failover (`docs/deployment.md`). With this, an acknowledged enqueue is on `replicas`
    /// replicas, and Sentinel promotes the replica that is most up to date. Each enqueue call
    /// waits about one replication round trip more. Single node with replicas and Sentinel only:
    /// [`Client::with_config`] refuses it on a Cluster.
    pub fn wait_for_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_wait = (replicas > 0).then_some((replicas, timeout));
        self
    }

    /// Attempts of an operation that fails with a transient Redis error (connection lost, Redis
    /// loading, failover), with backoff from 50 ms to 2 s. Default 5; 1 means no retry. Safe
    /// because enqueue is idempotent by task id.
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.retry_attempts = attempts.max(1);
        self
    }

    /// How long an operation keeps retrying while Redis answers `LOADING` (loading its data set
    /// after a restart: seconds to minutes with a large AOF), polling every 100-500 ms. These
    /// retries do not use [`ClientConfig::retry_attempts`]; once the wait is spent, a `LOADING`
    /// reply counts as one ordinary transient failure, and the caller finally gets the typed
    /// error ([`Error::is_loading`]). Default 30 s; zero treats `LOADING` like any transient
    /// error.
    pub fn loading_wait(mut self, wait: Duration) -> Self {
        self.loading_wait = wait;
        self
    }

    /// Health check of the command connection: see [`ConnectOptions::health_check`]. Default
    /// [`HealthCheck::default`] (a `PING` every second, the connection replaced after 3 s
    /// without a reply).
    pub fn health_check(mut self, check: Option<HealthCheck>) -> Self {
        self.health_check = check;
        self
    }

    /// Certificates for `rediss` URLs (CA, client certificate). Default: from the environment
    /// ([`TlsConfig::from_env`]), else the system's roots.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// The producer's handle: enqueue, cancel, inspect, wait for results.
///
/// Cheap to clone; clones share one multiplexed connection.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_core::{Client, TaskRequest};
/// use std::time::Duration;
///
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let req = TaskRequest::new("send_reminder", "emails", &(42u64, "hi"))?
///     .countdown(Duration::from_secs(30));
/// let id = client.enqueue_request(req).await?;
/// println!("{:?}", client.status(&id).await?.state);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    store: Store,
    config: Arc<ClientConfig>,
    // Shard counts read from Redis, per queue. A std mutex: held for a map lookup, never across
    // an await.
    shards: Arc<Mutex<HashMap<String, u16>>>,
}

impl Client {
    /// Connects with default settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] or a Redis error when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::with_config(ClientConfig::new(url)).await
    }

    /// Connects with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] or a Redis error when Redis cannot be reached.
    pub async fn with_config(config: ClientConfig) -> Result<Self> {
        let mut opts = ConnectOptions::new(&config.url)
            .namespace(&config.namespace)
            .health_check(config.health_check);
        if let Some(tls) = &config.tls {
            opts = opts.tls(tls.clone());
        }
        let store = Store::connect_with(opts).await?;
        // The history archive's setting, so that cancel.lua archives cancelled tasks when it is
        // on; best effort: a producer whose ACL rules deny the read keeps it off.
        if let Err(e) = store.load_archive_setting().await {
            tracing::debug!(error = %e, "archive setting not read; the archive is off for this client");
        }
        // The queues with task events on, so that enqueues and cancels publish theirs.
        if let Err(e) = store.load_events_setting().await {
            tracing::debug!(error = %e, "task events setting not read; read again later");
        }
        if config.replica_wait.is_some() && store.mode() == Mode::Cluster {
            return Err(Error::InvalidConfig(
                "wait_for_replicas is not supported on a Redis Cluster".into(),
            ));
        }
        Ok(Self {
            store,
            config: Arc::new(config),
            shards: Arc::default(),
        })
    }

    /// Runs `op` with this client's retry policy: [`ClientConfig::retry_attempts`] for transient
    /// errors, [`ClientConfig::loading_wait`] while Redis is loading.
    pub(crate) async fn retry<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        retry_transient_for(self.config.retry_attempts, self.config.loading_wait, op).await
    }

    /// The underlying store (the broker layer: not a public API).
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shard count of `queue`, registering it on first use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], [`Error::ShardMismatch`], or a Redis error.
    pub async fn shards(&self, queue: &str) -> Result<u16> {
        if let Some(n) = self.shards.lock().expect("shard cache poisoned").get(queue) {
            return Ok(*n);
        }
        let wanted = self.config.queue_shards.get(queue).copied();
        let stored = self
            .retry(|| {
                self.store
                    .register_queue(queue, wanted.unwrap_or(self.config.default_shards))
            })
            .await?;
        if let Some(configured) = wanted.filter(|w| *w != stored) {
            return Err(Error::ShardMismatch {
                queue: queue.to_owned(),
                configured,
                stored,
            });
        }
        self.shards
            .lock()
            .expect("shard cache poisoned")
            .insert(queue.to_owned(), stored);
        Ok(stored)
    }

    pub(crate) async fn partition_of(&self, id: &TaskId) -> Result<Partition> {
        validate_queue(id.queue())?;
        validate_id(id.id())?;
        let shards = self.shards(id.queue()).await?;
        Ok(self.store.partition(id.queue(), id.shard(shards)))
    }

    /// A request's arguments within the payload cap and its priority in 0..=9.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`], [`Error::InvalidPriority`].
    fn check_size_and_priority(&self, req: &TaskRequest) -> Result<()> {
        if req.args.len() > self.config.max_payload_bytes {
            return Err(Error::PayloadTooLarge {
                size: req.args.len(),
                max: self.config.max_payload_bytes,
            });
        }
        if req.priority > 9 {
            return Err(Error::InvalidPriority(req.priority));
        }
        check_deadline(req.due, req.expires, SystemTime::now())
    }

    /// Enqueues one call of a task.
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue_request`], plus [`Error::Encode`] when the arguments cannot be encoded.
    pub async fn enqueue<T: Task>(&self, call: TaskCall<T>) -> Result<TaskId> {
        self.enqueue_request(call.into_request()?).await
    }

    /// Enqueues one task. With a caller-chosen id, a second enqueue of the same id returns the
    /// same id and changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`], [`Error::HeadersTooLarge`], [`Error::InvalidQueueName`], [`Error::InvalidTaskId`],
    /// [`Error::InvalidPriority`], [`Error::ShardMismatch`], what a middleware's refusal returns
    /// ([`Error::EnqueueRefused`], [`ClientConfig::middleware`]), or a Redis error that
    /// persisted through the configured retries.
    pub async fn enqueue_request(&self, req: TaskRequest) -> Result<TaskId> {
        let mut out = self.enqueue_bulk(vec![req]).await?;
        Ok(out.remove(0).0)
    }

    /// Enqueues many tasks ([`TaskRequest`]s, or typed [`TaskCall`]s, encoded on the way),
    /// each first through the client's middleware ([`ClientConfig::middleware`]): grouped by
    /// partition, at most 100 per script call, all calls sent in
    /// pipelines of one round trip each. Returns, in input order, each id and whether it was
    /// created (`false`: a task with that id existed already).
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue_request`]; a bad request, or one a middleware refuses
    /// ([`Error::EnqueueRefused`]), fails the whole call before anything is sent.
    /// When Redis refuses some tasks after accepting others (out of memory), the error is
    /// [`Error::PartlyEnqueued`], which says which tasks to send again.
    ///
    /// # Examples
    ///
    /// Typed calls and untyped requests alike:
    ///
    /// ```no_run
    /// # use scheduler_core::{Client, Result, TaskRequest};
    /// # async fn demo(client: &Client) -> Result<()> {
    /// let reqs = (0..1000u64).map(|i| TaskRequest::new("send_reminder", "emails", &(i, "hi")));
    /// let ids = client.enqueue_bulk(reqs.collect::<Result<Vec<_>>>()?).await?;
    /// assert_eq!(ids.len(), 1000);
    /// # Ok(()) }
    /// ```
    ///
    /// With `#[task] async fn send_reminder(user_id: u64, text: String)`, the calls go in as
    /// they are: `client.enqueue_bulk(users.iter().map(|u| send_reminder::new(u.id, text.clone())))`.
    pub async fn enqueue_bulk<R: IntoTaskRequest>(
        &self,
        reqs: impl IntoIterator<Item = R>,
    ) -> Result<Vec<(TaskId, bool)>> {
        let started = std::time::Instant::now();
        let mut reqs = reqs
            .into_iter()
            .map(IntoTaskRequest::into_task_request)
            .collect::<Result<Vec<_>>>();
        let hooks = &self.config.middleware;
        if !hooks.is_empty() {
            if let Ok(r) = &mut reqs {
                if let Err(e) = hooks.before(r).await {
                    reqs = Err(e);
                }
            }
        }
        let out = match reqs {
            Ok(reqs) => {
                use tracing::Instrument;
                let span = match reqs.first() {
                    Some(r) => crate::trace::enqueue_span(&r.queue, &r.name, reqs.len()),
                    None => tracing::Span::none(),
                };
                let out = self.enqueue_requests(reqs).instrument(span).await;
                self.publish_enqueued(&out).await;
                if !hooks.is_empty() {
                    hooks.after(&out).await;
                }
                out
            }
            Err(e) => Err(e),
        };
        crate::metrics::enqueue_finished(started.elapsed(), &out);
        out
    }

    /// Reads the task events setting again in the background when this client's copy is older
    /// than [`crate::defaults::EVENTS_SETTING_REFRESH`]: one `HKEYS` per period at most.
    pub(crate) fn refresh_events_setting(&self) {
        if self
            .store
            .take_events_refresh(crate::defaults::EVENTS_SETTING_REFRESH)
        {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.load_events_setting().await {
                    tracing::debug!(error = %e, "task events setting not read");
                }
            });
        }
    }

    /// Publishes `enqueued` for the tasks `out` created in queues with events on (none: no
    /// command). At most once: a failure is logged, never the enqueue's error.
    async fn publish_enqueued(&self, out: &Result<Vec<(TaskId, bool)>>) {
        self.refresh_events_setting();
        let done = match out {
            Ok(done) => done,
            Err(Error::PartlyEnqueued { enqueued, .. }) => enqueued,
            Err(_) => return,
        };
        let events: Vec<TaskEvent> = done
            .iter()
            .filter(|(id, created)| *created && self.store.events_on(id.queue()))
            .map(|(id, _)| TaskEvent::new(id.clone(), EventKind::Enqueued, 0))
            .collect();
        self.publish(&events).await;
    }

    /// Publishes `events` (none: no command); a failure is logged at debug level.
    async fn publish(&self, events: &[TaskEvent]) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.store.publish_events(events).await {
            tracing::debug!(error = %e, "task events not published");
        }
    }

    /// [`Client::enqueue_bulk`] of requests already encoded, without the call's metrics.
    async fn enqueue_requests(&self, reqs: Vec<TaskRequest>) -> Result<Vec<(TaskId, bool)>> {
        if reqs.iter().any(|r| r.unique.is_some()) {
            return Box::pin(self.enqueue_mixed(reqs)).await;
        }
        let mut groups: HashMap<Partition, Vec<(usize, NewTask)>> = HashMap::new();
        let mut ids = Vec::with_capacity(reqs.len());
        // Task names in request order, for the `scheduler_tasks_enqueued_total` labels.
        let mut names = Vec::with_capacity(reqs.len());
        // The enqueue span's trace context, for the run spans to continue (feature `otel`):
        // read once per call, empty when the span is not traced.
        #[cfg(feature = "otel")]
        let trace_headers = {
            let mut h = Headers::new();
            crate::otel::inject(&mut h);
            h
        };
        for (i, req) in reqs.into_iter().enumerate() {
            #[cfg(feature = "otel")]
            let req = {
                let mut req = req;
                if !trace_headers.is_empty() {
                    req.headers.extend(trace_headers.clone());
                }
                req
            };
            self.check_size_and_priority(&req)?;
            let id = req.id.map_or_else(
                || TaskId::generate(&req.queue),
                |id| TaskId::new(&req.queue, id),
            );
            let headers = crate::headers::encode(&req.headers)?;
            let p = self.partition_of(&id).await?;
            names.push(req.name.clone());
            groups.entry(p).or_default().push((
                i,
                NewTask {
                    id: id.id().to_owned(),
                    name: req.name,
                    args: req.args,
                    due: req.due,
                    max_retries: req.max_retries,
                    timeout_ms: req.timeout.as_millis() as u64,
                    priority: req.priority,
                    headers,
                    expires: req.expires,
                },
            ));
            ids.push(id);
        }
        crate::trace::record_message_id(&tracing::Span::current(), &ids);
        let mut created = vec![false; ids.len()];
        let mut invalid = None;
        let mut passed = None;
        // Chunks of 100 tasks per script call bound the time one call holds Redis; 64 calls per
        // pipeline bound the size of one round trip.
        let chunks: Vec<(&Partition, Vec<usize>, Vec<NewTask>)> = groups
            .iter()
            .flat_map(|(p, items)| {
                items.chunks(100).map(move |c| {
                    (
                        p,
                        c.iter().map(|(i, _)| *i).collect(),
                        c.iter().map(|(_, t)| t.clone()).collect(),
                    )
                })
            })
            .collect();
        let wait = self
            .config
            .replica_wait
            .map(|(n, t)| (n, t.as_millis() as u64));
        // Per chunk: `Some(Ok)` applied, `Some(Err)` refused for good, `None` not settled.
        let mut settled: Vec<Option<Result<Vec<Outcome>>>> = Vec::new();
        settled.resize_with(chunks.len(), || None);
        let mut failure = None;
        for (w, window) in chunks.chunks(64).enumerate() {
            let base = w * 64;
            let state = Mutex::new(&mut settled[base..base + window.len()]);
            // Each try sends the chunks not settled yet; a refusal that may pass on a later try
            // (failover, loading) is retried, others are settled as refused.
            let sent = self
                .retry(|| async {
                    let pending: Vec<usize> = {
                        let st = state.lock().expect("enqueue state poisoned");
                        (0..window.len()).filter(|j| st[*j].is_none()).collect()
                    };
                    let calls: Vec<(&Partition, &[NewTask])> = pending
                        .iter()
                        .map(|j| (window[*j].0, &window[*j].2[..]))
                        .collect();
                    let replies = self.store.enqueue_each(&calls, wait).await?;
                    let mut again = None;
                    let mut st = state.lock().expect("enqueue state poisoned");
                    for (j, reply) in pending.into_iter().zip(replies) {
                        match reply {
                            Err(e) if e.is_transient() => again = Some(e),
                            r => st[j] = Some(r),
                        }
                    }
                    again.map_or(Ok(()), Err)
                })
                .await;
            if let Err(e) = sent {
                failure = Some(e);
                break;
            }
            if settled[base..base + window.len()]
                .iter()
                .any(|r| matches!(r, Some(Err(_))))
            {
                break;
            }
        }
        let mut refused = Vec::new();
        for ((_, idx, _), r) in chunks.iter().zip(settled) {
            match r {
                Some(Ok(outs)) => {
                    for (i, o) in idx.iter().zip(outs) {
                        created[*i] = o == Outcome::Done;
                        if o == Outcome::Invalid {
                            invalid.get_or_insert(*i);
                        }
                        if o == Outcome::DeadlinePassed {
                            passed.get_or_insert(*i);
                        }
                    }
                }
                Some(Err(e)) => {
                    failure.get_or_insert(e);
                    refused.extend(idx.iter().copied());
                }
                // Not sent, or its round trip failed after the retries.
                None => refused.extend(idx.iter().copied()),
            }
        }
        count_created(&ids, &names, &created);
        if let Some(source) = failure {
            if refused.len() == ids.len() {
                return Err(source);
            }
            refused.sort_unstable();
            let mut is_refused = vec![false; ids.len()];
            for i in &refused {
                is_refused[*i] = true;
            }
            return Err(Error::PartlyEnqueued {
                enqueued: ids
                    .iter()
                    .zip(&created)
                    .zip(is_refused)
                    .filter(|(_, r)| !r)
                    .map(|((id, c), _)| (id.clone(), *c))
                    .collect(),
                refused: refused.into_iter().map(|i| ids[i].clone()).collect(),
                source: Box::new(source),
            });
        }
        // Only the Redis clock can tell that a deadline given as a moment is passed, or before
        // a countdown's due time.
        if let Some(i) = passed {
            return Err(Error::InvalidDeadline(format!(
                "task {}: its deadline is passed or before its due time by the Redis server's clock; nothing was stored for it (the other tasks of the call were handled)",
                ids[i]
            )));
        }
        // The checks above refuse whatever the script would: reaching this is a version
        // mismatch. The other tasks were handled; sending the call again is safe.
        if let Some(i) = invalid {
            return Err(Error::Protocol(format!(
                "enqueue.lua refused task {} as invalid",
                ids[i]
            )));
        }
        Ok(ids.into_iter().zip(created).collect())
    }

    /// Cancels a task: one that has not started is withdrawn at once; a running one is told to
    /// stop (see [`Client::cancel_task`]).
    ///
    /// # Errors
    ///
    /// As [`Client::cancel_task`].
    pub async fn cancel(&self, id: &TaskId) -> Result<()> {
        self.cancel_task(id).await.map(|_| ())
    }

    /// Cancels a task and says how. A scheduled or ready task is withdrawn
    /// ([`Cancellation::Withdrawn`]: it reads `cancelled` now). A running task gets a
    /// cancellation request ([`Cancellation::Requested`]), published at once to the worker that
    /// runs it: its handler sees `ctx.cancelled()` fire, is aborted if it has not returned within
    /// the worker's `cancel_grace`, and the task ends `cancelled` without a retry (unless the
    /// handler returned success first: then it reads `succeeded`). See `docs/flow-control.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: &scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::{Cancellation, Error};
    /// let id = "exports/tenant-42-2026-12".parse()?;
    /// match client.cancel_task(&id).await {
    ///     Ok(Cancellation::Withdrawn) => println!("it will never run"),
    ///     Ok(Cancellation::Requested) => println!("its worker is stopping it"),
    ///     Ok(_) => {}
    ///     Err(Error::AlreadyFinished(_)) => println!("too late: it finished"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::AlreadyFinished`] (succeeded, dead or cancelled before), or
    /// a Redis error.
    pub async fn cancel_task(&self, id: &TaskId) -> Result<Cancellation> {
        let p = self.partition_of(id).await?;
        let ttl = self.config.cancelled_ttl.as_millis() as u64;
        let reply = self.retry(|| self.store.cancel(&p, id.id(), ttl)).await?;
        match reply {
            CancelReply::Cancelled => {
                if self.store.events_on(id.queue()) {
                    self.publish(&[TaskEvent::new(id.clone(), EventKind::Cancelled, 0)])
                        .await;
                }
                Ok(Cancellation::Withdrawn)
            }
            CancelReply::Running => Ok(Cancellation::Requested),
            CancelReply::Finished => Err(Error::AlreadyFinished(id.clone())),
            CancelReply::NotFound => Err(Error::NotFound(id.clone())),
        }
    }

    /// Puts a dead task back in its queue's ready set: attempts reset to 0 (it again gets its
    /// retries), due now, its last error kept. `Ok(false)` when the task exists but is not dead;
    /// nothing changes then.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: &scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// let id = "emails/order-42".parse()?;
    /// if !client.requeue_dead(&id).await? {
    ///     println!("{id} is {}, not dead", client.status(&id).await?.state);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], or a Redis error.
    pub async fn requeue_dead(&self, id: &TaskId) -> Result<bool> {
        let p = self.partition_of(id).await?;
        let ids = [id.id()];
        // Safe to repeat after a transient error: a second application finds the task `ready` and
        // changes nothing (it would then report `false` for a requeue that did happen).
        let reply = self.retry(|| self.store.requeue(&p, &ids)).await?;
        match reply.first() {
            Some(RequeueReply::Requeued) => {
                if self.store.events_on(id.queue()) {
                    self.publish(&[TaskEvent::new(id.clone(), EventKind::Enqueued, 0)])
                        .await;
                }
                Ok(true)
            }
            Some(RequeueReply::NotDead) => Ok(false),
            Some(RequeueReply::NotFound) => Err(Error::NotFound(id.clone())),
            None => Err(Error::Protocol("requeue returned no reply".into())),
        }
    }

    /// The task's record: state, attempts, last error...
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (never existed, or expired after its TTL), or a Redis error.
    pub async fn status(&self, id: &TaskId) -> Result<TaskInfo> {
        let p = self.partition_of(id).await?;
        let key = p.keys.task(id.id());
        let fields: HashMap<String, Vec<u8>> = self
            .retry(|| {
                let mut conn = self.store.conn();
                let key = key.clone();
                async move { Ok(conn.hgetall(key).await?) }
            })
            .await?;
        TaskInfo::from_fields(id.clone(), fields).ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// The result of a finished task, decoded; `Ok(None)` while it has not finished.
    ///
    /// # Errors
    ///
    /// [`Error::TaskFailed`] for a dead task, [`Error::Cancelled`], [`Error::Expired`], [`Error::NotFound`],
    /// [`Error::Decode`] when the result is not an `R`, or a Redis error.
    pub async fn result<R: DeserializeOwned>(&self, id: &TaskId) -> Result<Option<R>> {
        let info = self.status(id).await?;
        match info.state {
            TaskState::Succeeded => {
                // A task without a return value stores no result: decode `()`-like types from nil.
                let bytes = info.result.unwrap_or_else(|| vec![0xc0]);
                Ok(Some(rmp_serde::from_slice(&bytes)?))
            }
            TaskState::Dead => Err(Error::TaskFailed {
                id: id.clone(),
                error: info.last_error.unwrap_or_default(),
            }),
            TaskState::Cancelled => Err(Error::Cancelled(id.clone())),
            TaskState::Expired => Err(Error::Expired(id.clone())),
            _ => Ok(None),
        }
    }

    /// Waits until the task finishes and returns its result.
    ///
    /// In a queue with task events on ([`Client::set_events`]) it subscribes to the queue's
    /// events first, then reads the task, then sleeps until the task's final event arrives
    /// (and reads it once more), reading it again every
    /// [`crate::defaults::EVENTS_WAIT_RECHECK`] in case that event was lost (events are at
    /// most once): no polling traffic while it waits. Elsewhere, or when the subscription
    /// cannot be opened, it reads the task every 5 ms at first, backing off to every 250 ms.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`, and the errors of [`Client::result`].
    pub async fn wait_result<R: DeserializeOwned>(
        &self,
        id: &TaskId,
        timeout: Duration,
    ) -> Result<R> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.refresh_events_setting();
        if self.store.events_on(id.queue()) {
            match self.watch(id).await {
                Ok(events) => return self.wait_by_events(id, events, deadline).await,
                Err(e) => {
                    tracing::debug!(error = %e, "task events not subscribed; wait_result polls")
                }
            }
        }
        self.wait_by_polling(id, deadline).await
    }

    /// [`Client::wait_result`] woken by the task's events, subscribed before the first read.
    async fn wait_by_events<R: DeserializeOwned>(
        &self,
        id: &TaskId,
        mut events: EventStream,
        deadline: tokio::time::Instant,
    ) -> Result<R> {
        use futures::StreamExt;
        loop {
            if let Some(r) = self.result(id).await? {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(id.clone()));
            }
            let recheck = now + defaults::EVENTS_WAIT_RECHECK.min(deadline - now);
            loop {
                match tokio::time::timeout_at(recheck, events.next()).await {
                    // The final event: read the result.
                    Ok(Some(e)) if e.kind.is_final() => break,
                    Ok(Some(_)) => {}
                    // The subscription was lost: read, then poll until the end.
                    Ok(None) => {
                        if let Some(r) = self.result(id).await? {
                            return Ok(r);
                        }
                        return self.wait_by_polling(id, deadline).await;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// [`Client::wait_result`] by reading the task every 5 ms, backing off to every 250 ms.
    async fn wait_by_polling<R: DeserializeOwned>(
        &self,
        id: &TaskId,
        deadline: tokio::time::Instant,
    ) -> Result<R> {
        let mut every = Duration::from_millis(5);
        loop {
            if let Some(r) = self.result(id).await? {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(id.clone()));
            }
            tokio::time::sleep(every.min(deadline - now)).await;
            every = (every * 2).min(Duration::from_millis(250));
        }
    }

    /// Turns task events on (or off) for `queue`: with them on, every state change of its
    /// tasks is published on its channel (see [`crate::events`] and `docs/events.md`), at the
    /// cost of one `PUBLISH` per change; off (the default), its tasks pay no command for them.
    /// Workers apply it at their next heartbeat, other clients within
    /// [`crate::defaults::EVENTS_SETTING_REFRESH`]; this client at once.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: &scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use futures::StreamExt;
    /// client.set_events("emails", true).await?;
    /// let mut events = client.events("emails").await?;
    /// while let Some(e) = events.next().await {
    ///     println!("{} {} (attempt {})", e.id, e.kind, e.attempt);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], or a Redis error.
    pub async fn set_events(&self, queue: &str, on: bool) -> Result<()> {
        self.retry(|| self.store.write_events_setting(queue, on))
            .await
    }

    /// The events of `queue` from now on, as they are published: a [`Stream`](futures::Stream)
    /// of [`TaskEvent`]s on a pub/sub connection of its own, subscribed when this returns.
    /// At most once: see [`crate::events`]. Nothing arrives for a queue whose events are off
    /// ([`Client::set_events`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], or a Redis error when the subscription fails.
    pub async fn events(&self, queue: &str) -> Result<EventStream> {
        validate_queue(queue)?;
        self.subscribe(queue, None).await
    }

    /// The events of task `id` from now on ([`Client::events`] of its queue, filtered).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: &scheduler_core::Client, id: scheduler_core::TaskId) -> Result<(), scheduler_core::Error> {
    /// use futures::StreamExt;
    /// let mut events = client.watch(&id).await?;
    /// while let Some(e) = events.next().await {
    ///     if let Some(p) = e.progress {
    ///         println!("{p}% {}", e.message);
    ///     }
    ///     if e.kind.is_final() {
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::events`]; [`Error::InvalidTaskId`].
    pub async fn watch(&self, id: &TaskId) -> Result<EventStream> {
        validate_queue(id.queue())?;
        validate_id(id.id())?;
        self.subscribe(id.queue(), Some(id.id().to_owned())).await
    }

    async fn subscribe(&self, queue: &str, only: Option<String>) -> Result<EventStream> {
        let pubsub = self
            .subscribe_channel(&self.store.keys().events_channel(queue))
            .await?;
        Ok(EventStream::new(pubsub, queue.to_owned(), only))
    }

    /// A pub/sub connection of its own, subscribed to `channel` when this returns.
    pub(crate) async fn subscribe_channel(&self, channel: &str) -> Result<redis::aio::PubSub> {
        let mut pubsub = self.store.pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    }

    /// Counts of `queue`: scheduled, ready, running, dead, and lifetime counters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`] or a Redis error.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        let shards = self.shards(queue).await?;
        let mut stats = QueueStats {
            queue: queue.to_owned(),
            shards,
            ..QueueStats::default()
        };
        // One pipeline for every shard (grouped by slot on a cluster); no due counts (those need
        // the server's time and `ZCOUNT`, which `Inspector::queue` has).
        let pipe = crate::inspector::counts_pipeline(&self.store, queue, shards, None);
        let per_shard = crate::inspector::parse_counts(
            self.retry(|| self.store.query_pipeline(&pipe)).await?,
            false,
        )?;
        for c in per_shard {
            stats.scheduled += c.scheduled;
            stats.ready += c.ready;
            stats.running += c.running;
            stats.dead += c.dead;
            for (k, v) in c.counters {
                *stats.counters.entry(k).or_default() += v;
            }
        }
        Ok(stats)
    }
}

/// Encodes task arguments as MessagePack with struct fields by name (maps), so that a producer
/// and a worker built from different versions of an argument struct agree on which value is
/// which field: reordering fields is safe, a new field with `#[serde(default)]` reads as its
/// default from older producers, and a removed field is ignored. Tuples, the argument lists of
/// `#[task]` functions, stay positional: add parameters at the end only. Decoding accepts both
/// forms, so records written positionally before stay readable. See docs/architecture.md,
/// "Evolving argument types", for the byte cost.
///
/// # Examples
///
/// ```
/// use scheduler_core::{client::encode_args, TaskRequest};
///
/// #[derive(serde::Serialize)]
/// struct Order {
///     user_id: u64,
///     amount_cents: u64,
/// }
/// let args = encode_args(&(Order { user_id: 7, amount_cents: 1250 },))?;
/// let req = TaskRequest::from_encoded("charge", "billing", args);
/// # let _ = req;
/// # Ok::<(), scheduler_core::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::Encode`] when `args` cannot be encoded.
pub fn encode_args(args: &impl serde::Serialize) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(args)?)
}

/// What [`Client::enqueue_bulk`] takes: a [`TaskRequest`], or a typed [`TaskCall`] (its
/// arguments encoded on the way).
pub trait IntoTaskRequest {
    /// The request, arguments encoded.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the arguments cannot be encoded.
    fn into_task_request(self) -> Result<TaskRequest>;
}

impl IntoTaskRequest for TaskRequest {
    fn into_task_request(self) -> Result<TaskRequest> {
        Ok(self)
    }
}

impl<T: Task> IntoTaskRequest for TaskCall<T> {
    fn into_task_request(self) -> Result<TaskRequest> {
        self.into_request()
    }
}

/// One task to enqueue, untyped: name, queue, encoded arguments and options.
///
/// [`TaskCall::into_request`] makes one from a typed call; build one by hand to enqueue a task
/// whose type this process does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    pub(crate) name: String,
    pub(crate) queue: String,
    pub(crate) args: Vec<u8>,
    pub(crate) id: Option<String>,
    pub(crate) due: Due,
    pub(crate) max_retries: u32,
    pub(crate) timeout: Duration,
    pub(crate) priority: u8,
    pub(crate) headers: Headers,
    pub(crate) unique: Option<unique::Unique>,
    pub(crate) expires: Option<Due>,
}

impl TaskRequest {
    /// A request to run handler `name` on `queue` with `args` (encoded as MessagePack), now, with
    /// 3 retries, a 30 s timeout, priority 0.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when `args` cannot be encoded.
    pub fn new(
        name: impl Into<String>,
        queue: impl Into<String>,
        args: &impl serde::Serialize,
    ) -> Result<Self> {
        Ok(Self::from_encoded(name, queue, encode_args(args)?))
    }

    /// As [`TaskRequest::new`] with arguments already encoded as MessagePack.
    pub fn from_encoded(name: impl Into<String>, queue: impl Into<String>, args: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            queue: queue.into(),
            args,
            id: None,
            due: Due::Delay(0),
            max_retries: defaults::MAX_RETRIES,
            timeout: defaults::TIMEOUT,
            priority: 0,
            headers: Headers::new(),
            unique: None,
            expires: None,
        }
    }

    /// Run `delay` after now, by the Redis server's clock. Replaces an earlier `countdown`/`eta`.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.due = Due::Delay(delay.as_millis() as u64);
        self
    }

    /// Run at `when` (a time in the past: at once). Replaces an earlier `countdown`/`eta`.
    pub fn eta(mut self, when: SystemTime) -> Self {
        let ms = when
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.due = Due::At(ms);
        self
    }

    /// Use this task id instead of a generated one: enqueueing the same id again is a no-op
    /// that returns the existing task (idempotent enqueue, unique tasks).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Deadline `after` the enqueue, by the Redis server's clock: a task that has not started by
    /// then ends `expired` and never runs, and a retry that would start after it expires the
    /// task instead. Replaces an earlier `expires_in`/`expires_at`.
    ///
    /// The enqueue fails with [`Error::InvalidDeadline`] for a zero duration, or one shorter than
    /// the [`TaskRequest::countdown`] (the task could never start).
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.expires = Some(Due::Delay(after.as_millis() as u64));
        self
    }

    /// Deadline at `when` (see [`TaskRequest::expires_in`]). Replaces an earlier
    /// `expires_in`/`expires_at`.
    ///
    /// The enqueue fails with [`Error::InvalidDeadline`] when `when` is passed (by this host's
    /// clock, then by the Redis server's) or before the task's due time.
    pub fn expires_at(mut self, when: SystemTime) -> Self {
        let ms = when
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.expires = Some(Due::At(ms));
        self
    }

    /// Send to this queue instead of the task's default.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Throttle: for `window` after this task is created, enqueueing the same task again (same
    /// name and encoded arguments, or the same [`TaskRequest::unique_key`], in the same queue)
    /// creates nothing and returns this task's id, whatever its state, also once it finished
    /// and its record expired. The window is timed by the Redis server's clock. Replaces an
    /// earlier `debounce`. See `docs/unique.md`.
    ///
    /// A zero window (or under 1 ms), or an [`TaskRequest::id`] as well, is
    /// [`Error::InvalidUnique`] at enqueue.
    pub fn unique_for(mut self, window: Duration) -> Self {
        let u = self.unique.get_or_insert_with(Default::default);
        u.window = Some((crate::store::UniqueMode::Throttle, window));
        self
    }

    /// Debounce: for `window` after this task is created, or last replaced, enqueueing the same
    /// task again (as for [`TaskRequest::unique_for`]) replaces the still pending task's name,
    /// arguments, headers, due time, retries, timeout and priority with the new request's, restarts the
    /// window, and returns its id; the run sees the last arguments. Once the task started or
    /// finished, the next enqueue creates a new task and opens a new window. Replaces an earlier
    /// `unique_for`. See `docs/unique.md`.
    ///
    /// Bad input as for [`TaskRequest::unique_for`].
    pub fn debounce(mut self, window: Duration) -> Self {
        let u = self.unique.get_or_insert_with(Default::default);
        u.window = Some((crate::store::UniqueMode::Debounce, window));
        self
    }

    /// The key of the [`TaskRequest::unique_for`] or [`TaskRequest::debounce`] window instead
    /// of the task name and encoded arguments: requests with the same key in the same queue
    /// share one window, whatever their names and arguments. Without a window, or empty,
    /// [`Error::InvalidUnique`] at enqueue.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique.get_or_insert_with(Default::default).key = Some(key.into());
        self
    }

    /// Retries allowed after the first run.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Time limit of one run.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Priority 0 (lowest) to 9 (highest) within the queue.
    pub fn priority(mut self, p: u8) -> Self {
        self.priority = p;
        self
    }

    /// Adds header `name` (replacing an earlier value of that name): string metadata the
    /// handler reads with [`crate::TaskContext::header`], kept across retries, shown by status.
    /// Bounded: see [`crate::headers`] ([`Error::HeadersTooLarge`] at enqueue).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Adds every header of `headers`, as [`TaskRequest::header`] does one.
    pub fn headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Subjects the task to the limit declared for key family `family`
    /// ([`crate::limits::LimitScope::key`]) under its own budget `key` (a tenant, an account):
    /// any bytes, 1 to [`crate::limits::MAX_LIMIT_KEY_BYTES`]. Carried in the header
    /// `sched.limit.<family>`; without a limit declared for the family it changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a malformed family or key.
    pub fn limit_key(mut self, family: &str, key: &str) -> Result<Self> {
        let (name, value) = crate::limits::limit_header(family, key)?;
        self.headers.insert(name, value);
        Ok(self)
    }

    /// Adds header `name` in place, as [`TaskRequest::header`] does: for an
    /// [`EnqueueMiddleware`], which gets the request by reference.
    pub fn insert_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.insert(name.into(), value.into());
    }

    /// The handler name the request runs.
    pub fn task_name(&self) -> &str {
        &self.name
    }

    /// The queue the request goes to.
    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    /// The headers set so far.
    pub fn header_map(&self) -> &Headers {
        &self.headers
    }

    /// The encoded arguments (MessagePack).
    pub fn encoded_args(&self) -> &[u8] {
        &self.args
    }
}

/// A typed call of task `T`: its arguments and options, ready to send.
///
/// `#[task]` generates `<task>::new(args..)` returning one.
///
/// # Examples
///
/// ```no_run
/// # use scheduler_core::{Client, Task, TaskCall, TaskContext, TaskError};
/// # struct Ping;
/// # impl Task for Ping {
/// #     const NAME: &'static str = "ping";
/// #     type Args = ();
/// #     type Output = ();
/// #     async fn run(_: TaskContext, _: ()) -> Result<(), TaskError> { Ok(()) }
/// # }
/// # async fn demo(client: &Client) -> Result<(), scheduler_core::Error> {
/// use std::time::Duration;
/// let id = TaskCall::<Ping>::new(())
///     .countdown(Duration::from_secs(30))
///     .send(client)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TaskCall<T: Task> {
    args: T::Args,
    req: TaskRequest,
    _task: PhantomData<fn() -> T>,
}

impl<T: Task> TaskCall<T> {
    /// A call with these arguments and `T`'s default options.
    pub fn new(args: T::Args) -> Self {
        let mut req = TaskRequest::from_encoded(T::NAME, T::QUEUE, Vec::new());
        req.max_retries = T::MAX_RETRIES;
        req.timeout = T::TIMEOUT;
        req.priority = T::PRIORITY;
        Self {
            args,
            req,
            _task: PhantomData,
        }
    }

    /// See [`TaskRequest::countdown`].
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.req = self.req.countdown(delay);
        self
    }

    /// See [`TaskRequest::eta`].
    pub fn eta(mut self, when: SystemTime) -> Self {
        self.req = self.req.eta(when);
        self
    }

    /// See [`TaskRequest::id`].
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.req = self.req.id(id);
        self
    }

    /// See [`TaskRequest::expires_in`].
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.req = self.req.expires_in(after);
        self
    }

    /// See [`TaskRequest::expires_at`].
    pub fn expires_at(mut self, when: SystemTime) -> Self {
        self.req = self.req.expires_at(when);
        self
    }

    /// See [`TaskRequest::queue`].
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.req = self.req.queue(queue);
        self
    }

    /// See [`TaskRequest::max_retries`].
    pub fn max_retries(mut self, n: u32) -> Self {
        self.req = self.req.max_retries(n);
        self
    }

    /// See [`TaskRequest::unique_for`].
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.req = self.req.unique_for(window);
        self
    }

    /// See [`TaskRequest::debounce`].
    pub fn debounce(mut self, window: Duration) -> Self {
        self.req = self.req.debounce(window);
        self
    }

    /// See [`TaskRequest::unique_key`].
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.req = self.req.unique_key(key);
        self
    }

    /// See [`TaskRequest::timeout`].
    pub fn timeout(mut self, t: Duration) -> Self {
        self.req = self.req.timeout(t);
        self
    }

    /// See [`TaskRequest::priority`].
    pub fn priority(mut self, p: u8) -> Self {
        self.req = self.req.priority(p);
        self
    }

    /// See [`TaskRequest::header`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.req = self.req.header(name, value);
        self
    }

    /// See [`TaskRequest::headers`].
    pub fn headers(mut self, headers: impl IntoIterator<Item = (String, String)>) -> Self {
        self.req = self.req.headers(headers);
        self
    }

    /// See [`TaskRequest::limit_key`]; a malformed family or key is
    /// [`Error::InvalidLimit`] at enqueue.
    pub fn limit_key(mut self, family: &str, key: &str) -> Self {
        self.req = self.req.header(
            format!("{}{family}", crate::limits::LIMIT_HEADER_PREFIX),
            key,
        );
        self
    }

    /// Encodes the arguments into an untyped request.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] when the arguments cannot be encoded.
    pub fn into_request(self) -> Result<TaskRequest> {
        let mut req = self.req;
        req.args = encode_args(&self.args)?;
        Ok(req)
    }

    /// Enqueues the call on `client`.
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue`].
    pub async fn send(self, client: &Client) -> Result<TaskId> {
        client.enqueue(self).await
    }
}

/// A deadline that can hold, as far as this host can tell (the Redis server checks again against
/// its own clock): not zero, not passed by `now`, not before the due time when both are given
/// the same way.
fn check_deadline(due: Due, expires: Option<Due>, now: SystemTime) -> Result<()> {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let why = match (due, expires) {
        (_, None) => return Ok(()),
        (_, Some(Due::Delay(0))) => "a deadline of 0 ms after the enqueue".to_owned(),
        (_, Some(Due::At(at))) if at <= now_ms => {
            format!("the deadline {at} (unix ms) is passed: this host's clock reads {now_ms}")
        }
        (Due::Delay(d), Some(Due::Delay(e))) if e < d => {
            format!("a deadline {e} ms after the enqueue, before the task's countdown of {d} ms")
        }
        (Due::At(d), Some(Due::At(e))) if e < d => {
            format!("the deadline {e} (unix ms) is before the task's eta {d}")
        }
        _ => return Ok(()),
    };
    Err(Error::InvalidDeadline(why))
}

/// Records the tasks `created` (by position) in `scheduler_tasks_enqueued_total`, one increment
/// per (queue, task name).
fn count_created(ids: &[TaskId], names: &[String], created: &[bool]) {
    let mut per: HashMap<(&str, &str), u64> = HashMap::new();
    for ((id, name), c) in ids.iter().zip(names).zip(created) {
        if *c {
            *per.entry((id.queue(), name.as_str())).or_default() += 1;
        }
    }
    for ((queue, name), n) in per {
        crate::metrics::enqueued(queue, name, n);
    }
}

/// How [`Client::cancel_task`] cancelled a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cancellation {
    /// It had not started: withdrawn, it reads `cancelled` now and never runs.
    Withdrawn,
    /// It was running: the worker running it was told to stop it; it ends `cancelled` (or
    /// `succeeded`, when the handler returned success before it stopped).
    Requested,
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::encode_args;

    #[derive(Serialize)]
    struct OrderV1 {
        user_id: u64,
        amount_cents: u64,
    }

    /// The same struct in a later version: fields reordered, one added.
    #[derive(Deserialize, Debug, PartialEq)]
    struct OrderV2 {
        amount_cents: u64,
        user_id: u64,
        #[serde(default)]
        coupon: Option<String>,
    }

    #[test]
    fn struct_arguments_survive_reordered_and_added_fields() {
        let v1 = OrderV1 {
            user_id: 7,
            amount_cents: 1250,
        };
        let bytes = encode_args(&(v1,)).unwrap();
        let (v2,): (OrderV2,) = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            v2,
            OrderV2 {
                amount_cents: 1250,
                user_id: 7,
                coupon: None
            }
        );
        // Positional bytes (how arguments were written before) swap the two fields silently:
        // what named encoding prevents. They still decode, so older records stay readable.
        let old = rmp_serde::to_vec(&(OrderV1 {
            user_id: 7,
            amount_cents: 1250,
        },))
        .unwrap();
        let (swapped,): (OrderV2,) = rmp_serde::from_slice(&old).unwrap();
        assert_eq!((swapped.amount_cents, swapped.user_id), (7, 1250));
        // The price of names, printed for docs/architecture.md.
        eprintln!(
            "struct of 2 u64 fields: positional {} bytes, named {} bytes",
            old.len(),
            bytes.len()
        );
        assert!(bytes.len() > old.len());
        // Tuples and primitives (a `#[task]` argument list of plain values) cost the same.
        assert_eq!(
            encode_args(&(42u64, "hi")).unwrap(),
            rmp_serde::to_vec(&(42u64, "hi")).unwrap()
        );
    }
}
