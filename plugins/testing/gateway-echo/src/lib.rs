//! A gateway that says every payment is paid: shows the SDK's gateway side.
//! Its `mode` setting makes it answer garbage, so the host's validation can
//! be tested against a real component. Never configure it in production.

use bursar_plugin_sdk::prelude::*;

struct Echo;

impl GatewayPlugin for Echo {
    fn info() -> PluginInfo {
        PluginInfo::new("gateway-echo", env!("CARGO_PKG_VERSION"), &[])
    }

    fn check_connection(_settings: Params) -> Result<(), PluginError> {
        Ok(())
    }

    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError> {
        let settings = Params(request.settings.clone());
        let checkout = match settings.get("mode") {
            Some("garbage-redirect") => Checkout::Redirect("javascript:alert(1)".into()),
            _ => Checkout::Instant(PaymentStatus::Paid),
        };
        Ok(CreatedPayment { gateway_ref: format!("echo-{}", request.payment_id), checkout, instructions: None })
    }

    fn handle_callback(settings: Params, _request: HttpRequest) -> Result<CallbackResult, PluginError> {
        match settings.get("mode") {
            // Takes its time: for the host's concurrency bound and deadline.
            Some("slow-callback") => std::thread::sleep(std::time::Duration::from_millis(settings.parse("sleep_ms")?.unwrap_or(500))),
            // Fails with words that must stay in the log.
            Some("leaky-callback") => {
                return Err(PluginError::rejected("signature check against db.internal.example:5432 failed"));
            }
            Some("panicky-callback") => panic!("callback panics at src/secret_handler.rs:42"),
            _ => {}
        }
        Ok(CallbackResult {
            response: HttpResponse { status: 204, headers: vec![], body: vec![] },
            events: vec![],
        })
    }

    fn query(settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError> {
        let amount = match settings.get("mode") {
            Some("garbage-amount") => Some(Money { amount: -500, currency: "EUR".into() }),
            Some("garbage-currency") => Some(Money { amount: 500, currency: "XYZ".into() }),
            _ => Some(Money { amount: 500, currency: "EUR".into() }),
        };
        let gateway_ref = match settings.get("mode") {
            Some("garbage-huge") => "x".repeat(3 << 20),
            _ => gateway_ref,
        };
        Ok(PaymentEvent { gateway_ref, status: PaymentStatus::Paid, amount, event_id: "echo".into() })
    }
}

bursar_plugin_sdk::gateway_plugin!(Echo);
