//! What an operator runs: the audit of a live database, and a backup taken
//! while Bursar serves and writes, restored into a new place.

use std::str::FromStr;

use bursar::clock::Clock;
use bursar::store::{Backend, StoreOptions, audit};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

async fn numbers(store: &bursar::store::Store) -> Vec<String> {
    let mut r = store.reader().await.unwrap();
    let q = "SELECT number FROM invoices ORDER BY number";
    match r.conn() {
        bursar::store::Conn::Sqlite(c) => sqlx::query_scalar(q).fetch_all(&mut *c).await,
        bursar::store::Conn::Postgres(c) => sqlx::query_scalar(q).fetch_all(&mut *c).await,
    }
    .unwrap()
}

async fn run_audit(store: &bursar::store::Store) -> audit::Report {
    let mut r = store.reader().await.unwrap();
    audit::run(r.conn()).await.unwrap()
}

#[tokio::test]
async fn the_audit_passes_a_sound_database_and_names_each_violation() {
    let app = TestApp::new().await;
    let acc = app.create_account("audit@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    for _ in 0..3 {
        app.order(&acc, &plan, "1m").await;
    }
    app.run_operations().await;
    let report = run_audit(app.store()).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.documents.values().sum::<i64>(), 3);

    // A counter behind its documents would hand a number out twice.
    app.db
        .exec("UPDATE invoice_counters SET last = last - 1")
        .await;
    let report = run_audit(app.store()).await;
    assert_eq!(report.document_gaps.len(), 1, "{report:?}");
    assert_eq!(report.document_gaps[0].counter, Some(2));
    app.db
        .exec("UPDATE invoice_counters SET last = last + 1")
        .await;
    // A cached balance that differs from its entries.
    app.db
        .exec(&format!(
            "UPDATE ledger_accounts SET balance = balance + 1 WHERE account_id = '{acc}'"
        ))
        .await;
    let report = run_audit(app.store()).await;
    assert!(!report.is_clean());
    assert_eq!(report.ledger.mismatched_balances.len(), 1, "{report:?}");
}

#[tokio::test]
async fn a_backup_taken_under_writes_restores_whole_with_every_document_number() {
    let app = TestApp::new().await;
    if app.db.backend() == Backend::Postgres {
        // PostgreSQL's backup is pg_dump, which a per-test schema cannot
        // stand in for: `cli::backup_and_restore_*` runs it on whole
        // databases.
        return;
    }
    let acc = app.create_account("backup@example.com", "EUR", 0).await;
    app.credit(&acc, 1_000_000, "EUR").await;
    let plan = app.simple_plan(100).await;
    for _ in 0..5 {
        app.order(&acc, &plan, "1m").await;
    }
    let before = numbers(app.store()).await;

    // Orders keep coming while the backup is taken.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let app = &app;
        let acc = acc.clone();
        let plan = plan.clone();
        async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                let r = app.order(&acc, &plan, "1m").await;
                assert_eq!(r.status.as_u16(), 201, "{}", r.text);
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.db");
    let backup = async {
        // Let some orders land first.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let done = bursar::backup::backup(app.store(), app.db.url(), &file).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        done
    };
    let (written, backup) = tokio::join!(writer, backup);
    backup.unwrap();
    assert!(written > 0);
    // A second backup never overwrites the first.
    assert!(
        bursar::backup::backup(app.store(), app.db.url(), &file)
            .await
            .is_err()
    );

    let restored_url = format!("sqlite://{}", dir.path().join("new/bursar.db").display());
    let report = bursar::backup::restore(&restored_url, &file, &StoreOptions::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let restored = bursar::store::Store::connect(&restored_url, &StoreOptions::default())
        .await
        .unwrap();
    let after = numbers(&restored).await;
    for n in &before {
        assert!(after.contains(n), "{n} lost");
    }
    assert!(after.len() >= before.len());
    assert!(after.len() <= numbers(app.store()).await.len());
    restored.close().await;
    // Restoring over a database that exists is refused.
    let again = bursar::backup::restore(&restored_url, &file, &StoreOptions::default()).await;
    assert!(again.unwrap_err().to_string().contains("exists"));

    // And the source keeps serving.
    let r = app.get(&format!("/api/v1/accounts/{acc}"), ADMIN_KEY).await;
    assert_eq!(r.json["id"], json!(acc));
}

#[tokio::test]
async fn retention_prunes_old_idempotency_keys_delivered_events_and_sent_mail_only() {
    let app = TestApp::new().await;
    let acc = app.create_account("keep@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let r = app
        .request(
            axum::http::Method::POST,
            "/api/v1/orders",
            Some(ADMIN_KEY),
            Some(json!({"account_id": acc, "plan_id": plan, "period": "1m"})),
            &[("idempotency-key", "keep-1")],
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.text);
    let count = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    let keys = app.db.count(&count("idempotency_keys")).await;
    assert!(keys > 0);
    // Mark every event delivered and every notification sent, now.
    let now = app.clock.now();
    let at = now.timestamp_micros();
    app.db
        .exec(&format!(
            "UPDATE outbox SET status = 'delivered', delivered_at = {at}"
        ))
        .await;
    app.db
        .exec(&format!(
            "UPDATE notifications SET status = 'sent', sent_at = {at} WHERE kind = 'welcome'"
        ))
        .await;
    let pending = app
        .db
        .count("SELECT COUNT(*) FROM notifications WHERE status = 'pending'")
        .await;
    let config = bursar::automation::AutomationConfig::default();
    let ledger = app.db.count(&count("ledger_entries")).await;
    let events = app.db.count(&count("service_events")).await;

    let pruned = bursar::automation::prune(app.store(), &config, now + chrono::Duration::days(29))
        .await
        .unwrap();
    assert_eq!(pruned, Default::default(), "nothing is old enough yet");
    let pruned = bursar::automation::prune(app.store(), &config, now + chrono::Duration::days(31))
        .await
        .unwrap();
    assert_eq!(pruned.idempotency_keys, keys as u64);
    assert_eq!(pruned.delivered_events, 0, "kept 90 days");
    let pruned = bursar::automation::prune(app.store(), &config, now + chrono::Duration::days(91))
        .await
        .unwrap();
    assert!(pruned.delivered_events > 0);
    assert_eq!(pruned.finished_notifications, 1);
    assert_eq!(app.db.count(&count("outbox")).await, 0);
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM notifications WHERE status = 'pending'")
            .await,
        pending,
        "what is not yet sent stays"
    );
    assert_eq!(app.db.count(&count("ledger_entries")).await, ledger);
    assert_eq!(app.db.count(&count("service_events")).await, events);
}

#[tokio::test]
async fn metrics_answer_only_the_token_when_one_is_set() {
    let app = TestApp::with_config(|c| {
        c.api.metrics_token = Some(bursar::secrets::SettingValue::Text("scrape-me".into()));
    })
    .await;
    let get = |auth: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let app = &app;
        async move {
            app.request(axum::http::Method::GET, "/metrics", None, None, &headers)
                .await
        }
    };
    assert_eq!(get(None).await.status.as_u16(), 401);
    assert_eq!(get(Some("Bearer wrong")).await.status.as_u16(), 401);
    let r = get(Some("Bearer scrape-me")).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.content_type.starts_with("text/plain"));
    // Without a token (the loopback default) it stays open.
    let open = TestApp::new().await;
    let r = open
        .request(axum::http::Method::GET, "/metrics", None, None, &[])
        .await;
    assert_eq!(r.status.as_u16(), 200);
}

