//! The fetcher: claims ready tasks in batches from partitions flagged as having work and hands
//! each to an executor. Flags are set by wake-up notifications and by the promoter's sweep; an
//! idle fetcher sends Redis nothing.
//!
//! Round trips are not paid one at a time: several claims (on different partitions) are in
//! flight at once, and the fetcher claims ahead of free slots so that a slot that frees takes its
//! next task from here instead of waiting a round trip. Every task in hand (in a claim in flight,
//! waiting for a slot, or running) holds one permit of the prefetch budget, `concurrency × (1 +
//! prefetch_multiplier)` ([`crate::WorkerConfig::prefetch_multiplier`]); a claim asks for as many
//! tasks as it holds permits, and gives back the permits of the tasks it did not get.
//!
//! The budget is only a cap: the prefetch is adaptive. The tasks in hand beyond `concurrency`
//! are kept to about what this worker finishes during one claim round trip, times
//! [`SAFETY`]: `extra = ceil(SAFETY × completion rate × claim round trip)`, at most the cap
//! `concurrency × prefetch_multiplier`. Both are measured: the round trip as an EWMA of the
//! claim calls' latency, the completion rate as an EWMA (time constant [`RATE_TAU`]) of the
//! tasks leaving the hand per second. Until a task has finished, `extra` is
//! `min(concurrency, claim_batch, cap)`. Each claim is sized to fit the tasks in hand under
//! `concurrency + extra`, and to at most twice the tasks claims have been getting (an EWMA), so
//! that when ready tasks are sparse the room is spread over claims to several partitions at
//! once instead of reserved by one.
//!
//! Near Redis (a claim takes a few milliseconds at most, even in a debug build) this holds a
//! task or two beyond the running ones, so other workers and later higher-priority tasks are not
//! kept waiting and a killed worker strands few leases. Far from Redis, when claims are what
//! limits throughput, the measured rate grows with the prefetch and `extra` about doubles every
//! round trip until it covers the round trip or reaches the cap.
//!
//! The partition of the next claim is the next one flagged in turn ([`QueueOrder::RoundRobin`],
//! the default), or is chosen by queue ([`QueuePicker`]): by weight (stride scheduling on the
//! tasks claimed) or strictly by priority; within a queue, its partitions in turn.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler_core::store::retry_transient;
use scheduler_core::store::{Claimed, Partition};
use scheduler_core::Store;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::QueueOrder;
use crate::executor;
use crate::executor::ExecutorParams;
use crate::shared::{Counters, Inflight};
use crate::shared::{InflightMap, Ready};

/// What the fetcher uses.
pub(crate) struct FetcherParams {
    pub(crate) store: Store,
    pub(crate) partitions: Arc<[Partition]>,
    /// Prefix of its claim tags.
    pub(crate) worker_id: String,
    /// Tells it which partitions to claim from; it clears a flag before claiming.
    pub(crate) ready: Arc<Ready>,
    /// Claimed tasks go in here before their executor starts.
    pub(crate) inflight: Arc<InflightMap>,
    /// Counts claims and the prefetch peak.
    pub(crate) counters: Arc<Counters>,
    /// What the executors it spawns use.
    pub(crate) executor: Arc<ExecutorParams>,
    /// [`crate::WorkerConfig::concurrency`].
    pub(crate) concurrency: usize,
    /// [`crate::WorkerConfig::claim_batch`].
    pub(crate) claim_batch: usize,
    /// [`crate::WorkerConfig::prefetch_multiplier`].
    pub(crate) prefetch_multiplier: usize,
    /// [`crate::WorkerConfig::lease`].
    pub(crate) lease: Duration,
    /// [`crate::WorkerConfig::release_attempts`].
    pub(crate) release_attempts: u32,
    /// [`crate::WorkerConfig::queues`], in the order of `partitions` (empty when the worker
    /// serves its tasks' default queues: then the order is round-robin, which does not read it).
    pub(crate) queues: Vec<String>,
    /// [`crate::WorkerConfig::queue_order`].
    pub(crate) queue_order: QueueOrder,
    /// Stops fetching.
    pub(crate) stop_intake: CancellationToken,
    /// Ends the hand-back of lost claims still running.
    pub(crate) stop_all: CancellationToken,
}

/// After a failed claim no claim is sent before `until`; the delay doubles with each failure in a
/// row (50 ms to 5 s) and starts again after a success.
#[derive(Debug)]
struct Pause {
    until: Option<Instant>,
    next: Duration,
}

