//! The upstream stage: the pooled client to the legacy backend, its concurrency gate, and the
//! builders that turn its answers (or the read replica's rows) into snapshots and blobs.
//!
//! **Invariant:** only this module (and `replica`, which it calls) opens backend connections,
//! and every backend request passes the gate: the backend never sees more than
//! `limits.upstream_max_inflight` concurrent requests from one instance.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::blob::Blob;
use crate::cache::{now_ms, CacheKey, Entry};
use crate::config::Config;
use crate::metrics::{Metrics, Outcome, OutcomeLabels};
use crate::params::{CitizensQuery, Scope, WardKey};
use crate::route::CITIZENS_PATH;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::Live;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response wardgate handles.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Largest upstream answer wardgate buffers to build a snapshot or blob (a ward is ~4 MB).
const MAX_BUILD_BYTES: usize = 256 << 20;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

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
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("read replica: {0}")]
    Replica(String),
}

/// Bounds concurrent upstream requests and the queue in front of them.
struct Gate {
    permits: Arc<Semaphore>,
    size: AtomicUsize,
    queued: AtomicUsize,
}

impl Gate {
    fn new(n: usize) -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(n)),
            size: AtomicUsize::new(n),
            queued: AtomicUsize::new(0),
        }
    }

    /// Follows a reloaded cap: adds permits, or retires free ones (busy ones retire as they end).
    fn resize(&self, n: usize) {
        let old = self.size.swap(n, Ordering::SeqCst);
        if n > old {
            self.permits.add_permits(n - old);
        } else if n < old {
            self.permits.forget_permits(old - n);
        }
    }

    async fn enter(&self, max_queued: usize) -> Result<OwnedSemaphorePermit, UpstreamError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(UpstreamError::Shed);
        }
        let p = self.permits.clone().acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        p.map_err(|_| UpstreamError::Shed)
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its gate permit until the body ends or is dropped, so a
    /// streamed pass-through counts against the cap for as long as it really runs.
    struct Permitted {
        #[pin]
        inner: Incoming,
        permit: Option<OwnedSemaphorePermit>,
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
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
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
    gate: Gate,
    replica: Option<mysql_async::Pool>,
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
        let tls = crate::accept::tls_client_config(cfg.upstream_ca.as_deref())?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(cfg.limits.upstream_max_inflight as usize)
            .build(https);

        let replica = match &cfg.mysql_url {
            Some(url) => {
                Some(crate::replica::pool(url.expose()).map_err(|e| format!("mysql_url: {e}"))?)
            }
            None => None,
        };
        Ok(Upstream {
            client,
            scheme,
            authority,
            prefix,
            gate: Gate::new(cfg.limits.upstream_max_inflight as usize),
            replica,
            live,
            metrics,
        })
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

    fn outcome(&self, o: Outcome) {
        self.metrics
            .upstream_requests
            .get_or_create(&OutcomeLabels { outcome: o })
            .inc();
    }

    /// Sends one request through the gate, with the response-head timeout.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let cfg = self.live.load();
        let permit = match self
            .gate
            .enter(cfg.limits.max_queued_upstream as usize)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                self.outcome(Outcome::shed);
                return Err(e);
            }
        };
        let t = cfg.limits.upstream_timeout.0;
        let start = Instant::now();
        let r = tokio::time::timeout(t, self.client.request(req)).await;
        self.metrics
            .upstream_duration
            .observe(start.elapsed().as_secs_f64());
        match r {
            Err(_) => {
                self.outcome(Outcome::timeout);
                Err(UpstreamError::Timeout(t))
            }
            Ok(Err(e)) => {
                self.outcome(Outcome::error);
                let msg = error_chain(&e);
                if e.is_connect() {
                    Err(UpstreamError::Connect(msg))
                } else {
                    Err(UpstreamError::Failed(msg))
                }
            }
            Ok(Ok(resp)) => {
                self.outcome(if resp.status().is_server_error() {
                    Outcome::error
                } else {
                    Outcome::ok
                });
                Ok(resp.map(|b| {
                    Permitted {
                        inner: b,
                        permit: Some(permit),
                    }
                    .boxed()
                }))
            }
        }
    }

    /// GETs a path and buffers the answer (builds only).
    async fn get_bytes(
        &self,
        path_and_query: &str,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.uri(path_and_query)?)
            .header(header::ACCEPT, "application/json")
            .body(empty())
            .map_err(|e| UpstreamError::Failed(e.to_string()))?;
        let resp = self.send(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = collect(
            body,
            MAX_BUILD_BYTES,
            self.live.load().limits.upstream_timeout.0,
        )
        .await?;
        Ok((parts.status, parts.headers, bytes))
    }

    /// Builds the entry for a cache key from the source: the read replica when configured
    /// (wards only), the upstream otherwise.
    pub async fn build(&self, key: &CacheKey) -> Result<Entry, UpstreamError> {
        // Taken before the source is read: a snapshot never claims to be newer than its rows.
        let built_at = now_ms();
        match key {
            CacheKey::Ward(w) => {
                let snap = match &self.replica {
                    Some(pool) => {
                        self.metrics
                            .builds
                            .get_or_create(&crate::metrics::SourceLabels { source: "replica" })
                            .inc();
                        crate::replica::build_ward(pool, w, built_at).await?
                    }
                    None => {
                        self.metrics
                            .builds
                            .get_or_create(&crate::metrics::SourceLabels { source: "upstream" })
                            .inc();
                        self.ward_from_upstream(w, built_at).await?
                    }
                };
                Ok(Entry::Snapshot(Arc::new(snap)))
            }
            CacheKey::Blob(pq) => {
                self.metrics
                    .builds
                    .get_or_create(&crate::metrics::SourceLabels { source: "upstream" })
                    .inc();
                let (status, headers, body) = self.get_bytes(pq).await?;
                if status != StatusCode::OK {
                    return Err(UpstreamError::Status {
                        status,
                        content_type: headers.get(header::CONTENT_TYPE).cloned(),
                        body,
                    });
                }
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let blob = tokio::task::spawn_blocking(move || Blob::new(body, ct, built_at))
                    .await
                    .map_err(|e| UpstreamError::Failed(e.to_string()))?;
                Ok(Entry::Blob(Arc::new(blob)))
            }
        }
    }

    async fn ward_from_upstream(
        &self,
        w: &WardKey,
        built_at: i64,
    ) -> Result<Snapshot, UpstreamError> {
        let q = CitizensQuery {
            scope: Scope::Ward(w.clone()),
            booths: None,
            since_ms: None,
            page: None,
        };
        let (status, headers, body) = self
            .get_bytes(&format!("{CITIZENS_PATH}?{}", q.to_upstream_query()))
            .await?;
        if status != StatusCode::OK {
            return Err(UpstreamError::Status {
                status,
                content_type: headers.get(header::CONTENT_TYPE).cloned(),
                body,
            });
        }
        let key = w.clone();
        // Compressing ~4 MB takes tens of ms: keep it off the async workers.
        tokio::task::spawn_blocking(move || Snapshot::from_legacy_json(key, &body, built_at))
            .await
            .map_err(|e| UpstreamError::Failed(e.to_string()))?
            .map_err(UpstreamError::from)
    }
}

/// Buffers a body up to `limit` bytes within `within`.
pub async fn collect(
    mut body: Body,
    limit: usize,
    within: Duration,
) -> Result<Bytes, UpstreamError> {
    let read = async {
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| UpstreamError::Failed(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(UpstreamError::TooLarge(limit));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| UpstreamError::Timeout(within))?
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

    #[tokio::test]
    async fn the_gate_sheds_beyond_its_queue() {
        let g = Arc::new(Gate::new(1));
        let held = g.enter(0).await.unwrap();
        assert!(matches!(g.enter(0).await, Err(UpstreamError::Shed)));
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.enter(1).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            matches!(g.enter(1).await, Err(UpstreamError::Shed)),
            "queue of 1 is full"
        );
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }
}
