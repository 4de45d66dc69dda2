//! The operators' view of the task store: queues and their counts, tasks by state, one task
//! decoded, live workers; and the actions an operator takes (cancel, requeue, delete).
//!
//! Every read has a bounded cost: counts are `ZCARD`/`ZCOUNT` (O(1)/O(log n)) per shard in one
//! pipeline, lists read at most the page asked for, and nothing scans the keyspace
//! ([`Inspector::workers`] reads the worker index, not `SCAN`). Reads of several shards
//! are not one snapshot: a worker may move a task between two of them.

use redis::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::client::{Cancellation, Client};
use crate::error::{Error, Result};
use crate::id::{validate_id, validate_queue, TaskId};
use crate::info::{take_blob, TaskInfo, TaskState};
use crate::limits::{Budget, Limit, LimitScope, LimitUsage};
use crate::scripts::{DeleteReply, RequeueReply};
use crate::store::{Partition, Store};

/// The most tasks one list call returns; larger limits are cut to it.
pub const MAX_PAGE: usize = 1000;

/// Dead ids sent to one `requeue.lua` call: bounds the time one call holds Redis.
const REQUEUE_BATCH: usize = 500;

/// Ids read per step of [`Inspector::purge`]; their `delete.lua` calls are sent together (one
/// script call per task, each short), so one step costs one round trip or so.
const PURGE_BATCH: usize = 200;

/// Reads and administers queues, tasks and workers; what `schedctl` and dashboards use.
///
/// Made from a [`Client`] (same connection, namespace and retry policy). Looking never creates:
/// an unknown queue is [`Error::UnknownQueue`], where [`Client`] would register it.
///
/// # Examples
///
/// ```no_run
/// use scheduler_core::{Client, Inspector, TaskState};
///
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let inspector = Inspector::new(&client);
/// for q in inspector.queues().await? {
///     let counts = inspector.queue(&q.name).await?;
///     println!("{}: {} scheduled, {} dead", q.name, counts.total.scheduled, counts.total.dead);
/// }
/// let page = inspector.tasks("emails", TaskState::Dead, None, 50).await?;
/// for t in &page.tasks {
///     println!("{} {:?}", t.id, t.error);
///     inspector.requeue(&t.id).await?;
/// }
/// if let Some(cursor) = page.next {
///     let _more = inspector.tasks("emails", TaskState::Dead, Some(&cursor), 50).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Inspector {
    client: Client,
}

/// A queue as registered in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueSummary {
    /// The queue's name.
    pub name: String,
    /// Its shard count.
    pub shards: u16,
    /// When it was paused (unix ms, Redis clock), `None` when it is not paused
    /// ([`Inspector::pause`]).
    pub paused_at_ms: Option<i64>,
}

/// Task counts and lifetime counters of one shard, or summed over a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Tasks waiting for their due time.
    pub scheduled: u64,
    /// Tasks due and waiting for a worker.
    pub ready: u64,
    /// Tasks running under a lease.
    pub running: u64,
    /// Tasks in the dead set.
    pub dead: u64,
    /// Scheduled tasks whose due time has come by the Redis clock: due, not promoted yet.
    pub due_now: u64,
    /// Lifetime counters (enqueued, promoted, succeeded, retried, dead, reaped, cancelled,
    /// requeued, deleted...), as the scripts count them.
    pub counters: BTreeMap<String, u64>,
}

impl Counts {
    /// The lifetime counters the scripts keep, in the order a task's life runs through them.
    pub const COUNTER_ORDER: [&'static str; 10] = [
        "enqueued",
        "promoted",
        "succeeded",
        "retried",
        "dead",
        "reaped",
        "cancelled",
        "expired",
        "requeued",
        "deleted",
    ];

    /// The lifetime counters in display order: those of [`Counts::COUNTER_ORDER`] always (0 when
    /// never incremented), then any other by name. `schedctl` and the dashboard show them so.
    ///
    /// ```
    /// let c = scheduler_core::inspector::Counts::default();
    /// let shown = c.ordered_counters();
    /// assert_eq!(shown[0], ("enqueued", 0));
    /// assert_eq!(shown.len(), 10);
    /// ```
    pub fn ordered_counters(&self) -> Vec<(&str, u64)> {
        let get = |k: &str| self.counters.get(k).copied().unwrap_or(0);
        let mut out: Vec<(&str, u64)> = Self::COUNTER_ORDER.iter().map(|k| (*k, get(k))).collect();
        // A BTreeMap iterates by name.
        out.extend(
            self.counters
                .iter()
                .filter(|(k, _)| !Self::COUNTER_ORDER.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), *v)),
        );
        out
    }

    fn add(&mut self, o: &Counts) {
        self.scheduled += o.scheduled;
        self.ready += o.ready;
        self.running += o.running;
        self.dead += o.dead;
        self.due_now += o.due_now;
        for (k, v) in &o.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
    }
}

