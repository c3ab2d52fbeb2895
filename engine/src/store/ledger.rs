//! Posting balanced transactions and reading balances.
//!
//! Invariants kept here, in the same database transaction as the entries:
//! every ledger account's cached `balance` equals the sum of its entries;
//! a debit never takes a balance below its `min_balance` (minus the credit
//! limit). The floor is checked by the `UPDATE … WHERE` itself, so it holds
//! under concurrency on both backends: PostgreSQL re-checks the condition
//! against the committed row after waiting for its lock, SQLite has a
//! single writer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;

use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::ledger::{
    LedgerAccountId, LedgerAccountKind, MAX_BALANCE, TransactionDraft, TransactionKind,
};
use crate::money::{Currency, MoneyError};
use crate::sql;
use crate::store::{Conn, Page, bulk};

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub transaction_id: String,
    pub ledger_account_id: String,
    /// Signed minor units: positive adds to the account.
    pub amount: i64,
    pub currency: Currency,
    pub created_at: DateTime<Utc>,
}

/// A stored transaction with its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerTransaction {
    pub id: String,
    pub idempotency_key: String,
    pub kind: TransactionKind,
    pub description: String,
    pub account_id: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub entries: Vec<Entry>,
}

/// The result of posting: new, or the transaction that already carried
/// this idempotency key (with identical postings).
#[derive(Debug)]
pub enum Posted {
    New(LedgerTransaction),
    Existing(LedgerTransaction),
}

impl Posted {
    pub fn transaction(&self) -> &LedgerTransaction {
        match self {
            Posted::New(t) | Posted::Existing(t) => t,
        }
    }

    pub fn into_transaction(self) -> LedgerTransaction {
        match self {
            Posted::New(t) | Posted::Existing(t) => t,
        }
    }
}

#[derive(FromRow)]
struct EntryRow {
    id: i64,
    transaction_id: String,
    ledger_account_id: String,
    amount: i64,
    currency: String,
    created_at: i64,
}

fn decode_error(what: String) -> Error {
    Error::Database(sqlx::Error::Decode(what.into()))
}

impl EntryRow {
    fn into_entry(self) -> Result<Entry> {
        Ok(Entry {
            currency: Currency::from_code(&self.currency)
                .map_err(|_| decode_error(format!("entry {}: bad currency", self.id)))?,
            id: self.id,
            transaction_id: self.transaction_id,
            ledger_account_id: self.ledger_account_id,
            amount: self.amount,
            created_at: from_micros(self.created_at),
        })
    }
}

#[derive(FromRow)]
struct TransactionRow {
    id: String,
    idempotency_key: String,
    kind: String,
    description: String,
    account_id: Option<String>,
    created_by: String,
    created_at: i64,
}

