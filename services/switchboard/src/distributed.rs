//! The two roles of the distributed mode:
//!
//! * [`run_room`]: the room service over gRPC, with Redis (or, for a single
//!   replica, in-memory) backends;
//! * [`run_edge`]: a stateless WebSocket edge forwarding to room replicas.

use std::io;
use std::sync::Arc;

use switchboard_edge::EdgeConfig;
use switchboard_room::bus::redis::RedisBus;
use switchboard_room::grpc::RemoteRooms;
use switchboard_room::store::redis::RedisStore;
use switchboard_room::{BackendError, Bus, Hub, Room, RoomConfig, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminPort, watch_readiness};

/// Where the room service keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Redis at `url`, every key and channel under `prefix`.
    Redis { url: String, prefix: String },
    /// Process memory: one replica only.
    Memory,
}

/// Errors that stop a role from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot use redis: {0}")]
    Redis(#[from] BackendError),
    #[error("grpc server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Runs the room service on `listener` (and its admin port) until `shutdown`.
pub async fn run_room(
    listener: TcpListener,
    admin: AdminPort,
    backend: Backend,
    config: RoomConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    match backend {
        Backend::Memory => {
            tracing::warn!(
                "no --redis given: in-memory store, so this must be the ONLY room replica"
            );
            serve_room(
                listener,
                admin,
                Room::in_memory(config),
                TaskTracker::new(),
                shutdown,
            )
            .await
        }
        Backend::Redis { url, prefix } => {
            switchboard_telemetry::metrics::register_redis();
            let hub = Hub::new();
            let replica = format!("{:016x}", rand::random::<u64>());
            let store = RedisStore::connect(&url, &prefix).await?;
            let (bus, subscriber) = RedisBus::connect(
                &url,
                &prefix,
                &replica,
                store.connection(),
                Arc::clone(&hub),
            )
            .await?;
            let tasks = TaskTracker::new();
            tasks.spawn(subscriber.run(shutdown.clone()));
            tracing::info!(%prefix, %replica, "using redis");
            serve_room(
                listener,
                admin,
                Room::new(store, bus, hub, config),
                tasks,
                shutdown,
            )
            .await
        }
    }
}

async fn serve_room<S: Store, B: Bus>(
    listener: TcpListener,
    admin: AdminPort,
    room: Room<S, B>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let stop = CancellationToken::new();
    let readiness = watch_readiness(room.clone(), &tasks, shutdown.clone(), stop.clone());
    admin.spawn(readiness.clone(), &tasks, stop.clone());
    tasks.spawn(room.clone().run_expiry(shutdown.clone()));
    let served = switchboard_room::grpc::serve(listener, room, readiness, shutdown.clone()).await;
    shutdown.cancel();
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(served?)
}

/// Runs a WebSocket edge on `listener` (and its admin port), forwarding to the
/// room replicas at `rooms` (`http://host:port`), until `shutdown`.
pub async fn run_edge(
    listener: TcpListener,
    admin: AdminPort,
    rooms: Vec<String>,
    config: EdgeConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let tasks = TaskTracker::new();
    // The links to the rooms outlive the drain: closing sessions still tell
    // their replica (so offers are withdrawn and calls handled as they should).
    let links = CancellationToken::new();
    let remote = RemoteRooms::connect(rooms, &tasks, links.clone());
    let stop = CancellationToken::new();
    let readiness = watch_readiness(remote.clone(), &tasks, shutdown.clone(), stop.clone());
    admin.spawn(readiness, &tasks, stop.clone());
    let served = switchboard_edge::serve(listener, remote, config, shutdown.clone()).await;
    shutdown.cancel();
    links.cancel();
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(served?)
}