const FIRST_PAUSE: Duration = Duration::from_millis(50);

/// The adaptive prefetch covers this many claim round trips of completions.
pub(crate) const SAFETY: f64 = 2.0;
/// Time constant of the completion rate's EWMA.
pub(crate) const RATE_TAU: Duration = Duration::from_millis(300);
/// The completion rate is sampled over windows at least this long.
const RATE_WINDOW: Duration = Duration::from_millis(20);
/// Weight of a new claim latency in the round trip's EWMA.
const RTT_ALPHA: f64 = 0.25;
/// Weight of a new claim's task count in the EWMA of tasks received per claim.
const FILL_ALPHA: f64 = 0.5;
/// The fetcher loop re-evaluates its target at least this often while it waits for room.
const REEVALUATE: Duration = Duration::from_millis(100);

/// The tasks received by claims and not finished yet (running or waiting for a slot); each one
/// holds a [`Held`].
#[derive(Debug, Default)]
pub(crate) struct Hand {
    /// Tasks held now.
    held: AtomicUsize,
    /// Tasks that left the hand (finished, or handed back), for the completion rate.
    left: AtomicU64,
    /// Signalled when a task leaves the hand.
    freed: Notify,
}

/// One task's place in the hand: its permit of the prefetch budget, given back (and counted as
/// a completion) when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    _permit: OwnedSemaphorePermit,
    hand: Arc<Hand>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.hand.held.fetch_sub(1, Ordering::AcqRel);
        self.hand.left.fetch_add(1, Ordering::AcqRel);
        self.hand.freed.notify_one();
    }
}

/// The completion rate, an EWMA of tasks leaving the hand per second; `None` until one has.
#[derive(Debug)]
struct Rate {
    ewma: Option<f64>,
    last: Instant,
    last_left: u64,
}

impl Rate {
    fn sample(&mut self, left: u64, now: Instant) {
        let dt = now.saturating_duration_since(self.last);
        if dt < RATE_WINDOW {
            return;
        }
        let n = left.saturating_sub(self.last_left);
        self.last = now;
        self.last_left = left;
        let inst = n as f64 / dt.as_secs_f64();
        self.ewma = match self.ewma {
            None if n == 0 => None,
            None => Some(inst),
            Some(r) => {
                let a = 1.0 - (-dt.as_secs_f64() / RATE_TAU.as_secs_f64()).exp();
                Some(r + a * (inst - r))
            }
        };
    }
}

/// Tasks to hold beyond `concurrency`: `SAFETY × rate × rtt` rounded up, at most `cap`;
/// `initial` until both are measured.
fn target_extra(rate: Option<f64>, rtt: Option<f64>, initial: usize, cap: usize) -> usize {
    match (rate, rtt) {
        (Some(r), Some(t)) => {
            let e = (SAFETY * r * t).ceil();
            if e.is_finite() && e >= 0.0 {
                (e as usize).min(cap)
            } else {
                cap
            }
        }
        _ => initial.min(cap),
    }
}

/// What the claims in flight share with the fetcher loop, and with the promoter, which leases
/// tasks to this worker as it promotes them ([`Intake::reserve`], [`Intake::deliver`]).
pub(crate) struct Intake {
    params: Arc<FetcherParams>,
    /// One permit per task in hand (claimed in flight, waiting for a slot, or running), up to
    /// `concurrency × (1 + prefetch_multiplier)`.
    budget: Arc<Semaphore>,
    /// Claims sent so far, numbering their tags.
    seq: AtomicU64,
    /// One permit per task that may run at once; an executor takes one before it runs.
    slots: Arc<Semaphore>,
    executors: TaskTracker,
    pause: Mutex<Pause>,
    /// Claims in flight.
    in_flight: AtomicUsize,
    /// Signalled when a claim ends, so the loop can lower the size it waits for.
    claim_done: Notify,
    /// Tasks received and not finished.
    hand: Arc<Hand>,
    /// EWMA of the claim calls' latency, seconds; `None` before the first claim returns.
    rtt: Mutex<Option<f64>>,
    /// EWMA of the tasks received per claim. A claim asks for twice that at most (and at most a
    /// batch): when ready tasks are sparse, the target's permits are not all reserved by one
    /// claim that returns a few tasks, but spread over claims to several partitions at once.
    fill: Mutex<f64>,
    /// How the next partition is chosen by queue; `None` for [`QueueOrder::RoundRobin`], which
    /// the fetcher loop does with a cursor of its own.
    picker: Option<Mutex<QueuePicker>>,
}

