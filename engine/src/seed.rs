//! Bulk data for benchmarks and crash tests: many active services due for
//! renewal, written in one transaction.

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::calendar::{Period, Zone, add_units};
use crate::catalog::PlanSpec;
use crate::error::{Error, Result};
use crate::ledger::{TransactionDraft, TransactionKind};
use crate::money::{Currency, Money};
use crate::services::{Service, ServiceStatus};
use crate::store::{Store, accounts, catalog, invoices, ledger, services};

/// What [`due_renewals`] wrote.
#[derive(Debug, Clone)]
pub struct DueRenewals {
    pub plan_id: String,
    /// The price of one monthly renewal, EUR minor units.
    pub price: i64,
    pub accounts: Vec<String>,
    /// Service ids `svc_due_0000000`…, in order.
    pub services: Vec<String>,
    /// Where every paid period ends now (`anchor` + 1 month).
    pub paid_until: DateTime<Utc>,
}

/// Where the seeded customers are billed: prices include its 19 % VAT.
pub const SEED_COUNTRY: &str = "DE";

/// `n` active monthly EUR services anchored at `anchor` with one month
/// paid, `per_account` to a customer in [`SEED_COUNTRY`]; every customer is
/// credited `credit_per_service` for each of its services. The plan
/// (price 1000, VAT included) is provisioned by the `manual` module.
pub async fn due_renewals(
    store: &Store,
    n: usize,
    per_account: usize,
    credit_per_service: i64,
    anchor: DateTime<Utc>,
) -> Result<DueRenewals> {
    let price = 1000;
    let eur = Currency::from_code("EUR")?;
    let paid_until = add_units(anchor, Period::Month.unit(), 1, Zone::UTC)
        .ok_or_else(|| Error::Conflict("anchor beyond the calendar".into()))?;
    let plan: PlanSpec = serde_json::from_value(json!({
        "name": "VPS", "product_type": "vps", "module": "manual",
        "prices": [{"period": "1m", "currency": "EUR", "amount": price}],
    }))
    .map_err(|e| Error::Conflict(format!("seed plan: {e}")))?;
    let mut tx = store.begin().await?;
    let plan = catalog::create(tx.conn(), plan, anchor).await?;
    // Prices include 19 % VAT: every charge splits into revenue and tax.
    invoices::create_rule(
        tx.conn(),
        invoices::NewRule {
            country: SEED_COUNTRY,
            product_type: None,
            name: "VAT",
            rate_bp: 1900,
            inclusive: true,
        },
        anchor,
    )
    .await?;
    let per_account = per_account.max(1);
    let mut account_ids = Vec::with_capacity(n.div_ceil(per_account));
    let mut service_ids = Vec::with_capacity(n);
    for i in 0..n {
        if i % per_account == 0 {
            let k = account_ids.len();
            let a = accounts::create(
                tx.conn(),
                accounts::NewAccount {
                    email: format!("due-{k}@example.com"),
                    name: format!("Due {k}"),
                    currency: eur,
                    credit_limit: 0,
                    country: Some(SEED_COUNTRY.to_owned()),
                    time_zone: None,
                    language: None,
                    email_opt_out: vec![],
                },
                anchor,
            )
            .await?;
            let services_here = per_account.min(n - i) as i64;
            let credit = TransactionDraft::adjustment(
                &a.id,
                TransactionKind::Credit,
                Money::new(credit_per_service * services_here, eur)?,
                "seed",
                format!("seed-{k}"),
                "seed",
            );
            ledger::post(tx.conn(), &credit, anchor).await?;
            account_ids.push(a.id);
        }
        let s = Service {
            id: format!("svc_due_{i:07}"),
            account_id: account_ids[i / per_account].clone(),
            plan_id: plan.id.clone(),
            status: ServiceStatus::Active,
            suspend_reason: None,
            period: Period::Month,
            currency: eur,
            recurring_price: price,
            setup_fee: 0,
            amount_due: 0,
            addons: Default::default(),
            params: Default::default(),
            auto_renew: true,
            time_zone: Zone::UTC,
            anchor_at: Some(anchor),
            paid_units: 1,
            period_start: Some(anchor),
            paid_until: Some(paid_until),
            range_periods: 1,
            range_from: Some(anchor),
            range_gross: price,
            range_tax: 0,
            suspended_at: None,
            closed_at: None,
            created_at: anchor,
            updated_at: anchor,
        };
        services::insert(tx.conn(), &s).await?;
        service_ids.push(s.id);
    }
    tx.commit().await?;
    // Statistics, as a database in service has them (autovacuum keeps
    // PostgreSQL's): without them the planner takes the fresh bulk for
    // a handful of rows.
    let mut w = store.begin().await?;
    crate::sql!(w.conn(), c => sqlx::query("ANALYZE").execute(&mut *c).await.map(drop))?;
    w.commit().await?;
    Ok(DueRenewals {
        plan_id: plan.id,
        price,
        accounts: account_ids,
        services: service_ids,
        paid_until,
    })
}
