//! The promoter: moves each partition's tasks to the ready set at their exact due time and
//! recovers expired leases, taking a partition's lock only while that partition has work due.
//!
//! Timing: every worker learns each partition's earliest due time (the head) from the enqueue
//! and retry scripts' notifications, from the replies of its own promote calls, from its watch
//! reads and from a sweep. It sleeps until the earliest head it knows (mapped from the Redis clock
//! to a local instant through the server time each call returns). The script reads the server
//! clock itself, so waking a little early only costs a call; it never runs a task early.
//!
//! Locks: at a due time the worker takes the partition's lock (`SET NX PX` with a random token),
//! promotes, and keeps the lock (renewed every third of its TTL by compare-and-expire) while more
//! work is due within one TTL; otherwise it releases it (compare-and-delete). An idle partition
//! costs no lock traffic at all.
//!
//! Takeover: a lock only avoids wasted work, and its holder may be dead, stopped or cut off while
//! its lock lives on. So a worker that finds a partition's lock taken does not wait for the lock
//! to expire: it watches the partition instead, reading its scheduled and active heads (one
//! pipelined round trip for every watched partition) a moment after they fall due. A head that is
//! overdue by `takeover_after` and has not moved since the previous read means the holder missed
//! it: the watcher takes the lock over (`SET PX GET`, whoever holds it), logs one line naming the
//! previous holder, and promotes or reaps at once. A live holder that was only slow finds its lock
//! gone at its next renewal and becomes a watcher itself. Two promoters on one partition are
//! harmless: promote and reap move each task atomically, once.
//!
//! Concurrency: the work of each partition (lock, promote, reap) runs as its own task, so one
//! partition's backlog or a long round trip to Redis never delays another partition's due time;
//! renewals and watch reads are sent concurrently too.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use scheduler_core::store::Partition;
use scheduler_core::Store;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::acker::{record_acks, stored_result, write_now as write_acks};
use crate::fetcher::Intake;
use crate::messages::PromoterEvent;
use crate::messages::Verdict;
use crate::shared::Counters;
use crate::shared::Ready;
use scheduler_core::scripts::{AckItem, Riders};

/// What the promoter uses.
pub(crate) struct PromoterParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// Prefix of its lock tokens, so an operator can tell who holds a lock.
    pub(crate) worker_id: String,
    /// Marked after a promote or reap moved tasks to a ready set, so this process's fetcher
    /// claims them at once rather than at the echo of the script's own notification; read by
    /// the warm sweep.
    pub(crate) ready: Arc<Ready>,
    /// Counts promotions, reaps and takeovers.
    pub(crate) counters: Arc<Counters>,
    /// [`crate::WorkerConfig::lock_ttl`].
    pub(crate) lock_ttl: Duration,
    /// [`crate::WorkerConfig::takeover_after`].
    pub(crate) takeover_after: Duration,
    /// [`crate::WorkerConfig::warm_sweep_interval`].
    pub(crate) warm_sweep_interval: Duration,
    /// [`crate::WorkerConfig::sweep_interval`].
    pub(crate) sweep_interval: Duration,
    /// [`crate::WorkerConfig::promote_batch`].
    pub(crate) promote_batch: u32,
    /// [`crate::WorkerConfig::max_lost_leases`].
    pub(crate) max_lost_leases: u32,
    /// This worker's intake: a promote leases due tasks straight to it while it has idle slots.
    pub(crate) intake: Arc<Intake>,
    /// [`crate::WorkerConfig::lease`].
    pub(crate) lease: Duration,
    /// Ends it (intake stops); it then releases its locks.
    pub(crate) stop_intake: CancellationToken,
    /// Per partition, the due time (unix ms, Redis clock) of the scheduled head as this worker
    /// last learned it (a promote reply, a notification, a sweep); `i64::MAX` when unknown. A
    /// promote that moves tasks records `now - head` as the promoter lag: how late the oldest
    /// task of the batch was promoted. Atomics: the promoter loop writes heads it learns, the
    /// spawned jobs read and rewrite them.
    pub(crate) heads_ms: Box<[AtomicI64]>,
    /// The acker's: the acks held for a partition ride on its next promote, which learns of
    /// its next promotes through it ([`crate::acker::Rides`]).
    pub(crate) acker: Arc<crate::acker::AckerParams>,
    /// Records the end of the workflow members a reap buried or cancelled.
    pub(crate) client: scheduler_core::Client,
}

