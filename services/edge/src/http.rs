//! The edge's HTTP surface and its lifecycle.
//!
//! Routes: `GET /ws` (WebSocket upgrade), `GET /` and `GET /app.js` (the demo
//! page, compiled into the binary), `GET /healthz` (the process is up) and
//! `GET /readyz` (it should get traffic: not shutting down and the room backend
//! ready).
//!
//! Shutdown, when the token is cancelled: readiness turns false, the listener
//! stops accepting, every session closes with 1001 so clients reconnect elsewhere,
//! and [`serve`] returns once they are gone or the grace period is over.

use std::io;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchboard_room::RoomService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EdgeConfig;
use crate::connection;
use crate::socket::ClientListener;

/// Initial read buffer per connection: allocated up front for every idle
/// connection (tungstenite's default is 128 KiB), and grown on demand for a
/// large message. tungstenite reads at most this much per call, but those
/// calls are served from what the socket read ahead (`socket`), not the kernel.
/// Measured (callgrind, standalone): 256 instead of 1 KiB costs ~1% more
/// instructions per session (an offer takes 18 calls instead of 5) and saves
/// 768 bytes per idle connection; 128 would cost ~3% for 128 more.
const READ_BUFFER: usize = 256;

/// Frames owed to a client are gathered up to this many bytes and written
/// together once nothing more is ready (see `connection`): one system call for
/// an answer and its candidates instead of one per frame.
const WRITE_BATCH: usize = 16 * 1024;

/// Largest write backlog per client, in bytes.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");

/// What every handler shares.
#[derive(Debug, Clone)]
struct Edge<R> {
    rooms: R,
    config: Arc<EdgeConfig>,
    shutdown: CancellationToken,
    sessions: TaskTracker,
}

/// Serves the edge on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve<R: RoomService>(
    listener: TcpListener,
    rooms: R,
    config: EdgeConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let grace = config.shutdown_grace;
    let edge = Edge {
        rooms,
        config: Arc::new(config),
        shutdown: shutdown.clone(),
        sessions: TaskTracker::new(),
    };
    let sessions = edge.sessions.clone();
    let app = Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/ws", get(websocket::<R>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<R>))
        .with_state(edge);
    // `into_make_service` hands each connection a clone of this router (an
    // `Arc`); serving the `Router` itself rebuilds its route table for every
    // connection.
    axum::serve(ClientListener(listener), app.into_make_service())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;

    sessions.close();
    tracing::info!(
        open = sessions.len(),
        "stopped accepting; draining sessions"
    );
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(
            open = sessions.len(),
            ?grace,
            "sessions still open after the grace period"
        );
    }
    Ok(())
}

async fn websocket<R: RoomService>(
    State(edge): State<Edge<R>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if edge.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let limit = edge.config.max_message_bytes;
    let upgraded = tokio::time::Instant::now();
    upgrade
        // Small buffers: most connections are idle most of the time. Buffers grow
        // to fit a large message and the read limit bounds them.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BATCH)
        // Bounds what may pile up for a client that does not read; it must hold
        // the largest frame the server sends (a pending offer with a full
        // candidate buffer is ~150 KiB), whatever the client's own limit.
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let Edge {
                rooms,
                config,
                shutdown,
                sessions,
            } = edge;
            sessions.track_future(connection::run(socket, rooms, config, shutdown, upgraded))
        })
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz<R: RoomService>(State(edge): State<Edge<R>>) -> (StatusCode, String) {
    if edge.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".into(),
        );
    }
    let readiness = edge.rooms.readiness().await;
    match readiness.ready {
        true => (StatusCode::OK, format!("ready: {}\n", readiness.detail)),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", readiness.detail),
        ),
    }
}
