//! Calendar-correct billing periods.
//!
//! A service's paid periods are counted from its anchor (the moment it was
//! first activated): the end of period *k* is `anchor + k × period`, always
//! computed from the anchor rather than from the previous end. Month
//! arithmetic clamps to the month's last day (Jan 31 + 1 month = Feb 28, or
//! 29 in a leap year) and, because it restarts from the anchor every time,
//! returns to the 31st afterwards (Jan 31 + 2 months = Mar 31).

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// A billing period a plan can be sold for.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Period {
    #[serde(rename = "1d")]
    Day,
    #[serde(rename = "1m")]
    Month,
    #[serde(rename = "3m")]
    Quarter,
    #[serde(rename = "6m")]
    HalfYear,
    #[serde(rename = "12m")]
    Year,
    #[serde(rename = "24m")]
    TwoYears,
    #[serde(rename = "36m")]
    ThreeYears,
}

/// The unit a period is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodUnit {
    Day,
    Month,
}

impl Period {
    pub const ALL: [Period; 7] = [
        Period::Day,
        Period::Month,
        Period::Quarter,
        Period::HalfYear,
        Period::Year,
        Period::TwoYears,
        Period::ThreeYears,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "1d",
            Period::Month => "1m",
            Period::Quarter => "3m",
            Period::HalfYear => "6m",
            Period::Year => "12m",
            Period::TwoYears => "24m",
            Period::ThreeYears => "36m",
        }
    }

    pub fn parse(s: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn unit(self) -> PeriodUnit {
        match self {
            Period::Day => PeriodUnit::Day,
            _ => PeriodUnit::Month,
        }
    }

    /// How many units (days or months) the period lasts.
    pub fn units(self) -> u32 {
        match self {
            Period::Day => 1,
            Period::Month => 1,
            Period::Quarter => 3,
            Period::HalfYear => 6,
            Period::Year => 12,
            Period::TwoYears => 24,
            Period::ThreeYears => 36,
        }
    }
}

/// `anchor` plus `units` days or months, clamped to the month's end.
/// `None` only beyond the calendar's range.
pub fn add_units(anchor: DateTime<Utc>, unit: PeriodUnit, units: u32) -> Option<DateTime<Utc>> {
    match unit {
        PeriodUnit::Day => anchor.checked_add_days(Days::new(u64::from(units))),
        PeriodUnit::Month => anchor.checked_add_months(Months::new(units)),
    }
}

/// Whole calendar days from `from` to `to` (by date, not by 24-hour
/// blocks), negative when `to` is earlier.
pub fn days_between(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    let a: NaiveDate = from.date_naive();
    let b: NaiveDate = to.date_naive();
    b.num_days_from_ce() as i64 - a.num_days_from_ce() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn months_clamp_to_the_month_end_and_keep_the_anniversary() {
        let anchor = at(2027, 1, 31);
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 1),
            Some(at(2027, 2, 28))
        );
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 2),
            Some(at(2027, 3, 31))
        );
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 3),
            Some(at(2027, 4, 30))
        );
        let leap = at(2028, 1, 31);
        assert_eq!(add_units(leap, PeriodUnit::Month, 1), Some(at(2028, 2, 29)));
        let feb29 = at(2028, 2, 29);
        assert_eq!(
            add_units(feb29, PeriodUnit::Month, 12),
            Some(at(2029, 2, 28))
        );
        assert_eq!(
            add_units(feb29, PeriodUnit::Month, 48),
            Some(at(2032, 2, 29))
        );
    }

    #[test]
    fn days_are_counted_by_date() {
        assert_eq!(days_between(at(2027, 2, 1), at(2027, 3, 1)), 28);
        assert_eq!(days_between(at(2028, 2, 1), at(2028, 3, 1)), 29);
        assert_eq!(
            add_units(at(2027, 2, 28), PeriodUnit::Day, 1),
            Some(at(2027, 3, 1))
        );
    }

    #[test]
    fn periods_round_trip_their_names() {
        for p in Period::ALL {
            assert_eq!(Period::parse(p.as_str()), Some(p));
        }
        assert_eq!(Period::parse("2m"), None);
    }
}
