//! Property test of the ledger over the real store: random credits, debits
//! and transfers; after every step each balance equals the sum of its
//! entries and the model's figure, totals per currency are zero, and nobody
//! is below minus their credit limit.

use bursar::error::Error;
use bursar::ledger::{LedgerAccountId, TransactionDraft, TransactionKind};
use bursar::money::{Currency, Money};
use bursar::store::accounts::{self as accounts_repo, NewAccount};
use bursar::store::ledger as ledger_repo;
use bursar_tests::{TestDb, assert_ledger_clean};
use chrono::Utc;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Credit { who: usize, amount: i64 },
    Debit { who: usize, amount: i64 },
    Transfer { from: usize, to: usize, amount: i64 },
}

fn op(customers: usize) -> impl Strategy<Value = Op> {
    let who = 0..customers;
    let amount = 1i64..5_000;
    prop_oneof![
        (who.clone(), amount.clone()).prop_map(|(who, amount)| Op::Credit { who, amount }),
        (who.clone(), amount.clone()).prop_map(|(who, amount)| Op::Debit { who, amount }),
        (who.clone(), who, amount).prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
    ]
}

fn scenario() -> impl Strategy<Value = (Vec<(Currency, i64)>, Vec<Op>)> {
    let customer = (
        prop_oneof![
            Just(Currency::EUR),
            Just(Currency::JPY),
            Just(Currency::KWD)
        ],
        prop_oneof![Just(0i64), 1i64..3_000],
    );
    prop::collection::vec(customer, 2..5).prop_flat_map(|customers| {
        let n = customers.len();
        (Just(customers), prop::collection::vec(op(n), 1..40))
    })
}

async fn run(customers: Vec<(Currency, i64)>, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let db = TestDb::new().await;
    let store = &db.store;
    let now = Utc::now();
    let mut ids = Vec::new();
    let mut model: Vec<i64> = Vec::new();
    let mut tx = store.begin().await.unwrap();
    for (i, (currency, limit)) in customers.iter().enumerate() {
        let account = accounts_repo::create(
            tx.conn(),
            NewAccount {
                email: format!("p{i}@example.com"),
                name: format!("P{i}"),
                currency: *currency,
                credit_limit: *limit,
                country: None,
                time_zone: None,
                language: None,
                email_opt_out: vec![],
            },
            now,
        )
        .await
        .unwrap();
        ids.push(account.id);
        model.push(0);
    }
    tx.commit().await.unwrap();

    for (step, op) in ops.iter().enumerate() {
        let key = format!("step-{step}");
        let (draft, expect_ok, changes): (TransactionDraft, bool, Vec<(usize, i64)>) = match *op {
            Op::Credit { who, amount } => (
                TransactionDraft::adjustment(
                    &ids[who],
                    TransactionKind::Credit,
                    Money::new(amount, customers[who].0).unwrap(),
                    "credit",
                    key,
                    "test",
                ),
                true,
                vec![(who, amount)],
            ),
            Op::Debit { who, amount } => (
                TransactionDraft::adjustment(
                    &ids[who],
                    TransactionKind::Debit,
                    Money::new(amount, customers[who].0).unwrap(),
                    "debit",
                    key,
                    "test",
                ),
                model[who] - amount >= -customers[who].1,
                vec![(who, -amount)],
            ),
            Op::Transfer { from, to, amount } => {
                let draft = TransactionDraft::transfer(
                    &ids[from],
                    &ids[to],
                    Money::new(amount, customers[from].0).unwrap(),
                    "transfer",
                    key,
                    "test",
                );
                let ok = from != to
                    && customers[from].0 == customers[to].0
                    && model[from] - amount >= -customers[from].1;
                (draft, ok, vec![(from, -amount), (to, amount)])
            }
        };
        let mut tx = store.begin().await.unwrap();
        let result = ledger_repo::post(tx.conn(), &draft, now).await;
        match result {
            Ok(_) => {
                tx.commit().await.unwrap();
                prop_assert!(
                    expect_ok,
                    "step {step} {op:?} succeeded but the model refuses it"
                );
                for (who, delta) in changes {
                    model[who] += delta;
                }
            }
            Err(e) => {
                drop(tx);
                prop_assert!(!expect_ok, "step {step} {op:?} failed: {e}");
                let expected_kind = matches!(
                    e,
                    Error::InsufficientFunds { .. } | Error::Money(_) | Error::Ledger(_)
                );
                prop_assert!(expected_kind, "step {step}: unexpected error {e}");
            }
        }
        let mut r = store.reader().await.unwrap();
        for (i, id) in ids.iter().enumerate() {
            let ledger_id = LedgerAccountId::customer(id);
            let cached = ledger_repo::balance(r.conn(), &ledger_id)
                .await
                .unwrap()
                .balance;
            let summed = ledger_repo::sum_of_entries(r.conn(), &ledger_id)
                .await
                .unwrap();
            prop_assert_eq!(cached, summed, "cached balance equals the sum of entries");
            prop_assert_eq!(cached, model[i], "balance equals the model");
            prop_assert!(
                cached >= -customers[i].1,
                "never below minus the credit limit"
            );
        }
        drop(r);
        assert_ledger_clean(store).await;
    }
    db.store.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]
    #[test]
    fn ledger_invariants_hold_after_every_step((customers, ops) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(customers, ops))?;
    }
}

