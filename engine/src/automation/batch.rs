//! Renewals in batches: the due services of one candidate page renewed in
//! one transaction with multi-row statements, instead of one transaction
//! of twenty statements each.
//!
//! The batch does what [`crate::lifecycle::renew`] does for each service —
//! under the same lock, with the same checks, the same ledger key, tax
//! split, invoice, paid period, event, outbox event and `prolong`
//! operation — and keeps the per-item guarantees:
//! - a service the batch cannot price or extend is left to the item path,
//!   which renews it or reports its own error;
//! - if the batch's transaction fails as a whole (a ledger key posted
//!   before, a balance moved under it, a deadlock), it rolls back and
//!   every service of the batch goes through the item path one by one;
//! - balances are read under lock and each debit is checked in id order
//!   against what is left, exactly as one-by-one renewals would, so a
//!   customer whose money covers two of three services gets the first two.
//!
//! The engine's hot rows — revenue and tax accounts, the invoice counter —
//! are written last, once per batch, so they are held only for the commit.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::{ACTOR, At};
use crate::catalog::Plan;
use crate::error::Result;
use crate::invoices::{self, InvoiceKind, InvoiceLine, TaxLine, Taxed, charge_parts, pick_rule};
use crate::ledger::{LedgerAccountId, MAX_BALANCE, TransactionDraft, TransactionKind};
use crate::lifecycle::renewal::{Rule, charge_description, extended, renewal_key, renewal_quote};
use crate::money::Money;
use crate::services::NewEvent;
use crate::services::{Action, OperationKind, Service, ServiceStatus};
use crate::store::invoices::{self as invoices_repo, NewInvoice};
use crate::store::services as repo;
use crate::store::{
    Conn, Store, accounts as accounts_repo, catalog as plans_repo, ledger as ledger_repo,
};

/// Services per batch transaction at most (an `IN` list of ids).
pub(super) const MAX_BATCH: usize = 1000;

/// What one batch did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Renewed and committed.
    pub renewed: u64,
    /// For the item path: services the batch could not price or extend.
    pub left: Vec<String>,
}

/// Renews the due services among `ids` — a page of candidates in id
/// order, at most [`MAX_BATCH`] — in one transaction: every service from
/// the first id to the last still due when locked. An error means nothing
/// was kept: the caller renews the services one by one.
pub(super) async fn renew(store: &Store, ids: &[String], at: At) -> Result<Outcome> {
    let mut tx = store.begin().await?;
    match renew_in(tx.conn(), ids, at).await {
        Ok(outcome) => {
            tx.keep_if(Ok(outcome.renewed > 0)).await?;
            Ok(outcome)
        }
        Err(e) => tx.keep_if(Err(e)).await.map(|_| Outcome::default()),
    }
}

/// One renewal, worked out before anything is written.
struct Renewal {
    next: Service,
    detail: String,
    module: String,
    charge: Option<Charge>,
}

struct Charge {
    draft: TransactionDraft,
    taxed: Taxed,
    lines: Vec<InvoiceLine>,
    tax_lines: Vec<TaxLine>,
}

