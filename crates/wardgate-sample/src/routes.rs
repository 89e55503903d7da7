//! The legacy routes the origin answers, one handler each.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tracing::{debug, error, info};

use crate::answer::{self, error_json, json, ErrorMessage};
use crate::master::{
    assemblies_json, dashboard_json, parties_json, settings_json, states_json, wards_json,
};
use crate::params::{parse_assembly_query, CitizensQuery, DashboardQuery};
use crate::server::{BoxError, InFlight, OriginBody, OriginStats, Seen, Shared};
use crate::store::{parse_updates, Store};
use crate::voter::{write_json_array, write_page_json};
use crate::{now_ms, OriginError};

/// Answers one request: the test counters first (neither counted, logged nor delayed), then
/// the legacy route, and one request-log line for it.
pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<OriginBody> {
    // Spring matches a trailing slash too; route on the path without it.
    let raw_path = req.uri().path().to_string();
    let path = if raw_path.len() > 1 {
        raw_path.trim_end_matches('/')
    } else {
        &raw_path
    }
    .to_string();
    if let Some(resp) = control(&shared.stats, &path, req.method()) {
        return resp;
    }
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // What a request-logging filter in front of the Spring backend reads from the proxy.
    let request_id = req
        .headers()
        .get("x-request-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let resp = legacy_answer(shared, req, &raw_path, &path).await;
    let status = resp.status().as_u16();
    info!(target: "request", %method, path = %raw_path, %query, status, request_id = request_id.as_deref().unwrap_or("-"), "request");
    shared.stats.saw(Seen {
        method,
        path: raw_path,
        query,
        status,
        request_id,
    });
    resp
}

/// A legacy request's answer, after the configured latency.
async fn legacy_answer(
    shared: &Shared,
    req: Request<Incoming>,
    raw_path: &str,
    path: &str,
) -> Response<OriginBody> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let _inflight = InFlight::enter(&shared.stats);
    if !shared.opts.latency.is_zero() {
        tokio::time::sleep(shared.opts.latency).await;
    }
    let cors = shared.opts.cors;
    if answer::is_preflight(req.method(), req.headers()) {
        shared.stats.preflights.fetch_add(1, Ordering::Relaxed);
        return answer::preflight(cors, req.headers());
    }
    let headers = req.headers().clone();
    let mut resp = route(shared, path, req).await;
    answer::add_cors(cors, &headers, resp.headers_mut(), false);
    match resp.extensions_mut().remove::<ErrorMessage>() {
        Some(ErrorMessage(msg)) => {
            let body =
                answer::error_body(resp.status(), &msg, raw_path, shared.opts.dates, now_ms());
            let (parts, _) = resp.into_parts();
            Response::from_parts(
                parts,
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
        }
        None => resp,
    }
}

/// The `/__origin/*` routes tests use to read and reset the counters.
fn control(stats: &OriginStats, path: &str, method: &Method) -> Option<Response<OriginBody>> {
    match path {
        "/__origin/stats" => Some(json(StatusCode::OK, stats.json())),
        "/__origin/reset-stats" if method == Method::POST => {
            stats.reset();
            Some(json(StatusCode::OK, stats.json()))
        }
        "/__origin/reset-stats" => Some(method_not_allowed("POST")),
        _ => None,
    }
}

async fn route(shared: &Shared, path: &str, req: Request<Incoming>) -> Response<OriginBody> {
    let method = req.method().clone();
    let is_get = method == Method::GET;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["open", "volunteer", "citizens"] if is_get || method == Method::POST => {
            citizens(shared, req).await
        }
        ["open", "volunteer", "citizens"] => method_not_allowed("GET, POST"),
        ["open", "volunteer", rest @ ..] => master_route(shared, is_get, rest).await,
        ["api", "dashboardStats"] => dashboard(shared, is_get, req.uri().query()).await,
        ["open", "getVotersDataCSV"] if is_get => csv(&shared.store, req.uri().query()),
        ["open", "getVotersDataCSV"] => method_not_allowed("GET"),
        ["api", "uploads", "echo"] if method == Method::POST => echo(req),
        ["api", "uploads", "echo"] => method_not_allowed("POST"),
        ["api", "login"] if method == Method::POST => login(req).await,
        ["api", "login"] => method_not_allowed("POST"),
        _ => not_found(),
    }
}

/// The master-data routes under `/open/volunteer/`. A malformed id is a 400 whatever the
/// method, as Spring's path-variable conversion fails before the method is looked at.
async fn master_route(shared: &Shared, is_get: bool, route: &[&str]) -> Response<OriginBody> {
    let store = &shared.store;
    match route {
        ["states"] => {
            master(shared, is_get, async {
                store.states().await.map(|s| Some(states_json(&s)))
            })
            .await
        }
        ["assemblyConstituencys", id] => match id.parse::<i64>() {
            Ok(id) => {
                master(shared, is_get, async {
                    let list = store.assemblies(id).await?;
                    Ok(list.map(|list| assemblies_json(id, &list)))
                })
                .await
            }
            Err(_) => error_json(StatusCode::BAD_REQUEST, "stateId must be a number"),
        },
        ["wardsAndBooths", id] => match id.parse::<i64>() {
            Ok(id) => {
                master(shared, is_get, async {
                    let found = store.wards_and_booths(id).await?;
                    Ok(found.map(|(ac, wards)| wards_json(&ac, &wards)))
                })
                .await
            }
            Err(_) => error_json(
                StatusCode::BAD_REQUEST,
                "assemblyConstituencyId must be a number",
            ),
        },
        ["parties"] => {
            master(shared, is_get, async {
                store.parties().await.map(|p| Some(parties_json(&p)))
            })
            .await
        }
        ["applicationSettings"] => {
            master(shared, is_get, async {
                store.settings().await.map(|s| Some(settings_json(&s)))
            })
            .await
        }
        _ => not_found(),
    }
}

/// `/api/dashboardStats`: counted as master data; its parameters are checked first.
async fn dashboard(shared: &Shared, is_get: bool, query: Option<&str>) -> Response<OriginBody> {
    let q = match DashboardQuery::parse(query) {
        Ok(q) => q,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e),
    };
    master(shared, is_get, async {
        let st = shared.store.dashboard(&q.filter()).await?;
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

fn not_found() -> Response<OriginBody> {
    error_json(StatusCode::NOT_FOUND, "not found")
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
        None => write_json_array(&rows, shared.opts.dates, &mut out),
        Some((page, size)) => {
            rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
            write_page_json(&rows, (page, size), shared.opts.dates, &mut out);
        }
    }
    let stats = &shared.stats;
    stats
        .citizens_rows
        .fetch_add(rows.len() as u64, Ordering::Relaxed);
    stats
        .citizens_bytes
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    if q.date.is_none() && q.booth_nos.is_none() && q.page.is_none() {
        stats.full_reads.fetch_add(1, Ordering::Relaxed);
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
