//! Services, their event log and their operations.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::calendar::{Period, Zone};
use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::money::Currency;
use crate::secrets::Secrets;
use crate::services::{
    NewEvent, Operation, OperationKind, OperationStatus, Service, ServiceEvent, ServiceStatus,
    SuspendReason,
};
use crate::sql;
use crate::store::{Conn, Page, bulk};

fn corrupt(what: String) -> Error {
    Error::Database(sqlx::Error::Decode(what.into()))
}

fn json_map(s: &str) -> BTreeMap<String, String> {
    serde_json::from_str(s).unwrap_or_default()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

#[derive(FromRow)]
struct ServiceRow {
    id: String,
    account_id: String,
    plan_id: String,
    status: String,
    suspend_reason: Option<String>,
    period: String,
    currency: String,
    recurring_price: i64,
    setup_fee: i64,
    amount_due: i64,
    addons: String,
    params: String,
    auto_renew: bool,
    time_zone: String,
    anchor_at: Option<i64>,
    paid_units: i64,
    period_start: Option<i64>,
    paid_until: Option<i64>,
    range_periods: i64,
    range_from: Option<i64>,
    range_gross: i64,
    range_tax: i64,
    suspended_at: Option<i64>,
    closed_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const SERVICE_COLUMNS: &str = "id, account_id, plan_id, status, suspend_reason, period, currency, recurring_price, \
    setup_fee, amount_due, addons, params, auto_renew, time_zone, anchor_at, paid_units, period_start, paid_until, \
    range_periods, range_from, range_gross, range_tax, suspended_at, closed_at, created_at, updated_at";

impl ServiceRow {
    fn into_service(self) -> Result<Service> {
        let id = self.id.clone();
        Ok(Service {
            status: ServiceStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("service {id}: status")))?,
            suspend_reason: self
                .suspend_reason
                .as_deref()
                .and_then(SuspendReason::parse),
            period: Period::parse(&self.period)
                .ok_or_else(|| corrupt(format!("service {id}: period")))?,
            currency: Currency::from_code(&self.currency)
                .map_err(|_| corrupt(format!("service {id}: currency")))?,
            time_zone: Zone::parse(&self.time_zone)
                .ok_or_else(|| corrupt(format!("service {id}: time zone")))?,
            addons: serde_json::from_str(&self.addons).unwrap_or_default(),
            params: json_map(&self.params),
            id: self.id,
            account_id: self.account_id,
            plan_id: self.plan_id,
            recurring_price: self.recurring_price,
            setup_fee: self.setup_fee,
            amount_due: self.amount_due,
            auto_renew: self.auto_renew,
            anchor_at: self.anchor_at.map(from_micros),
            paid_units: self.paid_units,
            period_start: self.period_start.map(from_micros),
            paid_until: self.paid_until.map(from_micros),
            range_periods: self.range_periods,
            range_from: self.range_from.map(from_micros),
            range_gross: self.range_gross,
            range_tax: self.range_tax,
            suspended_at: self.suspended_at.map(from_micros),
            closed_at: self.closed_at.map(from_micros),
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

/// Stores a new service.
pub async fn insert(c: Conn<'_>, s: &Service) -> Result<()> {
    insert_many(c, std::slice::from_ref(s)).await
}

/// Stores new services with multi-row statements.
pub async fn insert_many(c: Conn<'_>, services: &[Service]) -> Result<()> {
    let mut rows = bulk::Rows::new(27);
    for s in services {
        rows.push([
            s.id.as_str().into(),
            s.account_id.as_str().into(),
            s.plan_id.as_str().into(),
            s.status.as_str().into(),
            s.suspend_reason.map(SuspendReason::as_str).into(),
            s.period.as_str().into(),
            s.currency.code().into(),
            s.recurring_price.into(),
            s.amount_due.into(),
            to_json(&s.addons).into(),
            to_json(&s.params).into(),
            "{}".into(),
            s.auto_renew.into(),
            s.anchor_at.map(to_micros).into(),
            s.paid_units.into(),
            s.period_start.map(to_micros).into(),
            s.paid_until.map(to_micros).into(),
            s.range_gross.into(),
            s.range_periods.into(),
            s.suspended_at.map(to_micros).into(),
            s.closed_at.map(to_micros).into(),
            to_micros(s.created_at).into(),
            to_micros(s.updated_at).into(),
            s.time_zone.name().into(),
            s.setup_fee.into(),
            s.range_from.map(to_micros).into(),
            s.range_tax.into(),
        ]);
    }
    bulk::execute(
        c,
        "INSERT INTO services (id, account_id, plan_id, status, suspend_reason, period, currency, recurring_price,
            amount_due, addons, params, secret_params, auto_renew, anchor_at, paid_units, period_start, paid_until,
            range_gross, range_periods, suspended_at, closed_at, created_at, updated_at, time_zone,
            setup_fee, range_from, range_tax)
         {rows}",
        &rows,
    )
    .await?;
    Ok(())
}

/// Writes back every field that changes over a service's life. Refuses
/// (returns `Conflict`) when the stored status is not `expected`, so two
/// writers can never both apply a transition from the same state.
pub async fn save(mut c: Conn<'_>, s: &Service, expected: ServiceStatus) -> Result<()> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE services SET plan_id = $2, status = $3, suspend_reason = $4, period = $5, recurring_price = $6,
            amount_due = $7, addons = $8, params = $9, auto_renew = $10, anchor_at = $11, paid_units = $12,
            period_start = $13, paid_until = $14, range_gross = $15, range_periods = $16, suspended_at = $17,
            closed_at = $18, updated_at = $19, range_from = $21, range_tax = $22
         WHERE id = $1 AND status = $20")
        .bind(&s.id).bind(&s.plan_id).bind(s.status.as_str()).bind(s.suspend_reason.map(SuspendReason::as_str))
        .bind(s.period.as_str()).bind(s.recurring_price).bind(s.amount_due).bind(to_json(&s.addons))
        .bind(to_json(&s.params)).bind(s.auto_renew).bind(s.anchor_at.map(to_micros)).bind(s.paid_units)
        .bind(s.period_start.map(to_micros)).bind(s.paid_until.map(to_micros)).bind(s.range_gross)
        .bind(s.range_periods).bind(s.suspended_at.map(to_micros)).bind(s.closed_at.map(to_micros))
        .bind(to_micros(s.updated_at)).bind(expected.as_str())
        .bind(s.range_from.map(to_micros)).bind(s.range_tax)
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "service {} changed concurrently; retry",
            s.id
        )));
    }
    Ok(())
}

