//! Double-entry ledger rules, free of I/O.
//!
//! A [`TransactionDraft`] is two or more postings whose amounts sum to zero
//! per currency. Sign convention: a positive amount on a customer's balance
//! account means the customer has more money with us; every movement takes
//! it from (or gives it to) another ledger account, so the sum over all
//! ledger accounts of one currency is always zero.
//!
//! Persisting a draft (and keeping cached balances equal to the sum of the
//! entries) is the store's job: `store::ledger::post`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, MAX_AMOUNT, Money};

/// Largest absolute cached balance a ledger account may reach. Together with
/// [`MAX_AMOUNT`] per posting this keeps `balance + amount` inside `i64` in
/// SQL, where SQLite would otherwise silently turn an overflow into a float.
pub const MAX_BALANCE: i64 = 4_000_000_000_000_000_000;

/// What a ledger account stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccountKind {
    /// A customer's prepaid balance (may go down to minus its credit limit).
    Customer,
    /// Income from charges for services.
    Revenue,
    /// Money a payment gateway has confirmed but not yet settled to us.
    GatewayClearing,
    /// Tax collected on charges, owed to the authorities.
    Tax,
    /// Staff corrections: manual credits and debits.
    Adjustments,
    /// Money set aside from balances for work a module has not finished
    /// (a plan change): it goes back, or pays for the work, when the module
    /// answers.
    Holds,
}

impl LedgerAccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerAccountKind::Customer => "customer",
            LedgerAccountKind::Revenue => "revenue",
            LedgerAccountKind::GatewayClearing => "gateway_clearing",
            LedgerAccountKind::Tax => "tax",
            LedgerAccountKind::Adjustments => "adjustments",
            LedgerAccountKind::Holds => "holds",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "customer" => LedgerAccountKind::Customer,
            "revenue" => LedgerAccountKind::Revenue,
            "gateway_clearing" => LedgerAccountKind::GatewayClearing,
            "tax" => LedgerAccountKind::Tax,
            "adjustments" => LedgerAccountKind::Adjustments,
            "holds" => LedgerAccountKind::Holds,
            _ => return None,
        })
    }
}

/// The id of a ledger account. Ids are derived, not stored elsewhere:
/// `customer:{account id}` for a customer balance, `{kind}:{currency}` for
/// the engine's own accounts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerAccountId(String);

impl LedgerAccountId {
    pub fn customer(account_id: &str) -> Self {
        LedgerAccountId(format!("customer:{account_id}"))
    }

    /// One of the engine's own accounts for `currency`.
    pub fn system(kind: LedgerAccountKind, currency: Currency) -> Self {
        debug_assert!(kind != LedgerAccountKind::Customer);
        LedgerAccountId(format!("{}:{}", kind.as_str(), currency))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind encoded in the id.
    pub fn kind(&self) -> Option<LedgerAccountKind> {
        self.0
            .split_once(':')
            .and_then(|(k, _)| LedgerAccountKind::parse(k))
    }
}

impl fmt::Display for LedgerAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// Staff added money to a balance.
    Credit,
    /// Staff took money from a balance.
    Debit,
    /// Money moved between two customers' balances.
    Transfer,
    /// A service was charged (order, renewal, plan change).
    Charge,
    /// Part of a charge given back (e.g. the unused part of a plan).
    ChargeReversal,
    /// A gateway payment landed on a balance.
    Payment,
    /// A gateway payment was given back.
    Refund,
    /// Money set aside until a module answers.
    Hold,
    /// Money set aside goes back to the balance.
    HoldRelease,
}

impl TransactionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Credit => "credit",
            TransactionKind::Debit => "debit",
            TransactionKind::Transfer => "transfer",
            TransactionKind::Charge => "charge",
            TransactionKind::ChargeReversal => "charge_reversal",
            TransactionKind::Payment => "payment",
            TransactionKind::Refund => "refund",
            TransactionKind::Hold => "hold",
            TransactionKind::HoldRelease => "hold_release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "credit" => TransactionKind::Credit,
            "debit" => TransactionKind::Debit,
            "transfer" => TransactionKind::Transfer,
            "charge" => TransactionKind::Charge,
            "charge_reversal" => TransactionKind::ChargeReversal,
            "payment" => TransactionKind::Payment,
            "refund" => TransactionKind::Refund,
            "hold" => TransactionKind::Hold,
            "hold_release" => TransactionKind::HoldRelease,
            _ => return None,
        })
    }
}

