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
use bursar::calendar::Period;
use bursar::catalog::PlanSpec;
use bursar::ledger::{TransactionDraft, TransactionKind};
use bursar::money::{Currency, Money};
use bursar::services::{Service, ServiceStatus};
use bursar::store::{Store, StoreOptions};
use bursar::store::{accounts, catalog, ledger, services};
use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    let eur = Currency::from_code("EUR")?;
    let start = Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap();
    let now = start + Duration::days(30);

    let seeding = Instant::now();
    let plan: PlanSpec = serde_json::from_value(json!({
        "name": "VPS", "product_type": "vps", "module": "manual",
        "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}],
    }))?;
    let mut tx = store.begin().await?;
    let plan = catalog::create(tx.conn(), plan, start).await?;
    // One customer per 100 services, each with enough for one renewal each.
    let customers = n.div_ceil(100);
    let mut account_ids = Vec::with_capacity(customers);
    for i in 0..customers {
        let a = accounts::create(
            tx.conn(),
            accounts::NewAccount {
                email: format!("p2-{i}@example.com"),
                name: format!("P2 {i}"),
                currency: eur,
                credit_limit: 0,
                country: None,
            },
            start,
        )
        .await?;
        let credit = TransactionDraft::adjustment(
            &a.id,
            TransactionKind::Credit,
            Money::new(100 * 1000, eur)?,
            "p2 seed",
            format!("p2-seed-{i}"),
            "p2",
        );
        ledger::post(tx.conn(), &credit, start).await?;
        account_ids.push(a.id);
    }
    for i in 0..n {
        let s = Service {
            id: format!("svc_p2_{i:07}"),
            account_id: account_ids[i / 100].clone(),
            plan_id: plan.id.clone(),
            status: ServiceStatus::Active,
            suspend_reason: None,
            period: Period::Month,
            currency: eur,
            recurring_price: 1000,
            amount_due: 0,
            addons: Default::default(),
            params: Default::default(),
            auto_renew: true,
            anchor_at: Some(start),
            paid_units: 1,
            period_start: Some(start),
            paid_until: Some(start + Duration::days(31)),
            range_price: 1000,
            range_periods: 1,
            suspended_at: None,
            closed_at: None,
            created_at: start,
            updated_at: start,
        };
        services::insert(tx.conn(), &s).await?;
    }
    tx.commit().await?;
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
