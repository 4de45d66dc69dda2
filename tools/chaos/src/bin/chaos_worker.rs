//! The worker process the chaos harness (`chaos`, `src/bin/chaos/`) starts, kills, stops and
//! resumes; not an example to copy.
//!
//! It registers one task, `chaos_rec(ms, mode)`. Every run appends a start line to
//! `<record-dir>/w-<pid>.log` (`S <id> <attempt> <pid> <claimed_at_ms> <due_ms> <local_ms>`: claim
//! and due times on the Redis clock, then this process's own clock), sleeps `ms`, then appends a
//! done line (`D <id> <attempt> <pid>`). At its start the process appends a clock line
//! (`C <pid> <local_ms> <redis_ms>`: its own clock beside Redis' `TIME`). With
//! `mode = 1` it calls `std::process::abort()` after the start line (a poison task), every run;
//! with `mode = 1 + k` only during the task's first `k` runs (a task whose worker is lost `k`
//! times while running it, then completes).
//!
//! Worker settings: only the flags the harness passes are set; everything else is the library
//! default, so the figures of a scenario hold for the defaults plus the settings it names. The log is
//! a plain file written with one `write` per line (O_APPEND), so the lines a process wrote
//! survive its `kill -9` and a Redis crash.
//!
//! On a graceful stop it prints its report as `key=value` lines (and `pid=<pid>`) and exits 0.
//!
//! Periodic schedule (scenarios `schedule-ticks*`, `src/bin/chaos/ticks.rs`): with
//! `--schedule-every-ms N` it also declares the schedule `--schedule-name` (default `tick`)
//! running `chaos_rec(0, 0)` on the first `--queue` every N ms, so every tick's run is a start
//! line whose id is the tick's (`tick@<tick ms>`, maybe `~<k>`).
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
use scheduler::{task, Schedule, TaskContext, TaskError, Worker};

/// Flags of the chaos worker. Every worker setting is optional: a flag the harness does not pass
/// leaves the library default (`WorkerConfig::default()`) in force, so a scenario runs with
/// exactly the settings its JSON line names under `"settings"` and the defaults otherwise.
#[derive(Debug, Parser)]
struct Args {
    /// Redis URL.
    #[arg(long)]
    redis_url: String,
    /// Key namespace.
    #[arg(long, default_value = "chaos")]
    namespace: String,
    /// Queues to serve, comma-separated.
    #[arg(long, default_value = "chaos", value_delimiter = ',')]
    queue: Vec<String>,
    /// Directory of the per-process run logs.
    #[arg(long)]
    record_dir: String,
    /// Tasks run at once (library default when absent).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Lease of a claimed task, ms (library default when absent).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Promoter lock TTL, ms (library default when absent).
    #[arg(long)]
    lock_ttl_ms: Option<u64>,
    /// Graceful shutdown wait for running tasks, ms (library default when absent).
    #[arg(long)]
    shutdown_timeout_ms: Option<u64>,
    /// Safety sweep interval, ms (library default when absent).
    #[arg(long)]
    sweep_ms: Option<u64>,
    /// How long a succeeded task's record is kept, ms (0: deleted at success; library default
    /// when absent).
    #[arg(long)]
    result_ttl_ms: Option<u64>,
    /// Declare a periodic schedule running `chaos_rec(0, 0)` on the first queue every this many
    /// ms (none: no schedule).
    #[arg(long)]
    schedule_every_ms: Option<u64>,
    /// The declared schedule's name.
    #[arg(long, default_value = "tick")]
    schedule_name: String,
    /// How often the schedule component looks for due ticks, ms (library default when absent).
    #[arg(long)]
    schedule_poll_ms: Option<u64>,
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

/// The run log of this process, and the directory of every process's run log.
#[derive(Debug)]
struct Log {
    file: Mutex<File>,
    dir: String,
}

impl Log {
    fn line(&self, s: String) -> Result<(), TaskError> {
        let mut f = self.file.lock().expect("log poisoned");
        f.write_all(s.as_bytes())
            .map_err(|e| TaskError::retry(format!("run log: {e}")))
    }

    /// Runs of task `id` started so far by any worker process (start lines in every run log of
    /// the directory, this run's included).
    fn starts_of(&self, id: &str) -> usize {
        let prefix = format!("S {id} ");
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("w-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .map(|text| text.lines().filter(|l| l.starts_with(&prefix)).count())
            .sum()
    }
}

/// Logs the start, sleeps `ms`, logs the end. `mode = 1` aborts the process instead, every run;
/// `mode = 1 + k` (k >= 1) aborts it during the task's first `k` runs (counted across every
/// process's run log), then runs normally: a task whose worker was lost `k` times.
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
    if mode == 1 || (mode > 1 && log.starts_of(ctx.id().id()) < usize::from(mode)) {
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
    // Only what the harness passed overrides the library defaults.
    let ms = Duration::from_millis;
    let mut builder = Worker::builder()
        .redis_url(&args.redis_url)
        .namespace(&args.namespace)
        .queues(args.queue.iter().map(String::as_str));
    if let Some(n) = args.concurrency {
        builder = builder.concurrency(n);
    }
    if let Some(v) = args.lease_ms {
        builder = builder.lease(ms(v));
    }
    if let Some(v) = args.lock_ttl_ms {
        builder = builder.lock_ttl(ms(v));
    }
    if let Some(v) = args.sweep_ms {
        builder = builder.sweep_interval(ms(v));
    }
    if let Some(v) = args.shutdown_timeout_ms {
        builder = builder.shutdown_timeout(ms(v));
    }
    if let Some(v) = args.result_ttl_ms {
        builder = builder.result_ttl(ms(v));
    }
    if let Some(every) = args.schedule_every_ms {
        let queue = args.queue.first().map_or("chaos", String::as_str);
        builder = builder.schedule(
            Schedule::every(&args.schedule_name, ms(every))?
                .task(chaos_rec::new(0, 0).queue(queue))?,
        );
    }
    if let Some(v) = args.schedule_poll_ms {
        builder = builder.schedule_poll(ms(v));
    }
    // The clock line: this process's own clock beside the Redis clock, once at the start, so
    // the harness sees the offset in force even in a process that ends up running no task.
    let mut conn = redis::Client::open(args.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let line = format!(
        "C {} {} {}\n",
        std::process::id(),
        local_now_ms(),
        secs * 1000 + micros / 1000
    );
    (&file).write_all(line.as_bytes())?;
    let worker = builder
        .register(chaos_rec)
        .state(Log {
            file: Mutex::new(file),
            dir: args.record_dir.clone(),
        })
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
