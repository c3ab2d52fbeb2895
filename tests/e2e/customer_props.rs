//! Property: no sequence of a customer's own actions — orders, plan
//! changes (accepted or refused by the module), prolongations, closes,
//! profile edits and attempts at billing fields — with time passing and
//! automation passes in between, ever raises the customer's balance above
//! what was paid in. Money arrives only through payments and staff.

use axum::http::{Method, StatusCode};
use bursar::automation::{AutomationConfig, run_once};
use bursar::clock::Clock;
use bursar::services::OperationKind;
use bursar::services::module::ModuleError;
use bursar_tests::{ADMIN_KEY, TestApp};
use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

const PAID_IN: i64 = 500_000;

#[derive(Debug, Clone)]
enum Step {
    Order {
        plan: usize,
        quarterly: bool,
    },
    ChangePlan {
        service: usize,
        plan: usize,
    },
    /// The module will refuse the next plan change.
    RefuseNextChange,
    Prolong {
        service: usize,
        quarterly: bool,
    },
    Close {
        service: usize,
    },
    EditProfile,
    /// Tries a field only staff may change.
    EditBilling {
        field: usize,
    },
    /// Staff move the customer between a country with VAT and one without
    /// (not the customer's doing, but credits must not care).
    StaffMovesCountry,
    /// Time passes, then the day's automation pass and the module's work.
    Wait {
        hours: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, any::<bool>()).prop_map(|(plan, quarterly)| Step::Order { plan, quarterly }),
        (0usize..4, 0usize..3).prop_map(|(service, plan)| Step::ChangePlan { service, plan }),
        Just(Step::RefuseNextChange),
        (0usize..4, any::<bool>())
            .prop_map(|(service, quarterly)| Step::Prolong { service, quarterly }),
        (0usize..4).prop_map(|service| Step::Close { service }),
        Just(Step::EditProfile),
        (0usize..4).prop_map(|field| Step::EditBilling { field }),
        Just(Step::StaffMovesCountry),
        (1i64..24 * 40).prop_map(|hours| Step::Wait { hours }),
    ]
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let app = TestApp::new().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 1, 15, 10, 0, 0).unwrap());
    let r = app
        .post(
            "/api/v1/tax-rules",
            ADMIN_KEY,
            json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
        )
        .await;
    prop_assert_eq!(r.status, StatusCode::CREATED);
    let mut plans = vec![];
    for (monthly, setup) in [(30_000, 0), (1_000, 0), (4_900, 500)] {
        plans.push(
            app.create_plan(json!({
                "name": format!("Plan {monthly}"), "product_type": "vps", "module": "test",
                "setup_fees": [{"currency": "EUR", "amount": setup}],
                "prices": [
                    {"period": "1m", "currency": "EUR", "amount": monthly},
                    {"period": "3m", "currency": "EUR", "amount": monthly * 3 - 7}
                ]
            }))
            .await,
        );
    }
    for from in &plans {
        for to in &plans {
            if from != to {
                app.allow_change(from, to).await;
            }
        }
    }
    let acc = app.create_account("prop@example.com", "EUR", 0).await;
    app.credit(&acc, PAID_IN, "EUR").await;
    app.request(
        Method::PATCH,
        &format!("/api/v1/accounts/{acc}"),
        Some(ADMIN_KEY),
        Some(json!({"country": "DE"})),
        &[],
    )
    .await;
    let key = app.customer_key(&acc).await;
    let mut services: Vec<String> = vec![];
    for (n, step) in steps.iter().enumerate() {
        let period = |q: bool| if q { "3m" } else { "1m" };
        match step {
            Step::Order { plan, quarterly } => {
                let r = app
                    .post(
                        "/api/v1/orders",
                        &key,
                        json!({"plan_id": plans[*plan], "period": period(*quarterly)}),
                    )
                    .await;
                if r.status == StatusCode::CREATED {
                    services.push(r.json["id"].as_str().unwrap().to_owned());
                }
            }
            Step::ChangePlan { service, plan } => {
                if let Some(id) = services.get(*service) {
                    app.post(
                        &format!("/api/v1/services/{id}/change-plan"),
                        &key,
                        json!({"plan_id": plans[*plan]}),
                    )
                    .await;
                }
            }
            Step::RefuseNextChange => app.module.push(
                OperationKind::ChangePlan,
                false,
                Err(ModuleError::Unsupported("no".into())),
            ),
            Step::Prolong { service, quarterly } => {
                if let Some(id) = services.get(*service) {
                    app.post(
                        &format!("/api/v1/services/{id}/prolong"),
                        &key,
                        json!({"period": period(*quarterly)}),
                    )
                    .await;
                }
            }
            Step::Close { service } => {
                if let Some(id) = services.get(*service) {
                    app.post(&format!("/api/v1/services/{id}/close"), &key, json!({}))
                        .await;
                }
            }
            Step::EditProfile => {
                let r = app
                    .request(
                        Method::PATCH,
                        &format!("/api/v1/accounts/{acc}"),
                        Some(&key),
                        Some(json!({"name": format!("Name {n}")})),
                        &[],
                    )
                    .await;
                prop_assert_eq!(r.status, StatusCode::OK);
            }
            Step::EditBilling { field } => {
                let body = [
                    json!({"country": "US"}),
                    json!({"time_zone": "Pacific/Kiritimati"}),
                    json!({"credit_limit": 100_000}),
                    json!({"status": "active"}),
                ][*field]
                    .clone();
                let r = app
                    .request(
                        Method::PATCH,
                        &format!("/api/v1/accounts/{acc}"),
                        Some(&key),
                        Some(body),
                        &[],
                    )
                    .await;
                prop_assert_eq!(r.status, StatusCode::FORBIDDEN);
            }
            Step::StaffMovesCountry => {
                let now = app.get(&format!("/api/v1/accounts/{acc}"), ADMIN_KEY).await;
                let next = if now.json["country"] == "DE" {
                    "US"
                } else {
                    "DE"
                };
                app.request(
                    Method::PATCH,
                    &format!("/api/v1/accounts/{acc}"),
                    Some(ADMIN_KEY),
                    Some(json!({"country": next})),
                    &[],
                )
                .await;
            }
            Step::Wait { hours } => {
                app.clock.advance(Duration::hours(*hours));
                run_once(app.store(), &AutomationConfig::default(), app.clock.now())
                    .await
                    .unwrap();
            }
        }
        app.run_operations().await;
        let balance = app.balance(&acc).await;
        prop_assert!(
            balance <= PAID_IN,
            "after step {} ({:?}) the balance is {} > {}",
            n,
            step,
            balance,
            PAID_IN
        );
    }
    app.assert_ledger_clean().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn no_sequence_of_customer_actions_raises_the_balance(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(steps))?;
    }
}
