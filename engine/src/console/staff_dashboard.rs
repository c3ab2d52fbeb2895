//! The staff dashboard: numbers and charts drawn on the server as inline
//! SVG (no script) over a range of months in the billing time zone —
//! services by status, MRR per currency, revenue per month, new and closed
//! services per month, operations failing, payments per gateway.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{Datelike, Months, NaiveDate};
use minijinja::{Value, context};
use serde::Deserialize;
use sqlx::Row;

use super::auth::StaffSession;
use super::staff::who;
use super::view;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::calendar::{Period, PeriodUnit, Zone};
use crate::clock::to_micros;
use crate::error::Error;
use crate::money::Currency;
use crate::sql;

/// The longest range the charts cover.
const MAX_MONTHS: u32 = 36;
/// The plot's size in SVG units.
const PLOT_W: usize = 600;
const PLOT_H: usize = 140;

#[derive(Deserialize, Default)]
pub struct Range {
    /// `YYYY-MM`, the first month shown.
    #[serde(default)]
    from: String,
    /// `YYYY-MM`, the last month shown.
    #[serde(default)]
    to: String,
}

fn month(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(&format!("{}-01", text.trim()), "%Y-%m-%d")
        .ok()
        .filter(|d| (1970..=9999).contains(&d.year()))
}

/// The months shown: the asked range, or the last twelve; at most
/// `MAX_MONTHS`. A range given backwards is turned around.
fn months(range: &Range, today: NaiveDate) -> (Vec<NaiveDate>, Option<String>) {
    let this = today.with_day(1).expect("day 1 exists");
    let mut note = None;
    let mut to = month(&range.to).unwrap_or(this);
    let mut from = month(&range.from).unwrap_or_else(|| to - Months::new(11));
    if from > to {
        std::mem::swap(&mut from, &mut to);
    }
    let span = (to.year() - from.year()) * 12 + to.month() as i32 - from.month() as i32 + 1;
    if span > MAX_MONTHS as i32 {
        from = to - Months::new(MAX_MONTHS - 1);
        note = Some(format!("The charts show at most {MAX_MONTHS} months."));
    }
    let mut out = vec![];
    let mut m = from;
    while m <= to {
        out.push(m);
        m = m + Months::new(1);
    }
    (out, note)
}

/// `n` sums of `value` over rows whose `col` falls in each month: one scan.
fn bucket_columns(col: &str, value: &str, n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN {col} >= ${i} AND {col} < ${} THEN {value} ELSE 0 END), 0) AS BIGINT)",
                i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A bar chart over the months: `values` with their labels as text.
fn month_chart(id: &str, labels: &[String], values: &[i64], text: impl Fn(i64) -> String) -> Value {
    let n = values.len().max(1);
    let step = PLOT_W / n;
    let max = values
        .iter()
        .copied()
        .map(i64::abs)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Value> = values
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (v, label))| {
            let h = ((v.abs() as f64 / max as f64) * PLOT_H as f64).round() as usize;
            context! {
                x => i * step + 2, w => step.saturating_sub(4).max(1),
                y => 20 + PLOT_H - h, h => h.max(usize::from(*v != 0)),
                label => label, text => text(*v), cx => i * step + step / 2,
                negative => *v < 0,
            }
        })
        .collect();
    context! { id, bars, width => PLOT_W, height => PLOT_H + 40, base => 20 + PLOT_H, total => text(values.iter().sum()) }
}

/// A month's recurring revenue from one period's price.
fn monthly(amount: i64, period: Period) -> i64 {
    match period.unit() {
        PeriodUnit::Month => amount / i64::from(period.units()),
        // 365.25 / 12 days in a month.
        PeriodUnit::Day => i64::try_from(i128::from(amount) * 1461 / 48).unwrap_or(i64::MAX),
    }
}

struct Figures {
    by_status: Vec<(String, i64)>,
    accounts: i64,
    manual: i64,
    retrying: i64,
    new: Vec<i64>,
    closed: Vec<i64>,
    revenue: Vec<(String, Vec<i64>)>,
    mrr: Vec<(String, String, i64)>,
    gateways: Vec<(String, String, i64, i64)>,
}

