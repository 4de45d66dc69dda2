//! The task history archive (feature `archive`): finished attempts (succeeded, dead,
//! cancelled, expired) flow from the per-partition archive streams in Redis to a PostgreSQL
//! table, in batches, and [`HistoryDb::query`] reads them back. `docs/storage.md` describes the design,
//! the schema and the guarantees.
//!
//! - [`HistoryDb`]: the PostgreSQL side: a `sqlx` pool, the migrations of
//!   `scheduler-worker/migrations` (run at connect), the idempotent batch insert, queries.
//! - [`Archiver`]: the component that moves entries: any worker runs one with
//!   [`crate::WorkerBuilder::archive`], `schedctl archive` runs one on its own. Several may run
//!   at once (one Redis consumer group per stream); a crashed one's entries are taken over.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), scheduler_core::Error> {
//! use scheduler_worker::archive::{ArchiveConfig, HistoryDb, HistoryQuery};
//! use scheduler_worker::Worker;
//!
//! let worker = Worker::builder()
//!     .redis_url("redis://127.0.0.1:6379")
//!     .archive(ArchiveConfig::new("postgres://postgres@127.0.0.1/history").bound(100_000))
//!     .build()
//!     .await?; // Error::Archive when PostgreSQL cannot be reached
//!
//! let db = HistoryDb::connect("postgres://postgres@127.0.0.1/history", 2).await?;
//! let dead = db.query(&HistoryQuery::new("sched").state("dead").limit(20)).await?;
//! # Ok(()) }
//! ```

pub use sqlx;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use scheduler_core::store::{ArchiveEntry, Partition};
use scheduler_core::{Error, Store};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use tokio_util::sync::CancellationToken;

/// How often an archiver reads the backlog and drop counts (its gauges and the drop log).
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Default [`ArchiveConfig::bound`]: entries each partition's stream keeps at most.
pub const DEFAULT_BOUND: u64 = 100_000;

/// How an archiver runs. Built by [`ArchiveConfig::new`] and consuming setters.
#[derive(Clone)]
pub struct ArchiveConfig {
    /// PostgreSQL URL (`postgres://user:password@host:port/database`). No default.
    pub database_url: String,
    /// Entries each partition's archive stream keeps at most while PostgreSQL is away; beyond,
    /// the oldest are dropped and counted. Written to the namespace's setting
    /// ([`scheduler_core::keys::Keys::archive`]) at start. Default [`DEFAULT_BOUND`] (100,000).
    pub bound: u64,
    /// Entries read and inserted per batch (one `XREADGROUP`, one `INSERT`). Default 500, at
    /// most 4,000 (PostgreSQL's 65,535 bind parameters).
    pub batch: usize,
    /// Pause after a round that found nothing to archive. Default 100 ms.
    pub idle_poll: Duration,
    /// An entry another archiver read and left pending this long is taken over (it crashed).
    /// Default 30 s.
    pub claim_idle: Duration,
    /// Connections of the PostgreSQL pool. Default 2.
    pub max_connections: u32,
    /// Pause after a PostgreSQL error before trying again. Default 1 s.
    pub retry_pause: Duration,
}

impl std::fmt::Debug for ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("database_url", &redact(&self.database_url))
            .field("bound", &self.bound)
            .field("batch", &self.batch)
            .field("idle_poll", &self.idle_poll)
            .field("claim_idle", &self.claim_idle)
            .field("max_connections", &self.max_connections)
            .field("retry_pause", &self.retry_pause)
            .finish()
    }
}

impl ArchiveConfig {
    /// The defaults, archiving into the PostgreSQL at `database_url`.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            bound: DEFAULT_BOUND,
            batch: 500,
            idle_poll: Duration::from_millis(100),
            claim_idle: Duration::from_secs(30),
            max_connections: 2,
            retry_pause: Duration::from_secs(1),
        }
    }

    /// Sets [`ArchiveConfig::bound`] (at least 1).
    pub fn bound(mut self, n: u64) -> Self {
        self.bound = n.max(1);
        self
    }

    /// Sets [`ArchiveConfig::batch`] (1..=4000).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.clamp(1, 4000);
        self
    }

    /// Sets [`ArchiveConfig::idle_poll`].
    pub fn idle_poll(mut self, t: Duration) -> Self {
        self.idle_poll = t;
        self
    }

    /// Sets [`ArchiveConfig::claim_idle`].
    pub fn claim_idle(mut self, t: Duration) -> Self {
        self.claim_idle = t;
        self
    }

    /// Sets [`ArchiveConfig::max_connections`] (at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`ArchiveConfig::retry_pause`].
    pub fn retry_pause(mut self, t: Duration) -> Self {
        self.retry_pause = t;
        self
    }
}

