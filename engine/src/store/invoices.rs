//! Tax rules, invoice counters and invoices.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::new_id;
use crate::invoices::{
    Invoice, InvoiceKind, InvoiceLine, TaxLine, TaxRule, Taxed, number, year_of,
};
use crate::money::Currency;
use crate::sql;
use crate::store::{Conn, Page, bulk};

fn corrupt(what: String) -> Error {
    Error::Database(sqlx::Error::Decode(what.into()))
}

#[derive(FromRow)]
struct RuleRow {
    id: String,
    country: String,
    product_type: String,
    name: String,
    rate_bp: i64,
    inclusive: bool,
    created_at: i64,
}

impl From<RuleRow> for TaxRule {
    fn from(r: RuleRow) -> Self {
        TaxRule {
            id: r.id,
            country: r.country,
            product_type: Some(r.product_type).filter(|p| !p.is_empty()),
            name: r.name,
            rate_bp: r.rate_bp,
            inclusive: r.inclusive,
            created_at: from_micros(r.created_at),
        }
    }
}

const RULE_COLUMNS: &str = "id, country, product_type, name, rate_bp, inclusive, created_at";

/// A new tax rule, already validated.
pub struct NewRule<'a> {
    pub country: &'a str,
    pub product_type: Option<&'a str>,
    pub name: &'a str,
    pub rate_bp: i64,
    pub inclusive: bool,
}

pub async fn create_rule(mut c: Conn<'_>, new: NewRule<'_>, now: DateTime<Utc>) -> Result<TaxRule> {
    let id = new_id("tax");
    let inserted = sql!(&mut c, c => sqlx::query(
        "INSERT INTO tax_rules (id, country, product_type, name, rate_bp, inclusive, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&id).bind(new.country).bind(new.product_type.unwrap_or("")).bind(new.name)
        .bind(new.rate_bp).bind(new.inclusive).bind(to_micros(now))
        .execute(&mut **c).await.map(drop));
    if let Err(e) = inserted {
        if is_unique_violation(&e) {
            return Err(Error::Conflict(format!(
                "a tax rule for {} and {} exists already",
                new.country,
                new.product_type.unwrap_or("every product type")
            )));
        }
        return Err(e.into());
    }
    let q = format!("SELECT {RULE_COLUMNS} FROM tax_rules WHERE id = $1");
    let row: RuleRow = sql!(&mut c, c => sqlx::query_as(&q).bind(&id).fetch_one(&mut **c).await)?;
    Ok(row.into())
}

pub async fn rules(mut c: Conn<'_>) -> Result<Vec<TaxRule>> {
    let q = format!("SELECT {RULE_COLUMNS} FROM tax_rules ORDER BY country, product_type");
    let rows: Vec<RuleRow> = sql!(&mut c, c => sqlx::query_as(&q).fetch_all(&mut **c).await)?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The product type's rule in the country, else the country's general one.
pub async fn rule_for(
    mut c: Conn<'_>,
    country: &str,
    product_type: Option<&str>,
) -> Result<Option<TaxRule>> {
    let q = format!(
        "SELECT {RULE_COLUMNS} FROM tax_rules
         WHERE country = $1 AND (product_type = $2 OR product_type = '')
         ORDER BY product_type DESC LIMIT 1"
    );
    let row: Option<RuleRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(country).bind(product_type.unwrap_or("")).fetch_optional(&mut **c).await)?;
    Ok(row.map(Into::into))
}

#[derive(FromRow)]
struct InvoiceRow {
    id: String,
    number: String,
    kind: String,
    account_id: String,
    currency: String,
    net: i64,
    tax: i64,
    total: i64,
    lines: String,
    tax_lines: String,
    transaction_id: String,
    payment_id: Option<String>,
    created_at: i64,
}

const INVOICE_COLUMNS: &str = "id, number, kind, account_id, currency, net, tax, total, lines, \
     tax_lines, transaction_id, payment_id, created_at";

impl InvoiceRow {
    fn into_invoice(self) -> Result<Invoice> {
        let bad = |what: &str| corrupt(format!("invoice {}: bad {what}", self.id));
        Ok(Invoice {
            kind: InvoiceKind::parse(&self.kind).ok_or_else(|| bad("kind"))?,
            currency: Currency::from_code(&self.currency).map_err(|_| bad("currency"))?,
            lines: serde_json::from_str(&self.lines).map_err(|_| bad("lines"))?,
            tax_lines: serde_json::from_str(&self.tax_lines).map_err(|_| bad("tax lines"))?,
            id: self.id,
            number: self.number,
            account_id: self.account_id,
            net: self.net,
            tax: self.tax,
            total: self.total,
            transaction_id: self.transaction_id,
            payment_id: self.payment_id,
            created_at: from_micros(self.created_at),
        })
    }
}

/// A document about to be numbered and stored.
pub struct NewInvoice<'a> {
    pub kind: InvoiceKind,
    pub account_id: &'a str,
    pub currency: Currency,
    pub taxed: Taxed,
    pub lines: Vec<InvoiceLine>,
    pub tax_lines: Vec<TaxLine>,
    pub transaction_id: &'a str,
    pub payment_id: Option<&'a str>,
}

