//! `scheduler-bench`: the benchmarks of issue 3, one scenario per run.
//!
//! ```text
//! cargo run --release -p scheduler-bench -- <scenario> [--tasks N] [--spread-secs S]
//!     [--redis-url URL] [--shards K] [--workers W] [--concurrency C]
//! ```
//!
//! Scenarios: `throughput`, `lateness`, `memory`, `backlog`, `idle`, `scale`, `profile`
//! (Redis cost of each script per task), `backup` (export and import rates), `dashboard`
//! (page times and the slowest Redis command of the web dashboard with N pending tasks),
//! `connections` (one multiplexed connection against pools), `schedules` (N periodic
//! schedules every second: tick lateness and Redis cost per tick) and `archive` (the history
//! archive in PostgreSQL off and on: rates, lag, Redis memory) and `limits` (flow-control
//! limits across worker processes: starts per sliding second under a rate limit, runs at once
//! under a concurrency limit). Without `--redis-url` the bench
//! starts a redis-server of its own on a free port (default settings, no persistence) and kills
//! it at the end; with a `redis+cluster://` URL it measures every master. Each run uses a fresh
//! key namespace and deletes it afterwards (unless `--keep`). Workers are separate processes:
//! this binary started again with `--role worker`. The last line printed is one JSON object;
//! docs/benchmarks.md describes every key.

mod archive;
mod connections;
mod dashboard;
mod limits;
mod pool;
mod probe;
mod scenarios;
mod schedules;
mod stats;
mod task;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Enqueue N (single calls, then bulk), then worker processes drain all 2N.
    Throughput,
    /// N tasks due uniformly over S seconds while workers run: start minus due.
    Lateness,
    /// N tasks due in one hour: used_memory and keys per task.
    Memory,
    /// N tasks already due when the workers start: drain rate, longest command.
    Backlog,
    /// Idle workers on an empty queue: Redis commands per second per worker.
    Idle,
    /// processed/s by shards x worker processes; lateness by due rate.
    Scale,
    /// Redis cost per task of each script (enqueue, promote, claim, ack).
    Profile,
    /// Export N tasks to a file and import them into a fresh namespace: rates, bytes per task,
    /// longest command.
    Backup,
    /// Web dashboard pages with N pending tasks: render time, slowest Redis command.
    Dashboard,
    /// Single enqueues at 64, 256 and 1,024 concurrent producers over one multiplexed
    /// connection and over pools of 4 and 16: throughput and per-call p99.
    Connections,
    /// N ready tasks drained with the history archive off, then on (PostgreSQL): rates,
    /// archive lag, Redis memory before and after.
    Archive,
    /// N periodic schedules firing every second: tick lateness, Redis cost per tick, ticks
    /// missed or run twice.
    Schedules,
    /// Flow-control limits across worker processes: starts per sliding second under a rate
    /// limit, runs at once under a concurrency limit.
    Limits,
    /// N tasks one after another, each enqueued due now and awaited with `wait_result`: ack to
    /// return, and the Redis commands per task (`--events`: woken by task events).
    Wait,
}

/// What this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// Runs a scenario (the default).
    Bench,
    /// A worker process started by a scenario.
    Worker,
}

