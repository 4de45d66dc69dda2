//! Handlers by task name: the type-erased bridge from a claimed task's bytes to `Task::run`.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use scheduler_core::{Task, TaskContext, TaskError};

/// Why a run did not produce a result.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The stored arguments are not a valid `T::Args`.
    Decode(String),
    /// The handler's output could not be encoded.
    Encode(String),
    /// The handler returned an error.
    Task(TaskError),
}

pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, RunError>> + Send>>;

/// A handler with its types erased.
pub(crate) trait Handler: Send + Sync {
    fn call(&self, ctx: TaskContext, args: &[u8]) -> RunFuture;
}

struct Typed<T>(PhantomData<fn() -> T>);

impl<T: Task> Handler for Typed<T> {
    fn call(&self, ctx: TaskContext, args: &[u8]) -> RunFuture {
        match rmp_serde::from_slice::<T::Args>(args) {
            Err(e) => Box::pin(std::future::ready(Err(RunError::Decode(e.to_string())))),
            Ok(args) => Box::pin(async move {
                let out = T::run(ctx, args).await.map_err(RunError::Task)?;
                // Struct results by field name, as arguments (docs/architecture.md).
                scheduler_core::client::encode_args(&out)
                    .map_err(|e| RunError::Encode(e.to_string()))
            }),
        }
    }
}

/// Registered handlers, by task name, and the queues their tasks default to.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    handlers: HashMap<&'static str, Arc<dyn Handler>>,
    queues: Vec<&'static str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.names())
            .finish()
    }
}

impl Registry {
    pub(crate) fn register<T: Task>(&mut self) {
        self.handlers
            .insert(T::NAME, Arc::new(Typed::<T>(PhantomData)));
        if !self.queues.contains(&T::QUEUE) {
            self.queues.push(T::QUEUE);
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.handlers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn default_queues(&self) -> &[&'static str] {
        &self.queues
    }
}
