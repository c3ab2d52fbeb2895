//! Outgoing HTTP for plugins: the one place the allow-list is enforced.
//!
//! Every request a plugin makes through `wasi:http/outgoing-handler` passes
//! [`HttpPolicy::send_request`]. A request to a host:port that is not in the
//! instance's `allowed_hosts` is refused there, before any connection is
//! made. Allowed requests get the instance's timeout and a cap on the size
//! of the response body.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The port part of an allowed destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedPort {
    /// No port given: the scheme's own (80 for `http`, 443 for `https`).
    Default,
    /// `host:*`.
    Any,
    Exactly(u16),
}

/// One allowed destination: a host name or address and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    pub host: String,
    pub port: AllowedPort,
}

impl AllowedHost {
    /// Parses `host` (the scheme's default port only), `host:port` or
    /// `host:*` (any port). IPv6 addresses go in brackets: `[2001:db8::1]:443`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.contains('/') || s.contains('@') {
            return Err(format!("`{s}` is not a host or host:port"));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, "*")) => (host, AllowedPort::Any),
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                if host.contains(':') && !host.starts_with('[') {
                    return Err(format!("`{s}`: put an IPv6 address in brackets"));
                }
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("`{s}` has a bad port"))?;
                (host, AllowedPort::Exactly(port))
            }
            _ => (s.as_str(), AllowedPort::Default),
        };
        if host.is_empty() {
            return Err(format!("`{s}` names no host"));
        }
        Ok(AllowedHost {
            host: host.to_owned(),
            port,
        })
    }

    fn port_matches(&self, port: u16, default: u16) -> bool {
        match self.port {
            AllowedPort::Default => port == default,
            AllowedPort::Any => true,
            AllowedPort::Exactly(p) => p == port,
        }
    }

    /// The address this entry names literally, if it is one.
    fn address(&self) -> Option<IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
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

/// Why a request may not leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The host or port is not in `allowed_hosts`.
    NotListed,
    /// The name resolves to an address that is loopback, private,
    /// link-local or a cloud metadata service, and no entry names that
    /// address.
    InternalAddress(IpAddr),
    /// The name does not resolve.
    Unresolvable,
}

impl HttpPolicy {
    /// Is `uri` allowed by the list? The port defaults to the scheme's.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some((host, port, default)) = target(uri) else {
            return false;
        };
        self.allowed
            .iter()
            .any(|a| a.host == host && a.port_matches(port, default))
    }

    /// Where a listed `uri` may connect: its addresses after resolution,
    /// each of which must be a public address or one an entry names
    /// literally (with a matching port).
    pub async fn resolve(&self, uri: &http::Uri) -> Result<Vec<SocketAddr>, Denied> {
        if !self.allows(uri) {
            return Err(Denied::NotListed);
        }
        let (host, port, default) = target(uri).ok_or(Denied::NotListed)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((bare, port))
                .await
                .map_err(|_| Denied::Unresolvable)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Denied::Unresolvable);
        }
        for addr in &addrs {
            let ip = canonical(addr.ip());
            if is_internal(ip)
                && !self.allowed.iter().any(|a| {
                    a.address().map(canonical) == Some(ip) && a.port_matches(port, default)
                })
            {
                return Err(Denied::InternalAddress(ip));
            }
        }
        Ok(addrs)
    }
}

