//! The executor: runs one claimed task with its time limit, catches panics, decides what the
//! outcome means (ack, retry after a delay, bury) and hands it to the acker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use scheduler_core::headers::Headers;
use scheduler_core::scripts::Claimed;
use scheduler_core::store::Partition;
use scheduler_core::StateMap;
use scheduler_core::{TaskContext, TaskErrorKind, TaskId};
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::messages::{AckMsg, Completion, Verdict};
use crate::registry::Registry;
use crate::registry::RunError;
use crate::shared::{Counters, InflightMap};

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
    /// Receives the outcomes.
    pub(crate) acker_tx: mpsc::UnboundedSender<AckMsg>,
    /// A prefetched task not started when intake stops is handed back.
    pub(crate) stop_intake: CancellationToken,
    /// [`crate::WorkerConfig::cancel_grace`].
    pub(crate) cancel_grace: Duration,
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
        report(&params, idx, task.id, task.token, Verdict::Release);
        return;
    };
    // Saturating: a corrupted record can carry any due time (a `nan` run_at reads as i64::MIN).
    let lateness_ms = claimed_at_ms.saturating_sub(task.due_ms);
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
    crate::trace::follow(&span, &headers, params.trace_mode);
    crate::metrics::started(&p.queue, lateness_ms);
    let t0 = std::time::Instant::now();
    let (verdict, outcome) = run(&params, idx, &task, claimed_at_ms, &cancel, headers)
        .instrument(span.clone())
        .await;
    crate::metrics::finished(&p.queue, &task.name, outcome, t0.elapsed());
    span.in_scope(|| match &verdict {
        Verdict::Ack(_) => tracing::debug!(lateness_ms, "succeeded"),
        Verdict::Retry(err, delay) => tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "failed; will retry if attempts remain"),
        Verdict::Dead(err) => tracing::warn!(error = %err, "failed; not retryable"),
        Verdict::Release => {}
        Verdict::Cancel(how) => tracing::info!(how = %how, "cancelled while running"),
    });
    scheduler_core::trace::record_outcome(&span, outcome);
    report(&params, idx, task.id, task.token, verdict);
    drop(slot);
    drop(permits.hand);
}

/// Hands `verdict` to the acker, unless a shutdown that hands tasks back took this task first:
/// exactly one of the two acts on it, whoever removes the in-flight entry.
fn report(params: &ExecutorParams, idx: usize, id: String, token: i64, verdict: Verdict) {
    let mine = params
        .inflight
        .lock()
        .expect("inflight poisoned")
        .remove(&(idx, id.clone()))
        .is_some();
    if mine {
        let _ = params.acker_tx.send(AckMsg::Done(Completion {
            idx,
            id,
            token,
            verdict,
        }));
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

/// Runs the task; the verdict for the store and the outcome label for metrics.
async fn run(
    params: &ExecutorParams,
    idx: usize,
    task: &Claimed,
    claimed_at_ms: i64,
    cancel: &CancellationToken,
    headers: Headers,
) -> (Verdict, &'static str) {
    let p = &params.partitions[idx];
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
    let ctx = TaskContext::new(
        TaskId::new(&p.queue, &task.id),
        task.attempt,
        task.max_retries,
        task.due_ms,
        Arc::clone(&params.state),
    )
    .with_claimed_at(claimed_at_ms)
    .with_cancellation(cancel.clone())
    .with_headers(headers);
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
    // The retry this would be: runs lost with their worker use up no retry (see reap.lua).
    let backoff = || {
        params
            .backoff
            .delay(task.attempt.saturating_sub(task.lost).max(1))
    };
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
        Ok(Ok(Err(RunError::Task(e)))) => match e.kind() {
            TaskErrorKind::RetryAfter(d) => (Verdict::Retry(e.message().to_owned(), d), "failure"),
            TaskErrorKind::Fail => (Verdict::Dead(e.message().to_owned()), "fatal"),
            _ => (Verdict::Retry(e.message().to_owned(), backoff()), "failure"),
        },
        Ok(Err(panic)) => {
            crate::shared::Counters::add(&params.counters.panicked, 1);
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            (
                Verdict::Retry(format!("panicked: {msg}"), backoff()),
                "panic",
            )
        }
        Err(_) => {
            crate::shared::Counters::add(&params.counters.timed_out, 1);
            (
                Verdict::Retry(format!("timed out after {limit:?}"), backoff()),
                "timeout",
            )
        }
    }
}
