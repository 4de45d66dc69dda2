//! The executor: runs one claimed task with its time limit, catches panics, decides what the
//! outcome means (ack, retry after a delay, bury) and hands it to the acker; with middleware
//! registered, calls its hooks around the run.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use scheduler_core::headers::Headers;
use scheduler_core::scripts::Claimed;
use scheduler_core::store::Partition;
use scheduler_core::task::LeaseStore;
use scheduler_core::workflow::WORKFLOW_HEADER;
use scheduler_core::StateMap;
use scheduler_core::{TaskContext, TaskError, TaskErrorKind, TaskId};
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::limiter::{Gate, Limiter};
use crate::messages::{AckMsg, Completion, Verdict};
use crate::middleware::{self, DeadHook, RunOutcome};
use crate::registry::Registry;
use crate::registry::RunError;
use crate::shared::{Counters, InflightMap};
use crate::trace::RunLink;

/// What an executor uses.
pub(crate) struct ExecutorParams {
    pub(crate) partitions: Arc<[Partition]>,
    /// Named in the error for a task no handler is registered for.
    pub(crate) worker_id: String,
    pub(crate) registry: Registry,
    /// The shared state tasks reach with `ctx.state::<T>()`.
    pub(crate) state: Arc<StateMap>,
    /// [`crate::WorkerConfig::max_payload_bytes`].
    pub(crate) max_payload_bytes: usize,
    /// [`crate::WorkerConfig::trace_mode`].
    pub(crate) trace_mode: crate::trace::TraceMode,
    /// [`crate::WorkerConfig::backoff`]: the delay before a retry.
    pub(crate) backoff: Backoff,
    /// Where a run's entry lives while it runs; removed before its outcome is reported.
    pub(crate) inflight: Arc<InflightMap>,
    /// Counts panics and timeouts.
    pub(crate) counters: Arc<Counters>,
    /// Where runs write their progress (`ctx.progress`), shared by every run.
    pub(crate) lease_store: Arc<LeaseStore>,
    /// [`crate::WorkerBuilder::middleware`]: hooks around each run; empty for most workers.
    pub(crate) middleware: middleware::Stack,
    /// Receives the outcomes.
    pub(crate) acker_tx: mpsc::UnboundedSender<AckMsg>,
    /// A prefetched task not started when intake stops is handed back.
    pub(crate) stop_intake: CancellationToken,
    /// [`crate::WorkerConfig::cancel_grace`].
    pub(crate) cancel_grace: Duration,
    /// Task events (`started`), for queues with events on.
    pub(crate) events: crate::events::Sink,
    /// Flow-control limits: the gate a limited task passes before it runs.
    pub(crate) limiter: Arc<Limiter>,
    /// How late runs started, per queue, for the heartbeat.
    pub(crate) lateness: Arc<crate::shared::Lateness>,
    /// Records workflow members' outcomes ([`workflow_step`]).
    pub(crate) client: scheduler_core::Client,
}

/// What a claimed task needs to run: its place in the fetcher's hand (a permit of the prefetch
/// budget, counted as a completion by the adaptive prefetch when given back), held until its
/// outcome is handed to the acker, and the execution slots, one of which it waits for.
#[derive(Debug)]
pub(crate) struct Permits {
    pub(crate) hand: crate::fetcher::Held,
    pub(crate) slots: Arc<Semaphore>,
}

