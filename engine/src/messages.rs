//! What Bursar tells people by e-mail, and when: the kinds of message and
//! the events they are made from. Pure: the store records a message in
//! the transaction of the event ([`from_event`]); `notify::email` renders
//! and sends it.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// A kind of message. Its name is the template's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The account was opened.
    Welcome,
    /// An order was placed: paid (being set up) or awaiting payment.
    OrderReceived,
    /// The module finished setting a service up.
    ServiceActive,
    /// An invoice was issued (its PDF attached).
    InvoiceIssued,
    PaymentReceived,
    RefundIssued,
    /// A renewal is due soon and the balance does not cover it.
    RenewalDue,
    /// The balance fell below the configured threshold.
    BalanceLow,
    ServiceSuspended,
    ServiceResumed,
    /// A service suspended for non-payment is deleted soon.
    DeletionWarning,
    ServiceClosed,
    PasswordReset,
    /// To staff: an operation waits in the manual queue.
    StaffManualQueue,
    /// To staff: a gateway did not make a refund.
    StaffRefundFailed,
    /// To staff: a plugin's operations keep failing.
    StaffPluginFailing,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
        Kind::Welcome,
        Kind::OrderReceived,
        Kind::ServiceActive,
        Kind::InvoiceIssued,
        Kind::PaymentReceived,
        Kind::RefundIssued,
        Kind::RenewalDue,
        Kind::BalanceLow,
        Kind::ServiceSuspended,
        Kind::ServiceResumed,
        Kind::DeletionWarning,
        Kind::ServiceClosed,
        Kind::PasswordReset,
        Kind::StaffManualQueue,
        Kind::StaffRefundFailed,
        Kind::StaffPluginFailing,
    ];

    /// What a customer may turn off: the reminders. Everything else —
    /// above all what the service depends on — always goes out.
    pub const OPTIONAL: [Kind; 2] = [Kind::RenewalDue, Kind::BalanceLow];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderReceived => "order_received",
            Kind::ServiceActive => "service_active",
            Kind::InvoiceIssued => "invoice_issued",
            Kind::PaymentReceived => "payment_received",
            Kind::RefundIssued => "refund_issued",
            Kind::RenewalDue => "renewal_due",
            Kind::BalanceLow => "balance_low",
            Kind::ServiceSuspended => "service_suspended",
            Kind::ServiceResumed => "service_resumed",
            Kind::DeletionWarning => "deletion_warning",
            Kind::ServiceClosed => "service_closed",
            Kind::PasswordReset => "password_reset",
            Kind::StaffManualQueue => "staff_manual_queue",
            Kind::StaffRefundFailed => "staff_refund_failed",
            Kind::StaffPluginFailing => "staff_plugin_failing",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_optional(self) -> bool {
        Kind::OPTIONAL.contains(&self)
    }

    /// Sent to the staff address, not to a customer.
    pub fn is_staff(self) -> bool {
        matches!(
            self,
            Kind::StaffManualQueue | Kind::StaffRefundFailed | Kind::StaffPluginFailing
        )
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A message to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub kind: Kind,
    /// What the message is about (ids and the event's own fields).
    pub data: Value,
    /// At most one message per key.
    pub dedup_key: Option<String>,
}

/// A plugin whose operation failed this many times in a row is reported
/// to staff (at most once an hour per plugin).
pub const FAILING_AFTER_ATTEMPTS: i64 = 3;

/// The message an event (as announced to webhooks: type and data) makes,
/// if any.
pub fn from_event(event_type: &str, data: &Value, now: DateTime<Utc>) -> Option<NewMessage> {
    let text = |k: &str| data.get(k).and_then(Value::as_str).unwrap_or_default();
    let message = |kind: Kind| NewMessage {
        kind,
        data: data.clone(),
        dedup_key: None,
    };
    let kind = match event_type {
        "account.created" => Kind::Welcome,
        "invoice.issued" if text("kind") == "invoice" => Kind::InvoiceIssued,
        "payment.paid" => Kind::PaymentReceived,
        "payment.refunded" => Kind::RefundIssued,
        "payment.refund_failed" => Kind::StaffRefundFailed,
        "operation.manual" => Kind::StaffManualQueue,
        "operation.failing" => {
            return Some(NewMessage {
                kind: Kind::StaffPluginFailing,
                data: data.clone(),
                dedup_key: Some(format!(
                    "plugin_failing:{}:{}",
                    text("module"),
                    now.format("%Y-%m-%dT%H")
                )),
            });
        }
        "service.order" => Kind::OrderReceived,
        "service.opened" if text("to") == "active" => Kind::ServiceActive,
        "service.suspend" => Kind::ServiceSuspended,
        "service.resume" => Kind::ServiceResumed,
        t if t.starts_with("service.") && text("to") == "closed" && text("from") != "closed" => {
            Kind::ServiceClosed
        }
        _ => return None,
    };
    Some(message(kind))
}