/// `(host, port, the scheme's default port)` of a URI, the host lower-cased.
fn target(uri: &http::Uri) -> Option<(String, u16, u16)> {
    let host = uri.host()?.to_ascii_lowercase();
    let default = match uri.scheme_str() {
        Some("http") => 80,
        _ => 443,
    };
    Some((host, uri.port_u16().unwrap_or(default), default))
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4
/// address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast
/// or broadcast — or a cloud provider's metadata service.
pub fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    == "fd00:ec2::254"
                        .parse::<Ipv6Addr>()
                        .unwrap_or(Ipv6Addr::UNSPECIFIED)
        }
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
        let policy = self.0.clone();
        let instance = policy.instance.clone();
        let timeout = policy.timeout;
        let max = policy.max_response_bytes;
        Box::new(async move {
            let mut request = request;
            let uri = request.uri().clone();
            let addrs = match policy.resolve(&uri).await {
                Ok(addrs) => addrs,
                Err(why) => {
                    let why = match why {
                        Denied::NotListed => "host not in allowed_hosts".to_owned(),
                        Denied::InternalAddress(ip) => format!(
                            "resolves to the internal address {ip}, which no allowed_hosts entry names"
                        ),
                        Denied::Unresolvable => "host does not resolve".to_owned(),
                    };
                    tracing::warn!(plugin = %instance, %uri, %why, "outgoing request denied");
                    metrics::counter!("bursar_plugin_http_denied_total", "plugin" => instance)
                        .increment(1);
                    return Err(HttpError::HttpRequestDenied);
                }
            };
            // Plain HTTP connects to the address just checked, so a second
            // resolution cannot lead elsewhere (the Host header keeps the
            // name). HTTPS keeps the name: the certificate must match it.
            if uri.scheme_str() == Some("http")
                && let Some(addr) = addrs.first()
            {
                let path = uri.path_and_query().map_or("/", |p| p.as_str());
                if let Ok(pinned) = format!("http://{addr}{path}").parse::<http::Uri>() {
                    if let Some(authority) = uri.authority()
                        && !request.headers().contains_key(http::header::HOST)
                        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
                    {
                        request.headers_mut().insert(http::header::HOST, value);
                    }
                    *request.uri_mut() = pinned;
                }
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
        let p = policy(&["dci.example.net:443", "127.0.0.1:*", "billing.example.net"]);
        assert!(p.allows(&"https://dci.example.net/api".parse().unwrap()));
        assert!(p.allows(&"https://DCI.example.net:443/".parse().unwrap()));
        assert!(
            !p.allows(&"http://dci.example.net/".parse().unwrap()),
            "port 80 is not 443"
        );
        assert!(!p.allows(&"https://evil.example.net/".parse().unwrap()));
        assert!(!p.allows(&"https://dci.example.net.evil.com/".parse().unwrap()));
        assert!(p.allows(&"http://127.0.0.1:39999/x".parse().unwrap()));
        // A bare host means the scheme's default port, and only that.
        assert!(p.allows(&"https://billing.example.net/".parse().unwrap()));
        assert!(p.allows(&"http://billing.example.net/".parse().unwrap()));
        assert!(!p.allows(&"https://billing.example.net:8443/".parse().unwrap()));
        assert!(!p.allows(&"http://billing.example.net:22/".parse().unwrap()));
        assert!(AllowedHost::parse("a/b").is_err());
        assert!(AllowedHost::parse("host:notaport").is_err());
        assert!(AllowedHost::parse("user@host").is_err());
    }

    #[test]
    fn internal_addresses_are_recognised_in_every_spelling() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fe80::1",
            "fd00::1",
            "fd00:ec2::254",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn internal_addresses_need_an_entry_that_names_them() {
        let named = policy(&["127.0.0.1:8080"]);
        assert!(
            named
                .resolve(&"http://127.0.0.1:8080/".parse().unwrap())
                .await
                .is_ok()
        );
        let by_name = policy(&["localhost:8080"]);
        assert!(matches!(
            by_name
                .resolve(&"http://localhost:8080/".parse().unwrap())
                .await,
            Err(Denied::InternalAddress(_))
        ));
        let mapped = policy(&["[::ffff:127.0.0.1]:8080"]);
        assert!(
            mapped
                .resolve(&"http://[::ffff:127.0.0.1]:8080/".parse().unwrap())
                .await
                .is_ok(),
            "an entry naming the address in another spelling names it"
        );
        assert_eq!(
            named
                .resolve(&"http://2130706433:8080/".parse().unwrap())
                .await,
            Err(Denied::NotListed)
        );
    }
}
