//! Calendar-correct billing periods.
//!
//! A service's paid periods are counted from its anchor (the moment it was
//! first activated): the end of period *k* is `anchor + k × period`, always
//! computed from the anchor rather than from the previous end. Month
//! arithmetic clamps to the month's last day (Jan 31 + 1 month = Feb 28, or
//! 29 in a leap year) and, because it restarts from the anchor every time,
//! returns to the 31st afterwards (Jan 31 + 2 months = Mar 31).
//!
//! Dates are counted in the service's billing time zone (`[billing]
//! time_zone`, kept on each service from its order): a service activated
//! at 00:30 on the 1st in Berlin renews at 00:30 on the 1st in Berlin,
//! whether that is 23:30 or 22:30 UTC the day before. A wall-clock time a
//! DST change skips is moved forward past the gap; one it repeats is the
//! earlier of the two.

use std::fmt;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// An IANA time zone billing dates are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone(Tz);

impl Zone {
    pub const UTC: Zone = Zone(Tz::UTC);

    /// An IANA name (`Europe/Berlin`, `UTC`); `None` if unknown.
    pub fn parse(name: &str) -> Option<Zone> {
        name.parse::<Tz>().ok().map(Zone)
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// Every name [`Zone::parse`] accepts, sorted.
    pub fn all_names() -> Vec<&'static str> {
        let mut names: Vec<&str> = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect();
        names.sort_unstable();
        names
    }

    /// `at` as people read it here: `2026-12-31 00:00 CET`.
    pub fn format(self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.0)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string()
    }

    /// The calendar date of `at` in this zone.
    pub fn date_of(self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.0).date_naive()
    }

    /// The instant a local wall-clock time names: the earlier one when the
    /// clock repeats it, the first moment after the gap when it skips it.
    pub fn instant(self, local: NaiveDateTime) -> DateTime<Utc> {
        use chrono::LocalResult;
        match self.0.from_local_datetime(&local) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
            LocalResult::None => {
                // Read with the offset in force before the gap, the time
                // lands as far past the gap as it was into it.
                let before = self
                    .0
                    .from_local_datetime(&(local - chrono::Duration::days(1)))
                    .earliest()
                    .map(|t| chrono::Offset::fix(t.offset()))
                    .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
                (local - before).and_utc()
            }
        }
    }
}

impl Default for Zone {
    fn default() -> Self {
        Zone::UTC
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Zone::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{name}` is not an IANA time zone (e.g. `UTC`, `Europe/Berlin`)"
            ))
        })
    }
}

/// `[billing]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// The time zone new services count their periods in.
    pub time_zone: Zone,
    /// Unpaid orders one account may have waiting at once.
    pub max_unpaid_orders_per_account: u32,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            time_zone: Zone::default(),
            max_unpaid_orders_per_account: 10,
        }
    }
}

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

/// `anchor` plus `units` days or months on the wall clock of `zone`,
/// clamped to the month's end. `None` only beyond the calendar's range.
pub fn add_units(
    anchor: DateTime<Utc>,
    unit: PeriodUnit,
    units: u32,
    zone: Zone,
) -> Option<DateTime<Utc>> {
    let local = anchor.with_timezone(&zone.0).naive_local();
    let shifted = match unit {
        PeriodUnit::Day => local.checked_add_days(Days::new(u64::from(units))),
        PeriodUnit::Month => local.checked_add_months(Months::new(units)),
    }?;
    Some(zone.instant(shifted))
}

