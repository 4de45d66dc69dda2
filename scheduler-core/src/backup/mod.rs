//! Logical backup and restore: [`Exporter`] writes every unfinished task (scheduled with its due
//! time, ready, running as ready, dead with its error) and every periodic schedule of a
//! namespace to a file; [`Importer`] puts them back, into the same or another Redis, namespace,
//! shard count or Redis Cluster. The file format, its versioning and the guarantees are in
//! `docs/storage.md`; `schedctl export` / `schedctl import` are the command-line doors.
//!
//! # Consistency
//!
//! The export reads each partition set by set (scheduled, ready, active, dead), in pages of at
//! most [`Exporter::batch`] tasks. Each page is one Lua script (`lua/export_page.lua`): the
//! members and their records are read in one atomic step, so a record always agrees with the
//! set it was found in, and no call holds Redis longer than one page. Pages continue from the
//! score and id of the previous page's last member, so a task that stays in its set while its
//! partition is exported is exported exactly once, whatever else moves. A task that changes
//! state meanwhile may be read twice (the exporter keeps the first copy, by id, per partition)
//! or not at all (moving to a set already read). The file is therefore a consistent copy of
//! each partition when no worker runs on it (producers may keep enqueueing: a task created
//! during the export is in the file or not); on a live system, a best effort.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), scheduler_core::Error> {
//! use scheduler_core::backup::{Exporter, Importer};
//! use scheduler_core::Client;
//!
//! let source = Client::connect("redis://old-host:6379").await?;
//! let file = std::io::BufWriter::new(std::fs::File::create("tasks.schedexp")?);
//! let written = Exporter::new(&source).export(file, |_n| {}).await?;
//! println!("{} tasks, {} schedules", written.tasks, written.schedules);
//!
//! let target = Client::connect("redis+cluster://new-host:7000").await?;
//! let open = || std::fs::File::open("tasks.schedexp").map(std::io::BufReader::new);
//! Importer::verify(open()?)?; // the whole file, before anything is written
//! let done = Importer::new(&target).import(open()?, |_n| {}).await?;
//! println!("{} restored, {} were there", done.restored, done.existed);
//! # Ok(()) }
//! ```

pub mod format;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Client, TaskRequest};
use crate::error::{Error, Result};
use crate::id::{shard_of, validate_queue};
use crate::info::{TaskInfo, TaskState};
use crate::schedule::{Misfire, Overlap, Schedule, Spec};
use crate::schedules::{ScheduleInfo, Schedules};
use crate::store::{Outcome, Partition, RestoreTask};
use crate::TaskId;

pub use format::{
    FormatError, Frame, FrameReader, FrameWriter, Header, TaskRecord, Trailer, WorkflowRecord,
};

/// Tasks per export page (one `export_page.lua` call) unless [`Exporter::batch`] says otherwise.
/// A page costs Redis about 7 µs per task (`scheduler-bench backup`, docs/storage.md): 50 keep
/// every call well under 10 ms on a loaded machine, at the export rate of larger pages.
pub const DEFAULT_BATCH: u32 = 50;

/// Tasks per `restore.lua` call: about 18 µs of Redis per task, so a call stays well under
/// 10 ms (docs/storage.md).
const RESTORE_CHUNK: usize = 25;

/// `restore.lua` calls per pipelined round trip: 6,400 tasks per round trip.
const RESTORE_CALLS: usize = 256;

/// One periodic schedule's definition and state flags, as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduleRecord {
    /// Its name.
    pub name: String,
    /// `cron` or `every`.
    pub kind: String,
    /// The cron expression (`cron`).
    pub cron: Option<String>,
    /// The IANA time zone (`cron`).
    pub tz: Option<String>,
    /// The interval in ms (`every`).
    pub every_ms: Option<u64>,
    /// The task its ticks run.
    pub task: String,
    /// The queue they go to.
    pub queue: String,
    /// Their arguments, MessagePack, byte for byte.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Their priority.
    pub priority: u8,
    /// Their retries.
    pub max_retries: u32,
    /// Their time limit, ms.
    pub timeout_ms: u64,
    /// `skip`, `once` or `catchup:<n>`.
    pub misfire: String,
    /// `allow` or `skip`.
    pub overlap: String,
    /// Paused when exported.
    pub paused: bool,
}