/// Maps Redis server time to local instants, to the microsecond: `at` is the local instant at
/// which the server clock read `server_us` (the midpoint of the call that read it).
#[derive(Debug, Clone, Copy)]
struct Clock {
    at: Instant,
    server_us: i64,
}

impl Clock {
    /// The clock read by a call sent at `sent` that returned `server_us` just now.
    fn read(sent: Instant, server_us: i64) -> Self {
        Self {
            at: sent + sent.elapsed() / 2,
            server_us,
        }
    }

    /// The local instant at which the server clock reaches `server_ms`.
    fn instant_of(&self, server_ms: i64) -> Instant {
        let d = server_ms * 1000 - self.server_us;
        if d <= 0 {
            self.at
        } else {
            self.at + Duration::from_micros(d as u64)
        }
    }
}

/// A head read by a watch: (member, score), the score being a due time or a lease deadline.
type Head = (String, i64);

/// What this worker knows of one partition.
#[derive(Debug, Default, Clone)]
struct Part {
    /// When to promote next (the head's due time, or a retry time).
    due: Option<Instant>,
    /// When to reap next (the earliest lease deadline, or a retry time).
    reap: Option<Instant>,
    /// Our lock token, while we hold the partition's lock.
    lock: Option<String>,
    /// A task of ours is working on this partition (lock, promote, reap) or watching it.
    busy: bool,
    /// When to read the partition's heads, while another worker holds its lock.
    watch: Option<Instant>,
    /// The scheduled head seen by the previous watch read.
    seen_sched: Option<Head>,
    /// The active head (earliest lease) seen by the previous watch read.
    seen_active: Option<Head>,
}

/// What to do in one partition, decided by the promoter loop and done by a spawned task.
#[derive(Debug)]
struct Job {
    idx: usize,
    /// Our token when we hold the lock already.
    held: Option<String>,
    /// Take the lock over whoever holds it (the holder missed its work).
    take_over: bool,
    promote: bool,
    reap: bool,
}

/// What a job found.
#[derive(Debug, Default)]
struct JobDone {
    idx: usize,
    /// Our token when we hold the lock after the job.
    lock: Option<String>,
    /// Another worker holds the lock: we watch instead.
    lock_busy: bool,
    /// Taking the lock failed (Redis error): retry soon.
    lock_failed: bool,
    /// Next promote time: `Some(None)` when the scheduled set is empty.
    due: Option<Option<Instant>>,
    /// Next reap time: `Some(None)` when no lease is held.
    reap: Option<Option<Instant>>,
    clock: Option<Clock>,
}

/// What a watch read found in each partition it read.
#[derive(Debug)]
struct WatchDone {
    clock: Clock,
    server_ms: i64,
    heads: Vec<(usize, Option<Head>, Option<Head>)>,
}

enum Done {
    Job(JobDone),
    Watch(Option<WatchDone>, Vec<usize>),
    /// A renewal of the lock of `.0` with token `.1` answered: held, lost, or unknown (error).
    Renewed(usize, String, Option<bool>),
    /// A sweep's clock, and each partition's scheduled head and earliest lease deadline.
    Swept(Option<Clock>, Vec<(usize, Option<i64>, Option<i64>)>),
}

struct Promoter {
    params: Arc<PromoterParams>,
    parts: Vec<Part>,
    clock: Option<Clock>,
    tasks: JoinSet<Done>,
}