async fn figures(state: &AppState, bounds: &[i64]) -> Result<Figures, Error> {
    let n = bounds.len() - 1;
    let (first, last) = (bounds[0], bounds[n]);
    let mut r = state.store.reader().await?;
    let by_status: Vec<(String, i64)> = sql!(&mut r.conn(), c => sqlx::query_as(
        "SELECT status, COUNT(*) FROM services GROUP BY status ORDER BY status")
        .fetch_all(&mut **c).await)?;
    let accounts: i64 = sql!(&mut r.conn(), c => sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut **c).await)?;
    let (manual, retrying): (i64, i64) = sql!(&mut r.conn(), c => sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(CASE WHEN status = 'manual' THEN 1 ELSE 0 END), 0) AS BIGINT),
                CAST(COALESCE(SUM(CASE WHEN status <> 'manual' THEN 1 ELSE 0 END), 0) AS BIGINT)
         FROM operations WHERE status = 'manual' OR (status IN ('queued', 'waiting') AND error_kind IS NOT NULL)")
        .fetch_one(&mut **c).await)?;
    // New and closed services per month, in one scan.
    let q = format!(
        "SELECT {}, {} FROM services WHERE (created_at >= $1 AND created_at < ${m}) OR (closed_at >= $1 AND closed_at < ${m})",
        bucket_columns("created_at", "1", n),
        bucket_columns("closed_at", "1", n),
        m = n + 1
    );
    let counts: Vec<i64> = sql!(&mut r.conn(), c => {
        let mut query = sqlx::query(&q);
        for b in bounds {
            query = query.bind(*b);
        }
        let row = query.fetch_one(&mut **c).await?;
        (0..2 * n).map(|i| row.try_get::<i64, _>(i)).collect::<Result<Vec<_>, _>>()
    })?;
    let (new, closed) = counts.split_at(n);
    // Revenue: invoices less the credit notes that give charges back.
    // Receipts record payments and a refund's credit note gives back
    // money paid in, not revenue: neither counts.
    let q = format!(
        "SELECT currency, {} FROM invoices WHERE created_at >= $1 AND created_at < ${} GROUP BY currency ORDER BY currency",
        bucket_columns(
            "created_at",
            "CASE WHEN kind = 'invoice' THEN net WHEN kind = 'credit_note' AND payment_id IS NULL THEN -net ELSE 0 END",
            n
        ),
        n + 1
    );
    let revenue: Vec<(String, Vec<i64>)> = sql!(&mut r.conn(), c => {
        let mut query = sqlx::query(&q);
        for b in bounds {
            query = query.bind(*b);
        }
        query
            .fetch_all(&mut **c)
            .await?
            .iter()
            .map(|row| {
                Ok::<_, sqlx::Error>((
                    row.try_get::<String, _>(0)?,
                    (1..=n).map(|i| row.try_get::<i64, _>(i)).collect::<Result<Vec<_>, _>>()?,
                ))
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mrr: Vec<(String, String, i64)> = sql!(&mut r.conn(), c => sqlx::query_as(
        "SELECT currency, period, CAST(SUM(recurring_price) AS BIGINT) FROM services
         WHERE status = 'active' GROUP BY currency, period ORDER BY currency, period")
        .fetch_all(&mut **c).await)?;
    let gateways: Vec<(String, String, i64, i64)> = sql!(&mut r.conn(), c => sqlx::query_as(
        "SELECT gateway, currency, COUNT(*), CAST(SUM(amount) AS BIGINT) FROM payments
         WHERE status = 'paid' AND paid_at >= $1 AND paid_at < $2
         GROUP BY gateway, currency ORDER BY gateway, currency")
        .bind(first).bind(last).fetch_all(&mut **c).await)?;
    Ok(Figures {
        by_status,
        accounts,
        manual,
        retrying,
        new: new.to_vec(),
        closed: closed.to_vec(),
        revenue,
        mrr,
        gateways,
    })
}

fn money_text(minor: i64, currency: &str) -> String {
    match Currency::from_code(currency) {
        Ok(c) => view::money(minor, c),
        Err(_) => format!("{minor} {currency}"),
    }
}

pub async fn dashboard(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Query(range): Query<Range>,
) -> Response {
    if s.principal(Action::ServiceRead).is_none() {
        return view::forbidden();
    }
    let zone: Zone = state.billing.time_zone;
    let today = zone.date_of(state.clock.now());
    let (months, note) = months(&range, today);
    let start = |d: NaiveDate| to_micros(zone.instant(d.and_hms_opt(0, 0, 0).expect("midnight")));
    let mut bounds: Vec<i64> = months.iter().map(|m| start(*m)).collect();
    bounds.push(start(
        *months.last().expect("one month at least") + Months::new(1),
    ));
    let f = match figures(&state, &bounds).await {
        Ok(f) => f,
        Err(e) => return view::failed(e),
    };
    let labels: Vec<String> = months
        .iter()
        .map(|m| m.format("%b %Y").to_string())
        .collect();
    let max = f
        .by_status
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(0)
        .max(1);
    let status_bars: Vec<Value> = f
        .by_status
        .iter()
        .enumerate()
        .map(|(i, (status, n))| {
            context! { label => status, count => n, y => i * 28, width => (n * 300 / max).max(1) }
        })
        .collect();
    let mut mrr: BTreeMap<String, i64> = BTreeMap::new();
    for (currency, period, sum) in &f.mrr {
        if let Some(p) = Period::parse(period) {
            *mrr.entry(currency.clone()).or_default() += monthly(*sum, p);
        }
    }
    let mrr: Vec<Value> = mrr
        .into_iter()
        .map(|(currency, v)| context! { currency => currency.clone(), amount => money_text(v, &currency) })
        .collect();
    let revenue: Vec<Value> = f
        .revenue
        .iter()
        .map(|(currency, values)| {
            context! {
                currency,
                chart => month_chart(&format!("revenue-{currency}"), &labels, values, |v| money_text(v, currency)),
            }
        })
        .collect();
    let gateways: Vec<Value> = f
        .gateways
        .iter()
        .map(|(gateway, currency, count, sum)| {
            context! { gateway, count, amount => money_text(*sum, currency) }
        })
        .collect();
    view::ok(
        "staff_dashboard.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(&s),
            accounts => f.accounts, manual => f.manual, retrying => f.retrying,
            chart_height => status_bars.len() * 28, bars => status_bars,
            from => months.first().map(|m| m.format("%Y-%m").to_string()),
            to => months.last().map(|m| m.format("%Y-%m").to_string()),
            note, mrr, revenue, gateways, zone => zone.name(),
            new_chart => month_chart("new", &labels, &f.new, |v| v.to_string()),
            closed_chart => month_chart("closed", &labels, &f.closed, |v| v.to_string()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, 1).unwrap()
    }

    #[test]
    fn the_range_defaults_to_twelve_months_is_turned_around_and_capped() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        let (m, note) = months(&Range::default(), today);
        assert_eq!((m.len(), m[0], m[11]), (12, d(2026, 1), d(2026, 12)));
        assert!(note.is_none());
        let backwards = Range {
            from: "2026-03".into(),
            to: "2025-11".into(),
        };
        let (m, _) = months(&backwards, today);
        assert_eq!(
            m,
            vec![d(2025, 11), d(2025, 12), d(2026, 1), d(2026, 2), d(2026, 3)]
        );
        let long = Range {
            from: "2000-01".into(),
            to: "2026-12".into(),
        };
        let (m, note) = months(&long, today);
        assert_eq!((m.len(), m[0]), (36, d(2024, 1)));
        assert!(note.is_some());
        let junk = Range {
            from: "x".into(),
            to: "2026-13".into(),
        };
        assert_eq!(months(&junk, today).0.len(), 12);
        for far in ["-262143-01", "+262142-12", "0000-01", "99999-01"] {
            let r = Range {
                from: far.into(),
                to: far.into(),
            };
            assert_eq!(months(&r, today).0.len(), 12, "{far}: the default range");
        }
    }

    #[test]
    fn a_month_of_revenue_from_each_period() {
        assert_eq!(monthly(1200, Period::Year), 100);
        assert_eq!(monthly(900, Period::Quarter), 300);
        assert_eq!(monthly(1000, Period::Month), 1000);
        assert_eq!(monthly(100, Period::Day), 3043);
    }

    #[test]
    fn bars_scale_to_the_largest_month() {
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let chart = month_chart("t", &labels, &[5, 10], |v| v.to_string());
        let bars = chart.get_attr("bars").unwrap();
        let h = |i: usize| {
            bars.get_item(&Value::from(i))
                .unwrap()
                .get_attr("h")
                .unwrap()
        };
        assert_eq!(h(1).to_string(), PLOT_H.to_string());
        assert_eq!(h(0).to_string(), (PLOT_H / 2).to_string());
        assert_eq!(chart.get_attr("total").unwrap().to_string(), "15");
    }
}
