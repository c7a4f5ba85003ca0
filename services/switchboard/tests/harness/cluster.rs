//! The servers a test talks to. A [`Cluster`] has two client-facing "sides" so
//! the same test can put a caller and a callee on different nodes; in the
//! standalone topology both sides are the same process.

use std::net::SocketAddr;

use switchboard_edge::EdgeConfig;
use switchboard_room::RoomConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Client;

/// Which node a client connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Running servers, stopped by [`Cluster::stop`] (or when dropped).
pub struct Cluster {
    a: SocketAddr,
    b: SocketAddr,
    shutdown: CancellationToken,
    servers: Vec<JoinHandle<std::io::Result<()>>>,
}

/// Test defaults: no ICE servers (nothing reaches outside), fast expiry sweeps.
pub fn edge_config() -> EdgeConfig {
    EdgeConfig {
        ice_servers: Vec::new(),
        ..EdgeConfig::default()
    }
}

pub fn room_config() -> RoomConfig {
    RoomConfig {
        sweep_interval: std::time::Duration::from_millis(100),
        ..RoomConfig::default()
    }
}

impl Cluster {
    /// One standalone server with the test defaults.
    pub async fn standalone() -> Self {
        Self::standalone_with(edge_config(), room_config()).await
    }

    /// One standalone server.
    pub async fn standalone_with(edge: EdgeConfig, room: RoomConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(switchboard::standalone::run(
            listener,
            edge,
            room,
            shutdown.clone(),
        ));
        Self {
            a: addr,
            b: addr,
            shutdown,
            servers: vec![server],
        }
    }

    pub fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }

    pub fn ws_url(&self, side: Side) -> String {
        format!("ws://{}/ws", self.addr(side))
    }

    /// A connected client that has read its `welcome`.
    pub async fn client(&self, side: Side) -> Client {
        Client::connect(&self.ws_url(side)).await
    }

    /// Starts shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts every server down and waits until they have stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for server in self.servers.drain(..) {
            tokio::time::timeout(super::DEADLINE, server)
                .await
                .expect("server stops within the deadline")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
