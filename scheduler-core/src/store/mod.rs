//! [`Store`]: one connection to Redis (single node, Cluster or Sentinel, see [`crate::conn`]), the
//! key names, the plumbing every script call shares (NOSCRIPT fallback in pipelines, pipelines
//! split by cluster slot), and one typed wrapper per Lua script of `lua/`: nothing else calls a
//! script.
//!
//! # Layout
//!
//! - this file: [`Store`], [`Partition`], connecting, pipelines;
//! - `script`: how a script's source is assembled ([`with_prelude`]), [`MAX_BATCH`];
//! - `reply`: decoding replies, and the reply-code tables of every script ([`Outcome`],
//!   [`CancelReply`], [`RequeueReply`]): the one place a script's integer codes are read;
//! - one file per script family, each with its wrappers and their input and reply types:
//!   `enqueue` (`enqueue.lua`), `schedule` (`promote.lua`, `reap.lua`), `lease` (`claim.lua`,
//!   `extend.lua`, `release.lua`, `release_claim.lua`, `progress.lua`), `outcome` (`ack.lua`, `retry.lua`),
//!   `admin` (`cancel.lua`, `requeue.lua`, `trim_dead.lua`), `lock` (the promoter lock),
//!   `schedules` (`schedule_write.lua`, periodic schedules), `unique` (`enqueue_unique.lua`,
//!   unique-for windows);
//! - `limits`: flow-control limits: the table in `<ns>:limits` and the budget scripts
//!   (`limit_acquire.lua`, `limit_release.lua`, `limit_extend.lua`) and partition scripts
//!   (`limit_park.lua`, `limit_wake.lua`);
//! - `flow`: `pause.lua` (pause and resume a queue) and reading the paused queues;
//! - `backup`: `export_page.lua` (pages of a partition's sets, records included) and
//!   `restore.lua` (tasks from an export file), for [`crate::backup`];
//! - `archive`: the history archive's side in Redis: the namespace setting, the per-partition
//!   streams finishing scripts append to, and reading them (`archive_done.lua`);
//! - `events`: task events: the per-queue setting and publishing them;
//! - `testing` (feature `testing`): `time_travel.lua`, scheduled tasks made due now in
//!   namespaces marked for tests;
//! - `workflow`: `wf_create.lua`, `wf_done.lua`, `wf_release.lua` (docs/workflows.md);
//! - `retry`: [`retry_transient`] for callers that retry transient errors.

use redis::{Pipeline, ScriptInvocation, Value};

use crate::conn::{self, Conn, ConnectOptions, Endpoint, Mode};
use crate::error::{Error, Result};
use crate::id::validate_queue;
use crate::keys::{Keys, PartitionKeys};

mod admin;
mod archive;
mod backup;
mod enqueue;
mod events;
mod flow;
mod lease;
mod limits;
mod lock;
mod outcome;
mod reply;
mod retry;
mod schedule;
mod schedules;
mod script;
#[cfg(feature = "testing")]
mod testing;
mod unique;
mod workflow;

pub use admin::{CancelReply, DeleteReply, RequeueReply};
pub use archive::{ArchiveEntry, ARCHIVE_GROUP};
pub use backup::{ExportedTask, RestoreTask, SetPage};
pub use enqueue::{Due, NewTask};
pub use lease::{Claim, Claimed};
pub use limits::{holder, waiter, Acquired};
pub use outcome::{AckItem, FailItem};
pub use reply::Outcome;
pub use retry::{retry_transient, retry_transient_for, DEFAULT_LOADING_WAIT};
pub use schedule::{Promoted, Reaped, Riders};
pub use schedules::{ScheduleTask, ScheduleWrite, ScheduleWriteArgs};
pub use script::{with_prelude, MAX_BATCH};
#[cfg(feature = "testing")]
pub use testing::Travel;
pub use unique::{UniqueMode, UniqueReply};
pub use workflow::WfNext;

/// A handle to the task store: a multiplexed, self-reconnecting connection plus key names.
///
/// Cheap to clone; clones share the connection. Clients and workers are built on it; use it
/// directly only to write tools (it exposes every script as a typed method).
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    endpoint: Endpoint,
    keys: Keys,
    /// The archive bound finishing scripts get (0: archive off), shared by clones; see
    /// [`Store::set_archive_bound`].
    archive: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The queues with task events on, shared by clones; see [`Store::events_on`].
    events: std::sync::Arc<std::sync::RwLock<events::EventsSetting>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("namespace", &self.keys.namespace())
            .field("mode", &self.conn.mode())
            .finish_non_exhaustive()
    }
}

/// One partition (queue, shard) with its key names and wake-up channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    /// The queue.
    pub queue: String,
    /// The shard within the queue.
    pub shard: u16,
    /// The partition's key names.
    pub keys: PartitionKeys,
    /// The queue's wake-up channel.
    pub channel: String,
}

