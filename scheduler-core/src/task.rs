//! The [`Task`] trait that `#[task]` implements, the context a running task sees, and the error a
//! handler returns.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::client::TaskCall;
use crate::error::Error;
use crate::headers::Headers;
use crate::id::TaskId;
use crate::store::{Partition, Store};

/// The longest message [`TaskContext::progress`] takes, in bytes (UTF-8): 16 pieces of 64
/// bytes in the task's hash.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;

/// Attempts of a progress write while Redis fails transiently (50 ms, doubling: about 1.5 s).
const PROGRESS_WRITE_ATTEMPTS: u32 = 5;

/// A kind of task: its name, its default options, its argument and output types, and the code
/// that runs it.
///
/// You rarely implement this by hand: `#[task]` on an `async fn` generates a unit struct with the
/// function's name that implements it. The struct is what you register with a worker, and
/// `<name>::new(args..)` builds a [`TaskCall`] to enqueue.
///
/// # Examples
///
/// ```
/// use scheduler_core::{Task, TaskContext, TaskError};
/// use std::time::Duration;
///
/// struct Add;
///
/// impl Task for Add {
///     const NAME: &'static str = "add";
///     const QUEUE: &'static str = "math";
///     const MAX_RETRIES: u32 = 2;
///     const TIMEOUT: Duration = Duration::from_secs(5);
///     type Args = (i64, i64);
///     type Output = i64;
///
///     async fn run(_ctx: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> {
///         Ok(a + b)
///     }
/// }
/// ```
pub trait Task: Send + Sync + 'static {
    /// The name workers look the handler up by. Unique among the tasks of one deployment.
    const NAME: &'static str;
    /// The queue tasks of this kind go to unless a call says otherwise. Default `"default"`.
    const QUEUE: &'static str = crate::defaults::QUEUE;
    /// How many times a failed run is retried (so at most `MAX_RETRIES + 1` runs). Default 3.
    const MAX_RETRIES: u32 = crate::defaults::MAX_RETRIES;
    /// How long one run may take before it is cancelled and counted as failed. Default 30 s.
    const TIMEOUT: Duration = crate::defaults::TIMEOUT;
    /// Priority 0 (lowest, the default) to 9 (highest) within the queue.
    const PRIORITY: u8 = 0;
    /// The arguments, serialised with MessagePack (a tuple for a function's parameters).
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What a successful run returns, stored as the task's result (MessagePack).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt of the task.
    fn run(
        ctx: TaskContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;

    /// The periodic schedule of this task, if it has one: its cron expression (5 fields, or 6-7
    /// with seconds first), its IANA time zone, and the call each tick enqueues. `None` by
    /// default; `#[task(cron = "0 30 2 * * *", tz = "Europe/Paris")]` sets it (for a task
    /// without arguments). A worker that registers the task declares the schedule under the
    /// task's name, as `WorkerBuilder::schedule` would (docs/schedules.md).
    fn cron() -> Option<(&'static str, &'static str, TaskCall<Self>)>
    where
        Self: Sized,
    {
        None
    }

    /// Builds a call of this task with these arguments and its default options.
    fn call(args: Self::Args) -> TaskCall<Self>
    where
        Self: Sized,
    {
        TaskCall::new(args)
    }
}

/// Shared application state (a database pool, an HTTP client...) handed to every task run.
///
/// Values are stored by type; a worker's builder adds them with `.state(value)`.
#[derive(Clone, Default)]
pub struct StateMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value, replacing any earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| Arc::clone(v).downcast::<T>().ok())
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMap")
            .field("values", &self.values.len())
            .finish()
    }
}

/// What a running task knows about itself, and the way to the worker's shared state.
///
/// A `#[task]` function receives it when its first parameter has the type `TaskContext`.
#[derive(Clone, Debug)]
pub struct TaskContext {
    id: TaskId,
    attempt: u32,
    max_retries: u32,
    due_ms: i64,
    claimed_at_ms: i64,
    state: Arc<StateMap>,
    cancel: CancellationToken,
    // `None` for a task without headers (most): no allocation per run.
    headers: Option<Arc<Headers>>,
    // The run's lease, for progress reports; `None` outside a worker.
    lease: Option<RunLease>,
}

/// What every run of one worker writes its progress through: the store and the worker's
/// partitions. Built once per worker; each run holds a clone of the `Arc`.
#[doc(hidden)]
pub struct LeaseStore {
    store: Store,
    partitions: Arc<[Partition]>,
}

impl LeaseStore {
    /// The store and partitions of a worker; workers call it once.
    pub fn new(store: Store, partitions: Arc<[Partition]>) -> Self {
        Self { store, partitions }
    }
}

