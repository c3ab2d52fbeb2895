//! Signed webhooks out: service and payment events reach the endpoints at
//! least once, signed, retried after failures, not sent again once
//! delivered.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bursar::clock::Clock;
use bursar::notify::{Deliverer, WebhookConfig, signature};
use bursar::plugins::instances::SettingValue;
use bursar_tests::TestApp;
use serde_json::Value;

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// Answer 500 this many times first.
    failures: Arc<Mutex<u32>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let sig = headers
        .get("bursar-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    r.seen
        .lock()
        .unwrap()
        .push((sig, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    let mut f = r.failures.lock().unwrap();
    if *f > 0 {
        *f -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

#[tokio::test]
async fn events_are_signed_retried_after_failures_and_delivered_once_acknowledged() {
    let receiver = Receiver::default();
    *receiver.failures.lock().unwrap() = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = TestApp::new().await;
    let acc = app.create_account("w@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    app.order(&acc, &plan, "1m").await;
    app.run_operations().await;

    let deliverer = Deliverer::new(
        app.store().clone(),
        &[WebhookConfig {
            url: format!("http://{addr}/hook"),
            secret: SettingValue::Text("whsec_out".into()),
            events: vec!["service.*".into()],
        }],
    )
    .unwrap();
    let now = app.clock.now();
    // The first event fails once; the rest go through.
    let delivered = deliverer.run_once(now).await.unwrap();
    let seen = receiver.seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    // Events no endpoint asked for (account.created, invoice.issued) are
    // done with at once.
    let unwanted = app
        .db
        .count("SELECT COUNT(*) FROM outbox WHERE type NOT LIKE 'service.%'")
        .await as usize;
    assert!(unwanted >= 2);
    assert_eq!(delivered, seen.len() - 1 + unwanted);
    for (sig, event) in &seen {
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("a timestamp");
        let body = serde_json::to_vec(event).unwrap();
        assert_eq!(sig, &signature("whsec_out", t, &body), "signed over t.body");
        assert!(event["type"].as_str().unwrap().starts_with("service."));
    }
    let types: Vec<&str> = seen
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains(&"service.order") && types.contains(&"service.opened"),
        "{types:?}"
    );

    // Nothing is due until the backoff has passed; then the failed one comes again.
    assert_eq!(deliverer.run_once(now).await.unwrap(), 0);
    let later = now + chrono::Duration::seconds(10);
    assert_eq!(deliverer.run_once(later).await.unwrap(), 1);
    let seen = receiver.seen.lock().unwrap().clone();
    let first = &seen[0].1["id"];
    assert_eq!(
        seen.iter().filter(|(_, e)| &e["id"] == first).count(),
        2,
        "at least once: the failed delivery was repeated"
    );
    assert_eq!(
        deliverer
            .run_once(later + chrono::Duration::hours(2))
            .await
            .unwrap(),
        0,
        "acknowledged events are not sent again"
    );
}