pub(crate) async fn execute(
    params: Arc<ExecutorParams>,
    idx: usize,
    task: Claimed,
    claimed_at_ms: i64,
    permits: Permits,
    cancel: CancellationToken,
) {
    // Should this function itself panic (not the handler: its panics are caught below), the
    // task must not stay in flight forever with its lease renewed: it is dropped from the
    // in-flight map, so its lease runs out and the reaper retries or buries it.
    let _unwind = UnwindGuard {
        params: &params,
        key: (idx, task.id.clone()),
        token: task.token,
    };
    let p = &params.partitions[idx];
    // A prefetched task waits here for a free slot (its lease is renewed meanwhile). If intake
    // stops first, it has not started: it is handed back at once, its attempt not counted.
    let slot = tokio::select! {
        biased;
        () = params.stop_intake.cancelled() => None,
        s = Arc::clone(&permits.slots).acquire_owned() => s.ok(),
    };
    let Some(slot) = slot else {
        hand_back(&params, idx, task);
        return;
    };
    let span = scheduler_core::trace::run_span(&p.queue, &task.id, &task.name, task.attempt);
    // Headers: none for most tasks (nothing decoded); unreadable ones (a hand edit) are dropped.
    let headers = if task.headers.is_empty() {
        Headers::new()
    } else {
        scheduler_core::headers::decode(&task.headers).unwrap_or_else(|e| {
            span.in_scope(|| tracing::warn!(error = %e, "unreadable headers ignored"));
            Headers::new()
        })
    };
    // Flow-control limits: a task none applies to passes with one look at the table. A limited
    // task's claim time is when its limits let it start.
    let budgets = params.limiter.budgets(p, &task, &headers);
    let mut claimed_at_ms = claimed_at_ms;
    let held = if budgets.is_empty() {
        None
    } else {
        match params.limiter.acquire(p, &task, budgets).await {
            Ok(Gate::Run(held, granted_at)) => {
                claimed_at_ms = claimed_at_ms.max(granted_at);
                Some(held)
            }
            Ok(Gate::Wait(budget, until)) => {
                crate::metrics::limited(&p.queue);
                if budget.limit.max_concurrency().is_some() {
                    park(&params, idx, &task, &budget, until).await;
                } else {
                    // A rate limit: parked with the batch's other outcomes, one call per
                    // partition.
                    report(
                        &params,
                        Completion {
                            idx,
                            id: task.id,
                            token: task.token,
                            attempt: task.attempt,
                            verdict: Verdict::Park(until, budget.label),
                            dead_hook: None,
                            run: RunLink::default(),
                        },
                    );
                }
                return;
            }
            Err(e) => {
                span.in_scope(|| tracing::warn!(error = %e, "could not check the task's limits; handing it back"));
                hand_back(&params, idx, task);
                return;
            }
        }
    };
    // Saturating: a corrupted record can carry any due time (a `nan` run_at reads as i64::MIN).
    let lateness_ms = claimed_at_ms.saturating_sub(task.due_ms);
    crate::trace::follow(&span, &headers, params.trace_mode);
    // A workflow member (docs/workflows.md); a task without headers looks up nothing.
    let workflow = headers.get(WORKFLOW_HEADER).cloned();
    crate::metrics::started(&p.queue, lateness_ms);
    params.lateness.record(idx, lateness_ms);
    // Published before the handler starts, so that its `progress` events (published by
    // progress.lua) come after it.
    params
        .events
        .started(&p.queue, &task.id, task.attempt)
        .await;
    let t0 = std::time::Instant::now();
    let ctx = TaskContext::new(
        TaskId::new(&p.queue, &task.id),
        task.attempt,
        task.max_retries,
        task.due_ms,
        Arc::clone(&params.state),
    )
    .with_claimed_at(claimed_at_ms)
    .with_cancellation(cancel.clone())
    .with_headers(headers)
    .with_lease(Arc::clone(&params.lease_store), idx, task.token);
    // Without middleware (the usual case) the run costs this one check of an empty list.
    let (verdict, outcome, dead_hook) = if params.middleware.is_empty() {
        let (v, o) = run(&params, &task, ctx, &cancel)
            .instrument(span.clone())
            .await;
        (v, o, None)
    } else {
        run_wrapped(&params, &task, ctx, &cancel)
            .instrument(span.clone())
            .await
    };
    let verdict = match workflow {
        None => verdict,
        Some(h) => {
            workflow_step(&params, &task, &h, verdict)
                .instrument(span.clone())
                .await
        }
    };
    crate::metrics::finished(&p.queue, &task.name, outcome, t0.elapsed());
    span.in_scope(|| match &verdict {
        Verdict::Ack(_) => tracing::debug!(lateness_ms, "succeeded"),
        Verdict::Retry(err, delay) => tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "failed; will retry if attempts remain"),
        Verdict::Dead(err) => tracing::warn!(error = %err, "failed; not retryable"),
        Verdict::Release | Verdict::Park(..) => {}
        Verdict::Cancel(how) => tracing::info!(how = %how, "cancelled while running"),
    });
    scheduler_core::trace::record_outcome(&span, outcome);
    if let Some(held) = held {
        params.limiter.release(held).await;
    }
    report(
        &params,
        Completion {
            idx,
            id: task.id,
            token: task.token,
            attempt: task.attempt,
            verdict,
            dead_hook,
            run: RunLink::of(&span),
        },
    );
    drop(slot);
    drop(permits.hand);
}

/// A concurrency limit did not let `task` start: it waits again in its partition until `until`
/// (server time, unix ms, the wake-up of last resort), its attempt not counted, then joins the
/// budget's waiters, after the park so that no release can miss it. The in-flight entry is ours
/// unless a shutdown took it first (then the shutdown hands it back). Should the park fail, the
/// lease runs out and the reaper hands the task back.
async fn park(
    params: &ExecutorParams,
    idx: usize,
    task: &Claimed,
    budget: &scheduler_core::limits::Budget,
    until: i64,
) {
    let mine = params
        .inflight
        .lock()
        .expect("inflight poisoned")
        .remove(&(idx, task.id.clone()))
        .is_some();
    if !mine {
        return;
    }
    let p = &params.partitions[idx];
    match params
        .limiter
        .store()
        .limit_park(p, &[(&task.id, task.token, until, &budget.label)])
        .await
    {
        Ok(o) if o == [scheduler_core::scripts::Outcome::Done] => {
            params.limiter.wait_for_slot(budget, p, task).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(id = %task.id, error = %e, "could not put a task held back by a limit back to wait; its lease will run out and it will be handed back");
        }
    }
}