async fn renew_in(mut c: Conn<'_>, ids: &[String], at: At) -> Result<Outcome> {
    let now = at.now;
    let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
        return Ok(Outcome::default());
    };
    let due = repo::lock_due_renewals(c.reborrow(), first, last, Rule::STATUS, at.rule.cutoff(now))
        .await?;
    let mut plans: HashMap<String, Plan> = HashMap::new();
    for s in &due {
        if !plans.contains_key(&s.plan_id) {
            let plan = plans_repo::get(c.reborrow(), &s.plan_id).await?;
            plans.insert(s.plan_id.clone(), plan);
        }
    }
    let owners: BTreeSet<&str> = due.iter().map(|s| s.account_id.as_str()).collect();
    let owners: Vec<&str> = owners.into_iter().collect();
    let countries: HashMap<String, Option<String>> =
        accounts_repo::countries(c.reborrow(), &owners)
            .await?
            .into_iter()
            .collect();
    let rules = invoices_repo::rules(c.reborrow()).await?;
    let ledger_ids: Vec<String> = owners
        .iter()
        .map(|a| LedgerAccountId::customer(a).to_string())
        .collect();
    let mut balances: HashMap<String, ledger_repo::BalanceState> =
        ledger_repo::balances_for_update(c.reborrow(), &ledger_ids)
            .await?
            .into_iter()
            .map(|b| (b.id.clone(), b))
            .collect();

    let mut outcome = Outcome::default();
    let mut renewals = Vec::with_capacity(due.len());
    for service in due {
        let plan = &plans[&service.plan_id];
        let country = countries.get(&service.account_id).cloned().flatten();
        let priced = price(&service, plan, country.as_deref(), &rules, at);
        let Ok(renewal) = priced else {
            outcome.left.push(service.id);
            continue;
        };
        if let Some(gross) = renewal.charge.as_ref().map(|ch| ch.taxed.total) {
            let customer = LedgerAccountId::customer(&service.account_id).to_string();
            let Some(balance) = balances
                .get_mut(&customer)
                .filter(|b| b.currency == service.currency.code())
            else {
                outcome.left.push(service.id);
                continue;
            };
            let after = balance.balance - gross;
            let covered = after >= -MAX_BALANCE && balance.min_balance.is_none_or(|m| after >= m);
            if !covered {
                // Suspended when its period and grace days end.
                continue;
            }
            balance.balance = after;
        }
        renewals.push(renewal);
    }
    if renewals.is_empty() {
        return Ok(outcome);
    }

    let services: Vec<Service> = renewals.iter().map(|r| r.next.clone()).collect();
    repo::save_paid_periods(c.reborrow(), &services, ServiceStatus::Active).await?;
    let events: Vec<NewEvent<'_>> = renewals
        .iter()
        .map(|r| NewEvent {
            service_id: &r.next.id,
            action: Action::Prolong.as_str(),
            from: ServiceStatus::Active,
            to: ServiceStatus::Active,
            reason: None,
            actor: ACTOR,
            detail: Some(&r.detail),
        })
        .collect();
    crate::lifecycle::log(c.reborrow(), &events, now).await?;
    let ops: Vec<repo::NewOperation<'_>> = renewals
        .iter()
        .map(|r| {
            (
                r.next.id.as_str(),
                OperationKind::Prolong,
                r.module.as_str(),
                json!({"period": r.next.period.as_str()}),
            )
        })
        .collect();
    repo::enqueue_many(c.reborrow(), &ops, now).await?;

    let charges: Vec<&Charge> = renewals.iter().filter_map(|r| r.charge.as_ref()).collect();
    let drafts: Vec<TransactionDraft> = charges.iter().map(|ch| ch.draft.clone()).collect();
    let transaction_ids = ledger_repo::post_many(c.reborrow(), &drafts, now).await?;
    let docs: Vec<NewInvoice<'_>> = charges
        .iter()
        .zip(&transaction_ids)
        .map(|(ch, txn)| NewInvoice {
            kind: InvoiceKind::Invoice,
            account_id: ch.draft.account_id.as_deref().unwrap_or_default(),
            currency: ch.draft.postings[0].amount.currency(),
            taxed: ch.taxed,
            lines: ch.lines.clone(),
            tax_lines: ch.tax_lines.clone(),
            transaction_id: txn,
            payment_id: None,
        })
        .collect();
    invoices_repo::create_many(c.reborrow(), &docs, now).await?;
    outcome.renewed = renewals.len() as u64;
    Ok(outcome)
}

/// Works out one renewal: its price, tax, charge and new paid period.
fn price(
    service: &Service,
    plan: &Plan,
    country: Option<&str>,
    rules: &[invoices::TaxRule],
    at: At,
) -> Result<Renewal> {
    let q = renewal_quote(plan, service, service.period)?;
    let charge = if q.total > 0 {
        let product_type = plan.spec.product_type.as_str();
        let rule = country.and_then(|c| pick_rule(rules, c, product_type));
        let gross = Money::new(
            rule.map_or(q.total, |r| r.gross_of(q.total)),
            service.currency,
        )?;
        let description = charge_description(&plan.spec.name, &service.id, service.period);
        let parts = [(description.clone(), gross.minor())];
        let (taxed, lines, tax_lines) = charge_parts(rule, &parts, gross)?;
        let draft = TransactionDraft {
            idempotency_key: renewal_key(service),
            kind: TransactionKind::Charge,
            description,
            account_id: Some(service.account_id.clone()),
            created_by: ACTOR.to_owned(),
            postings: invoices::charge_postings(
                &service.account_id,
                taxed,
                gross.currency(),
                false,
            )?,
        };
        draft.validate()?;
        Some(Charge {
            draft,
            taxed,
            lines,
            tax_lines,
        })
    } else {
        None
    };
    let charged = charge.as_ref().map_or_else(Taxed::default, |ch| ch.taxed);
    let (next, detail) = extended(service, service.period, charged, at.now)?;
    Ok(Renewal {
        next,
        detail,
        module: plan.spec.module.clone(),
        charge,
    })
}
