//! Taxes and invoices: the rules and the documents, free of I/O (posting a
//! charge with its document is `charges`).
//!
//! Tax rules apply by the customer's country and, optionally, the product
//! type; a rule's rate is either included in prices or added on top. Every
//! charge posts three ways — balance, revenue, tax — and gets an invoice;
//! every paid payment a receipt; every refund or charge given back a credit
//! note. Documents are numbered `PREFIX-YEAR-NNNNNN` from a counter bumped
//! in the same database transaction as the money movement, so a rolled-back
//! movement never leaves a gap.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Result;
use crate::ledger::{LedgerAccountId, LedgerAccountKind, Posting};
use crate::money::{Currency, Money};

/// Document number prefixes: `[invoices]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InvoiceConfig {
    pub prefix: String,
    pub receipt_prefix: String,
    pub credit_note_prefix: String,
}

impl Default for InvoiceConfig {
    fn default() -> Self {
        InvoiceConfig {
            prefix: "INV".into(),
            receipt_prefix: "RCP".into(),
            credit_note_prefix: "CN".into(),
        }
    }
}

static CONFIG: OnceLock<InvoiceConfig> = OnceLock::new();

/// Sets the prefixes for this process (once, at start-up).
pub fn configure(config: InvoiceConfig) {
    let _ = CONFIG.set(config);
}

fn config() -> &'static InvoiceConfig {
    CONFIG.get_or_init(InvoiceConfig::default)
}

/// What kind of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceKind {
    /// For a charge.
    Invoice,
    /// For a paid payment.
    Receipt,
    /// For money given back: a refund, the unused part of a plan.
    CreditNote,
}

impl InvoiceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceKind::Invoice => "invoice",
            InvoiceKind::Receipt => "receipt",
            InvoiceKind::CreditNote => "credit_note",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invoice" => InvoiceKind::Invoice,
            "receipt" => InvoiceKind::Receipt,
            "credit_note" => InvoiceKind::CreditNote,
            _ => return None,
        })
    }

    pub fn prefix(self) -> &'static str {
        let c = config();
        match self {
            InvoiceKind::Invoice => &c.prefix,
            InvoiceKind::Receipt => &c.receipt_prefix,
            InvoiceKind::CreditNote => &c.credit_note_prefix,
        }
    }
}

/// A tax rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaxRule {
    pub id: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// `None`: every product type without a rule of its own.
    pub product_type: Option<String>,
    /// Shown on invoices, e.g. "VAT".
    pub name: String,
    /// Basis points: 1900 = 19 %.
    pub rate_bp: i64,
    /// Prices include the tax (true) or it is added on top (false).
    pub inclusive: bool,
    pub created_at: DateTime<Utc>,
}

/// An amount split into net and tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taxed {
    pub net: i64,
    pub tax: i64,
    pub total: i64,
}

/// `n / d` rounded half away from zero.
fn round_div(n: i128, d: i128) -> i64 {
    let q = (2 * n.abs() + d) / (2 * d);
    (if n < 0 { -q } else { q }) as i64
}

impl TaxRule {
    /// What a price costs the customer under this rule.
    pub fn gross_of(&self, price: i64) -> i64 {
        if self.inclusive {
            price
        } else {
            price + round_div(i128::from(price) * i128::from(self.rate_bp), 10_000)
        }
    }

    /// Splits what the customer pays into net and tax. For a rule added on
    /// top, `split(gross_of(p)).net == p`.
    pub fn split(&self, gross: i64) -> Taxed {
        let net = round_div(
            i128::from(gross) * 10_000,
            10_000 + i128::from(self.rate_bp),
        );
        Taxed {
            net,
            tax: gross - net,
            total: gross,
        }
    }
}

/// One line of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLine {
    pub description: String,
    pub net: i64,
    pub tax: i64,
    pub total: i64,
}

