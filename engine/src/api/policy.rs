//! Who may do what: the one authorization policy.
//!
//! Every route of the HTTP API names the [`Action`] it performs in
//! [`ROUTES`]; every action names the roles allowed to take it in
//! [`allowed`]. A layer in front of the API ([`enforce`]) authenticates the
//! caller and refuses what the table refuses, before any handler runs; a
//! route missing from the table is refused for everyone (fail closed).
//! Customers are allowed an action only on their own account: the
//! [`Principal`] a handler receives carries that scope, and
//! `Principal::require_account` checks it against the resource.
//!
//! The console (and anything else that acts for a person) asks the same
//! [`allowed`] table.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::accounts::Role;
use crate::api::AppState;
use crate::api::error::Problem;
use crate::api::extract::Principal;

/// Everything a caller can do through the API (and the console).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Anyone, without a key: gateway callbacks, the OpenAPI document.
    Public,
    AccountCreate,
    AccountRead,
    /// `PATCH` an account: who may change which fields is decided field by
    /// field (`AccountEditProfile`, `AccountEditBilling`).
    AccountEdit,
    /// Name and contact data.
    AccountEditProfile,
    /// What changes what a customer owes or how: country, credit limit,
    /// status, time zone.
    AccountEditBilling,
    /// Staff credits and debits of a balance.
    LedgerAdjust,
    /// A customer's own API keys.
    CustomerKeys,
    /// Staff API keys (admin, support, accountant).
    StaffKeys,
    /// The console's staff logins: create, disable, end sessions (admins).
    StaffLogins,
    PlanRead,
    PlanWrite,
    Order,
    ServiceRead,
    ServiceSuspend,
    ServiceResume,
    ServiceClose,
    ServiceProlong,
    /// Turn a service's automatic renewal on or off.
    ServiceAutoRenew,
    ServiceChangePlan,
    /// Move a service to a plan on another module: close there, open here.
    ServiceMigrate,
    /// Reveal a service's credentials (every reveal is an event).
    ServiceCredentials,
    /// Have the module bring the remote side back to the service's state.
    ServiceSync,
    OperationRead,
    /// Retry or complete an operation of the manual queue.
    OperationWork,
    PluginRead,
    PaymentCreate,
    PaymentRead,
    /// Mark an offline payment paid.
    PaymentConfirm,
    PaymentRefund,
    PaymentReconcile,
    InvoiceRead,
    TaxRuleRead,
    TaxRuleWrite,
}

/// How far an allowed caller reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every account (staff).
    Any,
    /// Only the caller's own account (customers).
    Own,
}

/// The policy: whether `role` may take `action`, and how far. `None`
/// refuses.
pub fn allowed(role: Role, action: Action) -> Option<Reach> {
    use Action as A;
    use Role as R;
    let any = Some(Reach::Any);
    let own = Some(Reach::Own);
    match (role, action) {
        (_, A::Public) => any,
        (R::Admin, _) => any,
        // Customers: their own account, never what changes what they owe.
        (
            R::Customer,
            A::AccountRead
            | A::AccountEdit
            | A::AccountEditProfile
            | A::CustomerKeys
            | A::Order
            | A::ServiceRead
            | A::ServiceClose
            | A::ServiceProlong
            | A::ServiceAutoRenew
            | A::ServiceChangePlan
            | A::ServiceCredentials
            | A::PaymentCreate
            | A::PaymentRead
            | A::InvoiceRead,
        ) => own,
        // Plans are public knowledge (active ones, without module settings).
        (R::Customer, A::PlanRead) => any,
        (R::Customer, _) => None,
        // Staff read everything.
        (
            R::Support | R::Accountant,
            A::AccountRead
            | A::AccountEdit
            | A::PlanRead
            | A::ServiceRead
            | A::OperationRead
            | A::PluginRead
            | A::PaymentRead
            | A::InvoiceRead
            | A::TaxRuleRead,
        ) => any,
        (
            R::Support,
            A::AccountEditProfile
            | A::ServiceSuspend
            | A::ServiceResume
            | A::ServiceClose
            | A::ServiceCredentials
            | A::ServiceSync
            | A::OperationWork,
        ) => any,
        (
            R::Accountant,
            A::AccountEditProfile
            | A::AccountEditBilling
            | A::LedgerAdjust
            | A::PaymentConfirm
            | A::PaymentRefund
            | A::PaymentReconcile
            | A::TaxRuleWrite,
        ) => any,
        (R::Support | R::Accountant, _) => None,
    }
}