impl ScheduleRecord {
    fn of(s: &ScheduleInfo) -> Self {
        let (kind, cron, tz, every_ms) = match &s.spec {
            Spec::Cron { expr, tz } => ("cron", Some(expr.clone()), Some(tz.clone()), None),
            Spec::Every(d) => ("every", None, None, Some(d.as_millis() as u64)),
        };
        Self {
            name: s.name.clone(),
            kind: kind.to_owned(),
            cron,
            tz,
            every_ms,
            task: s.task.clone(),
            queue: s.queue.clone(),
            args: s.args.clone(),
            priority: s.priority,
            max_retries: s.max_retries,
            timeout_ms: s.timeout_ms,
            misfire: match s.misfire {
                Misfire::Skip => "skip".to_owned(),
                Misfire::FireOnce => "once".to_owned(),
                Misfire::CatchUp(n) => format!("catchup:{n}"),
            },
            overlap: match s.overlap {
                Overlap::Allow => "allow",
                Overlap::Skip => "skip",
            }
            .to_owned(),
            paused: s.paused,
        }
    }

    /// The schedule to add, or why it cannot be one.
    fn schedule(&self) -> Result<Schedule> {
        let bad = |reason: &str| Error::InvalidSchedule {
            name: self.name.clone(),
            reason: reason.to_owned(),
        };
        let base = match (self.kind.as_str(), &self.cron, &self.tz, self.every_ms) {
            ("cron", Some(expr), Some(tz), _) => Schedule::cron(&self.name, expr, tz)?,
            ("every", _, _, Some(ms)) => Schedule::every(&self.name, Duration::from_millis(ms))?,
            _ => return Err(bad("neither a cron nor an interval")),
        };
        let misfire = match self.misfire.as_str() {
            "skip" => Misfire::Skip,
            "once" => Misfire::FireOnce,
            m => Misfire::CatchUp(
                m.strip_prefix("catchup:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad("unknown misfire policy"))?,
            ),
        };
        let overlap = match self.overlap.as_str() {
            "allow" => Overlap::Allow,
            "skip" => Overlap::Skip,
            _ => return Err(bad("unknown overlap policy")),
        };
        let req = TaskRequest::from_encoded(&self.task, &self.queue, self.args.clone())
            .priority(self.priority)
            .max_retries(self.max_retries)
            .timeout(Duration::from_millis(self.timeout_ms));
        Ok(base.request(req).misfire(misfire).overlap(overlap))
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Tasks written.
    pub tasks: u64,
    /// Of those, per state written (`scheduled`, `ready`, `dead`; running tasks count as ready).
    pub by_state: BTreeMap<String, u64>,
    /// Schedules written.
    pub schedules: u64,
    /// Workflows not finished yet written (only when every queue is exported).
    pub workflows: u64,
    /// Members read twice (they moved between two pages of their partition): written once.
    pub duplicates: u64,
    /// Members skipped: no record, or a record in no exportable state (finished since, damaged).
    pub skipped: u64,
    /// The file's size in bytes.
    pub bytes: u64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Tasks created.
    pub restored: u64,
    /// Tasks skipped because a task with that id was there already.
    pub existed: u64,
    /// Schedules added.
    pub schedules: u64,
    /// Schedules skipped because one of that name was there already.
    pub schedules_existed: u64,
    /// Workflow records created.
    pub workflows: u64,
    /// Workflows skipped because a record of that id was there already.
    pub workflows_existed: u64,
}

/// What [`Importer::verify`] found in a whole, valid file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileSummary {
    /// The file's format version.
    pub version: u16,
    /// Its header.
    pub header: Header,
    /// Tasks in it.
    pub tasks: u64,
    /// Schedules in it.
    pub schedules: u64,
    /// Workflows in it.
    pub workflows: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Writes the unfinished tasks and the schedules of a namespace to an export file.
///
/// See the [module documentation](self) for what is exported and how consistent it is.
#[derive(Debug, Clone)]
pub struct Exporter {
    client: Client,
    queues: Option<Vec<String>>,
    batch: u32,
}

impl Exporter {
    /// An exporter reading through `client` (its namespace, connection and retry policy): every
    /// queue, pages of [`DEFAULT_BATCH`] tasks.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            queues: None,
            batch: DEFAULT_BATCH,
        }
    }