/// Reads a service; on PostgreSQL the row stays locked until the
/// transaction ends (SQLite's single writer already excludes others).
pub async fn get_for_update(mut c: Conn<'_>, id: &str) -> Result<Service> {
    let lock = if matches!(c, Conn::Postgres(_)) {
        " FOR UPDATE"
    } else {
        ""
    };
    let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1{lock}");
    let row: Option<ServiceRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("service", id))?
        .into_service()
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Service> {
    let q = format!("SELECT {SERVICE_COLUMNS} FROM services WHERE id = $1");
    let row: Option<ServiceRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("service", id))?
        .into_service()
}

/// Services filtered by account and status, in creation order.
pub async fn list(
    mut c: Conn<'_>,
    account_id: Option<&str>,
    status: Option<ServiceStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Service>> {
    let q = format!(
        "SELECT {SERVICE_COLUMNS} FROM services
         WHERE id > $1 AND ($2 IS NULL OR account_id = $2) AND ($3 IS NULL OR status = $3)
         ORDER BY id LIMIT $4"
    );
    let rows: Vec<ServiceRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(after.unwrap_or("")).bind(account_id).bind(status.map(ServiceStatus::as_str)).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let services = rows
        .into_iter()
        .map(ServiceRow::into_service)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(services, limit, |s| s.id.clone()))
}

/// Counts an account's unpaid orders ($1: the account).
pub const COUNT_UNPAID_OF_ACCOUNT: &str =
    "SELECT COUNT(*) FROM services WHERE account_id = $1 AND status = 'ordered'";
/// An account's unpaid orders, oldest first ($1: the account).
pub const UNPAID_OF_ACCOUNT: &str =
    "SELECT id FROM services WHERE account_id = $1 AND status = 'ordered' ORDER BY id";

/// How many unpaid orders the account has (through `services_unpaid`).
pub async fn count_unpaid_of_account(mut c: Conn<'_>, account_id: &str) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        COUNT_UNPAID_OF_ACCOUNT)
        .bind(account_id).fetch_one(&mut **c).await)?)
}