/// A URL with its password replaced by `***`, for errors and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn db_error(url: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Archive(format!("{what} ({}): {e}", redact(url)))
}

/// One row of the history: a finished attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Namespace of the task.
    pub namespace: String,
    /// Task id.
    pub task_id: String,
    /// Attempt number (0: cancelled before it ran).
    pub attempt: i32,
    /// Finishing time (unix ms, the Redis clock).
    pub finished_at_ms: i64,
    /// Queue.
    pub queue: String,
    /// Shard within the queue.
    pub shard: i32,
    /// The archive stream entry id it came from (`<ms>-<seq>`, order of finishing per
    /// partition).
    pub stream_id: String,
    /// Task name.
    pub name: String,
    /// `succeeded`, `dead`, `cancelled` or `expired`.
    pub state: String,
    /// Enqueue time (unix ms).
    pub enqueued_at_ms: Option<i64>,
    /// Start of the run (unix ms).
    pub started_at_ms: Option<i64>,
    /// Worker that ran it.
    pub worker: Option<String>,
    /// Error text (dead tasks).
    pub error: Option<String>,
    /// Result, MessagePack (succeeded tasks that returned a value).
    pub result: Option<Vec<u8>>,
    /// Arguments, MessagePack.
    pub args: Vec<u8>,
    /// When the row was inserted (unix ms, the PostgreSQL clock): minus `finished_at_ms`, the
    /// archive lag.
    pub archived_at_ms: i64,
}

/// A history search: every condition given must hold. Built by [`HistoryQuery::new`] and
/// consuming setters; newest first.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Namespace (required).
    pub namespace: String,
    /// Task id.
    pub id: Option<String>,
    /// Task name.
    pub name: Option<String>,
    /// Queue.
    pub queue: Option<String>,
    /// State (`succeeded`, `dead`, `cancelled`, `expired`).
    pub state: Option<String>,
    /// Finished at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Finished before (unix ms).
    pub until_ms: Option<i64>,
    /// Rows at most. Default 100.
    pub limit: i64,
    /// Only rows after this one in the order of the results (the next page).
    pub after: Option<HistoryCursor>,
}

/// Where a page of history results ends: [`HistoryRow::cursor`] of its last row, given to
/// [`HistoryQuery::after`] for the next page. Results are ordered newest first by finishing
/// time, then stream entry id, queue and shard (one row per stream entry: a total order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryCursor {
    /// Finishing time of the last row (unix ms).
    pub finished_at_ms: i64,
    /// Its archive stream entry id.
    pub stream_id: String,
    /// Its queue.
    pub queue: String,
    /// Its shard.
    pub shard: i32,
}

impl HistoryRow {
    /// Where the results continue after this row (see [`HistoryQuery::after`]).
    pub fn cursor(&self) -> HistoryCursor {
        HistoryCursor {
            finished_at_ms: self.finished_at_ms,
            stream_id: self.stream_id.clone(),
            queue: self.queue.clone(),
            shard: self.shard,
        }
    }
}

impl HistoryQuery {
    /// Every finished attempt of `namespace`, newest first, 100 at most.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            limit: 100,
            ..Default::default()
        }
    }
    /// Only task `id`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// Only tasks named `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Only queue `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Only state `state`.
    pub fn state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }
    /// Finished at or after `ms` (unix ms).
    pub fn since_ms(mut self, ms: i64) -> Self {
        self.since_ms = Some(ms);
        self
    }
    /// Finished before `ms` (unix ms).
    pub fn until_ms(mut self, ms: i64) -> Self {
        self.until_ms = Some(ms);
        self
    }
    /// At most `n` rows.
    pub fn limit(mut self, n: i64) -> Self {
        self.limit = n.max(1);
        self
    }
    /// Only rows after `cursor` (the last row of the previous page), for paging.
    pub fn after(mut self, cursor: HistoryCursor) -> Self {
        self.after = Some(cursor);
        self
    }
}

/// The archive's PostgreSQL: a connection pool, migrated at connect. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HistoryDb {
    pool: PgPool,
    url: String,
}

/// Milliseconds as a `timestamptz` in SQL, and back.
const TS: &str = "to_timestamp(";
const MS_OF: fn(&str) -> String = |col| format!("(round(extract(epoch from {col}) * 1000))::int8");

