//! The admin listener: health, readiness, metrics, the status page, snapshot listing and
//! purge. Never public.

mod coverage;
mod page;
mod sampler;
mod status;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{full, Body};
use crate::cache::{CacheKey, Entry};
use crate::params::WardKey;
use crate::respond::ApiError;
use crate::shared::Shared;
use crate::time::EpochMs;

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A 200 of `body` as `content_type` that no cache keeps: the page and the document it reads
/// always come from the instance as it is now.
fn uncached(body: impl Into<bytes::Bytes>, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether the instance should receive traffic, and if not, why.
pub async fn readiness(shared: &Shared) -> Result<(), String> {
    if shared.draining.load(Ordering::SeqCst) {
        return Err("draining".into());
    }
    // Redis unreachable is degraded, not unready: L1 and the backend still serve, and a blip
    // of the one Redis every instance shares must not take them all out of the load balancer.
    let cfg = shared.live.load();
    let want = cfg.ready.min_warm_percent;
    if want > 0 {
        let targets = shared.warm_targets.load();
        if !targets.is_empty() {
            // Counted: copies that can be served, fresh or stale-if-error (a night-old warm
            // serves while the backend is down).
            let max_age = cfg.cache.stale_if_error_age();
            let mut warm = 0usize;
            for w in targets.iter() {
                if shared
                    .cache
                    .has_fresh(&CacheKey::Ward(w.clone()), max_age)
                    .await
                {
                    warm += 1;
                }
            }
            let pct = warm * 100 / targets.len();
            if pct < usize::from(want) {
                return Err(format!(
                    "{pct}% of {} warm-target wards cached, {want}% required",
                    targets.len()
                ));
            }
        }
    }
    Ok(())
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn token_ok(req: &Request<Incoming>, shared: &Shared) -> bool {
    let cfg = shared.live.load();
    let Some(want) = cfg.admin_token.as_ref() else {
        return false;
    };
    let got = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (got.as_bytes(), want.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the admin listener keeps between requests.
struct Admin {
    shared: Arc<Shared>,
    /// The last minute of the counters (`sampler`).
    ring: Arc<sampler::Ring>,
    surveys: coverage::Surveys,
    /// When the listener started: the process's start, near enough.
    started: (Instant, EpochMs),
}

async fn handle(req: Request<Incoming>, admin: Arc<Admin>) -> Result<Response<Body>, Infallible> {
    let shared = &admin.shared;
    let path = req.uri().path().to_string();
    let resp = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => json_response(
            StatusCode::OK,
            json!({"status": "alive", "version": crate::respond::VERSION}),
        ),
        (&Method::GET, "/readyz") => ready(shared).await,
        (&Method::GET, "/metrics") => metrics(shared),
        // The page holds no data: its script asks `/admin/status` with the operator's token.
        (&Method::GET, "/") => page::page(),
        (_, "/admin/status") | (_, "/admin/snapshots") | (_, "/admin/purge")
            if !token_ok(&req, shared) =>
        {
            ApiError::Unauthorized.into_response(&path, None)
        }
        (&Method::GET, "/admin/status") => status_doc(&admin)
            .await
            .unwrap_or_else(|e| e.into_response(&path, None)),
        (&Method::GET, "/admin/snapshots") => snapshots(shared),
        (&Method::POST, "/admin/purge") => purge(shared, req.uri().query().unwrap_or(""))
            .await
            .unwrap_or_else(|e| e.into_response(&path, None)),
        (_, "/admin/status")
        | (_, "/admin/snapshots")
        | (_, "/admin/purge")
        | (_, "/")
        | (_, "/healthz")
        | (_, "/readyz")
        | (_, "/metrics") => ApiError::MethodNotAllowed.into_response(&path, None),
        _ => ApiError::NotFound.into_response(&path, None),
    };
    Ok(resp)
}

/// `GET /admin/status` (`status`, schema in docs/status.md).
async fn status_doc(admin: &Admin) -> Result<Response<Body>, ApiError> {
    let shared = &admin.shared;
    let survey = admin.surveys.current(shared).await;
    // Draining is said at once, not at the next survey.
    let draining = if shared.draining.load(Ordering::SeqCst) {
        Some(readiness(shared).await)
    } else {
        None
    };
    let doc = status::status(status::Inputs {
        shared,
        survey: &survey,
        oldest: admin.ring.oldest(Instant::now()),
        started: admin.started,
        draining,
    });
    let body = serde_json::to_string(&doc).map_err(|e| ApiError::Unavailable {
        reason: format!("the status document: {e}"),
        retry_after: Duration::from_secs(1),
    })?;
    Ok(uncached(body, "application/json"))
}

/// `GET /readyz`: 200 when the instance should receive traffic, else 503 with the reason.
async fn ready(shared: &Shared) -> Response<Body> {
    // Details that do not decide readiness: a replica whose rows differ from the backend's
    // only moves builds to the backend.
    let replica = shared.cache.replica_state();
    let redis = redis_state(shared).await;
    match readiness(shared).await {
        Ok(()) => {
            shared.metrics.ready.set(1);
            json_response(
                StatusCode::OK,
                json!({"status": "ready", "replica": replica, "redis": redis}),
            )
        }
        Err(why) => {
            shared.metrics.ready.set(0);
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "not ready", "reason": why, "replica": replica, "redis": redis}),
            )
        }
    }
}

