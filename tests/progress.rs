//! Progress reports on real redis-servers: a handler's `ctx.progress` read back through
//! `Client::status` and `Inspector::task`; bad values refused with a typed error and nothing
//! written; a run that lost its lease refused with `Error::LeaseLost`, the next run's reports
//! accepted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use scheduler::broker::scripts::Outcome;
use scheduler::broker::LeaseStore;
use scheduler::{
    task, Client, ClientConfig, Error, Inspector, TaskContext, TaskError, TaskId, TaskRequest,
    TaskState, Worker,
};
use scheduler_testkit::oracle::wait_finished;
use scheduler_testkit::{RedisServer, Running};
use tokio::sync::Notify;

/// What the handler and the test tell each other.
#[derive(Default)]
struct Steps {
    /// The handler made its first reports and waits.
    reached: Notify,
    /// The test read the reports: finish.
    go: Notify,
    /// The error kinds of the refused reports, in order.
    refused: Mutex<Vec<&'static str>>,
}

/// Reports bad values (refused), then 40 % with a message, waits for the test, then 100 %
/// without a message.
#[task(name = "report_job", queue = "prog")]
async fn report_job(ctx: TaskContext) -> Result<(), TaskError> {
    let steps = ctx.state::<Arc<Steps>>()?;
    for bad in [
        ctx.progress(101, "too far").await,
        ctx.progress(50, "x".repeat(1025)).await,
    ] {
        let kind = bad.expect_err("refused").kind();
        steps.refused.lock().unwrap().push(kind);
    }
    ctx.progress(40, "loading rows").await?;
    steps.reached.notify_one();
    steps.go.notified().await;
    ctx.progress(100, "").await?;
    Ok(())
}

async fn client(url: &str, ns: &str) -> Client {
    Client::with_config(ClientConfig::new(url).namespace(ns))
        .await
        .unwrap()
}

/// A running handler's report is on the task's record: `Client::status` has it (percent,
/// message, time on the server clock, the run that made it) and `Inspector::task` shows the
/// fields; a percent over 100 and a message over 1,024 bytes are `Error::InvalidProgress`
/// and change nothing; the last report stays after the task succeeded, its message removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_report_progress_that_status_shows() {
    let redis = RedisServer::start();
    let url = redis.url();
    let c = client(&url, "prog").await;
    let steps = Arc::new(Steps::default());
    let w = Running::start(
        Worker::builder()
            .redis_url(&url)
            .namespace("prog")
            .register(report_job)
            .state(Arc::clone(&steps)),
    )
    .await;
    let id = report_job::new().send(&c).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), steps.reached.notified())
        .await
        .expect("the handler reports within 20 s");

    let info = c.status(&id).await.unwrap();
    assert_eq!(info.state, TaskState::Running);
    let p = info.progress.clone().expect("a progress report");
    assert_eq!(
        (p.percent, p.message.as_str(), p.attempt),
        (40, "loading rows", 1)
    );
    assert!(p.at_ms >= info.enqueued_at_ms, "{p:?} {info:?}");
    assert_eq!(
        *steps.refused.lock().unwrap(),
        ["invalid_progress", "invalid_progress"]
    );
    let detail = Inspector::new(&c).task(&id).await.unwrap();
    assert_eq!(detail.fields["progress"], b"40");
    assert_eq!(detail.fields["progress_msg"], b"loading rows");
    assert_eq!(detail.fields["progress_attempt"], b"1");

    steps.go.notify_one();
    let info = wait_finished(&c, &id, Duration::from_secs(20)).await;
    w.stop().await;
    assert_eq!(info.state, TaskState::Succeeded);
    let p = info.progress.expect("the last report stays");
    assert_eq!((p.percent, p.message.as_str()), (100, ""));
    let detail = Inspector::new(&c).task(&id).await.unwrap();
    assert!(!detail.fields.contains_key("progress_msg"));

    // A task that never reports has no progress.
    let plain = c
        .enqueue_request(TaskRequest::new("other", "prog", &()).unwrap())
        .await
        .unwrap();
    assert_eq!(c.status(&plain).await.unwrap().progress, None);
}

/// A context holding a lease (as a worker builds it) records reports while its lease holds;
/// once the task was handed back, and once another run holds it, the same context gets
/// `Error::LeaseLost` and the record keeps the last accepted report; the new run's context
/// writes. Bad values are refused before anything is sent, and a context outside any worker
/// checks values and records nothing.
#[tokio::test]
async fn a_run_that_lost_its_lease_gets_lease_lost() {
    let redis = RedisServer::start();
    let c = client(&redis.url(), "lost").await;
    let id = c
        .enqueue_request(TaskRequest::new("job", "lostq", &()).unwrap().id("t1"))
        .await
        .unwrap();
    let store = c.store().clone();
    let shards = c.shards("lostq").await.unwrap();
    let part = store.partition("lostq", id.shard(shards));
    let shared = Arc::new(LeaseStore::new(store.clone(), vec![part.clone()].into()));
    let ctx_of = |token: i64| {
        TaskContext::new(id.clone(), 1, 3, 0, Default::default()).with_lease(
            Arc::clone(&shared),
            0,
            token,
        )
    };
    let report = |info: scheduler::TaskInfo| {
        info.progress
            .map(|p| (p.percent, p.message))
            .expect("a report")
    };

    let claim = store.claim(&part, 10, 30_000, "w1").await.unwrap();
    let first = ctx_of(claim.tasks[0].token);
    first.progress(30, "step 1").await.unwrap();
    assert_eq!(report(c.status(&id).await.unwrap()), (30, "step 1".into()));
    assert!(matches!(
        first.progress(101, "x").await,
        Err(Error::InvalidProgress(_))
    ));

    // Handed back: the task is ready, the first run's lease is gone.
    let out = store
        .release(&part, &[("t1", claim.tasks[0].token)])
        .await
        .unwrap();
    assert_eq!(out, [Outcome::Done]);
    match first.progress(60, "late").await {
        Err(Error::LeaseLost(lost)) => assert_eq!(lost, id),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.status(&id).await.unwrap().state, TaskState::Ready);
    assert_eq!(report(c.status(&id).await.unwrap()), (30, "step 1".into()));

    // Claimed again: running under a new token, which the first context does not hold.
    let again = store.claim(&part, 10, 30_000, "w2").await.unwrap();
    assert!(matches!(
        first.progress(70, "later").await,
        Err(Error::LeaseLost(_))
    ));
    let second = ctx_of(again.tasks[0].token);
    second.progress(10, "second run").await.unwrap();
    assert_eq!(
        report(c.status(&id).await.unwrap()),
        (10, "second run".into())
    );

    // Outside a worker: values checked, nothing recorded anywhere.
    let bare = TaskContext::new(TaskId::new("lostq", "t1"), 1, 3, 0, Default::default());
    bare.progress(99, "unit test").await.unwrap();
    assert!(matches!(
        bare.progress(200, "").await,
        Err(Error::InvalidProgress(_))
    ));
    assert_eq!(
        report(c.status(&id).await.unwrap()),
        (10, "second run".into())
    );
}
