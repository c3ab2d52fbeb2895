//! `dcimanager6-sim --listen 127.0.0.1:8600 --fixture fixtures/demo.toml`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use dcimanager6_sim::Fixture;

/// An in-memory DCImanager 6 API for tests and demos.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8600")]
    listen: SocketAddr,
    /// The data centre to simulate (TOML or JSON); the built-in demo one
    /// when omitted.
    #[arg(long)]
    fixture: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let fixture = match &args.fixture {
        Some(path) => Fixture::parse(&std::fs::read_to_string(path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        None => Fixture::demo(),
    };
    let running = dcimanager6_sim::spawn(fixture, args.listen).await?;
    println!("DCImanager 6 simulator on {}", running.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
