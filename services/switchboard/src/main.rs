//! `switchboard`: parses the command line and runs the chosen role. Everything
//! else lives in the library half (`src/lib.rs`).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use switchboard::cli::{Cli, Command, StandaloneArgs};
use switchboard::{logging, signal, standalone};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(signal::cancel_on_signal(shutdown.clone()));
    match cli.command() {
        Command::Standalone(args) => run_standalone(args, shutdown).await,
    }
}

async fn run_standalone(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let edge = args.client.edge_config()?;
    let room = args.room.room_config();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
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
