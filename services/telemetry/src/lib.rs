//! Telemetry for every Switchboard process: what it measures and how a message
//! is followed across processes.
//!
//! * [`metrics`]: every metric name, its labels and buckets, in one place, and
//!   the typed functions the services record through (labels are bounded by
//!   construction: never a room, peer or offer id). They record through
//!   per-thread handles (`series`), not a registry lookup per call.
//! * [`prometheus`]: installs the process-wide recorder and renders the
//!   exposition served on the admin port's `/metrics`.
//! * [`trace`]: OpenTelemetry tracing configured by the standard `OTEL_*`
//!   variables (off when unset), and [`TraceContext`], the W3C trace context a
//!   message carries between processes.
//! * [`Origin`]: what travels with a client's message through the room and the
//!   bus to the counterpart's edge: when it was received, and its trace.

pub mod metrics;
mod origin;
pub mod prometheus;
mod series;
pub mod trace;

pub use origin::Origin;
pub use trace::TraceContext;
