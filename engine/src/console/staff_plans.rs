//! The staff console's catalog: the plans, and the plan editor. A plan is
//! built in two steps: pick the module instance and the currencies, then
//! the form shows that module's own catalog (configurations, OS templates,
//! add-ons such as scripts) beside the prices per period and currency,
//! setup fees, customer actions and the change list. Saving goes through
//! the same plan service as the API, which checks what the module needs.

use std::collections::{BTreeMap, BTreeSet};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::act::{self, FormRequest};
use super::auth::StaffSession;
use super::auth::{self, SessionCtx};
use super::portal::CsrfForm;
use super::staff::who;
use super::view;
use crate::api::AppState;
use crate::api::idempotency::Reply;
use crate::api::policy::Action;
use crate::api::views::PlanView;
use crate::calendar::{Period, PeriodUnit};
use crate::catalog::{
    Addon, AddonChoice, CustomerAction, Fee, PlanSpec, PlanStatus, Price, ProductType,
};
use crate::error::Error;
use crate::money::{Currency, Money};
use crate::store::catalog as plans_repo;

const PRODUCT_TYPES: [&str; 5] = [
    "dedicated_server",
    "vps",
    "domain",
    "ssl_certificate",
    "generic",
];

#[derive(Serialize)]
struct PlanRow {
    id: String,
    name: String,
    module: String,
    product_type: &'static str,
    status: &'static str,
    prices: String,
}

pub async fn list(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    plans_page(&state, &s, String::new(), StatusCode::OK).await
}

