//! The OpenAPI document as clients get it: what utoipa derives from the
//! handlers, completed with the error contract (every problem an operation
//! can answer with, as a response with the `Problem` schema) and the limits
//! of this deployment's configuration.
//!
//! What each operation can answer follows from its shape (a secured
//! operation can answer 401 and 403, one with a path parameter 404, one with
//! a body 413, 415 and 422, …) plus the domain refusals listed for it in
//! [`REFUSALS`]. A test keeps that table and the operations in step.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::api::ApiDoc;
use crate::api::error::{PROBLEM_JSON, ProblemKind};
use crate::config::ApiConfig;

use ProblemKind as K;

/// The domain refusals of each operation, beyond what its shape implies.
pub const REFUSALS: &[(&str, &[ProblemKind])] = &[
    ("listAccounts", &[]),
    ("createAccount", &[K::Conflict]),
    ("getAccount", &[]),
    ("updateAccount", &[K::Conflict, K::InvalidField]),
    ("listApiKeys", &[]),
    (
        "createApiKey",
        &[K::QuotaExceeded, K::AccountNotActive, K::InvalidField],
    ),
    ("revokeApiKey", &[K::Conflict]),
    ("getBalance", &[]),
    (
        "adjustBalance",
        &[
            K::InsufficientFunds,
            K::CurrencyMismatch,
            K::InvalidTransaction,
        ],
    ),
    ("listLedgerEntries", &[]),
    ("listInvoices", &[]),
    ("getInvoice", &[]),
    ("getInvoiceHtml", &[]),
    ("getInvoicePdf", &[]),
    ("getOpenApi", &[]),
    ("listOperations", &[]),
    ("getOperation", &[]),
    ("completeOperation", &[K::Conflict, K::InsufficientFunds]),
    ("retryOperation", &[K::Conflict]),
    (
        "createOrder",
        &[
            K::NotFound,
            K::InsufficientFunds,
            K::AccountNotActive,
            K::PlanArchived,
            K::InvalidPeriod,
            K::CurrencyMismatch,
            K::QuotaExceeded,
        ],
    ),
    ("listPayments", &[]),
    (
        "createPayment",
        &[
            K::NotFound,
            K::AccountNotActive,
            K::QuotaExceeded,
            K::CurrencyMismatch,
            K::NotAnUnpaidOrder,
            K::AmountMismatch,
            K::GatewayFailed,
            K::PluginFailed,
        ],
    ),
    ("reconcilePayments", &[]),
    ("getPayment", &[]),
    ("markPaymentPaid", &[K::Conflict, K::AmountMismatch]),
    (
        "refundPayment",
        &[
            K::Conflict,
            K::InsufficientFunds,
            K::RefundExceedsPayment,
            K::GatewayFailed,
            K::PluginFailed,
        ],
    ),
    ("listPlans", &[]),
    ("createPlan", &[K::NotFound, K::Conflict]),
    ("getPlan", &[]),
    ("updatePlan", &[K::Conflict, K::PlanInUse]),
    ("archivePlan", &[K::Conflict]),
    ("listPlugins", &[]),
    ("getPluginCatalog", &[K::NoCatalog, K::PluginFailed]),
    ("checkPlugin", &[K::PluginFailed]),
    ("listServices", &[]),
    ("getService", &[]),
    (
        "changeServicePlan",
        &[
            K::NotFound,
            K::InsufficientFunds,
            K::IllegalTransition,
            K::Conflict,
            K::PlanArchived,
            K::InvalidPeriod,
            K::PlanChangeNotAllowed,
            K::CurrencyMismatch,
        ],
    ),
    ("closeService", &[K::IllegalTransition, K::Conflict]),
    ("getServiceCredentials", &[K::RateLimited]),
    ("listServiceEvents", &[]),
    (
        "migrateService",
        &[
            K::NotFound,
            K::InsufficientFunds,
            K::IllegalTransition,
            K::Conflict,
            K::PlanArchived,
            K::InvalidPeriod,
            K::CurrencyMismatch,
        ],
    ),
    ("listServiceOperations", &[]),
    (
        "prolongService",
        &[
            K::InsufficientFunds,
            K::IllegalTransition,
            K::Conflict,
            K::InvalidPeriod,
            K::PlanArchived,
        ],
    ),
    ("resumeService", &[K::IllegalTransition, K::Conflict]),
    ("setServiceAutoRenew", &[K::Conflict]),
    ("suspendService", &[K::IllegalTransition, K::Conflict]),
    (
        "syncService",
        &[K::IllegalTransition, K::Conflict, K::SyncUnsupported],
    ),
    ("listStaffKeys", &[]),
    ("createStaffKey", &[K::QuotaExceeded]),
    ("revokeStaffKey", &[K::Conflict]),
    ("listTaxRules", &[]),
    ("createTaxRule", &[K::Conflict]),
    (
        "gatewayCallback",
        &[
            K::CallbackRefused,
            K::RateLimited,
            K::HeadersTooLarge,
            K::Busy,
            K::CallbackFailed,
            K::CallbackTimeout,
        ],
    ),
];

