//! The life of a request, phase by phase. Each phase names the function that does it:
//!
//! 1. **accept**: TCP or TLS, HTTP/1.1 or h2 (`accept::serve`).
//! 2. **classify** the route: citizens, master data, pass-through (`route::classify`).
//! 3. **identify** the client and apply its limits (`limit::client_ip`, `Limiter::check`).
//! 4. **validate** the parameters before anything else is touched (`CitizensQuery::parse`,
//!    `read_sync_body`): a bad request never reaches the cache or the backend; a read of
//!    wards new to its client today must fit the client's ward budget (`Proxy::within_budget`).
//! 5. **look up** L1, then Redis (`Cache::get`).
//! 6. on a miss, **join or start** the one build for that key (`Cache::get` → `coalesce`).
//! 7. **respond**: encoding, `If-None-Match`, bytes assembled from stored pieces
//!    (`respond::snapshot_answer`, `respond::blob_answer`).
//! 8. **log and count** (`Proxy::finish`).
//!
//! Before 2, the request gets its id (`RequestId::of`), which its task carries to every
//! backend request it makes and which its answer, whatever it is, and its access line name.
//!
//! Writes (sync POSTs with changes) take 1–4, are forwarded with a cheap read (`write`), and
//! on the backend's acknowledgement patch their ward's snapshot (`Cache::patch_after_write`),
//! from which their client is answered. Everything else is
//! streamed to the upstream untouched (`Proxy::pass_through`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN as ACAO};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::assembly;
use crate::body::{full, Body};
use crate::budget::{Budgeted, Client};
use crate::cache::CacheStatus;
use crate::config::{CorsMode, Live};
use crate::cors;
use crate::limit::{self, ClientIdentity, Limiter};
use crate::metrics::{ClassLabels, Metrics, OutcomeNameLabels, RequestLabels};
use crate::params::{AssemblyKey, CitizensQuery, Scope, WardKey};
use crate::request_id::{self, RequestId};
use crate::respond::{self, ApiError};
use crate::route::{self, Guarded, Route, RouteClass, CITIZENS_PATH};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::upstream::{self as up, Upstream, UpstreamError};

mod sync;
mod write;
use sync::{carries_body, is_read_body, read_sync_body};

/// How a connection reached wardgate.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// What happened to a request, for the access log.
struct Trace {
    start: Instant,
    method: Method,
    uri: http::Uri,
    conn: ConnInfo,
    upstream: Option<Duration>,
}

pub struct Proxy {
    pub shared: Arc<Shared>,
    pub limiter: Arc<ArcSwap<Limiter>>,
}

type Answer = Result<Response<Body>, ApiError>;

impl Proxy {
    fn live(&self) -> &Live {
        &self.shared.live
    }

    fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    fn upstream(&self) -> &Arc<Upstream> {
        &self.shared.upstream
    }

