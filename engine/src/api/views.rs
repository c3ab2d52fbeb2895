//! What the API answers with: response bodies of their own, mapped from
//! the domain, so internal bookkeeping (claim leases, operation payloads,
//! idempotency keys, proration ranges) never reaches a client and the
//! domain can change without breaking one. Each keeps the name clients
//! know (`Service`, `Payment`, …) in the OpenAPI document.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::{Account, AccountStatus, ApiKey, Role};
use crate::catalog::{Addon, CustomerAction, Fee, Plan, PlanStatus, Price, ProductType};
use crate::invoices::{Invoice, InvoiceKind, InvoiceLine, TaxLine, TaxRule};
use crate::ledger::TransactionKind;
use crate::payments::{Checkout, Payment, PaymentStatus, Refund, RefundStatus};
use crate::services::{
    Operation, OperationKind, OperationStatus, Service, ServiceEvent, ServiceStatus, SuspendReason,
};
use crate::store::ledger::{Entry, LedgerTransaction, StatementLine};

/// A customer account.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    pub id: String,
    pub email: String,
    pub name: String,
    /// ISO 4217.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// How far below zero the balance may go, in minor units.
    pub credit_limit: i64,
    pub status: AccountStatus,
    /// ISO 3166-1 alpha-2.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    /// IANA time zone its services count their periods in; none: the
    /// deployment's.
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// ISO 639-1: the language of its mail.
    #[schema(example = "en")]
    pub language: String,
    /// Optional mail it turned off.
    pub email_opt_out: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        AccountView {
            id: a.id,
            email: a.email,
            name: a.name,
            currency: a.currency.code().to_owned(),
            credit_limit: a.credit_limit,
            status: a.status,
            country: a.country,
            time_zone: a.time_zone.map(|z| z.to_string()),
            language: a.language,
            email_opt_out: a
                .email_opt_out
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// An API key (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    pub id: String,
    pub role: Role,
    /// The customer's account; none for staff keys.
    pub account_id: Option<String>,
    pub name: String,
    /// The secret's first characters, to recognise it by.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Kept by the deployment's configuration (`BURSAR_ADMIN_KEY`).
    pub managed: bool,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        ApiKeyView {
            id: k.id,
            role: k.role,
            account_id: k.account_id,
            name: k.name,
            prefix: k.prefix,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            managed: k.managed,
            last_used_at: k.last_used_at,
            expires_at: k.expires_at,
        }
    }
}

