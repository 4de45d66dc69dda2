//! A worker binary used by the integration tests (`tests/worker_recovery.rs`,
//! `tests/ha_multiprocess.rs`, `tests/workflows_processes.rs`...); not an example to copy.
//!
//! The tests start it as a child process, then kill it with SIGKILL (crash recovery) or stop it
//! with SIGTERM (graceful shutdown), which an in-process worker cannot show.
//!
//! It registers one task, `sleep_then_record(ms, tag)`: sleep `ms` milliseconds, then `RPUSH`
//! `<tag>:<attempt>` to the Redis list `--record-list` (an empty tag records the task id
//! instead), so a test sees which runs completed. With `--schedule-every-ms N` it also declares
//! the periodic schedule `--schedule-name` (default `tick`) running `sleep_then_record(0, "")`
//! every N ms (`tests/schedules.rs`).
//!
//! For the workflow tests (`tests/workflows_processes.rs`) it also registers `wf_member(n, ms)`
//! (sleep `ms`, then `2 n`), `wf_append(step, acc)` (`acc` with `step` appended: a chain of them
//! returns the order its steps ran in) and `wf_total(results)`, a chord's callback: it appends
//! `wf_total:<attempt>:<number of results>` to the record list and returns `results` unchanged.
//!
//! On a graceful stop it prints the worker's report to stdout as `key=value` lines
//! (`released=2`, ...) and exits 0.
//!
//! ```text
//! cargo run -p scheduler-chaos --bin test_worker -- --redis-url redis://127.0.0.1:7000 --queue q --lease-ms 1000
//! ```

use std::time::Duration;

use clap::Parser;
use scheduler::redis::aio::ConnectionManager;
use scheduler::redis::AsyncCommands;
use scheduler::{task, Schedule, TaskContext, TaskError, Worker};

/// Flags of the test worker; every one also reads an environment variable.
#[derive(Debug, Parser)]
#[command(about = "Worker process driven by the integration tests")]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Key namespace.
    #[arg(long, env = "SCHED_NAMESPACE", default_value = "sched")]
    namespace: String,
    /// Queues to serve, comma-separated (the first one receives the schedule's ticks).
    #[arg(
        long,
        env = "SCHED_QUEUE",
        default_value = "default",
        value_delimiter = ','
    )]
    queue: Vec<String>,
    /// Tasks run at once.
    #[arg(long, env = "SCHED_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Lease (visibility timeout) of a claimed task, ms.
    #[arg(long, env = "SCHED_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,
    /// Promoter lock TTL, ms.
    #[arg(long, env = "SCHED_LOCK_TTL_MS", default_value_t = 15_000)]
    lock_ttl_ms: u64,
    /// How long a graceful shutdown waits for running tasks, ms.
    #[arg(long, env = "SCHED_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
    /// Tasks claimed ahead of free slots, as a multiple of the concurrency (0: none).
    #[arg(long, env = "SCHED_PREFETCH_MULTIPLIER", default_value_t = 8)]
    prefetch_multiplier: usize,
    /// Redis list that `sleep_then_record` appends `<tag>:<attempt>` to.
    #[arg(long, env = "SCHED_RECORD_LIST", default_value = "test:record")]
    record_list: String,
    /// Declare a periodic schedule running `sleep_then_record(0, "")` every this many ms.
    #[arg(long)]
    schedule_every_ms: Option<u64>,
    /// The declared schedule's name.
    #[arg(long, default_value = "tick")]
    schedule_name: String,
    /// How often the schedule component looks for due ticks (ms).
    #[arg(long, default_value_t = 1000)]
    schedule_poll_ms: u64,
    /// Result TTL in ms (default: the worker's).
    #[arg(long)]
    result_ttl_ms: Option<u64>,
}

/// Where `sleep_then_record` writes: a connection and the list's key.
#[derive(Debug)]
struct Recorder {
    conn: ConnectionManager,
    list: String,
}

/// Sleeps `ms` milliseconds, then appends `<tag>:<attempt>` to the record list.
#[task(name = "sleep_then_record", max_retries = 3)]
async fn sleep_then_record(ctx: TaskContext, ms: u64, tag: String) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let rec = ctx.state::<Recorder>()?;
    let mut conn = rec.conn.clone();
    let tag = if tag.is_empty() {
        ctx.id().id().to_owned()
    } else {
        tag
    };
    let _: i64 = conn
        .rpush(&rec.list, format!("{tag}:{}", ctx.attempt()))
        .await?;
    Ok(())
}

/// A chord member: sleeps `ms` milliseconds, then returns `2 n`.
#[task(name = "wf_member", max_retries = 3)]
async fn wf_member(n: u64, ms: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(n * 2)
}

/// A chain step: `acc` with `step` appended.
#[task(name = "wf_append", max_retries = 3)]
async fn wf_append(step: u32, mut acc: Vec<u32>) -> Result<Vec<u32>, TaskError> {
    acc.push(step);
    Ok(acc)
}

/// A chord's callback: records the run (`wf_total:<attempt>:<number of results>`), then returns
/// the results it received.
#[task(name = "wf_total", max_retries = 3)]
async fn wf_total(ctx: TaskContext, results: Vec<u64>) -> Result<Vec<u64>, TaskError> {
    let rec = ctx.state::<Recorder>()?;
    let mut conn = rec.conn.clone();
    let _: i64 = conn
        .rpush(
            &rec.list,
            format!("wf_total:{}:{}", ctx.attempt(), results.len()),
        )
        .await?;
    Ok(results)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let conn = scheduler::redis::Client::open(args.redis_url.as_str())?
        .get_connection_manager()
        .await?;
    let mut builder = Worker::builder();
    if let Some(every) = args.schedule_every_ms {
        builder = builder
            .schedule(
                Schedule::every(&args.schedule_name, Duration::from_millis(every))?
                    .task(sleep_then_record::new(0, String::new()).queue(&args.queue[0]))?,
            )
            .schedule_poll(Duration::from_millis(args.schedule_poll_ms));
    }
    if let Some(ttl) = args.result_ttl_ms {
        builder = builder.result_ttl(Duration::from_millis(ttl));
    }
    let worker = builder
        .redis_url(&args.redis_url)
        .namespace(&args.namespace)
        .queues(args.queue.iter().map(String::as_str))
        .concurrency(args.concurrency)
        .prefetch_multiplier(args.prefetch_multiplier)
        .lease(Duration::from_millis(args.lease_ms))
        .lock_ttl(Duration::from_millis(args.lock_ttl_ms))
        .sweep_interval(Duration::from_millis(500))
        .shutdown_timeout(Duration::from_millis(args.shutdown_timeout_ms))
        .register(sleep_then_record)
        .register(wf_member)
        .register(wf_append)
        .register(wf_total)
        .state(Recorder {
            conn,
            list: args.record_list,
        })
        .build()
        .await?;
    let report = worker.run_until_shutdown_signal().await?;
    println!("claimed={}", report.claimed);
    println!("succeeded={}", report.succeeded);
    println!("released={}", report.released);
    println!("retried={}", report.retried);
    println!("dead={}", report.dead);
    println!("stale={}", report.stale);
    println!("reaped={}", report.reaped);
    println!("promoted={}", report.promoted);
    Ok(())
}
