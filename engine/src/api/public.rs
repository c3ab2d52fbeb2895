//! The public gateway callback, `/api/v1/gateways/{instance}/callback`:
//! the one route that does real work for anyone on the network, so every
//! resource it can take is bounded — header and body size, callbacks per
//! source address, callbacks at once per gateway, and a deadline well
//! below the plugin's own timeout — and its error bodies carry no
//! internal text (staff find the detail in the log).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::api::AppState;
use crate::api::error::{Problem, ProblemKind};
use crate::billing::{self, CallbackError};
use crate::config::CallbackLimits;
use crate::payments::{CallbackRequest, Gateways};
use crate::plugins::instances::PluginRegistry;

/// Headers a callback answer may not set (the server sets them).
const HOP_BY_HOP: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// Source addresses tracked before idle ones are forgotten.
const TRACKED_ADDRESSES: usize = 10_000;

/// The bounds of the public callbacks, shared by every request.
pub struct CallbackGuard {
    limits: CallbackLimits,
    per_address: DefaultKeyedRateLimiter<IpAddr>,
    per_gateway: HashMap<String, Arc<Semaphore>>,
}

impl CallbackGuard {
    pub fn new(limits: &CallbackLimits, plugins: &PluginRegistry) -> Self {
        let per_minute = NonZeroU32::new(limits.per_address_per_minute).unwrap_or(NonZeroU32::MIN);
        CallbackGuard {
            limits: limits.clone(),
            per_address: RateLimiter::keyed(Quota::per_minute(per_minute)),
            per_gateway: plugins
                .gateway_names()
                .into_iter()
                .map(|name| {
                    (
                        name,
                        Arc::new(Semaphore::new(limits.concurrency_per_gateway)),
                    )
                })
                .collect(),
        }
    }

    /// Whether `address` may send another callback now. IPv6 addresses
    /// count by their /64: one host has a whole /64 to rotate through.
    fn admit(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
            v4 => v4,
        };
        if self.per_address.len() > TRACKED_ADDRESSES {
            self.per_address.retain_recent();
        }
        self.per_address.check_key(&address).is_ok()
    }
}

fn refused(kind: ProblemKind, detail: &str) -> Problem {
    Problem::new(kind, detail)
}

#[utoipa::path(post, path = "/api/v1/gateways/{instance}/callback", operation_id = "gatewayCallback", tag = "payments",
    params(("instance" = String, Path)),
    request_body(content = String, content_type = "application/octet-stream",
        description = "the gateway's request, byte for byte"),
    responses((status = 200, description = "the gateway plugin's own answer"),
        (status = 400, description = "the plugin refused the callback (bad signature…)"),
        (status = 404), (status = 413, description = "body too large"),
        (status = 429, description = "too many callbacks from this address"),
        (status = 431, description = "headers too large"),
        (status = 503, description = "the gateway is busy or did not answer in time; deliver again")))]
/// Public: a gateway's webhook. The raw request goes to the plugin, which
/// verifies it and confirms with the gateway; its answer is returned as is.
pub async fn callback(
    State(state): State<AppState>,
    Path(instance): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    let guard = &state.callbacks;
    let limits = &guard.limits;
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    if !guard.admit(address) {
        metrics::counter!("bursar_gateway_callbacks_refused_total", "reason" => "rate")
            .increment(1);
        return Err(refused(
            ProblemKind::RateLimited,
            "too many callbacks from this address; try again in a minute",
        ));
    }
    let (Some(gateway), Some(slots)) = (
        state.plugins.gateway(&instance),
        guard.per_gateway.get(&instance),
    ) else {
        return Err(Problem::not_found(
            "no payment gateway instance by this name",
        ));
    };
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(refused(
            ProblemKind::HeadersTooLarge,
            "the callback's headers are too large",
        ));
    }
    let Ok(_slot) = slots.clone().try_acquire_owned() else {
        metrics::counter!("bursar_gateway_callbacks_refused_total", "reason" => "busy")
            .increment(1);
        return Err(refused(
            ProblemKind::Busy,
            "the gateway is handling as many callbacks as it may; deliver again",
        ));
    };
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), limits.max_body_bytes)
        .await
        .map_err(|_| {
            refused(
                ProblemKind::PayloadTooLarge,
                "the callback's body is too large",
            )
        })?;
    let request = CallbackRequest {
        method: parts.method.as_str().to_owned(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let deadline = Duration::from_millis(limits.deadline_ms);
    let handled = billing::handle_callback(
        &state.store,
        &instance,
        gateway.as_ref(),
        request,
        state.clock.now(),
    );
    let answer = match tokio::time::timeout(deadline, handled).await {
        Err(_) => {
            metrics::counter!("bursar_gateway_callbacks_total", "gateway" => instance.clone(), "outcome" => "deadline")
                .increment(1);
            tracing::warn!(gateway = %instance, deadline_ms = limits.deadline_ms, "gateway callback ran past its deadline");
            return Err(refused(
                ProblemKind::CallbackTimeout,
                "the callback was not handled in time; deliver again",
            ));
        }
        Ok(Ok(answer)) => answer,
        Ok(Err(CallbackError::Plugin(e))) => {
            metrics::counter!("bursar_gateway_callbacks_total", "gateway" => instance.clone(), "outcome" => e.kind())
                .increment(1);
            // The plugin's words stay in the log: they may name hosts or
            // carry a trap's backtrace.
            tracing::warn!(gateway = %instance, error = %e, "gateway callback refused");
            return Err(if e.retryable() {
                refused(
                    ProblemKind::CallbackFailed,
                    "the callback could not be handled now; deliver again",
                )
            } else {
                refused(
                    ProblemKind::CallbackRefused,
                    "the callback was refused (for example its signature did not verify)",
                )
            });
        }
        Ok(Err(CallbackError::Store(e))) => {
            tracing::error!(gateway = %instance, error = %e, "callback event could not be recorded");
            return Err(refused(
                ProblemKind::CallbackFailed,
                "the callback could not be recorded now; deliver again",
            ));
        }
    };
    metrics::counter!("bursar_gateway_callbacks_total", "gateway" => instance.clone(), "outcome" => "ok")
        .increment(1);
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
        .into_response();
    for (k, v) in answer.headers {
        if HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}