/// Runs until intake stops, then releases every lock it holds.
pub(crate) async fn run(
    params: Arc<PromoterParams>,
    mut rx: mpsc::UnboundedReceiver<PromoterEvent>,
) {
    let mut pr = Promoter {
        parts: vec![Part::default(); params.partitions.len()],
        params: Arc::clone(&params),
        clock: None,
        tasks: JoinSet::new(),
    };
    let mut renew = tokio::time::interval(params.lock_ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate: the sweep at start finds existing work.
    let mut sweep = tokio::time::interval(params.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warm = tokio::time::interval(params.warm_sweep_interval);
    warm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = pr.next_wake();
        tokio::select! {
            biased;
            () = params.stop_intake.cancelled() => break,
            Some(done) = pr.tasks.join_next(), if !pr.tasks.is_empty() => match done {
                Ok(done) => pr.on_done(done),
                Err(e) => tracing::error!(error = %e, "a promoter task failed"),
            },
            ev = rx.recv() => match ev {
                Some(PromoterEvent::Head(idx, due)) => pr.on_head(idx, due),
                Some(PromoterEvent::SweepAll) => pr.sweep(false),
                None => break,
            },
            () = tokio::time::sleep_until(wake) => pr.on_timer(),
            _ = renew.tick() => pr.renew(),
            _ = sweep.tick() => pr.sweep(false),
            _ = warm.tick() => pr.sweep(true),
        }
    }
    // No promote of ours is coming: hold no more acks for one.
    for idx in 0..params.partitions.len() {
        params.acker.rides.set_next(idx, None);
    }
    // Let running jobs finish (each is a few calls), so every lock taken is known and released.
    let grace = Instant::now() + params.lock_ttl;
    while let Ok(Some(done)) = tokio::time::timeout_at(grace, pr.tasks.join_next()).await {
        if let Ok(done) = done {
            pr.on_done(done);
        }
    }
    pr.release_all().await;
}

fn min_opt(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

impl Promoter {
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.parts
            .iter()
            .filter(|p| !p.busy)
            .flat_map(|p| p.due.into_iter().chain(p.reap).chain(p.watch))
            .min()
            .unwrap_or(far)
    }

    fn instant_of(&self, server_ms: i64) -> Instant {
        self.clock
            .map_or_else(Instant::now, |c| c.instant_of(server_ms))
    }

    fn on_head(&mut self, idx: usize, due_ms: i64) {
        self.params.heads_ms[idx].fetch_min(due_ms, Ordering::Relaxed);
        let at = self.instant_of(due_ms);
        let p = &mut self.parts[idx];
        p.due = Some(min_opt(p.due, at));
        self.publish_next(idx);
    }

    /// Tells the acker when we promote `idx` next, while we hold its lock (acks of `idx` due
    /// to finish before then may wait for it).
    fn publish_next(&self, idx: usize) {
        let p = &self.parts[idx];
        let next = if p.lock.is_some() { p.due } else { None };
        self.params.acker.rides.set_next(idx, next);
    }

    fn on_reap_deadline(&mut self, idx: usize, deadline_ms: i64) {
        let at = self.instant_of(deadline_ms);
        let p = &mut self.parts[idx];
        p.reap = Some(min_opt(p.reap, at));
    }

    /// Starts a job for every partition with work due, and one watch read for every watched
    /// partition whose check is due.
    fn on_timer(&mut self) {
        let now = Instant::now();
        let mut watch = Vec::new();
        for idx in 0..self.parts.len() {
            let p = &mut self.parts[idx];
            if p.busy {
                continue;
            }
            let promote = p.due.is_some_and(|d| d <= now);
            let reap = p.reap.is_some_and(|r| r <= now);
            if promote || reap {
                let job = Job {
                    idx,
                    held: p.lock.clone(),
                    take_over: false,
                    promote,
                    reap,
                };
                self.start(job);
            } else if p.watch.is_some_and(|w| w <= now) {
                p.watch = None;
                p.busy = true;
                watch.push(idx);
            }
        }
        if !watch.is_empty() {
            let params = Arc::clone(&self.params);
            self.tasks.spawn(async move {
                // Bounded like a job: a hung read would leave its partitions busy.
                let done = tokio::time::timeout(JOB_LIMIT, read_heads(&params, &watch))
                    .await
                    .ok()
                    .flatten();
                Done::Watch(done, watch)
            });
        }
    }

    fn start(&mut self, job: Job) {
        let p = &mut self.parts[job.idx];
        p.busy = true;
        if job.promote {
            p.due = None;
        }
        if job.reap {
            p.reap = None;
        }
        let params = Arc::clone(&self.params);
        let clock = self.clock;
        self.tasks
            .spawn(async move { Done::Job(run_job_bounded(params, clock, job).await) });
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Job(d) => self.on_job_done(d),
            Done::Watch(d, idxs) => self.on_watch_done(d, &idxs),
            Done::Renewed(idx, token, held) => self.on_renewed(idx, &token, held),
            Done::Swept(clock, heads) => self.on_swept(clock, &heads),
        }
    }

    fn on_job_done(&mut self, d: JobDone) {
        if let Some(c) = d.clock {
            self.clock = Some(c);
        }
        let now = Instant::now();
        let check = self.params.takeover_after / 2;
        let p = &mut self.parts[d.idx];
        p.busy = false;
        p.lock = d.lock;
        if let Some(due) = d.due {
            p.due = match (p.due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if let Some(reap) = d.reap {
            p.reap = match (p.reap, reap) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if d.lock_busy {
            // Its holder does the work; we only check that it does.
            p.due = None;
            p.reap = None;
            p.watch = Some(min_opt(p.watch, now + check));
        }
        if d.lock_failed {
            let soon = now + Duration::from_secs(1);
            p.due = p.due.map(|_| soon);
            p.reap = p.reap.map(|_| soon);
        }
        self.maybe_release(d.idx);
        self.publish_next(d.idx);
    }

    /// Applies a watch read: a head that is overdue by `takeover_after` and has not moved since
    /// the previous read was missed by the lock holder, so we take its partition over.
    fn on_watch_done(&mut self, done: Option<WatchDone>, idxs: &[usize]) {
        let check = self.params.takeover_after / 2;
        let after_ms = self.params.takeover_after.as_millis() as i64;
        let Some(w) = done else {
            // The read failed: look again a little later.
            let soon = Instant::now() + Duration::from_secs(1);
            for &idx in idxs {
                let p = &mut self.parts[idx];
                p.busy = false;
                p.watch = Some(soon);
            }
            return;
        };
        self.clock = Some(w.clock);
        let now = Instant::now();
        for (idx, sched, active) in w.heads {
            let p = &mut self.parts[idx];
            p.busy = false;
            let stalled = |head: &Option<Head>, seen: &Option<Head>| match head {
                Some((_, t)) => head == seen && w.server_ms - t >= after_ms,
                None => false,
            };
            let take_sched = stalled(&sched, &p.seen_sched);
            let take_active = stalled(&active, &p.seen_active);
            if p.lock.is_some() {
                // Ours again meanwhile: the normal timers cover it.
                continue;
            }
            if take_sched || take_active {
                p.seen_sched = None;
                p.seen_active = None;
                let job = Job {
                    idx,
                    held: None,
                    take_over: true,
                    promote: take_sched,
                    reap: take_active,
                };
                self.start(job);
                continue;
            }
            // Next check: when the earlier head is overdue by `takeover_after`, at least `check`
            // from now (a head already overdue is read again then, to see whether it moved).
            let next = [&sched, &active]
                .into_iter()
                .flatten()
                .map(|(_, t)| w.clock.instant_of(t + after_ms).max(now + check))
                .min();
            p.seen_sched = sched;
            p.seen_active = active;
            p.watch = next;
        }
    }

    fn on_renewed(&mut self, idx: usize, token: &str, held: Option<bool>) {
        let p = &mut self.parts[idx];
        if p.lock.as_deref() != Some(token) {
            return;
        }
        let part = &self.params.partitions[idx];
        match held {
            Some(true) => {}
            Some(false) => {
                tracing::info!(queue = %part.queue, shard = part.shard, "promoter lock lost to another worker; watching the partition instead");
                p.lock = None;
                p.due = None;
                p.reap = None;
                p.watch = Some(Instant::now() + self.params.takeover_after / 2);
                self.publish_next(idx);
            }
            // Keep it: if the lock really expired, another promoter takes over, which is
            // harmless; we find out at the next renewal.
            None => {}
        }
    }

    /// Releases the lock of `idx` unless more work is due there within one TTL.
    fn maybe_release(&mut self, idx: usize) {
        let horizon = Instant::now() + self.params.lock_ttl;
        let p = &mut self.parts[idx];
        let busy = p.due.is_some_and(|d| d <= horizon) || p.reap.is_some_and(|r| r <= horizon);
        if busy || p.busy {
            return;
        }
        if let Some(token) = p.lock.take() {
            let params = Arc::clone(&self.params);
            // A late release cannot delete a newer lock: it compares the token.
            tokio::spawn(async move {
                let part = &params.partitions[idx];
                if let Err(e) = params.store.lock_release(part, &token).await {
                    tracing::debug!(error = %e, "could not release a promoter lock; it expires by itself");
                }
            });
        }
    }

    /// Reads partitions' heads (one pipelined round trip of three reads per partition), in a
    /// task of its own: every partition at start, on reconnect and every sweep interval; with
    /// `warm_only`, only the partitions with recent activity (none on an idle worker).
    fn sweep(&mut self, warm_only: bool) {
        let idxs: Vec<usize> = (0..self.parts.len())
            .filter(|&idx| {
                let touched = self.params.ready.touched[idx].swap(false, Ordering::Relaxed);
                let p = &self.parts[idx];
                !warm_only
                    || touched
                    || (self.params.ready.flags[idx].load(Ordering::Relaxed)
                        && !self.params.ready.is_paused(idx))
                    || p.lock.is_some()
                    || p.reap.is_some()
                    || p.watch.is_some()
                    || p.seen_active.is_some()
            })
            .collect();
        if idxs.is_empty() {
            return;
        }
        let params = Arc::clone(&self.params);
        self.tasks.spawn(async move {
            let (clock, heads) = tokio::time::timeout(JOB_LIMIT, sweep(&params, &idxs))
                .await
                .unwrap_or_default();
            Done::Swept(clock, heads)
        });
    }

    fn on_swept(&mut self, clock: Option<Clock>, heads: &[(usize, Option<i64>, Option<i64>)]) {
        if clock.is_some() {
            self.clock = clock;
        }
        for &(idx, due, deadline) in heads {
            if let Some(due) = due {
                self.on_head(idx, due);
            }
            if let Some(deadline) = deadline {
                self.on_reap_deadline(idx, deadline);
            }
        }
    }

    /// Renews the locks we hold, concurrently.
    fn renew(&mut self) {
        let ttl_ms = self.params.lock_ttl.as_millis() as u64;
        for idx in 0..self.parts.len() {
            let Some(token) = self.parts[idx].lock.clone() else {
                continue;
            };
            let params = Arc::clone(&self.params);
            self.tasks.spawn(async move {
                let p = &params.partitions[idx];
                let held = match params.store.lock_renew(p, &token, ttl_ms).await {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "could not renew a promoter lock");
                        None
                    }
                };
                Done::Renewed(idx, token, held)
            });
        }
    }

    /// Releases every lock we hold, concurrently, for at most a second: a lock that cannot be
    /// released (its node is gone, the network is cut) expires by itself, and a shutdown must
    /// not wait on it (one request per lock in turn could take a response timeout each).
    async fn release_all(&mut self) {
        let params = &self.params;
        let releases = self.parts.iter_mut().enumerate().filter_map(|(idx, p)| {
            let token = p.lock.take()?;
            Some(async move {
                let part = &params.partitions[idx];
                if let Err(e) = params.store.lock_release(part, &token).await {
                    tracing::warn!(error = %e, queue = %part.queue, shard = part.shard, "could not release a promoter lock; it expires by itself");
                }
            })
        });
        let all = futures::future::join_all(releases);
        if tokio::time::timeout(Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!(
                "promoter locks not released within 1 s at shutdown; they expire by themselves"
            );
        }
    }
}

/// Reads the scheduled head, ready count and earliest lease of each partition of `idxs` (64
/// partitions per pipeline) and flags partitions with ready work for the fetcher. A failed read
/// is logged and skipped: the next sweep tries again.
async fn sweep(
    params: &PromoterParams,
    idxs: &[usize],
) -> (Option<Clock>, Vec<(usize, Option<i64>, Option<i64>)>) {
    let mut clock = None;
    let mut heads = Vec::with_capacity(idxs.len());
    for chunk in idxs.chunks(64) {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for &idx in chunk {
            let p = &params.partitions[idx];
            head_cmd(&mut pipe, &p.keys.scheduled());
            pipe.zcard(p.keys.ready());
            head_cmd(&mut pipe, &p.keys.active());
        }
        let sent = Instant::now();
        // Split by cluster slot on a cluster (one round trip per node, sent concurrently).
        let values = match params.store.query_pipeline(&pipe).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "sweep failed; trying again next sweep");
                break;
            }
        };
        let mut it = values.into_iter();
        if let Some(Ok((secs, micros))) = it.next().map(redis::from_redis_value::<(i64, i64)>) {
            clock = Some(Clock::read(sent, secs * 1_000_000 + micros));
        }
        for &idx in chunk {
            let sched = head_of(it.next());
            let ready: u64 = it
                .next()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or(0);
            let active = head_of(it.next());
            if ready > 0 {
                params.ready.mark(idx);
            }
            heads.push((idx, sched.map(|h| h.1), active.map(|h| h.1)));
        }
    }
    (clock, heads)
}