/// The partition pick of a worker with [`QueueOrder::Weighted`] or [`QueueOrder::Strict`].
///
/// Weighted is stride scheduling on the tasks claimed: each queue has a virtual time `pass`
/// that a claim advances by `tasks / weight`; the next claim goes to the queue with ready work
/// whose `pass` is lowest, so over any stretch where several queues have ready work their claimed
/// tasks are in proportion to their weights, whatever the claims' sizes. A claim is charged the
/// tasks it asks for when it is sent, and refunded those it did not get when it returns. A
/// queue's `pass` is raised to `vtime` (the `pass` of the last pick) when it is picked or
/// compared: a queue that had no ready work for a while gets no credit for it, and does not
/// take every claim when its work comes back.
#[derive(Debug)]
pub(crate) struct QueuePicker {
    /// In priority order for strict ([`crate::WorkerConfig::queues`]).
    queues: Vec<PickQueue>,
    /// The queue of each partition.
    queue_of: Vec<usize>,
    /// `true`: strict priority; `false`: weighted.
    strict: bool,
    /// The `pass` of the last weighted pick, before its charge.
    vtime: f64,
}

/// One queue of a [`QueuePicker`].
#[derive(Debug)]
struct PickQueue {
    /// Its partitions' indices.
    parts: Vec<usize>,
    /// The next of `parts` to look at: its partitions are claimed from in turn.
    cursor: usize,
    /// `1 / weight` (strict: unused).
    stride: f64,
    /// Virtual time: tasks charged times `stride`.
    pass: f64,
}

impl QueuePicker {
    /// The picker of `order` for partitions of `queues` (`partitions`: the queue of each);
    /// `None` for round-robin.
    pub(crate) fn new<'a>(
        order: &QueueOrder,
        queues: &[String],
        partitions: impl ExactSizeIterator<Item = &'a str>,
    ) -> Option<Self> {
        let weights: Vec<u32> = match order {
            QueueOrder::RoundRobin => return None,
            QueueOrder::Weighted(w) => w.clone(),
            QueueOrder::Strict => vec![1; queues.len()],
        };
        let mut picker = Self {
            queues: weights
                .iter()
                .map(|&w| PickQueue {
                    parts: Vec::new(),
                    cursor: 0,
                    stride: 1.0 / f64::from(w.max(1)),
                    pass: 0.0,
                })
                .collect(),
            queue_of: Vec::with_capacity(partitions.len()),
            strict: matches!(order, QueueOrder::Strict),
            vtime: 0.0,
        };
        for (idx, p) in partitions.enumerate() {
            // `validate` checked that the weights match the queues, which the partitions
            // come from.
            let q = queues.iter().position(|q| q == p).unwrap_or(0);
            picker.queues[q].parts.push(idx);
            picker.queue_of.push(q);
        }
        Some(picker)
    }

    /// The next partition to claim `want` tasks from among those `eligible` says may have
    /// work, charged for them; `None` when none is eligible.
    pub(crate) fn pick(&mut self, want: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for qi in 0..self.queues.len() {
            let q = &mut self.queues[qi];
            let n = q.parts.len();
            let Some(k) = (0..n)
                .map(|k| (q.cursor + k) % n)
                .find(|&k| eligible(q.parts[k]))
            else {
                continue;
            };
            if self.strict {
                q.cursor = (k + 1) % n;
                return Some(q.parts[k]);
            }
            q.pass = q.pass.max(self.vtime);
            let pass = q.pass;
            if best.is_none_or(|(b, _)| pass < self.queues[b].pass) {
                best = Some((qi, k));
            }
        }
        let (qi, k) = best?;
        let q = &mut self.queues[qi];
        q.cursor = (k + 1) % q.parts.len();
        self.vtime = q.pass;
        q.pass += want as f64 * q.stride;
        Some(q.parts[k])
    }

    /// A claim on partition `idx` got `missing` tasks fewer than it was charged for.
    pub(crate) fn refund(&mut self, idx: usize, missing: usize) {
        if self.strict || missing == 0 {
            return;
        }
        let q = &mut self.queues[self.queue_of[idx]];
        q.pass -= missing as f64 * q.stride;
    }
}

