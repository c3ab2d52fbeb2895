//! The durable operations queue: retries with backoff, expired leases,
//! and several runners on one database.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use bursar::clock::{Clock, SharedClock};
use bursar::lifecycle::runner::OperationRunner;
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome, ModuleRegistry, ScriptedModule};
use bursar::store::Backend;
use bursar::store::services as repo;
use bursar::store::statistics::{ClaimStatistics, SLOW_CLAIM};
use bursar_tests::{ADMIN_KEY, TestApp};
use chrono::Utc;
use serde_json::json;

async fn ordered_service(app: &TestApp, email: &str) -> String {
    let plan = app.simple_plan(100).await;
    let acc = app.create_account(email, "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn unavailable_three_times_then_done_backs_off_and_ends_active() {
    let app = TestApp::new().await;
    let id = ordered_service(&app, "retry@example.com").await;
    for _ in 0..3 {
        app.module.push(
            OperationKind::Open,
            false,
            Err(ModuleError::Unavailable {
                message: "DCImanager is starting".into(),
                retry_after: None,
            }),
        );
    }
    let mut last_due = app.clock.now();
    for attempt in 1..=3 {
        app.run_operations().await;
        let ops = app
            .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
            .await;
        let op = &ops.json["data"][0];
        assert_eq!(op["status"], "queued", "attempt {attempt}");
        assert_eq!(op["attempts"], attempt);
        assert_eq!(op["error_kind"], "unavailable");
        let due: chrono::DateTime<Utc> = op["next_run_at"].as_str().unwrap().parse().unwrap();
        let base = 1_000i64 << (attempt - 1);
        let waited = (due - app.clock.now()).num_milliseconds();
        assert!(
            waited >= base / 2 && waited <= base,
            "attempt {attempt}: waits {waited} ms"
        );
        assert!(due > last_due);
        last_due = due;
        assert_eq!(app.run_operations().await, 0, "not due before its backoff");
        app.clock.set(due);
    }
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "active");
    let op = &app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await
        .json["data"][0];
    assert_eq!(op["status"], "done");
    assert_eq!(op["attempts"], 4);
    assert_eq!(app.module.calls().len(), 4);
}

#[tokio::test]
async fn retries_run_out_into_the_manual_queue() {
    let app = TestApp::new().await;
    let id = ordered_service(&app, "out@example.com").await;
    for _ in 0..TestApp::runner_config().max_attempts {
        app.module.push(
            OperationKind::Open,
            false,
            Err(ModuleError::Timeout("slow".into())),
        );
    }
    for _ in 0..10 {
        app.run_operations().await;
        app.clock.advance(chrono::Duration::minutes(5));
    }
    let op = &app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await
        .json["data"][0];
    assert_eq!(op["status"], "manual");
    assert_eq!(op["attempts"], TestApp::runner_config().max_attempts);
    assert_eq!(op["error_kind"], "timeout");
}

#[tokio::test]
async fn an_expired_lease_is_claimed_again_and_its_effect_applied_once() {
    let app = TestApp::new().await;
    let id = ordered_service(&app, "lease@example.com").await;
    // A runner claims the operation and dies before recording anything.
    let now = app.clock.now();
    let mut tx = app.store().begin().await.unwrap();
    let claimed = repo::claim_due(
        tx.conn(),
        "dead-runner",
        now,
        now + chrono::Duration::minutes(1),
        10,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(app.run_operations().await, 0, "a live lease is respected");

    app.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(
        app.run_operations().await,
        1,
        "the expired lease is taken over"
    );
    assert_eq!(app.service(&id).await["status"], "active");

    // The dead runner wakes up and tries to record its result: refused.
    let mut tx = app.store().begin().await.unwrap();
    let stale = repo::finish_run(
        tx.conn(),
        &claimed[0].operation.id,
        &claimed[0].token,
        &repo::OperationUpdate {
            status: bursar::services::OperationStatus::Done,
            next_run_at: now,
            remote_ref: None,
            progress: None,
            last_error: None,
            error_kind: None,
            finished: true,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(!stale, "a stale claim cannot record a result");
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await;
    let opened = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "opened")
        .count();
    assert_eq!(opened, 1, "the effect is applied once");
    let calls = app.module.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].operation_id, claimed[0].operation.id,
        "same idempotency key after the takeover"
    );
}

