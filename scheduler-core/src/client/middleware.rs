//! Client middleware: [`EnqueueMiddleware`], hooks around every enqueue of a [`Client`](crate::Client),
//! registered with [`ClientConfig::middleware`]. The guide, with the worker's run hooks:
//! `docs/middleware.md`.

use std::fmt;
use std::sync::Arc;

use super::{ClientConfig, TaskRequest};
use crate::error::Result;
use crate::id::TaskId;

/// Hooks around every enqueue of a [`Client`](crate::Client): change or refuse each request before it is
/// sent, see what the call returned.
///
/// Register with [`ClientConfig::middleware`]; several run in the order registered for
/// [`EnqueueMiddleware::before_enqueue`] (the first registered sees each request first) and
/// in the reverse order for [`EnqueueMiddleware::after_enqueue`], as layers around the call.
/// They cover [`Client::enqueue`](crate::Client::enqueue), [`Client::enqueue_request`](crate::Client::enqueue_request) and [`Client::enqueue_bulk`](crate::Client::enqueue_bulk)
/// (and [`crate::TaskCall::send`]); the ticks of periodic schedules, written by the workers'
/// schedule component, do not pass through them. A client without middleware pays one check of
/// an empty list per call.
///
/// Both methods have empty defaults: implement the ones you need. The trait is an
/// [`async_trait`](https://docs.rs/async-trait) trait (so that hooks of different types sit in
/// one list): put `#[scheduler_core::async_trait]` (`#[scheduler::async_trait]` through the
/// `scheduler` crate) on the `impl`.
///
/// # Examples
///
/// A middleware that stamps every task with the tenant of the producing service and refuses
/// tasks of a queue being retired:
///
/// ```no_run
/// use scheduler_core::{async_trait, Client, ClientConfig, EnqueueMiddleware, Error, TaskRequest};
///
/// struct Tenant(&'static str);
///
/// #[async_trait]
/// impl EnqueueMiddleware for Tenant {
///     async fn before_enqueue(&self, req: &mut TaskRequest) -> Result<(), Error> {
///         if req.queue_name() == "legacy" {
///             return Err(Error::EnqueueRefused("queue legacy is retired".into()));
///         }
///         if req.header_map().get("tenant").is_none() {
///             req.insert_header("tenant", self.0);
///         }
///         Ok(())
///     }
/// }
///
/// # async fn demo() -> Result<(), Error> {
/// let client =
///     Client::with_config(ClientConfig::new("redis://127.0.0.1:6379").middleware(Tenant("acme")))
///         .await?;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait EnqueueMiddleware: Send + Sync + 'static {
    /// Called for each request of an enqueue call, before anything is sent: it may change the
    /// request (add a header, set a priority...) or refuse it by returning an error, typically
    /// [`crate::Error::EnqueueRefused`]. A refusal fails the whole call with that error before
    /// anything is sent (as a bad request does), and the later middlewares and
    /// [`EnqueueMiddleware::after_enqueue`] are not called. The request has passed no check
    /// yet: the client checks it after every middleware ran.
    ///
    /// # Errors
    ///
    /// Whatever refuses the request; the caller of the enqueue gets it unchanged.
    async fn before_enqueue(&self, req: &mut TaskRequest) -> Result<()> {
        let _ = req;
        Ok(())
    }

    /// Called once per enqueue call that every `before_enqueue` let through, with what the
    /// call returns to its caller: each task id in request order and whether the call created
    /// it, or the error.
    async fn after_enqueue(&self, result: &Result<Vec<(TaskId, bool)>>) {
        let _ = result;
    }
}

/// The middlewares of a client, in registration order. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct EnqueueStack(Arc<[Arc<dyn EnqueueMiddleware>]>);

impl EnqueueStack {
    /// Whether no middleware is registered: the only cost an enqueue pays without any.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stack with `m` added innermost.
    pub(crate) fn push(&self, m: Arc<dyn EnqueueMiddleware>) -> Self {
        let mut v = self.0.to_vec();
        v.push(m);
        Self(v.into())
    }

    /// Runs every `before_enqueue` on every request, in order.
    pub(crate) async fn before(&self, reqs: &mut [TaskRequest]) -> Result<()> {
        for req in reqs {
            for m in self.0.iter() {
                m.before_enqueue(req).await?;
            }
        }
        Ok(())
    }

    /// Runs every `after_enqueue`, last registered first.
    pub(crate) async fn after(&self, result: &Result<Vec<(TaskId, bool)>>) {
        for m in self.0.iter().rev() {
            m.after_enqueue(result).await;
        }
    }
}

impl fmt::Debug for EnqueueStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} enqueue middleware", self.0.len())
    }
}

impl ClientConfig {
    /// Adds `m` to the hooks around every enqueue of the client ([`EnqueueMiddleware`]).
    /// Middlewares see each request in the order they are added, and the call's result in the
    /// reverse order. Default: none.
    pub fn middleware(mut self, m: impl EnqueueMiddleware) -> Self {
        self.middleware = self.middleware.push(Arc::new(m));
        self
    }
}
