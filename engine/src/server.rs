//! Start-up: connect, migrate, make sure an admin key exists, serve.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::accounts::{ApiKeySecret, Role};
use crate::api::{self, AppState};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, LogFormat};
use crate::error::Result;
use crate::lifecycle::runner::OperationRunner;
use crate::plugins::instances::PluginRegistry;
use crate::plugins::{HostOptions, PluginHost};
use crate::secrets::Secrets;
use crate::services::module::ModuleRegistry;
use crate::store::Store;
use crate::store::accounts as repo;

/// Sets up tracing from the configuration (`RUST_LOG` wins when set).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal: not in journald, files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Connects to the configured database and brings its schema up to date.
pub async fn open_store(config: &Config) -> Result<Store> {
    let store = Store::connect(&config.database.url, &config.store_options()).await?;
    store.migrate().await?;
    Ok(store)
}

/// What the admin-key bootstrap did.
pub enum AdminKeyBootstrap {
    /// A new key was generated; its secret must be shown once.
    Generated(ApiKeySecret),
    /// The key from `BURSAR_ADMIN_KEY` is the managed one.
    Supplied(repo::ManagedKey),
    /// Admin keys exist already; nothing to do.
    Existing,
}

/// Makes sure the database has an admin key: registers `supplied` as the
/// managed key when given (a changed value revokes the previous one), else
/// generates one if there is none at all.
pub async fn bootstrap_admin_key(
    store: &Store,
    supplied: Option<ApiKeySecret>,
    clock: &SharedClock,
) -> Result<AdminKeyBootstrap> {
    let mut tx = store.begin().await?;
    let outcome = if let Some(secret) = supplied {
        AdminKeyBootstrap::Supplied(
            repo::register_managed_key(tx.conn(), &secret, clock.now()).await?,
        )
    } else if repo::count_admin_keys(tx.conn()).await? == 0 {
        let secret = ApiKeySecret::generate(Role::Admin);
        repo::create_key(
            tx.conn(),
            &secret,
            Role::Admin,
            None,
            "first admin key",
            clock.now(),
        )
        .await?;
        AdminKeyBootstrap::Generated(secret)
    } else {
        AdminKeyBootstrap::Existing
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Runs `bursar serve` (with `demo`, the address its simulator listens
/// on: see [`crate::demo`]) until Ctrl-C or SIGTERM.
pub async fn serve(
    mut config: Config,
    supplied_admin_key: Option<ApiKeySecret>,
    demo: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    crate::metrics::install();
    crate::invoices::configure(config.invoices.clone());
    let clock: SharedClock = Arc::new(SystemClock);
    let demo = match demo {
        Some(simulator) => Some(crate::demo::prepare(&mut config, simulator).await?),
        None => None,
    };
    let templates = load_templates(&config)?;
    let store = open_store(&config).await?;
    match bootstrap_admin_key(&store, supplied_admin_key, &clock).await? {
        AdminKeyBootstrap::Generated(secret) => {
            println!(
                "Admin API key (shown once, store it now): {}",
                secret.expose()
            );
            tracing::info!("generated the first admin API key");
        }
        AdminKeyBootstrap::Supplied(repo::ManagedKey::Registered { revoked }) => {
            tracing::info!(
                revoked,
                "admin API key from BURSAR_ADMIN_KEY registered; earlier managed keys revoked"
            )
        }
        AdminKeyBootstrap::Supplied(repo::ManagedKey::Unchanged) => {}
        AdminKeyBootstrap::Existing => {}
    }
    let seeded = match demo {
        Some(_) => Some(crate::demo::seed(&store, &clock).await?),
        None => None,
    };
    let secrets = open_secrets(&config, &store).await?;
    let demo_logins = match &seeded {
        Some(seeded) => Some(crate::demo::logins(&store, &secrets, seeded, &clock).await?),
        None => None,
    };
    let mut modules = ModuleRegistry::default();
    let plugins = load_plugins(&config, &mut modules).await?;
    let runner = Arc::new(OperationRunner::new(
        store.clone(),
        modules.clone(),
        clock.clone(),
        secrets.clone(),
        config.operations.clone(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner_task = runner.spawn(stopped);
    let state = AppState::from_config(
        store.clone(),
        clock.clone(),
        &config,
        modules.clone(),
        plugins,
        secrets,
    );
    let state = state.with_documents(templates.clone(), config.company.clone());
    let mailer = match crate::notify::email::transport(&config.email)? {
        None => {
            tracing::info!(
                "e-mail is off ([email] transport = \"off\"): notifications are recorded, not sent"
            );
            None
        }
        Some(transport) => {
            match config.email.transport {
                crate::notify::email::TransportKind::File => tracing::info!(
                    dir = %config.email.dir.display(),
                    "e-mail is written as .eml files (set [email] transport = \"smtp\" to send)"
                ),
                _ => tracing::info!(host = %config.email.smtp.host, "e-mail is sent over SMTP"),
            }
            let mailer = crate::notify::email::Mailer::new(
                store.clone(),
                templates,
                config.email.clone(),
                config.company.clone(),
                transport,
                Some(state.secrets.clone()),
            )?
            .with_time_zone(config.billing.time_zone);
            Some(mailer.spawn(clock.clone(), stop.subscribe()))
        }
    };
    let reconciler = spawn_reconciler(state.clone(), stop.subscribe());
    let webhooks = match config.webhooks.is_empty() {
        true => None,
        false => Some(
            crate::notify::Deliverer::new(store.clone(), &config.webhooks)?.spawn(
                clock.clone(),
                std::time::Duration::from_secs(1),
                stop.subscribe(),
            ),
        ),
    };
    let automation = spawn_automation(
        store.clone(),
        modules.clone(),
        config.automation.clone(),
        stop.subscribe(),
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (`listen`): {e}", config.listen))?;
    let addr = listener.local_addr()?;
    // Before anyone is told where Bursar listens (and may stop it).
    let shutdown = shutdown_signal();
    tracing::info!(%addr, backend = ?store.backend(), "Bursar is serving");
    if let (Some(demo), Some(seeded), Some(logins)) = (&demo, &seeded, &demo_logins) {
        print_demo(addr, demo, seeded, logins);
    }
    println!("Bursar listening on http://{addr}");
    axum::serve(
        listener,
        api::router_with(state, crate::console::router())
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let _ = stop.send(true);
    let _ = runner_task.await;
    let _ = reconciler.await;
    let _ = automation.await;
    if let Some(w) = webhooks {
        let _ = w.await;
    }
    if let Some(m) = mailer {
        let _ = m.await;
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The templates, with `[email] templates_dir` over the shipped ones, each
/// rendered once: a broken one stops the start, naming its file and line.
pub fn load_templates(config: &Config) -> anyhow::Result<Arc<crate::templates::Templates>> {
    let templates = crate::templates::Templates::load(
        config.email.templates_dir.as_deref(),
        &config.email.default_language,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(templates))
}

/// Reads the secrets key (creating the key file on first start) and seals
/// whatever credentials are still stored in the clear or under an old key.
pub async fn open_secrets(config: &Config, store: &Store) -> anyhow::Result<Arc<Secrets>> {
    let secrets = Secrets::load(&config.secrets)?;
    let mut tx = store.begin().await?;
    let sealed = crate::store::services::reseal_secrets(tx.conn(), &secrets).await?;
    tx.commit().await?;
    if sealed > 0 {
        tracing::info!(
            sealed,
            key = secrets.key_id(),
            "stored credentials sealed with the current key"
        );
    }
    Ok(Arc::new(secrets))
}

/// Starts the plugin host and loads the configured instances into the
/// module registry.
pub async fn load_plugins(
    config: &Config,
    modules: &mut ModuleRegistry,
) -> anyhow::Result<PluginRegistry> {
    if config.plugins.is_empty() {
        return Ok(PluginRegistry::default());
    }
    let host = PluginHost::new(HostOptions {
        cache_dir: config.plugin_host.cache_dir.clone(),
        max_memory_mb: config.plugin_host.max_memory_mb,
        ..HostOptions::default()
    })
    .map_err(|e| anyhow::anyhow!("cannot start the plugin host: {e}"))?;
    Ok(PluginRegistry::load(&host, &config.plugins, modules).await?)
}

/// What `bursar automation run --once` did.
#[derive(Debug, serde::Serialize)]
pub struct PassReport {
    /// Renewals, suspensions, resumptions, deletions, cancellations.
    #[serde(flatten)]
    pub automation: crate::automation::Report,
    /// Pending payments asked about and what changed.
    pub payments: crate::payments::Reconciled,
    /// Services whose remote side was queued to be checked and repaired.
    pub syncs_queued: u64,
    /// Provisioning operations run (the ones the pass queued, and retries
    /// that were due).
    pub operations_run: usize,
}

/// One whole automation pass, as a cron job runs it: reconcile pending
/// payments (so money that arrived counts), renew, suspend, resume, close
/// and cancel, then run the operations that are due.
pub async fn automation_pass(config: &Config) -> anyhow::Result<PassReport> {
    let clock: SharedClock = Arc::new(SystemClock);
    let store = open_store(config).await?;
    let secrets = open_secrets(config, &store).await?;
    let mut modules = ModuleRegistry::default();
    let plugins = load_plugins(config, &mut modules).await?;
    let state = AppState::from_config(
        store.clone(),
        clock.clone(),
        config,
        modules.clone(),
        plugins,
        secrets.clone(),
    );
    let payments =
        crate::billing::reconcile(&store, &state.plugins, &config.payments, clock.now()).await?;
    let automation = crate::automation::run_once(&store, &config.automation, clock.now()).await?;
    let syncs_queued =
        crate::automation::schedule_syncs(&store, &modules, &config.automation, clock.now())
            .await?;
    let runner = OperationRunner::new(
        store.clone(),
        modules,
        clock,
        secrets,
        config.operations.clone(),
    );
    // Failed attempts are scheduled later, so this ends once nothing is due.
    let operations_run = runner.run_until_idle(100_000).await?;
    store.close().await;
    Ok(PassReport {
        automation,
        payments,
        syncs_queued,
        operations_run,
    })
}

/// Asks gateways about old pending payments every
/// `payments.reconcile_interval_secs`, until shutdown.
fn spawn_reconciler(
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(state.payments.reconcile_interval_secs.max(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            let pass = crate::billing::reconcile(
                &state.store,
                &state.plugins,
                &state.payments,
                state.clock.now(),
            );
            match pass.await {
                Ok(r) if r.checked > 0 => {
                    tracing::info!(
                        checked = r.checked,
                        changed = r.changed,
                        failed = r.failed,
                        "payments reconciled"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "payment reconciliation failed"),
            }
        }
    })
}

/// Runs an automation pass every `automation.interval_secs` (0: never),
/// until shutdown.
fn spawn_automation(
    store: Store,
    modules: ModuleRegistry,
    config: crate::automation::AutomationConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if config.interval_secs == 0 {
            return;
        }
        let every = std::time::Duration::from_secs(config.interval_secs);
        loop {
            let now = chrono::Utc::now();
            if let Err(e) = crate::automation::run_once(&store, &config, now).await {
                tracing::warn!(error = %e, "automation pass failed");
            }
            if let Err(e) = crate::automation::schedule_syncs(&store, &modules, &config, now).await
            {
                tracing::warn!(error = %e, "queuing syncs failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
    })
}

fn print_demo(
    addr: std::net::SocketAddr,
    demo: &crate::demo::Demo,
    seeded: &crate::demo::Seeded,
    logins: &crate::demo::Logins,
) {
    println!("Demo mode: everything below is thrown away when Bursar stops.");
    println!(
        "Customer portal: http://{addr}/  log in as {} with password {}",
        logins.customer_email, logins.customer_password
    );
    println!(
        "Staff console:   http://{addr}/staff  log in as {} with password {}",
        logins.staff.email,
        logins.staff.password.as_deref().unwrap_or_default()
    );
    if let (Some(secret), Some(uri)) = (&logins.staff.totp_secret, &logins.staff.totp_uri) {
        println!(
            "  the staff admin's TOTP secret: {secret} (add it to an authenticator app: {uri})"
        );
    }
    println!(
        "DCImanager 6 simulator: {} (state: {}/sim/state)",
        demo.simulator.url(),
        demo.simulator.url()
    );
    println!(
        "Customer {} has EUR 500.00; customer API key: {}",
        seeded.account_id,
        seeded.customer_key.expose()
    );
    for (id, name) in &seeded.plans {
        println!("Plan {id}: {name}");
    }
    println!(
        "E-mail to customers and staff is written as .eml files into {}",
        demo.mail_dir().display()
    );
    if let Some((plan, _)) = seeded.plans.first() {
        println!("Order a server:");
        println!(
            "  curl -s -X POST http://{addr}/api/v1/orders -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{{\"account_id\": \"{}\", \"plan_id\": \"{plan}\", \"period\": \"1m\"}}'",
            seeded.customer_key.expose(),
            seeded.account_id
        );
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives
/// right after start (a supervisor stopping a fresh process) stops
/// Bursar gracefully instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let term = async {
                match signals.0.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let int = async {
                match signals.1.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => {},
                _ = int => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
