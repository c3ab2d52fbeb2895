//! The operation runner: claims due operations with a lease, calls their
//! module outside any database transaction, and records the outcome fenced
//! by the claim token, so a runner that lost its lease (paused, crashed,
//! cut off) can never apply a result twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::error::Result;
use crate::lifecycle::operations::{self, ACCOUNT_PARAM, Done};
use crate::secrets::Secrets;
use crate::services::module::{
    ModuleError, ModuleOutcome, ModuleRegistry, ModuleRequest, ServiceContext,
};
use crate::services::{OperationStatus, RetryPolicy};
use crate::store::accounts as accounts_repo;
use crate::store::catalog as plans_repo;
use crate::store::services::{self as repo, Claimed, OperationUpdate};
use crate::store::statistics::ClaimStatistics;
use crate::store::{Backend, Store, Tx};

/// How the runner works; `[operations]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// How long a claim holds before another runner may take the
    /// operation over (it must exceed `call_timeout_ms`).
    pub lease_ms: u64,
    /// Operations claimed at once.
    pub batch: usize,
    /// Pause between polls of the queue when it is idle.
    pub poll_interval_ms: u64,
    /// Longest a module call may take.
    pub call_timeout_ms: u64,
    /// First retry delay of a failed call; doubles each attempt.
    pub retry_base_ms: u64,
    /// Longest retry delay.
    pub retry_max_ms: u64,
    /// Attempts before an operation goes to the manual queue.
    pub max_attempts: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        let retry = RetryPolicy::default();
        RunnerConfig {
            lease_ms: 300_000,
            batch: 16,
            poll_interval_ms: 500,
            call_timeout_ms: 60_000,
            retry_base_ms: retry.base_ms,
            retry_max_ms: retry.max_ms,
            max_attempts: retry.max_attempts,
        }
    }
}

impl RunnerConfig {
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            base_ms: self.retry_base_ms,
            max_ms: self.retry_max_ms,
            max_attempts: self.max_attempts,
        }
    }
}

/// Who the engine itself is in the event log.
pub const RUNNER_ACTOR: &str = "system:operations";

pub struct OperationRunner {
    store: Store,
    modules: ModuleRegistry,
    clock: SharedClock,
    secrets: Arc<Secrets>,
    owner: String,
    config: RunnerConfig,
    /// Outcomes recorded in a transaction with others.
    together: AtomicU64,
    /// Refreshes the planner's view of the queue when a claim was slow.
    statistics: ClaimStatistics,
}