impl HistoryDb {
    /// Connects to `url` with a pool of `max_connections`, and applies the migrations (the
    /// `task_history` table; `sqlx`'s `_sqlx_migrations` records them).
    ///
    /// # Errors
    ///
    /// [`Error::Archive`] for a URL that does not parse, a server that cannot be reached within
    /// 5 s or refuses the login, or a failed migration.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| db_error(url, "invalid PostgreSQL URL", e))?;
        // One connection first: its error names the cause (refused, unknown host, login), where
        // the pool's would only say that it timed out.
        match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts)).await
        {
            Err(_) => return Err(db_error(url, "cannot connect", "no answer in 5 s")),
            Ok(Err(e)) => return Err(db_error(url, "cannot connect", e)),
            Ok(Ok(c)) => {
                let _ = c.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|e| db_error(url, "cannot connect", e))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| db_error(url, "migration failed", e))?;
        Ok(Self {
            pool,
            url: url.to_owned(),
        })
    }

    /// The pool (for your own queries on `task_history`).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts `entries` of partition `p` of `namespace` in one statement; a row already there
    /// (same namespace, task id, attempt and finishing time) is left as is. Returns the rows
    /// inserted.
    ///
    /// # Errors
    ///
    /// [`Error::Archive`] when the insert fails (nothing was inserted: one statement).
    pub async fn insert(
        &self,
        namespace: &str,
        p: &Partition,
        entries: &[ArchiveEntry],
    ) -> Result<u64, Error> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO task_history (namespace, task_id, attempt, finished_at, queue, shard, \
             stream_id, name, state, enqueued_at, started_at, worker, error, result, args) ",
        );
        q.push_values(entries, |mut b, e| {
            b.push_bind(namespace)
                .push_bind(&e.id)
                .push_bind(e.attempt as i32)
                .push(TS)
                .push_bind_unseparated(e.finished_at_ms as f64 / 1000.0)
                .push_unseparated(")")
                .push_bind(&p.queue)
                .push_bind(i32::from(p.shard))
                .push_bind(&e.entry_id)
                .push_bind(&e.name)
                .push_bind(&e.state)
                .push(TS)
                .push_bind_unseparated(e.enqueued_at_ms.map(|v| v as f64 / 1000.0))
                .push_unseparated(")")
                .push(TS)
                .push_bind_unseparated(e.started_at_ms.map(|v| v as f64 / 1000.0))
                .push_unseparated(")")
                .push_bind(&e.worker)
                .push_bind(&e.error)
                .push_bind((!e.result.is_empty()).then_some(&e.result))
                .push_bind(&e.args);
        });
        q.push(" ON CONFLICT DO NOTHING");
        let done = q
            .build()
            .execute(&self.pool)
            .await
            .map_err(|e| db_error(&self.url, "insert failed", e))?;
        Ok(done.rows_affected())
    }

    /// The rows matching `query`, newest first.
    ///
    /// # Errors
    ///
    /// [`Error::Archive`] when the query fails.
    pub async fn query(&self, query: &HistoryQuery) -> Result<Vec<HistoryRow>, Error> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT namespace, task_id, attempt, {}, queue, shard, stream_id, name, state, {}, \
             {}, worker, error, result, args, {} FROM task_history WHERE namespace = ",
            MS_OF("finished_at"),
            MS_OF("enqueued_at"),
            MS_OF("started_at"),
            MS_OF("archived_at"),
        ));
        q.push_bind(&query.namespace);
        for (col, v) in [
            ("task_id", &query.id),
            ("name", &query.name),
            ("queue", &query.queue),
            ("state", &query.state),
        ] {
            if let Some(v) = v {
                q.push(format!(" AND {col} = ")).push_bind(v);
            }
        }
        if let Some(ms) = query.since_ms {
            q.push(" AND finished_at >= to_timestamp(")
                .push_bind(ms as f64 / 1000.0)
                .push(")");
        }
        if let Some(ms) = query.until_ms {
            q.push(" AND finished_at < to_timestamp(")
                .push_bind(ms as f64 / 1000.0)
                .push(")");
        }
        if let Some(c) = &query.after {
            // Row comparison: the same order as ORDER BY, every column descending.
            q.push(" AND (finished_at, stream_id, queue, shard) < (to_timestamp(")
                .push_bind(c.finished_at_ms as f64 / 1000.0)
                .push("), ")
                .push_bind(&c.stream_id)
                .push(", ")
                .push_bind(&c.queue)
                .push(", ")
                .push_bind(c.shard)
                .push(")");
        }
        q.push(" ORDER BY finished_at DESC, stream_id DESC, queue DESC, shard DESC LIMIT ")
            .push_bind(query.limit.max(1));
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_error(&self.url, "query failed", e))?;
        rows.iter()
            .map(|r| {
                Ok(HistoryRow {
                    namespace: r.try_get(0)?,
                    task_id: r.try_get(1)?,
                    attempt: r.try_get(2)?,
                    finished_at_ms: r.try_get(3)?,
                    queue: r.try_get(4)?,
                    shard: r.try_get(5)?,
                    stream_id: r.try_get(6)?,
                    name: r.try_get(7)?,
                    state: r.try_get(8)?,
                    enqueued_at_ms: r.try_get(9)?,
                    started_at_ms: r.try_get(10)?,
                    worker: r.try_get(11)?,
                    error: r.try_get(12)?,
                    result: r.try_get(13)?,
                    args: r.try_get(14)?,
                    archived_at_ms: r.try_get(15)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| db_error(&self.url, "reading rows", e))
    }
}

/// Moves finished attempts from the archive streams of some partitions to a [`HistoryDb`].
///
/// Each round, per partition: the entries this archiver read before and has not stored (after
/// a PostgreSQL error), then new ones, batch by batch, in order of finishing: insert, then
/// `archive_done.lua` (XACK + XDEL). Every [`ArchiveConfig::claim_idle`] / 2 it takes over
/// entries another archiver left pending that long (`XAUTOCLAIM`). PostgreSQL errors are logged
/// and retried after [`ArchiveConfig::retry_pause`]; the entries wait in Redis meanwhile, up to
/// the bound.
#[derive(Debug)]
pub struct Archiver {
    store: Store,
    db: HistoryDb,
    partitions: Vec<Partition>,
    cfg: ArchiveConfig,
    consumer: String,
}

/// What [`Archiver::run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiverReport {
    /// Rows inserted into PostgreSQL.
    pub stored: u64,
    /// Entries deleted from the streams (stored now or by an earlier insert of the same entry).
    pub done: u64,
    /// Entries taken over from another archiver.
    pub claimed: u64,
    /// PostgreSQL errors met.
    pub db_errors: u64,
}