    /// Export only these queues (and the schedules whose ticks go to them).
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Tasks read per script call, 1 to 1000 (default [`DEFAULT_BATCH`], 50): the longest Redis
    /// is held by one call of the export.
    pub fn batch(mut self, n: u32) -> Self {
        self.batch = n.clamp(1, 1000);
        self
    }

    /// The queues to export with their shard counts.
    async fn plan(&self) -> Result<BTreeMap<String, u16>> {
        let inspector = crate::Inspector::new(&self.client);
        let all: BTreeMap<String, u16> = inspector
            .queues()
            .await?
            .into_iter()
            .map(|q| (q.name, q.shards))
            .collect();
        match &self.queues {
            None => Ok(all),
            Some(wanted) => wanted
                .iter()
                .map(|q| {
                    validate_queue(q)?;
                    all.get(q)
                        .map(|n| (q.clone(), *n))
                        .ok_or_else(|| Error::UnknownQueue(q.clone()))
                })
                .collect(),
        }
    }

    /// How many tasks the export will read at most (scheduled + ready + running + dead of the
    /// queues exported, counted now): the length of a progress bar.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownQueue`] for a queue asked for that is not registered, or a Redis error.
    pub async fn count(&self) -> Result<u64> {
        let inspector = crate::Inspector::new(&self.client);
        let mut n = 0;
        for q in self.plan().await?.keys() {
            let c = inspector.queue(q).await?.total;
            n += c.scheduled + c.ready + c.running + c.dead;
        }
        Ok(n)
    }

    /// Writes the export file to `out`; `progress` is called after each page with the number
    /// of members read so far. `out` is written as the pages come: give it a buffered writer.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownQueue`], [`Error::Io`], or a Redis error (after the client's retries).
    /// The file is then incomplete: it has no trailer, and an import refuses it.
    pub async fn export<W: Write>(
        &self,
        out: W,
        mut progress: impl FnMut(u64),
    ) -> Result<ExportReport> {
        let queues = self.plan().await?;
        let inspector = crate::Inspector::new(&self.client);
        let header = Header {
            namespace: self.client.store().keys().namespace().to_owned(),
            exported_at_ms: inspector.server_time_ms().await?,
            queues: queues.clone(),
            writer: format!("scheduler-core {}", env!("CARGO_PKG_VERSION")),
        };
        let mut w = FrameWriter::new(out, header)?;
        let mut report = ExportReport::default();
        let mut read = 0u64;
        for (queue, shards) in &queues {
            for shard in 0..*shards {
                let p = self.client.store().partition(queue, shard);
                let mut seen: HashSet<String> = HashSet::new();
                for set in [
                    p.keys.scheduled(),
                    p.keys.ready(),
                    p.keys.active(),
                    p.keys.dead(),
                ] {
                    let mut after: Option<(String, String)> = None;
                    loop {
                        let cursor = after.as_ref().map(|(s, i)| (s.as_str(), i.as_str()));
                        let page = self
                            .client
                            .retry(|| {
                                self.client
                                    .store()
                                    .export_page(&p, &set, cursor, self.batch)
                            })
                            .await?;
                        let full = page.len() == self.batch as usize;
                        read += page.len() as u64;
                        if let Some(last) = page.last() {
                            after = Some((last.score.clone(), last.id.clone()));
                        }
                        for item in page {
                            if seen.contains(&item.id) {
                                report.duplicates += 1;
                                continue;
                            }
                            let id = TaskId::new(queue, &item.id);
                            let Some(rec) = TaskInfo::from_fields(id, item.fields)
                                .and_then(|info| record_of(queue, info))
                            else {
                                report.skipped += 1;
                                continue;
                            };
                            seen.insert(item.id);
                            *report.by_state.entry(rec.state.clone()).or_default() += 1;
                            w.task(rec)?;
                            report.tasks += 1;
                        }
                        progress(read);
                        if !full {
                            break;
                        }
                    }
                }
            }
        }
        if self.queues.is_none() {
            self.export_workflows(&mut w, &mut report).await?;
        }
        for s in Schedules::new(&self.client).list().await? {
            if queues.contains_key(&s.queue) {
                w.schedule(ScheduleRecord::of(&s))?;
                report.schedules += 1;
            }
        }
        let (_, bytes) = w.finish()?;
        report.bytes = bytes;
        Ok(report)
    }
}

