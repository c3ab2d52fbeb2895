//! The service lifecycle with its I/O: orders, payment of unpaid orders,
//! staff and customer actions, and the application of operation results.
//! Every function runs inside the caller's database transaction, so money,
//! state, event log and queued operation commit together or not at all.

pub mod operations;
pub mod order_batch;
pub mod renewal;
pub mod runner;

use renewal::{charge_description, extended, renewal_key, renewal_quote};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::accounts::{Account, AccountStatus};
use crate::calendar::{BillingConfig, Period, add_units};
use crate::catalog::{AddonValues, Plan, PlanSpec, PlanStatus, Quote, quote};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::ledger::TransactionDraft;
use crate::money::Money;
use crate::services::proration::{Paid, Proration, prorate};
use crate::services::{
    Action, NewEvent, Operation, OperationKind, Service, ServiceStatus, SuspendReason, transition,
};
use crate::store::Conn;
use crate::store::accounts as accounts_repo;
use crate::store::catalog as plans_repo;
use crate::store::ledger as ledger_repo;
use crate::store::services as repo;
use crate::{charges, invoices};

/// What a customer orders.
#[derive(Debug, Clone)]
pub struct OrderRequest {
    pub account_id: String,
    pub plan_id: String,
    pub period: Period,
    pub addons: AddonValues,
    pub auto_renew: Option<bool>,
}

/// Appends to services' event logs and announces each line to the webhook
/// endpoints (the outbox), in the caller's transaction.
pub async fn log(mut c: Conn<'_>, events: &[NewEvent<'_>], now: DateTime<Utc>) -> Result<()> {
    repo::record_events(c.reborrow(), events, now).await?;
    let announced: Vec<_> = events.iter().map(NewEvent::announcement).collect();
    crate::notify::record_many(c, &announced, now).await
}

