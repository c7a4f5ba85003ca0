//! [`Origin`]: the provenance of a message on its way from one client to
//! another. An edge stamps it when a client's frame arrives; the room passes it
//! into what it publishes; the bus and the room→edge stream carry it; the
//! counterpart's edge reads it when it writes the resulting frame, to measure
//! the relay latency and to continue the trace.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::trace::TraceContext;

/// When and in which trace a message entered the system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// When an edge received the client frame this message results from, in
    /// microseconds since the Unix epoch; 0 when it did not come from a client
    /// (an expiry, a disconnect clean-up).
    pub received_at_micros: u64,
    /// The trace to continue; empty when tracing is off.
    pub trace: TraceContext,
}

impl Origin {
    /// A client frame received now (its trace is set once its span exists).
    pub fn received_now() -> Self {
        Self {
            received_at_micros: unix_micros(SystemTime::now()),
            trace: TraceContext::default(),
        }
    }

    /// This origin, continuing `span`'s trace (when tracing is on).
    pub fn in_span(&self, span: &tracing::Span) -> Self {
        Self {
            received_at_micros: self.received_at_micros,
            trace: TraceContext::of(span),
        }
    }

    /// This origin, continuing the current span's trace (when tracing is on).
    pub fn in_current_span(&self) -> Self {
        self.in_span(&tracing::Span::current())
    }

    /// Time since the client frame was received, if it came from one. Wall
    /// clocks of different nodes are compared: skew shows up here.
    pub fn elapsed(&self) -> Option<Duration> {
        if self.received_at_micros == 0 {
            return None;
        }
        let now = unix_micros(SystemTime::now());
        Some(Duration::from_micros(
            now.saturating_sub(self.received_at_micros),
        ))
    }
}

fn unix_micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_client_messages_have_an_age() {
        assert_eq!(Origin::default().elapsed(), None);
        let age = Origin::received_now().elapsed().expect("stamped");
        assert!(age < Duration::from_secs(5));
    }
}