impl Exporter {
    /// Writes every workflow of the index `<ns>:workflows` (those not finished) with its record,
    /// `batch` ids per `ZRANGE`, one `HGETALL` (atomic) per record. A workflow that finished
    /// meanwhile (no record) is left out; ids are paged by rank, so one that leaves the index
    /// during the export can make the next page skip another: export with the workers stopped.
    async fn export_workflows<W: Write>(
        &self,
        w: &mut FrameWriter<W>,
        report: &mut ExportReport,
    ) -> Result<()> {
        let index = self.client.store().keys().workflows();
        let mut start = 0i64;
        loop {
            let stop = start + i64::from(self.batch) - 1;
            let page: Vec<(String, f64)> = self
                .client
                .retry(|| {
                    let mut conn = self.client.store().conn();
                    let index = index.clone();
                    async move {
                        Ok(redis::cmd("ZRANGE")
                            .arg(index)
                            .arg(start)
                            .arg(stop)
                            .arg("WITHSCORES")
                            .query_async(&mut conn)
                            .await?)
                    }
                })
                .await?;
            for (id, score) in &page {
                let fields: Vec<(String, Vec<u8>)> = self.client.workflow_fields(id).await?;
                if fields.is_empty() {
                    continue;
                }
                w.workflow(WorkflowRecord {
                    id: id.clone(),
                    indexed_at_ms: *score as i64,
                    fields: fields
                        .into_iter()
                        .map(|(k, v)| (k, serde_bytes::ByteBuf::from(v)))
                        .collect(),
                })?;
                report.workflows += 1;
            }
            if page.len() < self.batch as usize {
                return Ok(());
            }
            start += i64::from(self.batch);
        }
    }
}

/// The record of an exportable task: scheduled, ready, running (as ready, without its current
/// run, as a release at shutdown counts it) or dead; `None` for the other states.
fn record_of(queue: &str, info: TaskInfo) -> Option<TaskRecord> {
    let (state, attempts) = match info.state {
        TaskState::Scheduled => (TaskState::Scheduled, info.attempts),
        TaskState::Ready => (TaskState::Ready, info.attempts),
        TaskState::Running => (TaskState::Ready, info.attempts.saturating_sub(1)),
        TaskState::Dead => (TaskState::Dead, info.attempts),
        _ => return None,
    };
    Some(TaskRecord {
        queue: queue.to_owned(),
        id: info.id.id().to_owned(),
        name: info.name,
        state: state.as_str().to_owned(),
        run_at_ms: info.run_at_ms,
        enqueued_at_ms: info.enqueued_at_ms,
        finished_at_ms: (state == TaskState::Dead).then_some(info.finished_at_ms.unwrap_or(0)),
        attempts,
        lost: info.lost,
        max_retries: info.max_retries,
        timeout_ms: info.timeout_ms,
        priority: info.priority,
        error: info.last_error,
        args: info.args,
        headers: info.headers,
    })
}

