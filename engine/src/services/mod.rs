//! The service state machine, operations and their retry policy. Pure.
//!
//! ```text
//! ordered ──pay──▶ opening ──opened──▶ active ◀──resume── suspended
//!    │                                   │ ──suspend(reason)──▶ │
//!    └──cancel──▶ closed ◀──closed── closing ◀──close── active | suspended
//! ```
//!
//! `suspend` and `resume` change the state at once (billing follows the
//! state) and queue an operation that makes the remote side follow;
//! `open` and `close` pass through `opening`/`closing` until the module
//! reports the work done.

pub mod module;
pub mod proration;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::calendar::{Period, Zone};
use crate::catalog::AddonValues;
use crate::money::Currency;

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// Ordered, not yet paid.
    Ordered,
    /// Paid; the module is setting it up.
    Opening,
    Active,
    Suspended,
    /// Being torn down by the module.
    Closing,
    Closed,
}

impl ServiceStatus {
    pub const ALL: [ServiceStatus; 6] = [
        ServiceStatus::Ordered,
        ServiceStatus::Opening,
        ServiceStatus::Active,
        ServiceStatus::Suspended,
        ServiceStatus::Closing,
        ServiceStatus::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Ordered => "ordered",
            ServiceStatus::Opening => "opening",
            ServiceStatus::Active => "active",
            ServiceStatus::Suspended => "suspended",
            ServiceStatus::Closing => "closing",
            ServiceStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ServiceStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Why a service is suspended. Only `non-payment` is lifted automatically
/// (by a payment or credit); `admin` and `abuse` only by staff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SuspendReason {
    NonPayment,
    Admin,
    Abuse,
}

impl SuspendReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspendReason::NonPayment => "non-payment",
            SuspendReason::Admin => "admin",
            SuspendReason::Abuse => "abuse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "non-payment" => SuspendReason::NonPayment,
            "admin" => SuspendReason::Admin,
            "abuse" => SuspendReason::Abuse,
            _ => return None,
        })
    }
}

/// Something that happens to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The order was paid.
    Pay,
    /// The module finished setting it up.
    Opened,
    Suspend,
    Resume,
    Close,
    /// The module finished tearing it down.
    Closed,
    /// An unpaid order was given up.
    Cancel,
    Prolong,
    ChangePlan,
    Reinstall,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Pay,
        Action::Opened,
        Action::Suspend,
        Action::Resume,
        Action::Close,
        Action::Closed,
        Action::Cancel,
        Action::Prolong,
        Action::ChangePlan,
        Action::Reinstall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pay => "pay",
            Action::Opened => "opened",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Close => "close",
            Action::Closed => "closed",
            Action::Cancel => "cancel",
            Action::Prolong => "prolong",
            Action::ChangePlan => "change_plan",
            Action::Reinstall => "reinstall",
        }
    }
}

/// The state an action leads to from `from`, or `None` when the action is
/// not allowed there. This table is the whole state machine.
pub fn transition(from: ServiceStatus, action: Action) -> Option<ServiceStatus> {
    use Action as A;
    use ServiceStatus as S;
    Some(match (from, action) {
        (S::Ordered, A::Pay) => S::Opening,
        (S::Ordered, A::Cancel) => S::Closed,
        (S::Opening, A::Opened) => S::Active,
        (S::Active, A::Suspend) => S::Suspended,
        (S::Suspended, A::Resume) => S::Active,
        (S::Active | S::Suspended, A::Close) => S::Closing,
        (S::Closing, A::Closed) => S::Closed,
        (S::Active, A::Prolong) => S::Active,
        (S::Suspended, A::Prolong) => S::Suspended,
        (S::Active, A::ChangePlan) => S::Active,
        (S::Active, A::Reinstall) => S::Active,
        _ => return None,
    })
}