/// The document served at `/api/v1/openapi.json` and printed by
/// `bursar openapi`, for this API configuration and the largest payment
/// it accepts (`[payments] max_amount`).
pub fn document(api: &ApiConfig, max_payment: i64) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    complete(&mut doc, api);
    constrain(&mut doc["components"]["schemas"], max_payment);
    binary_pdfs(&mut doc["paths"]);
    doc
}

/// A PDF answer is bytes (OpenAPI 3.1: a string with its media type), not
/// the array of integers `Vec<u8>` would say.
fn binary_pdfs(paths: &mut Value) {
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let Some(ok) = op.pointer_mut("/responses/200/content") else {
                continue;
            };
            if let Some(pdf) = ok.get_mut("application/pdf").filter(|p| p.is_object()) {
                pdf["schema"] = json!({"type": "string", "contentMediaType": "application/pdf"});
            }
        }
    }
}

/// Free text: 1 to `max` characters, not only spaces and controls
/// ([`crate::accounts::check_text`]).
fn text(max: usize) -> Value {
    json!({"minLength": 1, "maxLength": max, "pattern": crate::accounts::TEXT_PATTERN})
}

fn amount(min: i64, max: i64) -> Value {
    json!({"minimum": min, "maximum": max})
}

fn one_of(values: Vec<&'static str>) -> Value {
    json!({ "enum": values })
}

/// The limits the domain enforces on request fields, stated in the
/// document so that clients (and generated SDKs) can check before sending.
fn constrain(schemas: &mut Value, max_payment: i64) {
    use crate::money::{Currency, MAX_AMOUNT};
    let currencies = || one_of(Currency::all_codes());
    let countries = || one_of(crate::accounts::country_codes());
    let zones = || one_of(crate::calendar::Zone::all_names());
    let email = || json!({"maxLength": 254, "pattern": crate::accounts::EMAIL_PATTERN});
    let language = || json!({"pattern": crate::accounts::LANGUAGE_PATTERN});
    let name =
        || json!({"minLength": 1, "maxLength": 200, "pattern": crate::accounts::NAME_PATTERN});
    let opt_out = || {
        let optional = crate::messages::Kind::OPTIONAL.map(|k| k.as_str()).to_vec();
        json!({"items": {"type": "string", "enum": optional}})
    };
    let fields: Vec<(&str, &str, Value)> = vec![
        ("CreateAccount", "email", email()),
        ("CreateAccount", "name", name()),
        ("CreateAccount", "currency", currencies()),
        ("CreateAccount", "credit_limit", amount(0, MAX_AMOUNT)),
        ("CreateAccount", "country", countries()),
        ("CreateAccount", "time_zone", zones()),
        ("CreateAccount", "language", language()),
        ("CreateAccount", "email_opt_out", opt_out()),
        ("UpdateAccount", "email", email()),
        ("UpdateAccount", "name", name()),
        ("UpdateAccount", "credit_limit", amount(0, MAX_AMOUNT)),
        ("UpdateAccount", "country", countries()),
        ("UpdateAccount", "time_zone", zones()),
        ("UpdateAccount", "language", language()),
        ("UpdateAccount", "email_opt_out", opt_out()),
        ("CreateCredit", "amount", amount(1, MAX_AMOUNT)),
        ("CreateCredit", "currency", currencies()),
        ("CreateCredit", "reason", text(500)),
        ("CreateApiKey", "name", text(100)),
        ("CreateStaffKey", "name", text(100)),
        ("CreateTaxRule", "country", countries()),
        ("CreateTaxRule", "name", text(100)),
        ("CreateTaxRule", "rate_bp", amount(1, 10_000)),
        ("CreatePayment", "amount", amount(1, max_payment)),
        ("CreatePayment", "currency", currencies()),
        (
            "CreatePayment",
            "description",
            json!({"minLength": 1, "maxLength": 500}),
        ),
        ("CreateRefund", "amount", amount(1, MAX_AMOUNT)),
        ("CreateRefund", "reason", text(500)),
        ("MigrateRequest", "reason", text(500)),
        ("PlanSpec", "name", text(200)),
        (
            "PlanSpec",
            "module",
            json!({"minLength": 1, "pattern": crate::accounts::TEXT_PATTERN}),
        ),
        ("PlanSpec", "prices", json!({"minItems": 1})),
        (
            "PlanSpec",
            "change_to",
            json!({"maxItems": 100, "items": {"type": "string", "minLength": 1, "maxLength": 64}}),
        ),
        ("PlanSpec", "grace_days", amount(0, 365)),
        ("PlanSpec", "deletion_days", amount(0, 3650)),
        ("Price", "amount", amount(0, MAX_AMOUNT)),
        ("Price", "currency", currencies()),
        ("Fee", "amount", amount(0, MAX_AMOUNT)),
        ("Fee", "currency", currencies()),
    ];
    for (schema, field, limits) in fields {
        let property = &mut schemas[schema]["properties"][field];
        assert!(
            property.is_object(),
            "{schema}.{field} is not in the document"
        );
        merge(property, limits);
    }
    // Each kind of add-on: its code, and the ranges of a count.
    let addon_kinds = schemas["Addon"]["oneOf"]
        .as_array_mut()
        .expect("Addon is one of its kinds");
    for kind in addon_kinds {
        // serde refuses unknown fields in each kind.
        kind["additionalProperties"] = json!(false);
        let Some(properties) = kind.get_mut("properties") else {
            continue;
        };
        merge(
            &mut properties["code"],
            json!({"pattern": "^[A-Za-z0-9_-]{1,64}$"}),
        );
        if properties.get("min").is_some() {
            merge(&mut properties["min"], amount(0, 1_000_000));
            merge(&mut properties["max"], amount(0, 1_000_000));
            merge(&mut properties["included"], json!({"minimum": 0}));
        }
        if properties.get("choices").is_some() {
            merge(&mut properties["choices"], json!({"minItems": 1}));
        }
    }
}