/// The counts of one queue: summed, and per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// The queue.
    pub queue: String,
    /// The Redis clock when they were read (unix ms): what `due_now` was judged by.
    pub server_now_ms: i64,
    /// Summed over the shards.
    pub total: Counts,
    /// One per shard, in shard order.
    pub per_shard: Vec<Counts>,
}

/// What is due in a queue soon, by the Redis clock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DueSummary {
    /// The Redis clock (unix ms).
    pub server_now_ms: i64,
    /// Scheduled tasks due now, not promoted yet.
    pub due_now: u64,
    /// Scheduled tasks due after now and within the window asked for.
    pub due_within: u64,
    /// Tasks due and waiting for a worker.
    pub ready: u64,
    /// The earliest due time of a scheduled task, if any.
    pub next_due_ms: Option<i64>,
}

/// One task of a list: what its set and a few fields of its record say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskSummary {
    /// The task.
    pub id: TaskId,
    /// Its shard.
    pub shard: u16,
    /// Its score in the set listed (unix ms): the due time (scheduled), the lease deadline
    /// (running), the time of death (dead); for ready, the ready set's ordering score.
    pub score: i64,
    /// Handler name; `None` when the record is gone (it moved on between the two reads).
    pub name: Option<String>,
    /// Runs started so far.
    pub attempts: Option<u32>,
    /// The last error, if a run failed.
    pub error: Option<String>,
    /// The worker running it, or that ran it last (the record's `worker` field).
    pub worker: Option<String>,
    /// When its current or last run started (unix ms; the record's `started_at`).
    pub started_at_ms: Option<i64>,
}

/// One page of a list of tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskPage {
    /// Tasks in this page.
    pub tasks: Vec<TaskSummary>,
    /// How many tasks the listed sets held in all when read.
    pub total: u64,
    /// Where the next page starts; `None` at the end. Pass it to [`Inspector::tasks`].
    pub next: Option<String>,
}

/// One task record, decoded, with what only its partition knows.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskDetail {
    /// The task.
    pub id: TaskId,
    /// Its shard.
    pub shard: u16,
    /// The queue's shard count.
    pub shards: u16,
    /// The record's Redis key, for a look with `redis-cli`.
    pub key: String,
    /// The record decoded; `None` when it cannot be (no readable state: a damaged record).
    pub info: Option<TaskInfo>,
    /// Every field of the record as stored, `args`, `result`, `headers` and `progress_msg`
    /// joined from their pieces.
    pub fields: BTreeMap<String, Vec<u8>>,
    /// When its lease ends (unix ms), while it runs.
    pub lease_deadline_ms: Option<i64>,
    /// When the record expires (unix ms), if it has a TTL.
    pub expires_at_ms: Option<i64>,
    /// The Redis clock when read (unix ms).
    pub server_now_ms: i64,
}

/// A live worker process, from its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Its process id.
    pub pid: Option<u32>,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// Its concurrency.
    pub concurrency: Option<u64>,
    /// Tasks it runs now.
    pub running: Option<u64>,
    /// Runs it completed successfully since it started.
    pub succeeded: Option<u64>,
    /// Runs that failed (retried or dead) since it started.
    pub failed: Option<u64>,
    /// When it started, by its host's clock (unix ms).
    pub started_at_ms: Option<i64>,
    /// How long its heartbeat lives unless refreshed (ms).
    pub ttl_ms: i64,
    /// How late its runs started over about the last minute (50 to 60 s), per queue it serves
    /// (the heartbeat's `lateness:<queue>` fields); a queue it ran nothing of in that time has
    /// an empty histogram. [`Inspector::lateness`] adds them up across workers.
    pub lateness: BTreeMap<String, crate::LatenessHistogram>,
}

/// What a bulk requeue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequeueTally {
    /// Dead tasks put back in their ready set.
    pub requeued: u64,
    /// Tasks that were no longer dead: unchanged.
    pub not_dead: u64,
    /// Ids in a dead set without a record: unchanged.
    pub not_found: u64,
}

impl RequeueTally {
    fn add(&mut self, replies: &[RequeueReply]) {
        for r in replies {
            match r {
                RequeueReply::Requeued => self.requeued += 1,
                RequeueReply::NotDead => self.not_dead += 1,
                RequeueReply::NotFound => self.not_found += 1,
            }
        }
    }
}

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeTally {
    /// Tasks deleted (record and set entry), counted as `deleted` in their partition.
    pub deleted: u64,
    /// Tasks that had started running meanwhile: left alone.
    pub running: u64,
    /// Ids in a set without a record: left alone.
    pub not_found: u64,
}

/// The set holding tasks of `state`, if one does.
fn set_of(p: &Partition, state: TaskState) -> Result<String> {
    Ok(match state {
        TaskState::Scheduled => p.keys.scheduled(),
        TaskState::Ready => p.keys.ready(),
        TaskState::Running => p.keys.active(),
        TaskState::Dead => p.keys.dead(),
        other => return Err(Error::NotListed(other)),
    })
}