/// Data a template is shown by `bursar notify preview` and checked with at
/// start: every field any message can carry.
pub fn sample_context(kind: Kind) -> Value {
    json!({
        "kind": kind.as_str(),
        "company": {"name": "Example Hosting", "address": "1 Example Street, Berlin, DE", "tax_id": "DE123456789", "email": "billing@example.com"},
        "portal_url": "https://my.example.com",
        "account": {"id": "acc_sample", "name": "Ada Lovelace", "email": "ada@example.com", "balance": "12.50 EUR", "currency": "EUR", "time_zone": "Europe/Berlin"},
        "service": {
            "id": "svc_sample", "plan": "Dedicated E3-1230", "status": "active",
            "params": {"hostname": "srv42.example.com", "ipv4": "192.0.2.10"},
            "credentials": {"password": "s3cret-sample"},
            "paid_until": "2026-12-31 00:00 CET", "suspend_reason": "non-payment",
            "deletion_date": "2027-01-14 00:00 CET", "url": "https://my.example.com/services/svc_sample",
            "credentials_url": "https://my.example.com/services/svc_sample#credentials"
        },
        "order": {"awaiting_payment": true, "amount_due": "49.00 EUR"},
        "payment": {"id": "pay_sample", "amount": "50.00 EUR", "gateway": "stripe"},
        "invoice": {"id": "inv_sample", "number": "INV-2026-000042", "kind": "invoice", "total": "49.00 EUR", "url": "https://my.example.com/invoices/inv_sample"},
        "renewal": {"amount": "49.00 EUR", "missing": "36.50 EUR", "days": 7, "date": "2026-12-31 00:00 CET"},
        "threshold": "20.00 EUR",
        "topup_url": "https://my.example.com/payments/new",
        "reset": {"url": "https://my.example.com/reset/sample-token", "valid_hours": 2},
        "operation": {"id": "op_sample", "kind": "open", "module": "dcimanager6", "attempts": 3, "error": "connection refused", "service_id": "svc_sample", "url": "https://my.example.com/staff/operations"},
        "refund": {"payment_id": "pay_sample", "amount": "50.00 EUR", "gateway": "stripe"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn service_events_make_the_messages_the_service_depends_on() {
        let ev = |t: &str, from: &str, to: &str| {
            from_event(
                t,
                &json!({"service_id": "svc_1", "from": from, "to": to}),
                now(),
            )
            .map(|m| m.kind)
        };
        assert_eq!(
            ev("service.order", "ordered", "ordered"),
            Some(Kind::OrderReceived)
        );
        assert_eq!(
            ev("service.opened", "opening", "active"),
            Some(Kind::ServiceActive)
        );
        assert_eq!(
            ev("service.suspend", "active", "suspended"),
            Some(Kind::ServiceSuspended)
        );
        assert_eq!(
            ev("service.resume", "suspended", "active"),
            Some(Kind::ServiceResumed)
        );
        assert_eq!(
            ev("service.closed", "closing", "closed"),
            Some(Kind::ServiceClosed)
        );
        assert_eq!(
            ev("service.close", "ordered", "closed"),
            Some(Kind::ServiceClosed)
        );
        assert_eq!(ev("service.close", "active", "closing"), None);
        assert_eq!(ev("service.prolong", "active", "active"), None);
        assert_eq!(ev("service.sync", "active", "active"), None);
    }

    #[test]
    fn only_invoices_are_announced_as_issued_and_failures_are_rate_limited() {
        let inv = |kind: &str| from_event("invoice.issued", &json!({"kind": kind}), now());
        assert_eq!(inv("invoice").map(|m| m.kind), Some(Kind::InvoiceIssued));
        assert_eq!(inv("receipt"), None);
        let failing = from_event("operation.failing", &json!({"module": "dci"}), now()).unwrap();
        assert_eq!(failing.kind, Kind::StaffPluginFailing);
        let later = from_event(
            "operation.failing",
            &json!({"module": "dci"}),
            now() + chrono::Duration::minutes(5),
        )
        .unwrap();
        assert_eq!(
            failing.dedup_key, later.dedup_key,
            "once an hour per plugin"
        );
    }

    #[test]
    fn only_reminders_are_optional() {
        for k in Kind::ALL {
            assert_eq!(
                k.is_optional(),
                matches!(k, Kind::RenewalDue | Kind::BalanceLow),
                "{k:?}"
            );
        }
        assert!(!Kind::ServiceSuspended.is_optional());
        assert!(!Kind::PasswordReset.is_optional());
    }
}