/// Posts a balanced transaction inside the caller's database transaction.
///
/// Posting a key that already exists posts nothing and returns the stored
/// transaction, provided the postings are the same; different postings
/// under a used key are an [`Error::IdempotencyMismatch`].
pub async fn post(mut c: Conn<'_>, draft: &TransactionDraft, now: DateTime<Utc>) -> Result<Posted> {
    draft.validate()?;
    // A refused posting (insufficient funds) must leave nothing behind in
    // the caller's transaction, which may go on and commit other work.
    sql!(&mut c, c => sqlx::query("SAVEPOINT ledger_post").execute(&mut **c).await.map(|r| r.rows_affected()))?;
    let result = post_inner(c.reborrow(), draft, now).await;
    let end = if result.is_ok() {
        "RELEASE SAVEPOINT ledger_post"
    } else {
        "ROLLBACK TO SAVEPOINT ledger_post"
    };
    sql!(&mut c, c => sqlx::query(end).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if result.is_err() {
        sql!(&mut c, c => sqlx::query("RELEASE SAVEPOINT ledger_post").execute(&mut **c).await.map(|r| r.rows_affected()))?;
    }
    result
}

async fn post_inner(
    mut c: Conn<'_>,
    draft: &TransactionDraft,
    now: DateTime<Utc>,
) -> Result<Posted> {
    let id = new_id("txn");
    let at = to_micros(now);
    let inserted: Option<String> = sql!(&mut c, c => sqlx::query_scalar(
        "INSERT INTO ledger_transactions (id, idempotency_key, kind, description, account_id, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING id")
        .bind(&id).bind(&draft.idempotency_key).bind(draft.kind.as_str()).bind(&draft.description)
        .bind(draft.account_id.as_deref()).bind(&draft.created_by).bind(at)
        .fetch_optional(&mut **c).await)?;
    if inserted.is_none() {
        let existing = find_by_key(c.reborrow(), &draft.idempotency_key)
            .await?
            .ok_or_else(|| Error::Conflict("ledger transaction vanished during posting".into()))?;
        return if same_postings(&existing, draft) {
            Ok(Posted::Existing(existing))
        } else {
            Err(Error::IdempotencyMismatch)
        };
    }

    let mut rows = bulk::Rows::new(5);
    for posting in draft.postings_in_lock_order() {
        apply_to_balance(
            c.reborrow(),
            posting.ledger_account.clone(),
            posting.amount.minor(),
            posting.amount.currency(),
            posting.enforce_limit,
            at,
        )
        .await?;
        rows.push([
            id.as_str().into(),
            posting.ledger_account.as_str().into(),
            posting.amount.minor().into(),
            posting.amount.currency().code().into(),
            at.into(),
        ]);
    }
    // Every entry in one statement; what it returns, in no promised order,
    // says which id each got.
    let inserted: Vec<(i64, String, i64, String)> = bulk::fetch_all(
        c.reborrow(),
        "INSERT INTO ledger_entries (transaction_id, ledger_account_id, amount, currency, created_at)
         {rows} RETURNING id, ledger_account_id, amount, currency",
        &rows,
    )
    .await?;
    let mut entries = inserted
        .into_iter()
        .map(|(entry_id, ledger_account_id, amount, currency)| {
            Ok(Entry {
                id: entry_id,
                transaction_id: id.clone(),
                ledger_account_id,
                amount,
                currency: Currency::from_code(&currency)
                    .map_err(|_| decode_error(format!("entry {entry_id}: bad currency")))?,
                created_at: now,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.id);
    Ok(Posted::New(LedgerTransaction {
        id,
        idempotency_key: draft.idempotency_key.clone(),
        kind: draft.kind,
        description: draft.description.clone(),
        account_id: draft.account_id.clone(),
        created_by: draft.created_by.clone(),
        created_at: now,
        entries,
    }))
}

/// A ledger account's balance and floor, as [`balances_for_update`] reads
/// them.
#[derive(Debug, Clone, FromRow)]
pub struct BalanceState {
    pub id: String,
    pub currency: String,
    pub balance: i64,
    pub min_balance: Option<i64>,
}

/// Reads ledger accounts' balances; on PostgreSQL they stay locked (taken
/// in id order, the order every posting locks them in) until the
/// transaction ends.
pub async fn balances_for_update(mut c: Conn<'_>, ids: &[String]) -> Result<Vec<BalanceState>> {
    let lock = if matches!(c, Conn::Postgres(_)) {
        " FOR UPDATE"
    } else {
        ""
    };
    let q = format!(
        "SELECT id, currency, balance, min_balance FROM ledger_accounts WHERE id IN {{ids}} ORDER BY id{lock}"
    );
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    bulk::fetch_in(c.reborrow(), &q, &ids).await
}

/// Posts many new transactions at once, with multi-row statements: the
/// batch form of [`post`] for the engine's own bulk work (renewal passes).
///
/// Every key must be new: if any was posted before, nothing is posted and
/// the error says so, and the caller posts those one by one with [`post`].
/// Each ledger account's balance moves once, by the sum of its postings,
/// in lock order; its floor is checked on that net movement, so callers
/// check each debit themselves first (as renewals do under lock). An
/// account that would leave its allowed range fails the whole call, and
/// with it the caller's transaction.
pub async fn post_many(
    mut c: Conn<'_>,
    drafts: &[TransactionDraft],
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let at = to_micros(now);
    let mut transactions = bulk::Rows::new(7);
    let mut entries = bulk::Rows::new(5);
    // Net movement per ledger account (kept in lock order), and whether
    // every debit of it enforces the floor.
    let mut moves: BTreeMap<&LedgerAccountId, (Currency, i64, bool)> = BTreeMap::new();
    let mut ids = Vec::with_capacity(drafts.len());
    for draft in drafts {
        draft.validate()?;
        let id = new_id("txn");
        transactions.push([
            id.as_str().into(),
            draft.idempotency_key.as_str().into(),
            draft.kind.as_str().into(),
            draft.description.as_str().into(),
            draft.account_id.as_deref().into(),
            draft.created_by.as_str().into(),
            at.into(),
        ]);
        for p in draft.postings_in_lock_order() {
            let currency = p.amount.currency();
            entries.push([
                id.as_str().into(),
                p.ledger_account.as_str().into(),
                p.amount.minor().into(),
                currency.code().into(),
                at.into(),
            ]);
            let m = moves
                .entry(&p.ledger_account)
                .or_insert((currency, 0, true));
            if m.0 != currency {
                return Err(MoneyError::CurrencyMismatch(currency, m.0).into());
            }
            m.1 =
                m.1.checked_add(p.amount.minor())
                    .ok_or(MoneyError::OutOfRange)?;
            m.2 &= p.enforce_limit;
        }
        ids.push(id);
    }
    let inserted: Vec<(String,)> = bulk::fetch_all(
        c.reborrow(),
        "INSERT INTO ledger_transactions (id, idempotency_key, kind, description, account_id, created_by, created_at)
         {rows} ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        &transactions,
    )
    .await?;
    if inserted.len() != drafts.len() {
        return Err(Error::Conflict(format!(
            "{} of {} ledger keys in a batch were posted before",
            drafts.len() - inserted.len(),
            drafts.len()
        )));
    }
    // The engine's own accounts are opened on first use.
    let mut system = bulk::Rows::new(4);
    for (account, (currency, _, _)) in &moves {
        if let Some(kind) = account.kind().filter(|k| *k != LedgerAccountKind::Customer) {
            system.push([
                account.as_str().into(),
                kind.as_str().into(),
                currency.code().into(),
                at.into(),
            ]);
        }
    }
    bulk::execute(
        c.reborrow(),
        "INSERT INTO ledger_accounts (id, kind, currency, created_at) {rows} ON CONFLICT (id) DO NOTHING",
        &system,
    )
    .await?;
    bulk::execute(
        c.reborrow(),
        "INSERT INTO ledger_entries (transaction_id, ledger_account_id, amount, currency, created_at) {rows}",
        &entries,
    )
    .await?;
    let touched: Vec<String> = moves.keys().map(|a| a.to_string()).collect();
    if matches!(c, Conn::Postgres(_)) {
        balances_for_update(c.reborrow(), &touched).await?;
    }
    let mut deltas = bulk::Rows::new(4);
    for (account, (currency, delta, enforce)) in &moves {
        deltas.push([
            account.as_str().into(),
            currency.code().into(),
            (*delta).into(),
            i64::from(*enforce).into(),
        ]);
    }
    let moved = bulk::execute(
        c.reborrow(),
        &format!(
            "WITH v (id, currency, delta, enforce) AS ({{rows}})
             UPDATE ledger_accounts SET balance = ledger_accounts.balance + v.delta
             FROM v
             WHERE ledger_accounts.id = v.id AND ledger_accounts.currency = v.currency
               AND ledger_accounts.balance + v.delta BETWEEN {} AND {}
               AND (v.delta >= 0 OR v.enforce = 0 OR ledger_accounts.min_balance IS NULL
                    OR ledger_accounts.balance + v.delta >= ledger_accounts.min_balance)",
            -MAX_BALANCE, MAX_BALANCE
        ),
        &deltas,
    )
    .await?;
    if moved != touched.len() as u64 {
        return Err(Error::Conflict(format!(
            "{} of {} ledger accounts in a batch are missing or would leave their allowed range",
            touched.len() as u64 - moved,
            touched.len()
        )));
    }
    Ok(ids)
}

fn same_postings(existing: &LedgerTransaction, draft: &TransactionDraft) -> bool {
    let mut a: Vec<(String, i64, Currency)> = existing
        .entries
        .iter()
        .map(|e| (e.ledger_account_id.clone(), e.amount, e.currency))
        .collect();
    let mut b: Vec<(String, i64, Currency)> = draft
        .postings
        .iter()
        .map(|p| {
            (
                p.ledger_account.to_string(),
                p.amount.minor(),
                p.amount.currency(),
            )
        })
        .collect();
    a.sort();
    b.sort();
    existing.kind == draft.kind && a == b
}

/// Moves one ledger account's cached balance, refusing to cross its floor.
async fn apply_to_balance(
    mut c: Conn<'_>,
    ledger_account: LedgerAccountId,
    amount: i64,
    currency: Currency,
    enforce_limit: bool,
    at: i64,
) -> Result<()> {
    for attempt in 0..2 {
        let updated: Option<i64> = sql!(&mut c, c => sqlx::query_scalar(
            "UPDATE ledger_accounts SET balance = balance + $1
             WHERE id = $2 AND currency = $3
               AND balance + $1 BETWEEN $5 AND $6
               AND ($1 >= 0 OR $4 = 0 OR min_balance IS NULL OR balance + $1 >= min_balance)
             RETURNING balance")
            .bind(amount).bind(ledger_account.as_str()).bind(currency.code())
            .bind(i64::from(enforce_limit)).bind(-MAX_BALANCE).bind(MAX_BALANCE)
            .fetch_optional(&mut **c).await)?;
        if updated.is_some() {
            return Ok(());
        }
        let state = read_ledger_account(c.reborrow(), &ledger_account).await?;
        match state {
            None => {
                let kind = ledger_account.kind();
                if attempt > 0 || matches!(kind, None | Some(LedgerAccountKind::Customer)) {
                    return Err(Error::not_found(
                        "ledger account",
                        ledger_account.to_string(),
                    ));
                }
                // The engine's own accounts are opened on first use.
                sql!(&mut c, c => sqlx::query(
                    "INSERT INTO ledger_accounts (id, kind, account_id, currency, balance, min_balance, created_at)
                     VALUES ($1, $2, NULL, $3, 0, NULL, $4) ON CONFLICT (id) DO NOTHING")
                    .bind(ledger_account.as_str()).bind(kind.map(LedgerAccountKind::as_str))
                    .bind(currency.code()).bind(at)
                    .execute(&mut **c).await.map(|r| r.rows_affected()))?;
            }
            Some(state) => {
                if state.currency != currency.code() {
                    let theirs = Currency::from_code(&state.currency)?;
                    return Err(MoneyError::CurrencyMismatch(currency, theirs).into());
                }
                // On PostgreSQL the row may have been committed by another
                // transaction (the engine's account opened on first use)
                // after our UPDATE looked and before this read: then the
                // movement it allows is tried again.
                let after = state.balance + amount;
                let allowed = (-MAX_BALANCE..=MAX_BALANCE).contains(&after)
                    && (amount >= 0
                        || !enforce_limit
                        || state.min_balance.is_none_or(|m| after >= m));
                if allowed && attempt == 0 {
                    continue;
                }
                return Err(match state.account_id {
                    Some(account_id) if amount < 0 => Error::InsufficientFunds {
                        account_id,
                        currency: state.currency,
                        balance: state.balance,
                        credit_limit: state.min_balance.map_or(0, |m| -m),
                        required: -amount,
                    },
                    _ => Error::Conflict(format!(
                        "ledger account {ledger_account} would leave its allowed range"
                    )),
                });
            }
        }
    }
    Err(Error::not_found(
        "ledger account",
        ledger_account.to_string(),
    ))
}

#[derive(FromRow)]
struct LedgerAccountState {
    account_id: Option<String>,
    currency: String,
    balance: i64,
    min_balance: Option<i64>,
}

async fn read_ledger_account(
    mut c: Conn<'_>,
    id: &LedgerAccountId,
) -> Result<Option<LedgerAccountState>> {
    Ok(sql!(&mut c, c => sqlx::query_as(
        "SELECT account_id, currency, balance, min_balance FROM ledger_accounts WHERE id = $1")
        .bind(id.as_str()).fetch_optional(&mut **c).await)?)
}

pub async fn find_by_key(mut c: Conn<'_>, key: &str) -> Result<Option<LedgerTransaction>> {
    let row: Option<TransactionRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, idempotency_key, kind, description, account_id, created_by, created_at
         FROM ledger_transactions WHERE idempotency_key = $1")
        .bind(key).fetch_optional(&mut **c).await)?;
    let Some(row) = row else { return Ok(None) };
    let entries: Vec<EntryRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, transaction_id, ledger_account_id, amount, currency, created_at
         FROM ledger_entries WHERE transaction_id = $1 ORDER BY id")
        .bind(&row.id).fetch_all(&mut **c).await)?;
    Ok(Some(LedgerTransaction {
        kind: TransactionKind::parse(&row.kind)
            .ok_or_else(|| decode_error(format!("transaction {}: bad kind", row.id)))?,
        id: row.id,
        idempotency_key: row.idempotency_key,
        description: row.description,
        account_id: row.account_id,
        created_by: row.created_by,
        created_at: from_micros(row.created_at),
        entries: entries
            .into_iter()
            .map(EntryRow::into_entry)
            .collect::<Result<_>>()?,
    }))
}

/// A ledger account's balance as cached, with its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub balance: i64,
    /// Lowest allowed balance; `None` means no floor.
    pub min_balance: Option<i64>,
}

/// A customer account's balance and its currency, in one statement;
/// `None` when there is no such account (every account has its ledger
/// account from the start, in the account's currency).
pub async fn customer_balance(
    mut c: Conn<'_>,
    account_id: &str,
) -> Result<Option<(Currency, Balance)>> {
    let id = LedgerAccountId::customer(account_id);
    let Some(state) = read_ledger_account(c.reborrow(), &id).await? else {
        return Ok(None);
    };
    let currency = Currency::from_code(&state.currency)
        .map_err(|_| decode_error(format!("ledger account {id}: bad currency")))?;
    Ok(Some((
        currency,
        Balance {
            balance: state.balance,
            min_balance: state.min_balance,
        },
    )))
}

pub async fn balance(mut c: Conn<'_>, id: &LedgerAccountId) -> Result<Balance> {
    let state = read_ledger_account(c.reborrow(), id)
        .await?
        .ok_or_else(|| Error::not_found("ledger account", id.to_string()))?;
    Ok(Balance {
        balance: state.balance,
        min_balance: state.min_balance,
    })
}

/// The sum of a ledger account's entries, computed from the entries.
pub async fn sum_of_entries(mut c: Conn<'_>, id: &LedgerAccountId) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COALESCE(CAST(SUM(amount) AS BIGINT), 0) FROM ledger_entries WHERE ledger_account_id = $1")
        .bind(id.as_str()).fetch_one(&mut **c).await)?)
}

/// An entry as a customer statement shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    pub entry_id: i64,
    pub transaction_id: String,
    pub kind: TransactionKind,
    pub description: String,
    /// Signed minor units: positive adds to the balance.
    pub amount: i64,
    pub currency: Currency,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// Entries of one ledger account, oldest first, after the cursor (an entry id).
pub async fn statement(
    mut c: Conn<'_>,
    id: &LedgerAccountId,
    after: Option<i64>,
    limit: usize,
) -> Result<Page<StatementLine>> {
    let rows: Vec<StatementRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT e.id, e.transaction_id, t.kind, t.description, e.amount, e.currency, t.created_by, e.created_at
         FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
         WHERE e.ledger_account_id = $1 AND e.id > $2 ORDER BY e.id LIMIT $3")
        .bind(id.as_str()).bind(after.unwrap_or(0)).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let lines = statement_lines(rows)?;
    Ok(Page::from_rows(lines, limit, |l| l.entry_id.to_string()))
}

/// The account's last `limit` ledger lines, newest first.
pub async fn latest_lines(
    mut c: Conn<'_>,
    id: &LedgerAccountId,
    limit: usize,
) -> Result<Vec<StatementLine>> {
    let rows: Vec<StatementRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT e.id, e.transaction_id, t.kind, t.description, e.amount, e.currency, t.created_by, e.created_at
         FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
         WHERE e.ledger_account_id = $1 ORDER BY e.id DESC LIMIT $2")
        .bind(id.as_str()).bind(limit as i64).fetch_all(&mut **c).await)?;
    statement_lines(rows)
}