/// Adds `limits` to a property's schema; a nullable property stays
/// nullable (`null` joins an `enum`).
fn merge(property: &mut Value, limits: Value) {
    let nullable = property["type"]
        .as_array()
        .is_some_and(|t| t.contains(&json!("null")));
    for (key, mut value) in limits.as_object().cloned().unwrap_or_default() {
        if key == "enum" && nullable {
            value.as_array_mut().expect("an enum").push(Value::Null);
        }
        property[key] = value;
    }
}

/// What an operation looks like, for deciding what it can answer.
struct Shape {
    secured: bool,
    path_params: bool,
    query_params: bool,
    idempotency_key: bool,
    body: bool,
}

impl Shape {
    fn of(op: &Value) -> Shape {
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let has = |place: &str| params.iter().any(|p| p["in"] == place);
        Shape {
            secured: op["security"].as_array().is_some_and(|s| !s.is_empty()),
            path_params: has("path"),
            query_params: has("query"),
            idempotency_key: params.iter().any(|p| p["name"] == "Idempotency-Key"),
            body: op.get("requestBody").is_some(),
        }
    }

    /// The problems any operation of this shape can answer with.
    fn problems(&self) -> Vec<ProblemKind> {
        let mut kinds = vec![K::Internal, K::Unavailable];
        if self.secured {
            kinds.extend([K::Unauthorized, K::Forbidden]);
        }
        if self.path_params {
            kinds.push(K::NotFound);
        }
        if self.query_params {
            kinds.push(K::InvalidQuery);
        }
        if self.idempotency_key {
            kinds.extend([K::InvalidIdempotencyKey, K::IdempotencyKeyReused]);
        }
        if self.body {
            kinds.extend([
                K::MalformedJson,
                K::UnreadableBody,
                K::PayloadTooLarge,
                K::UnsupportedMediaType,
                K::InvalidBody,
                K::InvalidField,
            ]);
        }
        kinds
    }
}