/// How many unpaid orders each of the accounts has (those with none are
/// left out), through `services_unpaid`.
pub async fn count_unpaid_of_accounts(
    c: Conn<'_>,
    account_ids: &[&str],
) -> Result<Vec<(String, i64)>> {
    bulk::fetch_in(
        c,
        "SELECT account_id, COUNT(*) FROM services WHERE account_id IN {ids} AND status = 'ordered'
         GROUP BY account_id",
        account_ids,
    )
    .await
}

/// The account's unpaid orders, oldest first (through `services_unpaid`).
pub async fn unpaid_of_account(mut c: Conn<'_>, account_id: &str) -> Result<Vec<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        UNPAID_OF_ACCOUNT)
        .bind(account_id).fetch_all(&mut **c).await)?)
}

/// Services in `status` whose paid period ends by `until`, in id order
/// after the cursor: candidates for an automation step.
pub async fn candidates(
    mut c: Conn<'_>,
    status: ServiceStatus,
    until: DateTime<Utc>,
    after: &str,
    limit: usize,
) -> Result<Vec<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT id FROM services WHERE status = $1 AND paid_until <= $2 AND id > $3
         ORDER BY id LIMIT $4")
        .bind(status.as_str()).bind(to_micros(until)).bind(after).bind(limit as i64)
        .fetch_all(&mut **c).await)?)
}

/// Unpaid orders created before `before`, in id order after the cursor.
pub async fn unpaid_created_before(
    mut c: Conn<'_>,
    before: DateTime<Utc>,
    after: &str,
    limit: usize,
) -> Result<Vec<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT id FROM services WHERE status = 'ordered' AND created_at < $1 AND id > $2
         ORDER BY id LIMIT $3")
        .bind(to_micros(before)).bind(after).bind(limit as i64)
        .fetch_all(&mut **c).await)?)
}

/// Locks a service for the rest of the transaction; false when another
/// transaction holds it (PostgreSQL `SKIP LOCKED`). SQLite transactions
/// hold the write lock already.
pub async fn try_lock(c: Conn<'_>, id: &str) -> Result<bool> {
    match c {
        Conn::Postgres(c) => Ok(sqlx::query_scalar::<_, String>(
            "SELECT id FROM services WHERE id = $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .is_some()),
        Conn::Sqlite(_) => Ok(true),
    }
}

/// Locks and reads the services with ids from `first` to `last` (a page
/// of [`candidates`]) that are still active, auto-renewing and paid only
/// until `until`, in id order. On PostgreSQL a service another transaction
/// holds is skipped (`SKIP LOCKED`), as [`try_lock`] does one at a time.
pub async fn lock_due_renewals(
    mut c: Conn<'_>,
    first: &str,
    last: &str,
    status: ServiceStatus,
    until: DateTime<Utc>,
) -> Result<Vec<Service>> {
    let lock = if matches!(c, Conn::Postgres(_)) {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let q = format!(
        "SELECT {SERVICE_COLUMNS} FROM services
         WHERE id >= $1 AND id <= $2 AND status = $3 AND auto_renew AND paid_until <= $4
         ORDER BY id{lock}"
    );
    let rows: Vec<ServiceRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(first).bind(last).bind(status.as_str()).bind(to_micros(until))
        .fetch_all(&mut **c).await)?;
    rows.into_iter().map(ServiceRow::into_service).collect()
}

/// Writes back the paid period (paid units, period start and end, paid
/// range) and status of many services in one statement. Refuses
/// (`Conflict`, and the caller's transaction must roll back) unless every
/// one was still in `expected`.
pub async fn save_paid_periods(
    c: Conn<'_>,
    services: &[Service],
    expected: ServiceStatus,
) -> Result<()> {
    let mut rows = bulk::Rows::new(10);
    for s in services {
        rows.push([
            s.id.as_str().into(),
            s.status.as_str().into(),
            s.paid_units.into(),
            s.period_start.map(to_micros).into(),
            s.paid_until.map(to_micros).into(),
            s.range_periods.into(),
            s.range_from.map(to_micros).into(),
            s.range_gross.into(),
            s.range_tax.into(),
            to_micros(s.updated_at).into(),
        ]);
    }
    let q = format!(
        "WITH v (id, status, paid_units, period_start, paid_until, range_periods, range_from, range_gross,
                 range_tax, updated_at)
           AS ({{rows}})
         UPDATE services SET status = v.status, paid_units = v.paid_units, period_start = v.period_start,
             paid_until = v.paid_until, range_periods = v.range_periods, range_from = v.range_from,
             range_gross = v.range_gross, range_tax = v.range_tax, updated_at = v.updated_at
         FROM v WHERE services.id = v.id AND services.status = '{}'",
        expected.as_str()
    );
    let n = bulk::execute(c, &q, &rows).await?;
    if n != services.len() as u64 {
        return Err(Error::Conflict(format!(
            "{} of {} services in a batch changed concurrently; retry",
            services.len() as u64 - n,
            services.len()
        )));
    }
    Ok(())
}

/// The account's services suspended for non-payment, oldest first.
pub async fn suspended_for_nonpayment(mut c: Conn<'_>, account_id: &str) -> Result<Vec<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT id FROM services
         WHERE account_id = $1 AND status = 'suspended' AND suspend_reason = 'non-payment'
         ORDER BY id")
        .bind(account_id).fetch_all(&mut **c).await)?)
}

