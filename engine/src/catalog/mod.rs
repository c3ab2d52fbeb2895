//! Products, plans, prices and add-ons, and the pricing of an order. Pure.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::FieldError;
use crate::calendar::Period;
use crate::money::{Currency, MAX_AMOUNT};

/// What kind of thing a plan sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProductType {
    DedicatedServer,
    Vps,
    Domain,
    SslCertificate,
    Generic,
}

impl ProductType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProductType::DedicatedServer => "dedicated_server",
            ProductType::Vps => "vps",
            ProductType::Domain => "domain",
            ProductType::SslCertificate => "ssl_certificate",
            ProductType::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "dedicated_server" => ProductType::DedicatedServer,
            "vps" => ProductType::Vps,
            "domain" => ProductType::Domain,
            "ssl_certificate" => ProductType::SslCertificate,
            "generic" => ProductType::Generic,
            _ => return None,
        })
    }
}

/// One price: an amount in minor units for a period in a currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[schema(example = "1m")]
    pub period: Period,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Minor units, ≥ 0.
    pub amount: i64,
}

/// A one-off amount in a currency (setup fees).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Fee {
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    pub amount: i64,
}

fn price_for(prices: &[Price], period: Period, currency: Currency) -> Option<i64> {
    prices
        .iter()
        .find(|p| p.period == period && p.currency == currency)
        .map(|p| p.amount)
}

/// An option the customer picks when ordering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Addon {
    /// On or off; `prices` apply when on.
    Boolean {
        code: String,
        name: String,
        #[serde(default)]
        prices: Vec<Price>,
    },
    /// A count: `included` units are free, each one above costs
    /// `unit_prices`; the value must lie in `min..=max`.
    Integer {
        code: String,
        name: String,
        #[serde(default)]
        min: i64,
        max: i64,
        #[serde(default)]
        included: i64,
        #[serde(default)]
        unit_prices: Vec<Price>,
    },
    /// One of a list of choices, each with its own prices.
    Enum {
        code: String,
        name: String,
        choices: Vec<AddonChoice>,
        /// The choice taken when the order names none.
        default: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonChoice {
    pub value: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prices: Vec<Price>,
}

impl Addon {
    pub fn code(&self) -> &str {
        match self {
            Addon::Boolean { code, .. }
            | Addon::Integer { code, .. }
            | Addon::Enum { code, .. } => code,
        }
    }

    fn prices(&self) -> Vec<&Price> {
        match self {
            Addon::Boolean { prices, .. } => prices.iter().collect(),
            Addon::Integer { unit_prices, .. } => unit_prices.iter().collect(),
            Addon::Enum { choices, .. } => choices.iter().flat_map(|c| c.prices.iter()).collect(),
        }
    }
}

/// Actions a customer key may take on its own services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerAction {
    Prolong,
    ChangePlan,
    Close,
}

/// Whether a plan can be ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Active,
    /// Kept for the services that use it; no new orders.
    Archived,
}

/// The parts of a plan an operator writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    pub product_type: ProductType,
    /// The processing module instance that provisions it, or `manual`
    /// (staff complete its operations through the API).
    #[serde(default = "manual")]
    pub module: String,
    /// Settings passed to the module, e.g. a DCImanager configuration name
    /// and location. Staff only: never shown to customers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub module_settings: BTreeMap<String, String>,
    /// Recurring prices per period and currency.
    pub prices: Vec<Price>,
    #[serde(default)]
    pub setup_fees: Vec<Fee>,
    #[serde(default)]
    pub addons: Vec<Addon>,
    #[serde(default = "yes")]
    pub auto_renew: bool,
    /// Days a service may stay active past its paid period before it is
    /// suspended for non-payment.
    #[serde(default)]
    pub grace_days: u32,
    /// Days a service suspended for non-payment is kept before it is closed.
    #[serde(default = "thirty")]
    pub deletion_days: u32,
    #[serde(default = "default_customer_actions")]
    pub customer_actions: BTreeSet<CustomerAction>,
    /// The plans a service on this plan may change to (BILLmanager's
    /// tariff change list): plan ids of the same module instance and
    /// product type. Empty: no plan changes.
    #[serde(default)]
    pub change_to: BTreeSet<String>,
}

