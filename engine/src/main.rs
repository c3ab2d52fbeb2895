//! The `bursar` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use bursar::accounts::{ApiKeySecret, Role};
use bursar::clock::{Clock, SystemClock};
use bursar::config::Config;
use bursar::server;
use bursar::store::accounts as repo;

/// Bursar: a billing engine for hosting companies.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (default: config/bursar.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API (creates the schema on first start).
    Serve {
        /// Address to listen on, overriding `listen`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Manage admin API keys.
    AdminKey {
        #[command(subcommand)]
        command: AdminKeyCommand,
    },
}

#[derive(Subcommand)]
enum AdminKeyCommand {
    /// Create a new admin API key and print it (it is shown only once).
    Create {
        /// A label to recognise the key by.
        #[arg(long, default_value = "admin")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bursar: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve { listen: Some(addr) } = &cli.command {
        config.listen = *addr;
    }
    server::init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bursar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bursar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => {
            let supplied = match std::env::var("BURSAR_ADMIN_KEY") {
                Ok(k) => Some(ApiKeySecret::from_supplied(k).map_err(|e| anyhow::anyhow!("{e}"))?),
                Err(_) => None,
            };
            server::serve(config, supplied).await
        }
        Command::Migrate => {
            let store = server::open_store(&config).await?;
            store.close().await;
            println!("database schema is up to date");
            Ok(())
        }
        Command::AdminKey {
            command: AdminKeyCommand::Create { name },
        } => {
            let clock = Arc::new(SystemClock);
            let store = server::open_store(&config).await?;
            let secret = ApiKeySecret::generate(Role::Admin);
            let mut tx = store.begin().await?;
            let key =
                repo::create_key(tx.conn(), &secret, Role::Admin, None, &name, clock.now()).await?;
            tx.commit().await?;
            store.close().await;
            println!("{}", secret.expose());
            eprintln!(
                "created admin key {} ({name}); the secret above is shown only once",
                key.id
            );
            Ok(())
        }
    }
}