/// Adds module-reported params to a service; secret ones are kept apart,
/// sealed with `secrets`.
pub async fn merge_params(
    mut c: Conn<'_>,
    id: &str,
    params: &[(String, String)],
    secret_params: &[(String, String)],
    secrets: &Secrets,
    now: DateTime<Utc>,
) -> Result<()> {
    if params.is_empty() && secret_params.is_empty() {
        return Ok(());
    }
    let (current, sealed): (String, String) = sql!(&mut c, c => sqlx::query_as(
        "SELECT params, secret_params FROM services WHERE id = $1").bind(id).fetch_one(&mut **c).await)?;
    let mut current = json_map(&current);
    current.extend(params.iter().cloned());
    let sealed = if secret_params.is_empty() {
        sealed
    } else {
        let mut secret = json_map(&secrets.open(&sealed).map_err(secret_error)?);
        secret.extend(secret_params.iter().cloned());
        secrets.seal(&to_json(&secret))
    };
    sql!(&mut c, c => sqlx::query("UPDATE services SET params = $2, secret_params = $3, updated_at = $4 WHERE id = $1")
        .bind(id).bind(to_json(&current)).bind(&sealed).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

fn secret_error(e: crate::secrets::SecretsError) -> Error {
    Error::Database(sqlx::Error::Decode(e.to_string().into()))
}

/// A service's secret params (credentials), opened: for its owner and
/// staff, and every read is an event (see the API).
pub async fn secret_params(
    mut c: Conn<'_>,
    id: &str,
    secrets: &Secrets,
) -> Result<BTreeMap<String, String>> {
    let s: Option<String> = sql!(&mut c, c => sqlx::query_scalar("SELECT secret_params FROM services WHERE id = $1")
        .bind(id).fetch_optional(&mut **c).await)?;
    let sealed = s.ok_or_else(|| Error::not_found("service", id))?;
    Ok(json_map(&secrets.open(&sealed).map_err(secret_error)?))
}

/// Seals again, under the current key, every stored secret that is not
/// sealed with it (plain values from before encryption, values of a
/// previous key). Returns how many it sealed.
pub async fn reseal_secrets(mut c: Conn<'_>, secrets: &Secrets) -> Result<u64> {
    let rows: Vec<(String, String)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, secret_params FROM services WHERE secret_params <> '{}' ORDER BY id")
        .fetch_all(&mut **c).await)?;
    let mut n = 0;
    for (id, stored) in rows {
        if secrets.is_current(&stored) {
            continue;
        }
        let plain = secrets.open(&stored).map_err(secret_error)?;
        sql!(&mut c, c => sqlx::query("UPDATE services SET secret_params = $2 WHERE id = $1")
            .bind(&id).bind(secrets.seal(&plain)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
        n += 1;
    }
    Ok(n)
}

/// Forgets what a module reported about a service (its params and
/// secrets): the old module's, once a staff migration closed it there.
pub async fn clear_params(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE services SET params = '{}', secret_params = '{}', updated_at = $2 WHERE id = $1")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records that the service's remote side was last brought to its state
/// at `now`.
pub async fn touch_synced(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE services SET synced_at = $2 WHERE id = $1")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Active or suspended services of plans on `module` last synced (or, never
/// synced, activated) by `cutoff`, with no operation waiting.
pub async fn due_syncs(
    mut c: Conn<'_>,
    module: &str,
    cutoff: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT s.id FROM services s JOIN plans p ON p.id = s.plan_id
         WHERE p.module = $1 AND s.status IN ('active', 'suspended')
           AND COALESCE(s.synced_at, s.anchor_at) <= $2
           AND NOT EXISTS (SELECT 1 FROM operations o WHERE o.service_id = s.id
                           AND o.status IN ('queued', 'running', 'waiting', 'manual'))
         ORDER BY s.id LIMIT $3")
        .bind(module).bind(to_micros(cutoff)).bind(limit as i64)
        .fetch_all(&mut **c).await)?)
}

/// Forgets a service's secrets (once it is closed).
pub async fn clear_secrets(mut c: Conn<'_>, id: &str) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE services SET secret_params = '{}' WHERE id = $1")
        .bind(id).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Whether the service has an unfinished operation of `kind` (queued,
/// running, waiting or in the manual queue).
pub async fn has_unfinished(
    mut c: Conn<'_>,
    service_id: &str,
    kind: OperationKind,
) -> Result<bool> {
    let n: i64 = sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM operations WHERE service_id = $1 AND kind = $2
             AND status IN ('queued', 'running', 'waiting', 'manual')")
        .bind(service_id).bind(kind.as_str()).fetch_one(&mut **c).await)?;
    Ok(n > 0)
}

/// An event's row in `service_events`.
fn event_row(e: &NewEvent<'_>, at: i64) -> [bulk::Value; 8] {
    [
        e.service_id.into(),
        e.action.into(),
        e.from.as_str().into(),
        e.to.as_str().into(),
        e.reason.into(),
        e.actor.into(),
        e.detail.into(),
        at.into(),
    ]
}

const INSERT_EVENTS: &str = "INSERT INTO service_events (service_id, action, from_status, to_status, reason, actor, detail, at)
     {rows}";

/// Appends lines to the event log (multi-row statements). Announcing them
/// is the caller's business (`lifecycle::log`).
pub async fn record_events(c: Conn<'_>, events: &[NewEvent<'_>], at: DateTime<Utc>) -> Result<()> {
    let micros = to_micros(at);
    let mut rows = bulk::Rows::new(8);
    for e in events {
        rows.push(event_row(e, micros));
    }
    bulk::execute(c, INSERT_EVENTS, &rows).await?;
    Ok(())
}

pub async fn events(
    mut c: Conn<'_>,
    service_id: &str,
    after: Option<i64>,
    limit: usize,
) -> Result<Page<ServiceEvent>> {
    #[derive(FromRow)]
    struct Row {
        id: i64,
        service_id: String,
        action: String,
        from_status: String,
        to_status: String,
        reason: Option<String>,
        actor: String,
        detail: Option<String>,
        at: i64,
    }
    let rows: Vec<Row> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, service_id, action, from_status, to_status, reason, actor, detail, at FROM service_events
         WHERE service_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        .bind(service_id).bind(after.unwrap_or(0)).bind(limit as i64 + 1).fetch_all(&mut **c).await)?;
    let events = rows
        .into_iter()
        .map(|r| ServiceEvent {
            id: r.id,
            service_id: r.service_id,
            action: r.action,
            from_status: r.from_status,
            to_status: r.to_status,
            reason: r.reason,
            actor: r.actor,
            detail: r.detail,
            at: from_micros(r.at),
        })
        .collect();
    Ok(Page::from_rows(events, limit, |e| e.id.to_string()))
}

#[derive(FromRow)]
struct OperationRow {
    id: String,
    service_id: String,
    kind: String,
    module: String,
    status: String,
    attempts: i64,
    next_run_at: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    remote_ref: Option<String>,
    progress: Option<String>,
    last_error: Option<String>,
    error_kind: Option<String>,
    payload: String,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
}

const OPERATION_COLUMNS: &str = "id, service_id, kind, module, status, attempts, next_run_at, lease_owner, \
    lease_until, remote_ref, progress, last_error, error_kind, payload, created_at, updated_at, finished_at";

impl OperationRow {
    fn into_operation(self) -> Result<Operation> {
        let id = self.id.clone();
        Ok(Operation {
            kind: OperationKind::parse(&self.kind)
                .ok_or_else(|| corrupt(format!("operation {id}: kind")))?,
            status: OperationStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("operation {id}: status")))?,
            payload: serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null),
            id: self.id,
            service_id: self.service_id,
            module: self.module,
            attempts: self.attempts,
            next_run_at: from_micros(self.next_run_at),
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(from_micros),
            remote_ref: self.remote_ref,
            progress: self.progress,
            last_error: self.last_error,
            error_kind: self.error_kind,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            finished_at: self.finished_at.map(from_micros),
        })
    }
}

