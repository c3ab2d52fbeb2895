//! Orders in a batch: the orders committed together on SQLite (see
//! `api::idempotency::GroupCommit`) placed with multi-row statements — a
//! handful of statements for the whole group instead of twenty-odd per
//! order.
//!
//! The batch does what [`place_order`](super::place_order) does for each
//! order, in the order given, with the same checks, prices, tax, ledger
//! key, invoice, events and `open` operation, and keeps its guarantees:
//! - balances and unpaid orders are read once and each order is checked
//!   against what the orders before it left, exactly as one by one: a
//!   customer whose money covers two of three orders gets the first two
//!   paid and the third waiting;
//! - an order the batch would refuse (an account or plan missing or not
//!   selling, a quote that fails, the unpaid-orders quota) is not refused
//!   here but left to the item path, which refuses it with its own error;
//! - an error means nothing of the batch may be kept: the caller rolls it
//!   back and places every order one by one.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    OrderRequest, check_order, log, mark_paid, new_order, order_charge, order_charge_description,
    within_quota,
};
use crate::accounts::Account;
use crate::calendar::BillingConfig;
use crate::catalog::Plan;
use crate::charges::{self, Prepared};
use crate::error::Result;
use crate::invoices::pick_rule;
use crate::ledger::{LedgerAccountId, MAX_BALANCE};
use crate::services::{Action, NewEvent, OperationKind, Service, ServiceStatus, transition};
use crate::store::invoices as invoices_repo;
use crate::store::services as repo;
use crate::store::{Conn, accounts as accounts_repo, catalog as plans_repo, ledger as ledger_repo};

/// One order of a batch.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    pub req: OrderRequest,
    /// Who placed it (the event log's actor).
    pub actor: String,
    /// The `[billing]` settings it was placed under.
    pub billing: BillingConfig,
}

/// An order the batch places.
struct Placed<'a> {
    service: Service,
    order: &'a BatchOrder,
    /// The event log's first line.
    detail: String,
    /// Paid now: what was due, the module to open it with, and the charge
    /// (none when nothing was due).
    paid: Option<(i64, &'a str, Option<Prepared>)>,
}

