//! The worker's task events (see `scheduler_core::events`): the acker hands each outcome's
//! event of a queue with events on to the [`Sink`]; its publisher sends them in batches, one
//! pipeline of `PUBLISH`es per batch, in the order they were handed over. The executor
//! publishes `started` itself before the handler runs ([`Sink::started`]). A queue with
//! events off costs the check of an in-memory set and no Redis command.

use scheduler_core::{EventKind, Store, TaskEvent, TaskId};
use tokio::sync::{mpsc, oneshot};

/// Most events published in one pipeline.
const MAX_BATCH: usize = 1000;

enum Msg {
    Event(TaskEvent),
    Flush(oneshot::Sender<()>),
}

/// Where the worker's components hand their events (cheap to clone).
#[derive(Clone)]
pub(crate) struct Sink {
    store: Store,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Sink {
    /// A sink and its publisher, to spawn; the publisher ends once every sink is dropped.
    pub(crate) fn new(store: Store) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = publish(store.clone(), rx);
        (Self { store, tx }, publisher)
    }

    /// Whether `queue` has events on (an in-memory check).
    pub(crate) fn on(&self, queue: &str) -> bool {
        self.store.events_on(queue)
    }

    /// Hands over the event `kind` of task `id` of `queue` (if the queue has events on).
    pub(crate) fn emit(&self, queue: &str, id: &str, kind: EventKind, attempt: u32, message: &str) {
        if self.on(queue) {
            let e = TaskEvent::new(TaskId::new(queue, id), kind, attempt).with_message(message);
            let _ = self.tx.send(Msg::Event(e));
        }
    }

    /// Publishes `started` for run `attempt` of task `id` of `queue` now, unless the queue has
    /// events off (then no command): one round trip before the handler runs, so that the
    /// `progress` events its handler makes (published by `progress.lua`) come after it.
    pub(crate) async fn started(&self, queue: &str, id: &str, attempt: u32) {
        if self.on(queue) {
            let e = TaskEvent::new(TaskId::new(queue, id), EventKind::Started, attempt);
            if let Err(e) = self.store.publish_events(&[e]).await {
                tracing::debug!(error = %e, "task event not published");
            }
        }
    }

    /// Returns once every event handed over before is published (or its publishing failed).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Publishes what the sinks hand over, in batches, until every sink is dropped.
async fn publish(store: Store, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::new();
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => batch.push(e),
                Msg::Flush(tx) => flushes.push(tx),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // At most once: a failed publish is not retried (a subscriber's wait_result reads the
            // task again after a while; see docs/events.md).
            if let Err(e) = store.publish_events(&batch).await {
                tracing::debug!(error = %e, events = batch.len(), "task events not published");
            }
            batch.clear();
        }
        for tx in flushes.drain(..) {
            let _ = tx.send(());
        }
    }
}