/// The tax of a document, per rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaxLine {
    pub name: String,
    pub rate_bp: i64,
    pub inclusive: bool,
    pub net: i64,
    pub tax: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Invoice {
    pub id: String,
    /// `PREFIX-YEAR-NNNNNN`, gap-free per prefix and year.
    pub number: String,
    pub kind: InvoiceKind,
    pub account_id: String,
    pub currency: Currency,
    pub net: i64,
    pub tax: i64,
    pub total: i64,
    pub lines: Vec<InvoiceLine>,
    pub tax_lines: Vec<TaxLine>,
    /// The ledger transaction this document is for.
    pub transaction_id: String,
    pub payment_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Splits `taxed` over lines in proportion to `parts` (any positive
/// weights): each line's total and tax are rounded, and the remainders
/// go to the lines with the largest fractions, so the lines sum exactly to
/// the document's totals.
pub fn lines(
    parts: &[(String, i64)],
    taxed: Taxed,
    currency: Currency,
) -> Result<Vec<InvoiceLine>> {
    let weights: Vec<u64> = parts.iter().map(|(_, w)| w.unsigned_abs().max(1)).collect();
    let totals = Money::new(taxed.total, currency)?.allocate(&weights)?;
    let taxes = Money::new(taxed.tax, currency)?.allocate(&weights)?;
    Ok(parts
        .iter()
        .zip(totals.iter().zip(taxes.iter()))
        .map(|((description, _), (total, tax))| InvoiceLine {
            description: description.clone(),
            net: total.minor() - tax.minor(),
            tax: tax.minor(),
            total: total.minor(),
        })
        .collect())
}

/// A charge of `gross` split into net and tax under `rule`, with its
/// invoice lines (one per part, by weight; parts of weight 0 left out)
/// and tax lines.
pub fn charge_parts(
    rule: Option<&TaxRule>,
    parts: &[(String, i64)],
    gross: Money,
) -> Result<(Taxed, Vec<InvoiceLine>, Vec<TaxLine>)> {
    let minor = gross.minor();
    let taxed = match rule {
        Some(r) => r.split(minor),
        None => Taxed {
            net: minor,
            tax: 0,
            total: minor,
        },
    };
    let tax_lines = rule
        .iter()
        .filter(|_| taxed.tax != 0)
        .map(|r| TaxLine {
            name: r.name.clone(),
            rate_bp: r.rate_bp,
            inclusive: r.inclusive,
            net: taxed.net,
            tax: taxed.tax,
        })
        .collect();
    let lines = lines(&weighted(parts, minor), taxed, gross.currency())?;
    Ok((taxed, lines, tax_lines))
}

/// The parts with a weight, or one part of the whole when none has.
fn weighted(parts: &[(String, i64)], whole: i64) -> Vec<(String, i64)> {
    let kept: Vec<(String, i64)> = parts.iter().filter(|(_, w)| *w > 0).cloned().collect();
    match (kept.is_empty(), parts.first()) {
        (false, _) => kept,
        (true, Some((d, _))) => vec![(d.clone(), whole)],
        (true, None) => vec![(String::new(), whole)],
    }
}

/// A document of exactly `taxed`: what is given back of an earlier charge,
/// with its tax as it was charged (the rate shown is the one it works out
/// to, since the account's rule may have changed since).
pub fn exact_parts(
    taxed: Taxed,
    parts: &[(String, i64)],
    currency: Currency,
) -> Result<(Taxed, Vec<InvoiceLine>, Vec<TaxLine>)> {
    let tax_lines = if taxed.tax != 0 && taxed.net != 0 {
        vec![TaxLine {
            name: "Tax as charged".into(),
            rate_bp: round_div(i128::from(taxed.tax) * 10_000, i128::from(taxed.net)),
            inclusive: true,
            net: taxed.net,
            tax: taxed.tax,
        }]
    } else {
        vec![]
    };
    let lines = lines(&weighted(parts, taxed.total), taxed, currency)?;
    Ok((taxed, lines, tax_lines))
}

/// The postings of a charge: the customer pays the total, revenue takes
/// the net and the tax account the tax (reversed when `give_back`).
pub fn charge_postings(
    account_id: &str,
    taxed: Taxed,
    currency: Currency,
    give_back: bool,
) -> Result<Vec<Posting>> {
    let sign = if give_back { -1 } else { 1 };
    let m = |v: i64| Money::new(v * sign, currency);
    let mut postings = vec![
        Posting::new(LedgerAccountId::customer(account_id), m(-taxed.total)?),
        Posting::new(
            LedgerAccountId::system(LedgerAccountKind::Revenue, currency),
            m(taxed.net)?,
        ),
    ];
    if taxed.tax != 0 {
        postings.push(Posting::new(
            LedgerAccountId::system(LedgerAccountKind::Tax, currency),
            m(taxed.tax)?,
        ));
    }
    Ok(postings)
}

/// The product type's own rule in the country, else the country's
/// general one: [`rule_for`] over rules already read.
pub fn pick_rule<'r>(
    rules: &'r [TaxRule],
    country: &str,
    product_type: &str,
) -> Option<&'r TaxRule> {
    let in_country = || rules.iter().filter(move |r| r.country == country);
    in_country()
        .find(|r| r.product_type.as_deref() == Some(product_type))
        .or_else(|| in_country().find(|r| r.product_type.is_none()))
}

