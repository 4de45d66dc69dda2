//! Logs for worker binaries (feature `logging`): [`init`] installs a `tracing` subscriber that
//! prints one line per event, as text or as JSON, filtered by `RUST_LOG` (default `info`).
//!
//! Every line logged while a task runs (by the worker or by the handler itself, with
//! `tracing::info!` and the like) carries the fields of the run's `task` span: `task_id`,
//! `queue`, `task_name`, `attempt`; in JSON they are in the line's `span` object:
//!
//! ```text
//! {"timestamp":"2026-12-03T13:54:45.182214Z","level":"INFO","fields":{"message":"handler says hi"},"target":"my_app::tasks","span":{"attempt":1,"name":"task","queue":"emails","task_id":"01M8Y2Z99JM9DW928N4AA36R0D","task_name":"send_reminder"}}
//! ```
//!
//! Libraries only emit events; the process decides where they go, once. A binary that composes
//! its own subscriber (other layers, an OpenTelemetry exporter) can skip this module.

use std::str::FromStr;

use scheduler_core::Error;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How log lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines, the span's fields before the message (the default).
    #[default]
    Text,
    /// One JSON object per line: for log collectors (Loki, Elasticsearch, CloudWatch...).
    Json,
}

impl FromStr for LogFormat {
    type Err = Error;

    /// `text` or `json`, any case.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(Error::InvalidConfig(format!(
                "log format {s:?}: use text or json"
            ))),
        }
    }
}

/// Installs the process's global `tracing` subscriber: lines in `format` on standard output,
/// filtered by `RUST_LOG` (`info` when unset; e.g. `RUST_LOG=info,scheduler_worker=debug`).
///
/// # Errors
///
/// [`Error::InvalidConfig`] when `RUST_LOG` cannot be parsed or a global subscriber is
/// installed already.
///
/// # Examples
///
/// ```no_run
/// use scheduler_worker::logging::{self, LogFormat};
///
/// let format: LogFormat = std::env::var("LOG_FORMAT").as_deref().unwrap_or("text").parse()?;
/// logging::init(format)?;
/// tracing::info!("worker starting");
/// # Ok::<(), scheduler_core::Error>(())
/// ```
pub fn init(format: LogFormat) -> Result<(), Error> {
    init_with_writer(format, std::io::stdout)
}

/// As [`init`], printing to `writer` (a file, a buffer in a test...) rather than standard
/// output.
///
/// # Errors
///
/// As [`init`].
pub fn init_with_writer<W>(format: LogFormat, writer: W) -> Result<(), Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(spec) => EnvFilter::try_new(&spec)
            .map_err(|e| Error::InvalidConfig(format!("RUST_LOG={spec:?}: {e}")))?,
        Err(_) => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        // The current span's fields on each line (the task's), not the whole span list.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| Error::InvalidConfig(format!("logging: {e}")))
}
