//! The authorization matrix: every operation of the OpenAPI document,
//! called without a key, by a customer on its own resource and on another
//! customer's, and by each staff role, answers as the one policy says. An
//! operation without a policy entry, or a policy entry without an
//! operation, fails here.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use bursar::accounts::Role;
use bursar::api::policy::{self, Action, Reach};
use bursar_tests::{ADMIN_KEY, Reply, TestApp};
use serde_json::{Value, json};

/// One side of the matrix: the resources of one customer.
#[derive(Clone)]
struct Side {
    account: String,
    key: String,
    spare_key: String,
    service: String,
    operation: String,
    payment: String,
    invoice: String,
}

struct World {
    app: TestApp,
    own: Side,
    other: Side,
    plan: String,
    spare_plan: String,
    change_plan: String,
    spare_staff_key: String,
    support: String,
    accountant: String,
}

async fn side(app: &TestApp, email: &str, plan: &str) -> Side {
    let account = app.create_account(email, "EUR", 0).await;
    app.credit(&account, 1_000_000, "EUR").await;
    let key = app.customer_key(&account).await;
    let spare = app
        .post(
            &format!("/api/v1/accounts/{account}/api-keys"),
            ADMIN_KEY,
            json!({"name": "spare"}),
        )
        .await;
    let spare_key = spare.json["key"]["id"].as_str().unwrap().to_owned();
    let service = app.order(&account, plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let operation = app
        .get(&format!("/api/v1/services/{service}/operations"), ADMIN_KEY)
        .await
        .json["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment = app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": account, "gateway": "bank", "amount": 5000, "currency": "EUR"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            &format!("/api/v1/payments/{payment}/mark-paid"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let invoice = app.invoices(Some(&account)).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Side {
        account,
        key,
        spare_key,
        service,
        operation,
        payment,
        invoice,
    }
}

async fn staff_key(app: &TestApp, role: &str) -> (String, String) {
    let r = app
        .post(
            "/api/v1/staff-keys",
            ADMIN_KEY,
            json!({"name": role, "role": role}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    (
        r.json["secret"].as_str().unwrap().to_owned(),
        r.json["key"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn world() -> World {
    let bank: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "bank", "kind": "gateway", "component": "builtin:bank-transfer",
        "settings": {"beneficiary": "Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"},
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[bank]).await;
    let plan = app.simple_plan(1_000).await;
    let change_plan = app.simple_plan(2_000).await;
    let spare_plan = app.simple_plan(3_000).await;
    app.allow_change(&plan, &change_plan).await;
    let own = side(&app, "own@example.com", &plan).await;
    let other = side(&app, "other@example.com", &plan).await;
    let (support, _) = staff_key(&app, "support").await;
    let (accountant, _) = staff_key(&app, "accountant").await;
    let (_, spare_staff_key) = staff_key(&app, "support").await;
    World {
        app,
        own,
        other,
        plan,
        spare_plan,
        change_plan,
        spare_staff_key,
        support,
        accountant,
    }
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Nobody,
    /// A customer on another customer's resources.
    Intruder,
    Customer,
    Staff(Role),
}

impl World {
    fn key(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Nobody => None,
            Caller::Intruder | Caller::Customer => Some(&self.own.key),
            Caller::Staff(Role::Support) => Some(&self.support),
            Caller::Staff(Role::Accountant) => Some(&self.accountant),
            Caller::Staff(_) => Some(ADMIN_KEY),
        }
    }

    /// The path with its parameters filled in, for resources of `target`.
    fn path(&self, method: &str, template: &str, target: &Side) -> String {
        let id = if template.starts_with("/api/v1/accounts/{id}") {
            target.account.clone()
        } else if template.starts_with("/api/v1/services/{id}") {
            target.service.clone()
        } else if template.starts_with("/api/v1/operations/{id}") {
            target.operation.clone()
        } else if template.starts_with("/api/v1/payments/{id}") {
            target.payment.clone()
        } else if template.starts_with("/api/v1/invoices/{id}") {
            target.invoice.clone()
        } else if template.starts_with("/api/v1/staff-keys/{id}") {
            self.spare_staff_key.clone()
        } else if template == "/api/v1/plans/{id}" && method == "GET" {
            self.plan.clone()
        } else {
            self.spare_plan.clone()
        };
        let path = template
            .replace("{id}", &id)
            .replace("{key_id}", &target.spare_key)
            .replace("{name}", "bank")
            .replace("{instance}", "bank");
        // Lists that can name an account ask for the target's.
        match template {
            "/api/v1/services" | "/api/v1/payments" | "/api/v1/invoices" => {
                format!("{path}?account_id={}", target.account)
            }
            _ => path,
        }
    }

    /// A body good enough to get past validation.
    fn body(&self, method: &str, template: &str, target: &Side) -> Option<Value> {
        let plan = json!({
            "name": "Matrix", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}],
        });
        Some(match (method, template) {
            ("GET" | "DELETE", _) => return None,
            ("POST", "/api/v1/accounts") => {
                json!({"email": format!("new-{}@example.com", uuid::Uuid::now_v7().simple()), "name": "N", "currency": "EUR"})
            }
            ("PATCH", _) => json!({"name": "Renamed"}),
            ("POST", "/api/v1/accounts/{id}/credits") => {
                json!({"kind": "credit", "amount": 100, "currency": "EUR", "reason": "matrix"})
            }
            ("POST", "/api/v1/accounts/{id}/api-keys") => json!({"name": "matrix"}),
            ("POST", "/api/v1/staff-keys") => json!({"name": "m", "role": "support"}),
            ("POST", "/api/v1/plans") | ("PUT", _) => plan,
            ("POST", "/api/v1/orders") => {
                json!({"account_id": target.account, "plan_id": self.plan, "period": "1m"})
            }
            ("POST", "/api/v1/services/{id}/suspend") => json!({"reason": "admin"}),
            ("POST", "/api/v1/services/{id}/prolong") => json!({"period": "1m"}),
            ("POST", "/api/v1/services/{id}/auto-renew") => json!({"auto_renew": false}),
            ("POST", "/api/v1/services/{id}/change-plan") => json!({"plan_id": self.change_plan}),
            ("POST", "/api/v1/services/{id}/migrate") => {
                json!({"plan_id": self.spare_plan, "reason": "matrix"})
            }
            ("POST", "/api/v1/payments") => {
                json!({"account_id": target.account, "gateway": "bank", "amount": 100, "currency": "EUR"})
            }
            ("POST", "/api/v1/payments/{id}/refunds") => json!({"amount": 1, "reason": "matrix"}),
            ("POST", "/api/v1/tax-rules") => {
                json!({"country": "FR", "name": "TVA", "rate_bp": 2000, "inclusive": true})
            }
            _ => json!({}),
        })
    }

    async fn call(&self, caller: Caller, method: &str, template: &str) -> Reply {
        let target = if caller == Caller::Intruder {
            &self.other
        } else {
            &self.own
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let path = self.path(method.as_str(), template, target);
        let body = self.body(method.as_str(), template, target);
        self.app
            .request(method, &path, self.key(caller), body, &[])
            .await
    }
}

/// Does `template` name a resource of an account (in its path, its
/// account filter or its body)?
fn reaches_an_account(template: &str) -> bool {
    template.contains('{')
        || matches!(
            template,
            "/api/v1/services" | "/api/v1/payments" | "/api/v1/invoices" | "/api/v1/orders"
        )
}

#[tokio::test]
async fn every_operation_answers_every_caller_as_the_policy_says() {
    let w = world().await;
    let doc = w.app.get("/api/v1/openapi.json", "").await;
    assert_eq!(doc.status, StatusCode::OK);
    let mut operations = BTreeSet::new();
    for (path, item) in doc.json["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    // The document and the policy list the same operations.
    let listed: BTreeSet<(String, String)> = policy::ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let undocumented: Vec<_> = listed.difference(&operations).collect();
    let unguarded: Vec<_> = operations.difference(&listed).collect();
    assert!(
        unguarded.is_empty(),
        "operations without a policy entry: {unguarded:?}"
    );
    assert!(
        undocumented.is_empty(),
        "policy entries without an operation: {undocumented:?}"
    );

    let callers = [
        Caller::Nobody,
        Caller::Intruder,
        Caller::Customer,
        Caller::Staff(Role::Support),
        Caller::Staff(Role::Accountant),
        Caller::Staff(Role::Admin),
    ];
    let mut checked = 0;
    for (method, template) in &operations {
        let action = policy::action_of(&Method::from_bytes(method.as_bytes()).unwrap(), template)
            .expect("listed");
        for caller in callers {
            let role = match caller {
                Caller::Nobody => None,
                Caller::Intruder | Caller::Customer => Some(Role::Customer),
                Caller::Staff(r) => Some(r),
            };
            let reach = match (action, role) {
                (Action::Public, _) => Some(Reach::Any),
                (_, None) => None,
                (a, Some(r)) => policy::allowed(r, a),
            };
            if caller == Caller::Intruder
                && (reach != Some(Reach::Own) || !reaches_an_account(template))
            {
                continue;
            }
            let r = w.call(caller, method, template).await;
            let what = format!("{caller:?} {method} {template}: {} {}", r.status, r.text);
            assert!(r.status.as_u16() < 500, "{what}");
            match (caller, reach) {
                (Caller::Nobody, None) => assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}"),
                (_, None) => assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}"),
                (Caller::Intruder, _) => {
                    assert!(
                        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
                        "{what}"
                    );
                    // Nothing of theirs but what the request named.
                    let asked = w.path(method, template, &w.other);
                    for theirs in [
                        &w.other.account,
                        &w.other.service,
                        &w.other.payment,
                        &w.other.invoice,
                    ] {
                        assert!(
                            asked.contains(theirs.as_str()) || !r.text.contains(theirs.as_str()),
                            "{what}"
                        );
                    }
                }
                (_, Some(_)) => {
                    assert!(
                        !matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                        "{what}"
                    );
                    if caller == Caller::Customer {
                        for theirs in [&w.other.account, &w.other.service, &w.other.payment] {
                            assert!(!r.text.contains(theirs.as_str()), "{what}");
                        }
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} calls checked");
    w.app.assert_ledger_clean().await;
}
