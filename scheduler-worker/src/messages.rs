//! The messages the components of a worker send each other, in one place: outcomes to the
//! acker ([`AckMsg`]) and events to the promoter ([`PromoterEvent`]).

use std::time::Duration;

use tokio::sync::oneshot;

/// What a run asks the store to do.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Succeeded with this result (MessagePack).
    Ack(Vec<u8>),
    /// Failed; retry after this delay if attempts remain, else bury.
    Retry(String, Duration),
    /// Failed in a way retrying cannot fix: state `dead` now.
    Dead(String),
    /// Never started (prefetched, then shutdown): hand back to the ready set, attempt not counted.
    Release,
    /// A rate limit did not let it start: it waits again in its partition until this server
    /// time (unix ms), its attempt not counted (`limit_park.lua`); the text names the limit.
    Park(i64, String),
    /// Its cancellation was requested and the handler stopped (or was aborted after the grace
    /// period): state `cancelled`, not retried (`cancel_run.lua`); the text says how it ended.
    Cancel(String),
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Completion {
    pub(crate) idx: usize,
    pub(crate) id: String,
    pub(crate) token: i64,
    /// The run's attempt number (1 for the first run), for its task events.
    pub(crate) attempt: u32,
    pub(crate) verdict: Verdict,
    /// For a failed run on a worker with middleware: the `on_dead` hooks to call if Redis
    /// buries the task. `None` otherwise (most runs).
    pub(crate) dead_hook: Option<Box<crate::middleware::DeadHook>>,
    /// The run span, for the span of the write to link to (empty when traces are not
    /// exported, or the task never ran).
    pub(crate) run: crate::trace::RunLink,
}

/// Messages to the acker.
#[derive(Debug)]
pub(crate) enum AckMsg {
    /// A finished run, to write.
    Done(Completion),
    /// Write everything received before this, then answer.
    Flush(oneshot::Sender<()>),
}

/// Events for the promoter.
#[derive(Debug)]
pub(crate) enum PromoterEvent {
    /// Partition `idx` got a new earliest due time (unix ms, Redis clock).
    Head(usize, i64),
    /// Notifications may have been lost: check every owned partition.
    SweepAll,
}