impl Store {
    /// Connects to the Redis at `url` with key namespace `namespace`. Every URL form of
    /// [`crate::conn`] works: `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://`;
    /// TLS certificates come from the environment ([`conn::TlsConfig::from_env`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::Store;
    /// let one = Store::connect("redis://127.0.0.1:6379", "sched").await?;
    /// let cluster = Store::connect("redis+cluster://10.0.0.1:6379,10.0.0.2:6379", "sched").await?;
    /// let ha = Store::connect("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster", "sched").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] for a malformed URL, [`Error::InvalidConfig`] for unreadable TLS
    /// files, [`Error::Redis`] when Redis cannot be reached.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self> {
        Self::connect_with(ConnectOptions::new(url).namespace(namespace)).await
    }

    /// Connects with `opts`: URL, namespace, TLS certificates, timeouts.
    ///
    /// # Errors
    ///
    /// As [`Store::connect`].
    pub async fn connect_with(opts: ConnectOptions) -> Result<Self> {
        let (conn, endpoint) = conn::connect(&opts).await?;
        Ok(Self {
            conn,
            endpoint,
            keys: Keys::new(&opts.namespace),
            archive: std::sync::Arc::default(),
            events: std::sync::Arc::default(),
        })
    }

    /// The key names of this store's namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Single node, Cluster or Sentinel.
    pub fn mode(&self) -> Mode {
        self.conn.mode()
    }

    /// A client for one node: the server of a single-node store, the first seed node of a
    /// cluster, the master found at connect time through Sentinel. Prefer [`Store::pubsub`] and
    /// [`Store::conn`], which follow failovers.
    pub fn redis_client(&self) -> &redis::Client {
        &self.endpoint.node_client
    }

    /// A new pub/sub connection that receives every wake-up the scripts publish, in every mode
    /// (see [`crate::conn`]). Open a new one when it closes: that finds the current master or a
    /// live cluster node.
    ///
    /// # Errors
    ///
    /// A Redis error when no node can be reached.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        self.endpoint.pubsub(&self.conn).await
    }

    /// A clone of the shared multiplexed connection, for plain commands. On a cluster, commands
    /// route by key; a pipeline must keep to one slot (see [`Store::query_pipeline`]).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The partition (`queue`, `shard`).
    pub fn partition(&self, queue: &str, shard: u16) -> Partition {
        Partition {
            queue: queue.to_owned(),
            shard,
            keys: self.keys.partition(queue, shard),
            channel: self.keys.wake_channel(queue),
        }
    }

    /// Records `shards` as the shard count of `queue` unless one is recorded already, and returns
    /// the recorded count.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], or a Redis error.
    pub async fn register_queue(&self, queue: &str, shards: u16) -> Result<u16> {
        validate_queue(queue)?;
        let mut conn = self.conn();
        // Read first: a registered queue needs no write, so workers and producers start even
        // when Redis is out of memory (`HSETNX` is refused under `maxmemory` even as a no-op).
        let known: Option<u16> = redis::cmd("HGET")
            .arg(self.keys.queues())
            .arg(queue)
            .query_async(&mut conn)
            .await?;
        if let Some(n) = known {
            return Ok(n);
        }
        let (_, stored): (bool, Option<u16>) = redis::pipe()
            .hset_nx(self.keys.queues(), queue, shards)
            .hget(self.keys.queues(), queue)
            .query_async(&mut conn)
            .await?;
        stored.ok_or_else(|| Error::Protocol(format!("queue {queue} vanished from the registry")))
    }

    /// Sends `pipe` and returns one reply per command, in order, in every mode. On a cluster the
    /// commands are grouped by slot (a script by its first key; keyless commands such as `TIME`
    /// go with the first group) and the groups are sent concurrently, one round trip each.
    /// Not atomic across slots; commands must not be marked `ignore()`.
    ///
    /// # Errors
    ///
    /// The first error of any command (the other groups may have been applied).
    pub async fn query_pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        self.query_groups(pipe, None, false).await
    }

    /// Runs several invocations of one script in pipelines (one round trip per cluster slot;
    /// a single one on a single node or Sentinel) and returns their replies in order. Pipelines
    /// do not fall back from EVALSHA to EVAL by themselves, so on NOSCRIPT (a restarted, flushed
    /// or newly promoted Redis) we load the script (on every master of a cluster) and send that
    /// pipeline again. Callers keep one script kind per pipeline, so NOSCRIPT means that none of
    /// the pipeline's calls ran on that node.
    pub(crate) async fn run_pipeline(&self, invs: &[ScriptInvocation<'_>]) -> Result<Vec<Value>> {
        self.run_pipeline_each(invs, false).await
    }

    /// As [`Store::run_pipeline`]; with `each`, a call that Redis refuses (out of memory, a
    /// script error) comes back as a [`Value::ServerError`] in its place while the others keep
    /// their replies, so that a caller can tell which calls were applied.
    pub(crate) async fn run_pipeline_each(
        &self,
        invs: &[ScriptInvocation<'_>],
        each: bool,
    ) -> Result<Vec<Value>> {
        if invs.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = Pipeline::with_capacity(invs.len());
        if each {
            pipe.ignore_errors();
        }
        for inv in invs {
            pipe.invoke_script(inv);
        }
        self.query_groups(&pipe, Some(&invs[0]), each).await
    }

    /// As [`Store::run_pipeline_each`] with `each`, followed on the same connection by
    /// `WAIT replicas timeout_ms`: succeeds only once `replicas` replicas confirmed every write
    /// of the pipeline. Not on a
    /// Cluster (the pipeline would span nodes); [`crate::Client::with_config`] refuses that
    /// combination.
    pub(crate) async fn run_pipeline_replicated(
        &self,
        invs: &[ScriptInvocation<'_>],
        replicas: u32,
        timeout_ms: u64,
    ) -> Result<Vec<Value>> {
        if invs.is_empty() {
            return Ok(Vec::new());
        }
        if self.conn.mode() == Mode::Cluster {
            return Err(Error::InvalidConfig(
                "waiting for replicas is not supported on a Redis Cluster".into(),
            ));
        }
        let mut pipe = Pipeline::with_capacity(invs.len() + 1);
        pipe.ignore_errors();
        for inv in invs {
            pipe.invoke_script(inv);
        }
        pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
        let mut out = self.query_one(&pipe, Some(&invs[0])).await?;
        let confirmed = match out.pop() {
            Some(Value::Int(n)) => n.max(0) as u32,
            Some(Value::ServerError(e)) => return Err(redis::RedisError::from(e).into()),
            other => return Err(Error::Protocol(format!("WAIT replied {other:?}"))),
        };
        if confirmed < replicas {
            return Err(Error::NotReplicated {
                confirmed,
                wanted: replicas,
            });
        }
        Ok(out)
    }

    async fn query_groups(
        &self,
        pipe: &Pipeline,
        script: Option<&ScriptInvocation<'_>>,
        ignore_errors: bool,
    ) -> Result<Vec<Value>> {
        if pipe.is_empty() {
            return Ok(Vec::new());
        }
        if self.conn.mode() != Mode::Cluster {
            return self.query_one(pipe, script).await;
        }
        let groups = conn::split_by_slot(pipe, ignore_errors);
        if groups.len() == 1 {
            return self.query_one(pipe, script).await;
        }
        if pipe.is_transaction() {
            return Err(Error::Protocol(
                "an atomic pipeline cannot span cluster slots".into(),
            ));
        }
        // Concurrently: the cluster connection multiplexes, so the groups for different nodes
        // are in flight at once and the whole call costs about one round trip.
        let replies =
            futures::future::join_all(groups.iter().map(|(_, p)| self.query_one(p, script))).await;
        let mut out = vec![Value::Nil; pipe.len()];
        for ((idx, _), reply) in groups.iter().zip(replies) {
            let values = reply?;
            if values.len() != idx.len() {
                return Err(Error::Protocol(format!(
                    "pipeline of {} commands got {} replies",
                    idx.len(),
                    values.len()
                )));
            }
            for (i, v) in idx.iter().zip(values) {
                out[*i] = v;
            }
        }
        Ok(out)
    }

    async fn query_one(
        &self,
        pipe: &Pipeline,
        script: Option<&ScriptInvocation<'_>>,
    ) -> Result<Vec<Value>> {
        let mut conn = self.conn();
        // A script cache can be flushed again between our load and the retry (an operator's
        // `SCRIPT FLUSH` on each node in turn, a second restart): a few rounds, then the error.
        let mut loads_left = 3;
        loop {
            let sent = std::time::Instant::now();
            let reply = pipe.query_async::<Vec<Value>>(&mut conn).await;
            crate::metrics::round_trip(sent.elapsed());
            let no_script = match reply {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                        && loads_left > 0 =>
                {
                    e
                }
                // A pipeline sent with `ignore_errors` carries NOSCRIPT in its replies.
                Ok(values) if loads_left > 0 => match values.iter().find_map(|v| match v {
                    Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                        Some(e.clone())
                    }
                    _ => None,
                }) {
                    Some(e) => e.into(),
                    None => return Ok(values),
                },
                other => return Ok(other?),
            };
            let Some(inv) = script else {
                return Err(no_script.into());
            };
            inv.load_async(&mut conn).await?;
            loads_left -= 1;
        }
    }

    /// Runs one script invocation (EVALSHA, falling back to loading the script on NOSCRIPT).
    pub(crate) async fn run_script(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut conn = self.conn();
        let sent = std::time::Instant::now();
        let reply = inv.invoke_async(&mut conn).await;
        crate::metrics::round_trip(sent.elapsed());
        Ok(reply?)
    }
}