impl fmt::Debug for LeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseStore")
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

/// Where a worker's run writes its progress: the worker's [`LeaseStore`], the index of the
/// task's partition in it and the lease token that fences the write. One `Arc` clone per run,
/// no allocation.
#[derive(Clone)]
struct RunLease {
    shared: Arc<LeaseStore>,
    idx: usize,
    token: i64,
}

impl fmt::Debug for RunLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunLease")
            .field("partition", &self.shared.partitions.get(self.idx))
            .field("token", &self.token)
            .finish()
    }
}

impl TaskContext {
    /// A context; workers build these, tests of task functions may too.
    pub fn new(
        id: TaskId,
        attempt: u32,
        max_retries: u32,
        due_ms: i64,
        state: Arc<StateMap>,
    ) -> Self {
        Self {
            id,
            attempt,
            max_retries,
            due_ms,
            claimed_at_ms: due_ms,
            state,
            cancel: CancellationToken::new(),
            headers: None,
            lease: None,
        }
    }

    /// Sets the lease this run holds (the partition at `idx` of `shared`, fencing token
    /// `token`), which [`TaskContext::progress`] writes under; workers call it.
    #[doc(hidden)]
    pub fn with_lease(mut self, shared: Arc<LeaseStore>, idx: usize, token: i64) -> Self {
        self.lease = Some(RunLease { shared, idx, token });
        self
    }

    /// Records how far this run has got: `percent` done (0 to 100) and a short `message`, on
    /// the task's record, where [`crate::Client::status`] ([`crate::TaskInfo::progress`]),
    /// `schedctl status` and the dashboard's task page show it. Each call replaces the last
    /// report; one Lua script call (`lua/progress.lua`), fenced by this run's lease, so a run
    /// that lost its lease cannot overwrite what the task's next run reports. Report at steps
    /// (every few seconds, every few percent), not per item: each report is a round trip to
    /// Redis. A retry keeps the last report of the run before it until it makes its own
    /// ([`crate::info::Progress::attempt`] says which run made it).
    ///
    /// Outside a worker (a context built with [`TaskContext::new`] in a unit test), the values
    /// are checked and nothing is recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use scheduler_core::{TaskContext, TaskError};
    /// # async fn import(_row: u32) {}
    /// async fn import_rows(ctx: TaskContext, rows: u32) -> Result<(), TaskError> {
    ///     for row in 0..rows {
    ///         import(row).await;
    ///         if row % 1000 == 0 {
    ///             let percent = (u64::from(row) * 100 / u64::from(rows)) as u8;
    ///             ctx.progress(percent, format!("{row} of {rows} rows")).await?;
    ///         }
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProgress`] for a percent above 100 or a message over
    /// [`MAX_PROGRESS_MESSAGE_BYTES`]; [`Error::LeaseLost`] when this run no longer holds the
    /// task's lease (stop: another run may own the task); a Redis error that persisted through
    /// a few retries. Nothing is recorded on any error. With `?` in a handler, each becomes a
    /// retryable [`TaskError`].
    pub async fn progress(&self, percent: u8, message: impl AsRef<str>) -> Result<(), Error> {
        let message = message.as_ref();
        if percent > 100 {
            return Err(Error::InvalidProgress(format!(
                "percent {percent}: use 0 to 100"
            )));
        }
        if message.len() > MAX_PROGRESS_MESSAGE_BYTES {
            return Err(Error::InvalidProgress(format!(
                "message of {} bytes: at most {MAX_PROGRESS_MESSAGE_BYTES}",
                message.len()
            )));
        }
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        let (store, p) = (&lease.shared.store, &lease.shared.partitions[lease.idx]);
        // Safe to repeat: a second application writes the same values.
        let out = crate::store::retry_transient(PROGRESS_WRITE_ATTEMPTS, || {
            store.progress(p, self.id.id(), lease.token, percent, message)
        })
        .await?;
        match out {
            crate::store::Outcome::Done => Ok(()),
            _ => Err(Error::LeaseLost(self.id.clone())),
        }
    }

    /// Sets the token that fires when this run's cancellation is requested
    /// ([`crate::Client::cancel_task`]); workers call it.
    pub fn with_cancellation(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Sets the task's headers; workers call it.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = (!headers.is_empty()).then(|| Arc::new(headers));
        self
    }

    /// The task's headers, as the producer set them ([`crate::TaskRequest::header`]), plus the
    /// trace context (`traceparent`) when the producer traced its enqueue; empty when none.
    pub fn headers(&self) -> &Headers {
        static NONE: Headers = Headers::new();
        self.headers.as_deref().unwrap_or(&NONE)
    }

    /// The value of header `name`, if the task has it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use scheduler_core::{TaskContext, TaskId, Headers};
    /// let mut h = Headers::new();
    /// h.insert("tenant".into(), "42".into());
    /// let ctx = TaskContext::new(TaskId::new("q", "x"), 1, 0, 0, Default::default()).with_headers(h);
    /// assert_eq!(ctx.header("tenant"), Some("42"));
    /// assert_eq!(ctx.header("absent"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).map(String::as_str)
    }

    /// Completes when this run's cancellation is requested (`client.cancel(id)` while it runs):
    /// stop, and return (an error, so that the task ends `cancelled`). A handler that does not
    /// return within the worker's `cancel_grace` is aborted (dropped at its next `.await`).
    ///
    /// # Examples
    ///
    /// ```
    /// use scheduler_core::{TaskContext, TaskError};
    /// # async fn next_chunk() -> Option<u32> { None }
    /// async fn export(ctx: TaskContext) -> Result<(), TaskError> {
    ///     loop {
    ///         tokio::select! {
    ///             () = ctx.cancelled() => return Err(TaskError::fail("cancelled")),
    ///             chunk = next_chunk() => if chunk.is_none() { return Ok(()) },
    ///         }
    ///     }
    /// }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether this run's cancellation was requested: for handlers that check between steps.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The run's cancellation token itself (a clone), to hand to code that takes a
    /// [`CancellationToken`].
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Sets when the worker claimed this run (unix ms, Redis clock); workers call it.
    pub fn with_claimed_at(mut self, ms: i64) -> Self {
        self.claimed_at_ms = ms;
        self
    }