#[tokio::test]
async fn a_services_operations_run_in_order() {
    let app = TestApp::new().await;
    let id = ordered_service(&app, "order@example.com").await;
    app.run_operations().await;
    app.module.push(
        OperationKind::Suspend,
        false,
        Err(ModuleError::Unavailable {
            message: "busy".into(),
            retry_after: None,
        }),
    );
    app.post(
        &format!("/api/v1/services/{id}/suspend"),
        ADMIN_KEY,
        json!({"reason": "admin"}),
    )
    .await;
    app.post(
        &format!("/api/v1/services/{id}/resume"),
        ADMIN_KEY,
        json!({}),
    )
    .await;
    app.run_operations().await;
    // The resume waits behind the suspend that is backing off.
    let kinds: Vec<_> = app.module.calls().iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec![OperationKind::Open, OperationKind::Suspend]);
    app.clock.advance(chrono::Duration::minutes(1));
    app.run_operations().await;
    let kinds: Vec<_> = app.module.calls().iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        vec![
            OperationKind::Open,
            OperationKind::Suspend,
            OperationKind::Suspend,
            OperationKind::Resume
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_on_one_database_never_run_the_same_operation_at_once() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(100).await;
    let acc = app.create_account("two@example.com", "EUR", 0).await;
    app.credit(&acc, 1_000_000, "EUR").await;
    for _ in 0..30 {
        let r = app.order(&acc, &plan, "1m").await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // The module answers slowly to widen the window for double claims.
    let module = ScriptedModule::new();
    module.set_delay(Duration::from_millis(15));
    let mut modules = ModuleRegistry::default();
    modules.insert("test", module.clone());
    let clock: SharedClock = app.clock.clone();
    let mut config = TestApp::runner_config();
    config.batch = 4;
    let a = Arc::new(OperationRunner::new(
        app.store().clone(),
        modules.clone(),
        clock.clone(),
        app.secrets.clone(),
        config.clone(),
    ));
    let other_pool = app.db.another_pool().await;
    let b = Arc::new(OperationRunner::new(
        other_pool,
        modules,
        clock,
        app.secrets.clone(),
        config,
    ));
    let (ra, rb) = tokio::join!(
        {
            let a = a.clone();
            async move { a.run_until_idle(100).await }
        },
        {
            let b = b.clone();
            async move { b.run_until_idle(100).await }
        },
    );
    let (na, nb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        na + nb,
        30,
        "every operation claimed exactly once ({na} + {nb})"
    );
    assert!(
        module.overlaps().is_empty(),
        "overlapping runs: {:?}",
        module.overlaps()
    );
    let mut ids: Vec<String> = module
        .calls()
        .iter()
        .map(|c| c.operation_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
    assert_eq!(module.calls().len(), 30, "no operation ran twice");
    let active = app
        .get("/api/v1/services?status=active&limit=100", ADMIN_KEY)
        .await;
    assert_eq!(active.json["data"].as_array().unwrap().len(), 30);
}

/// Outcomes that come in together are recorded together, in one
/// transaction (on PostgreSQL only those that do not complete or cancel
/// their operation, which may lock ledger rows); one of them that cannot
/// be recorded takes nothing of the others with it, and runs again once
/// its lease expires.
#[tokio::test]
async fn an_outcome_that_cannot_be_recorded_does_not_hold_back_those_that_came_with_it() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(100).await;
    let acc = app.create_account("together@example.com", "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    let order = |n: usize| {
        let (app, acc, plan) = (&app, &acc, &plan);
        async move {
            let mut ids = Vec::new();
            for _ in 0..n {
                let r = app.order(acc, plan, "1m").await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
                ids.push(r.json["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    };
    let done = || {
        Ok(ModuleOutcome::Done {
            params: vec![("ip".into(), "192.0.2.10".into())],
            secret_params: vec![("root_password".into(), "s3cret".into())],
        })
    };
    let sqlite = app.store().backend() == bursar::store::Backend::Sqlite;

    // Four outcomes for the manual queue that come in at once: one
    // transaction on either backend.
    let queued = order(4).await;
    for _ in 0..4 {
        app.module.push(
            OperationKind::Open,
            false,
            Ok(ModuleOutcome::NeedsStaff("rack the server by hand".into())),
        );
    }
    app.module.answer_together(4);
    let runner = app.runner();
    assert_eq!(runner.run_once().await.unwrap(), 4);
    assert_eq!(runner.recorded_together(), 4);
    for id in &queued {
        let ops = app
            .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
            .await;
        assert_eq!(ops.json["data"][0]["status"], "manual", "{id}");
    }

    // Four that complete their operations: one transaction on SQLite, one
    // each on PostgreSQL.
    let first = order(4).await;
    for _ in 0..4 {
        app.module.push(OperationKind::Open, false, done());
    }
    app.module.answer_together(4);
    let runner = app.runner();
    assert_eq!(runner.run_once().await.unwrap(), 4);
    assert_eq!(runner.recorded_together(), if sqlite { 4 } else { 0 });
    for id in &first {
        assert_eq!(app.service(id).await["status"], "active", "{id}");
    }

    // Four more, and the third one's sealed params were written under a
    // key this engine does not have: storing its new secret fails.
    let ids = order(4).await;
    for _ in 0..5 {
        app.module.push(OperationKind::Open, false, done());
    }
    let broken = &ids[2];
    app.db
        .exec(&format!(
            "UPDATE services SET secret_params = 'enc:v1:gone:AAAA' WHERE id = '{broken}'"
        ))
        .await;
    app.module.answer_together(4);
    let runner = app.runner();
    assert_eq!(runner.run_once().await.unwrap(), 4);
    assert_eq!(runner.recorded_together(), 0, "the group was undone");
    for id in ids.iter().filter(|id| *id != broken) {
        let s = app.service(id).await;
        assert_eq!(s["status"], "active", "{id}");
        assert_eq!(s["params"]["ip"], "192.0.2.10", "{id}");
        let op = &app
            .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
            .await
            .json["data"][0];
        assert_eq!(op["status"], "done", "{id}");
    }
    assert_eq!(app.service(broken).await["status"], "opening");
    let op = &app
        .get(&format!("/api/v1/services/{broken}/operations"), ADMIN_KEY)
        .await
        .json["data"][0];
    assert_eq!(op["status"], "running", "kept under its lease, not lost");
    assert_eq!(app.module.calls().len(), 12);

    // Repaired, and once the lease is over it runs again; nothing else does.
    app.db
        .exec(&format!(
            "UPDATE services SET secret_params = '{{}}' WHERE id = '{broken}'"
        ))
        .await;
    app.module.answer_together(1);
    assert_eq!(app.run_operations().await, 0, "a live lease is respected");
    app.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(app.run_operations().await, 1);
    assert_eq!(app.service(broken).await["status"], "active");
    assert_eq!(app.module.calls().len(), 13);
    let opened = app
        .db
        .text("SELECT CAST(COUNT(*) AS TEXT) FROM service_events WHERE action = 'opened'")
        .await;
    assert_eq!(opened, "8", "each service opened once");
    app.assert_ledger_clean().await;
}

/// A burst queued after the table was last analysed (here: while it was
/// empty, as on a new database) leaves PostgreSQL's planner with column
/// statistics in which nothing is queued, and it plans the claim as a read
/// and sort of the whole backlog. A slow claim refreshes the statistics,
/// and the claim is planned again as a walk of the pending index that
/// stops at its batch, with nothing about the plan forced.
#[tokio::test]
async fn a_slow_claim_refreshes_stale_statistics_and_the_claim_walks_its_index_again() {
    let app = TestApp::new().await;
    let store = app.store();
    let stats = ClaimStatistics::new("operations");
    if store.backend() == Backend::Sqlite {
        assert!(
            !stats.after_claim(store, Duration::from_secs(1)).await,
            "SQLite's claims are steered by hints, not statistics"
        );
        return;
    }
    // Autovacuum must not refresh them behind the test's back.
    app.db
        .exec("ALTER TABLE operations SET (autovacuum_enabled = off)")
        .await;
    let seed = bursar::seed::due_renewals(store, 3_000, 100, 1_000, Utc::now())
        .await
        .expect("seed services");
    app.db.exec("ANALYZE operations").await;
    let ops: Vec<repo::NewOperation> = seed
        .services
        .iter()
        .map(|s| (s.as_str(), OperationKind::Open, "manual", json!({})))
        .collect();
    let mut tx = store.begin().await.unwrap();
    repo::enqueue_many(tx.conn(), &ops, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let now = bursar::clock::to_micros(Utc::now() + chrono::Duration::seconds(1));
    let claim = repo::due_operations(store.backend())
        .replace("$1", &now.to_string())
        .replace("$2", "16");
    let stale = app.db.plan_as_estimated(&claim).await;
    assert!(
        stale.contains("Sort"),
        "with stale statistics the backlog is read and sorted:\n{stale}"
    );

    let fast = SLOW_CLAIM - Duration::from_millis(1);
    assert!(
        !stats.after_claim(store, fast).await,
        "a fast claim changes nothing"
    );
    assert!(app.db.plan_as_estimated(&claim).await.contains("Sort"));

    assert!(
        stats.after_claim(store, SLOW_CLAIM).await,
        "a slow claim refreshes"
    );
    let fresh = app.db.plan_as_estimated(&claim).await;
    assert!(fresh.contains("operations_pending"), "{fresh}");
    assert!(!fresh.contains("Sort"), "{fresh}");
    assert!(
        !stats.after_claim(store, SLOW_CLAIM).await,
        "one refresh is enough for a while"
    );
}

/// Every queue claim (the operation runner's, the mailer's, the webhook
/// deliverer's) walks its pending index first due first and stops at its
/// batch: a claim does not read (and sort) the whole backlog.
#[tokio::test]
async fn every_queue_claim_reads_its_index_in_order_not_the_whole_backlog() {
    let app = TestApp::new().await;
    let backend = app.store().backend();
    for (due, index) in [
        (repo::due_operations(backend), "operations_pending"),
        (
            bursar::store::notifications::due_notifications(backend),
            "notifications_pending",
        ),
        (bursar::store::outbox::due_events(backend), "outbox_pending"),
    ] {
        let sql = due
            .replace("$1", "1700000000000000")
            .replace("$2", "16")
            .replace("$3", "16");
        let plan = app.db.plan(&sql).await;
        assert!(plan.contains(index), "{sql}:\n{plan}");
        assert!(
            // SQLite's "USE TEMP B-TREE FOR [RIGHT PART OF] ORDER BY".
            !plan.to_uppercase().contains("ORDER BY"),
            "{sql}:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{sql}:\n{plan}");
        // And the walk ends at the first row not yet due: a backlog
        // waiting for later is not read (SQLite: a SEARCH with a range on
        // the index; PostgreSQL: an index condition).
        let compact = plan.replace(' ', "");
        assert!(
            compact.contains("IndexCond:(next_") || compact.contains("_pending(next_"),
            "{sql}:\n{plan}"
        );
    }
}
