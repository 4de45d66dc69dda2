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
    pub(crate) verdict: Verdict,
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
