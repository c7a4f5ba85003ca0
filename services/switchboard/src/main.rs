//! `switchboard`: parses the command line and runs the chosen role. Everything
//! else lives in the library half (`src/lib.rs`).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use switchboard::cli::{Cli, Command, EdgeArgs, RoomServiceArgs, StandaloneArgs};
use switchboard::distributed::{self, Backend};
use switchboard::{logging, signal, standalone};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.worker_threads {
        runtime.worker_threads(usize::from(threads));
    }
    runtime
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(signal::cancel_on_signal(shutdown.clone()));
    match cli.command() {
        Command::Standalone(args) => run_standalone(args, shutdown).await,
        Command::Room(args) => run_room(args, shutdown).await,
        Command::Edge(args) => run_edge(args, shutdown).await,
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

async fn run_room(args: RoomServiceArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    distributed::run_room(listener, backend, room, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_edge(args: EdgeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let rooms = args.room_urls()?;
    let edge = args.client.edge_config()?;
    let listener = bind(args.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, rooms = ?rooms, "switchboard edge starting");
    distributed::run_edge(listener, rooms, edge, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn run_standalone(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
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
    standalone::run(listener, edge, room, shutdown).await?;
    tracing::info!("stopped");
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
