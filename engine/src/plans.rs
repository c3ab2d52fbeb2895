//! The catalog's workflows: plans are created, changed and archived here,
//! checked against the processing modules that will provision them.

use chrono::{DateTime, Utc};

use crate::accounts::FieldError;
use crate::catalog::{Plan, PlanSpec};
use crate::error::{Error, Refusal, Result};
use crate::services::module::{ModuleRegistry, missing_requirement};
use crate::store::Conn;
use crate::store::catalog as repo;

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    FieldError::new(field, message).into()
}

/// Each plan of the change list exists and is provisioned by the same
/// module instance for the same product type (a move to another module is
/// a staff migration, never a plan change).
async fn check_change_list(mut c: Conn<'_>, spec: &PlanSpec, own_id: Option<&str>) -> Result<()> {
    for id in &spec.change_to {
        if Some(id.as_str()) == own_id {
            return Err(invalid("change_to", "a plan cannot change to itself"));
        }
        let other = match repo::get(c.reborrow(), id).await {
            Ok(p) => p,
            Err(Error::NotFound { .. }) => {
                return Err(invalid("change_to", format!("no plan {id}")));
            }
            Err(e) => return Err(e),
        };
        if other.spec.module != spec.module || other.spec.product_type != spec.product_type {
            return Err(invalid(
                "change_to",
                format!(
                    "plan {id} is provisioned by `{}` as {}; a plan changes only to plans of its own module and product type",
                    other.spec.module,
                    other.spec.product_type.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn check_spec(modules: &ModuleRegistry, spec: &PlanSpec) -> Result<()> {
    spec.validate()?;
    let Some(module) = modules.get(&spec.module) else {
        return Err(invalid(
            "module",
            format!(
                "no processing module instance named `{}` (known: {})",
                spec.module,
                modules.names().join(", ")
            ),
        ));
    };
    let codes: Vec<&str> = spec.addons.iter().map(|a| a.code()).collect();
    if let Some(missing) = missing_requirement(&module.features(), &spec.module_settings, &codes) {
        return Err(invalid(
            "module_settings",
            format!(
                "module `{}` needs the plan to set `{missing}` (a module setting, or an add-on of that code)",
                spec.module
            ),
        ));
    }
    Ok(())
}

/// A new plan, on sale at once.
pub async fn create(
    mut c: Conn<'_>,
    modules: &ModuleRegistry,
    mut spec: PlanSpec,
    now: DateTime<Utc>,
) -> Result<Plan> {
    spec.name = spec.name.trim().to_owned();
    check_spec(modules, &spec)?;
    check_change_list(c.reborrow(), &spec, None).await?;
    repo::create(c, spec, now).await
}

/// Replaces a plan's definition. Services already sold keep their price
/// until they renew; a plan with live services keeps its module and
/// product type (they move by staff migration, never silently).
pub async fn update(
    mut c: Conn<'_>,
    modules: &ModuleRegistry,
    id: &str,
    mut spec: PlanSpec,
    now: DateTime<Utc>,
) -> Result<Plan> {
    spec.name = spec.name.trim().to_owned();
    check_spec(modules, &spec)?;
    check_change_list(c.reborrow(), &spec, Some(id)).await?;
    let current = repo::get(c.reborrow(), id).await?;
    if (current.spec.module != spec.module || current.spec.product_type != spec.product_type)
        && repo::live_services(c.reborrow(), id).await? > 0
    {
        return Err(Error::Refused {
            refusal: Refusal::PlanInUse,
            message:
                "services on this plan would silently move to another module or product type; \
                      create a new plan and migrate them (POST /services/{id}/migrate)"
                    .into(),
        });
    }
    repo::update(c, id, spec, now).await
}

/// Stops selling a plan. Plans are never deleted: services keep using them.
pub async fn archive(c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<Plan> {
    repo::archive(c, id, now).await
}