impl Intake {
    /// The intake of a worker: `slots` holds one permit per task that may run at once; each
    /// executor keeps its permit until its outcome is handed to the acker.
    pub(crate) fn new(
        params: Arc<FetcherParams>,
        slots: Arc<Semaphore>,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        let batch = params.claim_batch.max(1);
        let budget = budget_of(&params);
        Arc::new(Self {
            budget: Arc::new(Semaphore::new(budget)),
            seq: AtomicU64::new(0),
            slots,
            executors: tracker,
            pause: Mutex::new(Pause {
                until: None,
                next: FIRST_PAUSE,
            }),
            in_flight: AtomicUsize::new(0),
            claim_done: Notify::new(),
            hand: Arc::new(Hand::default()),
            rtt: Mutex::new(None),
            fill: Mutex::new(batch as f64 / 2.0),
            picker: QueuePicker::new(
                &params.queue_order,
                &params.queues,
                params.partitions.iter().map(|p| p.queue.as_str()),
            )
            .map(Mutex::new),
            params,
        })
    }

    /// The tag of a new claim, `<worker id>#<claim number>`, recorded as its tasks' `worker`: it
    /// finds them again if the reply is lost.
    pub(crate) fn next_tag(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}#{seq}", self.params.worker_id)
    }

    /// Permits for at most `max` tasks the promoter may lease to this worker as it promotes them:
    /// as many as there are execution slots that no task received is using or waiting for (no
    /// prefetch beyond the concurrency: tasks no slot is free for go to the ready set, where any
    /// worker can claim them), within the prefetch budget. Permits the fetcher holds for a claim
    /// it has not sent yet do not count: it is waiting for work, which this is. `None` when there
    /// is no room or intake has stopped.
    pub(crate) fn reserve(&self, max: usize) -> Option<OwnedSemaphorePermit> {
        if self.params.stop_intake.is_cancelled() {
            return None;
        }
        let held = self.hand.held.load(Ordering::Acquire);
        let room = self
            .params
            .concurrency
            .max(1)
            .saturating_sub(held)
            .min(max)
            .min(self.budget.available_permits());
        if room == 0 {
            return None;
        }
        Arc::clone(&self.budget)
            .try_acquire_many_owned(room as u32)
            .ok()
    }

    /// Hands tasks leased from partition `idx` (by a claim or by the promoter) to executors, one
    /// permit of `permit` each; the permits of tasks not received go back when it is dropped.
    pub(crate) fn deliver(
        &self,
        idx: usize,
        tasks: Vec<Claimed>,
        server_now_ms: i64,
        permit: &mut OwnedSemaphorePermit,
    ) {
        let params = &self.params;
        let p = &params.partitions[idx];
        Counters::add(&params.counters.claimed, tasks.len() as u64);
        let concurrency = params.concurrency.max(1);
        let held = self.hand.held.fetch_add(tasks.len(), Ordering::AcqRel) + tasks.len();
        params
            .counters
            .prefetch_peak
            .fetch_max(held.saturating_sub(concurrency) as u64, Ordering::Relaxed);
        crate::metrics::claimed(&p.queue, tasks.len() as u64);
        for task in tasks {
            let one = Held {
                _permit: permit.split(1).expect("one permit per claimed task"),
                hand: Arc::clone(&self.hand),
            };
            let key = (idx, task.id.clone());
            let token = task.token;
            let cancel = CancellationToken::new();
            // Insert under the lock before the executor can look for its own entry.
            let mut inflight = params.inflight.lock().expect("inflight poisoned");
            let handle = self.executors.spawn(executor::execute(
                Arc::clone(&params.executor),
                idx,
                task,
                server_now_ms,
                executor::Permits {
                    hand: one,
                    slots: Arc::clone(&self.slots),
                },
                cancel.clone(),
            ));
            inflight.insert(
                key,
                Inflight {
                    token,
                    abort: handle.abort_handle(),
                    cancel,
                },
            );
        }
    }

    /// After a lease call (claim or promote) failed: it may have run and only its reply been
    /// lost, so its tasks are handed back now instead of after their lease.
    pub(crate) fn release_lost(&self, idx: usize, tag: String) {
        tokio::spawn(release_lost_claim(Arc::clone(&self.params), idx, tag));
    }
}

