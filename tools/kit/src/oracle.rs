//! Task oracles shared by the worker tests: waiting for a task to finish, or for a condition on
//! what the tasks recorded.
//!
//! The failover oracle (a ledger of every acknowledged enqueue and every run) is [`crate::ha`].

use std::time::Duration;

use scheduler::{Client, TaskId, TaskInfo};

/// Polls the task's status every 20 ms until it is finished; panics after `timeout`.
pub async fn wait_finished(client: &Client, id: &TaskId, timeout: Duration) -> TaskInfo {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = client.status(id).await.unwrap();
        if info.state.is_finished() {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task {id} did not finish within {timeout:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