/// Takes the next `n` numbers of `prefix` in `year` and returns the first.
/// Part of the caller's transaction: if it rolls back, so do the numbers.
async fn take_seqs(mut c: Conn<'_>, prefix: &str, year: i32, n: i64) -> Result<i64> {
    let last: i64 = sql!(&mut c, c => sqlx::query_scalar(
        "INSERT INTO invoice_counters (prefix, year, last) VALUES ($1, $2, $3)
         ON CONFLICT (prefix, year) DO UPDATE SET last = invoice_counters.last + excluded.last
         RETURNING last")
        .bind(prefix).bind(i64::from(year)).bind(n).fetch_one(&mut **c).await)?;
    Ok(last - n + 1)
}

pub async fn create(mut c: Conn<'_>, new: NewInvoice<'_>, now: DateTime<Utc>) -> Result<Invoice> {
    let ids = create_many(c.reborrow(), &[new], now).await?;
    get(c, &ids[0]).await
}

/// Stores many documents, numbered in the order given (without gaps, per
/// prefix), with multi-row statements. Returns their ids.
pub async fn create_many(
    mut c: Conn<'_>,
    docs: &[NewInvoice<'_>],
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let year = year_of(now);
    let mut next: BTreeMap<&str, i64> = BTreeMap::new();
    for d in docs {
        *next.entry(d.kind.prefix()).or_default() += 1;
    }
    for (prefix, n) in next.iter_mut() {
        *n = take_seqs(c.reborrow(), prefix, year, *n).await?;
    }
    let at = to_micros(now);
    let mut ids = Vec::with_capacity(docs.len());
    let mut rows = bulk::Rows::new(16);
    for d in docs {
        let prefix = d.kind.prefix();
        let seq = next.get_mut(prefix).expect("counted above");
        let id = new_id("inv");
        // Plain strings and integers: serializing cannot fail.
        let lines = serde_json::to_string(&d.lines).expect("invoice lines serialize");
        let tax_lines = serde_json::to_string(&d.tax_lines).expect("tax lines serialize");
        rows.push([
            id.as_str().into(),
            number(prefix, year, *seq).into(),
            prefix.into(),
            i64::from(year).into(),
            (*seq).into(),
            d.kind.as_str().into(),
            d.account_id.into(),
            d.currency.code().into(),
            d.taxed.net.into(),
            d.taxed.tax.into(),
            d.taxed.total.into(),
            lines.into(),
            tax_lines.into(),
            d.transaction_id.into(),
            d.payment_id.into(),
            at.into(),
        ]);
        *seq += 1;
        ids.push(id);
    }
    bulk::execute(
        c.reborrow(),
        "INSERT INTO invoices (id, number, prefix, year, seq, kind, account_id, currency, net, tax,
             total, lines, tax_lines, transaction_id, payment_id, created_at)
         {rows}",
        &rows,
    )
    .await?;
    // Announced (webhooks, e-mail) in the same transaction.
    let events: Vec<(String, serde_json::Value)> = docs
        .iter()
        .zip(&ids)
        .map(|(d, id)| {
            (
                "invoice.issued".to_owned(),
                serde_json::json!({
                    "invoice_id": id,
                    "account_id": d.account_id,
                    "kind": d.kind.as_str(),
                    "total": d.taxed.total,
                    "currency": d.currency.code(),
                    "payment_id": d.payment_id,
                }),
            )
        })
        .collect();
    super::outbox::insert(c, &events, now).await?;
    Ok(ids)
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Invoice> {
    let q = format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1");
    let row: Option<InvoiceRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("invoice", id))?
        .into_invoice()
}

/// Documents of one account (or all), oldest first, after the cursor.
/// The newest documents first, of one account or all (the staff console).
pub async fn newest(
    mut c: Conn<'_>,
    account_id: Option<&str>,
    limit: usize,
) -> Result<Vec<Invoice>> {
    let q = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices
         WHERE $1 = '' OR account_id = $1 ORDER BY id DESC LIMIT $2"
    );
    let rows: Vec<InvoiceRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(account_id.unwrap_or("")).bind(limit as i64)
        .fetch_all(&mut **c).await)?;
    rows.into_iter().map(InvoiceRow::into_invoice).collect()
}

pub async fn list(
    mut c: Conn<'_>,
    account_id: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Invoice>> {
    let q = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices
         WHERE id > $1 AND ($2 = '' OR account_id = $2) ORDER BY id LIMIT $3"
    );
    let rows: Vec<InvoiceRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(after.unwrap_or("")).bind(account_id.unwrap_or("")).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let invoices = rows
        .into_iter()
        .map(InvoiceRow::into_invoice)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(invoices, limit, |i| i.id.clone()))
}