/// Tasks in hand at most: `concurrency × (1 + prefetch_multiplier)`.
fn budget_of(params: &FetcherParams) -> usize {
    params
        .concurrency
        .max(1)
        .saturating_mul(params.prefetch_multiplier.saturating_add(1))
        .min(Semaphore::MAX_PERMITS)
}

/// Runs until intake stops, then waits for its claims in flight.
pub(crate) async fn run(ctx: Arc<Intake>) {
    let params = Arc::clone(&ctx.params);
    let n = params.partitions.len();
    let batch = params.claim_batch.max(1);
    let concurrency = params.concurrency.max(1);
    let budget = budget_of(&params);
    let budget_sem = Arc::clone(&ctx.budget);
    let cap = budget - concurrency.min(budget);
    let initial = concurrency.min(batch).min(cap);
    let mut rate = Rate {
        ewma: None,
        last: Instant::now(),
        last_left: 0,
    };
    let claims = TaskTracker::new();
    let mut cursor = 0usize;
    let mut last_extra = initial;
    'fetch: loop {
        // Room: the adaptive target of tasks in hand (claimed in flight, waiting or running)
        // minus those in hand. A claim asks for up to twice the tasks claims have been getting
        // (`fill`); it is sent for one task at least when no claim is in flight, otherwise for a
        // quarter batch at least (less when claims get fewer), so that tasks finishing one by
        // one do not turn into a stream of tiny claims.
        let permit = loop {
            rate.sample(ctx.hand.left.load(Ordering::Acquire), Instant::now());
            let rtt = *ctx.rtt.lock().expect("rtt poisoned");
            let extra = target_extra(rate.ewma, rtt, initial, cap);
            if extra != last_extra {
                tracing::trace!(extra, rate = ?rate.ewma, rtt = ?rtt, "prefetch target");
                last_extra = extra;
            }
            let allowed = (concurrency + extra).min(budget);
            let in_hand = budget - budget_sem.available_permits();
            let room = allowed.saturating_sub(in_hand);
            let fill = *ctx.fill.lock().expect("fill poisoned");
            let ask = ((2.0 * fill).ceil() as usize).clamp(1, batch);
            let min = if ctx.in_flight.load(Ordering::Acquire) == 0 {
                1
            } else {
                (batch / 4).min(ask).clamp(1, allowed)
            };
            if room >= min {
                // `room` of them are free, unless the promoter took some meanwhile.
                match Arc::clone(&budget_sem).try_acquire_many_owned(room.min(ask) as u32) {
                    Ok(p) => break p,
                    Err(tokio::sync::TryAcquireError::Closed) => break 'fetch,
                    Err(tokio::sync::TryAcquireError::NoPermits) => {}
                }
            }
            tokio::select! {
                () = params.stop_intake.cancelled() => break 'fetch,
                () = ctx.hand.freed.notified() => {}
                () = ctx.claim_done.notified() => {}
                () = tokio::time::sleep(REEVALUATE) => {}
            }
        };
        let until = ctx.pause.lock().expect("pause poisoned").until;
        if let Some(until) = until {
            tokio::select! {
                () = params.stop_intake.cancelled() => break 'fetch,
                () = tokio::time::sleep_until(until) => {}
            }
        }
        // Find a partition that may have work, round-robin so no partition starves, or by
        // queue (weights, strict priority). A paused one keeps its flag for when it is resumed.
        let idx = loop {
            let eligible = |i: usize| {
                params.ready.flags[i].load(Ordering::Acquire) && !params.ready.is_paused(i)
            };
            if let Some(picker) = &ctx.picker {
                let want = permit.num_permits();
                let found = picker.lock().expect("picker poisoned").pick(want, eligible);
                if let Some(i) = found {
                    break i;
                }
            } else if let Some(i) = (0..n).map(|k| (cursor + k) % n).find(|&i| eligible(i)) {
                cursor = (i + 1) % n;
                break i;
            }
            tokio::select! {
                () = params.stop_intake.cancelled() => break 'fetch,
                () = params.ready.notify.notified() => {}
            }
        };
        // Clear before claiming: a notification that arrives during the claim sets it again.
        // While this claim is in flight, no other claim goes to this partition unless a
        // notification flags it again.
        // Intake may have stopped while a permit was at hand (a stop hands the waiting tasks
        // back, which frees permits and flags their partitions): no claim after that.
        if params.stop_intake.is_cancelled() {
            break 'fetch;
        }
        params.ready.flags[idx].store(false, Ordering::Release);
        ctx.in_flight.fetch_add(1, Ordering::AcqRel);
        claims.spawn(claim(Arc::clone(&ctx), idx, permit));
    }
    // A claim's reply carries leased tasks: let the claims in flight finish (their tasks are
    // handed back at once, as intake has stopped), but not for longer than CLAIM_DRAIN: a claim
    // sent to a node that died can hang far longer (a Redis Cluster client retries a dead node
    // for tens of seconds), and what it leased comes back after its lease anyway.
    claims.close();
    if tokio::time::timeout(CLAIM_DRAIN, claims.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = ctx.in_flight.load(Ordering::Acquire),
            "claims still unanswered at shutdown; what they leased runs again after its lease"
        );
    }
}

