//! The servers a test talks to. A [`Cluster`] has two client-facing "sides" so
//! the same test can put a caller and a callee on different nodes; in the
//! standalone topology both sides are the same process.

use std::net::SocketAddr;

use switchboard_edge::EdgeConfig;
use switchboard_room::RoomConfig;
use switchboard_telemetry::metrics::Role;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Client;
use super::process::{self, Process};
use super::raw::http_get;

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
    /// Distributed topology: `[redis, room 1, room 2, edge A, edge B]`.
    processes: Vec<Process>,
}

/// How the edges of a distributed cluster use the two room replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Edge A uses only replica 1 and edge B only replica 2, so a caller on A
    /// and a callee on B are always on different edges AND different replicas.
    Split,
    /// Both edges use both replicas (for failover).
    Spread,
}

/// Names of the processes of a distributed cluster.
pub const REDIS: usize = 0;
pub const ROOM_1: usize = 1;
pub const ROOM_2: usize = 2;
pub const EDGE_A: usize = 3;
pub const EDGE_B: usize = 4;

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
        let admin = switchboard::admin::AdminPort {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind admin"),
            exporter: switchboard_telemetry::prometheus::install(Role::Standalone)
                .expect("metrics recorder"),
        };
        let server = tokio::spawn(switchboard::standalone::run(
            listener,
            admin,
            edge,
            room,
            shutdown.clone(),
        ));
        Self {
            a: addr,
            b: addr,
            shutdown,
            servers: vec![server],
            processes: Vec::new(),
        }
    }

    /// Redis, two room replicas and two edges, as real processes.
    pub async fn distributed() -> Self {
        Self::distributed_with(Routing::Split, &[]).await
    }

    /// A distributed cluster; `room_args` go to both room replicas.
    pub async fn distributed_with(routing: Routing, room_args: &[&str]) -> Self {
        Self::distributed_opts(routing, room_args, &[]).await
    }

    /// A distributed cluster with extra flags for the rooms and the edges.
    pub async fn distributed_opts(
        routing: Routing,
        room_args: &[&str],
        more_edge_args: &[&str],
    ) -> Self {
        let dir = process::log_dir("cluster");
        let redis = process::redis(&dir).await;
        let mut args = vec![
            "--redis".to_owned(),
            format!("redis://{}/", redis.addr),
            "--redis-prefix".into(),
            "t:".into(),
        ];
        args.extend(room_args.iter().map(|s| s.to_string()));
        let room1 = process::switchboard(&dir, "room1", "room", &args).await;
        let room2 = process::switchboard(&dir, "room2", "room", &args).await;
        let (r1, r2) = (room1.addr.to_string(), room2.addr.to_string());
        let rooms = |first: &str, second: &str| match routing {
            Routing::Split => first.to_owned(),
            Routing::Spread => format!("{first},{second}"),
        };
        let edge_args = |rooms: String| {
            let mut args = vec![
                "--room".to_owned(),
                rooms,
                "--ice-server".into(),
                "none".into(),
            ];
            args.extend(more_edge_args.iter().map(|s| s.to_string()));
            args
        };
        let edge_a =
            process::switchboard(&dir, "edge-a", "edge", &edge_args(rooms(&r1, &r2))).await;
        let edge_b =
            process::switchboard(&dir, "edge-b", "edge", &edge_args(rooms(&r2, &r1))).await;
        let cluster = Self {
            a: edge_a.addr,
            b: edge_b.addr,
            shutdown: CancellationToken::new(),
            servers: Vec::new(),
            processes: vec![redis, room1, room2, edge_a, edge_b],
        };
        cluster.wait_ready(Side::A).await;
        cluster.wait_ready(Side::B).await;
        cluster
    }

    /// Waits until an edge's `/readyz` says ready.
    pub async fn wait_ready(&self, side: Side) {
        let addr = self.addr(side);
        process::wait_until("edge readiness", || async move { ready(addr).await }).await;
    }

    /// What an edge's `/readyz` says now.
    pub async fn readyz(&self, side: Side) -> (u16, String) {
        http_get(self.addr(side), "/readyz").await
    }

    /// Whether an edge's `/readyz` says ready now.
    pub async fn is_ready(&self, side: Side) -> bool {
        ready(self.addr(side)).await
    }

    /// One process of a distributed cluster (see [`REDIS`], [`ROOM_1`]…).
    pub fn process(&mut self, which: usize) -> &mut Process {
        &mut self.processes[which]
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

    /// Like [`Cluster::stop`], for a cluster one of whose processes was killed.
    pub async fn stop_without(mut self, killed: usize) {
        self.processes.remove(killed);
        self.stop().await;
    }

    /// Shuts every server down and waits until they have stopped.
    pub async fn stop(mut self) {
        // Processes: edges first, then rooms, then Redis; each must exit cleanly.
        while let Some(mut process) = self.processes.pop() {
            let status = process.terminate().await;
            assert!(
                status.success() || process.log.ends_with("redis.log"),
                "{} exited with {status}",
                process.log.display()
            );
        }
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

async fn ready(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok() && http_get(addr, "/readyz").await.0 == 200
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
