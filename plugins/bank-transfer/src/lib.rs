//! Bank transfers: the payer gets instructions with a unique reference;
//! staff confirm the money arrived with `POST /api/v1/payments/{id}/mark-paid`.
//! Nothing is automatic, so nothing is trusted: there are no callbacks, and
//! `query` never reports a payment paid.
//!
//! Settings: `beneficiary`, `iban`, `bic` (required), `bank_name`.

use bursar_plugin_sdk::prelude::*;

struct BankTransfer;

/// Digits after the decimal point of a currency (ISO 4217).
fn exponent(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI" | "VND"
        | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

fn format_amount(m: &Money) -> String {
    let e = exponent(&m.currency);
    if e == 0 {
        return format!("{} {}", m.amount, m.currency);
    }
    let unit = 10i64.pow(e);
    format!("{}.{:0width$} {}", m.amount / unit, m.amount % unit, m.currency, width = e as usize)
}

/// A reference short enough to type into a banking app.
fn reference(payment_id: &str) -> String {
    let tail: String = payment_id.chars().rev().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("BSR-{}", tail.chars().rev().collect::<String>().to_ascii_uppercase())
}

fn account(settings: &Params) -> Result<(String, String, String), PluginError> {
    Ok((
        settings.require("beneficiary")?.to_owned(),
        settings.require("iban")?.to_owned(),
        settings.require("bic")?.to_owned(),
    ))
}

impl GatewayPlugin for BankTransfer {
    fn info() -> PluginInfo {
        PluginInfo::new("bank-transfer", env!("CARGO_PKG_VERSION"), &["offline", "refund"])
    }

    fn check_connection(settings: Params) -> Result<(), PluginError> {
        account(&settings).map(drop)
    }

    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError> {
        let settings = Params(request.settings.clone());
        let (beneficiary, iban, bic) = account(&settings)?;
        let reference = reference(&request.payment_id);
        let bank = settings.get("bank_name").map(|b| format!(" ({b})")).unwrap_or_default();
        Ok(CreatedPayment {
            instructions: Some(format!(
                "Transfer {} to {beneficiary}, IBAN {iban}, BIC {bic}{bank}, with the reference {reference}. \
                 The payment is credited once the transfer has arrived.",
                format_amount(&request.amount)
            )),
            gateway_ref: reference,
            checkout: Checkout::Instant(PaymentStatus::Pending),
        })
    }

    fn handle_callback(_settings: Params, _request: HttpRequest) -> Result<CallbackResult, PluginError> {
        Err(PluginError::rejected("bank transfers have no callbacks; staff mark them paid"))
    }

    fn query(_settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError> {
        Ok(PaymentEvent {
            event_id: format!("{gateway_ref}:pending"),
            gateway_ref,
            status: PaymentStatus::Pending,
            amount: None,
        })
    }

    fn refund(_settings: Params, gateway_ref: String, amount: Money, refund_id: String) -> Result<String, PluginError> {
        log::info(&format!(
            "refund {refund_id}: staff transfer {} back for {gateway_ref}",
            format_amount(&amount)
        ));
        Ok(format!("manual-{refund_id}"))
    }
}

bursar_plugin_sdk::gateway_plugin!(BankTransfer);