#[tokio::test]
async fn posting_the_same_key_twice_posts_once() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let mut tx = db.store.begin().await.unwrap();
    let acc = accounts_repo::create(
        tx.conn(),
        NewAccount {
            email: "k@example.com".into(),
            name: "K".into(),
            currency: Currency::EUR,
            credit_limit: 0,
            country: None,
            time_zone: None,
            language: None,
            email_opt_out: vec![],
        },
        now,
    )
    .await
    .unwrap();
    let draft = TransactionDraft::adjustment(
        &acc.id,
        TransactionKind::Credit,
        Money::new(10, Currency::EUR).unwrap(),
        "c",
        "same-key".into(),
        "t",
    );
    let first = ledger_repo::post(tx.conn(), &draft, now).await.unwrap();
    let second = ledger_repo::post(tx.conn(), &draft, now).await.unwrap();
    assert!(matches!(first, ledger_repo::Posted::New(_)));
    assert!(matches!(second, ledger_repo::Posted::Existing(_)));
    assert_eq!(first.transaction().id, second.transaction().id);
    let mut other = draft.clone();
    other.postings[0].amount = Money::new(11, Currency::EUR).unwrap();
    other.postings[1].amount = Money::new(-11, Currency::EUR).unwrap();
    assert!(matches!(
        ledger_repo::post(tx.conn(), &other, now).await,
        Err(Error::IdempotencyMismatch)
    ));
    tx.commit().await.unwrap();
    let mut r = db.store.reader().await.unwrap();
    assert_eq!(
        ledger_repo::balance(r.conn(), &LedgerAccountId::customer(&acc.id))
            .await
            .unwrap()
            .balance,
        10
    );
}

#[tokio::test]
async fn the_ledger_refuses_edits_to_posted_entries() {
    let db = TestDb::new().await;
    let now = Utc::now();
    let mut tx = db.store.begin().await.unwrap();
    let acc = accounts_repo::create(
        tx.conn(),
        NewAccount {
            email: "imm@example.com".into(),
            name: "I".into(),
            currency: Currency::EUR,
            credit_limit: 0,
            country: None,
            time_zone: None,
            language: None,
            email_opt_out: vec![],
        },
        now,
    )
    .await
    .unwrap();
    let draft = TransactionDraft::adjustment(
        &acc.id,
        TransactionKind::Credit,
        Money::new(10, Currency::EUR).unwrap(),
        "c",
        "imm".into(),
        "t",
    );
    ledger_repo::post(tx.conn(), &draft, now).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.store.begin().await.unwrap();
    let r = bursar::sql!(tx.conn(), c => sqlx::query("UPDATE ledger_entries SET amount = 1000000").execute(&mut *c).await.map(|_| ()));
    assert!(r.is_err(), "entries are append-only");
}
