//! The real `bursar automation run --once` over 10,000 due services:
//! killed with SIGKILL half-way and run again, and run by two processes
//! at once. Either way every service is renewed exactly once, nobody is
//! charged twice and the ledger balances.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bursar::seed::{DueRenewals, due_renewals};
use bursar_tests::TestDb;
use chrono::Utc;
use serde_json::Value;

const SERVICES: usize = 10_000;
const PER_ACCOUNT: usize = 100;
/// Each customer holds three renewals' worth per service, so a second
/// charge would show in the balance instead of being refused.
const CREDIT_PER_SERVICE: i64 = 3000;

/// 10,000 services whose paid month ends within the next three days.
async fn seeded() -> (TestDb, DueRenewals) {
    let db = TestDb::new().await;
    let anchor = Utc::now() - chrono::Duration::days(28);
    let seed = due_renewals(&db.store, SERVICES, PER_ACCOUNT, CREDIT_PER_SERVICE, anchor)
        .await
        .expect("seed due services");
    (db, seed)
}

fn pass(db: &TestDb, dir: &std::path::Path) -> Command {
    let mut cmd = crate::cli::bursar(dir);
    cmd.args(["automation", "run", "--once"])
        .env("BURSAR_DATABASE_URL", db.url())
        .env("BURSAR_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn report(child: Child) -> Value {
    let out = child.wait_with_output().expect("wait for bursar");
    assert!(
        out.status.success(),
        "automation run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn renewed(report: &Value) -> i64 {
    report["actions"]["renewed"].as_i64().unwrap_or(0)
}

async fn renewals(db: &TestDb) -> i64 {
    db.count("SELECT COUNT(*) FROM ledger_transactions WHERE idempotency_key LIKE 'renewal:%'")
        .await
}

/// Every due service renewed exactly once, and nothing else moved.
async fn assert_each_renewed_once(db: &TestDb, seed: &DueRenewals) {
    let n = SERVICES as i64;
    assert_eq!(renewals(db).await, n, "one renewal per service");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM ledger_transactions WHERE kind = 'charge'")
            .await,
        n,
        "one charge per service"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM services WHERE paid_units = 2 AND status = 'active'")
            .await,
        n,
        "every service paid for exactly two months"
    );
    let each = (CREDIT_PER_SERVICE - seed.price) * PER_ACCOUNT as i64;
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM ledger_accounts WHERE account_id IS NOT NULL AND balance <> {each}"
        ))
        .await,
        0,
        "every customer charged once per service"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM invoices WHERE kind = 'invoice'")
            .await,
        n,
        "one invoice per renewal"
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT service_id) FROM operations WHERE kind = 'prolong'")
            .await,
        n
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM operations WHERE kind = 'prolong'")
            .await,
        n,
        "the module hears of each renewal once"
    );
    let mut r = db.store.reader().await.unwrap();
    let audit = bursar::store::ledger::audit(r.conn()).await.unwrap();
    assert!(audit.is_clean(), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_run_killed_half_way_renews_every_service_once_after_a_restart() {
    let (db, seed) = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = pass(&db, dir.path()).spawn().expect("start bursar");
    let started = Instant::now();
    loop {
        if renewals(&db).await >= 500 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no renewal within two minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let before = renewals(&db).await;
    assert!(
        before < SERVICES as i64,
        "killed half-way, not after the end ({before} renewed)"
    );

    let report = report_of(&db, dir.path());
    assert_eq!(renewed(&report), SERVICES as i64 - before, "{report}");
    // The killed run queued `prolong` operations it never ran: this one
    // runs them all (the `manual` module hands each to staff).
    assert_eq!(report["operations_run"], SERVICES, "{report}");
    assert_each_renewed_once(&db, &seed).await;

    // A third run finds nothing to do.
    let again = report_of(&db, dir.path());
    assert_eq!(renewed(&again), 0, "{again}");
    assert_eq!(again["operations_run"], 0, "{again}");
}

fn report_of(db: &TestDb, dir: &std::path::Path) -> Value {
    report(pass(db, dir).spawn().expect("start bursar"))
}

fn operations_run(report: &Value) -> i64 {
    report["operations_run"].as_i64().expect("operations_run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_renewing_the_same_due_services_renew_each_once() {
    let (db, seed) = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let a = pass(&db, dir.path())
        .spawn()
        .expect("start the first bursar");
    let b = pass(&db, dir.path())
        .spawn()
        .expect("start the second bursar");
    let (a, b) = tokio::task::spawn_blocking(move || (report(a), report(b)))
        .await
        .unwrap();
    assert_eq!(renewed(&a) + renewed(&b), SERVICES as i64, "{a} {b}");
    assert_eq!(
        operations_run(&a) + operations_run(&b),
        SERVICES as i64,
        "each operation claimed by one of them"
    );
    assert_each_renewed_once(&db, &seed).await;
}