/// One line of a transaction: an amount added to (positive) or taken from
/// (negative) a ledger account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub ledger_account: LedgerAccountId,
    pub amount: Money,
    /// When false, a debit may take a customer balance below minus its
    /// credit limit (staff forcing a refund, with a reason).
    pub enforce_limit: bool,
}

impl Posting {
    pub fn new(ledger_account: LedgerAccountId, amount: Money) -> Self {
        Posting {
            ledger_account,
            amount,
            enforce_limit: true,
        }
    }
}

/// A balanced transaction waiting to be posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionDraft {
    /// Unique per transaction; posting the same key twice posts once.
    pub idempotency_key: String,
    pub kind: TransactionKind,
    pub description: String,
    /// The customer account this transaction is about, if any.
    pub account_id: Option<String>,
    /// Who caused it: an API key id, or `system:…` for the engine itself.
    pub created_by: String,
    pub postings: Vec<Posting>,
}

/// Why a draft cannot be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("a transaction needs at least two postings")]
    TooFewPostings,
    #[error("postings in {0} sum to {1} minor units instead of zero")]
    Unbalanced(Currency, i128),
    #[error("a posting of zero is meaningless")]
    ZeroPosting,
    #[error("a posting exceeds {MAX_AMOUNT} minor units")]
    PostingTooLarge,
    #[error("the idempotency key must be 1 to 255 characters")]
    BadIdempotencyKey,
    #[error("two postings touch the same ledger account {0}")]
    DuplicateAccount(LedgerAccountId),
}

impl TransactionDraft {
    /// Checks the double-entry rules. A draft that passes always sums to
    /// zero per currency.
    pub fn validate(&self) -> Result<(), LedgerError> {
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > 255 {
            return Err(LedgerError::BadIdempotencyKey);
        }
        if self.postings.len() < 2 {
            return Err(LedgerError::TooFewPostings);
        }
        let mut sums: BTreeMap<Currency, i128> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.postings {
            if p.amount.minor() == 0 {
                return Err(LedgerError::ZeroPosting);
            }
            if p.amount.minor().abs() > MAX_AMOUNT {
                return Err(LedgerError::PostingTooLarge);
            }
            if !seen.insert(&p.ledger_account) {
                return Err(LedgerError::DuplicateAccount(p.ledger_account.clone()));
            }
            *sums.entry(p.amount.currency()).or_default() += i128::from(p.amount.minor());
        }
        for (currency, sum) in sums {
            if sum != 0 {
                return Err(LedgerError::Unbalanced(currency, sum));
            }
        }
        Ok(())
    }

    /// Postings ordered by ledger account id: the store updates balances in
    /// this order so that concurrent transactions never deadlock.
    pub fn postings_in_lock_order(&self) -> Vec<&Posting> {
        let mut v: Vec<&Posting> = self.postings.iter().collect();
        v.sort_by(|a, b| a.ledger_account.cmp(&b.ledger_account));
        v
    }
}

impl TransactionDraft {
    /// Staff adds money to (`Credit`) or takes it from (`Debit`) a customer
    /// balance; the other side is the adjustments account. `amount` is
    /// positive.
    pub fn adjustment(
        account_id: &str,
        kind: TransactionKind,
        amount: Money,
        reason: &str,
        idempotency_key: String,
        created_by: &str,
    ) -> Self {
        let to_customer = match kind {
            TransactionKind::Debit => amount.negate(),
            _ => amount,
        };
        TransactionDraft {
            idempotency_key,
            kind,
            description: reason.to_owned(),
            account_id: Some(account_id.to_owned()),
            created_by: created_by.to_owned(),
            postings: vec![
                Posting::new(LedgerAccountId::customer(account_id), to_customer),
                Posting::new(
                    LedgerAccountId::system(LedgerAccountKind::Adjustments, amount.currency()),
                    to_customer.negate(),
                ),
            ],
        }
    }

