//! [`Schedules`]: periodic schedules stored in Redis, managed at run time (add, remove, pause,
//! resume, trigger now, list) and fired by every worker ([`Schedules::fire_due`]), exactly once
//! per tick. How and why: `docs/schedules.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::client::{Client, TaskRequest};
use crate::error::{Error, Result};
use crate::id::{shard_of, validate_queue, TaskId};
use crate::schedule::{check_name, plan, Misfire, Overlap, Schedule, Spec, Ticks};
use crate::store::{Partition, ScheduleTask, ScheduleWrite, ScheduleWriteArgs};

/// How long a plan stays valid after the server time it was computed with (ms): a process
/// paused longer between reading and writing has its write refused, and reads again.
const PLAN_VALID_MS: i64 = 1_000;

/// How late the first tick of a schedule that never fired may be when a ticker first comes to it
/// and still be enqueued (due at once) rather than be a misfire (ms). A schedule declared a moment
/// before its first tick (at 12:00:00.990 for a tick at 12:00:01) is first read by the ticker of
/// the worker that declared it once that worker runs, which can be after the tick: that tick was
/// not missed while the workers were down, it is just being started. Later ticks, and a first
/// tick further in the past (no worker ran since the schedule was added), follow the misfire
/// policy.
const FIRST_TICK_GRACE_MS: i64 = 2_000;

/// Compare-and-set rounds before giving up on one schedule for this pass.
const CAS_ROUNDS: usize = 5;

/// The longest a ticker goes without reading a schedule (ms): the bound on how long it may miss
/// a change whose epoch bump was lost (a process killed between its write and the bump).
const SKIP_CAP_MS: i64 = 60_000;

/// The field of the index hash `<ns>:schedules` counting changes to any schedule (a schedule
/// name cannot start with `:`): a ticker that sees it move forgets what it knew.
const EPOCH_FIELD: &str = ":epoch";

/// The definition fields of a schedule record: a declaration equal in all of them is a no-op.
const DEF_FIELDS: [&str; 12] = [
    "kind",
    "cron",
    "tz",
    "every_ms",
    "task",
    "args",
    "queue",
    "priority",
    "max_retries",
    "timeout_ms",
    "misfire",
    "overlap",
];

/// What [`Schedules::add`] or a worker's declaration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// The schedule did not exist; it was stored, its first tick is the first after now.
    Created,
    /// It existed with the same definition: nothing changed.
    Unchanged,
    /// It existed with another definition: the new one applies from the first tick not yet
    /// enqueued (ticks already enqueued ahead, at most the lookahead, keep the old arguments).
    Updated,
}

/// One stored schedule, as [`Schedules::list`] and [`Schedules::get`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleInfo {
    /// Its name.
    pub name: String,
    /// When it fires.
    pub spec: Spec,
    /// The task its ticks run.
    pub task: String,
    /// The queue they go to.
    pub queue: String,
    /// Their arguments, MessagePack.
    pub args: Vec<u8>,
    /// Their priority.
    pub priority: u8,
    /// Their retries allowed after the first run.
    pub max_retries: u32,
    /// Their time limit of one run, ms.
    pub timeout_ms: u64,
    /// Misfire policy.
    pub misfire: Misfire,
    /// Overlap policy.
    pub overlap: Overlap,
    /// Paused: no tick is enqueued (one already enqueued ahead still runs).
    pub paused: bool,
    /// `code` (declared on a worker) or `api` (added at run time), as first stored.
    pub origin: String,
    /// The first tick not enqueued yet (unix ms), `None` when the expression has no more ticks.
    pub next_ms: Option<i64>,
    /// The latest tick enqueued (unix ms).
    pub last_tick_ms: Option<i64>,
    /// The task of that tick.
    pub last_id: Option<TaskId>,
    /// Tasks its ticks created.
    pub fired: u64,
    /// Ticks skipped (misfire or overlap policy).
    pub skipped: u64,
}