/// Whole calendar days of `zone` from `from` to `to` (by date, not by
/// 24-hour blocks), negative when `to` is earlier.
pub fn days_between(from: DateTime<Utc>, to: DateTime<Utc>, zone: Zone) -> i64 {
    let a = zone.date_of(from);
    let b = zone.date_of(to);
    b.num_days_from_ce() as i64 - a.num_days_from_ce() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    const UTC: Zone = Zone::UTC;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn months_clamp_to_the_month_end_and_keep_the_anniversary() {
        let anchor = at(2027, 1, 31);
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 1, UTC),
            Some(at(2027, 2, 28))
        );
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 2, UTC),
            Some(at(2027, 3, 31))
        );
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 3, UTC),
            Some(at(2027, 4, 30))
        );
        let leap = at(2028, 1, 31);
        assert_eq!(
            add_units(leap, PeriodUnit::Month, 1, UTC),
            Some(at(2028, 2, 29))
        );
        let feb29 = at(2028, 2, 29);
        assert_eq!(
            add_units(feb29, PeriodUnit::Month, 12, UTC),
            Some(at(2029, 2, 28))
        );
        assert_eq!(
            add_units(feb29, PeriodUnit::Month, 48, UTC),
            Some(at(2032, 2, 29))
        );
    }

    #[test]
    fn days_are_counted_by_date() {
        assert_eq!(days_between(at(2027, 2, 1), at(2027, 3, 1), UTC), 28);
        assert_eq!(days_between(at(2028, 2, 1), at(2028, 3, 1), UTC), 29);
        assert_eq!(
            add_units(at(2027, 2, 28), PeriodUnit::Day, 1, UTC),
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

    fn berlin() -> Zone {
        Zone::parse("Europe/Berlin").unwrap()
    }

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn periods_follow_the_wall_clock_of_the_billing_zone() {
        // 00:30 on Mar 1 in Berlin (CET, UTC+1) is 23:30 UTC on Feb 28.
        let anchor = utc(2027, 2, 28, 23, 30);
        // A month later it is 00:30 on Apr 1, now CEST (UTC+2).
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 1, berlin()),
            Some(utc(2027, 3, 31, 22, 30))
        );
        // Counted in UTC the same anchor would renew on the 28th.
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 1, UTC),
            Some(utc(2027, 3, 28, 23, 30))
        );
        // Daily periods across the spring change: the day of Mar 28 is 23 hours.
        let day = utc(2027, 3, 26, 23, 30);
        assert_eq!(
            add_units(day, PeriodUnit::Day, 2, berlin()),
            Some(utc(2027, 3, 28, 22, 30))
        );
        // And across the autumn change back, 25 hours.
        let autumn = utc(2027, 10, 29, 22, 30);
        assert_eq!(
            add_units(autumn, PeriodUnit::Day, 2, berlin()),
            Some(utc(2027, 10, 31, 23, 30))
        );
    }

    #[test]
    fn a_skipped_wall_clock_time_moves_past_the_gap_and_a_repeated_one_is_the_first() {
        // 02:30 on Mar 28 2027 does not exist in Berlin (02:00 → 03:00).
        let anchor = utc(2027, 2, 28, 1, 30); // 02:30 CET
        assert_eq!(
            add_units(anchor, PeriodUnit::Month, 1, berlin()),
            Some(utc(2027, 3, 28, 1, 30)) // 03:30 CEST
        );
        // 02:30 on Oct 31 2027 happens twice; the first is 00:30 UTC.
        let anchor = utc(2027, 10, 30, 0, 30); // 02:30 CEST
        assert_eq!(
            add_units(anchor, PeriodUnit::Day, 1, berlin()),
            Some(utc(2027, 10, 31, 0, 30))
        );
    }

    #[test]
    fn days_are_counted_by_the_date_in_the_zone() {
        // 23:30 UTC is already the next day in Berlin.
        let from = utc(2027, 5, 1, 12, 0);
        let to = utc(2027, 5, 1, 23, 30);
        assert_eq!(days_between(from, to, UTC), 0);
        assert_eq!(days_between(from, to, berlin()), 1);
    }

    #[test]
    fn zones_parse_by_iana_name() {
        assert_eq!(berlin().name(), "Europe/Berlin");
        assert_eq!(Zone::parse("Mars/Olympus"), None);
        let cfg: BillingConfig = serde_json::from_str(r#"{"time_zone": "Asia/Tokyo"}"#).unwrap();
        assert_eq!(cfg.time_zone.name(), "Asia/Tokyo");
        let err = serde_json::from_str::<BillingConfig>(r#"{"time_zone": "CEST+2"}"#).unwrap_err();
        assert!(err.to_string().contains("not an IANA time zone"), "{err}");
    }
}
