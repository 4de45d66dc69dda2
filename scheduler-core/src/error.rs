//! The error type of the client and the store.

use crate::id::TaskId;

/// Everything that can go wrong talking to the task store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis URL could not be parsed or names an unsupported scheme.
    #[error("invalid Redis URL {url:?}: {source}")]
    InvalidUrl {
        /// The URL as given, password included only if the caller put it there.
        url: String,
        /// What the Redis client said.
        source: redis::RedisError,
    },
    /// A setting that cannot be used: a connection setting (an unreadable TLS certificate
    /// file...) or a worker setting out of its range (the message names the setting and value).
    #[error("invalid setting: {0}")]
    InvalidConfig(String),
    /// Redis answered with an error, or could not be reached (down, restarting, timed out).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Arguments or a result could not be serialised to MessagePack.
    #[error("could not encode as MessagePack: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// Stored bytes could not be decoded into the requested type.
    #[error("could not decode MessagePack: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// The encoded arguments are bigger than the configured cap.
    #[error("payload of {size} bytes exceeds the cap of {max} bytes")]
    PayloadTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The configured cap in bytes.
        max: usize,
    },
    /// A task's headers exceed [`crate::headers::MAX_HEADER_ENTRIES`] entries or
    /// [`crate::headers::MAX_HEADERS_BYTES`] bytes encoded.
    #[error("headers of {entries} entries, {bytes} bytes encoded, exceed the bounds of 64 entries and 8192 bytes")]
    HeadersTooLarge {
        /// Entries given.
        entries: usize,
        /// Encoded size in bytes.
        bytes: usize,
    },
    /// A queue name that would break key names (allowed: 1-64 of `A-Z a-z 0-9 _ - .`).
    #[error("invalid queue name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ - .")]
    InvalidQueueName(String),
    /// A task id that is empty, too long, has control characters, or lacks the `queue/` part.
    #[error("invalid task id {0:?}")]
    InvalidTaskId(String),
    /// A priority outside 0..=9.
    #[error("invalid priority {0}: use 0 (lowest) to 9 (highest)")]
    InvalidPriority(u8),
    /// A unique-for option that cannot hold: a window under 1 ms, an empty `unique_key`, a
    /// `unique_key` without a window, or a caller-given id (see `docs/unique.md`).
    #[error("invalid unique-for option: {0}")]
    InvalidUnique(String),
    /// A deadline that cannot hold: already passed (by this host's clock for
    /// [`crate::TaskRequest::expires_at`], by the Redis server's at enqueue), zero, or before the
    /// task's due time (it could never start). Nothing was stored for that task.
    #[error("invalid deadline: {0}")]
    InvalidDeadline(String),
    /// This client was configured with a shard count for a queue that differs from the one
    /// recorded in Redis when the queue was first used.
    #[error("queue {queue:?} has {stored} shards in Redis but this process is configured with {configured}")]
    ShardMismatch {
        /// The queue.
        queue: String,
        /// Shards configured in this process.
        configured: u16,
        /// Shards recorded in Redis.
        stored: u16,
    },
    /// No such task (never existed, or its record expired after its TTL).
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// [`crate::Inspector`]: no queue of that name is registered (looking does not create one).
    #[error("unknown queue {0:?}: not registered")]
    UnknownQueue(String),
    /// [`crate::Inspector::tasks`]: tasks in this state are in no set (finished tasks are kept
    /// as records only); look them up one by one.
    #[error("tasks that are {0} are not listed: only scheduled, ready, running and dead")]
    NotListed(crate::info::TaskState),
    /// [`crate::Inspector::purge`]: tasks in this state cannot be purged (running tasks are
    /// held by a worker's lease; finished tasks are in no set).
    #[error("tasks that are {0} cannot be purged: only scheduled, ready and dead")]
    NotPurgeable(crate::info::TaskState),
    /// [`crate::Inspector::tasks`]: a page cursor that no page returned.
    #[error("invalid page cursor {0:?}: pass the `next` of a previous page")]
    InvalidCursor(String),
    /// The task is running, so it cannot be deleted ([`crate::Client::cancel_task`] stops a
    /// running task instead).
    #[error("task {0} is running and cannot be deleted (cancel it instead)")]
    Running(TaskId),
    /// The task already finished (succeeded, dead or cancelled).
    #[error("task {0} already finished")]
    AlreadyFinished(TaskId),
    /// The task failed for good; the text is its last error.
    #[error("task {id} failed: {error}")]
    TaskFailed {
        /// The task.
        id: TaskId,
        /// Its last error.
        error: String,
    },
    /// The task was cancelled.
    #[error("task {0} was cancelled")]
    Cancelled(TaskId),
    /// The task did not start by its deadline and ended `expired`.
    #[error("task {0} expired: it did not start by its deadline")]
    Expired(TaskId),
    /// Waiting for a result took longer than the caller allowed.
    #[error("timed out waiting for task {0}")]
    Timeout(TaskId),
    /// A periodic schedule that cannot be used: an invalid cron expression or time zone, an
    /// interval of zero, a bad schedule name, or a change of queue; nothing was stored.
    #[error("invalid schedule {name:?}: {reason}")]
    InvalidSchedule {
        /// The schedule's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A schedule declared on a worker for a task name that worker has not registered; nothing
    /// was stored.
    #[error("schedule {schedule:?} runs task {task:?}, which this worker has not registered")]
    UnknownScheduleTask {
        /// The schedule's name.
        schedule: String,
        /// The task name it runs.
        task: String,
    },
    /// No schedule of that name is stored.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    /// Redis returned something the scripts never return: a version mismatch or a bug.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    /// A workflow that cannot be built (`docs/workflows.md`): a group without members, too
    /// many members, a bad workflow id, a member with its own id or unique option, a deadline
    /// on a member after the first stage, a receiving step's fixed arguments that are not a
    /// tuple; nothing was stored.
    #[error("invalid workflow: {0}")]
    InvalidWorkflow(String),
    /// No workflow of that id is stored (never started, or finished and expired).
    #[error("workflow {0:?} not found")]
    WorkflowNotFound(String),
    /// The workflow failed (policy fail-fast: a member failed for good; its remaining members
    /// were cancelled); the text names the member and its error.
    #[error("workflow {id:?} failed: {error}")]
    WorkflowFailed {
        /// The workflow's id.
        id: String,
        /// What failed.
        error: String,
    },
    /// Waiting for a workflow's result took longer than the caller allowed.
    #[error("timed out waiting for workflow {0:?}")]
    WorkflowTimeout(String),
    /// With [`crate::ClientConfig::wait_for_replicas`]: the master applied the write, but fewer
    /// replicas than asked confirmed it within the timeout, so a failover could lose it. Retrying
    /// is safe (enqueue is idempotent by task id) and is what the client does by itself.
    #[error("write confirmed by {confirmed} of the {wanted} replicas asked for")]
    NotReplicated {
        /// Replicas that confirmed the write.
        confirmed: u32,
        /// Replicas asked for.
        wanted: u32,
    },
    /// [`crate::Client::enqueue_bulk`]: Redis refused some of the tasks (out of memory, an
    /// error that retries did not cure) after it had created others. `enqueued` are settled,
    /// like the reply of a call that succeeds; send only `refused` again (sending an enqueued
    /// task again would create it anew if it ran and its record expired in between).
    #[error("{} of {} tasks refused: {source}", refused.len(), refused.len() + enqueued.len())]
    PartlyEnqueued {
        /// The tasks Redis accepted, with whether this call created them (as in the reply of
        /// [`crate::Client::enqueue_bulk`]).
        enqueued: Vec<(TaskId, bool)>,
        /// The tasks not known to be created, in request order.
        refused: Vec<TaskId>,
        /// Why they were refused.
        source: Box<Error>,
    },
    /// [`crate::backup`]: an export file that cannot be read (not an export, a newer format,
    /// truncated, corrupted); nothing after the bad spot was used.
    #[error("export file: {0}")]
    BadExportFile(#[from] crate::backup::FormatError),
    /// [`crate::backup`]: reading or writing an export file failed.
    #[error("export file i/o: {0}")]
    Io(#[from] std::io::Error),
    /// [`crate::backup::Importer::import`] stopped part way: the tasks counted in `done` are in
    /// Redis (restored or found there), the rest of the file was not imported. Importing the
    /// whole file again is safe: what is there is skipped.
    #[error("import stopped after {} tasks ({} restored, {} existed) and {} schedules: {source}",
        done.restored + done.existed, done.restored, done.existed, done.schedules)]
    ImportStopped {
        /// What was imported before the error.
        done: crate::backup::ImportReport,
        /// Why it stopped.
        source: Box<Error>,
    },
    /// The task history archive's PostgreSQL (`scheduler_worker::archive`): a URL that does not
    /// parse, a server that cannot be reached or refuses the login, a failed migration or query.
    /// The text names the URL without its password.
    #[error("history archive database: {0}")]
    Archive(String),
    /// [`crate::TaskContext::progress`]: a percent above 100, or a message longer than
    /// [`crate::task::MAX_PROGRESS_MESSAGE_BYTES`]; nothing was recorded.
    #[error("invalid progress: {0}")]
    InvalidProgress(String),
    /// [`crate::TaskContext::progress`]: this run no longer holds the task's lease (it expired
    /// and the task was reaped, handed back, or finished), so it may not write to the task;
    /// nothing was recorded. The handler should stop: another run may own the task now.
    #[error("task {0}: this run lost its lease")]
    LeaseLost(TaskId),
    /// A flow-control limit ([`crate::limits`]) that cannot hold: a limit of 0, a rate period of
    /// 0 or beyond a day, a scope or key family name that is not 1–64 of `A-Z a-z 0-9 _ - .`, a
    /// limit key that is empty or over [`crate::limits::MAX_LIMIT_KEY_BYTES`]. Nothing was
    /// written.
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    /// A client middleware ([`crate::client::EnqueueMiddleware::before_enqueue`]) refused the
    /// enqueue; the text is its reason. Nothing of the call was enqueued.
    #[error("enqueue refused: {0}")]
    EnqueueRefused(String),
    /// A test helper that moves time (`scheduler::testing`) was called on namespace `.0`, which
    /// is not marked for tests: only a namespace of a `TestRedis` is. Nothing changed.
    #[error("namespace {0:?} is not marked for tests: time travel works only on a scheduler::testing::TestRedis")]
    NotATestNamespace(String),
}

