//! `bursar audit`: the invariants a live database must keep — the ledger
//! (every currency sums to zero, cached balances equal their entries, no
//! balance under its floor, every transaction balanced), document numbers
//! without gaps, and no service charged for more periods than it has.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Result;
use crate::sql;
use crate::store::Conn;
use crate::store::ledger::{self, Audit as LedgerAudit};

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ledger: LedgerAudit,
    /// Numbering series (prefix, year) with a gap, a duplicate or a
    /// counter behind its documents.
    pub document_gaps: Vec<NumberingGap>,
    /// Services with more renewal charges than periods paid:
    /// (service, renewals charged, periods paid).
    pub overcharged_services: Vec<(String, i64, i64)>,
    /// Documents counted, per series, for the report.
    pub documents: BTreeMap<String, i64>,
}

/// A numbering series that is not 1..=n.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NumberingGap {
    pub prefix: String,
    pub year: i64,
    pub documents: i64,
    pub distinct_numbers: i64,
    pub first: i64,
    pub last: i64,
    /// What the counter says was handed out last.
    pub counter: Option<i64>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.ledger.is_clean()
            && self.document_gaps.is_empty()
            && self.overcharged_services.is_empty()
    }
}

type Series = (String, i64, i64, i64, i64, i64, Option<i64>);

/// Audits the whole database (in one read transaction where the backend
/// gives one).
pub async fn run(mut c: Conn<'_>) -> Result<Report> {
    let ledger = ledger::audit(c.reborrow()).await?;
    let series: Vec<Series> = sql!(&mut c, c => sqlx::query_as(
        "SELECT i.prefix, CAST(i.year AS BIGINT), COUNT(*), COUNT(DISTINCT i.seq),
                CAST(MIN(i.seq) AS BIGINT), CAST(MAX(i.seq) AS BIGINT), CAST(MAX(k.last) AS BIGINT)
         FROM invoices i
         LEFT JOIN invoice_counters k ON k.prefix = i.prefix AND k.year = i.year
         GROUP BY i.prefix, i.year ORDER BY i.prefix, i.year")
        .fetch_all(&mut **c).await)?;
    let mut documents = BTreeMap::new();
    let mut document_gaps = Vec::new();
    for (prefix, year, count, distinct, first, last, counter) in series {
        documents.insert(format!("{prefix}-{year}"), count);
        let whole = count == distinct && first == 1 && last == count;
        // The counter may not be behind (a number would be handed out
        // twice); ahead only by numbers taken in a transaction that rolled
        // back, which cannot happen: they roll back with it.
        if !whole || counter != Some(last) {
            document_gaps.push(NumberingGap {
                prefix,
                year,
                documents: count,
                distinct_numbers: distinct,
                first,
                last,
                counter,
            });
        }
    }
    // Renewals are charged under `renewal:{service}:{paid units}`, one per
    // period after the first (which the order paid).
    let keys: Vec<String> = sql!(&mut c, c => sqlx::query_scalar(
        "SELECT idempotency_key FROM ledger_transactions WHERE idempotency_key LIKE 'renewal:%'")
        .fetch_all(&mut **c).await)?;
    let mut renewals: BTreeMap<String, i64> = BTreeMap::new();
    for key in keys {
        if let Some(service) = key.split(':').nth(1) {
            *renewals.entry(service.to_owned()).or_default() += 1;
        }
    }
    let paid: Vec<(String, i64)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, paid_units FROM services ORDER BY id")
        .fetch_all(&mut **c).await)?;
    let overcharged_services = paid
        .into_iter()
        .filter_map(|(id, units)| {
            let charged = renewals.get(&id).copied().unwrap_or(0);
            (charged > units).then_some((id, charged, units))
        })
        .collect();
    Ok(Report {
        ledger,
        document_gaps,
        overcharged_services,
        documents,
    })
}
