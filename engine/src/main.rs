//! The `bursar` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bursar::accounts::{ApiKeySecret, Role};
use bursar::clock::{Clock, SystemClock};
use bursar::config::Config;
use bursar::plugins::author;
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
        /// Try Bursar out: a throw-away database, a DCImanager 6 simulator
        /// in-process, dedicated-server plans and a customer with a balance.
        #[arg(long)]
        demo: bool,
        /// With `--demo`: the address the DCImanager 6 simulator listens on
        /// (default: a free port on 127.0.0.1).
        #[arg(long, value_name = "ADDR", requires = "demo")]
        simulator_listen: Option<SocketAddr>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Check the database's invariants (ledger sums and balances, gap-free
    /// document numbers, no service charged for more periods than it has);
    /// prints a JSON report and exits non-zero on any violation.
    Audit,
    /// Write a consistent copy of the database while Bursar serves
    /// (SQLite: `VACUUM INTO`; PostgreSQL: `pg_dump --format=custom`).
    Backup {
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Restore a backup into the configured database, which must be new (a
    /// SQLite file that does not exist, an empty PostgreSQL database); its
    /// schema is upgraded and the result audited.
    Restore {
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (as served at
    /// `/api/v1/openapi.json`), e.g. to generate a client.
    Openapi,
    /// Manage staff API keys (admin, support, accountant).
    AdminKey {
        #[command(subcommand)]
        command: AdminKeyCommand,
    },
    /// Staff logins of the web console (`/staff`).
    Staff {
        #[command(subcommand)]
        command: StaffCommand,
    },
    /// The key service credentials are encrypted with.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Billing automation: renewals, suspensions, deletions.
    Automation {
        #[command(subcommand)]
        command: AutomationCommand,
    },
    /// E-mail notifications.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Tools for plugin authors: inspect, validate and run a component.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Start a plugin: a standalone crate (with its own copy of the SDK and
    /// the WIT) that builds with `cargo build --release` and passes
    /// `plugin check` as generated.
    New {
        /// The plugin's name (lower-case letters, digits, `-`).
        name: String,
        /// The world it exports.
        #[arg(long, value_parser = ["processing", "gateway"])]
        kind: String,
        /// Where to create `NAME/` (default: here).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
    /// Print a component's world, WIT version, exports and imports as JSON.
    Info {
        /// The component (`.wasm`).
        file: PathBuf,
    },
    /// Check a component the way `serve` does before loading it; says
    /// exactly what is missing or mismatched.
    Check { file: PathBuf },
    /// Run one call under the same sandbox and print the result as JSON.
    Call {
        file: PathBuf,
        /// info, check-connection, catalog, open, suspend, resume, close,
        /// prolong, change-plan, reinstall or poll.
        command: String,
        /// A setting, `key=value` (repeatable).
        #[arg(long = "settings", value_name = "KEY=VALUE", num_args = 1..)]
        settings: Vec<String>,
        /// The service as JSON: id, plan_id, period, account_email, params,
        /// addons, settings (all optional).
        #[arg(long, value_name = "FILE")]
        service: Option<PathBuf>,
        /// For `poll`: the reference an earlier call returned.
        #[arg(long)]
        remote_ref: Option<String>,
        /// A host the plugin may reach over HTTP (repeatable).
        #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
        allow_hosts: Vec<String>,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// Linear memory the plugin may grow to, in MiB.
        #[arg(long, default_value_t = 64)]
        memory_mb: usize,
        /// The largest HTTP response body the plugin may read (as
        /// `max_response_bytes` of a `[[plugin]]`; larger ones fail the read).
        #[arg(long, default_value_t = bursar::plugins::author::DEFAULT_MAX_RESPONSE_BYTES)]
        max_response_bytes: u64,
        /// The operation id to call with (default: a new one). Call twice
        /// with the same id to see that the plugin's retry is idempotent.
        #[arg(long, value_name = "ID")]
        operation_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration, its secrets, the templates and every
    /// plugin without serving (and without touching the database).
    Check,
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// Render one message with sample data, from the templates `serve`
    /// would use (`[email] templates_dir` over the shipped ones).
    Preview {
        /// welcome, order_received, service_active, invoice_issued,
        /// payment_received, refund_issued, renewal_due, balance_low,
        /// service_suspended, service_resumed, deletion_warning,
        /// service_closed, password_reset, staff_manual_queue,
        /// staff_refund_failed, staff_plugin_failing.
        event: String,
        /// The language (default: `[email] default_language`).
        #[arg(long)]
        lang: Option<String>,
        /// Print the HTML part instead of the subject and plain text.
        #[arg(long)]
        html: bool,
    },
}

#[derive(Subcommand)]
enum AutomationCommand {
    /// Run passes (for cron-style deployments); prints what was done as JSON.
    Run {
        /// One pass, then exit (the only mode: schedule it with cron).
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum AdminKeyCommand {
    /// Create a new staff API key and print it (it is shown only once).
    Create {
        /// A label to recognise the key by.
        #[arg(long, default_value = "admin")]
        name: String,
        /// admin, support or accountant.
        #[arg(long, default_value = "admin", value_parser = ["admin", "support", "accountant"])]
        role: String,
        /// The key stops working this many days from now.
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
    },
    /// List staff keys (never their secrets): role, created, last used,
    /// expiry, revoked.
    List,
    /// Revoke a staff key by its id (`key_…`); it stops working at once.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum StaffCommand {
    /// Create a staff login and print what its owner needs, once: the
    /// password (generated unless BURSAR_STAFF_PASSWORD is set) and, for
    /// admins always, the TOTP secret for an authenticator app.
    Create {
        #[arg(long)]
        email: String,
        /// admin, support or accountant.
        #[arg(long, value_parser = ["admin", "support", "accountant"])]
        role: String,
        /// Turn on TOTP for a support or accountant login too.
        #[arg(long)]
        totp: bool,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Print a new random key (64 hex digits) for `[secrets] key`.
    GenerateKey,
    /// Seal every stored credential again under the current key (after
    /// moving the old key to `previous_keys`); prints how many.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Plugin { command } = cli.command {
        return run_plugin_command(command);
    }
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bursar: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Serve {
        listen: Some(addr), ..
    } = &cli.command
    {
        config.listen = *addr;
    }
    server::init_logging(&config);
    bursar::invoices::configure(config.invoices.clone());
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

/// Plugin tools need no configuration or database.
fn run_plugin_command(command: PluginCommand) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bursar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            PluginCommand::New { name, kind, dir } => {
                let kind = bursar::plugins::scaffold::Kind::parse(&kind)
                    .ok_or_else(|| anyhow::anyhow!("--kind is processing or gateway"))?;
                let root = bursar::plugins::scaffold::generate(&name, kind, &dir)?;
                let stem = name.replace('-', "_");
                Ok(serde_json::json!({
                    "created": root.display().to_string(),
                    "build": format!("cd {} && cargo build --release", root.display()),
                    "component": root.join(format!("target/wasm32-wasip2/release/{stem}.wasm")).display().to_string(),
                }))
            }
            PluginCommand::Info { file } => author::info(&file).await,
            PluginCommand::Check { file } => author::check(&file).await,
            PluginCommand::Call {
                file,
                command,
                settings,
                service,
                remote_ref,
                allow_hosts,
                timeout_ms,
                memory_mb,
                max_response_bytes,
                operation_id,
            } => {
                let settings = settings
                    .iter()
                    .map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .ok_or_else(|| anyhow::anyhow!("--settings `{kv}` is not KEY=VALUE"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let service = match service {
                    Some(path) => {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                        Some(
                            serde_json::from_str(&text)
                                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                        )
                    }
                    None => None,
                };
                author::call(
                    &file,
                    author::CallOptions {
                        command,
                        settings,
                        service,
                        remote_ref,
                        allowed_hosts: allow_hosts,
                        timeout_ms,
                        memory_mb,
                        max_response_bytes,
                        operation_id,
                    },
                )
                .await
            }
        }
    });
    match result {
        Ok(value) => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            // `plugin call` prints a failed call as JSON too, and says so in
            // its exit status for scripts.
            if value.get("error").is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("bursar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Plugin { .. } => unreachable!("handled before the configuration is read"),
        Command::Serve {
            demo,
            simulator_listen,
            ..
        } => {
            let supplied = match std::env::var("BURSAR_ADMIN_KEY") {
                Ok(k) => Some(ApiKeySecret::from_supplied(k).map_err(|e| anyhow::anyhow!("{e}"))?),
                Err(_) => None,
            };
            let demo = demo
                .then(|| simulator_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))));
            server::serve(config, supplied, demo).await
        }
        Command::Automation {
            command: AutomationCommand::Run { once },
        } => {
            if !once {
                anyhow::bail!(
                    "`bursar automation run` needs --once; `bursar serve` runs passes continuously"
                );
            }
            let report = server::automation_pass(&config).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Notify {
            command: NotifyCommand::Preview { event, lang, html },
        } => {
            let kind = bursar::messages::Kind::parse(&event).ok_or_else(|| {
                let known: Vec<&str> = bursar::messages::Kind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect();
                anyhow::anyhow!("no message `{event}`; there are: {}", known.join(", "))
            })?;
            let templates = server::load_templates(&config)?;
            let lang = lang.unwrap_or_else(|| config.email.default_language.clone());
            let mut ctx = bursar::messages::sample_context(kind);
            ctx["company"] = serde_json::to_value(&config.company)?;
            ctx["portal_url"] = config.company.portal_url.clone().into();
            let r = templates
                .message(kind, &lang, &ctx)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match html {
                true => print!("{}", r.html),
                false => print!("Subject: {}\n\n{}", r.subject, r.text),
            }
            Ok(())
        }
        Command::Audit => {
            let store = server::open_store(&config).await?;
            let report = {
                let mut r = store.reader().await?;
                bursar::store::audit::run(r.conn()).await?
            };
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.is_clean() {
                anyhow::bail!("the audit found violations (see the report above)");
            }
            Ok(())
        }
        Command::Backup { to } => {
            let store = server::open_store(&config).await?;
            let done = bursar::backup::backup(&store, &config.database.url, &to).await;
            store.close().await;
            done?;
            println!(
                "backup written to {}; keep the secrets key ({}) with it",
                to.display(),
                match &config.secrets.key {
                    Some(_) => "[secrets] key".to_owned(),
                    None => config.secrets.key_file.display().to_string(),
                }
            );
            Ok(())
        }
        Command::Restore { from } => {
            let report =
                bursar::backup::restore(&config.database.url, &from, &config.store_options())
                    .await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.is_clean() {
                anyhow::bail!("restored, but the audit found violations (see the report above)");
            }
            println!("restored {} into the configured database", from.display());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let templates = server::load_templates(&config)?;
            for hook in &config.webhooks {
                hook.secret
                    .resolve()
                    .map_err(|m| anyhow::anyhow!("webhook {}: secret: {m}", hook.url))?;
            }
            bursar::notify::email::transport(&config.email)?;
            if let Some(key) = &config.secrets.key {
                key.resolve()
                    .map_err(|m| anyhow::anyhow!("[secrets] key: {m}"))?;
            } else if config.secrets.key_file.exists() {
                bursar::secrets::Secrets::load(&config.secrets)?;
            }
            let mut modules = bursar::services::module::ModuleRegistry::default();
            server::load_plugins(&config, &mut modules).await?;
            println!(
                "configuration is valid: database {}, {} plugin(s), {} webhook(s), e-mail {:?}, templates in {}",
                bursar::config::redact_url(&config.database.url),
                config.plugins.len(),
                config.webhooks.len(),
                config.email.transport,
                templates.languages().join(", ")
            );
            Ok(())
        }
        Command::Migrate => {
            let store = server::open_store(&config).await?;
            store.close().await;
            println!("database schema is up to date");
            Ok(())
        }
        Command::Openapi => {
            println!(
                "{}",
                bursar::api::openapi_json(&config.api, config.payments.max_amount)
            );
            Ok(())
        }
        Command::AdminKey { command } => admin_key(command, &config).await,
        Command::Staff {
            command: StaffCommand::Create { email, role, totp },
        } => {
            let store = server::open_store(&config).await?;
            let secrets = bursar::secrets::Secrets::load(&config.secrets)?;
            let role = bursar::accounts::Role::parse(&role).expect("clap checked the role");
            let password = std::env::var("BURSAR_STAFF_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty());
            let created = bursar::console::auth::create_staff(
                &store,
                &secrets,
                &email,
                role,
                password,
                totp,
                SystemClock.now(),
            )
            .await;
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&created?)?);
            Ok(())
        }
        Command::Secrets {
            command: SecretsCommand::GenerateKey,
        } => {
            println!("{}", bursar::secrets::generate_key());
            Ok(())
        }
        Command::Secrets {
            command: SecretsCommand::Rotate,
        } => {
            let store = server::open_store(&config).await?;
            let secrets = bursar::secrets::Secrets::load(&config.secrets)?;
            let mut tx = store.begin().await?;
            let n = bursar::store::services::reseal_secrets(tx.conn(), &secrets).await?;
            tx.commit().await?;
            store.close().await;
            println!(
                "{n} stored credentials sealed with key {}",
                secrets.key_id()
            );
            Ok(())
        }
    }
}

async fn admin_key(command: AdminKeyCommand, config: &Config) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let store = server::open_store(config).await?;
    let mut tx = store.begin().await?;
    match command {
        AdminKeyCommand::Create {
            name,
            role,
            expires_in_days,
        } => {
            let role = Role::parse(&role).unwrap_or(Role::Admin);
            let form = bursar::directory::KeyForm {
                role,
                account_id: None,
                name: &name,
                expires_at: expires_in_days.map(|d| now + chrono::Duration::days(i64::from(d))),
            };
            let (key, secret) =
                bursar::directory::create_key(tx.conn(), form, 0, "cli", now).await?;
            tx.commit().await?;
            println!("{}", secret.expose());
            eprintln!(
                "created {} key {} ({name}); the secret above is shown only once",
                role.as_str(),
                key.id
            );
        }
        AdminKeyCommand::List => {
            let keys = repo::list_staff_keys(tx.conn()).await?;
            tx.commit().await?;
            let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            println!(
                "{:<32} {:<10} {:<20} {:<16} {:<16} {:<16} {:<16}",
                "id", "role", "name", "created", "last used", "expires", "revoked"
            );
            for k in keys {
                println!(
                    "{:<32} {:<10} {:<20} {:<16} {:<16} {:<16} {:<16}",
                    k.id,
                    k.role.as_str(),
                    if k.managed {
                        format!("{} (managed)", k.name)
                    } else {
                        k.name.clone()
                    },
                    at(Some(k.created_at)),
                    at(k.last_used_at),
                    at(k.expires_at),
                    at(k.revoked_at)
                );
            }
        }
        AdminKeyCommand::Revoke { id } => {
            let key = bursar::directory::revoke_staff_key(tx.conn(), &id, "cli", now).await?;
            tx.commit().await?;
            eprintln!(
                "revoked {} key {} ({})",
                key.role.as_str(),
                key.id,
                key.name
            );
        }
    }
    store.close().await;
    Ok(())
}