/// What one [`Schedules::fire_due`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Tasks this pass created.
    pub created: u64,
    /// Schedules another process wrote first (read again and found nothing left to do, or gave
    /// up after a few rounds: the next pass continues).
    pub contended: u64,
    /// Schedules that could not be fired (an unreadable record, a Redis error on that
    /// schedule); logged, and tried again by the next pass.
    pub failed: u64,
}

/// Periodic schedules in Redis: the run-time API, and what the worker's schedule component calls.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// use scheduler_core::schedule::Schedule;
/// use scheduler_core::{Client, Schedules, TaskRequest};
///
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let schedules = Schedules::new(&client);
/// let req = TaskRequest::new("cleanup", "default", &("tmp",))?;
/// schedules.add(&Schedule::cron("nightly", "0 0 3 * * *", "UTC")?.request(req)).await?;
/// schedules.pause("nightly").await?;
/// schedules.resume("nightly").await?;
/// let id = schedules.trigger("nightly").await?;   // one run now, besides the ticks
/// for s in schedules.list().await? {
///     println!("{} next {:?} fired {}", s.name, s.next_ms, s.fired);
/// }
/// schedules.remove("nightly").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Schedules {
    client: Client,
    /// What [`Schedules::fire_due`] learnt: when each schedule needs reading again. Shared by
    /// clones.
    known: Arc<Mutex<Known>>,
}

/// A ticker's knowledge of the schedules, valid while the index's epoch does not move.
#[derive(Debug, Default)]
struct Known {
    /// The epoch it was learnt under.
    epoch: i64,
    /// Schedule name -> the server time (ms) before which it has nothing to enqueue.
    quiet_until: HashMap<String, i64>,
}

/// A stored record, field -> raw value.
type Record = HashMap<String, Vec<u8>>;

