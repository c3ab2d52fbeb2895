//! The renewal rule, pure: when a service is due for renewal, what one
//! more period costs, under which ledger key it is charged, and what the
//! service looks like once it is paid. The single-item path
//! ([`super::renew`], [`super::prolong`]), the batch path
//! (`automation::batch`) and the candidate queries (their cutoff and
//! status) all take it from here, so the three cannot drift apart.

use chrono::{DateTime, Duration, Utc};

use crate::calendar::{Period, add_units};
use crate::catalog::{Plan, Quote, quote};
use crate::error::{Error, Result};
use crate::invoices;
use crate::services::{Service, ServiceStatus};

/// When services renew: an active, auto-renewing service renews once its
/// paid period ends within `ahead` of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub ahead: Duration,
}

impl Rule {
    /// The status a service renews from.
    pub const STATUS: ServiceStatus = ServiceStatus::Active;

    pub fn days_ahead(days: u32) -> Rule {
        Rule {
            ahead: Duration::days(i64::from(days)),
        }
    }

    /// A service whose paid period ends at or before this renews at `now`
    /// (the candidate queries' bound).
    pub fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.ahead
    }

    /// Whether `service` renews at `now`.
    pub fn is_due(&self, service: &Service, now: DateTime<Utc>) -> bool {
        service.status == Self::STATUS
            && service.auto_renew
            && service.paid_until.is_some_and(|p| p <= self.cutoff(now))
    }
}

/// `service` once `period` more is paid with `charged` (its gross and
/// tax): the paid end counted from the anchor on the calendar, and the paid
/// range (a new one if the old had ended by `now`); with the event log's
/// detail.
pub fn extended(
    service: &Service,
    period: Period,
    charged: invoices::Taxed,
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
        s.range_from = Some(paid_until);
        s.range_gross = charged.total;
        s.range_tax = charged.tax;
        s.range_periods = periods;
    } else {
        s.range_gross += charged.total;
        s.range_tax += charged.tax;
        s.range_periods += periods;
    }
    s.paid_until = Some(new_end);
    s.updated_at = now;
    let detail = format!(
        "+{} until {}, charged {}",
        period.as_str(),
        new_end.to_rfc3339(),
        charged.total
    );
    Ok((s, detail))
}

/// What `period` more of `service` costs on `plan` now: its price and
/// add-ons, no setup fee.
pub fn renewal_quote(plan: &Plan, service: &Service, period: Period) -> Result<Quote> {
    quote(&plan.spec, period, service.currency, &service.addons, false)
}

/// What a renewal's ledger transaction and invoice line say.
pub fn charge_description(plan_name: &str, service_id: &str, period: Period) -> String {
    format!("{plan_name}: service {service_id} for {}", period.as_str())
}

/// The ledger key a renewal of `service` is charged under.
pub fn renewal_key(service: &Service) -> String {
    format!("renewal:{}:{}", service.id, service.paid_units)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::calendar::Zone;
    use crate::catalog::{PlanSpec, PlanStatus, ProductType};
    use crate::money::Currency;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    /// A monthly service anchored on 31 January, paid for one month.
    fn service() -> Service {
        let anchor = at(2026, 1, 31);
        Service {
            id: "svc_1".into(),
            account_id: "acc_1".into(),
            plan_id: "plan_1".into(),
            status: ServiceStatus::Active,
            suspend_reason: None,
            period: Period::Month,
            currency: Currency::EUR,
            recurring_price: 1000,
            setup_fee: 0,
            amount_due: 0,
            addons: Default::default(),
            params: BTreeMap::new(),
            auto_renew: true,
            time_zone: Zone::parse("UTC").unwrap(),
            anchor_at: Some(anchor),
            paid_units: 1,
            period_start: Some(anchor),
            paid_until: Some(at(2026, 2, 28)),
            range_from: Some(anchor),
            range_gross: 1190,
            range_tax: 190,
            range_periods: 1,
            suspended_at: None,
            closed_at: None,
            created_at: anchor,
            updated_at: anchor,
        }
    }

    #[test]
    fn due_when_active_auto_renewing_and_ending_within_the_window() {
        let rule = Rule::days_ahead(3);
        let s = service();
        assert!(
            !rule.is_due(&s, at(2026, 2, 24)),
            "four days before the end"
        );
        assert!(rule.is_due(&s, at(2026, 2, 25)), "three days before");
        assert!(rule.is_due(&s, at(2026, 3, 10)), "overdue");
        assert_eq!(rule.cutoff(at(2026, 2, 25)), at(2026, 2, 28));
        let off = Service {
            auto_renew: false,
            ..service()
        };
        assert!(!rule.is_due(&off, at(2026, 3, 1)));
        let suspended = Service {
            status: ServiceStatus::Suspended,
            ..service()
        };
        assert!(!rule.is_due(&suspended, at(2026, 3, 1)));
        let unpaid = Service {
            paid_until: None,
            ..service()
        };
        assert!(!rule.is_due(&unpaid, at(2026, 3, 1)));
    }

    #[test]
    fn a_renewal_counts_from_the_anchor_and_keys_on_the_paid_units() {
        let s = service();
        assert_eq!(renewal_key(&s), "renewal:svc_1:1");
        let charged = invoices::Taxed {
            net: 1000,
            tax: 190,
            total: 1190,
        };
        // Renewed ahead of the end: the paid range grows.
        let (next, detail) = extended(&s, Period::Month, charged, at(2026, 2, 26)).unwrap();
        assert_eq!(next.paid_until, Some(at(2026, 3, 31)), "31 Jan + 2 months");
        assert_eq!(next.paid_units, 2);
        assert_eq!(renewal_key(&next), "renewal:svc_1:2");
        assert_eq!(
            (next.range_gross, next.range_tax, next.range_periods),
            (2380, 380, 2)
        );
        assert_eq!(next.range_from, s.range_from);
        assert!(detail.contains("+1m"), "{detail}");
        // Renewed after the end: a new paid range starts where the old ended.
        let (late, _) = extended(&s, Period::Month, charged, at(2026, 3, 5)).unwrap();
        assert_eq!(late.paid_until, Some(at(2026, 3, 31)));
        assert_eq!(late.range_from, Some(at(2026, 2, 28)));
        assert_eq!(late.period_start, Some(at(2026, 2, 28)));
        assert_eq!((late.range_gross, late.range_periods), (1190, 1));
        // A quarter more of a monthly service is three periods.
        let (q, _) = extended(&s, Period::Quarter, charged, at(2026, 2, 26)).unwrap();
        assert_eq!(q.paid_until, Some(at(2026, 5, 31)));
        assert_eq!(q.range_periods, 4);
    }

    #[test]
    fn a_renewal_costs_the_plans_price_for_the_period_without_setup() {
        let spec: PlanSpec = serde_json::from_value(serde_json::json!({
            "name": "VPS", "product_type": "vps", "module": "manual",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}],
            "setup_fees": [{"currency": "EUR", "amount": 500}]
        }))
        .unwrap();
        let plan = Plan {
            id: "plan_1".into(),
            status: PlanStatus::Active,
            spec,
            created_at: at(2026, 1, 1),
            updated_at: at(2026, 1, 1),
        };
        assert_eq!(plan.spec.product_type, ProductType::Vps);
        let q = renewal_quote(&plan, &service(), Period::Month).unwrap();
        assert_eq!((q.total, q.recurring), (1000, 1000));
        let refused = renewal_quote(&plan, &service(), Period::Year).unwrap_err();
        assert!(matches!(refused, Error::Refused { .. }), "{refused:?}");
    }
}