fn manual() -> String {
    "manual".into()
}
fn yes() -> bool {
    true
}
fn thirty() -> u32 {
    30
}
fn default_customer_actions() -> BTreeSet<CustomerAction> {
    [
        CustomerAction::Prolong,
        CustomerAction::ChangePlan,
        CustomerAction::Close,
    ]
    .into()
}

/// A tariff plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub id: String,
    #[serde(flatten)]
    pub spec: PlanSpec,
    pub status: PlanStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Plan {
    /// The plan as customers see it: without its module settings.
    pub fn for_customers(mut self) -> Plan {
        self.spec.module_settings.clear();
        self
    }
}

impl PlanSpec {
    /// Checks what the type system does not: names, non-negative bounded
    /// amounts, one price per (period, currency), add-on codes unique and
    /// their ranges sensible.
    pub fn validate(&self) -> Result<(), FieldError> {
        crate::accounts::check_text("name", &self.name, 200)?;
        if crate::accounts::check_text("module", &self.module, usize::MAX).is_err() {
            return Err(FieldError::new(
                "module",
                "must name a module instance or `manual`",
            ));
        }
        if self.prices.is_empty() {
            return Err(FieldError::new("prices", "a plan needs at least one price"));
        }
        check_prices("prices", &self.prices.iter().collect::<Vec<_>>())?;
        let mut fee_currencies = BTreeSet::new();
        for fee in &self.setup_fees {
            check_amount("setup_fees", fee.amount)?;
            if !fee_currencies.insert(fee.currency) {
                return Err(FieldError::new(
                    "setup_fees",
                    format!("two setup fees in {}", fee.currency),
                ));
            }
        }
        let mut codes = BTreeSet::new();
        for addon in &self.addons {
            let code = addon.code();
            if code.is_empty()
                || code.len() > 64
                || !code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(FieldError::new(
                    "addons",
                    format!("add-on code `{code}` must be 1 to 64 letters, digits, `_` or `-`"),
                ));
            }
            if !codes.insert(code) {
                return Err(FieldError::new(
                    "addons",
                    format!("add-on code `{code}` appears twice"),
                ));
            }
            check_prices("addons", &addon.prices())?;
            match addon {
                Addon::Integer {
                    min, max, included, ..
                } => {
                    if min < &0 || min > max || included < &0 || *max > 1_000_000 {
                        return Err(FieldError::new(
                            "addons",
                            format!(
                                "add-on `{code}` needs 0 ≤ min ≤ max ≤ 1000000 and included ≥ 0"
                            ),
                        ));
                    }
                }
                Addon::Enum {
                    choices, default, ..
                } => {
                    if choices.is_empty() {
                        return Err(FieldError::new(
                            "addons",
                            format!("add-on `{code}` has no choices"),
                        ));
                    }
                    let values: BTreeSet<&str> = choices.iter().map(|c| c.value.as_str()).collect();
                    if values.len() != choices.len() {
                        return Err(FieldError::new(
                            "addons",
                            format!("add-on `{code}` repeats a choice"),
                        ));
                    }
                    if let Some(d) = default
                        && !values.contains(d.as_str())
                    {
                        return Err(FieldError::new(
                            "addons",
                            format!("add-on `{code}` default `{d}` is not a choice"),
                        ));
                    }
                }
                Addon::Boolean { .. } => {}
            }
        }
        if self.change_to.len() > 100
            || self
                .change_to
                .iter()
                .any(|id| id.is_empty() || id.chars().count() > 64)
        {
            return Err(FieldError::new(
                "change_to",
                "at most 100 plan ids of 1 to 64 characters",
            ));
        }
        if self.deletion_days > 3650 || self.grace_days > 365 {
            return Err(FieldError::new(
                "deletion_days",
                "grace_days ≤ 365 and deletion_days ≤ 3650",
            ));
        }
        Ok(())
    }

    /// The periods this plan sells in `currency`.
    pub fn sells(&self, period: Period, currency: Currency) -> bool {
        price_for(&self.prices, period, currency).is_some()
    }
}