impl Schedules {
    /// The schedules of `client`'s namespace.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            known: Arc::default(),
        }
    }

    /// Stores `schedule` (origin `api`), or updates it when its definition changed.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSchedule`] without a task, or for a change of queue (remove it first);
    /// [`Error::InvalidQueueName`], [`Error::InvalidPriority`]; a Redis error. Nothing is
    /// stored on error.
    pub async fn add(&self, schedule: &Schedule) -> Result<Declared> {
        self.put(schedule, "api").await
    }

    /// As [`Schedules::add`] with origin `code`: what a worker does at start for each schedule
    /// declared on its builder.
    ///
    /// # Errors
    ///
    /// As [`Schedules::add`].
    pub async fn declare(&self, schedule: &Schedule) -> Result<Declared> {
        self.put(schedule, "code").await
    }

    async fn put(&self, s: &Schedule, origin: &str) -> Result<Declared> {
        let invalid = |reason: &str| Error::InvalidSchedule {
            name: s.name.clone(),
            reason: reason.into(),
        };
        let req = s
            .request
            .as_ref()
            .ok_or_else(|| invalid("no task: call .task(..) or .request(..)"))?;
        validate_queue(&req.queue)?;
        if req.priority > 9 {
            return Err(Error::InvalidPriority(req.priority));
        }
        let ticks = Ticks::new(&s.spec).map_err(|r| invalid(&r))?;
        let def = def_fields(s, req);
        let index = self.client.store().keys().schedules();
        let mut conn = self.client.store().conn();
        let stored: Option<String> = conn.hget(&index, &s.name).await?;
        let moved = match stored.as_deref() {
            // An index entry without its record (a refused write) does not hold the name.
            Some(q) if q != req.queue => !self
                .read(&self.partition(&s.name, q).await?, &s.name)
                .await?
                .is_empty(),
            _ => false,
        };
        if moved {
            return Err(invalid(&format!(
                "it sends to queue {:?}; remove it before changing its queue",
                stored.unwrap_or_default()
            )));
        }
        let p = self.partition(&s.name, &req.queue).await?;
        for _ in 0..CAS_ROUNDS {
            let rec = self.read(&p, &s.name).await?;
            let now = self.server_now().await?;
            let (rev, outcome, mut fields) = if rec.is_empty() {
                let mut f = def.clone();
                f.push(("origin".into(), origin.as_bytes().to_vec()));
                f.push(("paused".into(), b"0".to_vec()));
                f.push(("created_at".into(), now.to_string().into_bytes()));
                (0, Declared::Created, f)
            } else {
                let same = def
                    .iter()
                    .all(|(k, v)| rec.get(k).map(Vec::as_slice) == Some(v.as_slice()));
                if same {
                    return Ok(Declared::Unchanged);
                }
                (
                    num(&rec, "rev").unwrap_or(0),
                    Declared::Updated,
                    def.clone(),
                )
            };
            let from = now.max(num(&rec, "last_tick").unwrap_or(i64::MIN));
            let next = ticks.next_after(from).unwrap_or(-1);
            fields.push(("next".into(), next.to_string().into_bytes()));
            // The index first: a record without its entry would never fire; an entry without
            // its record (the script refused) is ignored by every reader.
            let _: () = conn.hset(&index, &s.name, &req.queue).await?;
            let w = ScheduleWriteArgs {
                expected_rev: rev,
                deadline_ms: now + PLAN_VALID_MS,
                fields,
                ..Default::default()
            };
            match self.client.store().schedule_write(&p, &s.name, &w).await? {
                ScheduleWrite::Done(_) => {
                    self.bump_epoch().await?;
                    return Ok(outcome);
                }
                _ => continue,
            }
        }
        Err(Error::Protocol(format!(
            "schedule {:?}: still contended after {CAS_ROUNDS} rounds",
            s.name
        )))
    }

    /// Deletes schedule `name`; false when there was none. Tasks its ticks already enqueued
    /// stay. A schedule declared in a worker's code comes back when such a worker starts.
    ///
    /// # Errors
    ///
    /// A Redis error.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let Some((p, rec)) = self.find(name).await? else {
            return Ok(false);
        };
        let w = ScheduleWriteArgs {
            expected_rev: num(&rec, "rev").unwrap_or(0),
            delete: true,
            ..Default::default()
        };
        let done = match self.client.store().schedule_write(&p, name, &w).await? {
            ScheduleWrite::Done(_) => true,
            // Written in between: delete whatever it is now.
            _ => {
                let mut conn = self.client.store().conn();
                let n: u64 = conn.del(p.keys.schedule(name)).await?;
                n > 0
            }
        };
        let mut conn = self.client.store().conn();
        let _: () = conn
            .hdel(self.client.store().keys().schedules(), name)
            .await?;
        self.bump_epoch().await?;
        Ok(done)
    }

    /// Pauses schedule `name`: no tick is enqueued until [`Schedules::resume`] (a tick already
    /// enqueued ahead still runs). Ticks passed meanwhile follow its misfire policy.
    ///
    /// # Errors
    ///
    /// [`Error::ScheduleNotFound`], or a Redis error.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.set_paused(name, true).await
    }

    /// Resumes schedule `name` after [`Schedules::pause`].
    ///
    /// # Errors
    ///
    /// [`Error::ScheduleNotFound`], or a Redis error.
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        for _ in 0..CAS_ROUNDS {
            let (p, rec) = self
                .find(name)
                .await?
                .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))?;
            let w = ScheduleWriteArgs {
                expected_rev: num(&rec, "rev").unwrap_or(0),
                fields: vec![("paused".into(), if paused { b"1" } else { b"0" }.to_vec())],
                ..Default::default()
            };
            if let ScheduleWrite::Done(_) = self.client.store().schedule_write(&p, name, &w).await?
            {
                return self.bump_epoch().await;
            }
        }
        Err(Error::Protocol(format!(
            "schedule {name:?}: still contended"
        )))
    }

    /// Enqueues one run of schedule `name` now, besides its ticks (id `<name>@now-<ulid>`).
    ///
    /// # Errors
    ///
    /// [`Error::ScheduleNotFound`], or as [`Client::enqueue_request`].
    pub async fn trigger(&self, name: &str) -> Result<TaskId> {
        let (_, rec) = self
            .find(name)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))?;
        let info = info_of(name, &rec)?;
        let mut req = TaskRequest::from_encoded(info.task, info.queue, info.args)
            .id(format!("{name}@now-{}", ulid::Ulid::new()))
            .priority(info.priority);
        req.max_retries = num(&rec, "max_retries").unwrap_or(0) as u32;
        req.timeout = Duration::from_millis(num(&rec, "timeout_ms").unwrap_or(0) as u64);
        self.client.enqueue_request(req).await
    }

    /// Every stored schedule, by name.
    ///
    /// # Errors
    ///
    /// A Redis error, or [`Error::Protocol`] for a record that cannot be read.
    pub async fn list(&self) -> Result<Vec<ScheduleInfo>> {
        let mut out = Vec::new();
        for (name, queue) in self.index().await? {
            let p = self.partition(&name, &queue).await?;
            let rec = self.read(&p, &name).await?;
            if !rec.is_empty() {
                out.push(info_of(&name, &rec)?);
            }
        }
        Ok(out)
    }

    /// Schedule `name`.
    ///
    /// # Errors
    ///
    /// [`Error::ScheduleNotFound`], or a Redis error.
    pub async fn get(&self, name: &str) -> Result<ScheduleInfo> {
        let (_, rec) = self
            .find(name)
            .await?
            .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))?;
        info_of(name, &rec)
    }

    /// One pass of the schedule component (every worker runs it, about every second): for each
    /// schedule not paused whose next tick is due within `lookahead`, enqueues the ticks due by
    /// then as ordinary delayed tasks, applying the misfire and overlap policies. Any number of
    /// processes may call it at once: each tick is enqueued exactly once (`docs/schedules.md`).
    ///
    /// # Errors
    ///
    /// A Redis error reading the index (an error on one schedule is counted in
    /// [`FireReport::failed`] and the pass goes on).
    pub async fn fire_due(&self, lookahead: Duration) -> Result<FireReport> {
        let mut report = FireReport::default();
        let look = lookahead.as_millis() as i64;
        let (index, epoch) = self.index_and_epoch().await?;
        if index.is_empty() {
            // No schedule: the pass costs the one read of the index, no clock read.
            return Ok(report);
        }
        // The ticks' `enqueued` events follow the setting (one `HKEYS` per 10 s at most).
        self.client.refresh_events_setting();
        let clock = PassClock {
            server_ms: self.server_now().await?,
            at: Instant::now(),
        };
        let quiet = {
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            if known.epoch != epoch {
                known.epoch = epoch;
                known.quiet_until.clear();
            }
            known.quiet_until.clone()
        };
        for (name, queue) in index {
            if quiet.get(&name).is_some_and(|t| *t > clock.now()) {
                continue;
            }
            // One schedule that cannot be fired (a record edited by hand, its queue's shard
            // count unreadable) must not hold up the others: count it, log it, go on.
            match self.fire_schedule(&name, &queue, look, &clock).await {
                Ok(Some(n)) => report.created += n,
                Ok(None) => report.contended += 1,
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(schedule = %name, error = %e, "could not fire schedule");
                }
            }
        }
        Ok(report)
    }

    async fn fire_schedule(
        &self,
        name: &str,
        queue: &str,
        look: i64,
        clock: &PassClock,
    ) -> Result<Option<u64>> {
        let p = self.partition(name, queue).await?;
        for _ in 0..CAS_ROUNDS {
            if let Some(n) = self.fire_one(&p, name, look, clock).await? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    /// Notes that schedule `name` has nothing to enqueue before server time `until` (capped at
    /// [`SKIP_CAP_MS`] from `now`).
    fn quiet(&self, name: &str, now: i64, until: i64) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known
            .quiet_until
            .insert(name.to_owned(), until.min(now + SKIP_CAP_MS));
    }

    /// One schedule: `Some(created)` when done for this pass, `None` to read again. It enqueues
    /// the ticks due within `look` once the first of them is due within `look`, then leaves the
    /// schedule unread until its next tick is due within `look / 2`: one write enqueues about
    /// half a lookahead of ticks, and a schedule with nothing due soon is not read every pass.
    async fn fire_one(
        &self,
        p: &Partition,
        name: &str,
        look: i64,
        clock: &PassClock,
    ) -> Result<Option<u64>> {
        let rec = self.read(p, name).await?;
        let now = clock.now();
        if rec.is_empty() || num(&rec, "paused") == Some(1) {
            // Resuming moves the epoch.
            self.quiet(name, now, i64::MAX);
            return Ok(Some(0));
        }
        let Some(next) = num(&rec, "next").filter(|n| *n >= 0) else {
            self.quiet(name, now, i64::MAX);
            return Ok(Some(0));
        };
        if next > now + look {
            self.quiet(name, now, next - look);
            return Ok(Some(0));
        }
        let info = info_of(name, &rec)?;
        let ticks = Ticks::new(&info.spec).map_err(|reason| Error::InvalidSchedule {
            name: name.to_owned(),
            reason,
        })?;
        // The first tick of a schedule that never fired, passed less than the grace ago: planned
        // as of its own time, so that it is enqueued (due at once), not dropped as a misfire.
        let never_fired = num(&rec, "last_tick").is_none();
        let plan_now = if never_fired && next < now && now - next <= FIRST_TICK_GRACE_MS {
            next
        } else {
            now
        };
        let plan = plan(&ticks, info.misfire, info.overlap, next, plan_now, look);
        let rev = num(&rec, "rev").unwrap_or(0);
        let shards = self.client.shards(&info.queue).await?;
        let tasks: Vec<ScheduleTask> = plan
            .fire
            .iter()
            .map(|tick| ScheduleTask {
                id: tick_id(name, *tick, p.shard, shards),
                name: info.task.clone(),
                args: info.args.clone(),
                due_ms: *tick,
                max_retries: num(&rec, "max_retries").unwrap_or(0) as u32,
                timeout_ms: num(&rec, "timeout_ms").unwrap_or(0) as u64,
                priority: info.priority,
            })
            .collect();
        let next_field = plan.new_next.unwrap_or(-1).to_string().into_bytes();
        let mut fields = vec![("next".to_owned(), next_field.clone())];
        if let (Some(last), Some(t)) = (plan.fire.last(), tasks.last()) {
            fields.push(("last_tick".into(), last.to_string().into_bytes()));
            fields.push(("last_id".into(), t.id.clone().into_bytes()));
        }
        let guard = (info.overlap == Overlap::Skip)
            .then(|| plan.fire.first().copied())
            .flatten();
        let w = ScheduleWriteArgs {
            expected_rev: rev,
            deadline_ms: now + PLAN_VALID_MS,
            guard_tick_ms: guard,
            skipped: plan.skipped,
            fields,
            tasks,
            ..Default::default()
        };
        let store = self.client.store();
        let refill = plan.new_next.map_or(i64::MAX, |t| t - look / 2);
        match store.schedule_write(p, name, &w).await? {
            ScheduleWrite::Done(n) => {
                self.quiet(name, now, refill);
                Ok(Some(n))
            }
            ScheduleWrite::Stale | ScheduleWrite::TooLate => Ok(None),
            ScheduleWrite::Busy => Ok(Some(0)),
            ScheduleWrite::BusyPastTick => {
                // The previous run is still queued or running at the tick: skip the tick.
                let skip = ScheduleWriteArgs {
                    expected_rev: rev,
                    deadline_ms: now + PLAN_VALID_MS,
                    skipped: plan.skipped + 1,
                    fields: vec![("next".to_owned(), next_field)],
                    ..Default::default()
                };
                match store.schedule_write(p, name, &skip).await? {
                    ScheduleWrite::Done(_) => {
                        self.quiet(name, now, refill);
                        Ok(Some(0))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    async fn index(&self) -> Result<Vec<(String, String)>> {
        Ok(self.index_and_epoch().await?.0)
    }

    /// The index, name -> queue sorted by name, and its epoch (0 before the first change).
    async fn index_and_epoch(&self) -> Result<(Vec<(String, String)>, i64)> {
        let mut conn = self.client.store().conn();
        let mut all: Vec<(String, String)> =
            conn.hgetall(self.client.store().keys().schedules()).await?;
        let epoch = all
            .iter()
            .find(|(k, _)| k == EPOCH_FIELD)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        all.retain(|(k, _)| !k.starts_with(':'));
        all.sort();
        Ok((all, epoch))
    }

    /// Moves the epoch: every ticker reads every schedule again at its next pass.
    async fn bump_epoch(&self) -> Result<()> {
        let mut conn = self.client.store().conn();
        let _: i64 = conn
            .hincr(self.client.store().keys().schedules(), EPOCH_FIELD, 1)
            .await?;
        Ok(())
    }

    async fn find(&self, name: &str) -> Result<Option<(Partition, Record)>> {
        check_name(name)?;
        let mut conn = self.client.store().conn();
        let queue: Option<String> = conn
            .hget(self.client.store().keys().schedules(), name)
            .await?;
        let Some(queue) = queue else { return Ok(None) };
        let p = self.partition(name, &queue).await?;
        let rec = self.read(&p, name).await?;
        Ok((!rec.is_empty()).then_some((p, rec)))
    }

    /// The partition holding schedule `name` and its ticks' tasks: the queue's shard
    /// `crc32(name) mod shards`.
    async fn partition(&self, name: &str, queue: &str) -> Result<Partition> {
        let shards = self.client.shards(queue).await?;
        Ok(self.client.store().partition(queue, shard_of(name, shards)))
    }

    async fn read(&self, p: &Partition, name: &str) -> Result<Record> {
        let mut conn = self.client.store().conn();
        Ok(conn.hgetall(p.keys.schedule(name)).await?)
    }

    /// The Redis server's clock, unix ms.
    async fn server_now(&self) -> Result<i64> {
        let mut conn = self.client.store().conn();
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(s * 1000 + us / 1000)
    }
}

/// The server clock of one pass of [`Schedules::fire_due`]: one `TIME` at its start, plus the
/// local monotonic time since (a plan's validity is checked by the script on the server's own
/// clock).
struct PassClock {
    server_ms: i64,
    at: Instant,
}

impl PassClock {
    /// The server time now, by this estimate.
    fn now(&self) -> i64 {
        self.server_ms + self.at.elapsed().as_millis() as i64
    }
}

/// The task id of schedule `name`'s tick at `tick_ms`: `<name>@<tick_ms>`, followed by `~<k>`
/// with the smallest `k` that puts it in the schedule's shard when the bare id hashes elsewhere
/// (the script that creates it touches that shard's slot only). Every process computes the same.
pub(crate) fn tick_id(name: &str, tick_ms: i64, shard: u16, shards: u16) -> String {
    let bare = format!("{name}@{tick_ms}");
    if shard_of(&bare, shards) == shard {
        return bare;
    }
    (0u32..)
        .map(|k| format!("{bare}~{k}"))
        .find(|id| shard_of(id, shards) == shard)
        .expect("some suffix hashes to every shard")
}

fn def_fields(s: &Schedule, req: &TaskRequest) -> Vec<(String, Vec<u8>)> {
    let (kind, cron, tz, every) = match &s.spec {
        Spec::Cron { expr, tz } => ("cron", expr.clone(), tz.clone(), String::new()),
        Spec::Every(d) => (
            "every",
            String::new(),
            String::new(),
            d.as_millis().to_string(),
        ),
    };
    let misfire = match s.misfire {
        Misfire::Skip => "skip".to_owned(),
        Misfire::FireOnce => "once".to_owned(),
        Misfire::CatchUp(n) => format!("catchup:{n}"),
    };
    let overlap = match s.overlap {
        Overlap::Allow => "allow",
        Overlap::Skip => "skip",
    };
    let text = |k: &str, v: String| (k.to_owned(), v.into_bytes());
    vec![
        text("kind", kind.to_owned()),
        text("cron", cron),
        text("tz", tz),
        text("every_ms", every),
        text("task", req.name.clone()),
        ("args".to_owned(), req.args.clone()),
        text("queue", req.queue.clone()),
        text("priority", req.priority.to_string()),
        text("max_retries", req.max_retries.to_string()),
        text("timeout_ms", req.timeout.as_millis().to_string()),
        text("misfire", misfire),
        text("overlap", overlap.to_owned()),
    ]
    .into_iter()
    .inspect(|(k, _)| debug_assert!(DEF_FIELDS.contains(&k.as_str())))
    .collect()
}

fn text(rec: &Record, k: &str) -> String {
    rec.get(k)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn num(rec: &Record, k: &str) -> Option<i64> {
    std::str::from_utf8(rec.get(k)?).ok()?.parse().ok()
}

fn info_of(name: &str, rec: &Record) -> Result<ScheduleInfo> {
    let bad = |what: &str| Error::Protocol(format!("schedule {name:?}: unreadable {what}"));
    let spec = match text(rec, "kind").as_str() {
        "cron" => Spec::Cron {
            expr: text(rec, "cron"),
            tz: text(rec, "tz"),
        },
        "every" => Spec::Every(Duration::from_millis(
            num(rec, "every_ms").ok_or_else(|| bad("every_ms"))? as u64,
        )),
        _ => return Err(bad("kind")),
    };
    let misfire = match text(rec, "misfire").as_str() {
        "skip" | "" => Misfire::Skip,
        "once" => Misfire::FireOnce,
        m => Misfire::CatchUp(
            m.strip_prefix("catchup:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| bad("misfire"))?,
        ),
    };
    let overlap = match text(rec, "overlap").as_str() {
        "skip" => Overlap::Skip,
        _ => Overlap::Allow,
    };
    let queue = text(rec, "queue");
    Ok(ScheduleInfo {
        name: name.to_owned(),
        spec,
        task: text(rec, "task"),
        args: rec.get("args").cloned().unwrap_or_default(),
        priority: num(rec, "priority").unwrap_or(0).clamp(0, 9) as u8,
        max_retries: num(rec, "max_retries").unwrap_or(0).max(0) as u32,
        timeout_ms: num(rec, "timeout_ms").unwrap_or(0).max(0) as u64,
        misfire,
        overlap,
        paused: num(rec, "paused") == Some(1),
        origin: text(rec, "origin"),
        next_ms: num(rec, "next").filter(|n| *n >= 0),
        last_tick_ms: num(rec, "last_tick"),
        last_id: rec
            .get("last_id")
            .map(|v| TaskId::new(queue.clone(), String::from_utf8_lossy(v).into_owned())),
        fired: num(rec, "fired").unwrap_or(0) as u64,
        skipped: num(rec, "skipped").unwrap_or(0) as u64,
        queue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tick ids are deterministic and land in the schedule's shard.
    #[test]
    fn tick_ids_land_in_the_schedule_shard() {
        for shards in [1u16, 4, 16, 64] {
            let shard = shard_of("daily", shards);
            for tick in [0i64, 1_000, 1_764_000_000_000] {
                let id = tick_id("daily", tick, shard, shards);
                assert!(id.starts_with(&format!("daily@{tick}")));
                assert_eq!(shard_of(&id, shards), shard);
                assert_eq!(id, tick_id("daily", tick, shard, shards));
            }
        }
    }
}
