//! Task events: every state change of a task in a queue with events on, published on the
//! queue's channel `<ns>:events:<queue>` (see `docs/events.md`).
//!
//! Events are per-queue opt-in ([`crate::Client::set_events`], `schedctl events --on`): a queue
//! without them costs no Redis command more. The process that made a change publishes its event
//! right after Redis confirmed it (the client for `enqueued` and `cancelled` before a run, the
//! worker for the rest, `progress.lua` for `progress`), so delivery is **at most once**: a
//! subscriber that is not connected at that moment, or a process that dies between the change
//! and its `PUBLISH`, loses the event. Redis keeps nothing for events (pub/sub stores no
//! message), so they cost no memory but each subscriber's output buffer, which Redis caps
//! (`client-output-buffer-limit pubsub`).
//!
//! Subscribe with [`crate::Client::events`] (a queue) or [`crate::Client::watch`] (one task).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::id::TaskId;

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// Created by an enqueue (scheduled or ready), or put back in its queue from the dead set.
    Enqueued,
    /// A worker started a run (attempt [`TaskEvent::attempt`]).
    Started,
    /// The running handler reported progress (`ctx.progress`): [`TaskEvent::progress`] and the
    /// message in [`TaskEvent::message`].
    Progress,
    /// The run succeeded; the result is readable ([`crate::Client::result`]).
    Succeeded,
    /// The run failed and the task will run again after its backoff; the error is in
    /// [`TaskEvent::message`].
    Retried,
    /// The run failed with an error retrying cannot fix (`TaskError::fail`, an unknown task
    /// name, undecodable arguments): the task is dead; the error is in [`TaskEvent::message`].
    Failed,
    /// The run failed and no retry was left: the task is dead.
    Dead,
    /// Withdrawn before it ran, or stopped while running after a cancellation request.
    Cancelled,
    /// Its deadline passed before it could (run again).
    Expired,
}

impl EventKind {
    /// Every kind, in the order a task may live through them.
    pub const ALL: [EventKind; 9] = [
        EventKind::Enqueued,
        EventKind::Started,
        EventKind::Progress,
        EventKind::Succeeded,
        EventKind::Retried,
        EventKind::Failed,
        EventKind::Dead,
        EventKind::Cancelled,
        EventKind::Expired,
    ];

    /// Its name on the wire: `enqueued`, `started`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Enqueued => "enqueued",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Succeeded => "succeeded",
            EventKind::Retried => "retried",
            EventKind::Failed => "failed",
            EventKind::Dead => "dead",
            EventKind::Cancelled => "cancelled",
            EventKind::Expired => "expired",
        }
    }

    /// Whether the task is finished after it (succeeded, failed, dead, cancelled, expired).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            EventKind::Succeeded
                | EventKind::Failed
                | EventKind::Dead
                | EventKind::Cancelled
                | EventKind::Expired
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::Protocol(format!("unknown event kind {s:?}")))
    }
}

/// One state change of a task.
///
/// On the wire (the message published on `<ns>:events:<queue>`), five lines:
/// `<kind>\n<id>\n<attempt>\n<at_ms>\n<detail>`, where the detail is the error of a failure,
/// `<percent> <message>` for progress, empty otherwise (task ids hold no control character).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskEvent {
    /// The task.
    pub id: TaskId,
    /// What happened.
    pub kind: EventKind,
    /// The run it concerns (1 for the first run); 0 for `enqueued` and for a task cancelled or
    /// expired before it ran.
    pub attempt: u32,
    /// When, in unix milliseconds by the publisher's clock (Redis' for `progress`).
    pub at_ms: i64,
    /// For `progress`: the percentage reported.
    pub progress: Option<u8>,
    /// The error of `retried`, `failed` and `dead`, the message of `progress`; else empty.
    pub message: String,
}

impl TaskEvent {
    /// An event of `kind` for task `id`, now (this machine's clock).
    pub fn new(id: TaskId, kind: EventKind, attempt: u32) -> Self {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Self {
            id,
            kind,
            attempt,
            at_ms,
            progress: None,
            message: String::new(),
        }
    }

    /// With `message` (an error).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// The message published for it (see the type's docs).
    pub fn encode(&self) -> String {
        let detail = match self.progress {
            Some(p) => format!("{p} {}", self.message),
            None => self.message.clone(),
        };
        format!(
            "{}\n{}\n{}\n{}\n{detail}",
            self.kind,
            self.id.id(),
            self.attempt,
            self.at_ms
        )
    }

    /// Reads a message published on the channel of `queue`.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when it is not an event.
    pub fn decode(queue: &str, payload: &str) -> Result<Self> {
        let bad = || Error::Protocol(format!("malformed task event {payload:?}"));
        let mut parts = payload.splitn(5, '\n');
        let kind: EventKind = parts.next().ok_or_else(bad)?.parse()?;
        let id = parts.next().filter(|s| !s.is_empty()).ok_or_else(bad)?;
        let attempt = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let at_ms = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let detail = parts.next().ok_or_else(bad)?;
        let (progress, message) = if kind == EventKind::Progress {
            let (p, m) = detail.split_once(' ').unwrap_or((detail, ""));
            (Some(p.parse().map_err(|_| bad())?), m.to_owned())
        } else {
            (None, detail.to_owned())
        };
        Ok(Self {
            id: TaskId::new(queue, id),
            kind,
            attempt,
            at_ms,
            progress,
            message,
        })
    }
}

/// The events of one queue (or one task) as they are published, from the moment
/// [`crate::Client::events`] (or [`crate::Client::watch`]) returned it; a [`Stream`] of
/// [`TaskEvent`]s, in the order Redis received them.
///
/// It holds a pub/sub connection of its own, closed when it is dropped. The stream ends when
/// that connection is lost (Redis restarted, a failover): events published meanwhile are
/// lost; open a new one. Messages that are not events (published by hand) are skipped.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = TaskEvent> + Send>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// The events published on `channel` (the channel of `queue`) from a pub/sub connection
    /// already subscribed to it; only those of task `only` when given.
    pub(crate) fn new(pubsub: redis::aio::PubSub, queue: String, only: Option<String>) -> Self {
        let inner = pubsub.into_on_message().filter_map(move |msg| {
            let ev = msg
                .get_payload::<String>()
                .ok()
                .and_then(|p| TaskEvent::decode(&queue, &p).ok())
                .filter(|e| only.as_deref().is_none_or(|id| e.id.id() == id));
            futures::future::ready(ev)
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for EventStream {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind round-trips through the wire form, progress and messages with newlines too.
    #[test]
    fn wire_form_round_trips() {
        for kind in EventKind::ALL {
            let mut e = TaskEvent::new(TaskId::new("q", "a b"), kind, 3).with_message("x\ny z");
            if kind == EventKind::Progress {
                e.progress = Some(40);
            }
            let back = TaskEvent::decode("q", &e.encode()).unwrap();
            assert_eq!(back, e);
        }
        assert!(TaskEvent::decode("q", "started\nid\n1").is_err());
        assert!(TaskEvent::decode("q", "nope\nid\n1\n2\n").is_err());
        assert!(TaskEvent::decode("q", "progress\nid\n1\n2\nlots").is_err());
    }
}