fn check_amount(field: &'static str, amount: i64) -> Result<(), FieldError> {
    if !(0..=MAX_AMOUNT).contains(&amount) {
        return Err(FieldError::new(
            field,
            format!("amounts must be between 0 and {MAX_AMOUNT} minor units"),
        ));
    }
    Ok(())
}

fn check_prices(field: &'static str, prices: &[&Price]) -> Result<(), FieldError> {
    let mut seen = BTreeSet::new();
    for p in prices {
        check_amount(field, p.amount)?;
        if !seen.insert((p.period, p.currency)) {
            return Err(FieldError::new(
                field,
                format!("two prices for {} in {}", p.period.as_str(), p.currency),
            ));
        }
    }
    Ok(())
}

/// The customer's add-on choices: code → value (`true`, a number, or a
/// choice's value).
pub type AddonValues = BTreeMap<String, serde_json::Value>;

/// A line of a priced order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuoteLine {
    pub description: String,
    pub amount: i64,
    /// Recurring lines are charged again at every renewal; the setup fee is not.
    pub recurring: bool,
}

/// What an order (or a renewal) costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Quote {
    #[schema(value_type = String)]
    pub period: Period,
    #[schema(value_type = String)]
    pub currency: Currency,
    pub lines: Vec<QuoteLine>,
    /// Plan price plus add-ons, per period.
    pub recurring: i64,
    pub setup_fee: i64,
    /// What the order costs now: recurring + setup fee.
    pub total: i64,
    /// The add-on values with defaults filled in, as stored on the service.
    #[schema(value_type = Object)]
    pub addons: AddonValues,
}

/// Prices `period` of `plan` in `currency` with the given add-ons.
/// `include_setup` is false for renewals. A period the plan does not sell
/// in that currency is an `invalid-period` refusal (as it is for a
/// prolongation); bad add-on values name the field at fault.
pub fn quote(
    plan: &PlanSpec,
    period: Period,
    currency: Currency,
    addons: &AddonValues,
    include_setup: bool,
) -> Result<Quote, crate::error::Error> {
    if !plan.sells(period, currency) {
        return Err(crate::error::Error::Refused {
            refusal: crate::error::Refusal::InvalidPeriod,
            message: format!(
                "plan `{}` is not sold for {} in {}",
                plan.name,
                period.as_str(),
                currency
            ),
        });
    }
    Ok(quote_addons(plan, period, currency, addons, include_setup)?)
}

