//! The service lifecycle with its I/O: orders, payment of unpaid orders,
//! staff and customer actions, and the application of operation results.
//! Every function runs inside the caller's database transaction, so money,
//! state, event log and queued operation commit together or not at all.

pub mod runner;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::accounts::AccountStatus;
use crate::calendar::{Period, Zone, add_units};
use crate::catalog::{AddonValues, Plan, PlanSpec, PlanStatus, Quote, quote};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::invoices;
use crate::money::Money;
use crate::services::proration::prorate;
use crate::services::{Action, OperationKind, Service, ServiceStatus, SuspendReason, transition};
use crate::store::Conn;
use crate::store::accounts as accounts_repo;
use crate::store::catalog as plans_repo;
use crate::store::services as repo;

/// What a customer orders.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    pub account_id: String,
    pub plan_id: String,
    pub period: Period,
    pub addons: AddonValues,
    pub auto_renew: Option<bool>,
}

/// Checks that `action` is allowed from the service's state and returns
/// the state it leads to.
fn next_status(service: &Service, action: Action) -> Result<ServiceStatus> {
    transition(service.status, action).ok_or_else(|| Error::IllegalTransition {
        service_id: service.id.clone(),
        status: service.status.as_str(),
        action: action.as_str(),
    })
}

/// Moves a service to `to`, saving it and logging the event.
#[allow(clippy::too_many_arguments)] // the event log's columns, one by one
async fn apply(
    mut c: Conn<'_>,
    service: &mut Service,
    action: Action,
    to: ServiceStatus,
    reason: Option<&str>,
    actor: &str,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let from = service.status;
    service.status = to;
    service.updated_at = now;
    repo::save(c.reborrow(), service, from).await?;
    repo::record_event(
        c,
        &service.id,
        action.as_str(),
        from,
        to,
        reason,
        actor,
        detail,
        now,
    )
    .await
}