#[derive(FromRow)]
struct StatementRow {
    id: i64,
    transaction_id: String,
    kind: String,
    description: String,
    amount: i64,
    currency: String,
    created_by: String,
    created_at: i64,
}

fn statement_lines(rows: Vec<StatementRow>) -> Result<Vec<StatementLine>> {
    rows.into_iter()
        .map(|r| {
            Ok(StatementLine {
                kind: TransactionKind::parse(&r.kind)
                    .ok_or_else(|| decode_error(format!("entry {}: bad kind", r.id)))?,
                currency: Currency::from_code(&r.currency)
                    .map_err(|_| decode_error(format!("entry {}: bad currency", r.id)))?,
                entry_id: r.id,
                transaction_id: r.transaction_id,
                description: r.description,
                amount: r.amount,
                created_by: r.created_by,
                created_at: from_micros(r.created_at),
            })
        })
        .collect()
}

/// What an audit of the whole ledger found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Sum of all entries per currency; each must be zero.
    pub totals: Vec<(String, i64)>,
    /// Ledger accounts whose cached balance differs from their entries:
    /// (id, cached, sum of entries).
    pub mismatched_balances: Vec<(String, i64, i64)>,
    /// Ledger accounts below their floor: (id, balance, floor).
    pub below_floor: Vec<(String, i64, i64)>,
    /// Transactions whose entries do not sum to zero per currency.
    pub unbalanced_transactions: Vec<String>,
}

