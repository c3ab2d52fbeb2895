//! Reminders, recorded as e-mail notifications by the automation pass:
//! a renewal due in N days that the balance does not cover (once per
//! service and period), a balance below a threshold (once each time it
//! falls below), and a suspended service's deletion in N days (once per
//! suspension).

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::calendar::{PeriodUnit, add_units};
use crate::error::Result;
use crate::ledger::LedgerAccountId;
use crate::lifecycle::renewal::renewal_quote;
use crate::messages::{Kind, NewMessage};
use crate::money::Currency;
use crate::services::{ServiceStatus, SuspendReason};
use crate::store::{
    Conn, Store, accounts as accounts_repo, catalog as plans_repo, ledger as ledger_repo,
    notifications as repo, services as services_repo,
};
use crate::templates::format_money;

use super::AutomationConfig;

/// Records the reminders due at `now`; returns how many were new.
pub async fn run(store: &Store, config: &AutomationConfig, now: DateTime<Utc>) -> Result<u64> {
    let mut recorded = 0;
    if config.remind_renewal_days > 0 {
        let until = now + Duration::days(i64::from(config.remind_renewal_days));
        recorded += each(
            store,
            ServiceStatus::Active,
            until,
            config.batch,
            |c, id| Box::pin(renewal_due(c, id, config.remind_renewal_days, now)),
        )
        .await?;
    }
    if config.warn_deletion_days > 0 {
        let any = now + Duration::days(36_500);
        recorded += each(
            store,
            ServiceStatus::Suspended,
            any,
            config.batch,
            |c, id| Box::pin(deletion_warning(c, id, config.warn_deletion_days, now)),
        )
        .await?;
    }
    for (code, threshold) in &config.low_balance {
        let Ok(currency) = Currency::from_code(code) else {
            continue;
        };
        recorded += balance_low(store, currency, *threshold, now).await?;
    }
    if recorded > 0 {
        metrics::counter!("bursar_reminders_total").increment(recorded);
        tracing::info!(recorded, "reminders recorded");
    }
    Ok(recorded)
}

/// Runs `step` for every service in `status` whose paid period ends by
/// `until`, each in its own transaction; a failing one is logged and the
/// rest go on.
async fn each<F>(
    store: &Store,
    status: ServiceStatus,
    until: DateTime<Utc>,
    batch: usize,
    step: F,
) -> Result<u64>
where
    F: for<'c> Fn(Conn<'c>, String) -> futures::future::BoxFuture<'c, Result<u64>>,
{
    let mut recorded = 0;
    let mut after = String::new();
    loop {
        let ids = {
            let mut r = store.reader().await?;
            services_repo::candidates(r.conn(), status, until, &after, batch.max(1)).await?
        };
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids {
            let mut tx = store.begin().await?;
            match step(tx.conn(), id.clone()).await {
                Ok(n) => {
                    tx.commit().await?;
                    recorded += n;
                }
                Err(e) => tracing::warn!(service = %id, error = %e, "reminder failed"),
            }
        }
        after = last;
    }
    Ok(recorded)
}

/// An auto-renewing service whose period ends within `days` and whose
/// renewal the balance (and credit limit) does not cover.
async fn renewal_due(mut c: Conn<'_>, id: String, days: u32, now: DateTime<Utc>) -> Result<u64> {
    let s = services_repo::get(c.reborrow(), &id).await?;
    let Some(paid_until) = s.paid_until else {
        return Ok(0);
    };
    if s.status != ServiceStatus::Active || !s.auto_renew || paid_until <= now {
        return Ok(0);
    }
    let key = format!("renewal_due:{}:{}", s.id, s.paid_units);
    if repo::has_key(c.reborrow(), &key).await? {
        return Ok(0);
    }
    let plan = plans_repo::get(c.reborrow(), &s.plan_id).await?;
    let quote = renewal_quote(&plan, &s, s.period)?;
    let gross = crate::charges::gross_for(
        c.reborrow(),
        &s.account_id,
        plan.spec.product_type.as_str(),
        quote.recurring,
    )
    .await?;
    let account = accounts_repo::get(c.reborrow(), &s.account_id).await?;
    let balance = ledger_repo::balance(c.reborrow(), &LedgerAccountId::customer(&s.account_id))
        .await?
        .balance;
    let available = balance.saturating_add(account.credit_limit);
    if available >= gross {
        return Ok(0);
    }
    let message = NewMessage {
        kind: Kind::RenewalDue,
        data: json!({
            "service_id": s.id,
            "account_id": s.account_id,
            "renewal": {
                "amount": format_money(gross, s.currency),
                "missing": format_money(gross - available, s.currency),
                "days": days,
                "date": s.time_zone.format(paid_until),
            },
        }),
        dedup_key: Some(key),
    };
    repo::insert(c, &[message], now).await
}

/// A service suspended for non-payment whose deletion is `days` away or
/// nearer.
async fn deletion_warning(
    mut c: Conn<'_>,
    id: String,
    days: u32,
    now: DateTime<Utc>,
) -> Result<u64> {
    let s = services_repo::get(c.reborrow(), &id).await?;
    let (Some(suspended_at), Some(SuspendReason::NonPayment)) = (s.suspended_at, s.suspend_reason)
    else {
        return Ok(0);
    };
    if s.status != ServiceStatus::Suspended {
        return Ok(0);
    }
    let plan = plans_repo::get(c.reborrow(), &s.plan_id).await?;
    let Some(deletion) = add_units(
        suspended_at,
        PeriodUnit::Day,
        plan.spec.deletion_days,
        s.time_zone,
    ) else {
        return Ok(0);
    };
    if now >= deletion || deletion - now > Duration::days(i64::from(days)) {
        return Ok(0);
    }
    let message = NewMessage {
        kind: Kind::DeletionWarning,
        data: json!({"service_id": s.id, "account_id": s.account_id}),
        dedup_key: Some(format!(
            "deletion_warning:{}:{}",
            s.id,
            suspended_at.timestamp_micros()
        )),
    };
    repo::insert(c, &[message], now).await
}

/// Accounts in `currency` with a running service whose balance fell below
/// `threshold`, told once until it is back above.
async fn balance_low(
    store: &Store,
    currency: Currency,
    threshold: i64,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut tx = store.begin().await?;
    repo::rearm_low_balance(tx.conn(), currency, threshold).await?;
    let low = repo::newly_low_balance(tx.conn(), currency, threshold, 1000).await?;
    let mut messages = Vec::new();
    for (account, balance) in &low {
        if !repo::mark_low_balance(tx.conn(), account, now).await? {
            continue;
        }
        messages.push(NewMessage {
            kind: Kind::BalanceLow,
            data: json!({
                "account_id": account,
                "threshold": format_money(threshold, currency),
                "balance": format_money(*balance, currency),
            }),
            dedup_key: None,
        });
    }
    let n = repo::insert(tx.conn(), &messages, now).await?;
    tx.commit().await?;
    Ok(n)
}