/// `PREFIX-YEAR-NNNNNN`.
pub fn number(prefix: &str, year: i32, seq: i64) -> String {
    format!("{prefix}-{year}-{seq:06}")
}

/// The year a document is numbered in.
pub fn year_of(now: DateTime<Utc>) -> i32 {
    now.year()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(rate_bp: i64, inclusive: bool) -> TaxRule {
        TaxRule {
            id: "tax_1".into(),
            country: "DE".into(),
            product_type: None,
            name: "VAT".into(),
            rate_bp,
            inclusive,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn inclusive_and_on_top_rates() {
        let vat = rule(1900, true);
        assert_eq!(vat.gross_of(1190), 1190);
        assert_eq!(
            vat.split(1190),
            Taxed {
                net: 1000,
                tax: 190,
                total: 1190
            }
        );
        let on_top = rule(1900, false);
        assert_eq!(on_top.gross_of(1000), 1190);
        assert_eq!(on_top.split(1190).net, 1000);
        // 19 % of 0.99 is 0.1881 → 0.19.
        assert_eq!(on_top.gross_of(99), 118);
    }

    #[test]
    fn lines_sum_exactly_to_the_totals() {
        let eur = Currency::from_code("EUR").unwrap();
        let taxed = rule(1900, true).split(1000);
        let parts = vec![
            ("a".to_owned(), 333),
            ("b".to_owned(), 333),
            ("c".to_owned(), 334),
        ];
        let l = lines(&parts, taxed, eur).unwrap();
        assert_eq!(l.iter().map(|x| x.total).sum::<i64>(), taxed.total);
        assert_eq!(l.iter().map(|x| x.tax).sum::<i64>(), taxed.tax);
        assert_eq!(l.iter().map(|x| x.net).sum::<i64>(), taxed.net);
    }

    proptest! {
        #[test]
        fn on_top_round_trips_and_splits_balance(price in 0i64..10_000_000_000, rate in 1i64..=10_000) {
            let r = rule(rate, false);
            let gross = r.gross_of(price);
            let t = r.split(gross);
            prop_assert_eq!(t.net + t.tax, gross);
            prop_assert_eq!(t.net, price);
            let inc = rule(rate, true).split(price);
            prop_assert_eq!(inc.net + inc.tax, price);
            prop_assert!(inc.tax >= 0);
        }

        #[test]
        fn allocated_lines_always_sum(parts in proptest::collection::vec(1i64..100_000, 1..12), gross in 0i64..10_000_000, rate in 1i64..5_000) {
            let eur = Currency::from_code("EUR").unwrap();
            let taxed = rule(rate, true).split(gross);
            let named: Vec<(String, i64)> = parts.iter().enumerate().map(|(i, p)| (format!("l{i}"), *p)).collect();
            let l = lines(&named, taxed, eur).unwrap();
            prop_assert_eq!(l.iter().map(|x| x.total).sum::<i64>(), taxed.total);
            prop_assert_eq!(l.iter().map(|x| x.tax).sum::<i64>(), taxed.tax);
            prop_assert_eq!(l.iter().map(|x| x.net).sum::<i64>(), taxed.net);
        }
    }
}