/// Longest a claim may go unanswered before it is treated as failed.
const CLAIM_LIMIT: Duration = Duration::from_secs(5);

/// How long a stopping fetcher waits for its claims in flight.
const CLAIM_DRAIN: Duration = Duration::from_secs(2);

/// One claim of as many tasks as `permit` holds, from partition `idx`.
async fn claim(ctx: Arc<Intake>, idx: usize, mut permit: OwnedSemaphorePermit) {
    let params = &ctx.params;
    let want = permit.num_permits();
    let p = &params.partitions[idx];
    let lease_ms = params.lease.as_millis() as u64;
    let tag = ctx.next_tag();
    let sent = Instant::now();
    let span = scheduler_core::trace::claim_span(&p.queue, p.shard);
    // A claim sent to a node that died can hang for tens of seconds (a Redis Cluster client
    // retrying it), and its partition is not claimed from again meanwhile: give it up after
    // CLAIM_LIMIT like a failed claim (its tasks, if it ran, are handed back by tag).
    let claimed = match tokio::time::timeout(
        CLAIM_LIMIT,
        tracing::Instrument::instrument(
            params.store.claim(p, want as u32, lease_ms, &tag),
            span.clone(),
        ),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(scheduler_core::Error::from(redis::RedisError::from((
            redis::ErrorKind::Io,
            "claim unanswered for 5 s",
        )))),
    };
    match claimed {
        Ok(claim) => {
            scheduler_core::trace::record_count(&span, claim.tasks.len());
            crate::trace::link_producers(&span, &claim.tasks);
            {
                let took = sent.elapsed().as_secs_f64();
                let mut rtt = ctx.rtt.lock().expect("rtt poisoned");
                *rtt = Some(rtt.map_or(took, |r| r + RTT_ALPHA * (took - r)));
                let mut fill = ctx.fill.lock().expect("fill poisoned");
                *fill += FILL_ALPHA * (claim.tasks.len() as f64 - *fill);
            }
            if claim.expired > 0 {
                Counters::add(&params.counters.expired, u64::from(claim.expired));
                crate::metrics::count(crate::metrics::EXPIRED, &p.queue, u64::from(claim.expired));
            }
            if claim.corrupt > 0 {
                tracing::warn!(queue = %p.queue, shard = p.shard, corrupt = claim.corrupt, "claim found unreadable task records and moved them to the dead set");
            }
            {
                let mut pause = ctx.pause.lock().expect("pause poisoned");
                pause.until = None;
                pause.next = FIRST_PAUSE;
            }
            if claim.popped as usize >= want {
                // A full batch: there may be more.
                params.ready.mark(idx);
            }
            if let Some(picker) = &ctx.picker {
                let missing = want.saturating_sub(claim.tasks.len());
                picker.lock().expect("picker poisoned").refund(idx, missing);
            }
            ctx.deliver(idx, claim.tasks, claim.server_now_ms, &mut permit);
        }
        Err(e) => {
            if let Some(picker) = &ctx.picker {
                picker.lock().expect("picker poisoned").refund(idx, want);
            }
            {
                let mut pause = ctx.pause.lock().expect("pause poisoned");
                pause.until = Some(Instant::now() + pause.next);
                pause.next = (pause.next * 2).min(Duration::from_secs(5));
            }
            params.ready.mark(idx);
            tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, "claim failed; backing off");
            ctx.release_lost(idx, tag);
        }
    }
    // The permits of tasks not received go back now.
    drop(permit);
    ctx.in_flight.fetch_sub(1, Ordering::AcqRel);
    ctx.claim_done.notify_one();
}