const INSERT_OPERATIONS: &str = "INSERT INTO operations (id, service_id, kind, module, status, attempts, next_run_at, payload, created_at, updated_at)
     {rows}";

/// An operation to queue: for a service, of a kind, run by a module.
pub type NewOperation<'a> = (&'a str, OperationKind, &'a str, serde_json::Value);

fn operation_rows(ops: &[NewOperation<'_>], now: DateTime<Utc>) -> (Vec<String>, bulk::Rows) {
    let at = to_micros(now);
    let mut ids = Vec::with_capacity(ops.len());
    let mut rows = bulk::Rows::new(10);
    for (service_id, kind, module, payload) in ops {
        let id = new_id("op");
        rows.push([
            id.as_str().into(),
            (*service_id).into(),
            kind.as_str().into(),
            (*module).into(),
            "queued".into(),
            0_i64.into(),
            at.into(),
            payload.to_string().into(),
            at.into(),
            at.into(),
        ]);
        ids.push(id);
    }
    (ids, rows)
}

/// Queues an operation, due now.
pub async fn enqueue(
    mut c: Conn<'_>,
    service_id: &str,
    kind: OperationKind,
    module: &str,
    payload: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Operation> {
    let (ids, rows) = operation_rows(&[(service_id, kind, module, payload)], now);
    bulk::execute(c.reborrow(), INSERT_OPERATIONS, &rows).await?;
    get_operation(c, &ids[0]).await
}

/// Queues many operations, due now, with multi-row statements.
pub async fn enqueue_many(c: Conn<'_>, ops: &[NewOperation<'_>], now: DateTime<Utc>) -> Result<()> {
    let (_, rows) = operation_rows(ops, now);
    bulk::execute(c, INSERT_OPERATIONS, &rows).await?;
    Ok(())
}

pub async fn get_operation(mut c: Conn<'_>, id: &str) -> Result<Operation> {
    let q = format!("SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1");
    let row: Option<OperationRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("operation", id))?
        .into_operation()
}