async fn plans_page(
    state: &AppState,
    s: &SessionCtx,
    notice: String,
    status: StatusCode,
) -> Response {
    if s.principal(Action::PlanRead).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        all_plans(r.conn()).await
    }
    .await;
    let plans = match loaded {
        Ok(p) => p,
        Err(e) => return view::failed(e),
    };
    let rows: Vec<PlanRow> = plans
        .into_iter()
        .map(|p| PlanRow {
            prices: p
                .spec
                .prices
                .iter()
                .map(|pr| {
                    format!(
                        "{} {}",
                        view::money(pr.amount, pr.currency),
                        pr.period.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            id: p.id,
            name: p.spec.name,
            module: p.spec.module,
            product_type: p.spec.product_type.as_str(),
            status: match p.status {
                PlanStatus::Active => "active",
                PlanStatus::Archived => "archived",
            },
        })
        .collect();
    let mut modules = state.modules.names();
    modules.sort();
    view::page(
        status,
        "staff_plans.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            plans => rows, notice, modules,
            currencies => state.console.currency.clone(),
            may_write => s.principal(Action::PlanWrite).is_some(),
        },
    )
}

async fn all_plans(mut c: crate::store::Conn<'_>) -> Result<Vec<crate::catalog::Plan>, Error> {
    let mut plans = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = plans_repo::list(c.reborrow(), None, after.as_deref(), 500).await?;
        plans.extend(page.items);
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => return Ok(plans),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct NewQuery {
    #[serde(default)]
    module: String,
    /// Comma-separated ISO codes.
    #[serde(default)]
    currencies: String,
}

fn currencies_of(text: &str) -> Result<Vec<Currency>, String> {
    let mut out: Vec<Currency> = vec![];
    for code in text
        .split([',', ' '])
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let c = Currency::from_code(&code.to_uppercase())
            .map_err(|_| format!("`{code}` is not a currency code"))?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err("Name at least one currency.".into());
    }
    Ok(out)
}

/// Step two: the form for a plan on `module`, with its catalog.
pub async fn new_form(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Query(q): Query<NewQuery>,
) -> Response {
    if s.principal(Action::PlanWrite).is_none() {
        return view::forbidden();
    }
    let module = q.module.trim();
    if module != "manual" && !state.modules.contains(module) {
        return plans_page(
            &state,
            &s,
            format!("There is no module instance `{module}`."),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let currencies = match currencies_of(&q.currencies) {
        Ok(c) => c,
        Err(e) => return plans_page(&state, &s, e, StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    editor(&state, &s, module, &currencies, None).await
}

#[derive(Deserialize, Default)]
pub struct EditQuery {
    /// Currencies to add to those the plan has, comma-separated.
    #[serde(default)]
    currencies: String,
}

/// The form for an existing plan, filled with what it is now.
pub async fn edit_form(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Query(q): Query<EditQuery>,
) -> Response {
    if s.principal(Action::PlanWrite).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        plans_repo::get(r.conn(), &id).await
    }
    .await;
    let plan = match loaded {
        Ok(p) => p,
        Err(Error::NotFound { .. }) => return view::not_found(),
        Err(e) => return view::failed(e),
    };
    let mut currencies: Vec<Currency> = plan
        .spec
        .prices
        .iter()
        .map(|p| p.currency)
        .chain(plan.spec.setup_fees.iter().map(|f| f.currency))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !q.currencies.trim().is_empty() {
        match currencies_of(&q.currencies) {
            Ok(more) => {
                for c in more {
                    if !currencies.contains(&c) {
                        currencies.push(c);
                    }
                }
            }
            Err(e) => {
                return view::message(StatusCode::UNPROCESSABLE_ENTITY, "Not shown", &e);
            }
        }
    }
    if currencies.is_empty() {
        currencies = currencies_of(&state.console.currency).unwrap_or_default();
    }
    let module = plan.spec.module.clone();
    editor(&state, &s, &module, &currencies, Some(&plan)).await
}

/// A text field of the form with its label and value.
#[derive(Serialize)]
struct Cell {
    field: String,
    label: String,
    value: String,
}

/// A choice from the module's catalog (or one the plan has that the
/// catalog no longer lists).
#[derive(Serialize)]
struct Choice {
    value: String,
    name: String,
    checked: bool,
    cells: Vec<Cell>,
}

/// A counted add-on (such as extra IP addresses): each unit above the
/// included ones costs a monthly price.
#[derive(Serialize)]
struct CountedRow {
    index: usize,
    code: String,
    name: String,
    min: i64,
    max: String,
    included: i64,
    cells: Vec<Cell>,
}

/// An add-on the form cannot show field by field (prices that are not a
/// monthly price times the months, choices with prices of their own): it is
/// kept as it is unless unticked.
#[derive(Serialize)]
struct Kept {
    code: String,
    name: String,
    json: String,
}

fn decimal(amount: i64, currency: Currency) -> String {
    Money::new(amount, currency)
        .map(Money::to_decimal_string)
        .unwrap_or_default()
}

/// Fields for a monthly price in each currency, named `{prefix}_{CUR}`.
fn monthly_cells(
    prefix: &str,
    what: &str,
    currencies: &[Currency],
    monthly: &BTreeMap<Currency, i64>,
) -> Vec<Cell> {
    currencies
        .iter()
        .map(|&c| Cell {
            field: format!("{prefix}_{}", c.code()),
            label: format!("{what}, a month in {} (empty: free)", c.code()),
            value: monthly.get(&c).map(|a| decimal(*a, c)).unwrap_or_default(),
        })
        .collect()
}

/// What the form shows for an existing plan, add-on by add-on.
#[derive(Default)]
struct Shown {
    os: Vec<(String, String)>,
    os_default: Option<String>,
    addons: Vec<(String, String, BTreeMap<Currency, i64>)>,
    counted: Vec<(Addon, BTreeMap<Currency, i64>)>,
    kept: Vec<Addon>,
}

fn shown(spec: &PlanSpec) -> Shown {
    let mut out = Shown::default();
    for addon in &spec.addons {
        match addon {
            Addon::Enum {
                code,
                choices,
                default,
                ..
            } if code == "os" && choices.iter().all(|c| c.prices.is_empty()) => {
                out.os_default = default.clone();
                out.os = choices
                    .iter()
                    .map(|c| (c.value.clone(), c.name.clone()))
                    .collect();
            }
            Addon::Boolean { code, name, prices } => match monthly_of(prices, &spec.prices) {
                Some(m) => out.addons.push((code.clone(), name.clone(), m)),
                None => out.kept.push(addon.clone()),
            },
            Addon::Integer { unit_prices, .. } => match monthly_of(unit_prices, &spec.prices) {
                Some(m) => out.counted.push((addon.clone(), m)),
                None => out.kept.push(addon.clone()),
            },
            _ => out.kept.push(addon.clone()),
        }
    }
    if let Some(os) = spec.module_settings.get("os_template") {
        out.os = vec![(os.clone(), os.clone())];
    }
    out
}

async fn editor(
    state: &AppState,
    s: &SessionCtx,
    module: &str,
    currencies: &[Currency],
    plan: Option<&crate::catalog::Plan>,
) -> Response {
    let (catalog, catalog_error) = match state.plugins.catalog(module).await {
        None => (vec![], None),
        Some(Ok(items)) => (items, None),
        Some(Err(crate::services::module::ModuleError::Unsupported(_))) => (vec![], None),
        Some(Err(e)) => (vec![], Some(format!("{} — {e}", e.kind()))),
    };
    let all = async {
        let mut r = state.store.reader().await?;
        all_plans(r.conn()).await
    }
    .await;
    let all = match all {
        Ok(p) => p,
        Err(e) => return view::failed(e),
    };
    let spec = plan.map(|p| &p.spec);
    let shown = spec.map(shown).unwrap_or_default();
    let settings = |key: &str| spec.and_then(|s| s.module_settings.get(key)).cloned();

    let price_of = |period: Period, c: Currency| {
        spec.and_then(|s| {
            s.prices
                .iter()
                .find(|p| p.period == period && p.currency == c)
        })
        .map(|p| decimal(p.amount, c))
        .unwrap_or_default()
    };
    let mut price_rows: Vec<Value> = Period::ALL
        .iter()
        .map(|&p| {
            let cells: Vec<Cell> = currencies
                .iter()
                .map(|&c| Cell {
                    field: format!("price_{}_{}", p.as_str(), c.code()),
                    label: format!("{} in {}", p.as_str(), c.code()),
                    value: price_of(p, c),
                })
                .collect();
            context! { label => p.as_str(), cells }
        })
        .collect();
    let setup: Vec<Cell> = currencies
        .iter()
        .map(|&c| Cell {
            field: format!("setup_{}", c.code()),
            label: format!("setup fee in {}", c.code()),
            value: spec
                .and_then(|s| s.setup_fees.iter().find(|f| f.currency == c))
                .map(|f| decimal(f.amount, c))
                .unwrap_or_default(),
        })
        .collect();
    price_rows.push(context! { label => "setup fee", cells => setup });

    // The configuration: the catalog's, and the plan's own if the catalog
    // no longer lists it.
    let saved_configuration = settings("configuration")
        .map(|c| format!("{c}|{}", settings("location").unwrap_or_default()));
    let mut configurations: Vec<Choice> = catalog
        .iter()
        .filter(|i| i.kind == "configuration")
        .map(|i| {
            let value = format!(
                "{}|{}",
                i.details
                    .get("configuration")
                    .cloned()
                    .unwrap_or_else(|| i.id.clone()),
                i.details.get("location").cloned().unwrap_or_default()
            );
            let name = match i.details.get("free_server_count") {
                Some(free) => format!("{} — {free} free", i.name),
                None => i.name.clone(),
            };
            Choice {
                checked: saved_configuration.as_ref() == Some(&value),
                value,
                name,
                cells: vec![],
            }
        })
        .collect();
    if let Some(saved) = saved_configuration
        .as_ref()
        .filter(|v| !configurations.iter().any(|c| &&c.value == v))
    {
        configurations.push(Choice {
            value: saved.clone(),
            name: format!(
                "{} (as saved; the module's catalog does not list it now)",
                saved.trim_end_matches('|')
            ),
            checked: true,
            cells: vec![],
        });
    }
    if plan.is_none()
        && let Some(first) = configurations.first_mut()
    {
        first.checked = true;
    }

    let mut os_templates: Vec<Choice> = catalog
        .iter()
        .filter(|i| i.kind == "os-template")
        .map(|i| Choice {
            checked: shown.os.iter().any(|(v, _)| v == &i.id),
            value: i.id.clone(),
            name: i.name.clone(),
            cells: vec![],
        })
        .collect();
    for (value, name) in &shown.os {
        if !os_templates.iter().any(|o| &o.value == value) {
            os_templates.push(Choice {
                value: value.clone(),
                name: if name.is_empty() {
                    value.clone()
                } else {
                    name.clone()
                },
                checked: true,
                cells: vec![],
            });
        }
    }

    let none = BTreeMap::new();
    let mut addons: Vec<Choice> = catalog
        .iter()
        .filter(|i| i.kind == "addon")
        .map(|i| {
            let saved = shown.addons.iter().find(|(code, ..)| code == &i.id);
            Choice {
                checked: saved.is_some(),
                cells: monthly_cells(
                    &format!("addon_price_{}", i.id),
                    &i.name,
                    currencies,
                    saved.map(|(.., m)| m).unwrap_or(&none),
                ),
                value: i.id.clone(),
                name: i.name.clone(),
            }
        })
        .collect();
    for (code, name, monthly) in &shown.addons {
        if !addons.iter().any(|a| &a.value == code) {
            addons.push(Choice {
                value: code.clone(),
                name: name.clone(),
                checked: true,
                cells: monthly_cells(&format!("addon_price_{code}"), name, currencies, monthly),
            });
        }
    }

    let mut counted: Vec<CountedRow> = shown
        .counted
        .iter()
        .enumerate()
        .filter_map(|(index, (addon, monthly))| match addon {
            Addon::Integer {
                code,
                name,
                min,
                max,
                included,
                ..
            } => Some(CountedRow {
                index,
                code: code.clone(),
                name: name.clone(),
                min: *min,
                max: max.to_string(),
                included: *included,
                cells: monthly_cells(&format!("count_price_{index}"), name, currencies, monthly),
            }),
            _ => None,
        })
        .collect();
    let blank = counted.len();
    counted.push(CountedRow {
        index: blank,
        code: String::new(),
        name: String::new(),
        min: 0,
        max: String::new(),
        included: 0,
        cells: monthly_cells(
            &format!("count_price_{blank}"),
            "each unit above the included",
            currencies,
            &none,
        ),
    });
    let kept: Vec<Kept> = shown
        .kept
        .iter()
        .map(|a| Kept {
            code: a.code().to_owned(),
            name: match a {
                Addon::Boolean { name, .. }
                | Addon::Integer { name, .. }
                | Addon::Enum { name, .. } => name.clone(),
            },
            json: serde_json::to_string(a).unwrap_or_default(),
        })
        .collect();

    let settings_text = spec
        .map(|s| {
            s.module_settings
                .iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "configuration" | "location" | "os_template")
                })
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>()
        })
        .unwrap_or_default();
    let actions: Vec<Value> = [
        (CustomerAction::Prolong, "prolong", "prolong"),
        (CustomerAction::ChangePlan, "change_plan", "change plan"),
        (CustomerAction::Close, "close", "close"),
    ]
    .into_iter()
    .map(|(a, value, label)| {
        context! { value, label, checked => spec.is_none_or(|s| s.customer_actions.contains(&a)) }
    })
    .collect();
    let own_id = plan.map(|p| p.id.as_str());
    let others: Vec<Value> = all
        .into_iter()
        .filter(|p| p.spec.module == module && p.status == PlanStatus::Active)
        .filter(|p| Some(p.id.as_str()) != own_id)
        .map(|p| {
            let selected = spec.is_some_and(|s| s.change_to.contains(&p.id));
            context! { id => p.id, name => p.spec.name, selected }
        })
        .collect();
    view::ok(
        "staff_plan_form.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            module, plan_id => own_id,
            action => own_id.map(|id| format!("/staff/plans/{id}")).unwrap_or_else(|| "/staff/plans".into()),
            updated_at => plan.map(|p| p.updated_at.to_rfc3339()),
            name => spec.map(|s| s.name.clone()).unwrap_or_default(),
            product_type => spec.map(|s| s.product_type.as_str()).unwrap_or("dedicated_server"),
            currencies_text => currencies.iter().map(|c| c.code()).collect::<Vec<_>>().join(","),
            currencies => currencies.iter().map(|c| c.code()).collect::<Vec<_>>(),
            price_rows, product_types => PRODUCT_TYPES,
            configurations, os_templates, addons, counted, kept,
            os_default => shown.os_default.clone(),
            settings => settings_text,
            auto_renew => spec.is_none_or(|s| s.auto_renew),
            grace_days => spec.map_or(0, |s| s.grace_days),
            deletion_days => spec.map_or(30, |s| s.deletion_days),
            actions, catalog_error, others,
            request_id => auth::random_token(),
        },
    )
}

