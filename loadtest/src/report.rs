//! Collecting results (HDR histograms, errors by kind) and reporting them as a
//! table on stdout or JSON for machines.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::peer::Failure;
use crate::session::Outcome;

/// Results of many sessions.
#[derive(Debug)]
pub struct Recorder {
    session: Histogram<u64>,
    relay: Histogram<u64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        // Microseconds, up to one minute, 3 significant digits.
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self {
            session: histogram(),
            relay: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, 60_000_000)
}

impl Recorder {
    pub fn record(&mut self, result: Result<Outcome, Failure>) {
        match result {
            Ok(outcome) => {
                self.ok += 1;
                let _ = self.session.record(micros(outcome.session_time));
                let _ = self.relay.record(micros(outcome.relay));
            }
            Err(failure) => self.fail(&failure),
        }
    }

    pub fn fail(&mut self, failure: &Failure) {
        *self.errors.entry(failure.label()).or_default() += 1;
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// p99 session time so far.
    pub fn session_p99(&self) -> Duration {
        Duration::from_micros(self.session.value_at_quantile(0.99))
    }

    pub fn summary(&self) -> (Percentiles, Percentiles) {
        (Percentiles::of(&self.session), Percentiles::of(&self.relay))
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub edges: Vec<String>,
    pub seconds: f64,
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub sessions_per_second: f64,
    pub session_time: Option<Percentiles>,
    pub relay_latency: Option<Percentiles>,
    pub errors: BTreeMap<String, u64>,
    /// CPU seconds of the named server processes per 1,000 sessions.
    pub server_cpu_seconds_per_1000_sessions: Option<f64>,
    /// Extra figures of a scenario (idle memory, step-to-SLO rate, churn rate…).
    pub extra: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(
        scenario: &str,
        edges: &[String],
        seconds: f64,
        recorder: &Recorder,
        cpu: Option<f64>,
    ) -> Self {
        let (session, relay) = recorder.summary();
        let any = recorder.ok > 0;
        Self {
            scenario: scenario.into(),
            edges: edges.to_vec(),
            seconds,
            sessions_ok: recorder.ok,
            sessions_failed: recorder.failed(),
            sessions_per_second: recorder.ok as f64 / seconds.max(1e-9),
            session_time: any.then_some(session),
            relay_latency: any.then_some(relay),
            errors: recorder.errors.clone(),
            server_cpu_seconds_per_1000_sessions: cpu
                .filter(|_| any)
                .map(|cpu| cpu * 1000.0 / recorder.ok as f64),
            extra: BTreeMap::new(),
        }
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario            {}\nedges               {}\n",
            self.scenario,
            self.edges.join(" ")
        );
        out += &format!("duration            {:.1} s\n", self.seconds);
        out += &format!(
            "sessions            {} ok, {} failed ({:.0}/s)\n",
            self.sessions_ok, self.sessions_failed, self.sessions_per_second
        );
        let row = |name: &str, p: &Option<Percentiles>| match p {
            Some(p) => format!(
                "{name:<20}p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
                p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            ),
            None => String::new(),
        };
        out += &row("session time", &self.session_time);
        out += &row("relay latency", &self.relay_latency);
        if let Some(cpu) = self.server_cpu_seconds_per_1000_sessions {
            out += &format!("server CPU          {cpu:.3} s per 1000 sessions\n");
        }
        for (name, value) in &self.extra {
            out += &format!("{name:<26}{value:.2}\n");
        }
        for (kind, count) in &self.errors {
            out += &format!("error {kind:<14}{count}\n");
        }
        out
    }
}