    /// Entry point for every public request: its id (a trusted proxy's, or a new one) rides
    /// the request's task, so every backend request it makes carries it (`request_id`).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<Body>, Infallible> {
        let from_proxy = limit::trusted_peer(conn.peer, &self.shared.trusted.load());
        let id = RequestId::of(req.headers(), from_proxy);
        Ok(id.clone().scope(self.answer(req, conn, id)).await)
    }

    /// Every answer leaves through here: hits, misses, relayed answers, preflights and every
    /// error (429 and 413 included), each with its request's id.
    async fn answer(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        id: RequestId,
    ) -> Response<Body> {
        let mut trace = Trace {
            start: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            conn,
            upstream: None,
        };
        let origin = cors::origin(req.headers());
        let (class, answer) = self.route(req, conn, &mut trace).await;
        let mut resp = answer.unwrap_or_else(|e| e.into_response(trace.uri.path(), Some(&id)));
        // 7b. CORS: every answer of a guarded route carries what the backend would send.
        if let (Some(origin), Some(route)) = (origin, class.guarded()) {
            self.cors(route, &origin, &mut resp).await;
        }
        let h = resp.headers_mut();
        h.insert(request_id::HEADER, id.header_value().clone());
        // The app (a cross-origin WebView) may read the id to report it; a preflight's answer
        // names no exposed headers, as the backend's does not.
        if trace.method != Method::OPTIONS {
            cors::expose(h, request_id::HEADER_CASED);
        }
        self.finish(class, &resp, &trace, &id);
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        trace: &mut Trace,
    ) -> (RouteClass, Answer) {
        let cfg = self.live().load();
        // 2. classify (a refused path is still counted against its sender's quota below)
        let route = route::classify(req.method(), req.uri().path(), req.uri().query());
        let class = match &route {
            Ok(Route::Citizens) if carries_body(&req) => RouteClass::Write,
            Ok(Route::Citizens) => RouteClass::Citizens,
            Ok(Route::Master(..)) | Err(_) => RouteClass::Master,
            Ok(Route::Passthrough | Route::Preflight(_) | Route::NotAllowed) => {
                RouteClass::Passthrough
            }
        };
        // 3. identify and limit
        let rl = &cfg.rate_limit;
        let trusted = self.shared.trusted.load();
        let ip = limit::client_ip(conn.peer, req.headers(), &trusted, rl.client_ip_header);
        let who = ClientIdentity::of(ip, req.headers(), rl.key_header.as_deref());
        let limiter = self.limiter.load_full();
        let l2 = self.shared.cache.l2.as_ref();
        if let Err(l) = limiter.admit(l2, class.limit_class(), &who).await {
            self.metrics()
                .rate_limited
                .get_or_create(&ClassLabels { route_class: class })
                .inc();
            return (
                class,
                Err(ApiError::RateLimited {
                    retry_after: l.retry_after,
                    limit: l.quota.burst,
                    policy: format!("{};w=1;burst={}", l.quota.rate, l.quota.burst),
                    limited_by: l.bound.as_str(),
                    what: l.bound.describe(),
                }),
            );
        }
        let route = match route {
            Ok(r) => r,
            Err(e) => return (class, Err(e.into())),
        };
        // The rarer routes' futures are boxed: every request's future is as large as the
        // largest path it may take, and hyper moves it (a memcpy per move) on every request.
        match route {
            Route::Citizens => self.citizens(req, class, &who, conn, trace).await,
            Route::Master(m, key) => {
                let max_age = m.max_age(&cfg.cache.master_max_age);
                (class, self.cached_blob(key, max_age, req.headers()).await)
            }
            Route::Passthrough => {
                let relayed = Box::pin(self.pass_through(req, ip, conn, trace)).await;
                (class, relayed)
            }
            Route::Preflight(g) => {
                let answered = Box::pin(self.preflight(g, req, ip, conn, trace)).await;
                (class, answered)
            }
            Route::NotAllowed => (class, Err(ApiError::MethodNotAllowed)),
        }
    }

    /// A CORS preflight on a guarded route: answered from `[cors]`, or relayed without its
    /// query (it carries no parameters the backend needs) and learned, or, while the backend
    /// cannot answer, replayed from what it answered before.
    async fn preflight(
        &self,
        route: Guarded,
        mut req: Request<Incoming>,
        ip: std::net::IpAddr,
        conn: ConnInfo,
        trace: &mut Trace,
    ) -> Answer {
        let mode = self.live().load().cors.mode;
        if mode == CorsMode::Configured {
            return Ok(cors::configured_preflight(
                &self.live().load().cors,
                req.headers(),
            ));
        }
        let asked = req.headers().clone();
        *req.uri_mut() = http::Uri::builder()
            .path_and_query(req.uri().path())
            .build()
            .map_err(|_| ApiError::NotFound)?;
        let relayed = self.pass_through(req, ip, conn, trace).await;
        let cors = &self.shared.cors;
        match relayed {
            Ok(resp) if !resp.status().is_server_error() => {
                if mode == CorsMode::Learned {
                    cors.learn_preflight(route, &asked, &resp);
                }
                Ok(resp)
            }
            failed if mode == CorsMode::Learned => match cors.replay_preflight(route, &asked).await
            {
                Some(stored) => Ok(stored),
                None => failed,
            },
            failed => failed,
        }
    }

    /// Puts the CORS headers on an answer of a guarded route, or learns them from it when the
    /// backend gave it (`PASS`).
    async fn cors(&self, route: Guarded, origin: &HeaderValue, resp: &mut Response<Body>) {
        let relayed = respond::cache_status(resp) == CacheStatus::PASS;
        let cfg = self.live().load();
        let allow = match cfg.cors.mode {
            CorsMode::Off => return,
            CorsMode::Configured if relayed && resp.headers().contains_key(ACAO) => return,
            CorsMode::Configured => cors::configured(&cfg.cors, origin),
            // A 5xx without CORS headers is a load balancer's, not the backend's: the app must
            // still read it (and its Retry-After), so it gets what the backend would send.
            CorsMode::Learned
                if relayed
                    && (resp.headers().contains_key(ACAO) || !resp.status().is_server_error()) =>
            {
                return self.shared.cors.learn_answer(route, origin, resp);
            }
            CorsMode::Learned => match self.shared.cors.known_anywhere(route, origin).await {
                Some(allow) => allow,
                None => match self.shared.cors.probe(self.upstream(), route, origin).await {
                    Some(allow) => allow,
                    None => return,
                },
            },
        };
        allow.apply(resp.headers_mut());
    }

    /// `/open/volunteer/citizens`: a read served from a snapshot, or a write forwarded.
    async fn citizens(
        &self,
        req: Request<Incoming>,
        class: RouteClass,
        who: &ClientIdentity,
        conn: ConnInfo,
        trace: &mut Trace,
    ) -> (RouteClass, Answer) {
        let ip = who.address();
        let cfg = self.live().load_full();
        // 4. validate, before the body is even read.
        let q = match CitizensQuery::parse(req.uri().query().unwrap_or(""), &cfg.citizens) {
            Ok(q) => q,
            Err(e) => return (class, Err(e.into())),
        };
        let (parts, body) = req.into_parts();
        let body = if parts.method == Method::POST {
            // Boxed: a GET's future need not hold room for reading a body.
            match Box::pin(read_sync_body(
                &parts.headers,
                body,
                cfg.limits.max_body_bytes.0,
                cfg.limits.body_read_timeout.0,
            ))
            .await
            {
                Ok(b) => b,
                Err(e) => return (class, Err(e)),
            }
        } else {
            Bytes::new()
        };
        if is_read_body(&body) {
            return (
                RouteClass::Citizens,
                self.read(q, &parts.headers, Some(who)).await,
            );
        }
        // Boxed, as the rarer routes are in `route`: the read path's future stays small.
        let written = Box::pin(self.write(q, parts, body, ip, conn, trace)).await;
        (RouteClass::Write, written)
    }

    /// 5–7 for a citizens read. `who`: the client whose ward budget the read counts against;
    /// `None` after a write the backend acknowledged (refusing its answer would have the app
    /// send the write again).
    async fn read(
        &self,
        q: CitizensQuery,
        headers: &http::HeaderMap,
        who: Option<&ClientIdentity>,
    ) -> Answer {
        let cfg = self.live().load();
        let q = self.widened(q);
        let max_age = cfg.cache.snapshot_max_age.0;
        match &q.scope {
            Scope::Ward(w) => {
                self.within_budget(who, std::slice::from_ref(w)).await?;
                let found = self.shared.cache.ward(w, max_age).await?;
                self.ward_answer(&q, found.value, headers, found.status)
                    .await
            }
            // Boxed, as the rarer routes are in `route`: a ward read's future stays small.
            Scope::Assembly(a) => Box::pin(self.read_assembly(a, &q, headers, who)).await,
        }
    }

    /// 5–7 for `wardNo=-1`: the assembly's wards, each answered from its snapshot (built
    /// where missing).
    async fn read_assembly(
        &self,
        a: &AssemblyKey,
        q: &CitizensQuery,
        headers: &http::HeaderMap,
        who: Option<&ClientIdentity>,
    ) -> Answer {
        let cfg = self.live().load();
        let cache = &self.shared.cache;
        let Some(wards) = assembly::wards_of(cache, a, &cfg).await? else {
            tracing::warn!(assembly = %a, "assembly not in the master data; asking the backend");
            return self.forward_read(q).await;
        };
        self.within_budget(who, &wards).await?;
        let max_age = cfg.cache.snapshot_max_age.0;
        let (snaps, status) = assembly::snapshots(cache, &wards, max_age).await?;
        let by = (q.booths.is_some(), q.since_ms.is_some());
        if let Some(field) = snaps.iter().find_map(|s| s.unindexed().blocks(by.0, by.1)) {
            return self.forward_unindexed(q, field).await;
        }
        let max_rows = cfg.citizens.assembly_max_rows;
        assembly::answer(cache, &snaps, q, headers, status, max_rows)
    }

    /// 4b. The ward budget: a read of wards new to its client today must fit the client's
    /// budget, its device's and its address's (`budget`).
    async fn within_budget(
        &self,
        who: Option<&ClientIdentity>,
        wards: &[WardKey],
    ) -> Result<(), ApiError> {
        let cfg = &self.live().load().ward_budget;
        let Some(who) = who.filter(|_| cfg.enabled) else {
            return Ok(());
        };
        let address = Budgeted {
            client: Client::Address(who.address()),
            whose: "address",
            budget: cfg.per_address,
        };
        let both;
        let clients = match who.device() {
            Some(d) => {
                let device = Budgeted {
                    client: Client::Device(d.0),
                    whose: "device",
                    budget: cfg.per_device,
                };
                both = [device, address];
                &both[..]
            }
            None => std::slice::from_ref(&address),
        };
        let l2 = self.shared.cache.l2.as_deref().filter(|l| l.is_up());
        self.shared
            .budget
            .admit(l2, clients, wards)
            .await
            .map_err(|e| {
                self.metrics()
                    .ward_budget_refused
                    .get_or_create(&OutcomeNameLabels { outcome: e.whose })
                    .inc();
                ApiError::WardBudget {
                    whose: e.whose,
                    budget: e.budget,
                    held: e.held,
                }
            })
    }

    /// Deltas overlap (see "Deltas without gaps" in ARCHITECTURE.md); answers from snapshots
    /// widen them further, to their tier (`respond::tiered`).
    fn widened(&self, mut q: CitizensQuery) -> CitizensQuery {
        if let Some(d) = q.since_ms {
            let overlap = match &q.scope {
                Scope::Ward(w) => self.shared.cache.delta_overlap(w, d),
                Scope::Assembly(_) => self.live().load().cache.effective_delta_overlap(),
            };
            q.since_ms = Some(d.saturating_sub(overlap.as_millis() as i64).max(0));
        }
        q
    }

    /// 7 for a ward: the answer from its snapshot, or forwarded when its rows lack a field the
    /// read filters on.
    async fn ward_answer(
        &self,
        q: &CitizensQuery,
        snap: Arc<Snapshot>,
        headers: &http::HeaderMap,
        status: CacheStatus,
    ) -> Answer {
        let unindexed = snap.unindexed();
        if let Some(field) = unindexed.blocks(q.booths.is_some(), q.since_ms.is_some()) {
            return Box::pin(self.forward_unindexed(q, field)).await;
        }
        respond::snapshot_answer(&self.shared.cache, snap, q, headers, status).await
    }

    /// A read its snapshots cannot answer, their rows lacking the field it filters on.
    async fn forward_unindexed(&self, q: &CitizensQuery, field: &'static str) -> Answer {
        let labels = crate::metrics::FieldLabels { field };
        self.metrics().unindexed_reads.get_or_create(&labels).inc();
        self.forward_read(q).await
    }

    /// A read forwarded with the re-encoded query, holding a gate permit like any backend read.
    async fn forward_read(&self, q: &CitizensQuery) -> Answer {
        let max_queued = self.live().load().limits.max_queued_upstream as usize;
        let permit = self
            .upstream()
            .gate()
            .enter(max_queued)
            .await
            .map_err(|_| {
                self.upstream().outcome(crate::metrics::Outcome::shed);
                ApiError::Upstream(UpstreamError::Shed)
            })?;
        let pq = format!("{CITIZENS_PATH}?{}", q.to_upstream_query());
        let got = self.upstream().fetch(&pq, permit).await;
        let got = got.and_then(up::Fetched::ok).map_err(ApiError::Upstream)?;
        let mut resp = Response::new(full(got.body));
        if let Some(ct) = got.headers.get(header::CONTENT_TYPE) {
            resp.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
        }
        respond::stamp(&mut resp, CacheStatus::PASS);
        Ok(resp)
    }

    async fn cached_blob(
        &self,
        key: String,
        max_age: Duration,
        headers: &http::HeaderMap,
    ) -> Answer {
        let found = self.shared.cache.blob(key, max_age).await?;
        Ok(respond::blob_answer(&found.value, headers, found.status))
    }

    /// Anything else: streamed both ways, hop-by-hop headers removed, forwarding headers set.
    async fn pass_through(
        &self,
        req: Request<Incoming>,
        ip: std::net::IpAddr,
        conn: ConnInfo,
        trace: &mut Trace,
    ) -> Answer {
        let (mut parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        parts.uri = self.upstream().uri(&pq).map_err(ApiError::Upstream)?;
        parts.version = http::Version::HTTP_11;
        up::strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        up::add_forwarded(
            &mut parts.headers,
            ip,
            if conn.tls { "https" } else { "http" },
        );
        let req = Request::from_parts(parts, body.map_err(Into::into).boxed());
        let start = Instant::now();
        let resp = self.upstream().send(req).await;
        trace.upstream = Some(start.elapsed());
        Ok(relay(resp.map_err(ApiError::Upstream)?))
    }

    /// 8. Count and log.
    fn finish(&self, class: RouteClass, resp: &Response<Body>, trace: &Trace, id: &RequestId) {
        let elapsed = trace.start.elapsed();
        let cache = respond::cache_status(resp);
        let labels = RequestLabels {
            route_class: class,
            status: resp.status().as_u16(),
            cache: cache.as_str(),
        };
        self.metrics().count_request(labels, elapsed);
        let sample = self.live().load().log.access_log_sample;
        if sample >= 1.0 || (sample > 0.0 && fastrand_unit() < sample) {
            let bytes = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            crate::logging::access(&crate::logging::AccessLine {
                client: trace.conn.peer,
                method: trace.method.as_str(),
                path: trace.uri.path(),
                route_class: class.as_str(),
                status: resp.status().as_u16(),
                cache: cache.as_str(),
                bytes,
                total: elapsed,
                upstream: trace.upstream,
                request_id: id.as_str(),
            });
        }
    }
}

/// A cheap uniform number in [0, 1) for log sampling (no need for a cryptographic source).
fn fastrand_unit() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(0x9e37_79b9_7f4a_7c15 ^ (std::process::id() as u64)));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// The upstream's response, relayed: hop-by-hop headers removed, stamped `PASS`.
fn relay(resp: Response<Body>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    up::strip_hop_by_hop(&mut parts.headers);
    let mut resp = Response::from_parts(parts, body);
    respond::stamp(&mut resp, CacheStatus::PASS);
    resp
}
