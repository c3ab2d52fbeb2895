//! Plan changes in the middle of a paid period.
//!
//! The paid range runs over calendar periods (real month lengths, in the
//! service's time zone); a change splits it at the moment it happens, to
//! the second — not at a day boundary, which would let a change made just
//! before midnight and undone just after have a whole day for the price of
//! the cheaper plan. What comes back is a part of what was actually charged
//! for the paid range — its gross and the tax in it, as invoiced — never a
//! price worked out again under today's plan or tax rule. What is charged
//! is the same part of the new plan's price. Rounding never favours the
//! caller: the part given back is rounded down, the part charged up, so no
//! sequence of changes can turn cents of rounding into money.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::money::MoneyError;

/// The money of a plan change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Proration {
    /// Calendar days of the paid range the new plan is priced on (for
    /// display; the money is prorated to the second).
    pub total_days: i64,
    pub used_days: i64,
    pub remaining_days: i64,
    /// Given back: the unused part of what was charged, tax included.
    pub credit: i64,
    /// The tax in `credit`, as it was charged.
    pub credit_tax: i64,
    /// Charged: the remaining part of the new plan's price for the range,
    /// before any tax added on top.
    pub charge: i64,
}

/// What was charged for the range `[from, until)`: its gross and the tax
/// in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paid {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub gross: i64,
    pub tax: i64,
}

/// Prorates a change at `now`: the unused part of `paid` comes back; the
/// new plan's `new_range_price` for the whole range `[range_start,
/// paid.until)` is charged for its remaining part.
pub fn prorate(
    paid: Paid,
    new_range_price: i64,
    range_start: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Proration, MoneyError> {
    let seconds = |from: DateTime<Utc>| (paid.until - from).num_seconds().max(0);
    let range = seconds(range_start).max(1);
    let left = seconds(now).min(range);
    // Whole days for people to read (a 23- or 25-hour day is a day).
    let days = |s: i64| (s + 43_200) / 86_400;
    let total_days = days(range).max(1);
    let remaining_days = days(left).min(total_days);
    let paid_span = seconds(paid.from).max(1);
    let paid_left = seconds(now).min(paid_span);
    Ok(Proration {
        total_days,
        used_days: total_days - remaining_days,
        remaining_days,
        credit: part(paid.gross, paid_left, paid_span, Round::Down)?,
        credit_tax: part(paid.tax, paid_left, paid_span, Round::Down)?,
        charge: part(new_range_price, left, range, Round::Up)?,
    })
}

#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// `amount × num / den` for `0 ≤ num ≤ den`, rounded as told.
fn part(amount: i64, num: i64, den: i64, round: Round) -> Result<i64, MoneyError> {
    if amount < 0 || num < 0 || den <= 0 || num > den {
        return Err(MoneyError::OutOfRange);
    }
    let product = i128::from(amount) * i128::from(num);
    let den = i128::from(den);
    let q = match round {
        Round::Down => product / den,
        Round::Up => (product + den - 1) / den,
    };
    i64::try_from(q).map_err(|_| MoneyError::OutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn paid(from: DateTime<Utc>, until: DateTime<Utc>, gross: i64, tax: i64) -> Paid {
        Paid {
            from,
            until,
            gross,
            tax,
        }
    }

    #[test]
    fn upgrade_halfway_through_february_of_a_leap_year() {
        let start = Utc.with_ymd_and_hms(2028, 2, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2028, 2, 15, 0, 0, 0).unwrap();
        let p = prorate(paid(start, end, 2900, 0), 5800, start, now).unwrap();
        assert_eq!((p.total_days, p.used_days, p.remaining_days), (29, 14, 15));
        assert_eq!(p.credit, 1500); // 2900 × 15/29
        assert_eq!(p.charge, 3000); // 5800 × 15/29
        // Nine hours later, nine hours fewer come back and are charged.
        let later = now + chrono::Duration::hours(9);
        let q = prorate(paid(start, end, 2900, 0), 5800, start, later).unwrap();
        assert_eq!(q.credit, 1462); // 2900 × 351/696 hours, rounded down
        assert_eq!(q.charge, 2925); // 5800 × 351/696 hours, rounded up
    }

    #[test]
    fn a_change_just_before_midnight_undone_just_after_saves_only_the_minutes_between() {
        let start = Utc.with_ymd_and_hms(2027, 4, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2027, 5, 1, 0, 0, 0).unwrap();
        let (big, small) = (30_000, 1_000);
        let before = Utc.with_ymd_and_hms(2027, 4, 10, 23, 58, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2027, 4, 11, 0, 2, 0).unwrap();
        // Down before midnight: the unused big part back, small charged.
        let down = prorate(paid(start, end, big, 0), small, start, before).unwrap();
        // Up after it: what the change charged back, big charged again.
        let up = prorate(paid(before, end, down.charge, 0), big, start, after).unwrap();
        let spent = -down.credit + down.charge - up.credit + up.charge;
        // Four minutes on the small plan: a few cents cheaper, no more.
        let four_minutes_of_difference = (big - small) * 4 / (30 * 24 * 60);
        assert!(spent >= -four_minutes_of_difference - 1, "{spent}");
        assert!(spent <= 0, "{spent}");
    }

    #[test]
    fn the_credit_gives_back_the_tax_that_was_charged() {
        let start = Utc.with_ymd_and_hms(2027, 4, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2027, 5, 1, 0, 0, 0).unwrap();
        let now = Utc.with_ymd_and_hms(2027, 4, 16, 0, 0, 0).unwrap();
        // 300.00 + 19 % charged: 357.00 of which 57.00 tax; half unused.
        let p = prorate(paid(start, end, 35_700, 5_700), 1_000, start, now).unwrap();
        assert_eq!((p.credit, p.credit_tax), (17_850, 2_850));
        assert_eq!(p.charge, 500);
    }

    #[test]
    fn after_a_change_only_what_the_change_charged_comes_back() {
        let start = Utc.with_ymd_and_hms(2027, 4, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2027, 5, 1, 0, 0, 0).unwrap();
        let changed = Utc.with_ymd_and_hms(2027, 4, 16, 0, 0, 0).unwrap();
        // The range was re-paid from the change on: 5.00 for 15 days.
        let p = prorate(paid(changed, end, 500, 0), 30_000, start, changed).unwrap();
        assert_eq!(p.credit, 500);
        assert_eq!(p.charge, 15_000);
    }

    proptest! {
        #[test]
        fn never_more_back_than_was_paid_and_rounding_favours_nobody_but_the_engine(
            gross in 0i64..100_000_000, tax_pct in 0i64..100, new in 0i64..100_000_000,
            total in 1u64..400, used in 0u64..400,
        ) {
            let start = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
            let end = start + chrono::Days::new(total);
            let now = start + chrono::Days::new(used.min(total));
            let tax = gross * tax_pct / 100;
            let p = prorate(paid(start, end, gross, tax), new, start, now).unwrap();
            prop_assert!(p.credit <= gross && p.credit_tax <= tax && p.credit_tax <= p.credit);
            prop_assert!(p.charge <= new);
            // The same plan back and forth never pays out.
            let again = prorate(paid(start, end, gross, tax), gross, start, now).unwrap();
            prop_assert!(again.credit <= again.charge);
        }
    }
}