/// Benchmarks of the scheduler against a Redis it is given or starts itself.
#[derive(Debug, Clone, Parser)]
#[command(name = "scheduler-bench", version)]
pub(crate) struct Args {
    /// Scenario to run.
    #[arg(value_enum, required_unless_present = "role")]
    scenario: Option<Scenario>,
    /// Number of tasks (default per scenario: throughput 100000 (drains 2x), lateness 20000,
    /// memory 100000, backlog 1000000, scale 50000 per grid cell, profile 100000, backup 100000,
    /// dashboard 1000000, connections 20000 per run; schedules: number of schedules, 1000).
    #[arg(long)]
    pub(crate) tasks: Option<u64>,
    /// Seconds the due times are spread over (lateness: 10, scale's lateness runs: 4).
    #[arg(long)]
    pub(crate) spread_secs: Option<f64>,
    /// archive: PostgreSQL URL of a database to connect to for creating the bench's own
    /// database (default postgres://postgres@127.0.0.1:5432/postgres).
    #[arg(long)]
    pub(crate) database_url: Option<String>,
    /// archive: archivers draining the streams while the tasks run (default 1): each one an
    /// in-process worker with the archive on, sharing `--concurrency` between them.
    #[arg(long, default_value_t = 1)]
    pub(crate) archivers: usize,
    /// archive: the archive's bound, entries per partition stream (default the library's,
    /// 100,000).
    #[arg(long)]
    pub(crate) archive_bound: Option<u64>,
    /// archive: data directory of a PostgreSQL cluster of the bench user's own (the one
    /// `--database-url` names), stopped with `pg_ctl stop -m fast` during the archive-on run and
    /// started again `--outage-secs` later: a real outage. Never point it at a shared server.
    #[arg(long)]
    pub(crate) pg_outage_data: Option<std::path::PathBuf>,
    /// archive: the `pg_ctl` binary for `--pg-outage-data` (default `pg_ctl` on the PATH).
    #[arg(long, default_value = "pg_ctl")]
    pub(crate) pg_ctl: std::path::PathBuf,
    /// archive: seconds from the start of the archive-on drain to the outage (default 2).
    #[arg(long, default_value_t = 2.0)]
    pub(crate) outage_at_secs: f64,
    /// archive: seconds PostgreSQL stays down (default 30).
    #[arg(long, default_value_t = 30.0)]
    pub(crate) outage_secs: f64,
    /// Worker processes (throughput, lateness, backlog...) run with the task history archive
    /// on, into the PostgreSQL database at this URL (`WorkerBuilder::archive`, each worker
    /// archiving its own partitions): what the archive costs those scenarios
    /// (`benches/compare.sh --archive URL`). Use a scratch database: rows are left there.
    #[arg(long)]
    pub(crate) archive_url: Option<String>,
    /// backup: tasks per export page (`Exporter::batch`, 1 to 1000; default the library's).
    #[arg(long)]
    pub(crate) export_batch: Option<u32>,
    /// Redis to use; without it a throwaway redis-server is started on a free port.
    #[arg(long)]
    pub(crate) redis_url: Option<String>,
    /// Shards of the bench queue (default 16).
    #[arg(long)]
    pub(crate) shards: Option<u16>,
    /// Worker processes (default 1; idle: 4).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Tasks run at once per worker process.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Concurrent producers of single enqueues (throughput), sharing one connection.
    #[arg(long, default_value_t = 64)]
    pub(crate) producers: usize,
    /// Tasks per bulk enqueue call.
    #[arg(long, default_value_t = 1000)]
    pub(crate) bulk_chunk: usize,
    /// idle: measuring window in seconds (after 3 s of settling); limits: seconds of work at the
    /// limit in each part; schedules: the measured window
    /// (after 2 s of ticks).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) window_secs: f64,
    /// limits: the rate limit, starts per second on one key (default 100).
    #[arg(long, default_value_t = 100)]
    pub(crate) rate: u32,
    /// limits: the concurrency limit on the task name (default 10).
    #[arg(long, default_value_t = 10)]
    pub(crate) limit_concurrency: u32,
    /// limits: rounds of the cost part (unlimited tasks alone, beside 1 limited in 10, beside 1
    /// in 100, interleaved), each figure the median of the rounds (default 1).
    #[arg(long, default_value_t = 1)]
    pub(crate) rounds: usize,
    /// scale: due rates per second of the lateness runs, comma-separated (default
    /// 1000,10000,50000).
    #[arg(long, value_delimiter = ',')]
    pub(crate) rates: Option<Vec<u64>>,
    /// Seconds a succeeded task's record and result are kept (the worker's `result_ttl`; default
    /// 86400, the library's default). 0 deletes a task when it succeeds, like BullMQ's
    /// `removeOnComplete`.
    #[arg(long, default_value_t = 86_400)]
    pub(crate) result_ttl_secs: u64,
    /// Run middlewares registered on each worker process, each with every hook a no-op that
    /// returns at once (`WorkerBuilder::middleware`): what middleware costs a run. Default 0.
    #[arg(long, default_value_t = 0)]
    pub(crate) middleware: usize,
    /// lateness, wait: task events on for the bench queue (`Client::set_events`), with one subscriber
    /// counting them: what events cost a task (`redis_calls_per_task` with and without).
    #[arg(long)]
    pub(crate) events: bool,
    /// wait: each task is a workflow (a group of that one task), started with
    /// `Client::start_workflow` and awaited with `Client::wait_workflow` (`--events`: woken by
    /// the workflow's end).
    #[arg(long)]
    pub(crate) workflow: bool,
    /// wait --workflow: the member sleeps this long before it returns (the `held` task), so
    /// that the waiter is subscribed before the end. Default 0 (the `noop` task).
    #[arg(long, default_value_t = 0)]
    pub(crate) member_ms: u64,
    /// Keep the run's keys instead of deleting its namespace at the end.
    #[arg(long)]
    pub(crate) keep: bool,
    /// `worker` for the worker processes the bench starts.
    #[arg(long, value_enum, default_value = "bench")]
    role: Role,
    /// Worker role: key namespace.
    #[arg(long, hide = true)]
    namespace: Option<String>,
    /// Worker role: Redis clock minus local clock, µs.
    #[arg(long, hide = true, default_value_t = 0, allow_hyphen_values = true)]
    offset_us: i64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Built with `--features otlp` and given OTEL_EXPORTER_OTLP_ENDPOINT: every process (the
    // producer and the worker children, which inherit the variables) exports its spans, to
    // measure the cost of tracing with an exporter on (docs/operations.md). RUST_LOG must then
    // enable the spans (`info`).
    #[cfg(feature = "otlp")]
    let _otel = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(_) => Some(scheduler::otel::init_with_writer(
            scheduler::logging::LogFormat::Text,
            std::io::stderr,
        )?),
        None => None,
    };
    #[cfg(feature = "otlp")]
    let traced = _otel.is_some();
    #[cfg(not(feature = "otlp"))]
    let traced = false;
    if !traced {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.role {
            Role::Worker => {
                let spec = pool::WorkerSpec {
                    url: args.redis_url.clone().context("--redis-url")?,
                    namespace: args.namespace.clone().context("--namespace")?,
                    shards: args.shards.unwrap_or(16),
                    concurrency: args.concurrency,
                    offset_us: args.offset_us,
                    result_ttl_secs: args.result_ttl_secs,
                    middleware: args.middleware,
                    archive_url: args.archive_url.clone(),
                };
                pool::child_main(spec).await
            }
            Role::Bench => bench(args).await,
        }
    })
}

