//! Run middleware: [`Middleware`], hooks around each run of a task on the worker (before; after,
//! with the outcome; on dead), registered with [`crate::WorkerBuilder::middleware`]. The guide,
//! with the client's enqueue hooks: `docs/middleware.md`.
//!
//! The executor takes this path only when some middleware is registered: without any, a run
//! pays one check of an empty list, and none of the boxing, cloning and bookkeeping below.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use scheduler_core::{TaskContext, TaskError};

/// Hooks around each run of a task on a worker.
///
/// Register with [`crate::WorkerBuilder::middleware`]. For every run, the worker calls:
///
/// 1. [`Middleware::before`] of each middleware in the order registered (the first
///    registered is the outermost layer);
/// 2. the handler, unless a `before` refused the run;
/// 3. [`Middleware::after`] with the [`RunOutcome`], in the reverse order;
/// 4. once the outcome is written and the task is in the dead set (its retries are spent, or
///    the failure was not retryable), [`Middleware::on_dead`], in the reverse order, after
///    every `after`.
///
/// A middleware whose `before` did not return `Ok` (it refused, or panicked) gets neither
/// `after` nor `on_dead` for that run; those before it get both. Runs handed back before they
/// started (a prefetched task at shutdown) call no hook; a task the reaper buries after its
/// worker was lost (`max_lost_leases`) had no run to finish, so no `on_dead` is called for it.
///
/// Hooks run outside the handler's time limit, on the run's task: keep them short (a metric,
/// a log line, a message on a channel). A panic in `before` fails the run (retried with
/// backoff); a panic in `after` or `on_dead` is logged and ignored.
///
/// All three methods have empty defaults: implement the ones you need. The trait is an
/// [`async_trait`](https://docs.rs/async-trait) trait, so that hooks of different types sit in
/// one list: put `#[scheduler::async_trait]` on the `impl`.
///
/// # Examples
///
/// ```no_run
/// use scheduler_core::async_trait;
/// use scheduler_worker::middleware::{Middleware, Run, RunOutcome};
/// use scheduler_worker::Worker;
///
/// /// Logs every failure with the tenant the producer stamped on the task.
/// struct TenantLog;
///
/// #[async_trait]
/// impl Middleware for TenantLog {
///     async fn after(&self, run: &Run<'_>, outcome: &RunOutcome<'_>) {
///         if let Some(error) = outcome.error() {
///             let tenant = run.ctx().header("tenant").unwrap_or("-");
///             eprintln!("{} failed for tenant {tenant}: {error}", run.ctx().id());
///         }
///     }
///
///     async fn on_dead(&self, run: &Run<'_>, error: &str) {
///         eprintln!("{} ({}) is dead: {error}", run.ctx().id(), run.name());
///     }
/// }
///
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// let worker = Worker::builder().middleware(TenantLog).build().await?;
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait Middleware: Send + Sync + 'static {
    /// Called before the handler runs. Returning an error refuses the run: the handler is not
    /// called and the error is the run's outcome, as if the handler had returned it
    /// ([`TaskError::retry`] retries with backoff, [`TaskError::fail`] buries the task), and the
    /// later middlewares' hooks are not called.
    ///
    /// # Errors
    ///
    /// The [`TaskError`] that ends the run instead of the handler.
    async fn before(&self, run: &Run<'_>) -> Result<(), TaskError> {
        let _ = run;
        Ok(())
    }

    /// Called after the run, with its outcome, before the outcome is written to Redis.
    async fn after(&self, run: &Run<'_>, outcome: &RunOutcome<'_>) {
        let _ = (run, outcome);
    }

    /// Called once the run's failure put the task in the dead set (written and confirmed by
    /// Redis), with the run's error; after every [`Middleware::after`] of the run.
    async fn on_dead(&self, run: &Run<'_>, error: &str) {
        let _ = (run, error);
    }

    /// The name the worker's log lines give this middleware (a panic in a hook). Default: the
    /// type's name.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// The run a hook is called for: the task's name, the context its handler gets (id, attempt,
/// headers, shared state...), and when the hooks started.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    name: &'a str,
    ctx: &'a TaskContext,
    started: Instant,
}

impl<'a> Run<'a> {
    /// The task's name (the handler it runs).
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The run's context, as the handler sees it.
    pub fn ctx(&self) -> &'a TaskContext {
        self.ctx
    }

    /// Time since the first `before` of this run was called: in `after`, how long the
    /// middlewares inside and the handler took (a timing middleware needs no state of its own).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the run's hooks started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }
}