/// Restores an export file into a namespace: empty or live, same or other shard counts, single
/// Redis or Cluster.
///
/// Tasks are recreated in the state they were exported in by `lua/restore.lua` (one atomic step
/// per task, 25 tasks per call, 256 calls per round trip), each in the shard its id hashes to
/// under the target's shard count. A task whose id exists in the target is skipped, never
/// duplicated, so importing twice, or resuming an import that stopped, is safe. A scheduled task
/// whose due time passed meanwhile is ready at once; the others run at their due time, by the
/// target Redis' clock. Schedules are added unless one of that name exists.
#[derive(Debug, Clone)]
pub struct Importer {
    client: Client,
    shards: HashMap<String, u16>,
}

impl Importer {
    /// An importer writing through `client` (its namespace, connection and retry policy).
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            shards: HashMap::new(),
        }
    }

    /// The shard count to register for `queue` if the target does not have the queue yet
    /// (default: the source's, from the file). A queue the target has keeps its own count: its
    /// tasks are spread over it by their ids.
    pub fn shards(mut self, queue: impl Into<String>, shards: u16) -> Self {
        self.shards.insert(queue.into(), shards.max(1));
        self
    }

    /// Reads a whole file and checks it (magic, version, every frame, counts, checksum) without
    /// touching Redis. Run it before [`Importer::import`] for an all-or-nothing import of a bad
    /// file.
    ///
    /// # Errors
    ///
    /// [`Error::BadExportFile`] or [`Error::Io`].
    pub fn verify<R: Read>(input: R) -> Result<FileSummary> {
        let (mut r, header) = FrameReader::new(input)?;
        let (mut tasks, mut schedules, mut workflows) = (0, 0, 0);
        while let Some(f) = r.next_record()? {
            match f {
                Frame::Task(_) => tasks += 1,
                Frame::Schedule(_) => schedules += 1,
                Frame::Workflow(_) => workflows += 1,
                _ => {}
            }
        }
        Ok(FileSummary {
            version: r.version(),
            header,
            tasks,
            schedules,
            workflows,
            bytes: r.offset(),
        })
    }

    /// Imports the file read from `input`, writing as it reads; `progress` is called after each
    /// round trip with the number of tasks handled so far.
    ///
    /// The file is checked as it is read; a bad frame is found only when reached, after the
    /// tasks before it were written ([`Importer::verify`] first avoids that).
    ///
    /// # Errors
    ///
    /// [`Error::ImportStopped`], holding what was imported before the error and the error:
    /// [`Error::BadExportFile`], [`Error::Io`], a Redis error, or a record the target refuses.
    pub async fn import<R: Read>(
        &self,
        input: R,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport> {
        let mut done = ImportReport::default();
        match self.run(input, &mut done, &mut progress).await {
            Ok(()) => Ok(done),
            Err(e) => Err(Error::ImportStopped {
                done,
                source: Box::new(e),
            }),
        }
    }

    async fn run<R: Read>(
        &self,
        input: R,
        done: &mut ImportReport,
        progress: &mut impl FnMut(u64),
    ) -> Result<()> {
        let (mut r, header) = FrameReader::new(input)?;
        // Target shard counts: registered ones win; new queues get the override or the source's.
        let mut shards: HashMap<String, u16> = HashMap::new();
        for (queue, source) in &header.queues {
            validate_queue(queue)?;
            let want = self.shards.get(queue).copied().unwrap_or(*source);
            let n = self
                .client
                .retry(|| self.client.store().register_queue(queue, want))
                .await?;
            shards.insert(queue.clone(), n);
        }
        let mut pending: Vec<(Partition, RestoreTask)> = Vec::new();
        let mut schedules = Vec::new();
        let mut workflows = Vec::new();
        while let Some(frame) = r.next_record()? {
            match frame {
                Frame::Task(t) => {
                    let n = *shards.get(&t.queue).ok_or_else(|| {
                        Error::Protocol(format!(
                            "task of queue {:?} missing from the header",
                            t.queue
                        ))
                    })?;
                    let p = self.client.store().partition(&t.queue, shard_of(&t.id, n));
                    pending.push((p, restore_task(t)?));
                    if pending.len() >= RESTORE_CHUNK * RESTORE_CALLS {
                        self.flush(&mut pending, done).await?;
                        progress(done.restored + done.existed);
                    }
                }
                Frame::Schedule(s) => schedules.push(s),
                Frame::Workflow(wf) => workflows.push(wf),
                _ => {}
            }
        }
        self.flush(&mut pending, done).await?;
        progress(done.restored + done.existed);
        // After their members: a restored workflow is indexed (and swept) once its tasks exist.
        for wf in workflows {
            self.restore_workflow(wf, done).await?;
        }
        let api = Schedules::new(&self.client);
        for s in schedules {
            match api.get(&s.name).await {
                Ok(_) => done.schedules_existed += 1,
                Err(Error::ScheduleNotFound(_)) => {
                    api.add(&s.schedule()?).await?;
                    if s.paused {
                        api.pause(&s.name).await?;
                    }
                    done.schedules += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Restores a workflow's record as it was (`wf_create.lua`: nothing if a record of that id
    /// exists), then indexes it for the sweep (`ZADD NX` at its old score).
    async fn restore_workflow(&self, wf: WorkflowRecord, done: &mut ImportReport) -> Result<()> {
        crate::workflow::validate_workflow_id(&wf.id)?;
        let fields: Vec<(String, Vec<u8>)> = wf
            .fields
            .into_iter()
            .map(|(k, v)| (k, v.into_vec()))
            .collect();
        let created = self
            .client
            .retry(|| self.client.store().wf_create(&wf.id, &fields))
            .await?;
        if created {
            done.workflows += 1;
        } else {
            done.workflows_existed += 1;
        }
        let index = self.client.store().keys().workflows();
        self.client
            .retry(|| {
                let mut conn = self.client.store().conn();
                let (index, id) = (index.clone(), wf.id.clone());
                async move {
                    redis::cmd("ZADD")
                        .arg(index)
                        .arg("NX")
                        .arg(wf.indexed_at_ms)
                        .arg(id)
                        .query_async::<()>(&mut conn)
                        .await?;
                    Ok(())
                }
            })
            .await
    }

    /// Restores `pending`, grouped by partition, in one round trip per slot.
    async fn flush(
        &self,
        pending: &mut Vec<(Partition, RestoreTask)>,
        done: &mut ImportReport,
    ) -> Result<()> {
        let mut groups: HashMap<Partition, Vec<RestoreTask>> = HashMap::new();
        for (p, t) in pending.drain(..) {
            groups.entry(p).or_default().push(t);
        }
        let calls: Vec<(&Partition, &[RestoreTask])> = groups
            .iter()
            .flat_map(|(p, ts)| ts.chunks(RESTORE_CHUNK).map(move |c| (p, c)))
            .collect();
        for window in calls.chunks(RESTORE_CALLS) {
            // restore.lua skips what exists: sending a window again after a lost reply is safe
            // (its tasks then count as existed).
            let replies = self
                .client
                .retry(|| self.client.store().restore(window))
                .await?;
            for (outs, (p, ts)) in replies.iter().zip(window) {
                for (o, t) in outs.iter().zip(ts.iter()) {
                    match o {
                        Outcome::Done => done.restored += 1,
                        Outcome::Exists => done.existed += 1,
                        _ => {
                            return Err(Error::Protocol(format!(
                                "restore.lua refused task {}/{} as invalid",
                                p.queue, t.id
                            )))
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `restore.lua` input of a task record, or why it is not one.
fn restore_task(t: TaskRecord) -> Result<RestoreTask> {
    let bad = || Error::InvalidTaskId(format!("{}/{} (state {:?})", t.queue, t.id, t.state));
    crate::id::validate_id(&t.id)?;
    let state = match t.state.parse::<TaskState>().map_err(|_| bad())? {
        TaskState::Scheduled => TaskState::Scheduled.as_str(),
        TaskState::Ready => TaskState::Ready.as_str(),
        TaskState::Dead => TaskState::Dead.as_str(),
        _ => return Err(bad()),
    };
    if t.priority > 9 {
        return Err(Error::InvalidPriority(t.priority));
    }
    let headers = crate::headers::encode(&t.headers)?;
    Ok(RestoreTask {
        id: t.id,
        name: t.name,
        args: t.args,
        state,
        run_at_ms: t.run_at_ms,
        max_retries: t.max_retries,
        timeout_ms: t.timeout_ms,
        priority: t.priority,
        attempts: t.attempts,
        lost: t.lost,
        error: t.error,
        enqueued_at_ms: t.enqueued_at_ms,
        finished_at_ms: t.finished_at_ms,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::format::*;
    use super::*;

    fn task(i: u32) -> TaskRecord {
        TaskRecord {
            queue: "q".into(),
            id: format!("t{i}"),
            name: "job".into(),
            state: "scheduled".into(),
            run_at_ms: 1_000 + i64::from(i),
            enqueued_at_ms: 1_000,
            finished_at_ms: None,
            attempts: 0,
            lost: 0,
            max_retries: 3,
            timeout_ms: 30_000,
            priority: 0,
            error: None,
            args: vec![0x92, 0x01, 0xc4, 0x02, 0x00, 0xff],
            headers: BTreeMap::new(),
        }
    }

    fn header() -> Header {
        Header {
            namespace: "ns".into(),
            exported_at_ms: 1,
            queues: [("q".to_owned(), 4u16)].into(),
            writer: "test".into(),
        }
    }

    /// A file of `n` tasks and one workflow.
    fn file(n: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = FrameWriter::new(&mut buf, header()).unwrap();
        for i in 0..n {
            w.task(task(i)).unwrap();
        }
        w.workflow(WorkflowRecord {
            id: "wf1".into(),
            indexed_at_ms: 5,
            fields: [(
                "state".to_owned(),
                serde_bytes::ByteBuf::from(b"running".to_vec()),
            )]
            .into(),
        })
        .unwrap();
        let (t, bytes) = w.finish().unwrap();
        assert_eq!((t.tasks, t.workflows), (u64::from(n), 1));
        assert_eq!(bytes, buf.len() as u64);
        buf
    }

    fn read_all(b: &[u8]) -> Result<Vec<TaskRecord>> {
        let (mut r, _) = FrameReader::new(b)?;
        let mut out = Vec::new();
        while let Some(f) = r.next_record()? {
            if let Frame::Task(t) = f {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn format_error(e: Error) -> FormatError {
        match e {
            Error::BadExportFile(f) => f,
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    /// A file reads back as written, arguments byte for byte, and starts with the magic and
    /// the version.
    #[test]
    fn round_trip() {
        let b = file(5);
        assert_eq!(&b[..8], MAGIC);
        assert_eq!(u16::from_be_bytes([b[8], b[9]]), FORMAT_VERSION);
        let got = read_all(&b).unwrap();
        assert_eq!(got, (0..5).map(task).collect::<Vec<_>>());
        let s = Importer::verify(&b[..]).unwrap();
        assert_eq!(s.header.namespace, "ns");
        assert_eq!(
            (s.tasks, s.schedules, s.workflows, s.bytes),
            (5, 0, 1, b.len() as u64)
        );
    }

    /// A version 2 file (no workflow frames, a trailer without their count) still reads.
    #[test]
    fn version_2_file_reads() {
        #[derive(Serialize)]
        enum V2 {
            Trailer {
                tasks: u64,
                schedules: u64,
                crc32: u32,
            },
        }
        fn frame(b: &mut Vec<u8>, body: Vec<u8>) {
            b.extend((body.len() as u32).to_be_bytes());
            b.extend(body);
        }
        let mut b = MAGIC.to_vec();
        b.extend(2u16.to_be_bytes());
        frame(
            &mut b,
            rmp_serde::to_vec_named(&Frame::Header(header())).unwrap(),
        );
        frame(
            &mut b,
            rmp_serde::to_vec_named(&Frame::Task(task(0))).unwrap(),
        );
        let crc32 = crc32fast::hash(&b);
        let trailer = V2::Trailer {
            tasks: 1,
            schedules: 0,
            crc32,
        };
        frame(&mut b, rmp_serde::to_vec_named(&trailer).unwrap());
        let s = Importer::verify(&b[..]).unwrap();
        assert_eq!((s.version, s.tasks, s.workflows), (2, 1, 0));
        assert_eq!(read_all(&b).unwrap(), vec![task(0)]);
    }

    /// A file cut at any byte is refused: truncated (or not an export, when cut inside the
    /// magic); never read as a shorter valid file.
    #[test]
    fn every_truncation_is_detected() {
        let b = file(3);
        for cut in 0..b.len() {
            let e = format_error(read_all(&b[..cut]).unwrap_err());
            if cut < 8 {
                assert_eq!(e, FormatError::NotAnExport, "cut at {cut}");
            } else {
                assert!(
                    matches!(e, FormatError::Truncated { .. }),
                    "cut at {cut}: {e:?}"
                );
            }
        }
    }

    /// Any single changed byte after the magic and version is refused: a checksum mismatch,
    /// a corrupted frame, a truncation (a grown length), or a newer version.
    #[test]
    fn every_flipped_byte_is_detected() {
        let b = file(3);
        for i in 8..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x20;
            let e = format_error(read_all(&c).unwrap_err());
            assert!(
                matches!(
                    e,
                    FormatError::Checksum { .. }
                        | FormatError::Corrupt { .. }
                        | FormatError::Truncated { .. }
                        | FormatError::NewerVersion { .. }
                ),
                "byte {i}: {e:?}"
            );
        }
    }

    /// A newer version is refused before any frame is read; bytes after the trailer are refused.
    #[test]
    fn newer_version_and_trailing_bytes() {
        let mut b = file(1);
        let mut newer = b.clone();
        newer[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_be_bytes());
        assert_eq!(
            format_error(read_all(&newer).unwrap_err()),
            FormatError::NewerVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            }
        );
        b.push(0);
        assert!(matches!(
            format_error(read_all(&b).unwrap_err()),
            FormatError::Corrupt { .. }
        ));
        assert_eq!(
            format_error(read_all(b"hello world").unwrap_err()),
            FormatError::NotAnExport
        );
    }

    /// A record without headers is encoded without the `headers` key, byte for byte as version 1
    /// wrote it, and a version 1 record (no key) reads as a task without headers; a record with
    /// headers round-trips.
    #[test]
    fn headers_are_absent_when_empty_and_round_trip() {
        let plain = task(1);
        let bytes = rmp_serde::to_vec_named(&plain).unwrap();
        assert!(!bytes.windows(7).any(|w| w == b"headers"));
        let back: TaskRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, plain);
        let mut with = task(2);
        with.headers.insert("tenant".into(), "42".into());
        let bytes = rmp_serde::to_vec_named(&with).unwrap();
        let back: TaskRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.headers["tenant"], "42");
    }

    /// Arguments are a MessagePack `bin` in the file (bytes, not an array of integers).
    #[test]
    fn args_are_binary() {
        let body = rmp_serde::to_vec_named(&Frame::Task(task(0))).unwrap();
        let needle = [0xc4, 0x06, 0x92, 0x01, 0xc4, 0x02, 0x00, 0xff];
        assert!(body.windows(needle.len()).any(|w| w == needle));
    }
}