async fn bench(args: Args) -> Result<()> {
    scenarios::check_args(&args)?;
    let scenario = args.scenario.context("name a scenario")?;
    let mut env = probe::Env::setup(args.redis_url.clone()).await?;
    println!(
        "scheduler-bench {scenario:?}: Redis {} at {}{}, clock offset {} µs, load average {:.2}",
        env.version,
        env.url,
        if args.redis_url.is_none() {
            " (own redis-server)"
        } else {
            ""
        },
        env.offset_us,
        probe::load_avg()
    );
    let out = match scenario {
        Scenario::Throughput => scenarios::throughput(&mut env, &args).await?,
        Scenario::Lateness => scenarios::lateness(&mut env, &args).await?,
        Scenario::Memory => scenarios::memory(&mut env, &args).await?,
        Scenario::Backlog => scenarios::backlog(&mut env, &args).await?,
        Scenario::Idle => scenarios::idle(&mut env, &args).await?,
        Scenario::Scale => scenarios::scale(&mut env, &args).await?,
        Scenario::Profile => scenarios::profile(&mut env, &args).await?,
        Scenario::Backup => scenarios::backup(&mut env, &args).await?,
        Scenario::Dashboard => dashboard::dashboard(&mut env, &args).await?,
        Scenario::Connections => connections::connections(&mut env, &args).await?,
        Scenario::Archive => archive::archive(&mut env, &args).await?,
        Scenario::Schedules => schedules::schedules(&mut env, &args).await?,
        Scenario::Limits => limits::limits(&mut env, &args).await?,
        Scenario::Wait => scenarios::wait(&mut env, &args).await?,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
