//! Plan changes in the middle of a paid period, by calendar days.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::calendar::{Zone, days_between};
use crate::money::{Money, MoneyError};

/// The money of a plan change: the unused part of the old price comes
/// back, the same part of the new price is charged. Each price is split
/// into used + unused parts that sum exactly to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Proration {
    pub total_days: i64,
    pub used_days: i64,
    pub remaining_days: i64,
    /// Unused part of the old price, credited back.
    pub credit: i64,
    /// Remaining part of the new price, charged.
    pub charge: i64,
}

/// Prorates between `old` and `new` (prices of the same period and
/// currency) over the period `[start, end)` as of `now`, counting the
/// days of `zone`.
pub fn prorate(
    old: Money,
    new: Money,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    zone: Zone,
) -> Result<Proration, MoneyError> {
    let total_days = days_between(start, end, zone).max(1);
    let used_days = days_between(start, now, zone).clamp(0, total_days);
    let remaining_days = total_days - used_days;
    let split = |price: Money| -> Result<i64, MoneyError> {
        if remaining_days == 0 {
            return Ok(0);
        }
        let parts = price.allocate(&[used_days as u64, remaining_days as u64])?;
        Ok(parts[1].minor())
    };
    Ok(Proration {
        total_days,
        used_days,
        remaining_days,
        credit: split(old)?,
        charge: split(new)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use chrono::TimeZone;

    fn eur(m: i64) -> Money {
        Money::new(m, Currency::EUR).unwrap()
    }

    #[test]
    fn upgrade_halfway_through_february_of_a_leap_year() {
        let start = Utc.with_ymd_and_hms(2028, 2, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2028, 2, 15, 9, 0, 0).unwrap();
        let p = prorate(eur(2900), eur(5800), start, end, now, Zone::UTC).unwrap();
        assert_eq!((p.total_days, p.used_days, p.remaining_days), (29, 14, 15));
        assert_eq!(p.credit, 1500); // 2900 × 15/29
        assert_eq!(p.charge, 3000); // 5800 × 15/29
    }

    #[test]
    fn parts_always_sum_to_the_price() {
        let start = Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2027, 2, 28, 0, 0, 0).unwrap();
        for day in 0..=28 {
            let now = start + chrono::Days::new(day);
            let p = prorate(eur(1000), eur(333), start, end, now, Zone::UTC).unwrap();
            let used_old = eur(1000)
                .allocate(&[p.used_days as u64, p.remaining_days as u64])
                .unwrap()[0]
                .minor();
            if p.remaining_days > 0 {
                assert_eq!(used_old + p.credit, 1000);
            }
            assert!(p.credit <= 1000 && p.charge <= 333);
        }
    }
}
