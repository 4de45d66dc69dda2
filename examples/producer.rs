//! A producer: enqueues demo tasks (see `examples/demo/tasks.rs`) now, after a delay, at a
//! moment, in bulk, and with a unique id; waits for a result. Run `examples/worker.rs` beside it.
//!
//! ```text
//! cargo run --example worker &                     # one or more workers
//! cargo run --example producer -- --count 1000 --spread-secs 10
//! ```

#[path = "demo/tasks.rs"]
mod tasks;

use std::time::{Duration, SystemTime};

use clap::Parser;
use scheduler::{Client, ClientConfig, Task};

/// Enqueues demo tasks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Key namespace.
    #[arg(long, env = "SCHED_NAMESPACE", default_value = "sched")]
    namespace: String,
    /// Reminders to schedule in bulk.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Spread the reminders' due times uniformly over this many seconds.
    #[arg(long, default_value_t = 5)]
    spread_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client =
        Client::with_config(ClientConfig::new(&args.redis_url).namespace(&args.namespace)).await?;

    // Now, after a delay, and at a moment.
    let now = tasks::expire_coupon::new("SPRING24".into())
        .send(&client)
        .await?;
    let later = tasks::send_reminder::new(7, "your trial ends soon".into())
        .countdown(Duration::from_secs(2))
        .send(&client)
        .await?;
    let at = tasks::send_reminder::new(8, "happy birthday".into())
        .eta(SystemTime::now() + Duration::from_secs(3))
        .send(&client)
        .await?;
    println!("enqueued {now}, {later} (in 2 s), {at} (at now + 3 s)");

    // A unique id makes enqueue idempotent: the second call returns the same task.
    let a = tasks::expire_coupon::new("ORDER-1".into())
        .id("expire-ORDER-1")
        .send(&client)
        .await?;
    let b = tasks::expire_coupon::new("ORDER-1".into())
        .id("expire-ORDER-1")
        .send(&client)
        .await?;
    assert_eq!(a, b);
    println!("unique task {a} enqueued twice, stored once");

    // Bulk: one pipelined round trip per 64 script calls of 100 tasks.
    let spread_ms = args.spread_secs * 1000;
    let reqs = (0..args.count)
        .map(|i| {
            tasks::send_reminder::call((i, format!("reminder {i}")))
                .countdown(Duration::from_millis(i * spread_ms / args.count.max(1)))
                .into_request()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let created = client.enqueue_bulk(reqs).await?;
    println!(
        "bulk-enqueued {} reminders over {} s",
        created.len(),
        args.spread_secs
    );

    // A result.
    let id = tasks::render_receipt::new(42, vec![1999, 500])
        .send(&client)
        .await?;
    let receipt: tasks::Receipt = client.wait_result(&id, Duration::from_secs(30)).await?;
    println!("receipt: {receipt:?}");
    Ok(())
}