fn decode<T: redis::FromRedisValue>(v: Value, what: &str) -> Result<T> {
    redis::from_redis_value(v).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

/// A task hash, its PTTL, its lease deadline (score in the active set), server `TIME`.
type RecordReply = (HashMap<String, Vec<u8>>, i64, Option<f64>, (i64, i64));

/// Parses a page cursor: `<shard>:<offset>`.
fn parse_cursor(c: &str) -> Result<(u16, u64)> {
    c.split_once(':')
        .and_then(|(s, o)| Some((s.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| Error::InvalidCursor(c.to_owned()))
}

impl Inspector {
    /// An inspector using `client`'s connection, namespace and retry policy.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
        }
    }

    fn store(&self) -> &Store {
        self.client.store()
    }

    /// Runs a pipeline with the client's retry policy (reads only: safe to repeat).
    async fn read(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>> {
        self.client
            .retry(|| self.store().query_pipeline(pipe))
            .await
    }

    /// The Redis server's clock in unix ms: the clock every script judges due times by.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn server_time_ms(&self) -> Result<i64> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
        let (s, us): (i64, i64) = decode(v, "TIME")?;
        Ok(s * 1000 + us / 1000)
    }

    /// Every registered queue, by name.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn queues(&self) -> Result<Vec<QueueSummary>> {
        let mut pipe = redis::pipe();
        pipe.hgetall(self.store().keys().queues());
        let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
        let all: HashMap<String, u16> = decode(v, "the queue registry")?;
        let sorted: BTreeMap<String, u16> = all.into_iter().collect();
        let paused = self.paused().await?;
        Ok(sorted
            .into_iter()
            .map(|(name, shards)| QueueSummary {
                paused_at_ms: paused.get(&name).copied(),
                name,
                shards,
            })
            .collect())
    }

    /// The shard count recorded for `queue`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], [`Error::UnknownQueue`] (looking does not register it), or a
    /// Redis error.
    pub async fn shards(&self, queue: &str) -> Result<u16> {
        validate_queue(queue)?;
        let mut pipe = redis::pipe();
        pipe.hget(self.store().keys().queues(), queue);
        let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
        let n: Option<u16> = decode(v, "the queue registry")?;
        n.ok_or_else(|| Error::UnknownQueue(queue.to_owned()))
    }

    /// The counts of `queue`, summed and per shard: one `TIME` and one pipeline (per cluster
    /// slot) of `ZCARD`/`ZCOUNT`/`HGETALL`, whatever the number of tasks.
    ///
    /// # Errors
    ///
    /// As [`Inspector::shards`].
    pub async fn queue(&self, queue: &str) -> Result<QueueCounts> {
        let shards = self.shards(queue).await?;
        let now = self.server_time_ms().await?;
        let pipe = counts_pipeline(self.store(), queue, shards, Some(now));
        let per_shard = parse_counts(self.read(&pipe).await?, true)?;
        let mut total = Counts::default();
        for c in &per_shard {
            total.add(c);
        }
        Ok(QueueCounts {
            queue: queue.to_owned(),
            server_now_ms: now,
            total,
            per_shard,
        })
    }

    /// What is due in `queue` now and within `within_ms`, and the next due time.
    ///
    /// # Errors
    ///
    /// As [`Inspector::shards`].
    pub async fn due(&self, queue: &str, within_ms: u64) -> Result<DueSummary> {
        let shards = self.shards(queue).await?;
        let now = self.server_time_ms().await?;
        let until = now.saturating_add(i64::try_from(within_ms).unwrap_or(i64::MAX));
        let mut pipe = redis::pipe();
        for shard in 0..shards {
            let k = self.store().partition(queue, shard).keys;
            pipe.zcount(k.scheduled(), "-inf", now)
                .zcount(k.scheduled(), format!("({now}"), until)
                .zcard(k.ready())
                .zrange_withscores(k.scheduled(), 0, 0);
        }
        let mut out = DueSummary {
            server_now_ms: now,
            due_now: 0,
            due_within: 0,
            ready: 0,
            next_due_ms: None,
        };
        let flat = self.read(&pipe).await?;
        for c in flat.chunks_exact(4) {
            let (n, w, r, head): (u64, u64, u64, Vec<(String, f64)>) =
                decode(Value::Array(c.to_vec()), "due counts")?;
            out.due_now += n;
            out.due_within += w;
            out.ready += r;
            if let Some((_, score)) = head.first() {
                let s = *score as i64;
                out.next_due_ms = Some(out.next_due_ms.map_or(s, |x| x.min(s)));
            }
        }
        Ok(out)
    }

    /// One page of the tasks of `queue` in `state` (scheduled, ready, running or dead; finished
    /// tasks are in no set), shard after shard, each shard in its set's order (soonest due,
    /// first to run, earliest lease end, oldest death). Start with `cursor` `None`, then pass
    /// [`TaskPage::next`]. Costs one pipeline of `ZCARD`s, then a `ZRANGE` and an `HMGET` per
    /// task of the page. Tasks moving between two pages may be skipped or shown twice.
    ///
    /// # Errors
    ///
    /// [`Error::NotListed`] for `succeeded` and `cancelled`, [`Error::InvalidCursor`], and as
    /// [`Inspector::shards`].
    pub async fn tasks(
        &self,
        queue: &str,
        state: TaskState,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        let limit = limit.clamp(1, MAX_PAGE);
        let shards = self.shards(queue).await?;
        let (mut shard, mut offset) = cursor.map(parse_cursor).transpose()?.unwrap_or((0, 0));
        let mut pipe = redis::pipe();
        for s in 0..shards {
            pipe.zcard(set_of(&self.store().partition(queue, s), state)?);
        }
        let sizes: Vec<u64> = self
            .read(&pipe)
            .await?
            .into_iter()
            .map(|v| decode(v, "set sizes"))
            .collect::<Result<_>>()?;
        let total = sizes.iter().sum();
        let mut found: Vec<(u16, String, f64)> = Vec::new();
        while shard < shards && found.len() < limit {
            let size = sizes[shard as usize];
            if offset >= size {
                (shard, offset) = (shard + 1, 0);
                continue;
            }
            let want = (limit - found.len()) as u64;
            let mut pipe = redis::pipe();
            pipe.cmd("ZRANGE")
                .arg(set_of(&self.store().partition(queue, shard), state)?)
                .arg(offset)
                .arg(offset + want - 1)
                .arg("WITHSCORES");
            let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
            let members: Vec<(String, f64)> = decode(v, "a set page")?;
            offset += members.len() as u64;
            if members.is_empty() {
                // The set shrank since it was counted.
                offset = size;
            }
            found.extend(members.into_iter().map(|(id, sc)| (shard, id, sc)));
        }
        while shard < shards && offset >= sizes[shard as usize] {
            (shard, offset) = (shard + 1, 0);
        }
        let next = (shard < shards).then(|| format!("{shard}:{offset}"));
        Ok(TaskPage {
            tasks: self.summaries(queue, found).await?,
            total,
            next,
        })
    }

    /// The newest `limit` tasks of `queue` in `state` across all shards, newest (highest score)
    /// first: for dead tasks, the latest deaths. Reads the top `limit` of every shard.
    ///
    /// # Errors
    ///
    /// As [`Inspector::tasks`].
    pub async fn newest(&self, queue: &str, state: TaskState, limit: usize) -> Result<TaskPage> {
        let (total, found) = self
            .newest_ids(queue, state, limit.clamp(1, MAX_PAGE))
            .await?;
        Ok(TaskPage {
            tasks: self.summaries(queue, found).await?,
            total,
            next: None,
        })
    }

    /// The set sizes summed, and the newest `limit` members across shards (shard, id, score).
    async fn newest_ids(
        &self,
        queue: &str,
        state: TaskState,
        limit: usize,
    ) -> Result<(u64, Vec<(u16, String, f64)>)> {
        let limit = limit.max(1);
        let shards = self.shards(queue).await?;
        let mut pipe = redis::pipe();
        for shard in 0..shards {
            let set = set_of(&self.store().partition(queue, shard), state)?;
            pipe.zcard(&set);
            pipe.cmd("ZRANGE")
                .arg(&set)
                .arg(0)
                .arg(limit - 1)
                .arg("REV")
                .arg("WITHSCORES");
        }
        let flat = self.read(&pipe).await?;
        let mut total = 0;
        let mut found: Vec<(u16, String, f64)> = Vec::new();
        for (shard, c) in flat.chunks_exact(2).enumerate() {
            let (n, members): (u64, Vec<(String, f64)>) =
                decode(Value::Array(c.to_vec()), "a set page")?;
            total += n;
            found.extend(members.into_iter().map(|(id, sc)| (shard as u16, id, sc)));
        }
        // Newest first; ties by id so the order is stable.
        found.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
        found.truncate(limit);
        Ok((total, found))
    }

    /// Reads name, attempts and error of each listed task in one pipeline.
    async fn summaries(
        &self,
        queue: &str,
        found: Vec<(u16, String, f64)>,
    ) -> Result<Vec<TaskSummary>> {
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (shard, id, _) in &found {
            pipe.cmd("HMGET")
                .arg(self.store().partition(queue, *shard).keys.task(id))
                .arg("name")
                .arg("attempts")
                .arg("error")
                .arg("worker")
                .arg("started_at");
        }
        let details = self.read(&pipe).await?;
        found
            .into_iter()
            .zip(details)
            .map(|((shard, id, score), v)| {
                #[allow(clippy::type_complexity)]
                let (name, attempts, error, worker, started_at_ms): (
                    Option<String>,
                    Option<u32>,
                    Option<String>,
                    Option<String>,
                    Option<i64>,
                ) = decode(v, "task fields").unwrap_or_default();
                Ok(TaskSummary {
                    id: TaskId::new(queue, id),
                    shard,
                    score: score as i64,
                    name,
                    attempts,
                    error,
                    worker,
                    started_at_ms,
                })
            })
            .collect()
    }

    /// One task: its record decoded, every field as stored, its lease and its expiry.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] (never enqueued, or its record expired), [`Error::InvalidTaskId`],
    /// and as [`Inspector::shards`].
    pub async fn task(&self, id: &TaskId) -> Result<TaskDetail> {
        validate_id(id.id())?;
        let shards = self.shards(id.queue()).await?;
        let shard = id.shard(shards);
        let p = self.store().partition(id.queue(), shard);
        let key = p.keys.task(id.id());
        // One round trip (one slot); TIME last so "now" is no earlier than what was read.
        let mut pipe = redis::pipe();
        pipe.hgetall(&key)
            .pttl(&key)
            .zscore(p.keys.active(), id.id())
            .cmd("TIME");
        let v = self.read(&pipe).await?;
        let (mut fields, pttl, lease, (s, us)): RecordReply =
            decode(Value::Array(v), "a task record")?;
        if fields.is_empty() {
            return Err(Error::NotFound(id.clone()));
        }
        let now = s * 1000 + us / 1000;
        for f in ["args", "result", "headers", "progress_msg"] {
            if let Some(v) = take_blob(&mut fields, f) {
                fields.insert(f.to_owned(), v);
            }
        }
        Ok(TaskDetail {
            id: id.clone(),
            shard,
            shards,
            key,
            info: TaskInfo::from_fields(id.clone(), fields.clone()),
            fields: fields.into_iter().collect(),
            lease_deadline_ms: lease.map(|l| l as i64),
            expires_at_ms: (pttl > 0).then(|| now + pttl),
            server_now_ms: now,
        })
    }

    /// Live workers, from their heartbeat hashes, found through the worker index
    /// ([`crate::keys::Keys::worker_index`]): one `ZRANGE`, then `HGETALL` + `PTTL` per worker,
    /// whatever the number of keys in the database (a `SCAN` for the heartbeat keys read the
    /// whole keyspace: 23 s with 10 million tasks). A worker of a version before the index is
    /// not listed.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let keys = self.store().keys();
        let mut pipe = redis::pipe();
        pipe.zrange(keys.worker_index(), 0, -1);
        let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
        let ids: Vec<String> = decode(v, "the worker index")?;
        // By id, as before the index (its order is the last heartbeat's).
        let found: BTreeSet<String> = ids.iter().map(|id| keys.worker(id)).collect();
        let prefix = keys.worker("");
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in &found {
            pipe.hgetall(k).pttl(k);
        }
        let flat = self.read(&pipe).await?;
        let mut out = Vec::with_capacity(found.len());
        for (key, c) in found.iter().zip(flat.chunks_exact(2)) {
            let (f, ttl_ms): (HashMap<String, String>, i64) =
                decode(Value::Array(c.to_vec()), "a heartbeat")?;
            // A stopped worker whose index entry outlived its heartbeat.
            if f.is_empty() {
                continue;
            }
            let num = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok());
            out.push(WorkerInfo {
                id: key.strip_prefix(&prefix).unwrap_or(key).to_owned(),
                pid: num("pid").map(|v| v as u32),
                queues: f
                    .get("queues")
                    .map(|q| {
                        q.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
                concurrency: num("concurrency").map(|v| v as u64),
                running: num("running").map(|v| v as u64),
                succeeded: num("succeeded").map(|v| v as u64),
                failed: num("failed").map(|v| v as u64),
                started_at_ms: num("started_at"),
                ttl_ms,
                lateness: f
                    .iter()
                    .filter_map(|(k, v)| {
                        let q = k.strip_prefix("lateness:")?;
                        Some((q.to_owned(), crate::LatenessHistogram::parse(v)?))
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    /// How late runs started over about the last minute, per queue: the histograms of every
    /// live worker's heartbeat ([`WorkerInfo::lateness`]) added up, so quantiles read from them
    /// cover every worker's runs (to the histogram's precision: never below the exact value,
    /// at most 9.05% plus 1 ms above). Queues that no live worker ran anything of in that time
    /// are absent. Runs of a worker that stopped since are not counted. Costs what
    /// [`Inspector::workers`] costs.
    ///
    /// # Errors
    ///
    /// A Redis error, or [`Error::Protocol`] for a heartbeat that cannot be read.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::Inspector;
    /// for (queue, h) in Inspector::new(&client).lateness().await? {
    ///     println!("{queue}: p50 {:?} ms, p99 {:?} ms over {} runs",
    ///         h.quantile(0.5), h.quantile(0.99), h.count());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lateness(&self) -> Result<BTreeMap<String, crate::LatenessHistogram>> {
        let mut out: BTreeMap<String, crate::LatenessHistogram> = BTreeMap::new();
        for w in self.workers().await? {
            for (q, h) in w.lateness {
                if !h.is_empty() {
                    out.entry(q).or_default().merge(&h);
                }
            }
        }
        Ok(out)
    }

    /// Pauses `queue` in every worker: within a second (the `pause` message on its wake-up
    /// channel, or at the latest the workers' next read of `<ns>:paused`, every sweep interval)
    /// no worker claims its tasks; running tasks finish. Enqueues and promotion go on: due tasks
    /// wait in the ready set. `Ok(false)` when it was paused already. See
    /// `docs/flow-control.md`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::Inspector;
    /// let inspector = Inspector::new(&client);
    /// inspector.pause("emails").await?;
    /// assert!(inspector.paused().await?.contains_key("emails"));
    /// inspector.resume("emails").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], [`Error::UnknownQueue`], or a Redis error.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        self.shards(queue).await?;
        self.client
            .retry(|| self.store().set_paused(queue, true))
            .await
    }

    /// Resumes `queue`: workers claim from it again at once. `Ok(false)` when it was not paused.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidQueueName`], or a Redis error.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        self.client
            .retry(|| self.store().set_paused(queue, false))
            .await
    }

    /// The paused queues, with when each was paused (unix ms, Redis clock).
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn paused(&self) -> Result<HashMap<String, i64>> {
        self.client.retry(|| self.store().paused_queues()).await
    }

    /// Declares `limit` for `scope` across every worker ([`crate::limits`],
    /// `docs/flow-control.md`), replacing the one it had; running workers read it at once (a
    /// `limits` message on every queue's wake-up channel). `Ok(true)` when the scope had none.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn demo(client: scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::limits::{Limit, LimitScope};
    /// use scheduler_core::Inspector;
    /// let inspector = Inspector::new(&client);
    /// inspector.set_limit(&LimitScope::queue("exports")?, Limit::concurrency(5)?).await?;
    /// for (scope, limit) in inspector.limits().await? {
    ///     println!("{scope}: {limit}");
    /// }
    /// inspector.remove_limit(&LimitScope::queue("exports")?).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn set_limit(
        &self,
        scope: &crate::limits::LimitScope,
        limit: crate::limits::Limit,
    ) -> Result<bool> {
        self.client
            .retry(|| self.store().set_limit(scope, limit))
            .await
    }

    /// Removes the limit of `scope`; `Ok(false)` when it had none.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn remove_limit(&self, scope: &crate::limits::LimitScope) -> Result<bool> {
        self.client.retry(|| self.store().remove_limit(scope)).await
    }

    /// The limits in force, sorted by scope. A field of `<ns>:limits` that cannot be read (a hand
    /// edit) limits nothing and is left out.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limits(&self) -> Result<Vec<(crate::limits::LimitScope, crate::limits::Limit)>> {
        let (table, _) = self.client.retry(|| self.store().limits()).await?;
        let mut all: Vec<_> = table.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// What every task and queue limit holds now ([`LimitUsage`]): runs holding a concurrency
    /// slot and tasks waiting for one, starts in the rate window; sorted by scope. A keyed limit
    /// keeps one budget per key and no index of its keys (listing them would mean scanning the
    /// keyspace), so keyed limits are left out here: read a key's budget with
    /// [`Inspector::key_limit_usage`].
    ///
    /// Cost: `HGETALL <ns>:limits`, `TIME`, then one pipeline of at most three commands per
    /// limit (`ZCOUNT` of the holders, `ZCARD` of the waiters, `ZCOUNT` of the rate window;
    /// O(log n) each, keys `<ns>:{lim:<digest>}:run|wait|log`). Nothing is written.
    ///
    /// ```no_run
    /// # async fn demo(client: scheduler_core::Client) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::Inspector;
    /// let inspector = Inspector::new(&client);
    /// for u in inspector.limit_usage().await? {
    ///     println!(
    ///         "{}: {:?} running, {:?} waiting, {:?} started in the window",
    ///         u.label(), u.running, u.waiting, u.started
    ///     );
    /// }
    /// if let Some(u) = inspector.key_limit_usage("tenant", "acme").await? {
    ///     println!("{}: {:?} running", u.label(), u.running);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn limit_usage(&self) -> Result<Vec<LimitUsage>> {
        let budgets: Vec<_> = self
            .limits()
            .await?
            .into_iter()
            .filter(|(scope, _)| !matches!(scope, LimitScope::Key(_)))
            .map(|(scope, limit)| (scope, None, limit))
            .collect();
        self.usage_of(budgets).await
    }

    /// What the budget of `key` in the keyed limit family `family` holds now (as
    /// [`Inspector::limit_usage`]); `Ok(None)` when `family` has no limit. A key no task has
    /// used reads as zeros.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] for a malformed family or key; a Redis error.
    pub async fn key_limit_usage(&self, family: &str, key: &str) -> Result<Option<LimitUsage>> {
        let scope = LimitScope::key(family)?;
        crate::limits::validate_limit_key(key)?;
        let (table, _) = self.client.retry(|| self.store().limits()).await?;
        let Some(limit) = table.get(&scope).copied() else {
            return Ok(None);
        };
        Ok(self
            .usage_of(vec![(scope, Some(key.to_owned()), limit)])
            .await?
            .pop())
    }

    /// Reads the figures of `budgets` (scope, key, limit): `TIME`, then one pipeline.
    async fn usage_of(
        &self,
        budgets: Vec<(LimitScope, Option<String>, Limit)>,
    ) -> Result<Vec<LimitUsage>> {
        if budgets.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.server_time_ms().await?;
        let mut pipe = redis::pipe();
        for (scope, key, limit) in &budgets {
            let b = Budget::of(scope, key.as_deref(), *limit)?;
            let [run, log, wait, _] = self.store().keys().limit_budget(&b.digest);
            if limit.max_concurrency().is_some() {
                // limit_acquire.lua drops holders whose deadline is at or before now.
                pipe.zcount(&run, format!("({now}"), "+inf");
                pipe.zcard(&wait);
            }
            if let Some((_, per)) = limit.max_rate() {
                // ... and starts at or before now - period.
                pipe.zcount(&log, format!("({}", now - per.as_millis() as i64), "+inf");
            }
        }
        let mut replies = self.read(&pipe).await?.into_iter();
        let mut next =
            |what: &str| -> Result<u64> { decode(replies.next().unwrap_or(Value::Nil), what) };
        let mut out = Vec::with_capacity(budgets.len());
        for (scope, key, limit) in budgets {
            let (running, waiting) = if limit.max_concurrency().is_some() {
                (Some(next("limit holders")?), Some(next("limit waiters")?))
            } else {
                (None, None)
            };
            let started = if limit.max_rate().is_some() {
                Some(next("limit window")?)
            } else {
                None
            };
            out.push(LimitUsage {
                scope,
                key,
                limit,
                running,
                waiting,
                started,
                at_ms: now,
            });
        }
        Ok(out)
    }

    /// Cancels a task (as [`Client::cancel_task`]): withdrawn when it has not started, told to
    /// stop when it runs.
    ///
    /// # Errors
    ///
    /// As [`Client::cancel_task`], plus [`Error::UnknownQueue`].
    pub async fn cancel(&self, id: &TaskId) -> Result<Cancellation> {
        self.shards(id.queue()).await?;
        self.client.cancel_task(id).await
    }

    /// Puts one dead task back in its ready set (as [`Client::requeue_dead`]): `Ok(false)`
    /// when it is not dead.
    ///
    /// # Errors
    ///
    /// As [`Client::requeue_dead`], plus [`Error::UnknownQueue`].
    pub async fn requeue(&self, id: &TaskId) -> Result<bool> {
        self.shards(id.queue()).await?;
        self.client.requeue_dead(id).await
    }

    /// Puts the dead tasks of `queue` back in their ready sets: all of them, or the newest
    /// `limit`; in batches of 500 per script call.
    ///
    /// # Errors
    ///
    /// As [`Inspector::shards`].
    pub async fn requeue_dead(&self, queue: &str, limit: Option<usize>) -> Result<RequeueTally> {
        self.requeue_dead_with_progress(queue, limit, |_| {}).await
    }

    /// [`Inspector::requeue_dead`], calling `progress` after each batch of 500 with the tally
    /// so far (for a progress bar: expect the dead count of [`Inspector::queue`], or `limit`).
    ///
    /// # Errors
    ///
    /// As [`Inspector::shards`].
    pub async fn requeue_dead_with_progress(
        &self,
        queue: &str,
        limit: Option<usize>,
        mut progress: impl FnMut(&RequeueTally),
    ) -> Result<RequeueTally> {
        let shards = self.shards(queue).await?;
        let mut tally = RequeueTally::default();
        let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        if let Some(n) = limit {
            // The newest n overall are among the newest n of each shard.
            for (shard, id, _) in self.newest_ids(queue, TaskState::Dead, n).await?.1 {
                by_shard.entry(shard).or_default().push(id);
            }
            for (shard, ids) in by_shard {
                let p = self.store().partition(queue, shard);
                for chunk in ids.chunks(REQUEUE_BATCH) {
                    let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                    tally.add(
                        &self
                            .client
                            .retry(|| self.store().requeue(&p, &refs))
                            .await?,
                    );
                    progress(&tally);
                }
            }
            return Ok(tally);
        }
        // Shard by shard, a batch at a time. Requeued and vanished ids leave the dead set; ids
        // that are not dead stay, so we skip past them.
        for shard in 0..shards {
            let p = self.store().partition(queue, shard);
            let mut skip = 0usize;
            loop {
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGE")
                    .arg(p.keys.dead())
                    .arg(skip)
                    .arg(skip + REQUEUE_BATCH - 1);
                let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
                let ids: Vec<String> = decode(v, "a dead set")?;
                if ids.is_empty() {
                    break;
                }
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let replies = self
                    .client
                    .retry(|| self.store().requeue(&p, &refs))
                    .await?;
                skip += replies
                    .iter()
                    .filter(|r| **r == RequeueReply::NotDead)
                    .count();
                tally.add(&replies);
                progress(&tally);
            }
        }
        Ok(tally)
    }

    /// Deletes every task of `queue` in `state` (scheduled, ready or dead), shard by shard, a
    /// batch of 200 ids at a time, each through the same one-task script as
    /// [`Inspector::delete`] (so a task that starts running meanwhile is left alone).
    /// `progress` is called after each batch with the tally so far; the number to expect is the
    /// state's count in [`Inspector::queue`]. Tasks added while it runs may be deleted too.
    ///
    /// # Errors
    ///
    /// [`Error::NotPurgeable`] for `running`, `succeeded` and `cancelled`, and as
    /// [`Inspector::shards`]; a Redis error stops it with the tasks deleted so far gone.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(inspector: scheduler_core::Inspector) -> Result<(), scheduler_core::Error> {
    /// use scheduler_core::TaskState;
    /// let tally = inspector
    ///     .purge("emails", TaskState::Dead, |t| eprintln!("{} deleted", t.deleted))
    ///     .await?;
    /// println!("{} dead tasks deleted", tally.deleted);
    /// # Ok(()) }
    /// ```
    pub async fn purge(
        &self,
        queue: &str,
        state: TaskState,
        mut progress: impl FnMut(&PurgeTally),
    ) -> Result<PurgeTally> {
        if !matches!(
            state,
            TaskState::Scheduled | TaskState::Ready | TaskState::Dead
        ) {
            return Err(Error::NotPurgeable(state));
        }
        let shards = self.shards(queue).await?;
        let mut tally = PurgeTally::default();
        for shard in 0..shards {
            let p = self.store().partition(queue, shard);
            let set = set_of(&p, state)?;
            // Deleted ids leave the set; the ones left alone stay, so we skip past them.
            let mut skip = 0usize;
            loop {
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGE")
                    .arg(&set)
                    .arg(skip)
                    .arg(skip + PURGE_BATCH - 1);
                let v = self.read(&pipe).await?.pop().unwrap_or(Value::Nil);
                let ids: Vec<String> = decode(v, "a task set")?;
                if ids.is_empty() {
                    break;
                }
                // Sent together on the multiplexed connection; each is safe to repeat.
                let replies = futures::future::try_join_all(ids.iter().map(|id| {
                    let p = &p;
                    self.client.retry(move || self.store().delete(p, id))
                }))
                .await?;
                for r in replies {
                    match r {
                        DeleteReply::Deleted => tally.deleted += 1,
                        DeleteReply::Running => {
                            tally.running += 1;
                            skip += 1;
                        }
                        DeleteReply::NotFound => {
                            tally.not_found += 1;
                            skip += 1;
                        }
                    }
                }
                progress(&tally);
            }
        }
        Ok(tally)
    }

    /// Deletes a task that is not running, in any other state (scheduled, ready, dead,
    /// finished, or a damaged record): its record and its entry in its set, in one script.
    /// Counted as `deleted` in the partition's counters.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Running`] (cancel it before it starts, or let it finish),
    /// and as [`Inspector::shards`].
    pub async fn delete(&self, id: &TaskId) -> Result<()> {
        validate_id(id.id())?;
        let shards = self.shards(id.queue()).await?;
        let p = self.store().partition(id.queue(), id.shard(shards));
        // Safe to repeat: a second run finds nothing and says so.
        match self
            .client
            .retry(|| self.store().delete(&p, id.id()))
            .await?
        {
            DeleteReply::Deleted => Ok(()),
            DeleteReply::Running => Err(Error::Running(id.clone())),
            DeleteReply::NotFound => Err(Error::NotFound(id.clone())),
        }
    }
}