/// Every route of `/api/v1` and the action it performs. A route that is
/// not here is refused.
pub const ROUTES: &[(&str, &str, Action)] = {
    use Action as A;
    &[
        ("GET", "/api/v1/openapi.json", A::Public),
        ("POST", "/api/v1/gateways/{instance}/callback", A::Public),
        ("GET", "/api/v1/accounts", A::AccountRead),
        ("POST", "/api/v1/accounts", A::AccountCreate),
        ("GET", "/api/v1/accounts/{id}", A::AccountRead),
        // Which fields: the handler asks field by field.
        ("PATCH", "/api/v1/accounts/{id}", A::AccountEdit),
        ("GET", "/api/v1/accounts/{id}/balance", A::AccountRead),
        ("GET", "/api/v1/accounts/{id}/ledger", A::AccountRead),
        ("POST", "/api/v1/accounts/{id}/credits", A::LedgerAdjust),
        ("GET", "/api/v1/accounts/{id}/api-keys", A::CustomerKeys),
        ("POST", "/api/v1/accounts/{id}/api-keys", A::CustomerKeys),
        (
            "DELETE",
            "/api/v1/accounts/{id}/api-keys/{key_id}",
            A::CustomerKeys,
        ),
        ("GET", "/api/v1/staff-keys", A::StaffKeys),
        ("POST", "/api/v1/staff-keys", A::StaffKeys),
        ("DELETE", "/api/v1/staff-keys/{id}", A::StaffKeys),
        ("GET", "/api/v1/plans", A::PlanRead),
        ("POST", "/api/v1/plans", A::PlanWrite),
        ("GET", "/api/v1/plans/{id}", A::PlanRead),
        ("PUT", "/api/v1/plans/{id}", A::PlanWrite),
        ("POST", "/api/v1/plans/{id}/archive", A::PlanWrite),
        ("POST", "/api/v1/orders", A::Order),
        ("GET", "/api/v1/services", A::ServiceRead),
        ("GET", "/api/v1/services/{id}", A::ServiceRead),
        ("POST", "/api/v1/services/{id}/suspend", A::ServiceSuspend),
        ("POST", "/api/v1/services/{id}/resume", A::ServiceResume),
        ("POST", "/api/v1/services/{id}/close", A::ServiceClose),
        ("POST", "/api/v1/services/{id}/prolong", A::ServiceProlong),
        (
            "POST",
            "/api/v1/services/{id}/auto-renew",
            A::ServiceAutoRenew,
        ),
        (
            "POST",
            "/api/v1/services/{id}/change-plan",
            A::ServiceChangePlan,
        ),
        ("POST", "/api/v1/services/{id}/migrate", A::ServiceMigrate),
        ("POST", "/api/v1/services/{id}/sync", A::ServiceSync),
        (
            "GET",
            "/api/v1/services/{id}/credentials",
            A::ServiceCredentials,
        ),
        ("GET", "/api/v1/services/{id}/operations", A::ServiceRead),
        ("GET", "/api/v1/services/{id}/events", A::ServiceRead),
        ("GET", "/api/v1/operations", A::OperationRead),
        ("GET", "/api/v1/operations/{id}", A::OperationRead),
        ("POST", "/api/v1/operations/{id}/retry", A::OperationWork),
        ("POST", "/api/v1/operations/{id}/complete", A::OperationWork),
        ("GET", "/api/v1/plugins", A::PluginRead),
        ("POST", "/api/v1/plugins/{name}/check", A::PluginRead),
        ("GET", "/api/v1/plugins/{name}/catalog", A::PluginRead),
        ("GET", "/api/v1/payments", A::PaymentRead),
        ("POST", "/api/v1/payments", A::PaymentCreate),
        ("POST", "/api/v1/payments/reconcile", A::PaymentReconcile),
        ("GET", "/api/v1/payments/{id}", A::PaymentRead),
        ("POST", "/api/v1/payments/{id}/mark-paid", A::PaymentConfirm),
        ("POST", "/api/v1/payments/{id}/refunds", A::PaymentRefund),
        ("GET", "/api/v1/invoices", A::InvoiceRead),
        ("GET", "/api/v1/invoices/{id}", A::InvoiceRead),
        ("GET", "/api/v1/invoices/{id}/html", A::InvoiceRead),
        ("GET", "/api/v1/invoices/{id}/pdf", A::InvoiceRead),
        ("GET", "/api/v1/tax-rules", A::TaxRuleRead),
        ("POST", "/api/v1/tax-rules", A::TaxRuleWrite),
    ]
};

