//! Client-facing settings of an edge. The binary fills this from flags and
//! `SWITCHBOARD_*` variables; tests build it directly.

use std::time::Duration;

use switchboard_proto::IceServer;

/// Everything a WebSocket session needs to know. See `docs/OPERATIONS.md`.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Handed to browsers in `welcome.ice_servers`.
    pub ice_servers: Vec<IceServer>,
    /// Largest frame accepted; a bigger one closes the connection with 1009.
    pub max_message_bytes: usize,
    /// A client silent for this long is disconnected; the server pings three
    /// times per period so that a live browser always answers in time.
    pub heartbeat: Duration,
    /// Messages queued for one client at most; a client that falls this far
    /// behind is disconnected (close 1008).
    pub outbound_queue: usize,
    /// How long one write to a client may take before it counts as gone.
    pub write_timeout: Duration,
    /// Sustained client messages per second allowed per connection (burst:
    /// twice that); 0 disables the limit.
    pub max_messages_per_sec: u32,
    /// How long to wait for sessions to close on shutdown.
    pub shutdown_grace: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            ice_servers: vec![IceServer {
                urls: "stun:stun.l.google.com:19302".into(),
                username: None,
                credential: None,
            }],
            max_message_bytes: 64 * 1024,
            heartbeat: Duration::from_secs(30),
            outbound_queue: 256,
            write_timeout: Duration::from_secs(10),
            max_messages_per_sec: 100,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl EdgeConfig {
    /// How often the server pings each client.
    pub fn ping_interval(&self) -> Duration {
        self.heartbeat / 3
    }
}