pub async fn list_operations(
    mut c: Conn<'_>,
    service_id: Option<&str>,
    status: Option<OperationStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Operation>> {
    let q = format!(
        "SELECT {OPERATION_COLUMNS} FROM operations
         WHERE id > $1 AND ($2 IS NULL OR service_id = $2) AND ($3 IS NULL OR status = $3)
         ORDER BY id LIMIT $4"
    );
    let rows: Vec<OperationRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(after.unwrap_or("")).bind(service_id).bind(status.map(OperationStatus::as_str)).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let ops = rows
        .into_iter()
        .map(OperationRow::into_operation)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(ops, limit, |o| o.id.clone()))
}

/// An operation a runner holds: the claim token fences every later write,
/// so a runner whose lease expired cannot apply a stale result.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub operation: Operation,
    pub token: String,
}

/// The operations due at `$1`, first due first, at most `$2`: those
/// waiting for their time and those whose lease expired, each only when no
/// earlier operation of its service is unfinished. It walks the partial
/// index `operations_pending` in order and stops at the limit, however many
/// operations are waiting (migration 0013; see
/// [`crate::store::indexed_by`]), or at the first operation whose time has
/// not come: a running operation was claimed when its time had come, so
/// its `next_run_at` is in the past too, and a backlog waiting for its
/// retries (a module down for an hour) is not read by every claim.
pub fn due_operations(backend: crate::store::Backend) -> String {
    let hint = crate::store::indexed_by(backend, "operations_pending");
    format!(
        "SELECT o.id FROM operations o {hint}
    WHERE o.status IN ('queued', 'waiting', 'running') AND o.next_run_at <= $1
      AND (o.status <> 'running' OR o.lease_until < $1)
      AND NOT EXISTS (SELECT 1 FROM operations p WHERE p.service_id = o.service_id AND p.id < o.id
                      AND p.status IN ('queued', 'running', 'waiting', 'manual'))
    ORDER BY o.next_run_at, o.id LIMIT $2"
    )
}

