//! Flow-control limits on the worker's side (`docs/flow-control.md`): the table of limits in
//! force, and the gate a claimed task passes before its handler runs.
//!
//! A task no limit applies to (the table is empty, or names neither its task name, its queue nor
//! a key family it carries) passes with one read of the table and no Redis command. A limited
//! task takes a start from each of its budgets (`limit_acquire.lua`, each budget in its own
//! slot; the tasks of one budget that reach the gate while a call for that budget is in flight
//! go together in the next call, so a burst of limited tasks costs one call per round trip, not
//! one per task); when one says no, what the others granted is given back, the task waits again
//! in its partition's scheduled set until the time the limit named (`limit_park.lua`, its
//! attempt not counted), and, for a concurrency limit, joins the budget's waiters
//! (`limit_wait.lua`), to be made due by the release that frees a slot (`limit_release.lua`,
//! `limit_wake.lua`). While it runs, its concurrency slots are renewed with its lease
//! (`limit_extend.lua`); when its run ends they are released. A worker that dies holds its slots
//! until their lease deadline passes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use scheduler_core::headers::Headers;
use scheduler_core::limits::{budgets_for, Budget, LimitTable};
use scheduler_core::scripts::Claimed;
use scheduler_core::store::{holder, waiter, Acquired, Partition, Store};
use scheduler_core::Error;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Most waiters one release looks through for a task still waiting (the others were cancelled
/// or started meanwhile).
const MAX_HANDOVER_TRIES: usize = 16;

/// Most tasks one `limit_acquire.lua` call takes starts for.
const MAX_ACQUIRE_BATCH: usize = 256;

/// The answer to one task's ask for a start of one budget; a failed call's error is shared by
/// every task of the call.
type Answer = Result<Acquired, Arc<Error>>;

/// One task's ask for a start of one budget, waiting for the budget's next call.
struct Ask {
    budget: Budget,
    holder: String,
    waiter: String,
    reply: oneshot::Sender<Answer>,
}

/// The limits in force and what the gate needs.
pub(crate) struct Limiter {
    store: Store,
    table: RwLock<Arc<LimitTable>>,
    /// [`crate::WorkerConfig::lease`]: how long a concurrency slot holds between renewals, and
    /// the longest a task denied one waits for a release before it looks again.
    lease: Duration,
    /// The asks for a start waiting, by budget digest; a budget present here has a call in
    /// flight (its sender takes the asks that came meanwhile when the call returns).
    asks: Mutex<HashMap<String, VecDeque<Ask>>>,
}

/// What the gate decided.
pub(crate) enum Gate {
    /// Run it: every budget granted a start (held until released), the last at this server
    /// time (unix ms): when the run may start, the claim time its context reports.
    Run(Held, i64),
    /// A budget said no: the task should wait until this server time (unix ms); the label names
    /// the limit.
    Wait(Budget, i64),
}

/// The starts a running task took: its concurrency slots are renewed until it is released.
pub(crate) struct Held {
    budgets: Vec<Budget>,
    holder: String,
    renew: CancellationToken,
}

impl Limiter {
    pub(crate) fn new(store: Store, lease: Duration) -> Self {
        Self {
            store,
            table: RwLock::new(Arc::default()),
            lease,
            asks: Mutex::default(),
        }
    }

    /// The store the limit scripts run on.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Reads `<ns>:limits` again (at start, on a `limits` message, every sweep interval).
    pub(crate) async fn reload(&self) -> Result<(), Error> {
        let (table, unreadable) = self.store.limits().await?;
        for u in unreadable {
            tracing::warn!(field = %u, "unreadable limit in Redis ignored");
        }
        let mut t = self.table.write().expect("limits poisoned");
        if **t != table {
            tracing::info!(limits = table.len(), "limits read from Redis");
            *t = Arc::new(table);
        }
        Ok(())
    }

    /// The budgets `task` of `p` must take a start from: none for an unlimited task.
    pub(crate) fn budgets(&self, p: &Partition, task: &Claimed, headers: &Headers) -> Vec<Budget> {
        let table = self.table.read().expect("limits poisoned");
        budgets_for(&table, &p.queue, &task.name, headers)
    }

    /// Takes a start of `task` from every budget, in order; on the first refusal gives back what
    /// the others granted.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        p: &Partition,
        task: &Claimed,
        budgets: Vec<Budget>,
    ) -> Result<Gate, Arc<Error>> {
        let holder = holder(p, &task.id, task.token);
        let waiter = waiter(p, &task.id);
        let mut granted_at = 0;
        for (i, b) in budgets.iter().enumerate() {
            match self.take_start(b, &holder, &waiter).await? {
                Acquired::Granted(at) => granted_at = granted_at.max(at),
                Acquired::Denied(until) => {
                    for taken in &budgets[..i] {
                        self.give_back(taken, &holder, true).await;
                    }
                    return Ok(Gate::Wait(b.clone(), until));
                }
            }
        }
        let renew = CancellationToken::new();
        if budgets.iter().any(|b| b.limit.max_concurrency().is_some()) {
            tokio::spawn(Arc::clone(self).renew(budgets.clone(), holder.clone(), renew.clone()));
        }
        Ok(Gate::Run(
            Held {
                budgets,
                holder,
                renew,
            },
            granted_at,
        ))
    }

    /// One start of `b` for `holder`: sent at once when no call for `b` is in flight, else with
    /// the asks that come meanwhile in the next call.
    async fn take_start(self: &Arc<Self>, b: &Budget, holder: &str, waiter: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            budget: b.clone(),
            holder: holder.to_owned(),
            waiter: waiter.to_owned(),
            reply,
        };
        // A budget present in `asks` has a sender; the first ask of one without starts it.
        let first = {
            let mut asks = self.asks.lock().expect("asks poisoned");
            let first = !asks.contains_key(&b.digest);
            asks.entry(b.digest.clone()).or_default().push_back(ask);
            first
        };
        if first {
            tokio::spawn(Arc::clone(self).send_asks(b.digest.clone()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Arc::new(Error::Protocol(
                "a limit call ended without an answer".to_owned(),
            )))
        })
    }

    /// Sends the asks waiting for budget `digest`, a call at a time (the asks of one limit: a
    /// reload may change it between two asks), until none is left; then the budget leaves
    /// `asks`, under the lock, so the next ask starts a sender again.
    async fn send_asks(self: Arc<Self>, digest: String) {
        let lease_ms = self.lease.as_millis() as u64;
        loop {
            let batch: Vec<Ask> = {
                let mut asks = self.asks.lock().expect("asks poisoned");
                let Some(queue) = asks.get_mut(&digest) else {
                    return;
                };
                let Some(first) = queue.front() else {
                    asks.remove(&digest);
                    return;
                };
                let limit = first.budget.limit;
                let n = queue
                    .iter()
                    .take(MAX_ACQUIRE_BATCH)
                    .take_while(|a| a.budget.limit == limit)
                    .count();
                queue.drain(..n).collect()
            };
            let tasks: Vec<(String, String)> = batch
                .iter()
                .map(|a| (a.holder.clone(), a.waiter.clone()))
                .collect();
            match self
                .store
                .limit_acquire(&batch[0].budget, lease_ms, lease_ms, &tasks)
                .await
            {
                Ok(answers) => {
                    for (ask, answer) in batch.into_iter().zip(answers) {
                        let _ = ask.reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for ask in batch {
                        let _ = ask.reply.send(Err(Arc::clone(&e)));
                    }
                }
            }
        }
    }

    /// Renews the concurrency slots of a run every third of the lease until `stop`.
    async fn renew(self: Arc<Self>, budgets: Vec<Budget>, holder: String, stop: CancellationToken) {
        let lease_ms = self.lease.as_millis() as u64;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.lease / 3) => {}
            }
            for b in budgets
                .iter()
                .filter(|b| b.limit.max_concurrency().is_some())
            {
                if let Err(e) = self
                    .store
                    .limit_extend(&b.digest, lease_ms, std::slice::from_ref(&holder))
                    .await
                {
                    tracing::warn!(limit = %b.label, error = %e, "could not renew a concurrency slot");
                }
            }
        }
    }

    /// Ends a run's hold: stops the renewal and gives every start back (a concurrency slot
    /// frees; a rate start stays counted: the task did start).
    pub(crate) async fn release(&self, held: Held) {
        held.renew.cancel();
        for b in &held.budgets {
            if b.limit.max_concurrency().is_some() {
                self.give_back(b, &held.holder, false).await;
            }
        }
    }

    /// Gives `holder`'s start in `b` back (`unlog`: its start too, the run never began), and
    /// makes due the first waiter still waiting, if a slot is free.
    async fn give_back(&self, b: &Budget, holder: &str, unlog: bool) {
        let mut who = holder;
        for _ in 0..MAX_HANDOVER_TRIES {
            let handed = match self.store.limit_release(b, who, unlog).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(limit = %b.label, error = %e, "could not release a limit slot; it frees when its lease ends");
                    return;
                }
            };
            let Some((queue, shard, id)) = handed else {
                return;
            };
            let p = self.store.partition(&queue, shard);
            match self.store.limit_wake(&p, &id).await {
                Ok(true) => return,
                // Not waiting any more: hand the slot to the next waiter.
                Ok(false) => who = "",
                Err(e) => {
                    tracing::warn!(limit = %b.label, error = %e, "could not wake a task waiting for a limit; it wakes when its wait ends");
                    return;
                }
            }
        }
    }

    /// After `task` of `p` was parked for budget `b`: joins the budget's waiters when `b` has a
    /// concurrency limit, or is made due at once when a slot freed meanwhile.
    pub(crate) async fn wait_for_slot(&self, b: &Budget, p: &Partition, task: &Claimed) {
        let Some(conc) = b.limit.max_concurrency() else {
            return;
        };
        match self.store.limit_wait(b, conc, &waiter(p, &task.id)).await {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.store.limit_wake(p, &task.id).await {
                    tracing::warn!(limit = %b.label, error = %e, "could not wake a task for a free slot; it wakes when its wait ends");
                }
            }
            Err(e) => {
                tracing::warn!(limit = %b.label, error = %e, "could not join a limit's waiters; the task wakes when its wait ends");
            }
        }
    }
}
