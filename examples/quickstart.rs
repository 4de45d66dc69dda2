//! Quickstart: schedules tasks with a few different delays against the local Redis and shows each
//! run on time (with its lateness on the Redis clock), a retry, a dead-lettered task, a result and
//! a cancellation; then shuts the worker down, deletes its keys and exits 0.
//!
//! ```text
//! cargo run --example quickstart            # Redis at redis://127.0.0.1:6379
//! REDIS_URL=redis://host:6379 cargo run --example quickstart
//! ```

#[path = "demo/support.rs"]
mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use scheduler::{task, Backoff, Client, ClientConfig, TaskContext, TaskError, TaskState, Worker};

/// Sends a reminder; prints how late it started against its due time, both on the Redis clock.
#[task(queue = "reminders", max_retries = 3, timeout = "10s")]
async fn remind(ctx: TaskContext, user: String, delay_ms: u64) -> Result<(), TaskError> {
    let late = ctx.claimed_at_ms() - ctx.due_ms();
    println!("  remind {user:<6} (due after {delay_ms:>4} ms) ran, lateness {late} ms");
    Ok(())
}

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

/// Fails on its first attempt, succeeds on the second.
#[task(queue = "reminders", max_retries = 3)]
async fn flaky(ctx: TaskContext) -> Result<(), TaskError> {
    FLAKY_CALLS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() == 1 {
        println!("  flaky  attempt 1 fails (will be retried)");
        return Err(TaskError::retry("upstream returned 503"));
    }
    println!("  flaky  attempt {} succeeds", ctx.attempt());
    Ok(())
}

/// Always fails: dead-lettered once its one retry is used.
#[task(queue = "reminders", max_retries = 1)]
async fn doomed() -> Result<(), TaskError> {
    Err(TaskError::retry("the mail server rejected the address"))
}

/// Returns a value, stored as the task's result.
#[task(queue = "reminders")]
async fn add(a: i64, b: i64) -> Result<i64, TaskError> {
    Ok(a + b)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A namespace of our own, so the demo never touches anyone else's keys; deleted at the end.
    let ns = format!("quickstart-{}", std::process::id());
    let client =
        Client::with_config(ClientConfig::new(&url).namespace(&ns).default_shards(4)).await?;

    let worker = Worker::builder()
        .redis_url(&url)
        .namespace(&ns)
        .default_shards(4)
        .register(remind)
        .register(flaky)
        .register(doomed)
        .register(add)
        .concurrency(16)
        .backoff(Backoff::Fixed(Duration::from_millis(300)))
        .shutdown_timeout(Duration::from_secs(5))
        .build()
        .await?;
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run(std::future::pending()));

    let start = Instant::now();
    println!("scheduling reminders due in 0, 250, 500, 1000 and 2000 ms (namespace {ns})");
    let mut ids = Vec::new();
    for (user, ms) in [
        ("ann", 0u64),
        ("bob", 250),
        ("cleo", 500),
        ("dan", 1000),
        ("eve", 2000),
    ] {
        let id = remind::new(user.into(), ms)
            .countdown(Duration::from_millis(ms))
            .send(&client)
            .await?;
        ids.push(id);
    }
    let cancelled = remind::new("zed".into(), 1500)
        .countdown(Duration::from_millis(1500))
        .send(&client)
        .await?;
    client.cancel(&cancelled).await?;
    println!("  cancelled {cancelled} before it was due");

    let flaky_id = flaky::new().send(&client).await?;
    let doomed_id = doomed::new().send(&client).await?;
    let sum_id = add::new(2, 3).send(&client).await?;

    let sum: i64 = client.wait_result(&sum_id, Duration::from_secs(10)).await?;
    println!("  add(2, 3) = {sum}");
    for id in ids.iter().chain([&flaky_id]) {
        client
            .wait_result::<()>(id, Duration::from_secs(10))
            .await?;
    }
    // The doomed task fails, is retried once after 300 ms, then goes to the dead set.
    let err = client
        .wait_result::<()>(&doomed_id, Duration::from_secs(10))
        .await
        .expect_err("doomed must fail");
    let info = client.status(&doomed_id).await?;
    println!(
        "  doomed is {} after {} attempts: {}",
        info.state,
        info.attempts,
        info.last_error.as_deref().unwrap_or("")
    );
    assert_eq!(info.state, TaskState::Dead, "{err}");
    assert_eq!(client.status(&cancelled).await?.state, TaskState::Cancelled);
    assert_eq!(FLAKY_CALLS.load(Ordering::SeqCst), 2);
    let stats = client.queue_stats("reminders").await?;
    println!(
        "queue reminders: {} succeeded, {} retried, {} dead, {} cancelled, in {:.2} s",
        stats.counters.get("succeeded").unwrap_or(&0),
        stats.counters.get("retried").unwrap_or(&0),
        stats.counters.get("dead").unwrap_or(&0),
        stats.counters.get("cancelled").unwrap_or(&0),
        start.elapsed().as_secs_f64()
    );

    stop.shutdown();
    let report = running.await?;
    println!(
        "worker stopped: {} succeeded, {} retried, {} dead",
        report.succeeded, report.retried, report.dead
    );
    support::delete_namespace(&client, &ns).await?;
    Ok(())
}