/// Claims up to `limit` due operations for `owner` until `lease_until`:
/// queued or waiting ones whose time has come, and running ones whose
/// lease expired (their runner died). An operation is due only when no
/// earlier unfinished operation of the same service exists, so a service's
/// operations run in order. On PostgreSQL `FOR UPDATE SKIP LOCKED` lets
/// several runners claim side by side without ever taking the same row.
pub async fn claim_due(
    mut c: Conn<'_>,
    owner: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Claimed>> {
    let skip_locked = match c {
        Conn::Sqlite(_) => "",
        Conn::Postgres(_) => "FOR UPDATE OF o SKIP LOCKED",
    };
    let due = due_operations(c.backend());
    let token = new_id("claim");
    let q = format!(
        "UPDATE operations SET status = 'running', lease_owner = $3, lease_until = $4, claim_token = $5,
            attempts = attempts + CASE WHEN remote_ref IS NULL THEN 1 ELSE 0 END, updated_at = $1
         WHERE id IN ({due} {skip_locked})
         RETURNING {OPERATION_COLUMNS}"
    );
    let rows: Vec<OperationRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(to_micros(now)).bind(limit as i64).bind(owner).bind(to_micros(lease_until)).bind(&token)
        .fetch_all(&mut **c).await)?;
    rows.into_iter()
        .map(|r| {
            Ok(Claimed {
                operation: r.into_operation()?,
                token: token.clone(),
            })
        })
        .collect()
}

/// What becomes of a claimed operation after its module call.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationUpdate {
    pub status: OperationStatus,
    pub next_run_at: DateTime<Utc>,
    pub remote_ref: Option<String>,
    pub progress: Option<String>,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub finished: bool,
}

/// Records the result of a run, if the claim still holds. Returns false
/// for a stale claim (the lease expired and another runner took over).
pub async fn finish_run(
    mut c: Conn<'_>,
    id: &str,
    token: &str,
    u: &OperationUpdate,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE operations SET status = $3, next_run_at = $4, remote_ref = $5, progress = $6, last_error = $7,
            error_kind = $8, finished_at = $9, lease_owner = NULL, lease_until = NULL, claim_token = NULL,
            updated_at = $10
         WHERE id = $1 AND claim_token = $2 AND status = 'running'")
        .bind(id).bind(token).bind(u.status.as_str()).bind(to_micros(u.next_run_at)).bind(&u.remote_ref)
        .bind(&u.progress).bind(&u.last_error).bind(&u.error_kind)
        .bind(if u.finished { Some(to_micros(now)) } else { None }).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Staff actions on an operation in the manual queue: back to the queue
/// (`retry`) or done by hand (`complete`). Only from `manual`.
pub async fn resolve_manual(
    mut c: Conn<'_>,
    id: &str,
    retry: bool,
    now: DateTime<Utc>,
) -> Result<Operation> {
    let at = to_micros(now);
    let n = if retry {
        sql!(&mut c, c => sqlx::query(
            "UPDATE operations SET status = 'queued', attempts = 0, next_run_at = $2, updated_at = $2,
                    remote_ref = NULL
             WHERE id = $1 AND status = 'manual'")
            .bind(id).bind(at).execute(&mut **c).await.map(|r| r.rows_affected()))?
    } else {
        sql!(&mut c, c => sqlx::query(
            "UPDATE operations SET status = 'done', finished_at = $2, updated_at = $2, last_error = NULL
             WHERE id = $1 AND status = 'manual'")
            .bind(id).bind(at).execute(&mut **c).await.map(|r| r.rows_affected()))?
    };
    let op = get_operation(c, id).await?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "operation {id} is {}, not in the manual queue",
            op.status.as_str()
        )));
    }
    Ok(op)
}