/// Adds `ZRANGE key 0 0 WITHSCORES` (the head of a sorted set) to `pipe`.
fn head_cmd(pipe: &mut redis::Pipeline, key: &str) {
    pipe.cmd("ZRANGE").arg(key).arg(0).arg(0).arg("WITHSCORES");
}

/// The head read by [`head_cmd`], if the set was not empty.
fn head_of(v: Option<redis::Value>) -> Option<Head> {
    let v: Vec<(String, i64)> = v.and_then(|v| redis::from_redis_value(v).ok())?;
    v.into_iter().next()
}

/// One pipelined round trip: the server time, then the scheduled and active heads of each
/// partition of `idxs`. `None` when the read failed (logged).
async fn read_heads(params: &PromoterParams, idxs: &[usize]) -> Option<WatchDone> {
    let mut pipe = redis::pipe();
    pipe.cmd("TIME");
    for &idx in idxs {
        let p = &params.partitions[idx];
        head_cmd(&mut pipe, &p.keys.scheduled());
        head_cmd(&mut pipe, &p.keys.active());
    }
    let sent = Instant::now();
    let values = match params.store.query_pipeline(&pipe).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not read partition heads; trying again in 1 s");
            return None;
        }
    };
    let mut it = values.into_iter();
    let (secs, micros) = it
        .next()
        .and_then(|v| redis::from_redis_value::<(i64, i64)>(v).ok())?;
    let server_us = secs * 1_000_000 + micros;
    let heads = idxs
        .iter()
        .map(|&idx| (idx, head_of(it.next()), head_of(it.next())))
        .collect();
    Some(WatchDone {
        clock: Clock::read(sent, server_us),
        server_ms: server_us / 1000,
        heads,
    })
}