fn complete(doc: &mut Value, api: &ApiConfig) {
    let refusals: BTreeMap<&str, &[ProblemKind]> = REFUSALS.iter().copied().collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["Problem"] = problem_schema();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(id) = op["operationId"].as_str().map(str::to_owned) else {
                continue;
            };
            let shape = Shape::of(op);
            let mut kinds: BTreeSet<ProblemKind> = shape.problems().into_iter().collect();
            kinds.extend(
                refusals
                    .get(id.as_str())
                    .copied()
                    .unwrap_or_default()
                    .iter()
                    .copied(),
            );
            if id == "getOpenApi" {
                kinds.remove(&K::Unavailable);
            }
            add_problem_responses(op, &kinds);
            set_page_limit(op, api.max_page_limit);
            constrain_idempotency_key(op);
        }
    }
}

/// One response per status, each listing the problem types it carries;
/// a response the handler already declared keeps its description.
fn add_problem_responses(op: &mut Value, kinds: &BTreeSet<ProblemKind>) {
    let mut by_status: BTreeMap<u16, Vec<ProblemKind>> = BTreeMap::new();
    for kind in kinds {
        by_status
            .entry(kind.status().as_u16())
            .or_default()
            .push(*kind);
    }
    let responses = op["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for (status, kinds) in by_status {
        let types = kinds
            .iter()
            .map(|k| format!("`{}`", k.slug()))
            .collect::<Vec<_>>()
            .join(", ");
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": ""}));
        let declared = entry["description"].as_str().unwrap_or("").trim();
        let description = if declared.is_empty() {
            format!("Problem types: {types}.")
        } else {
            format!("{declared}. Problem types: {types}.")
        };
        entry["description"] = json!(description);
        entry["content"] = json!({
            PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
        });
    }
}

/// `limit` goes up to what this deployment allows.
fn set_page_limit(op: &mut Value, max: usize) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            if p["in"] == "query" && p["name"] == "limit" {
                p["schema"]["maximum"] = json!(max);
            }
        }
    }
}

/// An `Idempotency-Key` is 1 to 255 visible ASCII characters.
fn constrain_idempotency_key(op: &mut Value) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            if p["in"] == "header" && p["name"] == "Idempotency-Key" {
                p["schema"] = json!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"});
            }
        }
    }
}