impl Audit {
    pub fn is_clean(&self) -> bool {
        self.totals.iter().all(|(_, t)| *t == 0)
            && self.mismatched_balances.is_empty()
            && self.below_floor.is_empty()
            && self.unbalanced_transactions.is_empty()
    }
}

/// Checks the ledger's invariants over the whole database.
pub async fn audit(mut c: Conn<'_>) -> Result<Audit> {
    let totals: Vec<(String, i64)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT currency, CAST(SUM(amount) AS BIGINT) FROM ledger_entries GROUP BY currency ORDER BY currency")
        .fetch_all(&mut **c).await)?;
    let mismatched_balances: Vec<(String, i64, i64)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT la.id, la.balance, COALESCE(s.total, 0) FROM ledger_accounts la
         LEFT JOIN (SELECT ledger_account_id, CAST(SUM(amount) AS BIGINT) AS total
                    FROM ledger_entries GROUP BY ledger_account_id) s ON s.ledger_account_id = la.id
         WHERE la.balance <> COALESCE(s.total, 0) ORDER BY la.id")
        .fetch_all(&mut **c).await)?;
    let below_floor: Vec<(String, i64, i64)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, balance, min_balance FROM ledger_accounts
         WHERE min_balance IS NOT NULL AND balance < min_balance ORDER BY id")
        .fetch_all(&mut **c).await)?;
    let unbalanced_transactions: Vec<String> = sql!(&mut c, c => sqlx::query_scalar(
        "SELECT transaction_id FROM ledger_entries GROUP BY transaction_id, currency
         HAVING SUM(amount) <> 0 ORDER BY transaction_id")
        .fetch_all(&mut **c).await)?;
    Ok(Audit {
        totals,
        mismatched_balances,
        below_floor,
        unbalanced_transactions,
    })
}