/// Longest a partition's job may take before it is given up and tried again: a request to a
/// node that died can hang for tens of seconds (a Redis Cluster client retrying it), and a
/// partition whose job hangs is neither promoted nor watched meanwhile.
const JOB_LIMIT: Duration = Duration::from_secs(5);

/// [`run_job`], given up after [`JOB_LIMIT`]: then the partition is tried again in a second (a
/// lock the job may have taken shows as held by us, which the watch takes over).
async fn run_job_bounded(params: Arc<PromoterParams>, clock: Option<Clock>, job: Job) -> JobDone {
    let idx = job.idx;
    let (promote, reap) = (job.promote, job.reap);
    let held = job.held.clone();
    match tokio::time::timeout(JOB_LIMIT, run_job(Arc::clone(&params), clock, job)).await {
        Ok(done) => done,
        Err(_) => {
            let p = &params.partitions[idx];
            tracing::warn!(queue = %p.queue, shard = p.shard, "promoter call unanswered for 5 s; trying again in 1 s");
            let soon = Instant::now() + Duration::from_secs(1);
            JobDone {
                idx,
                lock: held,
                due: Some(promote.then_some(soon)),
                reap: Some(reap.then_some(soon)),
                clock,
                ..JobDone::default()
            }
        }
    }
}

