//! The worker process the chaos harness (`examples/chaos.rs`) starts, kills, stops and resumes;
//! not an example to copy.
//!
//! It registers one task, `chaos_rec(ms, mode)`. Every run appends a start line to
//! `<record-dir>/w-<pid>.log` (`S <id> <attempt> <pid> <claimed_at_ms> <due_ms> <local_ms>`: claim
//! and due times on the Redis clock, then this process's own clock), sleeps `ms`, then appends a done line (`D <id> <attempt> <pid>`). With
//! `mode = 1` it calls `std::process::abort()` after the start line (a poison task). The log is
//! a plain file written with one `write` per line (O_APPEND), so the lines a process wrote
//! survive its `kill -9` and a Redis crash.
//!
//! On a graceful stop it prints its report as `key=value` lines (and `pid=<pid>`) and exits 0.
//!
//! Clock skew (scenario 10): `CHAOS_CLOCK_OFFSET_MS=<+/-ms>` shifts this process's own notion of
//! wall-clock time. The worker runtime reads no wall clock to decide due-ness (the Redis clock,
//! `TIME` inside the scripts, decides; the promoter maps server times to monotonic instants), so
//! the offset only reaches what this process computes itself: the start line gets a 7th field,
//! the skewed local time at the start (unix ms), which shows the offset was in force.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use scheduler::{task, TaskContext, TaskError, Worker};

/// Flags of the chaos worker.
#[derive(Debug, Parser)]
struct Args {
    /// Redis URL.
    #[arg(long)]
    redis_url: String,
    /// Key namespace.
    #[arg(long, default_value = "chaos")]
    namespace: String,
    /// Queue to serve.
    #[arg(long, default_value = "chaos")]
    queue: String,
    /// Tasks run at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Lease of a claimed task, ms.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Promoter lock TTL, ms.
    #[arg(long, default_value_t = 10_000)]
    lock_ttl_ms: u64,
    /// Graceful shutdown wait for running tasks, ms.
    #[arg(long, default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
    /// Sweep interval, ms.
    #[arg(long, default_value_t = 1_000)]
    sweep_ms: u64,
    /// Directory of the per-process run logs.
    #[arg(long)]
    record_dir: String,
    /// How long a succeeded task's record is kept, ms (0: deleted at success).
    #[arg(long)]
    result_ttl_ms: Option<u64>,
}

/// This process's skewed wall clock: the host clock plus `CHAOS_CLOCK_OFFSET_MS`, unix ms.
fn local_now_ms() -> i64 {
    let offset: i64 = std::env::var("CHAOS_CLOCK_OFFSET_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    host + offset
}

/// The run log of this process.
#[derive(Debug)]
struct Log(Mutex<File>);

impl Log {
    fn line(&self, s: String) -> Result<(), TaskError> {
        let mut f = self.0.lock().expect("log poisoned");
        f.write_all(s.as_bytes())
            .map_err(|e| TaskError::retry(format!("run log: {e}")))
    }
}

/// Logs the start, sleeps `ms`, logs the end; `mode = 1` aborts the process instead.
#[task(name = "chaos_rec", queue = "chaos", max_retries = 3, timeout = "600s")]
async fn chaos_rec(ctx: TaskContext, ms: u64, mode: u8) -> Result<(), TaskError> {
    let log = ctx.state::<Log>()?;
    let pid = std::process::id();
    log.line(format!(
        "S {} {} {} {} {} {}\n",
        ctx.id().id(),
        ctx.attempt(),
        pid,
        ctx.claimed_at_ms(),
        ctx.due_ms(),
        local_now_ms()
    ))?;
    if mode == 1 {
        std::process::abort();
    }
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    log.line(format!("D {} {} {}\n", ctx.id().id(), ctx.attempt(), pid))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let path = format!("{}/w-{}.log", args.record_dir, std::process::id());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let mut builder = Worker::builder();
    if let Some(ms) = args.result_ttl_ms {
        builder = builder.result_ttl(Duration::from_millis(ms));
    }
    let worker = builder
        .redis_url(&args.redis_url)
        .namespace(&args.namespace)
        .queues([args.queue.as_str()])
        .concurrency(args.concurrency)
        .lease(Duration::from_millis(args.lease_ms))
        .lock_ttl(Duration::from_millis(args.lock_ttl_ms))
        .sweep_interval(Duration::from_millis(args.sweep_ms))
        .shutdown_timeout(Duration::from_millis(args.shutdown_timeout_ms))
        .register(chaos_rec)
        .state(Log(Mutex::new(file)))
        .build()
        .await?;
    let report = worker.run_until_shutdown_signal().await?;
    println!("pid={}", std::process::id());
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