/// One line of [`log`].
#[allow(clippy::too_many_arguments)] // the event log's columns, one by one
pub async fn record_event(
    c: Conn<'_>,
    service_id: &str,
    action: &str,
    from: ServiceStatus,
    to: ServiceStatus,
    reason: Option<&str>,
    actor: &str,
    detail: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let event = NewEvent {
        service_id,
        action,
        from,
        to,
        reason,
        actor,
        detail,
    };
    log(c, &[event], now).await
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
    record_event(
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

/// Refuses an order of an account that is not active or of a plan that
/// sells no more.
fn check_order(account: &Account, plan: &Plan) -> Result<()> {
    if account.status != AccountStatus::Active {
        return Err(Error::AccountNotActive {
            account_id: account.id.clone(),
            status: account.status.as_str(),
        });
    }
    if plan.status == PlanStatus::Archived {
        return Err(Error::Refused {
            refusal: crate::error::Refusal::PlanArchived,
            message: format!("plan {} is archived and sells no more", plan.id),
        });
    }
    Ok(())
}

/// The service an order creates, unpaid (`ordered`, with the amount due
/// under the account's tax `rule` for the plan's product type), and the
/// line its event log opens with. Writes nothing.
fn new_order(
    account: &Account,
    plan: &Plan,
    req: &OrderRequest,
    rule: Option<&crate::invoices::TaxRule>,
    default_zone: crate::calendar::Zone,
    now: DateTime<Utc>,
) -> Result<(Service, String)> {
    let q = quote(&plan.spec, req.period, account.currency, &req.addons, true)?;
    let due = rule.map_or(q.total, |r| r.gross_of(q.total));
    let detail = format!(
        "{} {} for {}",
        plan.spec.name,
        req.period.as_str(),
        Money::new(due, account.currency)?
    );
    let service = Service {
        id: new_id("svc"),
        account_id: account.id.clone(),
        plan_id: plan.id.clone(),
        status: ServiceStatus::Ordered,
        suspend_reason: None,
        period: req.period,
        currency: account.currency,
        recurring_price: q.recurring,
        setup_fee: q.setup_fee,
        amount_due: due,
        addons: q.addons,
        params: Default::default(),
        auto_renew: req.auto_renew.unwrap_or(plan.spec.auto_renew),
        time_zone: account.time_zone.unwrap_or(default_zone),
        anchor_at: None,
        paid_units: 0,
        period_start: None,
        paid_until: None,
        range_periods: 0,
        range_from: None,
        range_gross: 0,
        range_tax: 0,
        suspended_at: None,
        closed_at: None,
        created_at: now,
        updated_at: now,
    };
    Ok((service, detail))
}

/// Whether an order of `due` may wait unpaid beside `waiting` others, or
/// the balance (plus credit limit) `balance` covers it now.
fn within_quota(
    waiting: i64,
    billing: &BillingConfig,
    balance: i64,
    min_balance: Option<i64>,
    due: i64,
) -> bool {
    waiting < i64::from(billing.max_unpaid_orders_per_account)
        || min_balance.is_none_or(|floor| balance - due >= floor)
}

fn quota_refusal(account_id: &str, waiting: i64) -> Error {
    Error::Quota {
        what: "unpaid orders",
        message: format!(
            "account {account_id} has {waiting} unpaid orders waiting; pay or cancel one first"
        ),
    }
}

/// Prices an order and creates the service: paid from the balance (plus
/// credit limit) it goes to `opening` with an `open` operation queued;
/// otherwise it waits in `ordered` with the amount due — at most
/// `billing.max_unpaid_orders_per_account` of them per account. Its
/// periods are counted in the account's time zone, or the deployment's.
/// [`order_batch::place_many`] does the same for many orders at once.
pub async fn place_order(
    mut c: Conn<'_>,
    req: OrderRequest,
    billing: &BillingConfig,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Service> {
    let account = accounts_repo::get(c.reborrow(), &req.account_id).await?;
    let plan = plans_repo::get(c.reborrow(), &req.plan_id).await?;
    check_order(&account, &plan)?;
    let rule = charges::rule_in(
        c.reborrow(),
        account.country.as_deref(),
        plan.spec.product_type.as_str(),
    )
    .await?;
    let (mut service, detail) =
        new_order(&account, &plan, &req, rule.as_ref(), billing.time_zone, now)?;
    let waiting = repo::count_unpaid_of_account(c.reborrow(), &account.id).await?;
    if waiting >= i64::from(billing.max_unpaid_orders_per_account) {
        // Only an order that cannot be paid now adds to the waiting ones.
        let balance = ledger_repo::balance(
            c.reborrow(),
            &crate::ledger::LedgerAccountId::customer(&account.id),
        )
        .await?;
        let (balance, floor) = (balance.balance, balance.min_balance);
        if !within_quota(waiting, billing, balance, floor, service.amount_due) {
            return Err(quota_refusal(&account.id, waiting));
        }
    }
    repo::insert(c.reborrow(), &service).await?;
    record_event(
        c.reborrow(),
        &service.id,
        "order",
        ServiceStatus::Ordered,
        ServiceStatus::Ordered,
        None,
        actor,
        Some(&detail),
        now,
    )
    .await?;
    try_pay(c, &mut service, &plan.spec, Some(rule), actor, now).await?;
    Ok(service)
}

/// The charge that pays an unpaid order, itemised: the first period (what
/// a later credit can give back a part of) and the setup fee (which never
/// comes back). `description`: [`order_charge_description`].
fn order_charge<'a>(
    service: &'a Service,
    plan: &'a PlanSpec,
    description: &'a str,
    actor: &'a str,
) -> Result<charges::Charge<'a>> {
    let mut charge = charges::Charge::new(
        &service.account_id,
        plan.product_type.as_str(),
        Money::new(service.amount_due, service.currency)?,
        description,
        format!("order:{}", service.id),
        actor,
    );
    charge.parts = vec![
        (
            charge_description(&plan.name, &service.id, service.period),
            service.recurring_price,
        ),
        (
            format!("{}: setup of service {}", plan.name, service.id),
            service.setup_fee,
        ),
    ];
    Ok(charge)
}

fn order_charge_description(plan: &PlanSpec, service: &Service) -> String {
    format!("{}: order of service {}", plan.name, service.id)
}

/// Marks an order paid: nothing more due, and the taxed first period
/// (the first of the charge's `lines`) is what a later credit counts from.
fn mark_paid(service: &mut Service, lines: &[crate::invoices::InvoiceLine]) {
    if service.recurring_price > 0
        && let Some(first) = lines.first()
    {
        service.range_gross = first.total;
        service.range_tax = first.tax;
    }
    service.amount_due = 0;
}

/// Pays an unpaid order from the balance if it can. Returns whether it did.
/// `rule`: the account's tax rule for the plan's product type, when the
/// caller has looked it up in this transaction (see [`charges::Charge::rule`]).
async fn try_pay(
    mut c: Conn<'_>,
    service: &mut Service,
    plan: &PlanSpec,
    rule: Option<Option<crate::invoices::TaxRule>>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let to = next_status(service, Action::Pay)?;
    let mut lines = Vec::new();
    if service.amount_due > 0 {
        let description = order_charge_description(plan, service);
        let mut charge = order_charge(service, plan, &description, actor)?;
        charge.rule = rule;
        match charges::post_charge(c.reborrow(), charge, now).await {
            Ok(charged) => lines = charged.lines,
            Err(Error::InsufficientFunds { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    let paid = service.amount_due;
    mark_paid(service, &lines);
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
    repo::enqueue_many(
        c,
        &[(&service.id, OperationKind::Open, &plan.module, json!({}))],
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
        if try_pay(c.reborrow(), &mut service, &plan.spec, None, actor, now).await? {
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

/// Turns automatic renewal on or off. Off, the service is not renewed from
/// the balance when its paid time ends (it is suspended for non-payment
/// after the plan's grace days, like any unpaid service); nothing is
/// charged or given back now. A service closing or closed does not renew
/// at all.
pub async fn set_auto_renew(
    mut c: Conn<'_>,
    id: &str,
    on: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Service> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    if matches!(
        service.status,
        ServiceStatus::Closing | ServiceStatus::Closed
    ) {
        return Err(Error::Conflict(format!(
            "service {id} is {}; it does not renew",
            service.status.as_str()
        )));
    }
    if service.auto_renew == on {
        return Ok(service);
    }
    service.auto_renew = on;
    service.updated_at = now;
    repo::save(c.reborrow(), &service, service.status).await?;
    record_event(
        c,
        id,
        "auto_renew",
        service.status,
        service.status,
        None,
        actor,
        Some(if on { "on" } else { "off" }),
        now,
    )
    .await?;
    Ok(service)
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
/// reaches past `now` is resumed. Refused while a plan change waits for
/// its module: the change is priced on the paid range as it was asked.
pub async fn prolong(
    mut c: Conn<'_>,
    id: &str,
    period: Period,
    actor: &str,
    ledger_key: String,
    now: DateTime<Utc>,
) -> Result<Service> {
    if repo::has_unfinished(c.reborrow(), id, OperationKind::ChangePlan).await? {
        return Err(Error::Conflict(format!(
            "service {id} has a plan change waiting for its module; prolong it once the change is done"
        )));
    }
    extend(c, id, period, actor, ledger_key, now).await
}

/// [`prolong`] without its check: what renewals do.
async fn extend(
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
        return Err(Error::Refused {
            refusal: crate::error::Refusal::InvalidPeriod,
            message: format!(
                "a {} service is prolonged by whole multiples of its period, not by {}",
                service.period.as_str(),
                period.as_str()
            ),
        });
    }
    let plan = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let q = renewal_quote(&plan, &service, period)?;
    let charged = if q.total > 0 {
        let product_type = plan.spec.product_type.as_str();
        let gross =
            charges::gross_for(c.reborrow(), &service.account_id, product_type, q.total).await?;
        let description = charge_description(&plan.spec.name, id, period);
        let charge = charges::Charge::new(
            &service.account_id,
            product_type,
            Money::new(gross, service.currency)?,
            &description,
            ledger_key,
            actor,
        );
        charges::post_charge(c.reborrow(), charge, now).await?.taxed
    } else {
        invoices::Taxed::default()
    };
    let (mut service, detail) = extended(&service, period, charged, now)?;
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

/// Renews `service` for one more of its periods from the balance, charged
/// under the ledger key `renewal:{service}:{paid units}`: one renewal per
/// (service, paid period), whichever path — a pass, a payment — gets there
/// first. `None` when the balance (plus credit limit) does not cover it,
/// or when the service's automatic renewal is off (a payment does not
/// renew it either: prolonging it is the customer's to ask), or when it
/// changed since the caller read it (another path renewed it first): the
/// service is read again under lock and the ledger key is that copy's.
pub async fn renew(
    mut c: Conn<'_>,
    service: &Service,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Service>> {
    let fresh = repo::get_for_update(c.reborrow(), &service.id).await?;
    if !fresh.auto_renew || fresh.status != service.status || fresh.paid_units != service.paid_units
    {
        return Ok(None);
    }
    match extend(c, &fresh.id, fresh.period, actor, renewal_key(&fresh), now).await {
        Ok(s) => Ok(Some(s)),
        Err(Error::InsufficientFunds { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The paid range of a service as the money it was charged for it.
fn paid_range(service: &Service) -> Result<(DateTime<Utc>, Paid)> {
    let (Some(start), Some(end)) = (service.period_start, service.paid_until) else {
        return Err(Error::Conflict(format!(
            "service {} has no paid period yet",
            service.id
        )));
    };
    Ok((
        start,
        Paid {
            from: service.range_from.unwrap_or(start),
            until: end,
            gross: service.range_gross,
            tax: service.range_tax,
        },
    ))
}

/// What moving `service` to `plan` at `now` gives back and charges, and
/// the new plan's quote for the service's period and add-ons.
fn price_change(service: &Service, plan: &Plan, now: DateTime<Utc>) -> Result<(Proration, Quote)> {
    let (start, paid) = paid_range(service)?;
    let q = renewal_quote(plan, service, service.period)?;
    let new_range_price = q
        .recurring
        .checked_mul(service.range_periods.max(1))
        .ok_or(crate::money::MoneyError::OutOfRange)?;
    let p = prorate(paid, new_range_price, start, now)?;
    Ok((p, q))
}

/// Whether a service on `from` may change to `to` by a plan change (not a
/// staff migration): `to` is in `from`'s change list, sells, and is
/// provisioned by the same module instance for the same product type.
fn check_change(from: &Plan, to: &Plan) -> Result<()> {
    let refuse = |message: String| Error::Refused {
        refusal: crate::error::Refusal::PlanChangeNotAllowed,
        message,
    };
    if from.id == to.id {
        return Err(Error::Conflict(format!(
            "the service is already on plan {}",
            to.id
        )));
    }
    if to.status == PlanStatus::Archived {
        return Err(Error::Refused {
            refusal: crate::error::Refusal::PlanArchived,
            message: format!("plan {} is archived", to.id),
        });
    }
    if !from.spec.change_to.contains(&to.id) {
        return Err(refuse(format!(
            "plan {} does not list {} among the plans it may change to",
            from.id, to.id
        )));
    }
    if from.spec.module != to.spec.module || from.spec.product_type != to.spec.product_type {
        return Err(refuse(format!(
            "plan {} is provisioned by `{}` as {}, plan {} by `{}` as {}: only staff may migrate a service between modules",
            from.id,
            from.spec.module,
            from.spec.product_type.as_str(),
            to.id,
            to.spec.module,
            to.spec.product_type.as_str()
        )));
    }
    Ok(())
}

/// A plan change asked for: what it is expected to cost, and the operation
/// that asks the module.
#[derive(Debug, Clone)]
pub struct RequestedChange {
    pub service: Service,
    /// As worked out now; the money moves when the module has made the
    /// change, worked out again then.
    pub proration: Proration,
    /// What was set aside from the balance until the module answers.
    pub hold: i64,
    pub operation: Operation,
}

/// Asks for an active service to move to another plan of its plan's change
/// list. Nothing changes yet: the change goes to the service's module as a
/// `change_plan` operation, and the plan and the money move only when the
/// module has done it (see [`apply_plan_change`]); an `unsupported` or
/// `rejected` answer changes and moves nothing. Meanwhile what the change
/// is expected to cost beyond what comes back is set aside from the
/// balance, so the money is there when the module answers.
pub async fn request_plan_change(
    mut c: Conn<'_>,
    id: &str,
    new_plan_id: &str,
    actor: &str,
    ledger_key: &str,
    now: DateTime<Utc>,
) -> Result<RequestedChange> {
    let service = repo::get_for_update(c.reborrow(), id).await?;
    next_status(&service, Action::ChangePlan)?;
    let from = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let to = plans_repo::get(c.reborrow(), new_plan_id).await?;
    check_change(&from, &to)?;
    if repo::has_unfinished(c.reborrow(), id, OperationKind::ChangePlan).await? {
        return Err(Error::Conflict(format!(
            "service {id} has a plan change waiting for its module already"
        )));
    }
    let (p, _) = price_change(&service, &to, now)?;
    let charge = charges::gross_for(
        c.reborrow(),
        &service.account_id,
        to.spec.product_type.as_str(),
        p.charge,
    )
    .await?;
    let hold = (charge - p.credit).max(0);
    let hold_key = format!("{ledger_key}:hold");
    if hold > 0 {
        let draft = TransactionDraft::hold(
            &service.account_id,
            Money::new(hold, service.currency)?,
            false,
            &format!("set aside for the change of service {id} to plan {}", to.id),
            hold_key.clone(),
            actor,
        );
        ledger_repo::post(c.reborrow(), &draft, now).await?;
    }
    let operation = repo::enqueue(
        c.reborrow(),
        id,
        OperationKind::ChangePlan,
        &from.spec.module,
        json!({"plan_id": to.id, "from_plan": from.id, "hold": hold, "hold_key": hold_key}),
        now,
    )
    .await?;
    let detail =
        json!({"from_plan": from.id, "to_plan": to.id, "hold": hold, "operation": operation.id})
            .to_string();
    record_event(
        c,
        id,
        "change_plan_requested",
        service.status,
        service.status,
        None,
        actor,
        Some(&detail),
        now,
    )
    .await?;
    Ok(RequestedChange {
        service,
        proration: p,
        hold,
        operation,
    })
}

/// Gives back what a plan change set aside, once.
async fn release_hold(
    c: Conn<'_>,
    service: &Service,
    op: &Operation,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let hold = op.payload["hold"].as_i64().unwrap_or(0);
    if hold <= 0 {
        return Ok(());
    }
    let draft = TransactionDraft::hold(
        &service.account_id,
        Money::new(hold, service.currency)?,
        true,
        &format!("released: change of service {}", service.id),
        format!("{}:release", op.id),
        actor,
    );
    ledger_repo::post(c, &draft, now).await?;
    Ok(())
}

/// The module made the change of `op` (a `change_plan` operation): the
/// service moves to the new plan and the money moves, worked out now — the
/// unused part of what was charged comes back (its net and tax exactly as
/// invoiced), the remaining part of the new plan's price is charged — with
/// what was set aside given back in the same transaction. Fails with
/// `InsufficientFunds` if the balance no longer covers it; nothing moves
/// then.
pub async fn apply_plan_change(
    mut c: Conn<'_>,
    op: &Operation,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut service = repo::get_for_update(c.reborrow(), &op.service_id).await?;
    release_hold(c.reborrow(), &service, op, actor, now).await?;
    let to_plan = op.payload["plan_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let from_plan = op.payload["from_plan"].as_str().unwrap_or_default();
    if service.plan_id != from_plan
        || !matches!(
            service.status,
            ServiceStatus::Active | ServiceStatus::Suspended
        )
    {
        tracing::warn!(service = %service.id, operation = %op.id, status = service.status.as_str(),
            "plan change finished after the service moved on; nothing charged");
        return Ok(());
    }
    let plan = plans_repo::get(c.reborrow(), &to_plan).await?;
    let old = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let (p, q) = price_change(&service, &plan, now)?;
    let charged = move_money(
        c.reborrow(),
        &service,
        (&old, &plan),
        &p,
        &op.id,
        actor,
        now,
    )
    .await?;
    service.plan_id = plan.id.clone();
    service.recurring_price = q.recurring;
    service.addons = q.addons;
    service.range_from = Some(now);
    service.range_gross = charged.total;
    service.range_tax = charged.tax;
    let detail = json!({"from_plan": old.id, "to_plan": plan.id, "credit": p.credit,
        "credit_tax": p.credit_tax, "charge": charged.total, "operation": op.id})
    .to_string();
    let status = service.status;
    apply(
        c,
        &mut service,
        Action::ChangePlan,
        status,
        None,
        actor,
        Some(&detail),
        now,
    )
    .await
}

/// The money of a move from `plans.0` to `plans.1`: the unused part of what
/// was charged given back exactly (a credit note), the new plan's part
/// charged (an invoice), under ledger keys `{key}:credit` and
/// `{key}:charge`. Returns what was charged.
async fn move_money(
    mut c: Conn<'_>,
    service: &Service,
    (old, new): (&Plan, &Plan),
    p: &Proration,
    key: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<invoices::Taxed> {
    if p.credit > 0 {
        let description = format!(
            "unused {}/{} days of plan {} (service {})",
            p.remaining_days, p.total_days, old.id, service.id
        );
        let mut credit = charges::Charge::new(
            &service.account_id,
            old.spec.product_type.as_str(),
            Money::new(p.credit, service.currency)?,
            &description,
            format!("{key}:credit"),
            actor,
        );
        credit.give_back = true;
        credit.exact = Some(invoices::Taxed {
            net: p.credit - p.credit_tax,
            tax: p.credit_tax,
            total: p.credit,
        });
        charges::post_charge(c.reborrow(), credit, now).await?;
    }
    if p.charge <= 0 {
        return Ok(invoices::Taxed::default());
    }
    let product_type = new.spec.product_type.as_str();
    let gross =
        charges::gross_for(c.reborrow(), &service.account_id, product_type, p.charge).await?;
    let description = format!(
        "{}/{} days of plan {} (service {})",
        p.remaining_days, p.total_days, new.id, service.id
    );
    let charge = charges::Charge::new(
        &service.account_id,
        product_type,
        Money::new(gross, service.currency)?,
        &description,
        format!("{key}:charge"),
        actor,
    );
    Ok(charges::post_charge(c, charge, now).await?.taxed)
}

/// The module refused the change of `op` (`unsupported`, `rejected`):
/// nothing changes; what was set aside goes back.
///
/// The event says how (`error_kind`), never the module's own words: the
/// customer reads it; staff find them on the operation.
pub async fn refuse_plan_change(
    mut c: Conn<'_>,
    op: &Operation,
    error_kind: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let service = repo::get_for_update(c.reborrow(), &op.service_id).await?;
    release_hold(c.reborrow(), &service, op, RUNNER, now).await?;
    let detail = json!({"to_plan": op.payload["plan_id"], "operation": op.id,
        "error_kind": error_kind})
    .to_string();
    record_event(
        c,
        &service.id,
        "change_plan_refused",
        service.status,
        service.status,
        None,
        RUNNER,
        Some(&detail),
        now,
    )
    .await
}

/// A `sync` finished: when the module had to repair anything, the event
/// log says what.
pub async fn record_sync(
    mut c: Conn<'_>,
    op: &Operation,
    changed: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let service = repo::get(c.reborrow(), &op.service_id).await?;
    repo::touch_synced(c.reborrow(), &service.id, now).await?;
    let Some(changed) = changed.filter(|c| !c.is_empty()) else {
        return Ok(());
    };
    record_event(
        c,
        &service.id,
        "sync",
        service.status,
        service.status,
        None,
        RUNNER,
        Some(&format!("drift repaired: {changed}")),
        now,
    )
    .await
}

/// Queues a `sync` of a service whose module lists it: staff on demand,
/// automation on its interval.
pub async fn request_sync(
    mut c: Conn<'_>,
    modules: &crate::services::module::ModuleRegistry,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Operation> {
    let service = repo::get_for_update(c.reborrow(), id).await?;
    let state = match service.status {
        ServiceStatus::Active => "active",
        ServiceStatus::Suspended => "suspended",
        other => {
            return Err(Error::IllegalTransition {
                service_id: service.id.clone(),
                status: other.as_str(),
                action: "sync",
            });
        }
    };
    let module = plans_repo::get(c.reborrow(), &service.plan_id)
        .await?
        .spec
        .module;
    if !modules.syncs(&module) {
        return Err(Error::Refused {
            refusal: crate::error::Refusal::SyncUnsupported,
            message: format!("module `{module}` does not check its services' state"),
        });
    }
    repo::enqueue(
        c,
        id,
        OperationKind::Sync,
        &module,
        json!({"state": state}),
        now,
    )
    .await
}

/// A service's credentials (what its module returned as secret), for its
/// owner or staff; the reveal is recorded in the service's events (who,
/// never what).
pub async fn reveal_credentials(
    mut c: Conn<'_>,
    id: &str,
    secrets: &crate::secrets::Secrets,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let service = repo::get(c.reborrow(), id).await?;
    let credentials = repo::secret_params(c.reborrow(), id, secrets).await?;
    record_event(
        c,
        id,
        "credentials_read",
        service.status,
        service.status,
        None,
        actor,
        Some(&format!("{} value(s) revealed", credentials.len())),
        now,
    )
    .await?;
    Ok(credentials)
}

/// Who the engine is in the event log when it acts on a module's answer.
const RUNNER: &str = runner::RUNNER_ACTOR;

/// Staff move a service to a plan of another module (or product type): an
/// explicit, audited action. The money moves now as for a plan change;
/// the old module closes the service and the new one opens it (and
/// suspends it again if it was suspended), in that order.
pub async fn migrate(
    mut c: Conn<'_>,
    id: &str,
    new_plan_id: &str,
    reason: &str,
    actor: &str,
    ledger_key: &str,
    now: DateTime<Utc>,
) -> Result<(Service, Proration)> {
    let mut service = repo::get_for_update(c.reborrow(), id).await?;
    if !matches!(
        service.status,
        ServiceStatus::Active | ServiceStatus::Suspended
    ) {
        return Err(Error::IllegalTransition {
            service_id: service.id.clone(),
            status: service.status.as_str(),
            action: "migrate",
        });
    }
    let old = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let plan = plans_repo::get(c.reborrow(), new_plan_id).await?;
    if old.id == plan.id {
        return Err(Error::Conflict(format!(
            "service {id} is already on plan {}",
            plan.id
        )));
    }
    if plan.status == PlanStatus::Archived {
        return Err(Error::Refused {
            refusal: crate::error::Refusal::PlanArchived,
            message: format!("plan {} is archived", plan.id),
        });
    }
    let (p, q) = price_change(&service, &plan, now)?;
    let charged = move_money(
        c.reborrow(),
        &service,
        (&old, &plan),
        &p,
        ledger_key,
        actor,
        now,
    )
    .await?;
    service.plan_id = plan.id.clone();
    service.recurring_price = q.recurring;
    service.addons = q.addons;
    service.range_from = Some(now);
    service.range_gross = charged.total;
    service.range_tax = charged.tax;
    let detail = json!({"from_plan": old.id, "from_module": old.spec.module, "to_plan": plan.id,
        "to_module": plan.spec.module, "credit": p.credit, "charge": charged.total})
    .to_string();
    let status = service.status;
    service.updated_at = now;
    repo::save(c.reborrow(), &service, status).await?;
    record_event(
        c.reborrow(),
        id,
        "migrate",
        status,
        status,
        Some(reason),
        actor,
        Some(&detail),
        now,
    )
    .await?;
    let migration = json!({"migration": true, "plan_id": old.id});
    repo::enqueue(
        c.reborrow(),
        id,
        OperationKind::Close,
        &old.spec.module,
        migration,
        now,
    )
    .await?;
    repo::enqueue(
        c.reborrow(),
        id,
        OperationKind::Open,
        &plan.spec.module,
        json!({"migration": true}),
        now,
    )
    .await?;
    if status == ServiceStatus::Suspended {
        let reason = service.suspend_reason.map(SuspendReason::as_str);
        repo::enqueue(
            c,
            id,
            OperationKind::Suspend,
            &plan.spec.module,
            json!({"reason": reason}),
            now,
        )
        .await?;
    }
    Ok((service, p))
}

/// The state change a finished operation brings: `open` → active (the
/// paid period starts now), `close` → closed, `change_plan` → the new plan
/// and its money. The others changed the state when they were queued. The
/// two halves of a staff migration change no state: the old module's
/// `close` forgets its params, the new module's `open` brings its own.
/// Does nothing if the service has moved on.
pub async fn complete_effects(
    mut c: Conn<'_>,
    op: &Operation,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let migration = op.payload["migration"].as_bool() == Some(true);
    match op.kind {
        OperationKind::ChangePlan => return apply_plan_change(c, op, actor, now).await,
        OperationKind::Close if migration => {
            return repo::clear_params(c, &op.service_id, now).await;
        }
        OperationKind::Open if migration => return Ok(()),
        _ => {}
    }
    let Some(action) = op.kind.completion() else {
        return Ok(());
    };
    let mut service = repo::get_for_update(c.reborrow(), &op.service_id).await?;
    let Some(to) = transition(service.status, action) else {
        tracing::warn!(
            service = %op.service_id,
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
            service.range_from = Some(now);
            service.paid_until = add_units(now, service.period.unit(), units, service.time_zone);
            service.range_periods = 1;
        }
        Action::Closed => {
            service.closed_at = Some(now);
            // Credentials of a torn-down service are of use to nobody.
            repo::clear_secrets(c.reborrow(), &service.id).await?;
        }
        _ => {}
    }
    apply(c, &mut service, action, to, None, actor, None, now).await
}