/// The kinds of work a processing module does for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Open,
    Suspend,
    Resume,
    Close,
    Prolong,
    ChangePlan,
    Reinstall,
    /// Brings the remote side back to the service's state (ports, power),
    /// for modules that list `sync`: a `resume` of an active service, a
    /// `suspend` of a suspended one, reporting what it repaired.
    Sync,
}

impl OperationKind {
    pub const ALL: [OperationKind; 8] = [
        OperationKind::Open,
        OperationKind::Suspend,
        OperationKind::Resume,
        OperationKind::Close,
        OperationKind::Prolong,
        OperationKind::ChangePlan,
        OperationKind::Reinstall,
        OperationKind::Sync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Open => "open",
            OperationKind::Suspend => "suspend",
            OperationKind::Resume => "resume",
            OperationKind::Close => "close",
            OperationKind::Prolong => "prolong",
            OperationKind::ChangePlan => "change_plan",
            OperationKind::Reinstall => "reinstall",
            OperationKind::Sync => "sync",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        OperationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The transition applied to the service when the module reports the
    /// operation done (the others changed the state when they were queued).
    pub fn completion(self) -> Option<Action> {
        match self {
            OperationKind::Open => Some(Action::Opened),
            OperationKind::Close => Some(Action::Closed),
            _ => None,
        }
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationStatus {
    /// Due at `next_run_at`.
    Queued,
    /// Claimed by a runner until its lease ends.
    Running,
    /// The module is working remotely; poll at `next_run_at`.
    Waiting,
    Done,
    /// Needs staff: retry or complete it through the API.
    Manual,
    /// Refused by the module (a plan change it does not support): nothing
    /// it would have brought was applied.
    Canceled,
}

impl OperationStatus {
    pub const ALL: [OperationStatus; 6] = [
        OperationStatus::Queued,
        OperationStatus::Running,
        OperationStatus::Waiting,
        OperationStatus::Done,
        OperationStatus::Manual,
        OperationStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Queued => "queued",
            OperationStatus::Running => "running",
            OperationStatus::Waiting => "waiting",
            OperationStatus::Done => "done",
            OperationStatus::Manual => "manual",
            OperationStatus::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        OperationStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A service a customer bought.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub id: String,
    pub account_id: String,
    pub plan_id: String,
    pub status: ServiceStatus,
    pub suspend_reason: Option<SuspendReason>,
    pub period: Period,
    pub currency: Currency,
    /// What one period costs (plan price plus add-ons), minor units,
    /// before any tax added on top.
    pub recurring_price: i64,
    /// The order's setup fee (price), charged once with the first period.
    pub setup_fee: i64,
    /// For an unpaid order: what it costs to open it.
    pub amount_due: i64,
    pub addons: AddonValues,
    /// What the module reported (server id, IPs…). Secret values are kept
    /// apart and never listed.
    pub params: BTreeMap<String, String>,
    pub auto_renew: bool,
    /// The IANA time zone its periods are counted in.
    pub time_zone: Zone,
    /// When it was first activated: periods are counted from here.
    pub anchor_at: Option<DateTime<Utc>>,
    /// Days or months paid since the anchor.
    pub paid_units: i64,
    /// Start of the paid range that contains now: whole periods from here
    /// to `paid_until` are what a plan change prices the new plan on.
    pub period_start: Option<DateTime<Utc>>,
    /// End of the paid time.
    pub paid_until: Option<DateTime<Utc>>,
    /// How many periods `[period_start, paid_until)` holds.
    pub range_periods: i64,
    /// Since when `range_gross` was paid: `period_start`, or the last plan
    /// change.
    pub range_from: Option<DateTime<Utc>>,
    /// What the customer was charged for `[range_from, paid_until)`, tax
    /// included, minor units: a credit for unused time gives back a part
    /// of this and never more.
    pub range_gross: i64,
    /// The tax in `range_gross`, as invoiced.
    pub range_tax: i64,
    pub suspended_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of a service's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceEvent {
    pub id: i64,
    pub service_id: String,
    pub action: String,
    pub from_status: String,
    pub to_status: String,
    pub reason: Option<String>,
    /// Who: `api_key:…`, or `system:…` for the engine.
    pub actor: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// One line for the event log, before it is stored.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub service_id: &'a str,
    pub action: &'a str,
    pub from: ServiceStatus,
    pub to: ServiceStatus,
    pub reason: Option<&'a str>,
    pub actor: &'a str,
    pub detail: Option<&'a str>,
}

impl NewEvent<'_> {
    /// The webhook event (`service.{action}`) it is announced with.
    pub fn announcement(&self) -> (String, serde_json::Value) {
        (
            format!("service.{}", self.action),
            serde_json::json!({
                "service_id": self.service_id,
                "action": self.action,
                "from": self.from.as_str(),
                "to": self.to.as_str(),
                "reason": self.reason,
                "actor": self.actor,
                "detail": self.detail,
            }),
        )
    }
}

/// A unit of provisioning work for a service, run by the operation runner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Operation {
    pub id: String,
    pub service_id: String,
    pub kind: OperationKind,
    /// The module instance that does it.
    pub module: String,
    pub status: OperationStatus,
    pub attempts: i64,
    pub next_run_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// The module's reference to work in progress.
    pub remote_ref: Option<String>,
    pub progress: Option<String>,
    pub last_error: Option<String>,
    /// `unavailable`, `rejected`, `timeout`, `trap`… of the last failure.
    pub error_kind: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Operation {
    /// What a customer may see of an operation: its state and the kind of
    /// failure, never the module's own words (which can name hosts,
    /// servers or carry a plugin's trap) nor the module's references.
    pub fn summarize_for_customer(&mut self) {
        self.last_error = self.error_kind.as_deref().map(|kind| {
            match kind {
                "unavailable" | "timeout" | "trap" | "out_of_memory" | "internal" => {
                    "the provider could not do it yet; it is retried automatically"
                }
                "needs_staff" => "waiting for staff",
                "unsupported" | "rejected" => "the provider refused it",
                _ => "the provider failed; staff have been told",
            }
            .to_owned()
        });
        self.remote_ref = None;
        self.lease_owner = None;
        self.lease_until = None;
        self.progress = self
            .progress
            .as_ref()
            .map(|p| p.chars().take(200).collect());
    }
}

/// How retries of `unavailable` outcomes are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before the first retry, in milliseconds.
    pub base_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: u64,
    /// Attempts before the operation goes to the manual queue.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 5_000,
            max_ms: 3_600_000,
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": after attempt *n* (1-based)
    /// wait between half and all of `base × 2^(n-1)`, capped at `max`, and
    /// never less than what the module asked for.
    pub fn delay(&self, attempt: u32, asked: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let exp = self
            .base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(32))
            .min(self.max_ms);
        let half = exp / 2;
        let jittered = half + rng.random_range(0..=exp - half);
        Duration::from_millis(jittered).max(
            asked
                .unwrap_or_default()
                .min(Duration::from_millis(self.max_ms)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listed_transitions_exist() {
        let allowed: Vec<(ServiceStatus, Action)> = ServiceStatus::ALL
            .into_iter()
            .flat_map(|s| Action::ALL.into_iter().map(move |a| (s, a)))
            .filter(|(s, a)| transition(*s, *a).is_some())
            .collect();
        assert_eq!(allowed.len(), 12);
        assert_eq!(transition(ServiceStatus::Closed, Action::Resume), None);
        assert_eq!(transition(ServiceStatus::Opening, Action::Close), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            base_ms: 1000,
            max_ms: 10_000,
            max_attempts: 5,
        };
        let mut rng = rand::rng();
        for attempt in 1..10 {
            let d = p.delay(attempt, None, &mut rng).as_millis() as u64;
            let exp = (1000u64 << (attempt - 1)).min(10_000);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7)), &mut rng),
            Duration::from_secs(7)
        );
    }
}