    /// When the worker claimed this run, unix milliseconds on the Redis server's clock. Minus
    /// [`TaskContext::due_ms`], it is how late the run started.
    pub fn claimed_at_ms(&self) -> i64 {
        self.claimed_at_ms
    }

    /// The task's id.
    pub fn id(&self) -> &TaskId {
        &self.id
    }

    /// Which run this is: 1 for the first, 2 for the first retry...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The task's retry budget.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// When this run was due, unix milliseconds on the Redis server's clock.
    pub fn due_ms(&self) -> i64 {
        self.due_ms
    }

    /// The shared value of type `T` the worker was built with.
    ///
    /// # Errors
    ///
    /// A [`TaskError::fail`] naming the type when the worker has no such value: a deployment
    /// mistake that retrying cannot fix.
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, TaskError> {
        self.state.get::<T>().ok_or_else(|| {
            TaskError::fail(format!(
                "no shared state of type {} was given to the worker",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// What a handler returns when a run did not succeed, and what should happen next.
///
/// Any `std::error::Error` converts into a retryable `TaskError` with `?`. `TaskError` does not
/// itself implement `std::error::Error`, which is what lets that conversion exist.
#[derive(Debug)]
pub struct TaskError {
    kind: TaskErrorKind,
    message: String,
}

/// What a failed run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// Retry with the task's backoff, while retries remain.
    Retry,
    /// Retry after exactly this delay, while retries remain.
    RetryAfter(Duration),
    /// Fail now, without retrying: the task goes to the dead set.
    Fail,
}

impl TaskError {
    /// A failure to retry with the configured backoff.
    pub fn retry(message: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Retry,
            message: message.to_string(),
        }
    }

    /// A failure to retry after `delay` (for example what a rate-limited API asked for).
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        Self {
            kind: TaskErrorKind::RetryAfter(delay),
            message: message.to_string(),
        }
    }

    /// A failure that retrying cannot fix: the task goes to the dead set at once.
    pub fn fail(message: impl fmt::Display) -> Self {
        Self {
            kind: TaskErrorKind::Fail,
            message: message.to_string(),
        }
    }

    /// What the failure asks for.
    pub fn kind(&self) -> TaskErrorKind {
        self.kind
    }

    /// The error text stored with the task.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(e: E) -> Self {
        TaskError::retry(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    /// `?` on any std error gives a retryable task error carrying its text.
    #[test]
    fn std_errors_convert_to_retry() {
        let e: TaskError = Boom.into();
        assert_eq!(e.kind(), TaskErrorKind::Retry);
        assert_eq!(e.message(), "boom");
    }

    /// State is found by type, and a missing type is a non-retryable failure naming the type.
    #[test]
    fn state_by_type() {
        let mut m = StateMap::new();
        m.insert(7u32);
        let ctx = TaskContext::new(TaskId::new("q", "x"), 1, 0, 0, Arc::new(m));
        assert_eq!(*ctx.state::<u32>().unwrap(), 7);
        let err = ctx.state::<String>().unwrap_err();
        assert_eq!(err.kind(), TaskErrorKind::Fail);
        assert!(err.message().contains("alloc::string::String"));
    }
}
