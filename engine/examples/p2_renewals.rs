//! P2: one automation pass over N active services due for renewal, each
//! renewed from its balance (ledger transaction with tax split, invoice,
//! new period end, event, prolong operation, outbox event).
//!
//! `cargo run --release -p bursar --example p2_renewals -- [N] [DATABASE_URL]`
//!
//! Without a URL it uses a fresh SQLite file. With a PostgreSQL URL the
//! database must be empty (or be one you can drop): the run creates the
//! schema in it. It prints renewals per second; compare with
//! `pgbench -b simple-update` on the same server (docs/BENCHMARKS.md).

use std::time::Instant;

use bursar::automation::{AutomationConfig, run_once};
use bursar::seed::due_renewals;
use bursar::store::ledger;
use bursar::store::{Store, StoreOptions};
use chrono::{Duration, TimeZone, Utc};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Warnings (a batch falling back to one by one) go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("p2.db").display()));
    let store = Store::connect(&url, &StoreOptions::default()).await?;
    store.migrate().await?;
    let start = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
    let now = start + Duration::days(30);

    let seeding = Instant::now();
    // One customer per 100 services, each with enough for one renewal each.
    due_renewals(&store, n, 100, 1000, start).await?;
    eprintln!(
        "seeded {n} services in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let config = AutomationConfig {
        batch: 1000,
        ..AutomationConfig::default()
    };
    let started = Instant::now();
    let report = run_once(&store, &config, now).await?;
    let secs = started.elapsed().as_secs_f64();
    let renewed = report.actions.get("renewed").copied().unwrap_or(0);
    anyhow::ensure!(
        renewed as usize == n,
        "renewed {renewed} of {n}: {report:?}"
    );
    let mut r = store.reader().await?;
    anyhow::ensure!(
        ledger::audit(r.conn()).await?.is_clean(),
        "ledger audit failed"
    );
    println!(
        "P2 {:?}: {n} renewals in {secs:.1} s = {:.0} renewals/s",
        store.backend(),
        n as f64 / secs
    );
    Ok(())
}