/// The action of a route (`HEAD` is `GET`'s).
pub fn action_of(method: &Method, path: &str) -> Option<Action> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, a)| *a)
}

/// The layer in front of `/api/v1`: looks the route up, authenticates the
/// caller unless the action is public, refuses what the policy refuses,
/// and hands the handler a [`Principal`] with its reach.
pub async fn enforce(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    let Some(action) = action_of(req.method(), &path) else {
        tracing::error!(method = %req.method(), route = %path, "route without a policy entry refused");
        return Problem::forbidden("this route has no authorization policy").into_response();
    };
    if action == Action::Public {
        return next.run(req).await;
    }
    let principal = match Principal::authenticate(&state, req.headers()).await {
        Ok(p) => p,
        Err(problem) => return problem.into_response(),
    };
    let Some(reach) = allowed(principal.role, action) else {
        return Problem::forbidden(format!("a {} key may not do this", principal.role.as_str()))
            .into_response();
    };
    req.extensions_mut().insert(principal.with_reach(reach));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_never_change_what_they_owe_nor_reach_staff_actions() {
        for action in [
            Action::AccountCreate,
            Action::AccountEditBilling,
            Action::LedgerAdjust,
            Action::StaffKeys,
            Action::StaffLogins,
            Action::PlanWrite,
            Action::ServiceSuspend,
            Action::ServiceResume,
            Action::ServiceMigrate,
            Action::OperationRead,
            Action::OperationWork,
            Action::PluginRead,
            Action::PaymentConfirm,
            Action::PaymentRefund,
            Action::PaymentReconcile,
            Action::TaxRuleRead,
            Action::TaxRuleWrite,
        ] {
            assert_eq!(allowed(Role::Customer, action), None, "{action:?}");
        }
        assert_eq!(allowed(Role::Customer, Action::Order), Some(Reach::Own));
    }

    #[test]
    fn support_cannot_move_money_and_accountants_cannot_provision() {
        for action in [
            Action::LedgerAdjust,
            Action::PaymentRefund,
            Action::PaymentConfirm,
            Action::AccountEditBilling,
        ] {
            assert_eq!(allowed(Role::Support, action), None, "{action:?}");
        }
        for action in [
            Action::ServiceSuspend,
            Action::OperationWork,
            Action::ServiceCredentials,
            Action::StaffKeys,
        ] {
            assert_eq!(allowed(Role::Accountant, action), None, "{action:?}");
        }
        for role in [Role::Support, Role::Accountant] {
            // Turning renewal back on would charge the customer's balance.
            assert_eq!(allowed(role, Action::ServiceAutoRenew), None, "{role:?}");
            assert_eq!(allowed(role, Action::StaffLogins), None, "{role:?}");
            assert_eq!(allowed(role, Action::PlanWrite), None, "{role:?}");
        }
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (m, p, _) in ROUTES {
            assert!(seen.insert((m, p)), "{m} {p} twice");
        }
    }
}
