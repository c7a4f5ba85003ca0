//! The process-wide Prometheus recorder. [`install`] once at start-up; the
//! admin server renders [`Exporter::render`] on `GET /metrics`.

use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metrics::{HISTOGRAMS, Role, register};

/// How often histogram samples are folded into their buckets between scrapes,
/// so memory stays flat however rarely the process is scraped.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Renders the current values of every metric.
#[derive(Clone)]
pub struct Exporter {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

/// Installing the recorder failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("invalid metrics configuration: {0}")]
    Build(#[from] BuildError),
    #[error("another metrics recorder is already installed")]
    AlreadyInstalled,
}

/// The recorder this process installed.
static INSTALLED: Mutex<Option<Exporter>> = Mutex::new(None);

/// Installs the global recorder with our histogram buckets (once per process;
/// later calls share it), registers the metrics of `role`, and starts the
/// upkeep task. Call within the runtime.
pub fn install(role: Role) -> Result<Exporter, InstallError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(exporter) = installed.as_ref() {
        register(role);
        return Ok(exporter.clone());
    }
    let exporter = build(role)?;
    *installed = Some(exporter.clone());
    Ok(exporter)
}

fn build(role: Role) -> Result<Exporter, InstallError> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in HISTOGRAMS {
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|_| InstallError::AlreadyInstalled)?;
    crate::series::recorder_installed();
    register(role);
    spawn_upkeep(handle.clone(), UPKEEP_INTERVAL);
    Ok(Exporter { handle })
}

impl Exporter {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Folds histogram samples into buckets every `every`, for the process's life.
fn spawn_upkeep(handle: PrometheusHandle, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}