/// A problem+json document (RFC 9457) as Bursar sends it.
fn problem_schema() -> Value {
    let types: Vec<String> = ProblemKind::ALL.iter().map(|k| k.uri()).collect();
    let mut properties = Map::new();
    properties.insert(
        "type".into(),
        json!({"type": "string", "enum": types,
               "description": "What went wrong, for clients to match on: `urn:bursar:problem:{slug}`."}),
    );
    properties.insert(
        "title".into(),
        json!({"type": "string", "description": "The type's short summary."}),
    );
    properties.insert(
        "status".into(),
        json!({"type": "integer", "minimum": 400, "maximum": 599}),
    );
    properties.insert(
        "detail".into(),
        json!({"type": "string", "description": "What happened in this case, for people."}),
    );
    for (name, schema) in [
        (
            "field",
            json!({"type": "string", "description": "`invalid-field`: the field at fault."}),
        ),
        (
            "quota",
            json!({"type": "string", "description": "`quota-exceeded`: which limit."}),
        ),
        (
            "current_status",
            json!({"type": "string", "description": "`illegal-transition`: the service's status."}),
        ),
        ("account_id", json!({"type": "string"})),
        ("currency", json!({"type": "string"})),
        (
            "balance",
            json!({"type": "integer", "description": "`insufficient-funds`: in minor units."}),
        ),
        ("credit_limit", json!({"type": "integer"})),
        ("required", json!({"type": "integer"})),
    ] {
        properties.insert(name.into(), schema);
    }
    json!({
        "type": "object",
        "description": "An error (RFC 9457 problem details). `type` says which; the other members named here appear with the types they describe.",
        "required": ["type", "title", "status", "detail"],
        "properties": properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: &Value) -> Vec<(String, Value)> {
        let mut ops = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ops.push((op["operationId"].as_str().unwrap().to_owned(), op.clone()));
            }
        }
        ops
    }

    #[test]
    fn every_operation_has_its_refusals_listed_and_no_stale_entry_remains() {
        let doc = document(&crate::config::Config::default().api, 10_000_000);
        let ids: BTreeSet<String> = operations(&doc).into_iter().map(|(id, _)| id).collect();
        let listed: BTreeSet<String> = REFUSALS.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, listed);
        assert_eq!(listed.len(), REFUSALS.len(), "an operation listed twice");
    }

    #[test]
    fn every_error_status_has_the_problem_schema_and_names_its_types() {
        let doc = document(&crate::config::Config::default().api, 10_000_000);
        for (id, op) in operations(&doc) {
            for (status, response) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    continue;
                }
                assert_eq!(
                    response["content"][PROBLEM_JSON]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{id} {status}"
                );
                let description = response["description"].as_str().unwrap();
                assert!(description.contains("urn") || description.contains('`'));
            }
        }
    }

    #[test]
    fn a_secured_operation_with_a_body_documents_auth_and_body_problems() {
        let doc = document(&crate::config::Config::default().api, 10_000_000);
        let order = &doc["paths"]["/api/v1/orders"]["post"]["responses"];
        for status in [
            "400", "401", "402", "403", "409", "413", "415", "422", "500", "503",
        ] {
            assert!(order.get(status).is_some(), "createOrder lacks {status}");
        }
        let description = order["402"]["description"].as_str().unwrap();
        assert!(
            description.contains("`insufficient-funds`"),
            "{description}"
        );
        // Public and without parameters: no 401, no 404.
        let spec = &doc["paths"]["/api/v1/openapi.json"]["get"]["responses"];
        assert!(spec.get("401").is_none() && spec.get("404").is_none());
    }

    #[test]
    fn an_operation_without_parameters_gets_none() {
        let doc = document(&crate::config::Config::default().api, 1);
        let spec = &doc["paths"]["/api/v1/openapi.json"]["get"];
        assert!(spec.get("parameters").is_none(), "{spec}");
    }

    #[test]
    fn the_page_limit_is_the_configured_one() {
        let api = ApiConfig {
            max_page_limit: 77,
            ..crate::config::Config::default().api
        };
        let doc = document(&api, 10_000_000);
        let params = doc["paths"]["/api/v1/services"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!(limit["schema"]["maximum"], 77);
        assert_eq!(limit["schema"]["minimum"], 1);
    }

    #[test]
    fn request_fields_carry_the_limits_the_domain_enforces() {
        let doc = document(&crate::config::Config::default().api, 4_200);
        let schemas = &doc["components"]["schemas"];
        let payment = &schemas["CreatePayment"]["properties"];
        assert_eq!(payment["amount"]["minimum"], 1);
        assert_eq!(payment["amount"]["maximum"], 4_200);
        let currencies = payment["currency"]["enum"].as_array().unwrap();
        assert!(currencies.contains(&json!("EUR")) && currencies.contains(&json!("JPY")));
        assert!(
            !currencies.contains(&json!("XXX")),
            "no currency without minor units"
        );
        let country = &schemas["UpdateAccount"]["properties"]["country"]["enum"];
        let country = country.as_array().unwrap();
        assert!(country.contains(&json!("DE")) && country.contains(&Value::Null));
        assert!(!country.contains(&json!("ZZ")));
        let zones = &schemas["CreateAccount"]["properties"]["time_zone"]["enum"];
        assert!(zones.as_array().unwrap().contains(&json!("Europe/Berlin")));
        assert_eq!(schemas["PlanSpec"]["properties"]["name"]["maxLength"], 200);
        let order = &doc["paths"]["/api/v1/orders"]["post"]["parameters"][0];
        assert_eq!(order["schema"]["maxLength"], 255);
        // The domain's checks and the stated limits agree at the edges.
        assert!(crate::accounts::check_text("name", &"x".repeat(200), 200).is_ok());
        assert!(crate::accounts::check_text("name", &"x".repeat(201), 200).is_err());
        assert!(crate::accounts::check_text("name", "  ", 200).is_err());
        for code in crate::accounts::country_codes() {
            assert!(crate::accounts::check_country(code).is_ok(), "{code}");
        }
        for code in crate::money::Currency::all_codes() {
            assert!(crate::money::Currency::from_code(code).is_ok(), "{code}");
        }
        for zone in crate::calendar::Zone::all_names() {
            assert!(crate::accounts::check_time_zone(zone).is_ok(), "{zone}");
        }
    }

    #[test]
    fn the_problem_schema_lists_every_problem_type() {
        let schema = problem_schema();
        let types = schema["properties"]["type"]["enum"].as_array().unwrap();
        assert_eq!(types.len(), ProblemKind::ALL.len());
        assert!(types.contains(&json!("urn:bursar:problem:insufficient-funds")));
    }
}
