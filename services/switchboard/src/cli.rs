//! The command line, a contract other tools rely on (`../shared/protocol-v1.md`
//! and `docs/OPERATIONS.md`). Every flag can also be set through the
//! `SWITCHBOARD_…` environment variable named in its help.
//!
//! `switchboard` with no subcommand is `switchboard standalone`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard_edge::EdgeConfig;
use switchboard_proto::IceServer;
use switchboard_room::RoomConfig;

use crate::logging::LogFormat;

/// Switchboard: WebRTC signaling that holds offers until someone answers.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Flags of `standalone`, which runs when no subcommand is given.
    #[command(flatten)]
    pub standalone: StandaloneArgs,

    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,

    /// Runtime worker threads (default: one per CPU core this process may
    /// use, cgroup limits included). 1 runs everything on one thread, the
    /// cheapest per message; several processes sharing a few cores (a small
    /// cluster on one machine) should each take 1.
    #[arg(long, global = true, env = "SWITCHBOARD_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Address of the admin port: `GET /metrics` (Prometheus), `GET /livez`,
    /// `GET /readyz`. Keep it off the public network.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Edge + room logic + in-memory store in one process (the default).
    Standalone(StandaloneArgs),
    /// The room service: room logic over gRPC, state in Redis.
    Room(RoomServiceArgs),
    /// A stateless WebSocket edge forwarding to room service replicas.
    Edge(EdgeArgs),
    /// Smoke test: a real join/offer/answer between two clients through an
    /// edge (`ws://host:port/ws`); exits 0 when the call was set up.
    Probe(ProbeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The edge's WebSocket URL.
    #[arg(
        long,
        env = "SWITCHBOARD_PROBE_URL",
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub url: String,

    /// Room to meet in (default: a fresh random one).
    #[arg(long, env = "SWITCHBOARD_PROBE_ROOM")]
    pub room: Option<String>,

    /// Give up after this long.
    #[arg(long, env = "SWITCHBOARD_PROBE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Cli {
    /// The subcommand to run, `standalone` when none was given.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Standalone(self.standalone))
    }
}

#[derive(Debug, Clone, Args)]
pub struct StandaloneArgs {
    /// Address to serve WebSockets, the demo page and health checks on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub client: ClientArgs,

    #[command(flatten)]
    pub room: RoomArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RoomServiceArgs {
    /// Address to serve gRPC (and gRPC health) on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Redis URL (`redis://host:6379/0`). Without it the state stays in this
    /// process, which is then the only replica there may be.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,

    /// Prefix of every Redis key and channel (several deployments can share a Redis).
    #[arg(long, env = "SWITCHBOARD_REDIS_PREFIX", default_value = "switchboard:")]
    pub redis_prefix: String,

    #[command(flatten)]
    pub room: RoomArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Address to serve WebSockets, the demo page and health checks on.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Room service replicas (`host:port` or `http://host:port`); repeat the
    /// flag or separate with commas.
    #[arg(
        long = "room",
        env = "SWITCHBOARD_ROOM",
        value_name = "URL",
        value_delimiter = ',',
        required = true
    )]
    pub rooms: Vec<String>,

    #[command(flatten)]
    pub client: ClientArgs,
}

impl EdgeArgs {
    /// The replica URLs, each as `http://host:port`.
    pub fn room_urls(&self) -> Result<Vec<String>, ConfigError> {
        self.rooms
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| {
                let url = if s.contains("://") {
                    s.to_owned()
                } else {
                    format!("http://{s}")
                };
                match url.parse::<tonic::transport::Uri>() {
                    Ok(uri) if uri.scheme_str() == Some("http") && uri.port_u16().is_some() => {
                        Ok(url)
                    }
                    _ => Err(ConfigError::RoomUrl(s.to_owned())),
                }
            })
            .collect()
    }
}

/// Client-facing settings (standalone and edge).
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// ICE server URL handed to browsers (stun:, stuns:, turn:, turns:);
    /// repeat the flag or separate with commas; `none` for an empty list.
    #[arg(
        long = "ice-server",
        env = "SWITCHBOARD_ICE_SERVER",
        value_name = "URL",
        value_delimiter = ',',
        default_value = "stun:stun.l.google.com:19302"
    )]
    pub ice_servers: Vec<String>,

    /// Username for the turn:/turns: ICE servers.
    #[arg(long, env = "SWITCHBOARD_ICE_USERNAME")]
    pub ice_username: Option<String>,

    /// Credential for the turn:/turns: ICE servers.
    #[arg(long, env = "SWITCHBOARD_ICE_CREDENTIAL", hide_env_values = true)]
    pub ice_credential: Option<String>,

    /// Largest client frame in bytes; a larger one closes the connection (1009).
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u32).range(1024..=16 * 1024 * 1024))]
    pub max_message_bytes: u32,

    /// A client silent this long is disconnected (the server pings every third of it).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT", default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Messages queued for one client before it counts as too slow (close 1008).
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub outbound_queue: u32,

    /// Sustained messages per second per connection (burst: twice); 0 = unlimited.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGES_PER_SEC", default_value_t = 100)]
    pub max_messages_per_sec: u32,

    /// On shutdown, how long to wait for sessions to close.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Settings of the room logic (standalone and room).
#[derive(Debug, Clone, Args)]
pub struct RoomArgs {
    /// How long an unanswered offer stays pending (e.g. `120s`, `2m`).
    #[arg(long, env = "SWITCHBOARD_OFFER_TTL", default_value = "120s", value_parser = parse_duration)]
    pub offer_ttl: Duration,
}

