//! Money: integer minor units with an ISO 4217 currency.
//!
//! There is no floating point anywhere in this module. Amounts are `i64`
//! minor units (cents for EUR, yen for JPY, fils for KWD); intermediate
//! products use `i128` so that allocation and proration never overflow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest absolute amount a single posting, price or credit limit may
/// carry: 10^15 minor units (ten trillion euros). Bounding inputs keeps every
/// sum of a handful of amounts far away from `i64` overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// Errors of money parsing and arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency code `{0}` (expected an ISO 4217 code such as EUR)")]
    UnknownCurrency(String),
    #[error("`{input}` is not a valid amount in {currency}: {reason}")]
    InvalidAmount {
        input: String,
        currency: Currency,
        reason: &'static str,
    },
    #[error("amount is out of range (at most {MAX_AMOUNT} minor units)")]
    OutOfRange,
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("cannot allocate over ratios that sum to zero")]
    ZeroRatios,
}

/// An ISO 4217 currency that has a defined minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub const EUR: Currency = Currency(iso_currency::Currency::EUR);
    pub const USD: Currency = Currency(iso_currency::Currency::USD);
    pub const JPY: Currency = Currency(iso_currency::Currency::JPY);
    pub const KWD: Currency = Currency(iso_currency::Currency::KWD);

    /// Looks a currency up by its three-letter code (case-sensitive, as ISO
    /// writes them). Codes without a minor unit (gold, SDR…) are refused.
    pub fn from_code(code: &str) -> Result<Self, MoneyError> {
        iso_currency::Currency::from_code(code)
            .filter(|c| c.exponent().is_some())
            .map(Currency)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Every code [`Currency::from_code`] accepts, sorted.
    pub fn all_codes() -> Vec<&'static str> {
        use iso_currency::IntoEnumIterator;
        let mut codes: Vec<&str> = iso_currency::Currency::iter()
            .filter(|c| c.exponent().is_some())
            .map(|c| c.code())
            .collect();
        codes.sort_unstable();
        codes
    }

    /// The sign people write the currency with (`€`, `$`, `¥`), or its
    /// code when it has none of its own.
    pub fn symbol(self) -> String {
        self.0.symbol().to_string()
    }

    /// Number of decimal places of the minor unit: JPY 0, EUR 2, KWD 3.
    pub fn exponent(self) -> u32 {
        // `from_code` only admits currencies that have an exponent.
        u32::from(self.0.exponent().unwrap_or(0))
    }

    fn scale(self) -> i64 {
        10_i64.pow(self.exponent())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: minor units and the currency they are counted in.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    /// Builds an amount from minor units; refuses anything beyond
    /// [`MAX_AMOUNT`] in absolute value.
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        if minor.checked_abs().is_none_or(|a| a > MAX_AMOUNT) {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Money { minor, currency })
    }

    pub fn zero(currency: Currency) -> Self {
        Money { minor: 0, currency }
    }

    pub fn minor(self) -> i64 {
        self.minor
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_positive(self) -> bool {
        self.minor > 0
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let sum = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::OutOfRange)?;
        Money::new(sum, self.currency)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.checked_add(other.negate())
    }

    /// The same amount with the opposite sign (always representable within
    /// [`MAX_AMOUNT`]).
    pub fn negate(self) -> Money {
        Money {
            minor: -self.minor,
            currency: self.currency,
        }
    }

    /// Parses a decimal amount such as `12.34` or `-0.5` in `currency`.
    /// More decimal places than the currency has are refused, not rounded.
    pub fn parse(input: &str, currency: Currency) -> Result<Self, MoneyError> {
        let invalid = |reason| MoneyError::InvalidAmount {
            input: input.to_owned(),
            currency,
            reason,
        };
        let (negative, digits) = match input.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (digits, None),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("expected digits before the decimal point"));
        }
        let exponent = currency.exponent() as usize;
        let frac = match frac {
            None => "",
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(invalid("expected digits after the decimal point"));
            }
            Some(f) if f.len() > exponent => {
                return Err(invalid("more decimal places than the currency has"));
            }
            Some(f) => f,
        };
        let whole: i64 = whole.parse().map_err(|_| MoneyError::OutOfRange)?;
        let mut frac_minor: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| invalid("bad fraction"))?
        };
        for _ in frac.len()..exponent {
            frac_minor *= 10;
        }
        let minor = whole
            .checked_mul(currency.scale())
            .and_then(|w| w.checked_add(frac_minor))
            .ok_or(MoneyError::OutOfRange)?;
        Money::new(if negative { -minor } else { minor }, currency)
    }

    /// The amount as a plain decimal string with exactly the currency's
    /// number of decimal places, e.g. `-12.30`, `500`, `1.250`.
    pub fn to_decimal_string(self) -> String {
        let exponent = self.currency.exponent() as usize;
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        if exponent == 0 {
            return format!("{sign}{abs}");
        }
        let scale = self.currency.scale().unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = exponent
        )
    }

    /// Splits the amount into parts proportional to `ratios`. The parts
    /// always sum to exactly the whole: the remainder left by rounding down
    /// goes, one minor unit at a time, to the parts with the largest
    /// fractional remainders (earlier parts win ties).
    pub fn allocate(self, ratios: &[u64]) -> Result<Vec<Money>, MoneyError> {
        let total: u128 = ratios.iter().map(|&r| u128::from(r)).sum();
        if total == 0 {
            return Err(MoneyError::ZeroRatios);
        }
        let total = total as i128;
        let amount = i128::from(self.minor);
        let mut parts: Vec<i128> = Vec::with_capacity(ratios.len());
        let mut remainders: Vec<(i128, usize)> = Vec::with_capacity(ratios.len());
        for (i, &r) in ratios.iter().enumerate() {
            let product = amount * i128::from(r);
            // Round toward zero, so negative amounts mirror positive ones.
            parts.push(product / total);
            remainders.push(((product % total).abs(), i));
        }
        let allocated: i128 = parts.iter().sum();
        let mut left = amount - allocated;
        let step = left.signum();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().cycle() {
            if left == 0 {
                break;
            }
            parts[i] += step;
            left -= step;
        }
        parts
            .into_iter()
            .map(|p| {
                let minor = i64::try_from(p).map_err(|_| MoneyError::OutOfRange)?;
                Money::new(minor, self.currency)
            })
            .collect()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal_string(), self.currency)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exponents_follow_iso_4217() {
        assert_eq!(Currency::JPY.exponent(), 0);
        assert_eq!(Currency::EUR.exponent(), 2);
        assert_eq!(Currency::KWD.exponent(), 3);
        assert!(Currency::from_code("XAU").is_err(), "no minor unit");
        assert!(Currency::from_code("EURO").is_err());
        assert!(Currency::from_code("eur").is_err());
    }

    #[test]
    fn formats_with_the_currency_exponent() {
        let eur = |m| Money::new(m, Currency::EUR).unwrap();
        assert_eq!(eur(1234).to_decimal_string(), "12.34");
        assert_eq!(eur(-5).to_decimal_string(), "-0.05");
        assert_eq!(eur(0).to_decimal_string(), "0.00");
        assert_eq!(
            Money::new(500, Currency::JPY).unwrap().to_string(),
            "500 JPY"
        );
        assert_eq!(
            Money::new(1250, Currency::KWD).unwrap().to_decimal_string(),
            "1.250"
        );
    }

    #[test]
    fn parsing_refuses_what_it_cannot_represent_exactly() {
        assert_eq!(Money::parse("12.3", Currency::EUR).unwrap().minor(), 1230);
        assert_eq!(Money::parse("7", Currency::KWD).unwrap().minor(), 7000);
        assert!(Money::parse("1.5", Currency::JPY).is_err());
        assert!(Money::parse("1.234", Currency::EUR).is_err());
        assert!(Money::parse("1.", Currency::EUR).is_err());
        assert!(Money::parse(".5", Currency::EUR).is_err());
        assert!(Money::parse("1e3", Currency::EUR).is_err());
        assert!(Money::parse("+1", Currency::EUR).is_err());
        assert!(Money::parse("99999999999999999999", Currency::EUR).is_err());
        assert_eq!(
            Money::parse("10000000000000.01", Currency::EUR),
            Err(MoneyError::OutOfRange)
        );
    }

    #[test]
    fn allocation_gives_the_remainder_to_the_largest_fractions() {
        let m = Money::new(100, Currency::EUR).unwrap();
        let parts: Vec<i64> = m
            .allocate(&[1, 1, 1])
            .unwrap()
            .iter()
            .map(|p| p.minor())
            .collect();
        assert_eq!(parts, vec![34, 33, 33]);
        let m = Money::new(-100, Currency::EUR).unwrap();
        let parts: Vec<i64> = m
            .allocate(&[1, 1, 1])
            .unwrap()
            .iter()
            .map(|p| p.minor())
            .collect();
        assert_eq!(parts, vec![-34, -33, -33]);
        assert_eq!(m.allocate(&[0, 0]), Err(MoneyError::ZeroRatios));
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop_oneof![
            Just(Currency::JPY),
            Just(Currency::EUR),
            Just(Currency::KWD)
        ]
    }

    proptest! {
        #[test]
        fn allocation_always_sums_to_the_whole(
            minor in -MAX_AMOUNT..=MAX_AMOUNT,
            ratios in prop::collection::vec(0u64..1_000_000, 1..12),
            cur in currency(),
        ) {
            prop_assume!(ratios.iter().any(|&r| r > 0));
            let m = Money::new(minor, cur).unwrap();
            let parts = m.allocate(&ratios).unwrap();
            prop_assert_eq!(parts.len(), ratios.len());
            let sum: i64 = parts.iter().map(|p| p.minor()).sum();
            prop_assert_eq!(sum, minor);
            for (p, &r) in parts.iter().zip(&ratios) {
                if r == 0 {
                    prop_assert_eq!(p.minor(), 0);
                }
                // Every part is within one minor unit of its exact share.
                let exact = i128::from(minor) * i128::from(r);
                let total: i128 = ratios.iter().map(|&r| i128::from(r)).sum();
                prop_assert!((i128::from(p.minor()) * total - exact).abs() < total);
            }
        }

        #[test]
        fn formatting_and_parsing_round_trip(minor in -MAX_AMOUNT..=MAX_AMOUNT, cur in currency()) {
            let m = Money::new(minor, cur).unwrap();
            let text = m.to_decimal_string();
            prop_assert_eq!(Money::parse(&text, cur).unwrap(), m);
        }
    }
}
