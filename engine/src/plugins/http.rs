//! Outgoing HTTP for plugins: the one place the allow-list is enforced.
//!
//! Every request a plugin makes through `wasi:http/outgoing-handler` passes
//! [`HttpPolicy::send_request`]. A request to a host:port that is not in the
//! instance's `allowed_hosts` is refused there, before any connection is
//! made. Allowed requests get the instance's timeout and a cap on the size
//! of the response body.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One allowed destination: a host name and port (`*` allows any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: Option<u16>,
}

impl AllowedHost {
    /// Parses `host`, `host:port` or `host:*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.contains('/') {
            return Err(format!("`{s}` is not a host or host:port"));
        }
        match s.rsplit_once(':') {
            Some((host, "*")) => Ok(AllowedHost {
                host: host.into(),
                port: None,
            }),
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{s}` has a bad port"))?;
                Ok(AllowedHost {
                    host: host.into(),
                    port: Some(port),
                })
            }
            _ => Ok(AllowedHost {
                host: s,
                port: None,
            }),
        }
    }
}

/// The outgoing-HTTP rules of one plugin instance.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    pub instance: String,
    pub allowed: Vec<AllowedHost>,
    pub timeout: Duration,
    pub max_response_bytes: u64,
}

impl HttpPolicy {
    /// Is `uri` allowed? The port defaults to the scheme's.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            });
        self.allowed
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| p == port))
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// The `wasi:http` hooks of one call: its instance's policy, shared by
/// every call rather than copied into each.
pub struct PolicyHooks(pub Arc<HttpPolicy>);

impl WasiHttpHooks for PolicyHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let policy = &self.0;
        let allowed = policy.allows(request.uri());
        let instance = policy.instance.clone();
        let uri = request.uri().clone();
        let timeout = policy.timeout;
        let max = policy.max_response_bytes;
        Box::new(async move {
            if !allowed {
                tracing::warn!(plugin = %instance, %uri, "outgoing request denied: host not in allowed_hosts");
                metrics::counter!("bursar_plugin_http_denied_total", "plugin" => instance)
                    .increment(1);
                return Err(HttpError::HttpRequestDenied);
            }
            let clamp = |d: Option<Duration>| Some(d.map_or(timeout, |d| d.min(timeout)));
            let options = options.unwrap_or_default();
            let options = RequestOptions {
                connect_timeout: clamp(options.connect_timeout),
                first_byte_timeout: clamp(options.first_byte_timeout),
                between_bytes_timeout: clamp(options.between_bytes_timeout),
            };
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let response = response.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    left: max,
                    max,
                }
                .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// A response body that fails once it passes `max` bytes.
struct CappedBody {
    inner: WasiBody,
    left: u64,
    max: u64,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if n > self.left {
                return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(self.max)))));
            }
            self.left -= n;
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> HttpPolicy {
        HttpPolicy {
            instance: "t".into(),
            allowed: hosts
                .iter()
                .map(|h| AllowedHost::parse(h).unwrap())
                .collect(),
            timeout: Duration::from_secs(1),
            max_response_bytes: 10,
        }
    }

    #[test]
    fn only_listed_hosts_and_ports_pass() {
        let p = policy(&["dci.example.net:443", "127.0.0.1:*"]);
        assert!(p.allows(&"https://dci.example.net/api".parse().unwrap()));
        assert!(p.allows(&"https://DCI.example.net:443/".parse().unwrap()));
        assert!(
            !p.allows(&"http://dci.example.net/".parse().unwrap()),
            "port 80 is not 443"
        );
        assert!(!p.allows(&"https://evil.example.net/".parse().unwrap()));
        assert!(!p.allows(&"https://dci.example.net.evil.com/".parse().unwrap()));
        assert!(p.allows(&"http://127.0.0.1:39999/x".parse().unwrap()));
        assert!(AllowedHost::parse("a/b").is_err());
        assert!(AllowedHost::parse("host:notaport").is_err());
    }
}
