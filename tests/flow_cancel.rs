//! Cancelling a running task (`docs/flow-control.md`) against a real worker and a throwaway
//! Redis: the worker learns of it by pub/sub, the handler sees `ctx.cancelled()`, a handler that
//! ignores it is aborted after the grace period, the task ends `cancelled` and is not retried.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use scheduler::{
    task, Cancellation, Client, ClientConfig, Error, TaskContext, TaskError, TaskId, TaskState,
    Worker,
};
use scheduler_testkit::{RedisServer, Running};

/// Runs started, and runs that saw their cancellation.
#[derive(Clone, Default)]
struct Seen {
    started: Arc<AtomicU32>,
    saw_cancel: Arc<AtomicU32>,
}

/// Waits for its cancellation, then stops with a retryable error (which must not retry it).
#[task(name = "polite", queue = "cxl", max_retries = 5)]
async fn polite(ctx: TaskContext) -> Result<(), TaskError> {
    let seen = ctx.state::<Seen>()?;
    seen.started.fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        () = ctx.cancelled() => {
            assert!(ctx.is_cancelled());
            seen.saw_cancel.fetch_add(1, Ordering::SeqCst);
            Err(TaskError::retry(std::io::Error::other("stopped on request")))
        }
        () = tokio::time::sleep(Duration::from_secs(120)) => Ok(()),
    }
}

/// Ignores cancellation: sleeps for two minutes.
#[task(name = "stubborn", queue = "cxl", max_retries = 5)]
async fn stubborn(ctx: TaskContext) -> Result<(), TaskError> {
    ctx.state::<Seen>()?.started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(120)).await;
    Ok(())
}

async fn wait_running(client: &Client, id: &TaskId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.status(id).await.unwrap().state != TaskState::Running {
        assert!(tokio::time::Instant::now() < deadline, "{id} never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running task's cancellation reaches its handler (`ctx.cancelled()`), which stops; one that
/// ignores it is aborted after `cancel_grace`. Both end `cancelled` after one attempt, with
/// what happened in `error`, counted in the queue's `cancelled` counter, and `wait_result` says
/// `Cancelled`. Cancelling either again, or a task that succeeded, is `AlreadyFinished`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_it() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "cxl";
    let seen = Seen::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(ns)
            .queues(["cxl"])
            .register(polite)
            .register(stubborn)
            .state(seen.clone())
            .concurrency(4)
            .cancel_grace(Duration::from_millis(300)),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace(ns))
        .await
        .unwrap();

    let nice = polite::new().send(&client).await.unwrap();
    let hard = stubborn::new().send(&client).await.unwrap();
    wait_running(&client, &nice).await;
    wait_running(&client, &hard).await;
    assert_eq!(
        client.cancel_task(&nice).await.unwrap(),
        Cancellation::Requested
    );
    assert_eq!(
        client.cancel_task(&hard).await.unwrap(),
        Cancellation::Requested
    );
    for id in [&nice, &hard] {
        assert!(
            matches!(
                client.wait_result::<()>(id, Duration::from_secs(20)).await,
                Err(Error::Cancelled(ref c)) if c == id
            ),
            "{id} did not end cancelled"
        );
        let info = client.status(id).await.unwrap();
        assert_eq!(info.state, TaskState::Cancelled);
        assert_eq!(info.attempts, 1, "not retried");
        assert!(matches!(
            client.cancel(id).await,
            Err(Error::AlreadyFinished(ref c)) if c == id
        ));
    }
    assert_eq!(seen.saw_cancel.load(Ordering::SeqCst), 1);
    let nice_err = client.status(&nice).await.unwrap().last_error.unwrap();
    assert!(nice_err.contains("the handler stopped"), "{nice_err}");
    let hard_err = client.status(&hard).await.unwrap().last_error.unwrap();
    assert!(
        hard_err.contains("aborted after a grace period"),
        "{hard_err}"
    );
    // Given time to be retried (it is not), nothing runs again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.started.load(Ordering::SeqCst), 2);
    let stats = client.queue_stats("cxl").await.unwrap();
    assert_eq!(stats.counters.get("cancelled"), Some(&2));
    assert_eq!(stats.counters.get("retried"), None);
    let report = w.stop().await;
    assert_eq!(report.succeeded, 0);
}

/// A cancellation whose `c:` message the worker never got (written here by hand, as cancel.lua
/// writes it, without publishing) reaches the handler at the next lease renewal (a third of the
/// lease), and the task ends `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_cancellation_arrives_with_the_lease_renewal() {
    let redis = RedisServer::start();
    let url = redis.url();
    let ns = "cxlr";
    let seen = Seen::default();
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace(ns)
            .queues(["cxl"])
            .register(polite)
            .state(seen.clone())
            .lease(Duration::from_millis(900)),
    )
    .await;
    let client = Client::with_config(ClientConfig::new(&url).namespace(ns))
        .await
        .unwrap();
    let id = polite::new().send(&client).await.unwrap();
    wait_running(&client, &id).await;
    let key = format!("{ns}:{{cxl:{}}}:t:{}", id.shard(16), id.id());
    redis.cmd(&["HSET", &key, "cancel", "60000"]).unwrap();
    assert!(matches!(
        client.wait_result::<()>(&id, Duration::from_secs(20)).await,
        Err(Error::Cancelled(_))
    ));
    assert_eq!(seen.saw_cancel.load(Ordering::SeqCst), 1);
    assert_eq!(client.status(&id).await.unwrap().attempts, 1);
    w.stop().await;
}
