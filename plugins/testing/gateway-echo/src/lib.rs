//! A gateway that says every payment is paid: shows the SDK's gateway side.

use bursar_plugin_sdk::prelude::*;

struct Echo;

impl GatewayPlugin for Echo {
    fn info() -> PluginInfo {
        PluginInfo::new("gateway-echo", env!("CARGO_PKG_VERSION"), &[])
    }

    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError> {
        Ok(CreatedPayment {
            gateway_ref: format!("echo-{}", request.payment_id),
            checkout: Checkout::Instant(PaymentStatus::Paid),
            instructions: None,
        })
    }

    fn handle_callback(_settings: Params, _request: HttpRequest) -> Result<CallbackResult, PluginError> {
        Ok(CallbackResult {
            response: HttpResponse { status: 204, headers: vec![], body: vec![] },
            events: vec![],
        })
    }

    fn query(_settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError> {
        Ok(PaymentEvent { gateway_ref, status: PaymentStatus::Paid, amount: None, event_id: "echo".into() })
    }
}

bursar_plugin_sdk::gateway_plugin!(Echo);