/// What an add-on costs a month in each currency, when its prices are
/// exactly that times the months of each period the plan sells (as the
/// editor writes them); `None` when they have another shape.
fn monthly_of(prices: &[Price], plan_prices: &[Price]) -> Option<BTreeMap<Currency, i64>> {
    let mut out = BTreeMap::new();
    for p in prices {
        if out.contains_key(&p.currency) {
            continue;
        }
        let months = match p.period.unit() {
            PeriodUnit::Month => i64::from(p.period.units()),
            PeriodUnit::Day => return None,
        };
        if p.amount % months != 0 {
            return None;
        }
        out.insert(p.currency, p.amount / months);
    }
    let mut again = vec![];
    for (&currency, &monthly) in &out {
        again.extend(per_period(monthly, currency, plan_prices).ok()?);
    }
    let key = |p: &Price| (p.currency, p.period.as_str(), p.amount);
    let mut a: Vec<_> = again.iter().map(key).collect();
    let mut b: Vec<_> = prices.iter().map(key).collect();
    a.sort();
    b.sort();
    (a == b).then_some(out)
}

/// A monthly price, times the months of each monthly period the plan sells
/// in `currency` (days are not priced per month: an add-on is free there).
fn per_period(
    monthly: i64,
    currency: Currency,
    plan_prices: &[Price],
) -> Result<Vec<Price>, String> {
    plan_prices
        .iter()
        .filter(|p| p.currency == currency && p.period.unit() == PeriodUnit::Month)
        .map(|p| {
            monthly
                .checked_mul(i64::from(p.period.units()))
                .map(|amount| Price {
                    period: p.period,
                    currency,
                    amount,
                })
                .ok_or_else(|| format!("{} a month is too large", decimal(monthly, currency)))
        })
        .collect()
}

