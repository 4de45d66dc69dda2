//! `scheduler::testing` as a user's test uses it (the example of docs/testing.md): a coupon
//! scheduled 30 days ahead runs in a test that takes a second, a retry waiting for its backoff
//! is made due, and time travel is refused on a namespace not marked for tests.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use scheduler::testing::{advance, drain, make_due, TestRedis};
use scheduler::{task, Client, Error, TaskError, TaskState};

static FLAKY_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "coupons")]
async fn expire_coupon(code: String) -> Result<String, TaskError> {
    Ok(format!("{code} expired"))
}

#[task(queue = "coupons", max_retries = 3)]
async fn flaky() -> Result<(), TaskError> {
    if FLAKY_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(TaskError::retry_after(
            "first run fails",
            Duration::from_secs(3600),
        ));
    }
    Ok(())
}

/// A task due in 30 days runs after `advance`; one due in 60 days stays scheduled.
#[tokio::test]
async fn advance_runs_a_task_scheduled_days_ahead() -> Result<(), Error> {
    let redis = TestRedis::start()?;
    let client = redis.client().await?;
    let day = Duration::from_secs(86_400);
    let soon = expire_coupon::new("WELCOME".into())
        .countdown(30 * day)
        .send(&client)
        .await?;
    let later = expire_coupon::new("SPRING".into())
        .countdown(60 * day)
        .send(&client)
        .await?;
    assert_eq!(advance(&client, "coupons", 31 * day).await?, 1);

    let worker = redis.worker().register(expire_coupon).build().await?;
    let report = drain(worker, &client, Duration::from_secs(20)).await?;
    assert_eq!(report.succeeded, 1);
    assert_eq!(client.status(&soon).await?.state, TaskState::Succeeded);
    let out: String = client.wait_result(&soon, Duration::from_secs(1)).await?;
    assert_eq!(out, "WELCOME expired");
    assert_eq!(client.status(&later).await?.state, TaskState::Scheduled);

    // One task by id; a second call finds it no longer scheduled.
    assert!(make_due(&client, &later).await?);
    assert!(!make_due(&client, &later).await?);
    let worker = redis.worker().register(expire_coupon).build().await?;
    drain(worker, &client, Duration::from_secs(20)).await?;
    assert_eq!(client.status(&later).await?.state, TaskState::Succeeded);
    Ok(())
}

/// A failed run waits for its backoff; `advance` makes the retry due and `drain` runs it.
#[tokio::test]
async fn advance_skips_a_retry_backoff() -> Result<(), Error> {
    let redis = TestRedis::start()?;
    let client = redis.client_in("retries").await?;
    let id = flaky::new().send(&client).await?;
    let worker = || redis.worker().namespace("retries").register(flaky);
    drain(worker().build().await?, &client, Duration::from_secs(20)).await?;
    let info = client.status(&id).await?;
    assert_eq!(info.state, TaskState::Scheduled, "waiting an hour to retry");
    assert_eq!(
        advance(&client, "coupons", Duration::from_secs(2 * 3600)).await?,
        1
    );
    drain(worker().build().await?, &client, Duration::from_secs(20)).await?;
    assert_eq!(client.status(&id).await?.state, TaskState::Succeeded);
    assert_eq!(FLAKY_RUNS.load(Ordering::SeqCst), 2);
    Ok(())
}

/// The marker is what allows time travel: a namespace without it (any server `TestRedis` did not
/// set up) gets a typed error and its task keeps its due time.
#[tokio::test]
async fn time_travel_is_refused_without_the_test_marker() -> Result<(), Error> {
    let redis = TestRedis::start()?;
    let unmarked = Client::connect(&redis.url()).await?;
    let id = expire_coupon::new("X".into())
        .countdown(Duration::from_secs(3600))
        .send(&unmarked)
        .await?;
    let due = unmarked.status(&id).await?.run_at_ms;
    match advance(&unmarked, "coupons", Duration::from_secs(7200)).await {
        Err(Error::NotATestNamespace(ns)) => assert_eq!(ns, "sched"),
        other => panic!("expected NotATestNamespace, got {other:?}"),
    }
    assert!(matches!(
        make_due(&unmarked, &id).await,
        Err(Error::NotATestNamespace(_))
    ));
    let info = unmarked.status(&id).await?;
    assert_eq!(info.state, TaskState::Scheduled);
    assert_eq!(info.run_at_ms, due);
    Ok(())
}
