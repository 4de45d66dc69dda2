//! A worker running in the test's own process.

use std::time::Duration;

use scheduler::{ShutdownHandle, WorkerBuilder, WorkerReport};
use tokio::task::JoinHandle;

/// A worker running in this process (a tokio task), stopped by [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    join: JoinHandle<WorkerReport>,
    stop: ShutdownHandle,
}

impl Running {
    /// Builds the worker and runs it until [`Running::stop`]. Panics if it does not build.
    pub async fn start(builder: WorkerBuilder) -> Self {
        let worker = builder.build().await.expect("worker builds");
        let stop = worker.shutdown_handle();
        let join = tokio::spawn(worker.run(std::future::pending()));
        Self { join, stop }
    }

    /// Asks the worker to shut down, without waiting (see [`Running::join_report`]).
    pub fn shutdown(&self) {
        self.stop.shutdown();
    }

    /// Asks the worker to shut down and waits for its report; panics unless it stops within
    /// 30 s.
    pub async fn stop(self) -> WorkerReport {
        self.stop_within(Duration::from_secs(30)).await
    }

    /// Asks the worker to shut down and waits for its report; panics unless it stops within
    /// `limit`.
    pub async fn stop_within(self, limit: Duration) -> WorkerReport {
        self.stop.shutdown();
        self.join_within(limit).await
    }

    /// Waits for the worker to stop (after [`Running::shutdown`]); panics unless it
    /// stops within 30 s.
    pub async fn join_report(self) -> WorkerReport {
        self.join_within(Duration::from_secs(30)).await
    }

    async fn join_within(self, limit: Duration) -> WorkerReport {
        tokio::time::timeout(limit, self.join)
            .await
            .unwrap_or_else(|_| panic!("worker stops within {} s", limit.as_secs()))
            .expect("worker task did not panic")
    }
}
