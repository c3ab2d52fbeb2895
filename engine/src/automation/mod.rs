//! Billing automation: one pass renews what is due, suspends what ran out,
//! resumes non-payment suspensions the balance now covers, closes what was
//! suspended too long, and cancels unpaid orders nobody paid.
//!
//! Every item is its own small transaction that locks the service, checks
//! again that the action is still due, and acts — so one bad item never
//! blocks the rest, a pass run twice does nothing the second time, and
//! several processes (on PostgreSQL, `FOR UPDATE SKIP LOCKED`) can run
//! passes at once. Renewals, the bulk of a pass, are done a page at a time
//! in one transaction with the same locks and checks ([`batch`]), falling
//! back to one by one when a batch cannot be kept whole. A renewal is charged under the ledger key
//! `renewal:{service}:{paid units}`, the same key a payment uses when it
//! renews a suspended service: whichever gets there first renews, once.

mod batch;
pub mod reminders;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::{PeriodUnit, add_units};
use crate::error::Result;
use crate::lifecycle::renewal::Rule;
use crate::services::{ServiceStatus, SuspendReason};
use crate::store::{Conn, Store, catalog as plans_repo, services as repo};

/// `[automation]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomationConfig {
    /// Seconds between passes inside `bursar serve` (0: no automation there).
    pub interval_secs: u64,
    /// Renew this many days before the paid period ends.
    pub renew_ahead_days: u32,
    /// Unpaid orders are canceled after this many days.
    pub cancel_unpaid_after_days: u32,
    /// Services looked at per query.
    pub batch: usize,
    /// At most this many items per pass (0: no limit); the rest wait for
    /// the next pass. Bounds how long one pass runs.
    pub max_items: u64,
    /// How often a service on a module that lists `sync` has its remote
    /// side (power, switch ports) compared with its state and repaired
    /// (0: never).
    pub sync_interval_secs: u64,
    /// Tell a customer this many days before an auto-renewal their
    /// balance does not cover (0: never).
    pub remind_renewal_days: u32,
    /// Tell a customer this many days before a service suspended for
    /// non-payment is deleted (0: never).
    pub warn_deletion_days: u32,
    /// Tell a customer when their balance falls below this, per currency
    /// (minor units; none: never).
    pub low_balance: BTreeMap<String, i64>,
    /// Stored answers to idempotent requests are kept this many days (a
    /// retry after that runs again; 0: forever).
    pub keep_idempotency_days: u32,
    /// Webhook events delivered and e-mail sent are kept this many days
    /// (0: forever). The service log and the ledger are kept forever.
    pub keep_delivered_days: u32,
}

impl Default for AutomationConfig {
    fn default() -> Self {
        AutomationConfig {
            interval_secs: 60,
            renew_ahead_days: 3,
            cancel_unpaid_after_days: 14,
            batch: 500,
            max_items: 0,
            sync_interval_secs: 86_400,
            remind_renewal_days: 7,
            warn_deletion_days: 3,
            low_balance: BTreeMap::new(),
            keep_idempotency_days: 30,
            keep_delivered_days: 90,
        }
    }
}

/// Queues a `sync` for every active or suspended service on a module that
/// lists `sync` whose last one is `sync_interval_secs` old (counting from
/// its activation when it has had none) and that has no operation waiting.
/// Returns how many it queued.
pub async fn schedule_syncs(
    store: &Store,
    modules: &crate::services::module::ModuleRegistry,
    config: &AutomationConfig,
    now: DateTime<Utc>,
) -> Result<u64> {
    if config.sync_interval_secs == 0 {
        return Ok(0);
    }
    let cutoff = now - Duration::seconds(config.sync_interval_secs.min(i64::MAX as u64 / 2) as i64);
    let mut queued = 0;
    for module in modules.names() {
        if !modules.syncs(&module) {
            continue;
        }
        let due = {
            let mut r = store.reader().await?;
            repo::due_syncs(r.conn(), &module, cutoff, config.batch).await?
        };
        for id in due {
            let mut tx = store.begin().await?;
            match crate::lifecycle::request_sync(tx.conn(), modules, &id, now).await {
                Ok(_) => {
                    tx.commit().await?;
                    queued += 1;
                }
                Err(e) => {
                    tracing::warn!(service = %id, error = %e, "could not queue a sync");
                }
            }
        }
    }
    Ok(queued)
}

/// What a pass did, by action.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub actions: BTreeMap<&'static str, u64>,
    /// Items that failed (each logged), by action.
    pub failures: BTreeMap<&'static str, u64>,
    /// Items looked at (acted on or not).
    #[serde(skip)]
    seen: u64,
}

