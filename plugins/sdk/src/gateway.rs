//! Payment gateways: the [`GatewayPlugin`] trait and its export macro.

use crate::bindings::exports::bursar::plugin::gateway as wit;
use crate::common::{Params, PluginError, PluginInfo};

pub use wit::{
    CallbackResult, Checkout, CreatedPayment, HttpRequest, HttpResponse, PaymentEvent, PaymentRequest, PaymentStatus,
};
pub use crate::bindings::bursar::plugin::types::Money;

/// A payment gateway. `info`, `create_payment`, `handle_callback` and
/// `query` are required; `refund` defaults to `unsupported`.
pub trait GatewayPlugin {
    fn info() -> PluginInfo;

    /// Reach the payment provider with `settings` and say whether it
    /// answers; `unsupported` unless implemented.
    fn check_connection(_settings: Params) -> Result<(), PluginError> {
        Err(PluginError::unsupported("this gateway does not implement `check-connection`"))
    }

    /// Starts collecting a payment; `request.payment_id` is the idempotency key.
    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError>;

    /// Verifies a callback (signature, then a fresh read from the gateway's
    /// API for anything that claims money arrived) and answers it.
    fn handle_callback(settings: Params, request: HttpRequest) -> Result<CallbackResult, PluginError>;

    /// Reads a payment's status from the gateway.
    fn query(settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError>;

    /// Gives money back; returns the gateway's refund reference.
    fn refund(_settings: Params, _gateway_ref: String, _amount: Money, _refund_id: String) -> Result<String, PluginError> {
        Err(PluginError::unsupported("this gateway does not implement `refund`"))
    }
}

/// Exports a [`GatewayPlugin`] implementation as the plugin's
/// `bursar:plugin/gateway` interface.
#[macro_export]
macro_rules! gateway_plugin {
    ($gateway:ty) => {
        struct __BursarGatewayExport;

        impl $crate::bindings::exports::bursar::plugin::gateway::Guest for __BursarGatewayExport {
            fn info() -> $crate::PluginInfo {
                <$gateway as $crate::GatewayPlugin>::info()
            }
            fn check_connection(settings: ::std::vec::Vec<(String, String)>) -> Result<(), $crate::PluginError> {
                <$gateway as $crate::GatewayPlugin>::check_connection(settings.into())
            }
            fn create_payment(request: $crate::PaymentRequest) -> Result<$crate::CreatedPayment, $crate::PluginError> {
                <$gateway as $crate::GatewayPlugin>::create_payment(request)
            }
            fn handle_callback(
                settings: ::std::vec::Vec<(String, String)>,
                request: $crate::HttpRequest,
            ) -> Result<$crate::CallbackResult, $crate::PluginError> {
                <$gateway as $crate::GatewayPlugin>::handle_callback(settings.into(), request)
            }
            fn query(
                settings: ::std::vec::Vec<(String, String)>,
                gateway_ref: String,
            ) -> Result<$crate::PaymentEvent, $crate::PluginError> {
                <$gateway as $crate::GatewayPlugin>::query(settings.into(), gateway_ref)
            }
            fn refund(
                settings: ::std::vec::Vec<(String, String)>,
                gateway_ref: String,
                amount: $crate::Money,
                refund_id: String,
            ) -> Result<String, $crate::PluginError> {
                <$gateway as $crate::GatewayPlugin>::refund(settings.into(), gateway_ref, amount, refund_id)
            }
        }

        $crate::bindings::export_world!(__BursarGatewayExport);
    };
}