/// Prices an order and creates the service: paid from the balance (plus
/// credit limit) it goes to `opening` with an `open` operation queued;
/// otherwise it waits in `ordered` with the amount due. Its periods are
/// counted in the account's time zone, or `default_zone` if it has none.
pub async fn place_order(
    mut c: Conn<'_>,
    req: OrderRequest,
    default_zone: Zone,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Service> {
    let account = accounts_repo::get(c.reborrow(), &req.account_id).await?;
    if account.status != AccountStatus::Active {
        return Err(Error::Conflict(format!(
            "account {} is {}",
            account.id,
            account.status.as_str()
        )));
    }
    let plan = plans_repo::get(c.reborrow(), &req.plan_id).await?;
    if plan.status == PlanStatus::Archived {
        return Err(Error::Unprocessable {
            kind: "plan-archived",
            message: format!("plan {} is archived and sells no more", plan.id),
        });
    }
    let q = quote(&plan.spec, req.period, account.currency, &req.addons, true)?;
    let due = invoices::gross_for(
        c.reborrow(),
        &account.id,
        plan.spec.product_type.as_str(),
        q.total,
    )
    .await?;
    let mut service = Service {
        id: new_id("svc"),
        account_id: account.id.clone(),
        plan_id: plan.id.clone(),
        status: ServiceStatus::Ordered,
        suspend_reason: None,
        period: req.period,
        currency: account.currency,
        recurring_price: q.recurring,
        amount_due: due,
        addons: q.addons,
        params: Default::default(),
        auto_renew: req.auto_renew.unwrap_or(plan.spec.auto_renew),
        time_zone: account.time_zone.unwrap_or(default_zone),
        anchor_at: None,
        paid_units: 0,
        period_start: None,
        paid_until: None,
        range_price: 0,
        range_periods: 0,
        suspended_at: None,
        closed_at: None,
        created_at: now,
        updated_at: now,
    };
    repo::insert(c.reborrow(), &service).await?;
    repo::record_event(
        c.reborrow(),
        &service.id,
        "order",
        ServiceStatus::Ordered,
        ServiceStatus::Ordered,
        None,
        actor,
        Some(&format!(
            "{} {} for {}",
            plan.spec.name,
            req.period.as_str(),
            Money::new(due, account.currency)?
        )),
        now,
    )
    .await?;
    try_pay(c, &mut service, &plan.spec, actor, now).await?;
    Ok(service)
}

/// Pays an unpaid order from the balance if it can. Returns whether it did.
async fn try_pay(
    mut c: Conn<'_>,
    service: &mut Service,
    plan: &PlanSpec,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let to = next_status(service, Action::Pay)?;
    if service.amount_due > 0 {
        let charge = invoices::Charge {
            account_id: &service.account_id,
            product_type: plan.product_type.as_str(),
            gross: Money::new(service.amount_due, service.currency)?,
            description: &format!("{}: order of service {}", plan.name, service.id),
            idempotency_key: format!("order:{}", service.id),
            actor,
            give_back: false,
        };
        match invoices::post_charge(c.reborrow(), charge, now).await {
            Ok(_) => {}
            Err(Error::InsufficientFunds { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let paid = service.amount_due;
    service.amount_due = 0;
    apply(
        c.reborrow(),
        service,
        Action::Pay,
        to,
        None,
        actor,
        Some(&format!("paid {paid}")),
        now,
    )
    .await?;
    repo::enqueue(
        c,
        &service.id,
        OperationKind::Open,
        &plan.module,
        json!({}),
        now,
    )
    .await?;
    Ok(true)
}

/// Pays whatever unpaid orders of the account the balance now covers,
/// oldest first. Called after every credit or payment.
pub async fn settle_unpaid(
    mut c: Conn<'_>,
    account_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut opened = Vec::new();
    for id in repo::unpaid_of_account(c.reborrow(), account_id).await? {
        let mut service = repo::get_for_update(c.reborrow(), &id).await?;
        if service.status != ServiceStatus::Ordered {
            continue;
        }
        let plan = plans_repo::get(c.reborrow(), &service.plan_id).await?;
        if try_pay(c.reborrow(), &mut service, &plan.spec, actor, now).await? {
            opened.push(id);
        }
    }
    Ok(opened)
}

/// Suspends an active service for `reason` and queues the remote suspend.
pub async fn suspend(
    mut c: Conn<'_>,
    id: &str,
    reason: SuspendReason,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Service> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    let to = next_status(&service, Action::Suspend)?;
    let module = plans_repo::get(c.reborrow(), &service.plan_id)
        .await?
        .spec
        .module;
    service.suspend_reason = Some(reason);
    service.suspended_at = Some(now);
    apply(
        c.reborrow(),
        &mut service,
        Action::Suspend,
        to,
        Some(reason.as_str()),
        actor,
        None,
        now,
    )
    .await?;
    repo::enqueue(
        c,
        id,
        OperationKind::Suspend,
        &module,
        json!({"reason": reason.as_str()}),
        now,
    )
    .await?;
    Ok(service)
}

/// Lifts a suspension and queues the remote resume.
pub async fn resume(mut c: Conn<'_>, id: &str, actor: &str, now: DateTime<Utc>) -> Result<Service> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    resume_locked(c.reborrow(), &mut service, actor, now).await?;
    Ok(service)
}

async fn resume_locked(
    mut c: Conn<'_>,
    service: &mut Service,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let to = next_status(service, Action::Resume)?;
    let module = plans_repo::get(c.reborrow(), &service.plan_id)
        .await?
        .spec
        .module;
    let was = service.suspend_reason.map(SuspendReason::as_str);
    service.suspend_reason = None;
    service.suspended_at = None;
    apply(
        c.reborrow(),
        service,
        Action::Resume,
        to,
        was,
        actor,
        None,
        now,
    )
    .await?;
    repo::enqueue(
        c,
        &service.id,
        OperationKind::Resume,
        &module,
        json!({}),
        now,
    )
    .await?;
    Ok(())
}

/// Closes a service: an unpaid order is canceled at once (nothing was
/// charged); an active or suspended one goes to `closing` until the module
/// has torn it down.
pub async fn close(mut c: Conn<'_>, id: &str, actor: &str, now: DateTime<Utc>) -> Result<Service> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    if service.status == ServiceStatus::Ordered {
        let to = next_status(&service, Action::Cancel)?;
        service.amount_due = 0;
        service.closed_at = Some(now);
        apply(
            c,
            &mut service,
            Action::Cancel,
            to,
            None,
            actor,
            Some("unpaid order canceled"),
            now,
        )
        .await?;
        return Ok(service);
    }
    let to = next_status(&service, Action::Close)?;
    let module = plans_repo::get(c.reborrow(), &service.plan_id)
        .await?
        .spec
        .module;
    apply(
        c.reborrow(),
        &mut service,
        Action::Close,
        to,
        None,
        actor,
        None,
        now,
    )
    .await?;
    repo::enqueue(c, id, OperationKind::Close, &module, json!({}), now).await?;
    Ok(service)
}

/// Extends a service by `period`, charged from the balance at the plan's
/// current price. A service suspended for non-payment whose paid time now
/// reaches past `now` is resumed.
pub async fn prolong(
    mut c: Conn<'_>,
    id: &str,
    period: Period,
    actor: &str,
    ledger_key: String,
    now: DateTime<Utc>,
) -> Result<Service> {
    let service = repo::get_for_update(c.reborrow(), id).await?;
    next_status(&service, Action::Prolong)?;
    if period.unit() != service.period.unit()
        || !period.units().is_multiple_of(service.period.units())
    {
        return Err(Error::Unprocessable {
            kind: "invalid-period",
            message: format!(
                "a {} service is prolonged by whole multiples of its period, not by {}",
                service.period.as_str(),
                period.as_str()
            ),
        });
    }
    let plan = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let q = renewal_quote(&plan, &service, period)?;
    let (mut service, detail) = extended(&service, period, q.total, now)?;
    if q.total > 0 {
        let product_type = plan.spec.product_type.as_str();
        let gross =
            invoices::gross_for(c.reborrow(), &service.account_id, product_type, q.total).await?;
        let charge = invoices::Charge {
            account_id: &service.account_id,
            product_type,
            gross: Money::new(gross, service.currency)?,
            description: &charge_description(&plan.spec.name, id, period),
            idempotency_key: ledger_key,
            actor,
            give_back: false,
        };
        invoices::post_charge(c.reborrow(), charge, now).await?;
    }
    let status = service.status;
    apply(
        c.reborrow(),
        &mut service,
        Action::Prolong,
        status,
        None,
        actor,
        Some(&detail),
        now,
    )
    .await?;
    repo::enqueue(
        c.reborrow(),
        id,
        OperationKind::Prolong,
        &plan.spec.module,
        json!({"period": period.as_str()}),
        now,
    )
    .await?;
    if service.status == ServiceStatus::Suspended
        && service.suspend_reason == Some(SuspendReason::NonPayment)
        && service.paid_until.is_some_and(|end| end > now)
    {
        resume_locked(c, &mut service, actor, now).await?;
    }
    Ok(service)
}

/// `service` once `period` more is paid for `total` (minor units): the
/// paid end counted from the anchor on the calendar, and the paid range
/// (a new one if the old had ended by `now`); with the event log's detail.
pub(crate) fn extended(
    service: &Service,
    period: Period,
    total: i64,
    now: DateTime<Utc>,
) -> Result<(Service, String)> {
    let (Some(anchor), Some(paid_until)) = (service.anchor_at, service.paid_until) else {
        return Err(Error::Conflict(format!(
            "service {} has no paid period yet",
            service.id
        )));
    };
    let mut s = service.clone();
    let periods = i64::from(period.units() / service.period.units());
    s.paid_units += i64::from(period.units());
    let units = u32::try_from(s.paid_units)
        .map_err(|_| Error::Conflict("paid time beyond the calendar".into()))?;
    let new_end = add_units(anchor, period.unit(), units, service.time_zone)
        .ok_or_else(|| Error::Conflict("paid time beyond the calendar".into()))?;
    if paid_until <= now {
        s.period_start = Some(paid_until);
        s.range_price = total;
        s.range_periods = periods;
    } else {
        s.range_price += total;
        s.range_periods += periods;
    }
    s.paid_until = Some(new_end);
    s.updated_at = now;
    let detail = format!(
        "+{} until {}, charged {}",
        period.as_str(),
        new_end.to_rfc3339(),
        total
    );
    Ok((s, detail))
}

/// What `period` more of `service` costs on `plan` now: its price and
/// add-ons, no setup fee.
pub(crate) fn renewal_quote(plan: &Plan, service: &Service, period: Period) -> Result<Quote> {
    Ok(quote(
        &plan.spec,
        period,
        service.currency,
        &service.addons,
        false,
    )?)
}

/// What a renewal's ledger transaction and invoice line say.
pub(crate) fn charge_description(plan_name: &str, service_id: &str, period: Period) -> String {
    format!("{plan_name}: service {service_id} for {}", period.as_str())
}

/// The ledger key a renewal of `service` is charged under.
pub(crate) fn renewal_key(service: &Service) -> String {
    format!("renewal:{}:{}", service.id, service.paid_units)
}

/// Renews `service` for one more of its periods from the balance, charged
/// under the ledger key `renewal:{service}:{paid units}`: one renewal per
/// (service, paid period), whichever path — a pass, a payment — gets there
/// first. `None` when the balance (plus credit limit) does not cover it.
pub async fn renew(
    c: Conn<'_>,
    service: &Service,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Service>> {
    match prolong(
        c,
        &service.id,
        service.period,
        actor,
        renewal_key(service),
        now,
    )
    .await
    {
        Ok(s) => Ok(Some(s)),
        Err(Error::InsufficientFunds { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Moves an active service to another plan, prorated by calendar days of
/// the paid range: the unused part of what was paid comes back, the same
/// part of the new plan's price is charged.
pub async fn change_plan(
    mut c: Conn<'_>,
    id: &str,
    new_plan_id: &str,
    actor: &str,
    ledger_key: &str,
    now: DateTime<Utc>,
) -> Result<(Service, crate::services::proration::Proration)> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    let status = next_status(&service, Action::ChangePlan)?;
    if service.plan_id == new_plan_id {
        return Err(Error::Conflict(format!(
            "service {id} is already on plan {new_plan_id}"
        )));
    }
    let plan = plans_repo::get(c.reborrow(), new_plan_id).await?;
    if plan.status == PlanStatus::Archived {
        return Err(Error::Unprocessable {
            kind: "plan-archived",
            message: format!("plan {} is archived", plan.id),
        });
    }
    let (Some(start), Some(end)) = (service.period_start, service.paid_until) else {
        return Err(Error::Conflict(format!(
            "service {id} has no paid period yet"
        )));
    };
    let q = renewal_quote(&plan, &service, service.period)?;
    let new_range_price = q
        .recurring
        .checked_mul(service.range_periods.max(1))
        .ok_or(crate::money::MoneyError::OutOfRange)?;
    let p = prorate(
        Money::new(service.range_price, service.currency)?,
        Money::new(new_range_price, service.currency)?,
        start,
        end,
        now,
        service.time_zone,
    )?;
    let old_type = plans_repo::get(c.reborrow(), &service.plan_id)
        .await?
        .spec
        .product_type;
    for (amount, plan_id, product_type, give_back, suffix) in [
        (p.credit, &service.plan_id, old_type, true, "credit"),
        (p.charge, &plan.id, plan.spec.product_type, false, "charge"),
    ] {
        if amount <= 0 {
            continue;
        }
        let gross = invoices::gross_for(
            c.reborrow(),
            &service.account_id,
            product_type.as_str(),
            amount,
        )
        .await?;
        let description = format!(
            "{}{}/{} days of plan {plan_id} (service {id})",
            if give_back { "unused " } else { "" },
            p.remaining_days,
            p.total_days,
        );
        let charge = invoices::Charge {
            account_id: &service.account_id,
            product_type: product_type.as_str(),
            gross: Money::new(gross, service.currency)?,
            description: &description,
            idempotency_key: format!("{ledger_key}:{suffix}"),
            actor,
            give_back,
        };
        invoices::post_charge(c.reborrow(), charge, now).await?;
    }
    let from_plan = std::mem::replace(&mut service.plan_id, plan.id.clone());
    service.recurring_price = q.recurring;
    service.addons = q.addons;
    service.range_price = service.range_price - p.credit + p.charge;
    let detail =
        json!({"from_plan": from_plan, "to_plan": plan.id, "credit": p.credit, "charge": p.charge})
            .to_string();
    apply(
        c.reborrow(),
        &mut service,
        Action::ChangePlan,
        status,
        None,
        actor,
        Some(&detail),
        now,
    )
    .await?;
    repo::enqueue(
        c,
        id,
        OperationKind::ChangePlan,
        &plan.spec.module,
        json!({"from_plan": from_plan, "to_plan": plan.id}),
        now,
    )
    .await?;
    Ok((service, p))
}

/// The state change a finished operation brings: `open` → active (the
/// paid period starts now), `close` → closed. The others changed the state
/// when they were queued. Does nothing if the service has moved on.
pub async fn complete_effects(
    mut c: Conn<'_>,
    service_id: &str,
    kind: OperationKind,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(action) = kind.completion() else {
        return Ok(());
    };
    let mut service = repo::get_for_update(c.reborrow(), service_id).await?;
    let Some(to) = transition(service.status, action) else {
        tracing::warn!(
            service = service_id,
            status = service.status.as_str(),
            action = action.as_str(),
            "operation finished after the service moved on"
        );
        return Ok(());
    };
    match action {
        Action::Opened => {
            let units = service.period.units();
            service.anchor_at = Some(now);
            service.paid_units = i64::from(units);
            service.period_start = Some(now);
            service.paid_until = add_units(now, service.period.unit(), units, service.time_zone);
            service.range_price = service.recurring_price;
            service.range_periods = 1;
        }
        Action::Closed => service.closed_at = Some(now),
        _ => {}
    }
    apply(c, &mut service, action, to, None, actor, None, now).await
}