/// A workflow member's outcome recorded in its workflow, and what follows done (the next stage
/// released, or the rest cancelled), before its verdict is written: a worker killed in between
/// leaves the member unacknowledged, so it runs again and repeats these idempotent steps
/// (docs/workflows.md). Only a final outcome counts: a success, or a failure after which the
/// task will not run again (a retry with no attempts left is one; the sweep records those this
/// misjudges). A success that could not be recorded is handed back to run again.
async fn workflow_step(
    params: &ExecutorParams,
    task: &Claimed,
    header: &str,
    verdict: Verdict,
) -> Verdict {
    let outcome = match &verdict {
        Verdict::Ack(r) => Ok(&r[..]),
        Verdict::Dead(e) | Verdict::Cancel(e) => Err(e.as_str()),
        Verdict::Retry(e, _) if task.attempt.saturating_sub(task.lost) > task.max_retries => {
            Err(e.as_str())
        }
        _ => return verdict,
    };
    match params
        .client
        .workflow_member_finished(header, outcome)
        .await
    {
        Ok(()) => verdict,
        Err(e) if matches!(verdict, Verdict::Ack(_)) => {
            tracing::warn!(error = %e, "could not record the workflow member's success; handed back to run again");
            Verdict::Release
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not record the workflow member's failure; the workflow sweep will");
            verdict
        }
    }
}

/// Hands `task` back unstarted, its attempt not counted (intake stopped, or its limits could
/// not be checked).
fn hand_back(params: &ExecutorParams, idx: usize, task: Claimed) {
    report(
        params,
        Completion {
            idx,
            id: task.id,
            token: task.token,
            attempt: task.attempt,
            verdict: Verdict::Release,
            dead_hook: None,
            run: RunLink::default(),
        },
    );
}

/// Hands a run's outcome to the acker, unless a shutdown that hands tasks back took this task first:
/// exactly one of the two acts on it, whoever removes the in-flight entry.
fn report(params: &ExecutorParams, c: Completion) {
    let mine = params
        .inflight
        .lock()
        .expect("inflight poisoned")
        .remove(&(c.idx, c.id.clone()))
        .is_some();
    if mine {
        let _ = params.acker_tx.send(AckMsg::Done(c));
    }
}

/// Removes the task's in-flight entry (if it is still ours) when [`execute`] unwinds.
struct UnwindGuard<'a> {
    params: &'a ExecutorParams,
    key: (usize, String),
    token: i64,
}

impl Drop for UnwindGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut inflight) = self.params.inflight.lock() {
                if inflight
                    .get(&self.key)
                    .is_some_and(|f| f.token == self.token)
                {
                    inflight.remove(&self.key);
                }
            }
            tracing::error!(id = %self.key.1, "the executor panicked; the task's lease will run out and it will be retried");
        }
    }
}

/// Runs the task inside the worker's middleware ([`crate::middleware`]): every `before`, the
/// handler (unless a `before` refused), every `after`; for a failed run, what the acker needs to
/// call `on_dead` once Redis confirms that the task is dead.
async fn run_wrapped(
    params: &ExecutorParams,
    task: &Claimed,
    ctx: TaskContext,
    cancel: &CancellationToken,
) -> (Verdict, &'static str, Option<Box<DeadHook>>) {
    let stack = &params.middleware;
    let hooked = middleware::run(&task.name, &ctx);
    let (entered, refused) = stack.before(&hooked).await;
    let (verdict, outcome) = match refused {
        Some(e) => task_error_verdict(params, task, &e),
        None => run(params, task, ctx.clone(), cancel).await,
    };
    let seen = match &verdict {
        Verdict::Ack(r) => Some(RunOutcome::Succeeded { result: r }),
        Verdict::Retry(error, delay) => Some(RunOutcome::Retry {
            error,
            delay: *delay,
        }),
        Verdict::Dead(error) => Some(RunOutcome::Fail { error }),
        Verdict::Cancel(how) => Some(RunOutcome::Cancelled { how }),
        Verdict::Release | Verdict::Park(..) => None,
    };
    if let Some(seen) = seen {
        stack.after(entered, &hooked, &seen).await;
    }
    let started = hooked.started();
    let dead_hook =
        (entered > 0 && matches!(verdict, Verdict::Retry(..) | Verdict::Dead(_))).then(|| {
            Box::new(DeadHook {
                stack: stack.clone(),
                entered,
                name: task.name.clone(),
                started,
                ctx,
            })
        });
    (verdict, outcome, dead_hook)
}

