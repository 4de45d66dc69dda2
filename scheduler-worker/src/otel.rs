//! Traces for worker binaries (feature `otlp`): [`init`] installs the process's `tracing`
//! subscriber with two outputs, the log lines of [`crate::logging`] and an OpenTelemetry span
//! exporter speaking OTLP/HTTP (protobuf) to a collector.
//!
//! Everything is configured by the standard OpenTelemetry environment variables, read by the
//! OpenTelemetry SDK and exporter themselves:
//!
//! | variable | default | what |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | `http://localhost:4318` (`/v1/traces` appended to the first) | the collector |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` | none, 10 s | authentication, time limit of one export |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | `unknown_service` | who the spans come from |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `parentbased_always_on` | which traces are kept |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, ... | 5 s, 2048 | the batch span processor |
//! | `OTEL_SDK_DISABLED` | `false` | `true`: no exporter, logs only |
//!
//! `RUST_LOG` filters both outputs (default `info`: the enqueue, claim, run and ack spans are at
//! `info`). What the spans are and how a run continues its producer's trace: `docs/operations.md`,
//! "Traces", and [`crate::trace`].

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use scheduler_core::Error;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::logging::LogFormat;

/// Keeps the exporter of [`init`] alive; dropping it flushes the spans not yet sent and shuts the
/// exporter down. Hold it until the end of `main`.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the exporter down"]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("OpenTelemetry: spans may be lost at shutdown: {e}");
            }
        }
    }
}

/// Installs the global `tracing` subscriber: log lines in `format` on standard output (as
/// [`crate::logging::init`] prints them), and, unless `OTEL_SDK_DISABLED=true`, every span
/// exported over OTLP/HTTP as the `OTEL_*` variables say. Returns the guard that flushes the
/// exporter when dropped.
///
/// # Errors
///
/// [`Error::InvalidConfig`] when `RUST_LOG` cannot be parsed, the exporter cannot be built (a
/// bad endpoint URL), or a global subscriber is installed already.
///
/// # Examples
///
/// ```no_run
/// use scheduler_worker::logging::LogFormat;
///
/// # fn main() -> Result<(), scheduler_core::Error> {
/// // OTEL_SERVICE_NAME=mailer OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 ./worker
/// let _otel = scheduler_worker::otel::init(LogFormat::Json)?;
/// tracing::info!("worker starting");
/// // ... run the worker; the guard flushes the last spans when main returns.
/// # Ok(()) }
/// ```
pub fn init(format: LogFormat) -> Result<OtelGuard, Error> {
    init_with_writer(format, std::io::stdout)
}

/// As [`init`], printing log lines to `writer` (standard error, a file...) rather than standard
/// output.
///
/// # Errors
///
/// As [`init`].
pub fn init_with_writer<W>(format: LogFormat, writer: W) -> Result<OtelGuard, Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) => EnvFilter::try_new(&spec)
            .map_err(|e| Error::InvalidConfig(format!("RUST_LOG={spec:?}: {e}")))?,
        Err(_) => EnvFilter::new("info"),
    };
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        _ => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let provider = if disabled {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| Error::InvalidConfig(format!("OTLP exporter: {e}")))?;
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(opentelemetry_sdk::Resource::builder().build())
                .build(),
        )
    };
    let mut layers = vec![fmt];
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("scheduler"))
                .boxed(),
        );
    }
    tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .map_err(|e| Error::InvalidConfig(format!("tracing subscriber: {e}")))?;
    Ok(OtelGuard { provider })
}
