//! Charges and what is given back of them: each posts three ways —
//! balance, revenue, tax — with its invoice or credit note, in the
//! caller's database transaction; and the documents of money that moved
//! between a balance and a gateway.

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::invoices::{
    Invoice, InvoiceKind, InvoiceLine, TaxLine, TaxRule, Taxed, charge_parts, charge_postings,
    exact_parts,
};
use crate::ledger::{TransactionDraft, TransactionKind};
use crate::money::{Currency, Money};
use crate::store::ledger::Posted;
use crate::store::{Conn, accounts as accounts_repo, invoices as repo, ledger as ledger_repo};

/// The rule for a customer and product type: the product type's own, else
/// the country's general one.
pub async fn rule_for(
    c: Conn<'_>,
    account_id: &str,
    product_type: Option<&str>,
) -> Result<Option<TaxRule>> {
    let mut c = c;
    let account = accounts_repo::get(c.reborrow(), account_id).await?;
    let Some(country) = account.country else {
        return Ok(None);
    };
    repo::rule_for(c, &country, product_type).await
}

/// What a price costs a customer once taxed.
pub async fn gross_for(
    c: Conn<'_>,
    account_id: &str,
    product_type: &str,
    price: i64,
) -> Result<i64> {
    Ok(match rule_for(c, account_id, Some(product_type)).await? {
        Some(rule) => rule.gross_of(price),
        None => price,
    })
}

/// [`rule_for`] a customer in `country`, for a caller that has read the
/// account already: no tax rule applies without a country.
pub async fn rule_in(
    c: Conn<'_>,
    country: Option<&str>,
    product_type: &str,
) -> Result<Option<TaxRule>> {
    match country {
        Some(country) => repo::rule_for(c, country, Some(product_type)).await,
        None => Ok(None),
    }
}

/// A charge (or, with `give_back`, a charge given back) of `gross` for a
/// product type.
pub struct Charge<'a> {
    pub account_id: &'a str,
    pub product_type: &'a str,
    pub gross: Money,
    pub description: &'a str,
    /// The invoice's lines: a description and a weight (its price) each;
    /// empty: one line, `description`.
    pub parts: Vec<(String, i64)>,
    pub idempotency_key: String,
    pub actor: &'a str,
    /// Money back to the customer (a credit note) instead of a charge.
    pub give_back: bool,
    /// Post exactly this net and tax instead of splitting `gross` by the
    /// account's rule of today: what is given back of an earlier charge.
    pub exact: Option<Taxed>,
    /// The account's rule for `product_type`, when the caller has looked it
    /// up in this transaction already (`Some(None)`: no rule applies);
    /// `None`: [`post_charge`] looks it up.
    pub rule: Option<Option<TaxRule>>,
}

impl<'a> Charge<'a> {
    /// A charge of `gross` under the account's tax rule, on one line.
    pub fn new(
        account_id: &'a str,
        product_type: &'a str,
        gross: Money,
        description: &'a str,
        idempotency_key: String,
        actor: &'a str,
    ) -> Self {
        Charge {
            account_id,
            product_type,
            gross,
            description,
            parts: vec![],
            idempotency_key,
            actor,
            give_back: false,
            exact: None,
            rule: None,
        }
    }
}

/// What a posted charge was: the ledger transaction, its split into net
/// and tax, and its invoice lines.
pub struct Charged {
    pub posted: Posted,
    pub taxed: Taxed,
    pub lines: Vec<InvoiceLine>,
}

/// A charge worked out before anything is written: the ledger
/// transaction to post and the invoice (or credit note) that documents it.
pub struct Prepared {
    pub draft: TransactionDraft,
    pub taxed: Taxed,
    pub lines: Vec<InvoiceLine>,
    pub tax_lines: Vec<TaxLine>,
    pub document_kind: InvoiceKind,
    pub currency: Currency,
}

