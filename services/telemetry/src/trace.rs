//! OpenTelemetry tracing, and the trace context messages carry between
//! processes.
//!
//! [`layer_from_env`] builds the `tracing` layer that exports spans over OTLP
//! (gRPC) when the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER=otlp`; the
//! exporter, sampler and resource read the other `OTEL_*` variables
//! themselves). Without them, or with `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`, tracing stays off and costs nothing: contexts
//! are empty and nothing is injected anywhere.
//!
//! A [`TraceContext`] is the W3C `traceparent` / `tracestate` pair of a span,
//! the same keys HTTP and gRPC metadata use. It travels inside the edge → room
//! requests (the edge multiplexes many sessions over one gRPC stream, so
//! per-stream metadata cannot carry per-request contexts), inside pub/sub
//! envelopes and inside room → edge events. A span that receives one follows
//! it: the sender's span becomes its parent, and it links to it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use switchboard_proto::{ClientMessage, OfferId, PeerId};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

/// Set once tracing is on: only then are contexts injected and extracted.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Tracing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OpenTelemetry tracing: {0}")]
pub struct TraceError(String);

/// Whether the `OTEL_*` variables ask for trace export.
pub fn requested_by_env() -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER") {
        Some(exporter) => exporter.split(',').any(|e| e.trim() == "otlp"),
        None => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    }
}

/// The exporting layer and its provider (flush it on exit with
/// [`Tracing::shutdown`]), or `None` when the environment does not ask for
/// tracing. `service` names the process when `OTEL_SERVICE_NAME` is unset.
pub fn layer_from_env<S>(
    service: &str,
) -> Result<Option<(impl tracing_subscriber::Layer<S>, Tracing)>, TraceError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !requested_by_env() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| TraceError(e.to_string()))?;
    Ok(Some(layer(service, exporter)))
}

/// The layer over any exporter (tests use the SDK's in-memory one).
pub fn layer<S, E>(service: &str, exporter: E) -> (impl tracing_subscriber::Layer<S>, Tracing)
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    E: SpanExporter + 'static,
{
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("switchboard");
    ENABLED.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    (layer, Tracing { provider })
}

/// Which spans are exported: Switchboard's own request, delivery and bus
/// spans (never the libraries' internals).
pub fn span_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("switchboard", tracing::Level::INFO)
        .with_target("switchboard_edge", tracing::Level::INFO)
        .with_target("switchboard_room", tracing::Level::INFO)
        .with_target("switchboard_telemetry", tracing::Level::INFO)
}

/// The running exporter.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports what is buffered now.
    pub fn flush(&self) {
        if let Err(err) = self.provider.force_flush() {
            tracing::warn!(error = %err, "could not flush spans");
        }
    }

    /// Exports what is left and stops.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "could not flush spans on exit");
        }
    }
}

/// A span's W3C trace context (`traceparent`, `tracestate`), or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext(Vec<(String, String)>);

impl TraceContext {
    /// The current span's context; empty when tracing is off.
    pub fn current() -> Self {
        Self::of(&tracing::Span::current())
    }

    /// `span`'s context; empty when tracing is off.
    pub fn of(span: &tracing::Span) -> Self {
        if !enabled() {
            return Self::default();
        }
        let mut carrier = Self::default();
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
        carrier
    }

    /// From received key/value pairs (only the W3C keys are kept).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter(|(k, _)| k == "traceparent" || k == "tracestate")
                .collect(),
        )
    }

    /// The key/value pairs to send.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trace id, as 32 hex digits, when there is one.
    pub fn trace_id(&self) -> Option<String> {
        let cx = TraceContextPropagator::new().extract(self);
        let span = cx.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    /// Makes `span` continue this context: the sender's span becomes its parent
    /// and it links to it. Call right after creating `span`, before entering it.
    pub fn continue_in(&self, span: &tracing::Span) {
        if self.is_empty() || !enabled() {
            return;
        }
        let cx = TraceContextPropagator::new().extract(self);
        let sender = cx.span().span_context().clone();
        if !sender.is_valid() {
            return;
        }
        let _ = span.set_parent(cx);
        span.add_link(sender);
    }
}

impl Injector for TraceContext {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

impl Extractor for TraceContext {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The span of one client request, at the edge or in the room: named
/// `otel_name` in traces, with the request's type, peer, and its room or offer
/// (never SDPs or candidates). A root in `tracing`'s tree; continue a received
/// context with [`TraceContext::continue_in`]. While tracing is off there is
/// no span at all (request handling is the hot path; the edge's log lines
/// name the peer themselves).
pub fn request_span(
    otel_name: &'static str,
    otel_kind: &'static str,
    peer: &PeerId,
    msg: &ClientMessage,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "request",
        otel.name = otel_name,
        otel.kind = otel_kind,
        r#type = msg.kind(),
        peer_id = %peer,
        room = tracing::field::Empty,
        offer_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    match msg {
        ClientMessage::Join { room }
        | ClientMessage::Leave { room }
        | ClientMessage::Offer { room, .. } => {
            span.record("room", room.as_str());
        }
        ClientMessage::Candidate { offer_id, .. }
        | ClientMessage::Answer { offer_id, .. }
        | ClientMessage::Hangup { offer_id } => {
            span.record("offer_id", offer_id.as_str());
        }
        ClientMessage::Ping => {}
    }
    span
}

/// The span of a burst of `count` candidates for `offer_id` that a client sent
/// together and that is handled as one request (see [`request_span`]).
pub fn burst_span(
    otel_name: &'static str,
    otel_kind: &'static str,
    peer: &PeerId,
    offer_id: &OfferId,
    count: usize,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: None,
        "request",
        otel.name = otel_name,
        otel.kind = otel_kind,
        r#type = "candidate",
        peer_id = %peer,
        offer_id = offer_id.as_str(),
        candidates = count,
        trace_id = tracing::field::Empty,
    )
}

/// Records `span`'s trace id in its `trace_id` field (declared
/// `trace_id = tracing::field::Empty`), so JSON logs within it carry it.
pub fn record_trace_id(span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    let context = cx.span().span_context().clone();
    if context.is_valid() {
        span.record("trace_id", tracing::field::display(context.trace_id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_w3c_keys_are_kept_and_read_back() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = TraceContext::from_pairs([
            ("traceparent".to_owned(), parent.to_owned()),
            ("x-other".to_owned(), "drop me".to_owned()),
        ]);
        assert_eq!(cx.pairs().collect::<Vec<_>>(), [("traceparent", parent)]);
        assert_eq!(
            cx.trace_id().as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(TraceContext::default().trace_id(), None);
    }
}
