//! `switchboard`: parses the command line and runs the chosen role. Everything
//! else lives in the library half (`src/lib.rs`).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use switchboard::admin::AdminPort;
use switchboard::cli::{Cli, Command, EdgeArgs, ProbeArgs, RoomServiceArgs, StandaloneArgs};
use switchboard::distributed::{self, Backend};
use switchboard::{logging, probe, signal, standalone};
use switchboard_telemetry::metrics::Role;
use switchboard_telemetry::prometheus;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of the system allocator: every message is parsed into,
/// and written from, short-lived buffers, and glibc's malloc took ~13 % of a
/// room replica's CPU on them (mimalloc: ~5 %). Its v2 line: v3 held ~0.8 KiB
/// more per idle connection (loadtest/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread (asked for, or all the CPU this process may use) runs the
    // whole process on that thread: no second thread to wake per message,
    // which on a busy small machine is what a multi-thread runtime costs most.
    let threads = cli.worker_threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let mut runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads);
            runtime
        }
    };
    runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (format, admin_listen) = (cli.log_format, cli.admin_listen);
    let command = cli.command();
    let role = match &command {
        Command::Standalone(_) => Role::Standalone,
        Command::Room(_) => Role::Room,
        Command::Edge(_) => Role::Edge,
        Command::Probe(args) => {
            logging::init(format, "switchboard-probe")?;
            return run_probe(args.clone()).await;
        }
    };
    let tracing = logging::init(format, &format!("switchboard-{}", role.as_str()))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(signal::cancel_on_signal(shutdown.clone()));
    let admin = AdminPort {
        listener: bind(admin_listen).await?,
        exporter: prometheus::install(role)?,
    };
    tracing::info!(admin = %admin.listener.local_addr()?, "admin port: /metrics /livez /readyz");
    let result = match command {
        Command::Standalone(args) => run_standalone(args, admin, shutdown).await,
        Command::Room(args) => run_room(args, admin, shutdown).await,
        Command::Edge(args) => run_edge(args, admin, shutdown).await,
        Command::Probe(_) => unreachable!("handled above"),
    };
    if let Some(tracing) = tracing {
        tracing.shutdown();
    }
    result
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn run_room(
    args: RoomServiceArgs,
    admin: AdminPort,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = match args.redis {
        Some(url) => Backend::Redis {
            url,
            prefix: args.redis_prefix,
        },
        None => Backend::Memory,
    };
    let listener = bind(args.listen).await?;
    let room = args.room.room_config();
    tracing::info!(listen = %listener.local_addr()?, offer_ttl = ?room.offer_ttl, "switchboard room service starting");
    distributed::run_room(listener, admin, backend, room, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_edge(
    args: EdgeArgs,
    admin: AdminPort,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let rooms = args.room_urls()?;
    let edge = args.client.edge_config()?;
    let listener = bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, rooms = ?rooms, "switchboard edge starting");
    distributed::run_edge(listener, admin, rooms, edge, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_standalone(
    args: StandaloneArgs,
    admin: AdminPort,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let edge = args.client.edge_config()?;
    let room = args.room.room_config();
    let listener = bind(args.listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(
        listen = %local,
        demo = %demo_url(local),
        offer_ttl = ?room.offer_ttl,
        ice_servers = edge.ice_servers.len(),
        "switchboard standalone ready: open the demo page in two browser tabs"
    );
    standalone::run(listener, admin, edge, room, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_probe(args: ProbeArgs) -> anyhow::Result<()> {
    let report = probe::run(&args.url, args.room.as_deref(), args.timeout)
        .await
        .with_context(|| format!("probe through {} failed", args.url))?;
    tracing::info!(
        url = %args.url,
        room = %report.room,
        offer_id = %report.offer_id,
        took = ?report.took,
        "probe call set up: join, offer, candidate, answer and relay all worked"
    );
    Ok(())
}

/// Where a person on this machine finds the demo page.
fn demo_url(local: SocketAddr) -> String {
    let host = match local.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        ip if ip.is_ipv6() => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/", local.port())
}
