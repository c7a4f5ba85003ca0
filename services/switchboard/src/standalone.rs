//! The standalone server: one process with the edge, the room logic and the
//! in-memory store. What `cargo run --release` starts.

use std::io;

use switchboard_edge::EdgeConfig;
use switchboard_room::{Room, RoomConfig};

use crate::admin::{AdminPort, watch_readiness};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs the standalone server on `listener` (and its admin port) until
/// `shutdown`, then drains.
pub async fn run(
    listener: TcpListener,
    admin: AdminPort,
    edge: EdgeConfig,
    room: RoomConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let rooms = Room::in_memory(room);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let readiness = watch_readiness(rooms.clone(), &tasks, shutdown.clone(), stop.clone());
    admin.spawn(readiness, &tasks, stop.clone());
    tasks.spawn(rooms.clone().run_expiry(shutdown.clone()));
    let served = switchboard_edge::serve(listener, rooms, edge, shutdown.clone()).await;
    // The edge stops only on shutdown or a fatal error; either way, stop the rest.
    shutdown.cancel();
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    served
}
