//! A blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host only lets requests through to the hosts in the plugin
//! instance's `allowed_hosts`; others fail with `invalid-config`, so a
//! misconfigured instance is reported to staff instead of retried forever.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;
use crate::common::PluginError;

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; a body that does not parse is an `internal` error
    /// (the remote side answered something unexpected).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PluginError::internal(format!("unexpected answer (HTTP {}): {e}: {}", self.status, truncate(&self.text(), 200)))
        })
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_owned() } else { s.chars().take(n).collect::<String>() + "…" }
}

/// A request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Request { method: method.to_owned(), url: url.to_owned(), headers: vec![], body: vec![], timeout_ms: None }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A JSON body (sets `Content-Type`).
    pub fn json<T: Serialize>(mut self, body: &T) -> Self {
        self.body = serde_json::to_vec(body).unwrap_or_default();
        self.header("content-type", "application/json")
    }

    /// A raw body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Gives up on connecting and on the first byte after this long.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, PluginError> {
        Client.send(self)
    }
}

/// The HTTP client. Stateless: every request is independent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Client;

struct Target {
    scheme: Scheme,
    authority: String,
    path: String,
}

fn split_url(url: &str) -> Result<Target, PluginError> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else {
        return Err(PluginError::invalid_config(format!("`{url}` is not an http(s) URL")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        },
    };
    if authority.is_empty() {
        return Err(PluginError::invalid_config(format!("`{url}` has no host")));
    }
    let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
    Ok(Target { scheme, authority: authority.to_owned(), path })
}

fn method_of(m: &str) -> Method {
    match m.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    }
}

fn transport_error(url: &str, e: ErrorCode) -> PluginError {
    match e {
        ErrorCode::HttpRequestDenied => {
            PluginError::invalid_config(format!("{url}: the host is not in this instance's allowed_hosts"))
        }
        other => PluginError::unavailable(format!("{url}: {other:?}")),
    }
}

impl Client {
    pub fn get(self, url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn post(self, url: &str) -> Request {
        Request::new("POST", url)
    }

    pub fn delete(self, url: &str) -> Request {
        Request::new("DELETE", url)
    }

    /// Sends a request and reads the whole response.
    pub fn send(self, req: Request) -> Result<Response, PluginError> {
        let target = split_url(&req.url)?;
        let headers = Fields::new();
        // The body is known whole: say how long it is, so that servers that
        // do not read chunked bodies (many provisioning APIs) see it.
        let mut all = req.headers.clone();
        let has_body = !req.body.is_empty() || !matches!(req.method.to_ascii_uppercase().as_str(), "GET" | "HEAD");
        if has_body && !all.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
            all.push(("content-length".to_owned(), req.body.len().to_string()));
        }
        for (name, value) in &all {
            headers
                .append(name, &value.as_bytes().to_vec())
                .map_err(|e| PluginError::internal(format!("header `{name}`: {e:?}")))?;
        }
        let outgoing = OutgoingRequest::new(headers);
        let bad = |what: &str| PluginError::invalid_config(format!("{}: bad {what}", req.url));
        outgoing.set_method(&method_of(&req.method)).map_err(|_| bad("method"))?;
        outgoing.set_scheme(Some(&target.scheme)).map_err(|_| bad("scheme"))?;
        outgoing.set_authority(Some(&target.authority)).map_err(|_| bad("host"))?;
        outgoing.set_path_with_query(Some(&target.path)).map_err(|_| bad("path"))?;
        let body = outgoing.body().map_err(|_| PluginError::internal("request body taken twice"))?;
        let options = RequestOptions::new();
        if let Some(ms) = req.timeout_ms {
            let ns = ms.saturating_mul(1_000_000);
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
        }
        let pending = outgoing_handler::handle(outgoing, Some(options)).map_err(|e| transport_error(&req.url, e))?;
        {
            let stream = body.write().map_err(|_| PluginError::internal("request body stream"))?;
            for chunk in req.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| PluginError::unavailable(format!("{}: sending the body: {e:?}", req.url)))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|e| transport_error(&req.url, e))?;
        pending.subscribe().block();
        let incoming = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(transport_error(&req.url, e)),
            _ => return Err(PluginError::internal(format!("{}: no response", req.url))),
        };
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = incoming.consume().map_err(|_| PluginError::internal("response body taken twice"))?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().map_err(|_| PluginError::internal("response body stream"))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => {
                        return Err(PluginError::unavailable(format!("{}: reading the response: {e:?}", req.url)));
                    }
                }
            }
        }
        drop(IncomingBody::finish(body));
        Ok(Response { status, headers, body: bytes })
    }
}
