//! The origin's HTTP server (hyper 1, HTTP/1.1 and h2): the legacy routes plus test counters.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

use crate::master::{
    assemblies_json, dashboard_json, parties_json, settings_json, states_json, wards_json,
};
use crate::params::{parse_assembly_query, CitizensQuery, DashboardQuery, DEFAULT_MAX_PAGE_SIZE};
use crate::store::{parse_updates, Store};
use crate::voter::{write_json_array, write_page_json};
use crate::{now_ms, OriginError};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type OriginBody = BoxBody<Bytes, BoxError>;

/// Tunables of the origin server.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    /// Extra delay before answering each request, to play a slow backend in fault tests.
    pub latency: Duration,
    /// Largest `size` a paged citizens request may ask for.
    pub max_page_size: u64,
    /// Largest citizens or login request body accepted (the echo route streams, unlimited).
    pub max_body_bytes: usize,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            latency: Duration::ZERO,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Counters of what reached the origin since start (or the last reset); tests read them to
/// see what the proxy forwarded.
#[derive(Debug, Default)]
pub struct OriginStats {
    /// Every request except `/__origin/*`.
    pub requests: AtomicU64,
    /// Valid citizens requests answered (each answers a read, with or without updates).
    pub citizens_reads: AtomicU64,
    /// Valid citizens requests that carried at least one update.
    pub citizens_writes: AtomicU64,
    /// Master-data requests (states, constituencies, wards and booths, parties,
    /// settings, dashboard stats).
    pub master: AtomicU64,
    /// Requests being handled now, and the most ever handled at once (load-shedding tests).
    pub inflight: AtomicU64,
    pub max_inflight: AtomicU64,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a OriginStats);