fn quote_addons(
    plan: &PlanSpec,
    period: Period,
    currency: Currency,
    addons: &AddonValues,
    include_setup: bool,
) -> Result<Quote, FieldError> {
    let base = price_for(&plan.prices, period, currency).ok_or_else(|| {
        FieldError::new(
            "period",
            format!(
                "plan `{}` is not sold for {} in {}",
                plan.name,
                period.as_str(),
                currency
            ),
        )
    })?;
    let mut lines = vec![QuoteLine {
        description: format!("{} ({})", plan.name, period.as_str()),
        amount: base,
        recurring: true,
    }];
    let known: BTreeSet<&str> = plan.addons.iter().map(Addon::code).collect();
    if let Some(unknown) = addons.keys().find(|k| !known.contains(k.as_str())) {
        return Err(FieldError::new(
            "addons",
            format!("plan has no add-on `{unknown}`"),
        ));
    }
    let mut values = AddonValues::new();
    let missing_price = |code: &str| {
        FieldError::new(
            "addons",
            format!(
                "add-on `{code}` has no price for {} in {currency}",
                period.as_str()
            ),
        )
    };
    for addon in &plan.addons {
        let given = addons.get(addon.code());
        match addon {
            Addon::Boolean { code, name, prices } => {
                let on = match given {
                    None => false,
                    Some(serde_json::Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(FieldError::new(
                            "addons",
                            format!("add-on `{code}` takes true or false"),
                        ));
                    }
                };
                values.insert(code.clone(), serde_json::Value::Bool(on));
                if on {
                    let amount = if prices.is_empty() {
                        0
                    } else {
                        price_for(prices, period, currency).ok_or_else(|| missing_price(code))?
                    };
                    lines.push(QuoteLine {
                        description: name.clone(),
                        amount,
                        recurring: true,
                    });
                }
            }
            Addon::Integer {
                code,
                name,
                min,
                max,
                included,
                unit_prices,
            } => {
                let n = match given {
                    None => (*included).clamp(*min, *max),
                    Some(v) => v.as_i64().ok_or_else(|| {
                        FieldError::new("addons", format!("add-on `{code}` takes a whole number"))
                    })?,
                };
                if n < *min || n > *max {
                    return Err(FieldError::new(
                        "addons",
                        format!("add-on `{code}` must be between {min} and {max}, not {n}"),
                    ));
                }
                values.insert(code.clone(), serde_json::Value::from(n));
                let extra = (n - included).max(0);
                if extra > 0 {
                    let unit = if unit_prices.is_empty() {
                        0
                    } else {
                        price_for(unit_prices, period, currency)
                            .ok_or_else(|| missing_price(code))?
                    };
                    let amount = unit
                        .checked_mul(extra)
                        .filter(|a| *a <= MAX_AMOUNT)
                        .ok_or_else(|| {
                            FieldError::new("addons", format!("add-on `{code}` costs too much"))
                        })?;
                    lines.push(QuoteLine {
                        description: format!("{name} × {extra}"),
                        amount,
                        recurring: true,
                    });
                }
            }
            Addon::Enum {
                code,
                name,
                choices,
                default,
            } => {
                let value = match given {
                    None => default.clone(),
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(_) => {
                        return Err(FieldError::new(
                            "addons",
                            format!("add-on `{code}` takes one of its choices as a string"),
                        ));
                    }
                };
                let Some(value) = value else { continue };
                let choice = choices.iter().find(|c| c.value == value).ok_or_else(|| {
                    FieldError::new(
                        "addons",
                        format!("`{value}` is not a choice of add-on `{code}`"),
                    )
                })?;
                values.insert(code.clone(), serde_json::Value::String(value.clone()));
                let amount = if choice.prices.is_empty() {
                    0
                } else {
                    price_for(&choice.prices, period, currency)
                        .ok_or_else(|| missing_price(code))?
                };
                if amount > 0 {
                    lines.push(QuoteLine {
                        description: format!("{name}: {value}"),
                        amount,
                        recurring: true,
                    });
                }
            }
        }
    }
    let recurring: i64 = lines.iter().map(|l| l.amount).sum();
    let setup_fee = if include_setup {
        plan.setup_fees
            .iter()
            .find(|f| f.currency == currency)
            .map_or(0, |f| f.amount)
    } else {
        0
    };
    if setup_fee > 0 {
        lines.push(QuoteLine {
            description: "Setup fee".into(),
            amount: setup_fee,
            recurring: false,
        });
    }
    let total = recurring + setup_fee;
    if total > MAX_AMOUNT {
        return Err(FieldError::new(
            "addons",
            "the order costs more than Bursar can charge at once",
        ));
    }
    Ok(Quote {
        period,
        currency,
        lines,
        recurring,
        setup_fee,
        total,
        addons: values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> PlanSpec {
        serde_json::from_value(json!({
            "name": "Dedicated S",
            "product_type": "dedicated_server",
            "module": "manual",
            "prices": [
                {"period": "1m", "currency": "EUR", "amount": 5000},
                {"period": "12m", "currency": "EUR", "amount": 54000}
            ],
            "setup_fees": [{"currency": "EUR", "amount": 2500}],
            "addons": [
                {"kind": "boolean", "code": "backup", "name": "Backup", "prices": [{"period": "1m", "currency": "EUR", "amount": 700}]},
                {"kind": "integer", "code": "ips", "name": "IPv4", "min": 1, "max": 8, "included": 1,
                 "unit_prices": [{"period": "1m", "currency": "EUR", "amount": 300}, {"period": "12m", "currency": "EUR", "amount": 3000}]},
                {"kind": "enum", "code": "os", "name": "OS", "default": "debian",
                 "choices": [{"value": "debian"}, {"value": "windows", "prices": [{"period": "1m", "currency": "EUR", "amount": 2000}]}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn an_order_costs_period_price_plus_setup_fee_plus_add_ons() {
        let p = plan();
        p.validate().unwrap();
        let addons: AddonValues = [
            ("backup".into(), json!(true)),
            ("ips".into(), json!(3)),
            ("os".into(), json!("windows")),
        ]
        .into();
        let q = quote(&p, Period::Month, Currency::EUR, &addons, true).unwrap();
        assert_eq!(q.recurring, 5000 + 700 + 2 * 300 + 2000);
        assert_eq!(q.setup_fee, 2500);
        assert_eq!(q.total, q.recurring + 2500);
        let renewal = quote(&p, Period::Month, Currency::EUR, &addons, false).unwrap();
        assert_eq!(renewal.total, renewal.recurring);
    }

    #[test]
    fn defaults_fill_in_missing_add_ons() {
        let q = quote(
            &plan(),
            Period::Year,
            Currency::EUR,
            &AddonValues::new(),
            true,
        )
        .unwrap();
        assert_eq!(q.recurring, 54000);
        assert_eq!(q.addons["ips"], json!(1));
        assert_eq!(q.addons["os"], json!("debian"));
        assert_eq!(q.addons["backup"], json!(false));
    }

    #[test]
    fn out_of_range_or_unknown_choices_are_refused() {
        let p = plan();
        let bad = |k: &str, v: serde_json::Value| {
            quote(
                &p,
                Period::Month,
                Currency::EUR,
                &[(k.to_owned(), v)].into(),
                true,
            )
        };
        assert!(bad("ips", json!(9)).is_err());
        assert!(bad("ips", json!(0)).is_err());
        assert!(bad("ips", json!("two")).is_err());
        assert!(bad("os", json!("freebsd")).is_err());
        assert!(bad("backup", json!(1)).is_err());
        assert!(bad("colour", json!("red")).is_err());
        assert!(
            quote(
                &p,
                Period::Quarter,
                Currency::EUR,
                &AddonValues::new(),
                true
            )
            .is_err()
        );
        assert!(quote(&p, Period::Month, Currency::USD, &AddonValues::new(), true).is_err());
        // Backup has no yearly price: ordering it yearly is an error, not free.
        assert!(
            quote(
                &p,
                Period::Year,
                Currency::EUR,
                &[("backup".to_owned(), json!(true))].into(),
                true
            )
            .is_err()
        );
    }

    #[test]
    fn plan_validation_catches_duplicates_and_negative_amounts() {
        let mut p = plan();
        p.prices.push(Price {
            period: Period::Month,
            currency: Currency::EUR,
            amount: 1,
        });
        assert_eq!(p.validate().unwrap_err().field, "prices");
        let mut p = plan();
        p.setup_fees[0].amount = -1;
        assert!(p.validate().is_err());
        let mut p = plan();
        p.addons.push(p.addons[0].clone());
        assert_eq!(p.validate().unwrap_err().field, "addons");
    }
}