impl Report {
    fn count(&mut self, action: &'static str, result: Result<bool>, id: &str) {
        self.seen += 1;
        match result {
            Ok(true) => *self.actions.entry(action).or_default() += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(service = id, action, error = %e, "automation item failed");
                *self.failures.entry(action).or_default() += 1;
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.actions.values().sum()
    }

    fn full(&self, config: &AutomationConfig) -> bool {
        config.max_items > 0 && self.seen >= config.max_items
    }

    /// How many of `n` more items this pass may still look at.
    fn room(&self, config: &AutomationConfig, n: usize) -> usize {
        if config.max_items == 0 {
            return n;
        }
        let left = config.max_items.saturating_sub(self.seen);
        usize::try_from(left).map_or(n, |left| left.min(n))
    }
}

pub const ACTOR: &str = "system:automation";

/// One pass over everything due at `now`.
pub async fn run_once(
    store: &Store,
    config: &AutomationConfig,
    now: DateTime<Utc>,
) -> Result<Report> {
    let mut report = Report::default();
    let rule = Rule::days_ahead(config.renew_ahead_days);
    let ahead = rule.cutoff(now);
    let at = At { now, rule };
    // Suspended services are looked at whatever their paid period.
    let any = now + Duration::days(36_500);
    let steps: [(&'static str, ServiceStatus, DateTime<Utc>, StepFn); 4] = [
        ("renewed", Rule::STATUS, ahead, |c, id, at| {
            Box::pin(renew(c, id, at))
        }),
        ("suspended", ServiceStatus::Active, now, |c, id, at| {
            Box::pin(suspend_expired(c, id, at))
        }),
        ("resumed", ServiceStatus::Suspended, any, |c, id, at| {
            Box::pin(resume_paid(c, id, at))
        }),
        ("closed", ServiceStatus::Suspended, any, |c, id, at| {
            Box::pin(close_abandoned(c, id, at))
        }),
    ];
    for (action, status, until, step) in steps {
        // Candidates by paid period end; each is checked again under lock.
        let mut after = String::new();
        loop {
            let ids = {
                let mut r = store.reader().await?;
                repo::candidates(r.conn(), status, until, &after, config.batch).await?
            };
            let Some(last) = ids.last().cloned() else {
                break;
            };
            if action == "renewed" {
                let room = report.room(config, ids.len());
                for chunk in ids[..room].chunks(batch::MAX_BATCH) {
                    renew_batch(store, chunk, at, step, &mut report).await;
                }
                if room < ids.len() {
                    return Ok(finish(report));
                }
            } else {
                for id in ids {
                    if report.full(config) {
                        return Ok(finish(report));
                    }
                    let result = item(store, &id, at, step).await;
                    report.count(action, result, &id);
                }
            }
            after = last;
        }
    }
    let cutoff = now - Duration::days(i64::from(config.cancel_unpaid_after_days));
    let mut after = String::new();
    loop {
        let ids = {
            let mut r = store.reader().await?;
            repo::unpaid_created_before(r.conn(), cutoff, &after, config.batch).await?
        };
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in ids {
            if report.full(config) {
                return Ok(finish(report));
            }
            let result = item(store, &id, at, |c, id, at| {
                Box::pin(cancel_unpaid(c, id, at))
            })
            .await;
            report.count("canceled", result, &id);
        }
        after = last;
    }
    if let Err(e) = reminders::run(store, config, now).await {
        tracing::warn!(error = %e, "recording reminders failed");
    }
    if let Err(e) = prune(store, config, now).await {
        tracing::warn!(error = %e, "pruning what is kept for a while failed");
    }
    Ok(finish(report))
}

/// Removes what is kept only for a while (`keep_idempotency_days`,
/// `keep_delivered_days`).
pub async fn prune(
    store: &Store,
    config: &AutomationConfig,
    now: DateTime<Utc>,
) -> Result<crate::store::notifications::Pruned> {
    let before = |days: u32| (days > 0).then(|| now - Duration::days(i64::from(days)));
    let mut tx = store.begin().await?;
    let pruned = crate::store::notifications::prune(
        tx.conn(),
        before(config.keep_idempotency_days),
        before(config.keep_delivered_days),
    )
    .await?;
    // Console sessions that ended or expired, and failed logins, a day on.
    crate::store::logins::prune(tx.conn(), now - Duration::days(1)).await?;
    tx.commit().await?;
    if pruned != Default::default() {
        tracing::info!(?pruned, "pruned");
    }
    Ok(pruned)
}

/// Counts a pass in metrics and the log.
fn finish(report: Report) -> Report {
    for (action, n) in &report.actions {
        metrics::counter!("bursar_automation_actions_total", "action" => *action).increment(*n);
    }
    for (action, n) in &report.failures {
        metrics::counter!("bursar_automation_failures_total", "action" => *action).increment(*n);
    }
    tracing::info!(actions = ?report.actions, failures = ?report.failures, "automation pass done");
    report
}

/// When a pass runs, and its renewal window.
#[derive(Debug, Clone, Copy)]
struct At {
    now: DateTime<Utc>,
    rule: Rule,
}

type StepFn = fn(Conn<'_>, String, At) -> futures::future::BoxFuture<'_, Result<bool>>;

/// Renews the due services among `ids` in one batch transaction; if the
/// batch fails as a whole, or leaves some services to the item path, those
/// are renewed one by one.
async fn renew_batch(store: &Store, ids: &[String], at: At, step: StepFn, report: &mut Report) {
    let one_by_one = match batch::renew(store, ids, at).await {
        Ok(outcome) => {
            let acted = ids.len() - outcome.left.len();
            report.seen += acted as u64;
            if outcome.renewed > 0 {
                *report.actions.entry("renewed").or_default() += outcome.renewed;
            }
            outcome.left
        }
        Err(e) => {
            tracing::warn!(services = ids.len(), error = %e, "renewal batch failed; renewing one by one");
            ids.to_vec()
        }
    };
    for id in one_by_one {
        let result = item(store, &id, at, step).await;
        report.count("renewed", result, &id);
    }
}

/// Runs one item in its own transaction, skipping a service another
/// process holds.
async fn item(store: &Store, id: &str, at: At, step: StepFn) -> Result<bool> {
    let mut tx = store.begin().await?;
    let outcome = match repo::try_lock(tx.conn(), id).await {
        Ok(true) => step(tx.conn(), id.to_owned(), at).await,
        other => other,
    };
    tx.keep_if(outcome).await
}

/// Renews an active auto-renew service whose paid period ends within the
/// renew-ahead window, if the balance (plus credit limit) covers it.
async fn renew(mut c: Conn<'_>, id: String, at: At) -> Result<bool> {
    let now = at.now;
    let service = repo::get(c.reborrow(), &id).await?;
    if !at.rule.is_due(&service, now) {
        return Ok(false);
    }
    // Without the money it is suspended when the period (and grace) ends.
    Ok(crate::lifecycle::renew(c, &service, ACTOR, now)
        .await?
        .is_some())
}

/// Suspends for non-payment an active service whose paid period and grace
/// days are over.
async fn suspend_expired(mut c: Conn<'_>, id: String, at: At) -> Result<bool> {
    let now = at.now;
    let service = repo::get(c.reborrow(), &id).await?;
    let plan = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let Some(paid_until) = service.paid_until else {
        return Ok(false);
    };
    let grace_over = add_units(
        paid_until,
        PeriodUnit::Day,
        plan.spec.grace_days,
        service.time_zone,
    )
    .is_some_and(|end| end <= now);
    if service.status != ServiceStatus::Active || !grace_over {
        return Ok(false);
    }
    crate::lifecycle::suspend(c, &id, SuspendReason::NonPayment, ACTOR, now).await?;
    Ok(true)
}

/// Renews and resumes a non-payment suspension the balance now covers
/// (never an `admin` or `abuse` one).
async fn resume_paid(mut c: Conn<'_>, id: String, at: At) -> Result<bool> {
    let now = at.now;
    let service = repo::get(c.reborrow(), &id).await?;
    if service.status != ServiceStatus::Suspended
        || service.suspend_reason != Some(SuspendReason::NonPayment)
    {
        return Ok(false);
    }
    let renewed = crate::lifecycle::renew(c, &service, ACTOR, now).await?;
    Ok(renewed.is_some_and(|s| s.status == ServiceStatus::Active))
}

/// Closes a service suspended for non-payment longer than its plan's
/// deletion period.
async fn close_abandoned(mut c: Conn<'_>, id: String, at: At) -> Result<bool> {
    let now = at.now;
    let service = repo::get(c.reborrow(), &id).await?;
    let plan = plans_repo::get(c.reborrow(), &service.plan_id).await?;
    let expired = service.suspended_at.is_some_and(|at| {
        add_units(
            at,
            PeriodUnit::Day,
            plan.spec.deletion_days,
            service.time_zone,
        )
        .is_some_and(|end| end <= now)
    });
    if service.status != ServiceStatus::Suspended
        || service.suspend_reason != Some(SuspendReason::NonPayment)
        || !expired
    {
        return Ok(false);
    }
    crate::lifecycle::close(c, &id, ACTOR, now).await?;
    Ok(true)
}

/// Cancels an order still unpaid.
async fn cancel_unpaid(mut c: Conn<'_>, id: String, at: At) -> Result<bool> {
    let now = at.now;
    let service = repo::get(c.reborrow(), &id).await?;
    if service.status != ServiceStatus::Ordered {
        return Ok(false);
    }
    crate::lifecycle::close(c, &id, ACTOR, now).await?;
    Ok(true)
}
