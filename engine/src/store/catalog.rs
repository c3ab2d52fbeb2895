//! Plans.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::catalog::{Plan, PlanSpec, PlanStatus};
use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::sql;
use crate::store::{Conn, Page};

#[derive(FromRow)]
struct PlanRow {
    id: String,
    spec: String,
    status: String,
    created_at: i64,
    updated_at: i64,
}

impl PlanRow {
    fn into_plan(self) -> Result<Plan> {
        let spec: PlanSpec = serde_json::from_str(&self.spec).map_err(|e| {
            Error::Database(sqlx::Error::Decode(format!("plan {}: {e}", self.id).into()))
        })?;
        Ok(Plan {
            status: if self.status == "archived" {
                PlanStatus::Archived
            } else {
                PlanStatus::Active
            },
            id: self.id,
            spec,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

fn spec_json(spec: &PlanSpec) -> Result<String> {
    serde_json::to_string(spec).map_err(|e| Error::Conflict(format!("plan cannot be stored: {e}")))
}

pub async fn create(mut c: Conn<'_>, spec: PlanSpec, now: DateTime<Utc>) -> Result<Plan> {
    let id = new_id("plan");
    let at = to_micros(now);
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO plans (id, name, product_type, module, spec, status, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)")
        .bind(&id).bind(&spec.name).bind(spec.product_type.as_str()).bind(&spec.module)
        .bind(spec_json(&spec)?).bind(at)
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(Plan {
        id,
        spec,
        status: PlanStatus::Active,
        created_at: now,
        updated_at: now,
    })
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Plan> {
    let row: Option<PlanRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, spec, status, created_at, updated_at FROM plans WHERE id = $1")
        .bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("plan", id))?.into_plan()
}

pub async fn list(
    mut c: Conn<'_>,
    status: Option<PlanStatus>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Plan>> {
    let status = status.map(|s| {
        if s == PlanStatus::Archived {
            "archived"
        } else {
            "active"
        }
    });
    let rows: Vec<PlanRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, spec, status, created_at, updated_at FROM plans
         WHERE id > $1 AND ($2 IS NULL OR status = $2) ORDER BY id LIMIT $3")
        .bind(after.unwrap_or("")).bind(status).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let plans = rows
        .into_iter()
        .map(PlanRow::into_plan)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(plans, limit, |p| p.id.clone()))
}

/// Replaces a plan's spec. Services keep the prices they were sold at
/// until their next renewal.
pub async fn update(mut c: Conn<'_>, id: &str, spec: PlanSpec, now: DateTime<Utc>) -> Result<Plan> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE plans SET name = $2, product_type = $3, module = $4, spec = $5, updated_at = $6 WHERE id = $1")
        .bind(id).bind(&spec.name).bind(spec.product_type.as_str()).bind(&spec.module)
        .bind(spec_json(&spec)?).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(Error::not_found("plan", id));
    }
    get(c, id).await
}

/// Archives a plan: it stays for the services that use it, but sells no more.
pub async fn archive(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<Plan> {
    let n = sql!(&mut c, c => sqlx::query("UPDATE plans SET status = 'archived', updated_at = $2 WHERE id = $1")
        .bind(id).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(Error::not_found("plan", id));
    }
    get(c, id).await
}

/// Services on a plan that are not closed.
pub async fn live_services(mut c: Conn<'_>, plan_id: &str) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM services WHERE plan_id = $1 AND status <> 'closed'")
        .bind(plan_id).fetch_one(&mut **c).await)?)
}