/// A positive duration in humantime form (`500ms`, `30s`, `2m`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--ice-server {0:?}: expected a stun:, stuns:, turn: or turns: URL, or `none` alone")]
    IceServer(String),
    #[error("--room {0:?}: expected host:port or http://host:port")]
    RoomUrl(String),
}

impl ClientArgs {
    /// The edge configuration these flags describe.
    pub fn edge_config(&self) -> Result<EdgeConfig, ConfigError> {
        Ok(EdgeConfig {
            ice_servers: self.ice_servers()?,
            max_message_bytes: self.max_message_bytes as usize,
            heartbeat: self.heartbeat,
            outbound_queue: self.outbound_queue as usize,
            max_messages_per_sec: self.max_messages_per_sec,
            shutdown_grace: self.shutdown_grace,
            ..EdgeConfig::default()
        })
    }

    fn ice_servers(&self) -> Result<Vec<IceServer>, ConfigError> {
        let urls: Vec<&str> = self
            .ice_servers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if urls == ["none"] {
            return Ok(Vec::new());
        }
        urls.into_iter()
            .map(|url| {
                let scheme = url.split_once(':').map(|(scheme, _)| scheme);
                let turn = match scheme {
                    Some("stun" | "stuns") => false,
                    Some("turn" | "turns") => true,
                    _ => return Err(ConfigError::IceServer(url.to_owned())),
                };
                Ok(IceServer {
                    urls: url.to_owned(),
                    username: self.ice_username.clone().filter(|_| turn),
                    credential: self.ice_credential.clone().filter(|_| turn),
                })
            })
            .collect()
    }
}

impl RoomArgs {
    pub fn room_config(&self) -> RoomConfig {
        RoomConfig {
            offer_ttl: self.offer_ttl,
            ..RoomConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("switchboard").chain(args.iter().copied()))
    }

    fn standalone(args: &[&str]) -> StandaloneArgs {
        match parse(args).expect("valid command line").command() {
            Command::Standalone(args) => args,
            other => panic!("not standalone: {other:?}"),
        }
    }

    #[test]
    fn room_and_edge_roles() {
        let Command::Room(room) = parse(&["room", "--redis", "redis://127.0.0.1:1/"])
            .expect("room")
            .command()
        else {
            panic!("room")
        };
        assert_eq!(room.listen, "0.0.0.0:50051".parse().expect("addr"));
        assert_eq!(room.redis_prefix, "switchboard:");
        assert!(parse(&["edge"]).is_err(), "--room is required");
        let Command::Edge(edge) = parse(&["edge", "--room", "a:1,http://b:2", "--room", "c:3"])
            .expect("edge")
            .command()
        else {
            panic!("edge")
        };
        assert_eq!(
            edge.room_urls().expect("urls"),
            ["http://a:1", "http://b:2", "http://c:3"]
        );
        let Command::Edge(bad) = parse(&["edge", "--room", "nohost"])
            .expect("edge")
            .command()
        else {
            panic!("edge")
        };
        assert!(bad.room_urls().is_err());
    }

    #[test]
    fn no_subcommand_means_standalone_with_defaults() {
        let args = standalone(&[]);
        assert_eq!(args.listen, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(args.room.offer_ttl, Duration::from_secs(120));
        let edge = args.client.edge_config().expect("config");
        assert_eq!(edge.max_message_bytes, 65536);
        assert_eq!(edge.ice_servers.len(), 1);
    }

    #[test]
    fn flags_work_with_and_without_the_subcommand() {
        let a = standalone(&["--listen", "127.0.0.1:9000", "--offer-ttl", "2m"]);
        let b = standalone(&[
            "standalone",
            "--listen",
            "127.0.0.1:9000",
            "--offer-ttl",
            "2m",
        ]);
        assert_eq!(a.listen, b.listen);
        assert_eq!(a.room.offer_ttl, Duration::from_secs(120));
        assert_eq!(b.room.offer_ttl, Duration::from_secs(120));
    }

    #[test]
    fn ice_servers_repeat_and_none_empties_the_list() {
        let args = standalone(&[
            "--ice-server",
            "stun:a:3478",
            "--ice-server",
            "turn:b:3478",
            "--ice-username",
            "u",
        ]);
        let servers = args.client.edge_config().expect("config").ice_servers;
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None, "credentials only go to TURN");
        assert_eq!(servers[1].username.as_deref(), Some("u"));

        let none = standalone(&["--ice-server", "none"]);
        assert!(
            none.client
                .edge_config()
                .expect("config")
                .ice_servers
                .is_empty()
        );

        let bad = standalone(&["--ice-server", "http://x"]);
        assert!(bad.client.edge_config().is_err());
    }

    #[test]
    fn worker_threads_is_a_global_flag() {
        assert_eq!(
            parse(&["room", "--worker-threads", "2"])
                .expect("valid")
                .worker_threads,
            Some(2)
        );
        assert_eq!(parse(&[]).expect("valid").worker_threads, None);
        assert!(parse(&["--worker-threads", "0"]).is_err());
    }

    #[test]
    fn bad_values_are_refused_at_start_up() {
        assert!(parse(&["--offer-ttl", "soon"]).is_err());
        assert!(parse(&["--offer-ttl", "0s"]).is_err());
        assert!(parse(&["--max-message-bytes", "10"]).is_err());
        assert!(parse(&["--listen", "nowhere"]).is_err());
    }
}