/// How a run ended, as [`Middleware::after`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunOutcome<'a> {
    /// The handler returned its result (MessagePack; `[0xc0]`, nil, for none).
    Succeeded {
        /// The encoded result.
        result: &'a [u8],
    },
    /// The run failed (an error, a panic, the time limit); the task is retried after `delay`
    /// if retries remain, else buried, and [`Middleware::on_dead`] follows.
    Retry {
        /// The error text stored with the task.
        error: &'a str,
        /// The delay before the retry.
        delay: Duration,
    },
    /// The run failed in a way retrying cannot fix ([`TaskError::fail`], an unknown task
    /// name, arguments that do not decode...): the task is buried, and
    /// [`Middleware::on_dead`] follows.
    Fail {
        /// The error text stored with the task.
        error: &'a str,
    },
    /// The task's cancellation was requested while it ran: it ends `cancelled`.
    Cancelled {
        /// How the run ended.
        how: &'a str,
    },
}

impl<'a> RunOutcome<'a> {
    /// The error text, for [`RunOutcome::Retry`] and [`RunOutcome::Fail`].
    pub fn error(&self) -> Option<&'a str> {
        match self {
            RunOutcome::Retry { error, .. } | RunOutcome::Fail { error } => Some(error),
            _ => None,
        }
    }

    /// Whether the handler succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Succeeded { .. })
    }
}

/// The middlewares of a worker, in registration order. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Stack(Arc<[Arc<dyn Middleware>]>);

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|m| m.name()))
            .finish()
    }
}

impl Stack {
    /// The stack with `m` added innermost.
    pub(crate) fn push(&self, m: Arc<dyn Middleware>) -> Self {
        let mut v = self.0.to_vec();
        v.push(m);
        Self(v.into())
    }

    /// Whether no middleware is registered: what the executor checks on every run.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Calls every `before` in order, until one refuses or panics. Returns how many returned
    /// `Ok` (the layers entered), and the refusal as the run's error.
    pub(crate) async fn before(&self, run: &Run<'_>) -> (usize, Option<TaskError>) {
        for (i, m) in self.0.iter().enumerate() {
            match AssertUnwindSafe(m.before(run)).catch_unwind().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (i, Some(e)),
                Err(panic) => {
                    let msg = format!("middleware {} panicked: {}", m.name(), text(&*panic));
                    return (i, Some(TaskError::retry(msg)));
                }
            }
        }
        (self.0.len(), None)
    }

    /// Calls `after` of the first `entered` middlewares, innermost first.
    pub(crate) async fn after(&self, entered: usize, run: &Run<'_>, outcome: &RunOutcome<'_>) {
        for m in self.0[..entered].iter().rev() {
            if let Err(panic) = AssertUnwindSafe(m.after(run, outcome)).catch_unwind().await {
                tracing::error!(
                    middleware = m.name(),
                    panic = text(&*panic),
                    "middleware panicked in after; ignored"
                );
            }
        }
    }

    /// Calls `on_dead` of the first `entered` middlewares, innermost first.
    async fn on_dead(&self, entered: usize, run: &Run<'_>, error: &str) {
        for m in self.0[..entered].iter().rev() {
            if let Err(panic) = AssertUnwindSafe(m.on_dead(run, error)).catch_unwind().await {
                tracing::error!(
                    middleware = m.name(),
                    panic = text(&*panic),
                    "middleware panicked in on_dead; ignored"
                );
            }
        }
    }
}

/// What the acker needs to call `on_dead` once Redis confirmed that a failed run buried its
/// task: built by the executor for failed runs only, and only when middleware is registered.
pub(crate) struct DeadHook {
    pub(crate) stack: Stack,
    pub(crate) entered: usize,
    pub(crate) name: String,
    pub(crate) ctx: TaskContext,
    /// When the run's hooks started ([`Run::elapsed`]).
    pub(crate) started: Instant,
}

impl fmt::Debug for DeadHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadHook")
            .field("name", &self.name)
            .field("id", self.ctx.id())
            .finish()
    }
}

impl DeadHook {
    /// Calls the `on_dead` hooks of the run that buried the task with `error`.
    pub(crate) async fn call(self, error: String) {
        let run = Run {
            name: &self.name,
            ctx: &self.ctx,
            started: self.started,
        };
        self.stack.on_dead(self.entered, &run, &error).await;
    }
}

/// A run as hooks see it, its clock started now.
pub(crate) fn run<'a>(name: &'a str, ctx: &'a TaskContext) -> Run<'a> {
    Run {
        name,
        ctx,
        started: Instant::now(),
    }
}

/// The text of a panic payload.
pub(crate) fn text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