impl OperationRunner {
    pub fn new(
        store: Store,
        modules: ModuleRegistry,
        clock: SharedClock,
        secrets: Arc<Secrets>,
        config: RunnerConfig,
    ) -> Self {
        let owner = format!(
            "runner-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        OperationRunner {
            store,
            modules,
            clock,
            secrets,
            owner,
            config,
            together: AtomicU64::new(0),
            statistics: ClaimStatistics::new("operations"),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How many outcomes this runner recorded in one transaction with
    /// others.
    pub fn recorded_together(&self) -> u64 {
        self.together.load(Ordering::Relaxed)
    }

    /// Claims one batch of due operations and runs them. Returns how many
    /// were claimed.
    pub async fn run_once(&self) -> Result<usize> {
        let now = self.clock.now();
        let lease_until = now + chrono::Duration::milliseconds(self.config.lease_ms as i64);
        let claimed = self
            .statistics
            .claim(&self.store, async |c| {
                repo::claim_due(c, &self.owner, now, lease_until, self.config.batch).await
            })
            .await?;
        let n = claimed.len();
        self.run_grouped(claimed).await;
        Ok(n)
    }

    /// The calls run at once, and every outcome that is in when a
    /// transaction is to be had is recorded in one: one commit (an fsync)
    /// for the group instead of one per outcome, which held SQLite's one
    /// writer and, on PostgreSQL, cost the orders arriving meanwhile
    /// 12–31 % of their rate (docs/BENCHMARKS.md, eighth round).
    ///
    /// On PostgreSQL only outcomes that write nothing but their operation
    /// and a staff note are grouped (in progress, a retry, the manual
    /// queue). One that completes or cancels its operation may lock the
    /// service, the customer's ledger rows and the shared system accounts;
    /// held in a group while the next outcome locks another customer's,
    /// they would form lock cycles with orders and payments. Those are
    /// recorded each in a transaction of its own, side by side, as they
    /// always were. SQLite has one writer and no such cycles.
    async fn run_grouped(&self, claimed: Vec<Claimed>) {
        let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
        let calls = async move {
            let mut calls: FuturesUnordered<_> = claimed
                .into_iter()
                .map(|c| async move {
                    let outcome = self.call(&c).await;
                    (c, outcome)
                })
                .collect();
            while let Some(called) = calls.next().await {
                // The receiver lives until every sender is gone.
                let _ = done.send(called);
            }
        };
        let record = async {
            while let Some(first) = outcomes.recv().await {
                let mut ready = vec![first];
                let tx = match self.records_alone(&ready[0]) {
                    true => None,
                    // Calls go on while this waits for a transaction;
                    // what they bring by then joins the group.
                    false => Some(self.store.begin().await),
                };
                while let Ok(next) = outcomes.try_recv() {
                    ready.push(next);
                }
                let (alone, group): (Vec<_>, Vec<_>) =
                    ready.into_iter().partition(|r| self.records_alone(r));
                let alone = futures::future::join_all(
                    alone
                        .into_iter()
                        .map(|(c, outcome)| self.record(c, outcome)),
                );
                let group = async {
                    if !group.is_empty() {
                        let tx = match tx {
                            Some(tx) => tx,
                            None => self.store.begin().await,
                        };
                        self.record_group(tx, group).await;
                    }
                };
                let (recorded, ()) = futures::join!(alone, group);
                for r in recorded {
                    if let Err(e) = r {
                        warn_unrecorded(&e);
                    }
                }
            }
        };
        futures::join!(calls, record);
    }

    /// Whether an outcome is recorded in a transaction of its own (see
    /// [`Self::run_grouped`]): on PostgreSQL, one that completes or cancels
    /// its operation.
    fn records_alone(&self, (claimed, outcome): &(Claimed, Outcome)) -> bool {
        if self.store.backend() != Backend::Postgres {
            return false;
        }
        let (update, done) = self.planned(claimed, outcome, self.clock.now());
        done.is_some() || update.status == OperationStatus::Canceled
    }

    /// What `outcome` makes of the claimed operation (see [`plan_update`]).
    fn planned(
        &self,
        claimed: &Claimed,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> (OperationUpdate, Option<DoneParams>) {
        let op = &claimed.operation;
        plan_update(
            op.kind,
            op.attempts,
            op.remote_ref.clone(),
            outcome,
            &self.config.retry(),
            now,
        )
    }

    /// Records outcomes together in `tx`. When that fails for any of them
    /// (a plan change the balance no longer covers, a database error),
    /// nothing of the group is kept and each is recorded apart, as if it
    /// came alone (the claim fences a group that was committed after all).
    async fn record_group(&self, tx: Result<Tx>, group: Vec<(Claimed, Outcome)>) {
        let tx = match tx {
            Ok(tx) => tx,
            // No writer to be had: one at a time would wait as long again
            // each. Their leases expire and they run again.
            Err(e) => {
                tracing::warn!(error = %e, operations = group.len(), "recording operation results failed; their leases will expire and they run again");
                return;
            }
        };
        match self.write_group(tx, &group).await {
            Ok(written) => {
                let kept = written.iter().filter(|k| **k).count();
                metrics::histogram!("bursar_operation_group_size").record(kept as f64);
                if group.len() > 1 {
                    self.together.fetch_add(kept as u64, Ordering::Relaxed);
                }
                for ((claimed, outcome), kept) in group.into_iter().zip(written) {
                    if kept {
                        report(&claimed.operation, &outcome);
                    } else {
                        warn_expired(&claimed);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, operations = group.len(), "operation results could not be recorded together; recording each apart");
                for (claimed, outcome) in group {
                    if let Err(e) = self.record(claimed, outcome).await {
                        warn_unrecorded(&e);
                    }
                }
            }
        }
    }

    /// Writes every outcome of `group` in `tx` and commits it; which of
    /// them still held their claim.
    async fn write_group(&self, mut tx: Tx, group: &[(Claimed, Outcome)]) -> Result<Vec<bool>> {
        let now = self.clock.now();
        let mut written = Vec::with_capacity(group.len());
        let all = async {
            for (claimed, outcome) in group {
                written.push(self.write_in(&mut tx, claimed, outcome, now).await?);
            }
            Ok::<_, crate::error::Error>(())
        }
        .await;
        tx.keep_if(all.map(|()| true)).await?;
        Ok(written)
    }

    /// Runs batches until nothing is due (at most `max_rounds`).
    pub async fn run_until_idle(&self, max_rounds: usize) -> Result<usize> {
        let mut total = 0;
        for _ in 0..max_rounds {
            let n = self.run_once().await?;
            total += n;
            if n == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Runs in the background until `shutdown` turns true.
    pub fn spawn(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let idle = Duration::from_millis(self.config.poll_interval_ms);
            loop {
                let pause = match self.run_once().await {
                    Ok(n) if n >= self.config.batch => Duration::ZERO,
                    Ok(_) => idle,
                    Err(e) => {
                        tracing::warn!(error = %e, "operation runner could not claim work");
                        idle
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }

    async fn request_for(&self, claimed: &Claimed) -> Result<ModuleRequest> {
        let op = &claimed.operation;
        let mut r = self.store.reader().await?;
        let service = repo::get(r.conn(), &op.service_id).await?;
        // A plan change is asked with the plan it goes to; the old half of
        // a migration with the plan it leaves.
        let plan_id = op.payload["plan_id"].as_str().unwrap_or(&service.plan_id);
        let plan = plans_repo::get(r.conn(), plan_id).await?;
        let account = accounts_repo::get(r.conn(), &service.account_id).await?;
        let mut params = service.params;
        for (key, value) in accounts_repo::module_params(r.conn(), &account.id, &op.module).await? {
            params.insert(format!("{ACCOUNT_PARAM}{key}"), value);
        }
        Ok(ModuleRequest {
            operation_id: op.id.clone(),
            kind: op.kind,
            poll: op.remote_ref.is_some(),
            remote_ref: op.remote_ref.clone(),
            service: ServiceContext {
                service_id: service.id,
                plan_id: plan.id,
                account_id: account.id,
                account_email: account.email,
                period: service.period,
                settings: plan.spec.module_settings,
                params,
                addons: service.addons,
            },
            payload: op.payload.clone(),
        })
    }

    /// Calls the operation's module. Never fails: what goes wrong is the
    /// outcome.
    async fn call(&self, claimed: &Claimed) -> Outcome {
        let op = &claimed.operation;
        let request = match self.request_for(claimed).await {
            Err(e) => {
                return Err(ModuleError::InvalidConfig(format!(
                    "cannot build the request: {e}"
                )));
            }
            Ok(request) => request,
        };
        let Some(module) = self.modules.get(&op.module) else {
            return Err(ModuleError::UnknownModule(op.module.clone()));
        };
        let limit = Duration::from_millis(self.config.call_timeout_ms);
        match tokio::time::timeout(limit, module.call(&request)).await {
            Ok(result) => result,
            Err(_) => Err(ModuleError::Timeout(format!(
                "no answer within {} ms",
                limit.as_millis()
            ))),
        }
    }

    async fn record(&self, claimed: Claimed, outcome: Outcome) -> Result<()> {
        let outcome = match self.write(&claimed, &outcome).await {
            // The change is made, but the balance no longer covers it: staff
            // decide (credit the account, then complete or retry).
            Err(crate::error::Error::InsufficientFunds { .. }) => {
                let staff = Ok(ModuleOutcome::NeedsStaff(
                    "the module made the plan change, but the balance no longer covers it: \
                     credit the account, then complete this operation"
                        .into(),
                ));
                self.write(&claimed, &staff).await?;
                staff
            }
            Err(e) => return Err(e),
            Ok(false) => {
                warn_expired(&claimed);
                return Ok(());
            }
            Ok(true) => outcome,
        };
        report(&claimed.operation, &outcome);
        Ok(())
    }

    /// Writes an outcome and what it brings, in one transaction fenced by
    /// the claim. False when the claim had expired.
    async fn write(&self, claimed: &Claimed, outcome: &Outcome) -> Result<bool> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let written = self.write_in(&mut tx, claimed, outcome, now).await;
        tx.keep_if(written).await
    }

    /// Writes an outcome and what it brings in `tx`, fenced by the claim.
    /// False (and nothing written) when the claim had expired.
    async fn write_in(
        &self,
        tx: &mut Tx,
        claimed: &Claimed,
        outcome: &Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let op = &claimed.operation;
        let (update, done_params) = self.planned(claimed, outcome, now);
        if !repo::finish_run(tx.conn(), &op.id, &claimed.token, &update, now).await? {
            return Ok(false);
        }
        if let Some((params, secret)) = &done_params {
            let result = Done {
                params,
                secret_params: secret,
            };
            operations::finish(tx.conn(), op, result, &self.secrets, RUNNER_ACTOR, now).await?;
        }
        if update.status == OperationStatus::Canceled {
            let kind = update.error_kind.as_deref().unwrap_or_default();
            operations::cancel(tx.conn(), op, kind, now).await?;
        }
        if let Some(event) = staff_event(op, &update) {
            let data = serde_json::json!({
                "operation_id": op.id,
                "service_id": op.service_id,
                "kind": op.kind.as_str(),
                "module": op.module,
                "attempts": op.attempts,
                "error": update.last_error,
            });
            crate::notify::record(tx.conn(), event, data, now).await?;
        }
        Ok(true)
    }
}

type Outcome = std::result::Result<ModuleOutcome, ModuleError>;

/// Counts an outcome that was recorded, and logs a failed call.
fn report(op: &crate::services::Operation, outcome: &Outcome) {
    let outcome_label = match outcome {
        Ok(ModuleOutcome::Done { .. }) => "done",
        Ok(ModuleOutcome::InProgress { .. }) => "in_progress",
        Ok(ModuleOutcome::NeedsStaff(_)) => "needs_staff",
        Err(e) => e.kind(),
    };
    metrics::counter!("bursar_operations_total", "kind" => op.kind.as_str(), "outcome" => outcome_label).increment(1);
    if let Err(e) = outcome {
        metrics::counter!("bursar_module_failures_total", "module" => op.module.clone(), "kind" => e.kind()).increment(1);
        tracing::warn!(operation = %op.id, module = %op.module, kind = e.kind(), error = %e, "module call failed");
    }
}

fn warn_expired(claimed: &Claimed) {
    tracing::warn!(operation = %claimed.operation.id, "claim expired before the result was recorded; dropping it");
}

fn warn_unrecorded(e: &crate::error::Error) {
    tracing::warn!(error = %e, "recording an operation result failed; its lease will expire and it runs again");
}

/// What staff are told about an outcome: an operation now waiting in the
/// manual queue, or one whose module failed the same call several times
/// in a row.
fn staff_event(op: &crate::services::Operation, update: &OperationUpdate) -> Option<&'static str> {
    if update.status == OperationStatus::Manual && op.status != OperationStatus::Manual {
        return Some("operation.manual");
    }
    let failed = update.status == OperationStatus::Queued && update.last_error.is_some();
    (failed && op.attempts == crate::messages::FAILING_AFTER_ATTEMPTS)
        .then_some("operation.failing")
}

type DoneParams = (Vec<(String, String)>, Vec<(String, String)>);

/// What an outcome does to the operation row. Pure.
fn plan_update(
    kind: crate::services::OperationKind,
    attempts: i64,
    remote_ref: Option<String>,
    outcome: &Outcome,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
) -> (OperationUpdate, Option<DoneParams>) {
    let at = |d: Duration| now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::zero());
    match outcome {
        Ok(ModuleOutcome::Done {
            params,
            secret_params,
        }) => (
            OperationUpdate {
                status: OperationStatus::Done,
                next_run_at: now,
                remote_ref,
                progress: None,
                last_error: None,
                error_kind: None,
                finished: true,
            },
            Some((params.clone(), secret_params.clone())),
        ),
        Ok(ModuleOutcome::InProgress {
            remote_ref,
            poll_after,
            progress,
        }) => (
            OperationUpdate {
                status: OperationStatus::Waiting,
                next_run_at: at(*poll_after),
                remote_ref: Some(remote_ref.clone()),
                progress: progress.clone(),
                last_error: None,
                error_kind: None,
                finished: false,
            },
            None,
        ),
        Ok(ModuleOutcome::NeedsStaff(message)) => (
            OperationUpdate {
                status: OperationStatus::Manual,
                next_run_at: now,
                remote_ref,
                progress: None,
                last_error: Some(message.clone()),
                error_kind: Some("needs_staff".into()),
                finished: false,
            },
            None,
        ),
        // A plan change the module does not support or refuses changes
        // nothing: the operation ends there.
        Err(e @ (ModuleError::Unsupported(_) | ModuleError::Rejected(_)))
            if kind == crate::services::OperationKind::ChangePlan =>
        {
            (
                OperationUpdate {
                    status: OperationStatus::Canceled,
                    next_run_at: now,
                    remote_ref,
                    progress: None,
                    last_error: Some(e.to_string()),
                    error_kind: Some(e.kind().into()),
                    finished: true,
                },
                None,
            )
        }
        Err(e) => {
            let give_up = !e.retryable() || attempts >= i64::from(retry.max_attempts);
            let delay = crate::ids::with_rng(|mut rng| {
                retry.delay(attempts.max(1) as u32, e.retry_after(), &mut rng)
            });
            (
                OperationUpdate {
                    status: if give_up {
                        OperationStatus::Manual
                    } else {
                        OperationStatus::Queued
                    },
                    next_run_at: if give_up { now } else { at(delay) },
                    remote_ref,
                    progress: None,
                    last_error: Some(e.to_string()),
                    error_kind: Some(e.kind().into()),
                    finished: false,
                },
                None,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_failures_back_off_and_the_last_attempt_goes_manual() {
        let policy = RetryPolicy {
            base_ms: 1000,
            max_ms: 60_000,
            max_attempts: 3,
        };
        let now = Utc::now();
        let err = Err(ModuleError::Unavailable {
            message: "503".into(),
            retry_after: None,
        });
        use crate::services::OperationKind::{ChangePlan, Open};
        let (u, _) = plan_update(Open, 1, None, &err, &policy, now);
        assert_eq!(u.status, OperationStatus::Queued);
        assert!(u.next_run_at >= now + chrono::Duration::milliseconds(500));
        let (u, _) = plan_update(Open, 3, None, &err, &policy, now);
        assert_eq!(u.status, OperationStatus::Manual);
        let rejected = Err(ModuleError::Rejected("no".into()));
        let (u, _) = plan_update(Open, 1, None, &rejected, &policy, now);
        assert_eq!(u.status, OperationStatus::Manual);
        assert_eq!(u.error_kind.as_deref(), Some("rejected"));
        let unsupported = Err(ModuleError::Unsupported("no".into()));
        let (u, _) = plan_update(ChangePlan, 1, None, &unsupported, &policy, now);
        assert_eq!(u.status, OperationStatus::Canceled);
        assert!(u.finished);
    }
}