/// Whether Redis answers now: `"ok"`, `"unreachable"` (degraded: serving from L1 and the
/// backend), or none configured.
async fn redis_state(shared: &Shared) -> Option<&'static str> {
    let up = shared.cache.l2.as_ref()?.ping().await;
    Some(if up { "ok" } else { "unreachable" })
}

/// `GET /metrics`, in Prometheus text format.
fn metrics(shared: &Shared) -> Response<Body> {
    let (bytes, entries) = shared.cache.l1.usage();
    shared.metrics.l1_bytes.set(bytes as i64);
    shared.metrics.l1_entries.set(entries as i64);
    let derived = shared.cache.derived.usage().0;
    shared.metrics.derived_bytes.set(derived as i64);
    let dropped = crate::logging::dropped_lines();
    shared
        .metrics
        .log_lines_dropped
        .set(i64::try_from(dropped).unwrap_or(i64::MAX));
    let (entries, refused) = crate::cold::realtime_entries();
    let m = &shared.metrics;
    m.realtime_entries
        .set(i64::try_from(entries).unwrap_or(i64::MAX));
    m.realtime_refused.set(i64::from(refused));
    set_sealed(&shared.metrics);
    if let Some(lag) = shared.cache.watch_lag() {
        shared.metrics.watch_lag_seconds.set(lag.as_secs_f64());
    }
    let mut r = Response::new(full(shared.metrics.render()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn set_sealed(m: &crate::metrics::Metrics) {
    let s = wardgate_sealed::stats();
    let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.sealed_answers.set(g(s.regions as u64));
    m.sealed_bytes.set(g(s.bytes as u64));
    m.sealed_refused.set(g(s.refused));
    m.sendfile_bytes.set(g(s.sendfile_bytes));
    for send in wardgate_sealed::SendSize::ALL {
        let size = send.as_str();
        let chosen = wardgate_sealed::chosen(send);
        let labels = crate::metrics::SizeLabels { size };
        m.sendfile_chosen
            .get_or_create(&labels)
            .set(i64::from(chosen));
        let measured = wardgate_sealed::last_trials(send);
        for (way, ns) in ["copy", "sendfile"].into_iter().zip(measured) {
            if ns > 0 {
                let labels = crate::metrics::SizeWayLabels { size, way };
                m.send_trial_cost.get_or_create(&labels).set(g(ns));
            }
        }
    }
}

/// `GET /admin/snapshots`: what L1 holds.
fn snapshots(shared: &Shared) -> Response<Body> {
    let now = EpochMs::now();
    let list: Vec<_> = shared
        .cache
        .l1
        .entries()
        .into_iter()
        .map(|(k, e)| {
            let (rows, bytes) = match &e {
                Entry::Snapshot(s) => (Some(s.rows()), s.gzip_bytes()),
                Entry::Blob(b) => (None, b.gzip.len()),
            };
            let age_ms = now.0 - e.built_at().0;
            json!({"key": k.to_string(), "rows": rows, "bytes": bytes, "age_ms": age_ms, "tier": "L1"})
        })
        .collect();
    json_response(StatusCode::OK, json!({"snapshots": list}))
}

/// `POST /admin/purge?state=&assemblyNo=[&wardNo=]`: drops the copies of a ward or an assembly.
/// `POST /admin/purge?all=true`: drops every copy, here, in Redis and (told through Redis) on
/// every instance: the wipe after an election.
async fn purge(shared: &Shared, query: &str) -> Result<Response<Body>, ApiError> {
    let (mut state, mut assembly, mut ward, mut all) = (None, None, None, false);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "assemblyNo" => assembly = Some(v.into_owned()),
            "wardNo" => ward = Some(v.into_owned()),
            "all" => all = v == "true",
            _ => {}
        }
    }
    if all {
        let (here, redis) = shared.cache.purge_all().await;
        tracing::warn!(here, redis = ?redis, "purge of every copy");
        return Ok(json_response(
            StatusCode::OK,
            json!({"purged": here, "redis_keys_removed": redis}),
        ));
    }
    let (Some(s), Some(a)) = (state, assembly) else {
        return Err(ApiError::BadParam(crate::params::ParamError {
            param: "state",
            message: "state and assemblyNo are required".into(),
        }));
    };
    let k = WardKey::parse(&s, &a, ward.as_deref().unwrap_or("0"))?;
    let only = ward.as_ref().map(|_| k.ward.as_str());
    let n = shared.cache.purge(&k.assembly_key(), only).await;
    tracing::info!(state = %k.state, assembly = %k.assembly, ward = ?ward, purged = n, "purge");
    Ok(json_response(StatusCode::OK, json!({"purged": n})))
}

/// Serves the admin port until `stop` fires. It stays up during the drain so probes see 503.
/// The status page's samples are taken while it serves, and stop with it.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let ring = Arc::new(sampler::Ring::default());
    sampler::spawn(shared.metrics.clone(), ring.clone(), stop.clone());
    let admin = Arc::new(Admin {
        shared,
        ring,
        surveys: coverage::Surveys::default(),
        started: (Instant::now(), EpochMs::now()),
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let admin = admin.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, admin.clone()));
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}