/// The posted form as fields, repeated ones kept in order.
struct Fields(Vec<(String, String)>);

impl Fields {
    fn one(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }
    fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .collect()
    }
}

fn amount(text: &str, currency: Currency, what: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match Money::parse(text, currency) {
        Ok(m) if m.minor() >= 0 => Ok(Some(m.minor())),
        Ok(_) => Err(format!("{what}: an amount cannot be negative")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// The plan the form describes.
fn spec_of(f: &Fields) -> Result<PlanSpec, String> {
    let currencies = currencies_of(f.one("currencies"))?;
    let product_type = ProductType::parse(f.one("product_type")).ok_or("Choose a product type.")?;
    let mut prices = vec![];
    let mut setup_fees = vec![];
    for &currency in &currencies {
        for period in Period::ALL {
            let field = format!("price_{}_{}", period.as_str(), currency.code());
            if let Some(a) = amount(
                f.one(&field),
                currency,
                &format!("the {} price in {}", period.as_str(), currency.code()),
            )? {
                prices.push(Price {
                    period,
                    currency,
                    amount: a,
                });
            }
        }
        let setup = amount(
            f.one(&format!("setup_{}", currency.code())),
            currency,
            "the setup fee",
        )?;
        if let Some(a) = setup.filter(|a| *a > 0) {
            setup_fees.push(Fee {
                currency,
                amount: a,
            });
        }
    }
    let mut module_settings = BTreeMap::new();
    if let Some(cfg) = f.all("configuration").first().filter(|c| !c.is_empty()) {
        // `configuration|location`, as the catalog named them.
        let (configuration, location) = cfg.split_once('|').unwrap_or((cfg, ""));
        module_settings.insert("configuration".to_owned(), configuration.to_owned());
        if !location.is_empty() {
            module_settings.insert("location".to_owned(), location.to_owned());
        }
    }
    for line in f
        .one("settings")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                module_settings.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            _ => {
                return Err(format!(
                    "`{line}`: write module settings as key=value, one per line"
                ));
            }
        }
    }
    let mut addons = vec![];
    let os = f.all("os");
    match os.as_slice() {
        [] => {}
        [one] => {
            module_settings.insert("os_template".to_owned(), (*one).to_owned());
        }
        several => addons.push(Addon::Enum {
            code: "os".into(),
            name: "Operating system".into(),
            choices: several
                .iter()
                .map(|id| AddonChoice {
                    value: (*id).to_owned(),
                    name: f.one(&format!("os_name_{id}")).to_owned(),
                    prices: vec![],
                })
                .collect(),
            default: Some(
                several
                    .iter()
                    .find(|id| **id == f.one("os_default"))
                    .unwrap_or(&several[0])
                    .to_string(),
            ),
        }),
    }
    for id in f.all("addon") {
        let mut addon_prices = vec![];
        for &currency in &currencies {
            let field = format!("addon_price_{id}_{}", currency.code());
            if let Some(a) = amount(f.one(&field), currency, &format!("the price of {id}"))? {
                addon_prices.extend(per_period(a, currency, &prices)?);
            }
        }
        addons.push(Addon::Boolean {
            code: id.to_owned(),
            name: f.one(&format!("addon_name_{id}")).to_owned(),
            prices: addon_prices,
        });
    }
    for row in f.all("count_row") {
        let field = |name: &str| f.one(&format!("count_{name}_{row}"));
        let code = field("code");
        if code.is_empty() {
            continue;
        }
        let whole = |name: &str, default: Option<i64>| -> Result<i64, String> {
            match (field(name), default) {
                ("", Some(d)) => Ok(d),
                (t, _) => t
                    .parse()
                    .map_err(|_| format!("{code}: the {name} count must be a whole number")),
            }
        };
        let mut unit_prices = vec![];
        for &currency in &currencies {
            let text = f.one(&format!("count_price_{row}_{}", currency.code()));
            if let Some(a) = amount(text, currency, &format!("the price of {code}"))? {
                unit_prices.extend(per_period(a, currency, &prices)?);
            }
        }
        addons.push(Addon::Integer {
            code: code.to_owned(),
            name: field("name").to_owned(),
            min: whole("min", Some(0))?,
            max: whole("max", None)?,
            included: whole("included", Some(0))?,
            unit_prices,
        });
    }
    for json in f.all("keep_addon") {
        addons.push(
            serde_json::from_str(json)
                .map_err(|e| format!("an add-on kept as it was is not readable: {e}"))?,
        );
    }
    let customer_actions: BTreeSet<CustomerAction> = f
        .all("action")
        .into_iter()
        .filter_map(|a| match a {
            "prolong" => Some(CustomerAction::Prolong),
            "change_plan" => Some(CustomerAction::ChangePlan),
            "close" => Some(CustomerAction::Close),
            _ => None,
        })
        .collect();
    let days = |name: &str, default: u32| -> Result<u32, String> {
        match f.one(name) {
            "" => Ok(default),
            t => t
                .parse()
                .map_err(|_| format!("{name}: a whole number of days")),
        }
    };
    Ok(PlanSpec {
        name: f.one("name").to_owned(),
        product_type,
        module: f.one("module").to_owned(),
        module_settings,
        prices,
        setup_fees,
        addons,
        auto_renew: f.one("auto_renew") == "yes",
        grace_days: days("grace_days", 0)?,
        deletion_days: days("deletion_days", 30)?,
        customer_actions,
        change_to: f
            .all("change_to")
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Saves a new plan: the API's `createPlan` service.
pub async fn create(
    State(state): State<AppState>,
    session: StaffSession,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    save(state, session, None, Fields(fields)).await
}

/// Saves an edited plan: the API's `updatePlan` service, refused when
/// someone saved the plan since this form was shown.
pub async fn update(
    State(state): State<AppState>,
    session: StaffSession,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    save(state, session, Some(id), Fields(fields)).await
}

async fn save(
    state: AppState,
    StaffSession(s): StaffSession,
    id: Option<String>,
    f: Fields,
) -> Response {
    if !s.csrf_ok(f.one("csrf")) || !auth::request_id_ok(f.one("request_id")) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::PlanWrite) else {
        return view::forbidden();
    };
    let spec = match spec_of(&f) {
        Ok(spec) => spec,
        Err(e) => {
            return view::message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not saved",
                &format!("{e} Go back and correct it."),
            );
        }
    };
    let fingerprint = format!(
        "{}|{}",
        id.as_deref().unwrap_or(""),
        serde_json::to_string(&spec).unwrap_or_default()
    );
    let request = FormRequest::new("plan", f.one("request_id"), &fingerprint);
    let (modules, now) = (state.modules.clone(), state.clock.now());
    let seen = f.one("updated_at").to_owned();
    let done = request
        .run(&state, &principal, |tx| {
            Box::pin(async move {
                let plan = match id {
                    None => crate::plans::create(tx.conn(), &modules, spec, now).await?,
                    Some(id) => {
                        let current = plans_repo::get(tx.conn(), &id).await?;
                        if current.updated_at.to_rfc3339() != seen {
                            return Err(Error::Conflict(format!(
                                "plan {id} was saved by someone else since this form was \
                                 opened; open it again to see their change"
                            ))
                            .into());
                        }
                        crate::plans::update(tx.conn(), &modules, &id, spec, now).await?
                    }
                };
                Reply::new(StatusCode::OK, PlanView::from(plan))
            })
        })
        .await;
    match done {
        Ok(_) => view::see_other("/staff/plans"),
        Err(p) => match act::refusal(&p) {
            Some((StatusCode::NOT_FOUND, _)) => view::not_found(),
            Some((status, detail)) => view::message(
                status,
                "Not saved",
                &format!("{detail}. Go back and correct it."),
            ),
            None => view::failed(p.detail),
        },
    }
}

/// Stops selling a plan (services on it keep it).
pub async fn archive(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::PlanWrite).is_none() {
        return view::forbidden();
    }
    let done = async {
        let mut tx = state.store.begin().await?;
        let archived = crate::plans::archive(tx.conn(), &id, state.clock.now()).await;
        tx.keep_if(archived.map(|_| true)).await
    }
    .await;
    match done {
        Ok(_) => view::see_other("/staff/plans"),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e @ (Error::Conflict(_) | Error::Refused { .. })) => {
            plans_page(&state, &s, e.to_string(), StatusCode::CONFLICT).await
        }
        Err(e) => view::failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(period: Period, currency: Currency, amount: i64) -> Price {
        Price {
            period,
            currency,
            amount,
        }
    }

    #[test]
    fn an_addon_priced_by_the_month_shows_its_monthly_price_and_any_other_shape_is_kept() {
        let eur = Currency::from_code("EUR").unwrap();
        let usd = Currency::from_code("USD").unwrap();
        let plan = vec![
            price(Period::Day, eur, 500),
            price(Period::Month, eur, 9_900),
            price(Period::Quarter, eur, 28_000),
            price(Period::Month, usd, 10_900),
        ];
        let addon = per_period(200, eur, &plan).unwrap();
        assert_eq!(
            addon,
            vec![
                price(Period::Month, eur, 200),
                price(Period::Quarter, eur, 600)
            ],
            "months only, times their count"
        );
        assert_eq!(
            monthly_of(&addon, &plan),
            Some(BTreeMap::from([(eur, 200)]))
        );
        let mut both = addon.clone();
        both.extend(per_period(250, usd, &plan).unwrap());
        assert_eq!(
            monthly_of(&both, &plan),
            Some(BTreeMap::from([(eur, 200), (usd, 250)]))
        );
        assert_eq!(monthly_of(&[], &plan), Some(BTreeMap::new()), "free");
        let discounted = vec![
            price(Period::Month, eur, 200),
            price(Period::Quarter, eur, 500),
        ];
        assert_eq!(monthly_of(&discounted, &plan), None, "a cheaper quarter");
        let partial = vec![price(Period::Month, eur, 200)];
        assert_eq!(monthly_of(&partial, &plan), None, "no quarter price");
        assert_eq!(monthly_of(&[price(Period::Day, eur, 10)], &plan), None);
        assert!(per_period(i64::MAX, eur, &plan).is_err(), "overflow");
    }

    #[test]
    fn a_plans_addons_are_split_into_what_the_form_shows_and_what_it_keeps() {
        let eur = Currency::from_code("EUR").unwrap();
        let prices = vec![price(Period::Month, eur, 9_900)];
        let spec = PlanSpec {
            name: "X".into(),
            product_type: ProductType::DedicatedServer,
            module: "dci".into(),
            module_settings: BTreeMap::new(),
            prices: prices.clone(),
            setup_fees: vec![],
            addons: vec![
                Addon::Enum {
                    code: "os".into(),
                    name: "OS".into(),
                    choices: vec![AddonChoice {
                        value: "4".into(),
                        name: "Debian".into(),
                        prices: vec![],
                    }],
                    default: None,
                },
                Addon::Boolean {
                    code: "backup".into(),
                    name: "Backup".into(),
                    prices: vec![price(Period::Month, eur, 300)],
                },
                Addon::Integer {
                    code: "extra_ips".into(),
                    name: "IPs".into(),
                    min: 0,
                    max: 4,
                    included: 1,
                    unit_prices: vec![price(Period::Month, eur, 150)],
                },
                Addon::Enum {
                    code: "disk".into(),
                    name: "Disk".into(),
                    choices: vec![AddonChoice {
                        value: "ssd".into(),
                        name: "SSD".into(),
                        prices: vec![price(Period::Month, eur, 500)],
                    }],
                    default: None,
                },
                Addon::Boolean {
                    code: "odd".into(),
                    name: "Odd".into(),
                    prices: vec![price(Period::Day, eur, 1)],
                },
            ],
            auto_renew: true,
            grace_days: 0,
            deletion_days: 30,
            customer_actions: BTreeSet::new(),
            change_to: BTreeSet::new(),
        };
        let s = shown(&spec);
        assert_eq!(s.os, vec![("4".to_owned(), "Debian".to_owned())]);
        assert_eq!(s.addons.len(), 1);
        assert_eq!(s.addons[0].2, BTreeMap::from([(eur, 300)]));
        assert_eq!(s.counted.len(), 1);
        assert_eq!(s.counted[0].1, BTreeMap::from([(eur, 150)]));
        let kept: Vec<&str> = s.kept.iter().map(Addon::code).collect();
        assert_eq!(kept, ["disk", "odd"]);
    }
}
