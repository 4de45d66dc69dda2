//! The worker binary of the kind you deploy on many hosts (systemd, Kubernetes): serves the demo
//! tasks of `examples/demo/tasks.rs` until SIGTERM or SIGINT, then shuts down gracefully.
//!
//! ```text
//! cargo run --release --example worker -- --redis-url redis://127.0.0.1:6379 --concurrency 64
//! REDIS_URL=redis://10.0.0.5:6379 WORKER_QUEUES=emails,default cargo run --example worker
//! ```
//!
//! Logs: `RUST_LOG` sets the filter (default `info`), `--log-format json` emits JSON lines.
//! Metrics: `--metrics-addr 0.0.0.0:9090` serves them in the Prometheus format (names in
//! `scheduler::metrics`; `WorkerBuilder::metrics_addr`, feature `prometheus` of `scheduler`);
//! `--queue-metrics-secs 15` adds the per-queue backlog gauge. Logs: `scheduler::logging`.
//! Traces: built with `--features otlp`, spans go to the OTLP collector the `OTEL_*` variables
//! name (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`...; `scheduler::otel::init`).

#[path = "demo/tasks.rs"]
mod tasks;

use std::time::Duration;

use clap::Parser;
use scheduler::logging::LogFormat;
use scheduler::Worker;

/// Runs scheduler tasks from Redis.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Key namespace.
    #[arg(long, env = "SCHED_NAMESPACE", default_value = "sched")]
    namespace: String,
    /// Queues to serve, comma-separated (default: the queues of the registered tasks).
    #[arg(long, env = "WORKER_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
    /// Serve `--queues` in strict priority order, first highest: a queue is claimed from only
    /// while every queue before it has no ready task.
    #[arg(long, env = "WORKER_STRICT_PRIORITY", requires = "queues")]
    strict_priority: bool,
    /// Queues to serve with weights, e.g. `critical=6,default=3,low=1`: while several have
    /// ready tasks, each gets that share of the claims (instead of `--queues`).
    #[arg(long, env = "WORKER_QUEUE_WEIGHTS", value_delimiter = ',', value_parser = weight,
          conflicts_with_all = ["queues", "strict_priority"])]
    queue_weights: Vec<(String, u32)>,
    /// Tasks run at once by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// Cap of the adaptive prefetch, as a multiple of the concurrency (0: claim only for free
    /// slots). The worker claims ahead only what it completes in about two claim round trips.
    /// See `WorkerConfig::prefetch_multiplier`.
    #[arg(long, env = "WORKER_PREFETCH_MULTIPLIER", default_value_t = 8)]
    prefetch_multiplier: usize,
    /// Shards of a queue this worker is the first to use.
    #[arg(long, env = "WORKER_SHARDS", default_value_t = 16)]
    shards: u16,
    /// Seconds a graceful shutdown waits for running tasks before handing them back.
    #[arg(long, env = "WORKER_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    shutdown_timeout_secs: u64,
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9090), at any path.
    #[arg(long, env = "METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Publish each served queue's task counts as a gauge every this many seconds (0: off).
    #[arg(long, env = "QUEUE_METRICS_SECS", default_value_t = 0)]
    queue_metrics_secs: u64,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// One `queue=weight` of `--queue-weights` (a weight of 0 is refused when the worker is built).
fn weight(s: &str) -> Result<(String, u32), String> {
    let (q, w) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected queue=weight"))?;
    let w = w
        .parse()
        .map_err(|e| format!("{s:?}: weight {w:?} is not a whole number: {e}"))?;
    Ok((q.to_owned(), w))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // With the `otlp` feature: log lines plus spans exported over OTLP; the guard flushes the
    // last spans when main returns.
    #[cfg(feature = "otlp")]
    let _otel = scheduler::otel::init(args.log_format)?;
    #[cfg(not(feature = "otlp"))]
    scheduler::logging::init(args.log_format)?;
    let mut builder = Worker::builder()
        .redis_url(&args.redis_url)
        .namespace(&args.namespace)
        .register(tasks::send_reminder)
        .register(tasks::expire_coupon)
        .register(tasks::render_receipt)
        .concurrency(args.concurrency)
        .prefetch_multiplier(args.prefetch_multiplier)
        .default_shards(args.shards)
        .shutdown_timeout(Duration::from_secs(args.shutdown_timeout_secs));
    if let Some(addr) = args.metrics_addr {
        builder = builder.metrics_addr(addr);
    }
    if args.queue_metrics_secs > 0 {
        builder = builder.queue_metrics(Duration::from_secs(args.queue_metrics_secs));
    }
    if !args.queue_weights.is_empty() {
        builder = builder.queue_weights(args.queue_weights);
    } else if args.strict_priority {
        builder = builder.strict_priority(args.queues);
    } else if !args.queues.is_empty() {
        builder = builder.queues(args.queues);
    }
    let report = builder.build().await?.run_until_shutdown_signal().await?;
    tracing::info!(?report, "bye");
    Ok(())
}