impl Prepared {
    /// The document of the posted transaction `transaction_id`.
    pub fn document<'a>(&'a self, transaction_id: &'a str) -> repo::NewInvoice<'a> {
        repo::NewInvoice {
            kind: self.document_kind,
            account_id: self.draft.account_id.as_deref().unwrap_or_default(),
            currency: self.currency,
            taxed: self.taxed,
            lines: self.lines.clone(),
            tax_lines: self.tax_lines.clone(),
            transaction_id,
            payment_id: None,
        }
    }
}

/// Splits a charge into revenue and tax under `rule` (unless it is
/// `exact`) and works out its postings; writes nothing.
pub fn prepare(ch: Charge<'_>, rule: Option<&TaxRule>) -> Result<Prepared> {
    let parts = if ch.parts.is_empty() {
        vec![(ch.description.to_owned(), ch.gross.minor())]
    } else {
        ch.parts
    };
    let (taxed, lines, tax_lines) = match ch.exact {
        Some(taxed) => exact_parts(taxed, &parts, ch.gross.currency())?,
        None => charge_parts(rule, &parts, ch.gross)?,
    };
    let postings = charge_postings(ch.account_id, taxed, ch.gross.currency(), ch.give_back)?;
    let draft = TransactionDraft {
        idempotency_key: ch.idempotency_key,
        kind: if ch.give_back {
            TransactionKind::ChargeReversal
        } else {
            TransactionKind::Charge
        },
        description: ch.description.to_owned(),
        account_id: Some(ch.account_id.to_owned()),
        created_by: ch.actor.to_owned(),
        postings,
    };
    Ok(Prepared {
        draft,
        taxed,
        lines,
        tax_lines,
        document_kind: if ch.give_back {
            InvoiceKind::CreditNote
        } else {
            InvoiceKind::Invoice
        },
        currency: ch.gross.currency(),
    })
}

/// Posts a charge split into revenue and tax, and its invoice (or credit
/// note) in the same transaction. Posting the same key again posts and
/// documents nothing new.
pub async fn post_charge(
    mut c: Conn<'_>,
    mut ch: Charge<'_>,
    now: DateTime<Utc>,
) -> Result<Charged> {
    let rule = match (ch.exact, ch.rule.take()) {
        (Some(_), _) => None,
        (None, Some(rule)) => rule,
        (None, None) => rule_for(c.reborrow(), ch.account_id, Some(ch.product_type)).await?,
    };
    let prepared = prepare(ch, rule.as_ref())?;
    let posted = ledger_repo::post(c.reborrow(), &prepared.draft, now).await?;
    if let Posted::New(txn) = &posted {
        repo::create_many(c, &[prepared.document(&txn.id)], now).await?;
    }
    Ok(Charged {
        posted,
        taxed: prepared.taxed,
        lines: prepared.lines,
    })
}

/// Money that moved between a balance and a gateway.
pub struct Transfer<'a> {
    /// A receipt for money in, a credit note for money given back.
    pub kind: InvoiceKind,
    pub account_id: &'a str,
    pub amount: Money,
    pub description: &'a str,
    pub transaction_id: &'a str,
    pub payment_id: &'a str,
}

/// The document (without tax) of a transfer.
pub async fn document_transfer(
    c: Conn<'_>,
    t: Transfer<'_>,
    now: DateTime<Utc>,
) -> Result<Invoice> {
    let taxed = Taxed {
        net: t.amount.minor(),
        tax: 0,
        total: t.amount.minor(),
    };
    repo::create(
        c,
        repo::NewInvoice {
            kind: t.kind,
            account_id: t.account_id,
            currency: t.amount.currency(),
            taxed,
            lines: vec![InvoiceLine {
                description: t.description.to_owned(),
                net: taxed.net,
                tax: 0,
                total: taxed.total,
            }],
            tax_lines: vec![],
            transaction_id: t.transaction_id,
            payment_id: Some(t.payment_id),
        },
        now,
    )
    .await
}