/// Places `orders` in the caller's transaction, at `now`. Returns, in the
/// order given, each order's service (`opening` when the balance paid it,
/// else `ordered`), or `None` for an order left to the item path. An
/// error: nothing written may be kept.
pub async fn place_many(
    mut c: Conn<'_>,
    orders: &[BatchOrder],
    now: DateTime<Utc>,
) -> Result<Vec<Option<Service>>> {
    let account_ids: Vec<&str> = orders
        .iter()
        .map(|o| o.req.account_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let accounts: HashMap<String, Account> = accounts_repo::get_many(c.reborrow(), &account_ids)
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut plans: HashMap<&str, Option<Plan>> = HashMap::new();
    for o in orders {
        let id = o.req.plan_id.as_str();
        if !plans.contains_key(id) {
            // A plan that cannot be read: the item path says why.
            let plan = plans_repo::get(c.reborrow(), id).await.ok();
            plans.insert(id, plan);
        }
    }
    let rules = invoices_repo::rules(c.reborrow()).await?;
    let mut waiting: HashMap<String, i64> =
        repo::count_unpaid_of_accounts(c.reborrow(), &account_ids)
            .await?
            .into_iter()
            .collect();
    let ledger_ids: Vec<String> = account_ids
        .iter()
        .map(|a| LedgerAccountId::customer(a).to_string())
        .collect();
    let mut balances: HashMap<String, ledger_repo::BalanceState> =
        ledger_repo::balances_for_update(c.reborrow(), &ledger_ids)
            .await?
            .into_iter()
            .map(|b| (b.id.clone(), b))
            .collect();

    let mut placed: Vec<Placed<'_>> = Vec::with_capacity(orders.len());
    // For each order, its index in `placed`.
    let mut outcome: Vec<Option<usize>> = Vec::with_capacity(orders.len());
    for order in orders {
        let Some(account) = accounts.get(&order.req.account_id) else {
            outcome.push(None);
            continue;
        };
        let Some(Some(plan)) = plans.get(order.req.plan_id.as_str()) else {
            outcome.push(None);
            continue;
        };
        if check_order(account, plan).is_err() {
            outcome.push(None);
            continue;
        }
        let product_type = plan.spec.product_type.as_str();
        let rule = account
            .country
            .as_deref()
            .and_then(|country| pick_rule(&rules, country, product_type));
        let Ok((mut service, detail)) = new_order(
            account,
            plan,
            &order.req,
            rule,
            order.billing.time_zone,
            now,
        ) else {
            outcome.push(None);
            continue;
        };
        let customer = LedgerAccountId::customer(&account.id).to_string();
        let Some(balance) = balances
            .get_mut(&customer)
            .filter(|b| b.currency == service.currency.code())
        else {
            outcome.push(None);
            continue;
        };
        let due = service.amount_due;
        let unpaid = waiting.entry(account.id.clone()).or_default();
        if !within_quota(
            *unpaid,
            &order.billing,
            balance.balance,
            balance.min_balance,
            due,
        ) {
            outcome.push(None);
            continue;
        }
        // What the ledger allows a charge (see `ledger_repo::post`).
        let after = balance.balance - due;
        let covered =
            due == 0 || (after >= -MAX_BALANCE && balance.min_balance.is_none_or(|m| after >= m));
        let paid = if covered {
            let charge = if due > 0 {
                let description = order_charge_description(&plan.spec, &service);
                let charge = order_charge(&service, &plan.spec, &description, &order.actor)?;
                let prepared = charges::prepare(charge, rule)?;
                prepared.draft.validate()?;
                mark_paid(&mut service, &prepared.lines);
                Some(prepared)
            } else {
                mark_paid(&mut service, &[]);
                None
            };
            balance.balance = after;
            Some((due, plan.spec.module.as_str(), charge))
        } else {
            *unpaid += 1;
            None
        };
        outcome.push(Some(placed.len()));
        placed.push(Placed {
            service,
            order,
            detail,
            paid,
        });
    }
    if placed.is_empty() {
        return Ok(outcome.iter().map(|_| None).collect());
    }
    write(c, &mut placed, now).await?;
    Ok(outcome
        .into_iter()
        .map(|i| i.map(|i| placed[i].service.clone()))
        .collect())
}

/// Writes the placed orders: services, event log lines, charges with their
/// invoices, and `open` operations, a statement or a few for each.
async fn write(mut c: Conn<'_>, placed: &mut [Placed<'_>], now: DateTime<Utc>) -> Result<()> {
    let opening = transition(ServiceStatus::Ordered, Action::Pay)
        .ok_or_else(|| crate::error::Error::Conflict("an order cannot be paid".to_owned()))?;
    for p in placed.iter_mut().filter(|p| p.paid.is_some()) {
        p.service.status = opening;
    }
    let services: Vec<Service> = placed.iter().map(|p| p.service.clone()).collect();
    repo::insert_many(c.reborrow(), &services).await?;

    let paid_details: Vec<Option<String>> = placed
        .iter()
        .map(|p| p.paid.as_ref().map(|(due, _, _)| format!("paid {due}")))
        .collect();
    let mut events = Vec::with_capacity(placed.len() * 2);
    for (p, paid) in placed.iter().zip(&paid_details) {
        let event = |action, to, detail| NewEvent {
            service_id: &p.service.id,
            action,
            from: ServiceStatus::Ordered,
            to,
            reason: None,
            actor: &p.order.actor,
            detail,
        };
        events.push(event(
            "order",
            ServiceStatus::Ordered,
            Some(p.detail.as_str()),
        ));
        if let Some(paid) = paid {
            events.push(event(Action::Pay.as_str(), opening, Some(paid.as_str())));
        }
    }
    log(c.reborrow(), &events, now).await?;

    let charges: Vec<&Prepared> = placed
        .iter()
        .filter_map(|p| p.paid.as_ref().and_then(|(_, _, charge)| charge.as_ref()))
        .collect();
    let drafts: Vec<_> = charges.iter().map(|ch| ch.draft.clone()).collect();
    let transaction_ids = ledger_repo::post_many(c.reborrow(), &drafts, now).await?;
    let documents: Vec<_> = charges
        .iter()
        .zip(&transaction_ids)
        .map(|(ch, txn)| ch.document(txn))
        .collect();
    invoices_repo::create_many(c.reborrow(), &documents, now).await?;

    let operations: Vec<repo::NewOperation<'_>> = placed
        .iter()
        .filter_map(|p| {
            p.paid.as_ref().map(|(_, module, _)| {
                (
                    p.service.id.as_str(),
                    OperationKind::Open,
                    *module,
                    json!({}),
                )
            })
        })
        .collect();
    repo::enqueue_many(c, &operations, now).await
}