/// The pipeline reading the counts of every shard of `queue`, `now_ms` deciding what is due;
/// [`parse_counts`] reads its replies. Shared by [`Inspector::queue`] and
/// [`Client::queue_stats`].
pub(crate) fn counts_pipeline(
    store: &Store,
    queue: &str,
    shards: u16,
    now_ms: Option<i64>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for shard in 0..shards {
        let k = store.partition(queue, shard).keys;
        pipe.zcard(k.scheduled())
            .zcard(k.ready())
            .zcard(k.active())
            .zcard(k.dead());
        // Without a time, no due count: `ZCOUNT` is not among the producer's ACL commands.
        if let Some(now) = now_ms {
            pipe.zcount(k.scheduled(), "-inf", now);
        }
        pipe.hgetall(k.stats());
    }
    pipe
}

/// The counts of each shard from the replies of [`counts_pipeline`] (`with_due`: it was given a
/// time; `due_now` is 0 otherwise).
pub(crate) fn parse_counts(flat: Vec<Value>, with_due: bool) -> Result<Vec<Counts>> {
    let per = if with_due { 6 } else { 5 };
    flat.chunks_exact(per)
        .map(|c| {
            let mut c = c.to_vec();
            let counters: HashMap<String, u64> = decode(c.pop().unwrap_or(Value::Nil), "counters")?;
            let due_now = if with_due {
                decode(c.pop().unwrap_or(Value::Nil), "due count")?
            } else {
                0
            };
            let (scheduled, ready, running, dead): (u64, u64, u64, u64) =
                decode(Value::Array(c), "queue counts")?;
            Ok(Counts {
                scheduled,
                ready,
                running,
                dead,
                due_now,
                counters: counters.into_iter().collect(),
            })
        })
        .collect()
}