impl Archiver {
    /// An archiver for `partitions` of `store`'s namespace, reading as consumer `consumer`
    /// (unique per process: a worker id).
    pub fn new(
        store: Store,
        db: HistoryDb,
        partitions: Vec<Partition>,
        cfg: ArchiveConfig,
        consumer: impl Into<String>,
    ) -> Self {
        Self {
            store,
            db,
            partitions,
            cfg,
            consumer: consumer.into(),
        }
    }

    /// Every partition of every queue registered in `store`'s namespace.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn all_partitions(store: &Store) -> Result<Vec<Partition>, Error> {
        let mut conn = store.conn();
        let queues: HashMap<String, u16> = redis::cmd("HGETALL")
            .arg(store.keys().queues())
            .query_async(&mut conn)
            .await?;
        let mut names: Vec<_> = queues.into_iter().collect();
        names.sort();
        Ok(names
            .iter()
            .flat_map(|(q, n)| (0..*n).map(|s| store.partition(q, s)))
            .collect())
    }

    /// Runs until `stop` is cancelled. The current batch is finished first.
    pub async fn run(self, stop: CancellationToken) -> ArchiverReport {
        let mut report = ArchiverReport::default();
        let mut pending: Vec<bool> = vec![true; self.partitions.len()];
        let mut grouped: Vec<bool> = vec![false; self.partitions.len()];
        let mut last_claim = Instant::now();
        let mut last_backlog: Option<Instant> = None;
        let mut dropped_seen: HashMap<String, u64> = HashMap::new();
        tracing::info!(consumer = %self.consumer, partitions = self.partitions.len(), "archiver started");
        while !stop.is_cancelled() {
            let mut moved = 0usize;
            let mut failed = false;
            let claim = last_claim.elapsed() >= self.cfg.claim_idle / 2;
            if claim {
                last_claim = Instant::now();
            }
            for (i, p) in self.partitions.iter().enumerate() {
                if stop.is_cancelled() {
                    break;
                }
                // The backlog and drop figures are read between partitions, not between rounds:
                // with PostgreSQL down each partition waits out the pool's acquire timeout (5 s),
                // so a round over 16 partitions takes 80 s, and drops made meanwhile went
                // unlogged that long. The first look (before any insert) sets the drops already
                // counted, so drops made while the first round is stuck are logged too.
                if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                    last_backlog = Some(Instant::now());
                    self.backlog(&mut dropped_seen).await;
                }
                if !grouped[i] {
                    match self.store.archive_group(p).await {
                        Ok(()) => grouped[i] = true,
                        Err(e) => {
                            tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "archive stream group not created");
                            failed = true;
                            continue;
                        }
                    }
                }
                match self
                    .partition_round(p, &mut pending[i], claim, &mut report)
                    .await
                {
                    Ok(n) => moved += n,
                    Err(e) => {
                        failed = true;
                        report.db_errors += u64::from(matches!(e, Error::Archive(_)));
                        crate::metrics::archive_error();
                        tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "archiving paused: finished tasks wait in Redis up to the bound");
                    }
                }
            }
            if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(Instant::now());
                self.backlog(&mut dropped_seen).await;
            }
            let pause = if failed {
                self.cfg.retry_pause
            } else if moved == 0 {
                self.cfg.idle_poll
            } else {
                continue;
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(consumer = %self.consumer, stored = report.stored, "archiver stopped");
        report
    }

    /// One partition: its pending entries (taken over ones when `claim`), then up to 8 batches
    /// of new ones. Returns the entries moved.
    async fn partition_round(
        &self,
        p: &Partition,
        pending: &mut bool,
        claim: bool,
        report: &mut ArchiverReport,
    ) -> Result<usize, Error> {
        let ns = self.store.keys().namespace();
        let n = self.cfg.batch;
        let mut moved = 0;
        if claim {
            let min_idle = self.cfg.claim_idle.as_millis() as u64;
            let (got, gone) = self
                .store
                .archive_claim(p, &self.consumer, min_idle, n)
                .await?;
            if !got.is_empty() {
                report.claimed += got.len() as u64;
                tracing::info!(queue = %p.queue, shard = p.shard, entries = got.len(), "archive entries taken over from a stopped archiver");
                *pending = true;
            }
            self.store.archive_done(p, &gone, false).await?;
        }
        for _ in 0..8 {
            let was_pending = *pending;
            let (got, gone) = self
                .store
                .archive_read(p, &self.consumer, n, was_pending)
                .await?;
            // Pending entries trimmed over the bound meanwhile: counted as dropped already.
            self.store.archive_done(p, &gone, false).await?;
            if got.is_empty() {
                if was_pending {
                    // Own pending entries done (or only trimmed ones): on to new entries.
                    *pending = !gone.is_empty();
                    continue;
                }
                break;
            }
            // Until stored and done, these entries are pending for this consumer: after a
            // failure the next round reads them again first.
            *pending = true;
            let stored = self.db.insert(ns, p, &got).await?;
            let ids: Vec<String> = got.iter().map(|e| e.entry_id.clone()).collect();
            report.done += self.store.archive_done(p, &ids, true).await?;
            report.stored += stored;
            moved += got.len();
            crate::metrics::archived(&p.queue, stored, &got);
            *pending = was_pending && got.len() == n;
            if !was_pending && got.len() < n {
                break;
            }
        }
        Ok(moved)
    }

    /// Publishes the backlog and drop gauges, and logs drops seen since the last look.
    async fn backlog(&self, dropped_seen: &mut HashMap<String, u64>) {
        let mut by_queue: HashMap<&str, (u64, u64)> = HashMap::new();
        for p in &self.partitions {
            match self.store.archive_backlog(p).await {
                Ok((len, dropped)) => {
                    let e = by_queue.entry(p.queue.as_str()).or_default();
                    e.0 += len;
                    e.1 += dropped;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "archive backlog not read");
                    return;
                }
            }
        }
        for (q, (len, dropped)) in by_queue {
            crate::metrics::archive_backlog(q, len, dropped);
            let seen = dropped_seen.entry(q.to_owned()).or_insert(dropped);
            if dropped > *seen {
                tracing::warn!(queue = q, dropped = dropped - *seen, total = dropped, "finished tasks dropped from the archive buffer: PostgreSQL was away longer than the bound allows");
                *seen = dropped;
            }
        }
    }
}

/// Unix ms by this host's clock (the archive lag metric).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Connects the archive of a worker at build time: the database (typed error), the namespace
/// setting in Redis, the store's bound.
pub(crate) async fn start(store: &Store, cfg: &ArchiveConfig) -> Result<HistoryDb, Error> {
    let db = HistoryDb::connect(&cfg.database_url, cfg.max_connections).await?;
    store.write_archive_setting(cfg.bound).await?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn config_defaults_and_bounds() {
        let c = ArchiveConfig::new("postgres://x").batch(0).bound(0);
        assert_eq!((c.batch, c.bound), (1, 1));
        assert_eq!(ArchiveConfig::new("x").batch(10_000).batch, 4000);
        assert!(!format!("{:?}", ArchiveConfig::new("postgres://u:pw@h/d")).contains("pw"));
    }
}