/// A plan of the catalog. Customers see active plans only, without their
/// module settings.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Plan)]
pub struct PlanView {
    pub id: String,
    pub status: PlanStatus,
    pub name: String,
    pub product_type: ProductType,
    /// The processing module instance that provisions its services.
    pub module: String,
    /// What the module is told about the plan; staff only (absent for
    /// customers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_settings: Option<BTreeMap<String, String>>,
    pub prices: Vec<Price>,
    pub setup_fees: Vec<Fee>,
    pub addons: Vec<Addon>,
    pub auto_renew: bool,
    pub grace_days: u32,
    pub deletion_days: u32,
    pub customer_actions: BTreeSet<CustomerAction>,
    /// The plans a service on this one may change to.
    pub change_to: BTreeSet<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Plan> for PlanView {
    fn from(p: Plan) -> Self {
        let s = p.spec;
        PlanView {
            id: p.id,
            status: p.status,
            name: s.name,
            product_type: s.product_type,
            module: s.module,
            module_settings: (!s.module_settings.is_empty()).then_some(s.module_settings),
            prices: s.prices,
            setup_fees: s.setup_fees,
            addons: s.addons,
            auto_renew: s.auto_renew,
            grace_days: s.grace_days,
            deletion_days: s.deletion_days,
            customer_actions: s.customer_actions,
            change_to: s.change_to,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A service: what a customer ordered, and where it is in its life.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Service)]
pub struct ServiceView {
    pub id: String,
    pub account_id: String,
    pub plan_id: String,
    pub status: ServiceStatus,
    pub suspend_reason: Option<SuspendReason>,
    #[schema(value_type = crate::calendar::Period, example = "1m")]
    pub period: String,
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    pub currency: String,
    /// What one period costs, add-ons included, in minor units.
    pub recurring_price: i64,
    pub setup_fee: i64,
    /// What is owed before an unpaid order opens.
    pub amount_due: i64,
    /// The add-on values chosen, by code.
    #[schema(value_type = Object)]
    pub addons: serde_json::Value,
    /// What the module recorded (server id, IP addresses…).
    pub params: BTreeMap<String, String>,
    pub auto_renew: bool,
    #[schema(example = "Europe/Berlin")]
    pub time_zone: String,
    /// Start of the period being served.
    pub period_start: Option<DateTime<Utc>>,
    /// End of the time paid for.
    pub paid_until: Option<DateTime<Utc>>,
    pub suspended_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Service> for ServiceView {
    fn from(s: Service) -> Self {
        ServiceView {
            addons: serde_json::to_value(&s.addons).unwrap_or_default(),
            id: s.id,
            account_id: s.account_id,
            plan_id: s.plan_id,
            status: s.status,
            suspend_reason: s.suspend_reason,
            period: s.period.as_str().to_owned(),
            currency: s.currency.code().to_owned(),
            recurring_price: s.recurring_price,
            setup_fee: s.setup_fee,
            amount_due: s.amount_due,
            params: s.params,
            auto_renew: s.auto_renew,
            time_zone: s.time_zone.to_string(),
            period_start: s.period_start,
            paid_until: s.paid_until,
            suspended_at: s.suspended_at,
            closed_at: s.closed_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A provisioning operation: one call (or series of polls) to a module.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Operation)]
pub struct OperationView {
    pub id: String,
    pub service_id: String,
    pub kind: OperationKind,
    /// The module instance it runs on.
    pub module: String,
    pub status: OperationStatus,
    pub attempts: i64,
    /// When it runs (or is polled) next.
    pub next_run_at: DateTime<Utc>,
    /// The module's handle on the remote work (e.g. a DCImanager task).
    pub remote_ref: Option<String>,
    /// What the module last said about its progress.
    pub progress: Option<String>,
    pub last_error: Option<String>,
    pub error_kind: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Operation> for OperationView {
    fn from(o: Operation) -> Self {
        OperationView {
            id: o.id,
            service_id: o.service_id,
            kind: o.kind,
            module: o.module,
            status: o.status,
            attempts: o.attempts,
            next_run_at: o.next_run_at,
            remote_ref: o.remote_ref,
            progress: o.progress,
            last_error: o.last_error,
            error_kind: o.error_kind,
            created_at: o.created_at,
            updated_at: o.updated_at,
            finished_at: o.finished_at,
        }
    }
}

/// One line of a service's history.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ServiceEvent)]
pub struct ServiceEventView {
    pub id: i64,
    pub service_id: String,
    pub action: String,
    pub from_status: String,
    pub to_status: String,
    pub reason: Option<String>,
    /// Who: a key id, `automation`, `runner`, `cli`.
    pub actor: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

impl From<ServiceEvent> for ServiceEventView {
    fn from(e: ServiceEvent) -> Self {
        ServiceEventView {
            id: e.id,
            service_id: e.service_id,
            action: e.action,
            from_status: e.from_status,
            to_status: e.to_status,
            reason: e.reason,
            actor: e.actor,
            detail: e.detail,
            at: e.at,
        }
    }
}

/// A refund of (part of) a payment.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Refund)]
pub struct RefundView {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub status: RefundStatus,
    pub gateway_ref: Option<String>,
    pub reason: String,
    /// Recorded without the gateway (money returned another way).
    pub forced: bool,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Refund> for RefundView {
    fn from(r: Refund) -> Self {
        RefundView {
            id: r.id,
            payment_id: r.payment_id,
            amount: r.amount,
            currency: r.currency.code().to_owned(),
            status: r.status,
            gateway_ref: r.gateway_ref,
            reason: r.reason,
            forced: r.forced,
            last_error: r.last_error,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A payment through a gateway, with its refunds.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Payment)]
pub struct PaymentView {
    pub id: String,
    pub account_id: String,
    /// The gateway plugin instance.
    pub gateway: String,
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub status: PaymentStatus,
    pub gateway_ref: Option<String>,
    /// The unpaid order it pays for, if any.
    pub service_id: Option<String>,
    pub description: String,
    pub refunded_amount: i64,
    /// How the customer pays: where to send them, or what to tell them.
    pub checkout: Option<Checkout>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// An unpaid payment expires then.
    pub expires_at: Option<DateTime<Utc>>,
    /// Its refunds; present when one payment is asked for, left out of
    /// lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        PaymentView::new(p, None)
    }
}

impl PaymentView {
    pub fn new(p: Payment, refunds: Option<Vec<Refund>>) -> Self {
        PaymentView {
            id: p.id,
            account_id: p.account_id,
            gateway: p.gateway,
            amount: p.amount,
            currency: p.currency.code().to_owned(),
            status: p.status,
            gateway_ref: p.gateway_ref,
            service_id: p.service_id,
            description: p.description,
            refunded_amount: p.refunded_amount,
            checkout: p.checkout,
            last_error: p.last_error,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
            paid_at: p.paid_at,
            expires_at: p.expires_at,
            refunds: refunds.map(|r| r.into_iter().map(RefundView::from).collect()),
        }
    }
}

/// One leg of a ledger transaction.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Entry)]
pub struct EntryView {
    pub id: i64,
    pub transaction_id: String,
    /// The ledger account moved: `customer:{id}`, `revenue`, `holds:{id}`…
    pub ledger_account_id: String,
    /// Signed, in minor units.
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

impl From<Entry> for EntryView {
    fn from(e: Entry) -> Self {
        EntryView {
            id: e.id,
            transaction_id: e.transaction_id,
            ledger_account_id: e.ledger_account_id,
            amount: e.amount,
            currency: e.currency.code().to_owned(),
            created_at: e.created_at,
        }
    }
}

/// A balanced movement of money.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LedgerTransaction)]
pub struct TransactionView {
    pub id: String,
    pub kind: TransactionKind,
    pub description: String,
    pub account_id: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub entries: Vec<EntryView>,
}

impl From<LedgerTransaction> for TransactionView {
    fn from(t: LedgerTransaction) -> Self {
        TransactionView {
            id: t.id,
            kind: t.kind,
            description: t.description,
            account_id: t.account_id,
            created_by: t.created_by,
            created_at: t.created_at,
            entries: t.entries.into_iter().map(EntryView::from).collect(),
        }
    }
}

/// One line of a customer's statement.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StatementLine)]
pub struct StatementLineView {
    pub entry_id: i64,
    pub transaction_id: String,
    pub kind: TransactionKind,
    pub description: String,
    /// Signed: positive adds to the balance.
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<StatementLine> for StatementLineView {
    fn from(l: StatementLine) -> Self {
        StatementLineView {
            entry_id: l.entry_id,
            transaction_id: l.transaction_id,
            kind: l.kind,
            description: l.description,
            amount: l.amount,
            currency: l.currency.code().to_owned(),
            created_by: l.created_by,
            created_at: l.created_at,
        }
    }
}

/// An invoice, receipt or credit note.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Invoice)]
pub struct InvoiceView {
    pub id: String,
    /// Gapless within its kind and year.
    pub number: String,
    pub kind: InvoiceKind,
    pub account_id: String,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub net: i64,
    pub tax: i64,
    pub total: i64,
    pub lines: Vec<InvoiceLine>,
    pub tax_lines: Vec<TaxLine>,
    pub transaction_id: String,
    pub payment_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Invoice> for InvoiceView {
    fn from(i: Invoice) -> Self {
        InvoiceView {
            id: i.id,
            number: i.number,
            kind: i.kind,
            account_id: i.account_id,
            currency: i.currency.code().to_owned(),
            net: i.net,
            tax: i.tax,
            total: i.total,
            lines: i.lines,
            tax_lines: i.tax_lines,
            transaction_id: i.transaction_id,
            payment_id: i.payment_id,
            created_at: i.created_at,
        }
    }
}

/// A tax charged to customers of a country.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = TaxRule)]
pub struct TaxRuleView {
    pub id: String,
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// Only for services of this product type; none: all.
    pub product_type: Option<String>,
    pub name: String,
    /// Basis points: 1900 is 19 %.
    pub rate_bp: i64,
    /// Whether prices already include it.
    pub inclusive: bool,
    pub created_at: DateTime<Utc>,
}

impl From<TaxRule> for TaxRuleView {
    fn from(r: TaxRule) -> Self {
        TaxRuleView {
            id: r.id,
            country: r.country,
            product_type: r.product_type,
            name: r.name,
            rate_bp: r.rate_bp,
            inclusive: r.inclusive,
            created_at: r.created_at,
        }
    }
}