#[test]
fn the_shipped_alert_rules_name_only_metrics_bursar_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus-alerts.yml")).unwrap();
    let mut source = String::new();
    let mut stack = vec![root.join("engine/src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "rs") {
                source.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    let mut named = 0;
    for (i, _) in rules.match_indices("bursar_") {
        let name: String = rules[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let metric = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            source.contains(&format!("\"{metric}\"")),
            "{metric} is not a metric Bursar exports"
        );
        named += 1;
    }
    assert!(named >= 8, "{named}");
}

/// A database made by the previous release's schema (migrations up to
/// 0008) is brought up to date by `migrate`, its data kept and the new
/// columns filled with their defaults.
#[tokio::test]
async fn a_database_of_the_previous_release_migrates_forward_with_its_data() {
    let (url, scratch) = match std::env::var("BURSAR_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            let db = format!("mig_{}", uuid::Uuid::now_v7().simple());
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await
                .unwrap();
            (format!("{}/{db}", url.rsplit_once('/').unwrap().0), None)
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("old.db").display());
            (url, Some(dir))
        }
    };
    const PREVIOUS: usize = 8;
    let insert_account = "INSERT INTO accounts (id, email, name, currency, credit_limit, status, created_at, updated_at)
         VALUES ('acc_old', 'old@example.com', 'Old Customer', 'EUR', 0, 'active', 1, 1)";
    if url.starts_with("sqlite:") {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let mut old = sqlx::migrate!("../engine/src/store/migrations/sqlite");
        old.migrations = std::borrow::Cow::Owned(old.migrations[..PREVIOUS].to_vec());
        old.run(&pool).await.unwrap();
        sqlx::query(insert_account).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let mut old = sqlx::migrate!("../engine/src/store/migrations/postgres");
        old.migrations = std::borrow::Cow::Owned(old.migrations[..PREVIOUS].to_vec());
        old.run(&pool).await.unwrap();
        sqlx::query(insert_account).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = bursar::store::Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let account = {
        let mut r = store.reader().await.unwrap();
        bursar::store::accounts::get(r.conn(), "acc_old")
            .await
            .unwrap()
    };
    assert_eq!(account.email, "old@example.com");
    assert_eq!(account.language, "en");
    assert!(account.email_opt_out.is_empty());
    let report = run_audit(&store).await;
    assert!(report.is_clean(), "{report:?}");
    // Running it again changes nothing.
    store.migrate().await.unwrap();
    store.close().await;
    drop(scratch);
}
