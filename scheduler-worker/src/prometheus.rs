//! Serving the metrics in the Prometheus format (feature `prometheus`): [`install`] puts the
//! `metrics-exporter-prometheus` recorder in place as the process's global recorder, serves
//! every metric on an HTTP address (any path answers; scrape `/metrics`), and adds the process
//! metrics of `metrics-process` (CPU, memory, open file descriptors — Redis connections
//! included — threads), read every [`PROCESS_METRICS_EVERY`].
//!
//! [`crate::WorkerBuilder::metrics_addr`] calls it; a producer-only process (a web service that
//! only enqueues) calls it itself. Histogram buckets are chosen per metric for what it measures:
//! lateness and Redis round trips from 100 µs, run durations up to minutes.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use scheduler_core::Error;

use crate::metrics;

/// How often the process metrics are read (`/proc/self`): a few system calls each time.
pub const PROCESS_METRICS_EVERY: Duration = Duration::from_secs(5);

/// Buckets (seconds) of the lateness and promoter lag histograms: the precision promised is a
/// few milliseconds, and a second or more means saturated or missing workers.
const LATENESS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0,
];
/// Buckets (seconds) of Redis round trips and enqueue calls.
const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0,
];
/// Buckets (seconds) of task run durations.
const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0];

/// Installs the Prometheus recorder as the global `metrics` recorder, serves the metrics on
/// `addr` over HTTP, and starts reading the process metrics. Call it once per process, from
/// within a Tokio runtime (the HTTP listener and the process reader run on it).
///
/// # Errors
///
/// [`Error::InvalidConfig`] when the address cannot be listened on or another global recorder
/// is installed already (a process has one; a second call fails), or when called outside a
/// Tokio runtime.
///
/// # Examples
///
/// A producer-only process serving its enqueue metrics (a worker uses
/// [`crate::WorkerBuilder::metrics_addr`] instead):
///
/// ```no_run
/// # async fn demo() -> Result<(), scheduler_core::Error> {
/// scheduler_worker::prometheus::install("0.0.0.0:9091".parse().unwrap())?;
/// let client = scheduler_core::Client::connect("redis://127.0.0.1:6379").await?;
/// # drop(client); Ok(()) }
/// ```
pub fn install(addr: SocketAddr) -> Result<(), Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::InvalidConfig(
            "metrics: prometheus::install must be called within a Tokio runtime".into(),
        ));
    }
    let bad = |e: metrics_exporter_prometheus::BuildError| {
        Error::InvalidConfig(format!("metrics on {addr}: {e}"))
    };
    // Binding here first gives a clear error for a taken address; the exporter binds it again
    // once this probe is dropped.
    std::net::TcpListener::bind(addr)
        .map_err(|e| Error::InvalidConfig(format!("metrics on {addr}: {e}")))?;
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for (name, buckets) in [
        (metrics::LATENESS, LATENESS_BUCKETS),
        (metrics::PROMOTER_LAG, LATENESS_BUCKETS),
        (metrics::REDIS_ROUND_TRIP, ROUND_TRIP_BUCKETS),
        (metrics::ENQUEUE_DURATION, ROUND_TRIP_BUCKETS),
        (metrics::DURATION, DURATION_BUCKETS),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .map_err(bad)?;
    }
    builder.install().map_err(bad)?;
    let process = metrics_process::Collector::default();
    process.describe();
    // The exporter has no hook at scrape time: the process metrics are read on a timer.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROCESS_METRICS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            process.collect();
        }
    });
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(())
}