impl Error {
    /// A short stable name of the variant, `snake_case` (`redis`, `payload_too_large`,
    /// `partly_enqueued`...): the `kind` label of the `scheduler_enqueue_errors_total` metric, and
    /// a key for logs. A Redis error that [`Error::is_transient`] calls transient is
    /// `redis_transient`.
    ///
    /// # Examples
    ///
    /// ```
    /// use scheduler_core::Error;
    ///
    /// assert_eq!(Error::InvalidPriority(12).kind(), "invalid_priority");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "invalid_url",
            Error::InvalidConfig(_) => "invalid_config",
            Error::Redis(_) if self.is_transient() => "redis_transient",
            Error::Redis(_) => "redis",
            Error::Encode(_) => "encode",
            Error::Decode(_) => "decode",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::HeadersTooLarge { .. } => "headers_too_large",
            Error::InvalidQueueName(_) => "invalid_queue_name",
            Error::InvalidTaskId(_) => "invalid_task_id",
            Error::InvalidPriority(_) => "invalid_priority",
            Error::InvalidUnique(_) => "invalid_unique",
            Error::InvalidDeadline(_) => "invalid_deadline",
            Error::ShardMismatch { .. } => "shard_mismatch",
            Error::NotFound(_) => "not_found",
            Error::UnknownQueue(_) => "unknown_queue",
            Error::NotListed(_) => "not_listed",
            Error::InvalidCursor(_) => "invalid_cursor",
            Error::Running(_) => "running",
            Error::AlreadyFinished(_) => "already_finished",
            Error::TaskFailed { .. } => "task_failed",
            Error::Cancelled(_) => "cancelled",
            Error::Expired(_) => "expired",
            Error::Timeout(_) => "timeout",
            Error::InvalidSchedule { .. } => "invalid_schedule",
            Error::UnknownScheduleTask { .. } => "unknown_schedule_task",
            Error::ScheduleNotFound(_) => "schedule_not_found",
            Error::Protocol(_) => "protocol",
            Error::InvalidWorkflow(_) => "invalid_workflow",
            Error::WorkflowNotFound(_) => "workflow_not_found",
            Error::WorkflowFailed { .. } => "workflow_failed",
            Error::WorkflowTimeout(_) => "workflow_timeout",
            Error::NotReplicated { .. } => "not_replicated",
            Error::PartlyEnqueued { .. } => "partly_enqueued",
            Error::NotPurgeable(_) => "not_purgeable",
            Error::BadExportFile(_) => "bad_export_file",
            Error::Io(_) => "io",
            Error::ImportStopped { .. } => "import_stopped",
            Error::Archive(_) => "archive",
            Error::NotATestNamespace(_) => "not_a_test_namespace",
            Error::InvalidProgress(_) => "invalid_progress",
            Error::LeaseLost(_) => "lease_lost",
            Error::EnqueueRefused(_) => "enqueue_refused",
            Error::InvalidLimit(_) => "invalid_limit",
        }
    }

    /// Whether trying again later may succeed: connection lost, Redis loading or restarting,
    /// a failover in progress, a timeout. A caller's retry loop keys on this.
    pub fn is_transient(&self) -> bool {
        match self {
            // The replica may be catching up, or a failover is under way.
            Error::NotReplicated { .. } => true,
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_cluster_error()
                    // A cluster node or the master of a Sentinel deployment is being replaced.
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::ClusterConnectionNotFound
                            | redis::ErrorKind::MasterNameNotFoundBySentinel
                    )
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::MasterDown
                                | redis::ServerErrorKind::ReadOnly
                        )
                    )
            }
            _ => false,
        }
    }

    /// Whether Redis answered `LOADING`: it is loading its data set into memory after a restart
    /// (seconds to minutes with a large AOF or RDB) and will serve once done. Such errors are
    /// also [`Error::is_transient`]; the retry loops give them their own, longer time budget
    /// ([`crate::ClientConfig::loading_wait`]).
    pub fn is_loading(&self) -> bool {
        matches!(self, Error::Redis(e) if matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
        ))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
