//! The upstream: the pooled HTTP client to the legacy backend, behind the gate.
//!
//! **Invariant:** only this module and `replica` open backend connections, and each of their
//! requests holds a [`Permit`] of the one [`Gate`]: the backend never sees more than
//! `limits.upstream_max_inflight` concurrent requests from one instance.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;

use crate::body::{collect, empty, Body, BodyError, BoxError};
use crate::config::{Config, Live};
use crate::gate::{Gate, Permit};
use crate::metrics::{Metrics, Outcome, OutcomeLabels};
use crate::request_id::RequestId;

/// Largest upstream answer wardgate buffers to build a snapshot or blob (a ward is ~4 MB).
const MAX_BUILD_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection was never made: the request certainly did not reach the backend.
    #[error("cannot connect to the upstream: {0}")]
    Connect(String),
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the upstream is at its concurrency limit")]
    Shed,
    #[error("the upstream request failed: {0}")]
    Failed(String),
    #[error("the upstream answered {status}")]
    Status {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    #[error("the upstream answer exceeds {0} bytes")]
    TooLarge(usize),
}

impl From<BodyError> for UpstreamError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(n) => UpstreamError::TooLarge(n),
            BodyError::Timeout(t) => UpstreamError::Timeout(t),
            BodyError::Failed(m) => UpstreamError::Failed(m),
        }
    }
}

/// A buffered answer of the upstream.
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    /// The answer if it is a 200; any other status as the error that relays it.
    pub fn ok(self) -> Result<Fetched, UpstreamError> {
        if self.status == StatusCode::OK {
            return Ok(self);
        }
        Err(UpstreamError::Status {
            status: self.status,
            content_type: self.headers.get(header::CONTENT_TYPE).cloned(),
            body: self.body,
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its gate permit until the body ends or is dropped, so a
    /// streamed pass-through counts against the cap for as long as it really runs.
    struct Permitted {
        #[pin]
        inner: Incoming,
        permit: Option<Permit>,
        // `wardgate_upstream_bytes`: counted as the body is read, whoever reads it.
        bytes: Counter,
    }
}

impl HttpBody for Permitted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes.inc_by(d.len() as u64);
                }
            }
            Poll::Ready(None | Some(Err(_))) => drop(this.permit.take()),
            Poll::Pending => {}
        }
        r.map(|o| o.map(|r| r.map_err(|e| Box::new(e) as BoxError)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    authority: Authority,
    /// Path prefix of the upstream URL (`http://backend/app` → `/app`), without trailing `/`.
    prefix: String,
    gate: Arc<Gate>,
    live: Live,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(cfg: &Config, live: Live, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let uri: Uri = cfg.upstream.parse().map_err(|e| format!("upstream: {e}"))?;
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority().cloned().ok_or("upstream: no host")?;
        let prefix = uri.path().trim_end_matches('/').to_string();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.limits.upstream_connect_timeout.0));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = crate::tls::tls_client_config(cfg.upstream_ca.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(cfg.limits.upstream_max_inflight as usize)
            .build(https);

        Ok(Upstream {
            client,
            scheme,
            authority,
            prefix,
            gate: Arc::new(Gate::new(cfg.limits.upstream_max_inflight as usize)),
            live,
            metrics,
        })
    }

    /// The gate in front of the backend, shared with the replica's builds.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Applies reloadable limits.
    pub fn reload(&self, cfg: &Config) {
        self.gate.resize(cfg.limits.upstream_max_inflight as usize);
    }

    /// The upstream URI for a path and query.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
            .map_err(|e| UpstreamError::Failed(format!("bad upstream URI: {e}")))
    }

    pub fn outcome(&self, o: Outcome) {
        self.metrics
            .upstream_requests
            .get_or_create(&OutcomeLabels { outcome: o })
            .inc();
    }

    /// Sends one request through the gate, with the response-head timeout (writes and
    /// pass-through; builds enter the gate themselves, see `cache::build`).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let max_queued = self.live.load().limits.max_queued_upstream as usize;
        let permit = self.gate.enter(max_queued).await.map_err(|_| {
            self.outcome(Outcome::shed);
            UpstreamError::Shed
        })?;
        self.send_permitted(req, permit).await
    }

    async fn send_permitted(
        &self,
        mut req: Request<Body>,
        permit: Permit,
    ) -> Result<Response<Body>, UpstreamError> {
        // Every backend request, a build's read and a relayed write alike, names the request
        // it is for, so the backend's log can be matched with the answer and wardgate's log.
        RequestId::forward(req.headers_mut());
        let t = self.live.load().limits.upstream_timeout.0;
        let start = Instant::now();
        let r = tokio::time::timeout(t, self.client.request(req)).await;
        self.metrics
            .upstream_duration
            .observe(start.elapsed().as_secs_f64());
        let resp = match r {
            Err(_) => {
                self.outcome(Outcome::timeout);
                return Err(UpstreamError::Timeout(t));
            }
            Ok(Err(e)) => {
                self.outcome(Outcome::error);
                let msg = error_chain(&e);
                return Err(if e.is_connect() {
                    UpstreamError::Connect(msg)
                } else {
                    UpstreamError::Failed(msg)
                });
            }
            Ok(Ok(resp)) => resp,
        };
        self.outcome(if resp.status().is_server_error() {
            Outcome::error
        } else {
            Outcome::ok
        });
        Ok(resp.map(|b| {
            Permitted {
                inner: b,
                permit: Some(permit),
                bytes: self.metrics.upstream_bytes.clone(),
            }
            .boxed()
        }))
    }

    /// Buffers an answer's body within the build limits (a write's cheap read).
    pub async fn read_body(&self, body: Body) -> Result<Bytes, UpstreamError> {
        let within = self.live.load().limits.upstream_timeout.0;
        Ok(collect(body, MAX_BUILD_BYTES, within).await?)
    }

    /// GETs a path and buffers the answer: a build's read, under the permit it entered with.
    pub async fn fetch(
        &self,
        path_and_query: &str,
        permit: Permit,
    ) -> Result<Fetched, UpstreamError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.uri(path_and_query)?)
            .header(header::ACCEPT, "application/json")
            .body(empty())
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let resp = self.send_permitted(req, permit).await?;
        let (parts, body) = resp.into_parts();
        let within = self.live.load().limits.upstream_timeout.0;
        let body = collect(body, MAX_BUILD_BYTES, within).await?;
        Ok(Fetched {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
}

/// Adds this hop to `X-Forwarded-For` and sets `X-Forwarded-Proto`.
pub fn add_forwarded(h: &mut HeaderMap, client_ip: std::net::IpAddr, proto: &'static str) {
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client_ip}"),
        _ => client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "10.1.2.3".parse().unwrap(), "http");
        add_forwarded(&mut h, "10.9.9.9".parse().unwrap(), "https");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3, 10.9.9.9");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