/// Takes (or takes over) the lock of a partition, then promotes and reaps as asked.
async fn run_job(params: Arc<PromoterParams>, clock: Option<Clock>, job: Job) -> JobDone {
    let p = &params.partitions[job.idx];
    let mut done = JobDone {
        idx: job.idx,
        clock,
        ..JobDone::default()
    };
    let ttl_ms = params.lock_ttl.as_millis() as u64;
    let token = match job.held {
        Some(t) => t,
        None => {
            let token = format!("{}:{:016x}", params.worker_id, rand::rng().random::<u64>());
            let taken = if job.take_over {
                params
                    .store
                    .lock_take_over(p, &token, ttl_ms)
                    .await
                    .map(|previous| {
                        log_take_over(&params, p, previous.as_deref(), &job);
                        true
                    })
            } else {
                params.store.lock_acquire(p, &token, ttl_ms).await
            };
            match taken {
                Ok(true) => token,
                Ok(false) => {
                    done.lock_busy = true;
                    return done;
                }
                Err(e) => {
                    tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "could not take a promoter lock; retrying in 1 s");
                    done.lock_failed = true;
                    done.due = Some(job.promote.then(Instant::now));
                    done.reap = Some(job.reap.then(Instant::now));
                    return done;
                }
            }
        }
    };
    done.lock = Some(token);
    if job.promote {
        done.due = Some(promote(&params, job.idx, &mut done.clock).await);
    }
    if job.reap {
        done.reap = Some(reap(&params, job.idx, done.clock).await);
    }
    done
}