/// Leases examined when looking for the tasks of a lost claim.
const LOST_CLAIM_SCAN: u32 = 10_000;

/// Hands back the tasks a failed claim took, if it ran (`release_claim.lua`); retried through a
/// Redis restart, given up at shutdown. Left alone, they would run after their lease.
async fn release_lost_claim(params: Arc<FetcherParams>, idx: usize, tag: String) {
    let p = &params.partitions[idx];
    let released = tokio::select! {
        () = params.stop_all.cancelled() => return,
        r = retry_transient(params.release_attempts, || params.store.release_claim(p, &tag, LOST_CLAIM_SCAN)) => r,
    };
    match released {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(queue = %p.queue, shard = p.shard, tag, released = n, "handed back the tasks of a claim whose reply was lost");
        }
        Err(e) => {
            tracing::warn!(error = %e, queue = %p.queue, shard = p.shard, tag, "could not hand back the tasks of a lost claim; they run again after their lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(names: &[&str]) -> Vec<String> {
        names.iter().map(|q| (*q).to_owned()).collect()
    }

    /// Two partitions per queue: a, a, b, b, c, c.
    const PARTS: [&str; 6] = ["a", "a", "b", "b", "c", "c"];

    /// Weighted, every queue with work: the tasks charged are in proportion to the weights,
    /// whatever the claims' sizes, and each queue's partitions are used in turn.
    #[test]
    fn weighted_shares_follow_the_weights() {
        let mut p = QueuePicker::new(
            &QueueOrder::Weighted(vec![6, 3, 1]),
            &queues(&["a", "b", "c"]),
            PARTS.iter().copied(),
        )
        .unwrap();
        let mut tasks = [0usize; 3];
        let mut parts = [0usize; 6];
        for i in 0..1000 {
            let want = 1 + i % 7;
            let idx = p.pick(want, |_| true).unwrap();
            tasks[idx / 2] += want;
            parts[idx] += 1;
        }
        let total: usize = tasks.iter().sum();
        let share = |q: usize| tasks[q] as f64 / total as f64;
        assert!((share(0) - 0.6).abs() < 0.01, "{tasks:?}");
        assert!((share(1) - 0.3).abs() < 0.01, "{tasks:?}");
        assert!((share(2) - 0.1).abs() < 0.01, "{tasks:?}");
        for q in 0..3 {
            assert!(parts[2 * q].abs_diff(parts[2 * q + 1]) <= 1, "{parts:?}");
        }
    }

    /// A queue with no work leaves its share to the others and gets no credit for it: when its
    /// work comes back it gets its share again, not every claim. A refund makes up for tasks a
    /// claim did not get.
    #[test]
    fn an_idle_queue_gets_no_credit() {
        let mut p = QueuePicker::new(
            &QueueOrder::Weighted(vec![1, 1, 1]),
            &queues(&["a", "b", "c"]),
            PARTS.iter().copied(),
        )
        .unwrap();
        for _ in 0..300 {
            let idx = p.pick(10, |i| i >= 2).unwrap();
            assert!(idx >= 2);
        }
        let mut picks = [0usize; 3];
        for _ in 0..30 {
            picks[p.pick(10, |_| true).unwrap() / 2] += 1;
        }
        assert!(picks.iter().all(|&n| (9..=11).contains(&n)), "{picks:?}");
        // `a` asked for 10 and got 0 each time: refunded, it is picked again at once.
        let idx = p.pick(10, |_| true).unwrap();
        p.refund(idx, 10);
        assert_eq!(p.pick(10, |_| true).unwrap() / 2, idx / 2);
        assert_eq!(p.pick(10, |_| false), None);
    }

    /// Strict: the first queue with work, always; its partitions in turn.
    #[test]
    fn strict_takes_the_first_queue_with_work() {
        let mut p = QueuePicker::new(
            &QueueOrder::Strict,
            &queues(&["a", "b", "c"]),
            PARTS.iter().copied(),
        )
        .unwrap();
        assert_eq!(p.pick(5, |_| true), Some(0));
        assert_eq!(p.pick(5, |_| true), Some(1));
        assert_eq!(p.pick(5, |_| true), Some(0));
        assert_eq!(p.pick(5, |i| i >= 3), Some(3));
        assert_eq!(p.pick(5, |i| i == 5), Some(5));
        assert!(QueuePicker::new(&QueueOrder::RoundRobin, &[], PARTS.iter().copied()).is_none());
    }
}