impl<'a> InFlight<'a> {
    fn enter(s: &'a OriginStats) -> InFlight<'a> {
        let now = s.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_inflight.fetch_max(now, Ordering::SeqCst);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl OriginStats {
    fn json(&self) -> Vec<u8> {
        format!(
            "{{\"requests\":{},\"citizens_reads\":{},\"citizens_writes\":{},\"master\":{},\"max_inflight\":{}}}",
            self.requests.load(Ordering::Relaxed),
            self.citizens_reads.load(Ordering::Relaxed),
            self.citizens_writes.load(Ordering::Relaxed),
            self.master.load(Ordering::Relaxed),
            self.max_inflight.load(Ordering::Relaxed)
        )
        .into_bytes()
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.citizens_reads,
            &self.citizens_writes,
            &self.master,
            &self.max_inflight,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

struct Shared {
    store: Store,
    opts: OriginOptions,
    stats: OriginStats,
}

/// Serves the origin on `listener` until this future is dropped; dropping it also ends every
/// open connection (they live in a `JoinSet` owned here), so aborting the task stops the
/// origin completely — what fault tests that "kill the backend" need.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    opts: OriginOptions,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        store,
        opts,
        stats: OriginStats::default(),
    });
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Usually EMFILE or a connection reset before accept: transient, so
                        // back off briefly instead of ending the server.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small JSON answers must not wait on Nagle + delayed ACK.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(error = %e, "set_nodelay failed");
                }
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    if let Err(e) = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await
                    {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            // Reap finished connections so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn full(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<OriginBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<OriginBody> {
    full(status, "application/json", body)
}

fn error_json(status: StatusCode, msg: &str) -> Response<OriginBody> {
    json(
        status,
        serde_json::json!({ "error": msg }).to_string().into_bytes(),
    )
}

fn internal(e: &OriginError) -> Response<OriginBody> {
    error!(error = %e, "origin request failed");
    error_json(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn method_not_allowed(allow: &'static str) -> Response<OriginBody> {
    let mut r = error_json(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Reads a request body up to `max` bytes; the error is the response to send.
async fn read_body(body: Incoming, max: usize) -> Result<Bytes, Response<OriginBody>> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        )),
        Err(e) => {
            debug!(error = %e, "reading request body failed");
            Err(error_json(
                StatusCode::BAD_REQUEST,
                "could not read request body",
            ))
        }
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<OriginBody> {
    // Spring matches a trailing slash too; route on the path without it.
    let raw_path = req.uri().path();
    let path = if raw_path.len() > 1 {
        raw_path.trim_end_matches('/').to_string()
    } else {
        raw_path.to_string()
    };
    let method = req.method().clone();
    let stats = &shared.stats;
    match path.as_str() {
        "/__origin/stats" => return json(StatusCode::OK, stats.json()),
        "/__origin/reset-stats" if method == Method::POST => {
            stats.reset();
            return json(StatusCode::OK, stats.json());
        }
        "/__origin/reset-stats" => return method_not_allowed("POST"),
        _ => {}
    }
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let _inflight = InFlight::enter(stats);
    if !shared.opts.latency.is_zero() {
        tokio::time::sleep(shared.opts.latency).await;
    }
    let store = &shared.store;
    let is_get = method == Method::GET;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["open", "volunteer", "citizens"] => {
            if is_get || method == Method::POST {
                citizens(shared, req).await
            } else {
                method_not_allowed("GET, POST")
            }
        }
        ["open", "volunteer", "states"] => {
            master(shared, is_get, async {
                store.states().await.map(|s| Some(states_json(&s)))
            })
            .await
        }
        ["open", "volunteer", "assemblyConstituencys", id] => match id.parse::<i64>() {
            Ok(id) => {
                master(shared, is_get, async {
                    Ok(store
                        .assemblies(id)
                        .await?
                        .map(|list| assemblies_json(id, &list)))
                })
                .await
            }
            Err(_) => error_json(StatusCode::BAD_REQUEST, "stateId must be a number"),
        },
        ["open", "volunteer", "wardsAndBooths", id] => match id.parse::<i64>() {
            Ok(id) => {
                master(shared, is_get, async {
                    Ok(store
                        .wards_and_booths(id)
                        .await?
                        .map(|(ac, wards)| wards_json(&ac, &wards)))
                })
                .await
            }
            Err(_) => error_json(
                StatusCode::BAD_REQUEST,
                "assemblyConstituencyId must be a number",
            ),
        },
        ["open", "volunteer", "parties"] => {
            master(shared, is_get, async {
                store.parties().await.map(|p| Some(parties_json(&p)))
            })
            .await
        }
        ["open", "volunteer", "applicationSettings"] => {
            master(shared, is_get, async {
                store.settings().await.map(|s| Some(settings_json(&s)))
            })
            .await
        }
        ["api", "dashboardStats"] => match DashboardQuery::parse(req.uri().query()) {
            Ok(q) => {
                master(shared, is_get, async {
                    let st = store.dashboard(&q.filter()).await?;
                    let ward = q.ward_no.as_deref().unwrap_or("-1");
                    let booth = q
                        .booth_no
                        .as_ref()
                        .and_then(|b| b.first())
                        .map_or("-1", String::as_str);
                    Ok(Some(dashboard_json(
                        &q.state,
                        &q.assembly_no,
                        ward,
                        booth,
                        &st,
                    )))
                })
                .await
            }
            Err(e) => error_json(StatusCode::BAD_REQUEST, &e),
        },
        ["open", "getVotersDataCSV"] if is_get => csv(store, req.uri().query()),
        ["open", "getVotersDataCSV"] => method_not_allowed("GET"),
        ["api", "uploads", "echo"] if method == Method::POST => echo(req),
        ["api", "uploads", "echo"] => method_not_allowed("POST"),
        ["api", "login"] if method == Method::POST => login(req).await,
        ["api", "login"] => method_not_allowed("POST"),
        _ => error_json(StatusCode::NOT_FOUND, "not found"),
    }
}

/// A master-data answer: `Ok(None)` from the lookup means an unknown id (404).
async fn master(
    shared: &Shared,
    is_get: bool,
    lookup: impl std::future::Future<Output = Result<Option<Vec<u8>>, OriginError>>,
) -> Response<OriginBody> {
    if !is_get {
        return method_not_allowed("GET");
    }
    shared.stats.master.fetch_add(1, Ordering::Relaxed);
    match lookup.await {
        Ok(Some(body)) => json(StatusCode::OK, body),
        Ok(None) => error_json(StatusCode::NOT_FOUND, "not found"),
        Err(e) => internal(&e),
    }
}

async fn citizens(shared: &Shared, req: Request<Incoming>) -> Response<OriginBody> {
    // Parameters first: nothing is read or written for a request that is not well-formed.
    let q = match CitizensQuery::parse(req.uri().query(), shared.opts.max_page_size) {
        Ok(q) => q,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e),
    };
    let body = match read_body(req.into_body(), shared.opts.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let updates = match parse_updates(&body) {
        Ok(u) => u,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e),
    };
    if !updates.is_empty() {
        shared.stats.citizens_writes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = shared.store.apply_updates(&updates, now_ms()).await {
            return internal(&e);
        }
    }
    shared.stats.citizens_reads.fetch_add(1, Ordering::Relaxed);
    let mut rows = match shared.store.read_citizens(&q.filter()).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    // ~400 bytes per row; reserving avoids repeated regrowth of a multi-MB buffer.
    let mut out = Vec::with_capacity(rows.len() * 420 + 128);
    match q.page {
        None => write_json_array(&rows, &mut out),
        Some((page, size)) => {
            let has_more = rows.len() as u64 > size;
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            write_page_json(&rows, page, size, has_more, &mut out);
        }
    }
    json(StatusCode::OK, out)
}

fn csv(store: &Store, query: Option<&str>) -> Response<OriginBody> {
    let (state, assembly) = match parse_assembly_query(query) {
        Ok(x) => x,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e),
    };
    let file = format!("voters_{state}_{assembly}.csv").replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '_',
        "_",
    );
    let mut rx = store.stream_csv(state, assembly);
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError)))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=UTF-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    resp
}

/// Streams the request body back as it arrives, with the request's Content-Type.
fn echo(req: Request<Incoming>) -> Response<OriginBody> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    let mut resp = Response::new(req.into_body().map_err(|e| Box::new(e) as BoxError).boxed());
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp
}

/// A plausible login: any JSON object with a non-empty `username` (or `mobile`) and
/// `password` gets a bearer token; anything else is 401.
async fn login(req: Request<Incoming>) -> Response<OriginBody> {
    let body = match read_body(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let user = v
        .get("username")
        .or_else(|| v.get("mobile"))
        .and_then(|u| u.as_str())
        .filter(|u| !u.is_empty());
    let has_password = v
        .get("password")
        .and_then(|p| p.as_str())
        .is_some_and(|p| !p.is_empty());
    match user {
        Some(user) if has_password => {
            let now = now_ms();
            let mut rng =
                crate::synth::SplitMix64::new(crate::synth::seed_of(&[user, &now.to_string()]));
            let token = format!(
                "{:016x}{:016x}{:016x}",
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64()
            );
            let body = serde_json::json!({
                "token": token,
                "tokenType": "Bearer",
                "expiresIn": 86_400,
                "username": user,
                "role": "VOLUNTEER",
                "issuedAt": now,
            });
            json(StatusCode::OK, body.to_string().into_bytes())
        }
        _ => error_json(StatusCode::UNAUTHORIZED, "invalid credentials"),
    }
}