fn log_take_over(params: &PromoterParams, p: &Partition, previous: Option<&str>, job: &Job) {
    // Tokens are `<worker id>:<random>`.
    let holder = previous.map_or("nobody (expired)", |t| {
        t.rsplit_once(':').map_or(t, |(w, _)| w)
    });
    let work = match (job.promote, job.reap) {
        (true, true) => "promote and reap",
        (true, false) => "promote",
        _ => "reap",
    };
    tracing::info!(queue = %p.queue, shard = p.shard, previous_holder = holder, work, "took over a partition whose promoter missed its due work");
    Counters::add(&params.counters.takeovers, 1);
    crate::metrics::count(crate::metrics::TAKEOVERS, &p.queue, 1);
}

/// Promotes everything due in `p`, a batch per call, leasing to this worker as many of the due
/// tasks as it has idle slots for (one call instead of a promote, its wake-up and a claim); the
/// next promote time.
async fn promote(
    params: &PromoterParams,
    idx: usize,
    clock: &mut Option<Clock>,
) -> Option<Instant> {
    let p = &params.partitions[idx];
    let batch = params.promote_batch.max(1);
    let lease_ms = params.lease.as_millis() as u64;
    let ttl_ms = params.acker.result_ttl.as_millis() as u64;
    // The acks held for this promote ride on its first call.
    let mut riders = params.acker.rides.take(idx);
    loop {
        // A paused queue's due tasks go to the ready set only (want = 0), where they wait.
        let mut permit = if params.ready.is_paused(idx) {
            None
        } else {
            params.intake.reserve(batch as usize)
        };
        let want = permit.as_ref().map_or(0, |p| p.num_permits() as u32);
        let tag = if want > 0 {
            params.intake.next_tag()
        } else {
            String::new()
        };
        let sent = Instant::now();
        let span = scheduler_core::trace::claim_span(&p.queue, p.shard);
        // The successes riding on this call are written by it: links to their runs.
        crate::trace::link_runs(
            &span,
            riders
                .iter()
                .filter(|c| matches!(c.verdict, Verdict::Ack(_)))
                .map(|c| &c.run),
        );
        let acks: Vec<AckItem<'_>> = riders
            .iter()
            .filter_map(|c| match &c.verdict {
                Verdict::Ack(r) => Some((c.id.as_str(), c.token, stored_result(r))),
                _ => None,
            })
            .collect();
        let called = tracing::Instrument::instrument(
            params
                .store
                .promote_claim_ack(p, batch, want, lease_ms, &tag, riding(&acks, ttl_ms)),
            span.clone(),
        )
        .await;
        match called {
            Ok((r, tasks, acked)) => {
                if !acks.is_empty() {
                    let attempts: Vec<u32> = riders
                        .iter()
                        .filter(|c| matches!(c.verdict, Verdict::Ack(_)))
                        .map(|c| c.attempt)
                        .collect();
                    record_acks(
                        &params.counters,
                        &params.acker.events,
                        p,
                        &acks,
                        &attempts,
                        &acked,
                    );
                    drop(acks);
                    riders.clear();
                }
                scheduler_core::trace::record_count(&span, tasks.len());
                crate::trace::link_producers(&span, &tasks);
                let c = Clock::read(sent, r.server_now_us);
                *clock = Some(c);
                let leased = tasks.len() as u64;
                if let Some(permit) = permit.as_mut() {
                    params.intake.deliver(idx, tasks, r.server_now_ms, permit);
                }
                let head =
                    params.heads_ms[idx].swap(r.next_due_ms.unwrap_or(i64::MAX), Ordering::Relaxed);
                if r.moved + leased > 0 && head <= r.server_now_ms {
                    crate::metrics::promoter_lag(&p.queue, r.server_now_ms - head);
                }
                Counters::add(&params.counters.promoted, r.moved + leased);
                crate::metrics::count(crate::metrics::PROMOTED, &p.queue, r.moved + leased);
                if r.moved > 0 {
                    // Our own fetcher learns of the work now, not at the echo of the `r:`
                    // notification promote.lua published (which other processes still need).
                    params.ready.mark(idx);
                }
                if r.expired > 0 {
                    Counters::add(&params.counters.expired, r.expired);
                    crate::metrics::count(crate::metrics::EXPIRED, &p.queue, r.expired);
                }
                if r.corrupt > 0 {
                    tracing::warn!(queue = %p.queue, shard = p.shard, corrupt = r.corrupt, "promote found task records it cannot read: moved to the dead set with the reason (or dropped when the record is gone)");
                }
                if r.moved + leased + r.corrupt + r.expired >= u64::from(batch) {
                    continue;
                }
                return r.next_due_ms.map(|ms| c.instant_of(ms));
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "promote failed; retrying in 1 s");
                if want > 0 {
                    params.intake.release_lost(idx, tag);
                }
                if !riders.is_empty() {
                    // Written through the acker's own path (retried through failovers; fenced,
                    // so harmless if the promote applied them after all).
                    drop(acks);
                    tokio::spawn(write_acks(Arc::clone(&params.acker), riders));
                }
                return Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

/// The acks `acks` riding on a promote, their results kept `ttl_ms`.
fn riding<'a>(acks: &'a [AckItem<'a>], ttl_ms: u64) -> Riders<'a> {
    Riders {
        acks,
        result_ttl_ms: ttl_ms,
    }
}

/// Records in their workflows the end of members that a reap buried or cancelled (`(header,
/// error)`), as the executor records the members it ran: the workflow fails (fail-fast) and
/// its other members are cancelled now, not at the next workflow sweep. After the reap, not in
/// it (the record is in another slot); idempotent, and a process that dies before leaves it to
/// the sweep, as before.
async fn workflow_members_ended(client: scheduler_core::Client, members: Vec<(String, String)>) {
    for (header, error) in &members {
        if let Err(e) = client.workflow_member_finished(header, Err(error)).await {
            tracing::warn!(error = %e, header, "could not record a reaped workflow member's end; the workflow sweep will");
        }
    }
}

/// Recovers the expired leases of `p`; the next reap time.
async fn reap(params: &PromoterParams, idx: usize, clock: Option<Clock>) -> Option<Instant> {
    let p = &params.partitions[idx];
    let batch = params.promote_batch.max(1);
    loop {
        match params.store.reap(p, batch, params.max_lost_leases).await {
            Ok(r) => {
                Counters::add(&params.counters.reaped, r.requeued + r.buried);
                if r.requeued > 0 {
                    // As after a promote: the requeued tasks are ready for our fetcher now.
                    params.ready.mark(idx);
                }
                crate::metrics::count(crate::metrics::REAPED, &p.queue, r.requeued + r.buried);
                if r.corrupt > 0 {
                    tracing::warn!(queue = %p.queue, shard = p.shard, corrupt = r.corrupt, "reap found task records it cannot read: moved to the dead set with the reason (or dropped when the record is gone)");
                }
                if r.requeued + r.buried > 0 {
                    tracing::info!(queue = %p.queue, shard = p.shard, requeued = r.requeued, buried = r.buried, "recovered tasks of lost workers (expired leases)");
                }
                if !r.workflow_members.is_empty() {
                    tokio::spawn(workflow_members_ended(
                        params.client.clone(),
                        r.workflow_members.clone(),
                    ));
                }
                if r.requeued + r.buried >= u64::from(batch) {
                    continue;
                }
                // No lease held: nothing to reap until someone claims; the sweep finds it.
                return r.next_deadline_ms.map(|ms| {
                    clock
                        .map_or_else(Instant::now, |c| c.instant_of(ms))
                        .max(Instant::now() + Duration::from_millis(1))
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "reap failed; retrying in 1 s");
                return Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}
