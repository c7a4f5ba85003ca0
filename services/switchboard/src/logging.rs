//! Logging and tracing set-up: `tracing` to stderr as human-readable text or
//! one JSON object per line, filtered by `RUST_LOG` (default `info`), plus the
//! OpenTelemetry exporter when the `OTEL_*` variables ask for it.
//!
//! JSON lines carry the current span's fields; request spans record their
//! `trace_id` there, so a log line can be found from a trace and back.

use clap::ValueEnum;
use switchboard_telemetry::trace::{self, TraceError, Tracing};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber; call once, at start-up, within the runtime
/// (the span exporter lives on it). `service` names the process in traces
/// unless `OTEL_SERVICE_NAME` does. Returns the span exporter to flush at exit,
/// when tracing is on.
pub fn init(format: LogFormat, service: &str) -> Result<Option<Tracing>, TraceError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: BoxedLayer = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let mut layers = vec![logs];
    let mut exporter = None;
    if let Some((layer, tracing)) = trace::layer_from_env::<Registry>(service)? {
        layers.push(layer.with_filter(trace::span_filter()).boxed());
        exporter = Some(tracing);
    }
    tracing_subscriber::registry().with(layers).init();
    if exporter.is_some() {
        tracing::info!("OpenTelemetry tracing on (OTLP over gRPC)");
    }
    Ok(exporter)
}