/// The verdict and outcome label of a run that ended with `e`.
fn task_error_verdict(
    params: &ExecutorParams,
    task: &Claimed,
    e: &TaskError,
) -> (Verdict, &'static str) {
    match e.kind() {
        TaskErrorKind::RetryAfter(d) => (Verdict::Retry(e.message().to_owned(), d), "failure"),
        TaskErrorKind::Fail => (Verdict::Dead(e.message().to_owned()), "fatal"),
        _ => (
            Verdict::Retry(e.message().to_owned(), backoff(params, task)),
            "failure",
        ),
    }
}

/// The delay before the retry this run's failure would be: runs lost with their worker use up
/// no retry (see reap.lua).
fn backoff(params: &ExecutorParams, task: &Claimed) -> Duration {
    params
        .backoff
        .delay(task.attempt.saturating_sub(task.lost).max(1))
}

/// Runs the task; the verdict for the store and the outcome label for metrics.
async fn run(
    params: &ExecutorParams,
    task: &Claimed,
    ctx: TaskContext,
    cancel: &CancellationToken,
) -> (Verdict, &'static str) {
    if task.args.len() > params.max_payload_bytes {
        let msg = format!(
            "payload of {} bytes exceeds the worker's cap of {} bytes",
            task.args.len(),
            params.max_payload_bytes
        );
        return (Verdict::Dead(msg), "fatal");
    }
    let Some(handler) = params.registry.get(&task.name) else {
        let msg = format!(
            "unknown task name {:?}: no handler registered on worker {} (registered: {})",
            task.name,
            params.worker_id,
            params.registry.names().join(", ")
        );
        return (Verdict::Dead(msg), "fatal");
    };
    let limit = Duration::from_millis(task.timeout_ms.max(1));
    let fut = AssertUnwindSafe(handler.call(ctx, &task.args)).catch_unwind();
    // A cancellation request (the listener fires `cancel` on a `c:` message) gives the handler
    // `cancel_grace` to return; then the run is dropped, i.e. aborted at its next `.await`.
    let grace = params.cancel_grace;
    let aborted = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    let fut = async {
        tokio::select! {
            biased;
            r = tokio::time::timeout(limit, fut) => Some(r),
            () = aborted => None,
        }
    };
    let Some(done) = fut.await else {
        return (
            Verdict::Cancel(format!(
                "cancelled while running: aborted after a grace period of {grace:?}"
            )),
            "cancelled",
        );
    };
    // Anything but success after a cancellation request ends the task `cancelled`: the handler
    // stopped because it was told to (a success is kept: the work was done).
    if cancel.is_cancelled() && !matches!(done, Ok(Ok(Ok(_)))) {
        return (
            Verdict::Cancel("cancelled while running: the handler stopped".to_owned()),
            "cancelled",
        );
    }
    match done {
        // The result obeys the cap the arguments do: every size stored is one readers take.
        Ok(Ok(Ok(bytes))) if bytes.len() > params.max_payload_bytes => (
            Verdict::Dead(format!(
                "result of {} bytes exceeds the worker's cap of {} bytes",
                bytes.len(),
                params.max_payload_bytes
            )),
            "fatal",
        ),
        Ok(Ok(Ok(bytes))) => (Verdict::Ack(bytes), "success"),
        Ok(Ok(Err(RunError::Decode(e)))) => (
            Verdict::Dead(format!(
                "cannot decode the arguments of task {:?} ({} bytes): {e}",
                task.name,
                task.args.len()
            )),
            "fatal",
        ),
        Ok(Ok(Err(RunError::Encode(e)))) => (
            Verdict::Dead(format!(
                "cannot encode the result of task {:?}: {e}",
                task.name
            )),
            "fatal",
        ),
        Ok(Ok(Err(RunError::Task(e)))) => task_error_verdict(params, task, &e),
        Ok(Err(panic)) => {
            crate::shared::Counters::add(&params.counters.panicked, 1);
            let msg = middleware::text(&*panic);
            (
                Verdict::Retry(format!("panicked: {msg}"), backoff(params, task)),
                "panic",
            )
        }
        Err(_) => {
            crate::shared::Counters::add(&params.counters.timed_out, 1);
            (
                Verdict::Retry(format!("timed out after {limit:?}"), backoff(params, task)),
                "timeout",
            )
        }
    }
}
