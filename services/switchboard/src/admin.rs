//! The admin port every process serves (`--admin-listen`, default
//! `0.0.0.0:9090`), apart from client traffic:
//!
//! * `GET /metrics`: the Prometheus exposition;
//! * `GET /livez`: 200 while the process runs (restart it if this fails);
//! * `GET /readyz`: 200 when it should get traffic, 503 with the reason when
//!   not (shutting down; a room's Redis or pub/sub round trip failing; an
//!   edge without a serving room replica).
//!
//! Readiness is re-evaluated every second by [`watch_readiness`], which also
//! keeps `switchboard_ready` and the logs in step; `/readyz` answers from the
//! latest evaluation, so probes never pile work onto Redis.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use switchboard_room::{Readiness, RoomService};
use switchboard_telemetry::metrics;
use switchboard_telemetry::prometheus::Exporter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often readiness is re-evaluated.
const READINESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Admin {
    exporter: Exporter,
    readiness: watch::Receiver<Readiness>,
}

/// Serves the admin port on `listener` until `stop` (which the caller cancels
/// after draining, so `/readyz` and `/metrics` stay up while it drains).
pub async fn serve(
    listener: TcpListener,
    exporter: Exporter,
    readiness: watch::Receiver<Readiness>,
    stop: CancellationToken,
) -> io::Result<()> {
    let admin = Admin {
        exporter,
        readiness,
    };
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(admin);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

async fn render(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.exporter.render(),
    )
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, String) {
    let readiness = admin.readiness.borrow().clone();
    match readiness.ready {
        true => (StatusCode::OK, format!("ready: {}\n", readiness.detail)),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", readiness.detail),
        ),
    }
}

/// Evaluates `service`'s readiness every second (and at once on `shutdown`,
/// after which it is "not ready") on `tasks` until `stop`, publishing it to
/// the returned receiver, `switchboard_ready` and the logs (on each change).
/// The process's one readiness check: the admin port and, in a room process,
/// the gRPC health service both follow it.
pub fn watch_readiness<R: RoomService>(
    service: R,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> watch::Receiver<Readiness> {
    let initial = Readiness {
        ready: false,
        detail: "starting".into(),
    };
    let (tx, rx) = watch::channel(initial);
    let task = async move {
        let mut tick = tokio::time::interval(READINESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let readiness = match shutdown.is_cancelled() {
                true => Readiness {
                    ready: false,
                    detail: "shutting down".into(),
                },
                false => service.readiness().await,
            };
            metrics::set_ready(readiness.ready);
            tx.send_if_modified(|current| {
                if current.ready != readiness.ready {
                    tracing::info!(ready = readiness.ready, detail = %readiness.detail, "readiness changed");
                }
                let changed = *current != readiness;
                *current = readiness;
                changed
            });
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = shutdown.cancelled(), if !tx.borrow().detail.starts_with("shutting") => {}
                _ = tick.tick() => {}
            }
        }
    };
    tasks.spawn(task);
    rx
}

/// The admin port of one process, bound at start-up.
#[derive(Debug)]
pub struct AdminPort {
    pub listener: TcpListener,
    pub exporter: Exporter,
}

impl AdminPort {
    /// Starts the admin server on `tasks`, reporting `readiness`, until `stop`.
    pub fn spawn(
        self,
        readiness: watch::Receiver<Readiness>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) {
        tasks.spawn(async move {
            if let Err(err) = serve(self.listener, self.exporter, readiness, stop).await {
                tracing::error!(error = %err, "admin server failed");
            }
        });
    }
}
