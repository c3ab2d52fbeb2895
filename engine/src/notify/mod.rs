//! Notifications out: signed webhooks to the endpoints in `[[webhook]]`.
//!
//! Service and payment events are written to an outbox table in the same
//! transaction as the change they describe, then delivered at least once:
//! every pending event is POSTed to every endpoint, and stays pending —
//! retried with exponential backoff — until all of them answered 2xx.
//! Receivers deduplicate by the event `id`.
//!
//! Each request carries `Bursar-Signature: t={unix seconds},v1={hex}`, the
//! HMAC-SHA256 of `"{t}.{body}"` with the endpoint's secret — the scheme
//! Stripe uses, so the same verification code serves both.

pub mod email;

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::error::Result;
use crate::secrets::SettingValue;
use crate::store::statistics::ClaimStatistics;
use crate::store::{Conn, Store, outbox as repo};

/// One `[[webhook]]` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The signing secret (text, `{ env = "…" }` or `{ file = "…" }`).
    pub secret: SettingValue,
    /// Event types to send: exact names or prefixes ending in `*`
    /// (`service.*`); all when empty.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookConfig {
    fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty()
            || self.events.iter().any(|e| match e.strip_suffix('*') {
                Some(prefix) => event_type.starts_with(prefix),
                None => e == event_type,
            })
    }
}

/// Records an event for the webhook endpoints, in the caller's transaction.
pub async fn record(c: Conn<'_>, event_type: &str, data: Value, now: DateTime<Utc>) -> Result<()> {
    repo::insert(c, &[(event_type.to_owned(), data)], now).await
}

/// Records many events at once (type and data each), in order.
pub async fn record_many(
    c: Conn<'_>,
    events: &[(String, Value)],
    now: DateTime<Utc>,
) -> Result<()> {
    repo::insert(c, events, now).await
}

/// The signature header value for `body` at `t`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers pending events to the endpoints.
pub struct Deliverer {
    store: Store,
    endpoints: Vec<(WebhookConfig, String)>,
    http: reqwest::Client,
    /// Refreshes the planner's view of the outbox when a claim was slow.
    statistics: ClaimStatistics,
}

/// Retries double from this, up to an hour.
const FIRST_RETRY_SECS: i64 = 5;
const MAX_RETRY_SECS: i64 = 3600;
/// An event claimed by a deliverer is left alone by others this long.
const CLAIM_SECS: i64 = 60;

impl Deliverer {
    pub fn new(store: Store, endpoints: &[WebhookConfig]) -> anyhow::Result<Deliverer> {
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let secret = e
                    .secret
                    .resolve()
                    .map_err(|m| anyhow::anyhow!("webhook {}: secret: {m}", e.url))?;
                Ok((e.clone(), secret))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Deliverer {
            store,
            endpoints,
            http,
            statistics: ClaimStatistics::new("outbox"),
        })
    }

    /// Delivers what is due; returns how many events were delivered.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Result<usize> {
        let until = now + chrono::Duration::seconds(CLAIM_SECS);
        let claimed = self
            .statistics
            .claim(&self.store, async |c| {
                repo::claim_due(c, now, until, 50).await
            })
            .await?;
        let mut delivered = 0;
        for event in claimed {
            let body = serde_json::to_vec(&json!({
                "id": event.event_id,
                "type": event.event_type,
                "created_at": event.created_at,
                "data": event.payload,
            }))
            .expect("JSON values serialize");
            let mut failure = None;
            for (endpoint, secret) in self
                .endpoints
                .iter()
                .filter(|(e, _)| e.wants(&event.event_type))
            {
                let sig = signature(secret, now.timestamp(), &body);
                let sent = self
                    .http
                    .post(&endpoint.url)
                    .header("content-type", "application/json")
                    .header("bursar-signature", sig)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => failure = Some(format!("{}: HTTP {}", endpoint.url, r.status())),
                    Err(e) => failure = Some(format!("{}: {e}", endpoint.url)),
                }
            }
            let mut tx = self.store.begin().await?;
            match failure {
                None => {
                    repo::delivered(tx.conn(), event.id, now).await?;
                    delivered += 1;
                }
                Some(error) => {
                    let backoff = (FIRST_RETRY_SECS << event.attempts.min(20)).min(MAX_RETRY_SECS);
                    tracing::warn!(event = %event.event_id, %error, "webhook delivery failed; will retry");
                    metrics::counter!("bursar_webhook_failures_total").increment(1);
                    repo::failed(
                        tx.conn(),
                        event.id,
                        &error,
                        now + chrono::Duration::seconds(backoff),
                    )
                    .await?;
                }
            }
            tx.commit().await?;
        }
        metrics::counter!("bursar_webhooks_delivered_total").increment(delivered as u64);
        Ok(delivered)
    }

    /// Runs until shutdown, every `every`, at the times `clock` tells.
    pub fn spawn(
        self,
        clock: crate::clock::SharedClock,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.run_once(clock.now()).await {
                    tracing::warn!(error = %e, "webhook delivery pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filters_match_names_and_prefixes() {
        let mut e = WebhookConfig {
            url: "https://x".into(),
            secret: SettingValue::Text("s".into()),
            events: vec![],
        };
        assert!(e.wants("payment.paid"));
        e.events = vec!["service.*".into(), "payment.paid".into()];
        assert!(e.wants("service.suspend"));
        assert!(e.wants("payment.paid"));
        assert!(!e.wants("payment.failed"));
    }

    #[test]
    fn the_signature_is_an_hmac_of_timestamp_and_body() {
        let s = signature("whsec", 1700000000, b"{}");
        assert!(s.starts_with("t=1700000000,v1="));
        assert_eq!(s.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(s, signature("other", 1700000000, b"{}"));
    }
}