    /// Sets `amount` of a balance aside (`release` = false) or gives it
    /// back (`release` = true).
    pub fn hold(
        account_id: &str,
        amount: Money,
        release: bool,
        description: &str,
        idempotency_key: String,
        created_by: &str,
    ) -> Self {
        let to_customer = if release { amount } else { amount.negate() };
        TransactionDraft {
            idempotency_key,
            kind: if release {
                TransactionKind::HoldRelease
            } else {
                TransactionKind::Hold
            },
            description: description.to_owned(),
            account_id: Some(account_id.to_owned()),
            created_by: created_by.to_owned(),
            postings: vec![
                Posting::new(LedgerAccountId::customer(account_id), to_customer),
                Posting::new(
                    LedgerAccountId::system(LedgerAccountKind::Holds, amount.currency()),
                    to_customer.negate(),
                ),
            ],
        }
    }

    /// Moves a positive `amount` from one customer balance to another.
    pub fn transfer(
        from_account: &str,
        to_account: &str,
        amount: Money,
        description: &str,
        idempotency_key: String,
        created_by: &str,
    ) -> Self {
        TransactionDraft {
            idempotency_key,
            kind: TransactionKind::Transfer,
            description: description.to_owned(),
            account_id: Some(from_account.to_owned()),
            created_by: created_by.to_owned(),
            postings: vec![
                Posting::new(LedgerAccountId::customer(from_account), amount.negate()),
                Posting::new(LedgerAccountId::customer(to_account), amount),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(m: i64) -> Money {
        Money::new(m, Currency::EUR).unwrap()
    }

    fn draft(postings: Vec<Posting>) -> TransactionDraft {
        TransactionDraft {
            idempotency_key: "k".into(),
            kind: TransactionKind::Credit,
            description: "t".into(),
            account_id: None,
            created_by: "test".into(),
            postings,
        }
    }

    #[test]
    fn balanced_drafts_pass_and_unbalanced_fail() {
        let a = LedgerAccountId::customer("acc_1");
        let adj = LedgerAccountId::system(LedgerAccountKind::Adjustments, Currency::EUR);
        assert!(
            draft(vec![
                Posting::new(a.clone(), eur(100)),
                Posting::new(adj.clone(), eur(-100))
            ])
            .validate()
            .is_ok()
        );
        assert_eq!(
            draft(vec![
                Posting::new(a.clone(), eur(100)),
                Posting::new(adj.clone(), eur(-99))
            ])
            .validate(),
            Err(LedgerError::Unbalanced(Currency::EUR, 1))
        );
        assert_eq!(
            draft(vec![Posting::new(a.clone(), eur(100))]).validate(),
            Err(LedgerError::TooFewPostings)
        );
        assert_eq!(
            draft(vec![
                Posting::new(a.clone(), eur(0)),
                Posting::new(adj.clone(), eur(0))
            ])
            .validate(),
            Err(LedgerError::ZeroPosting)
        );
        let jpy = Money::new(100, Currency::JPY).unwrap();
        let adj_jpy = LedgerAccountId::system(LedgerAccountKind::Adjustments, Currency::JPY);
        assert_eq!(
            draft(vec![
                Posting::new(a, eur(100)),
                Posting::new(adj_jpy, jpy.negate())
            ])
            .validate(),
            Err(LedgerError::Unbalanced(Currency::EUR, 100))
        );
    }

    #[test]
    fn ids_encode_their_kind() {
        let id = LedgerAccountId::system(LedgerAccountKind::GatewayClearing, Currency::KWD);
        assert_eq!(id.as_str(), "gateway_clearing:KWD");
        assert_eq!(id.kind(), Some(LedgerAccountKind::GatewayClearing));
        assert_eq!(
            LedgerAccountId::customer("acc_x").kind(),
            Some(LedgerAccountKind::Customer)
        );
    }
}
