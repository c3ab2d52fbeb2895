//! The payment gateway as the engine sees it, whatever version of the WIT
//! interface its plugin speaks: the host side of each version
//! (`plugins::gateway`) turns its own types into these. WIT types never
//! leave `plugins/`.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::money::Money;
use crate::payments::{Checkout, PaymentStatus};
use crate::services::module::ModuleError;

/// What the engine asks a gateway to collect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Bursar's payment id: the gateway's idempotency key.
    pub payment_id: String,
    /// Always positive.
    pub amount: Money,
    /// Shown to the payer.
    pub description: String,
    pub account_email: String,
    /// Where the payer returns after a redirect checkout.
    pub return_url: String,
}

/// What a gateway answered to a new payment (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedPayment {
    /// The gateway's reference, unique per gateway instance.
    pub gateway_ref: String,
    pub checkout: Checkout,
}

/// A verified fact about a payment (validated: a known currency, a
/// positive amount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    pub gateway_ref: String,
    pub status: PaymentStatus,
    /// The amount the gateway confirmed (for `paid`).
    pub amount: Option<Money>,
    /// The gateway's event id, for de-duplication.
    pub event_id: String,
}

/// A gateway's webhook, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRequest {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What Bursar answers the gateway's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A handled webhook: the answer, and the events the gateway verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackResult {
    pub response: CallbackResponse,
    pub events: Vec<PaymentEvent>,
}

/// A payment gateway instance.
pub trait Gateway: Send + Sync {
    /// Starts collecting a payment.
    fn create_payment(
        &self,
        request: PaymentRequest,
    ) -> BoxFuture<'_, Result<CreatedPayment, ModuleError>>;

    /// Verifies and interprets a webhook.
    fn handle_callback(
        &self,
        request: CallbackRequest,
    ) -> BoxFuture<'_, Result<CallbackResult, ModuleError>>;

    /// Reads a payment's status from the gateway.
    fn query<'a>(
        &'a self,
        gateway_ref: &'a str,
    ) -> BoxFuture<'a, Result<PaymentEvent, ModuleError>>;

    /// Gives money back (`refund_id` is the idempotency key); returns the
    /// gateway's refund reference.
    fn refund<'a>(
        &'a self,
        gateway_ref: &'a str,
        amount: Money,
        refund_id: &'a str,
    ) -> BoxFuture<'a, Result<String, ModuleError>>;
}

/// The gateway instances, by name.
pub trait Gateways: Send + Sync {
    fn gateway(&self, name: &str) -> Option<Arc<dyn Gateway>>;

    fn gateway_names(&self) -> Vec<String>;

    /// How long a payment through `name` may stay open, if its instance
    /// says.
    fn payment_expiry(&self, name: &str) -> Option<u64>;
}
