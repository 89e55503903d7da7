//! The respond stage: answers assembled from cached bytes, and the one place errors become
//! HTTP responses.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;

use crate::blob::Blob;
use crate::body::{empty, full, Body, BoxError};
use crate::cache::CacheStatus;
use crate::gzip::Assembler;
use crate::params::{CitizensQuery, ParamError};
use crate::snapshot::{Picked, Selection, Snapshot};
use crate::time::EpochMs;
use crate::upstream::UpstreamError;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const X_CACHE: &str = "x-cache";
const X_SNAPSHOT_TIME: &str = "x-snapshot-time";
const X_VERSION: &str = "x-wardgate-version";

/// Everything wardgate refuses or fails at, each with its status and a JSON body naming it.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter outside the contract's formats: nothing was sent upstream.
    BadParam(ParamError),
    /// A sync body that is not a JSON array of objects with an `id`.
    BadBody(String),
    /// A request body larger than `limits.max_body_bytes`.
    TooLarge {
        limit: u64,
    },
    /// The client took longer than `limits.body_read_timeout` to send its body.
    BodyTimeout,
    /// Over the per-client quota.
    RateLimited {
        retry_after: Duration,
        limit: u32,
        policy: String,
    },
    /// Nothing servable now (cold ward while the upstream fails, build too slow, shed).
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// The upstream failed a request wardgate had to forward.
    Upstream(UpstreamError),
    NotFound,
    Unauthorized,
    MethodNotAllowed,
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::BadParam(e)
    }
}

fn json_body(v: serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParam(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(e) => match e {
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Shed | UpstreamError::Connect(_) => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::Status { status, .. } => *status,
                _ => StatusCode::BAD_GATEWAY,
            },
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The response. Every error answer is built here and nowhere else.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let mut extra = HeaderMap::new();
        let body = match self {
            ApiError::BadParam(e) => json_body(json!({"error": e.message, "param": e.param})),
            ApiError::BadBody(msg) => json_body(json!({"error": msg, "param": "body"})),
            ApiError::TooLarge { limit } => json_body(json!({
                "error": format!("request body is larger than {limit} bytes"),
                "limit": limit,
            })),
            ApiError::BodyTimeout => {
                json_body(json!({"error": "request body was not received in time"}))
            }
            ApiError::RateLimited {
                retry_after,
                limit,
                policy,
            } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                put(&mut extra, "retry-after", &secs.to_string());
                put(&mut extra, "ratelimit-limit", &limit.to_string());
                put(&mut extra, "ratelimit-remaining", "0");
                put(&mut extra, "ratelimit-reset", &secs.to_string());
                put(&mut extra, "ratelimit-policy", &policy);
                json_body(json!({"error": "too many requests", "retry_after_seconds": secs}))
            }
            ApiError::Unavailable {
                reason,
                retry_after,
            } => {
                put(
                    &mut extra,
                    "retry-after",
                    &retry_after.as_secs().max(1).to_string(),
                );
                json_body(json!({"error": reason}))
            }
            ApiError::Upstream(UpstreamError::Status {
                status: _,
                content_type,
                body,
            }) => {
                // A definite upstream answer (404 for an unknown id, say) is relayed as it is.
                if let Some(ct) = content_type {
                    extra.insert(header::CONTENT_TYPE, ct);
                }
                body
            }
            ApiError::Upstream(e) => {
                // The app keeps its unsent changes and retries after this.
                put(&mut extra, "retry-after", "5");
                json_body(json!({"error": e.to_string()}))
            }
            ApiError::NotFound => json_body(json!({"error": "not found"})),
            ApiError::Unauthorized => {
                put(&mut extra, "www-authenticate", "Bearer");
                json_body(json!({"error": "a valid bearer token is required"}))
            }
            ApiError::MethodNotAllowed => json_body(json!({"error": "method not allowed"})),
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.extend(extra);
        stamp(&mut resp, CacheStatus::NONE);
        resp
    }
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// What every response carries: the cache result (as `X-Cache`, and as a typed extension
/// that the access log and metrics read) and the version (canaries are told apart).
pub fn stamp<B>(resp: &mut Response<B>, cache: CacheStatus) {
    let h = resp.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static(cache.as_str()));
    h.insert(X_VERSION, HeaderValue::from_static(VERSION));
    resp.extensions_mut().insert(cache);
}

/// The cache result `stamp` recorded on a response.
pub fn cache_status<B>(resp: &Response<B>) -> CacheStatus {
    resp.extensions()
        .get::<CacheStatus>()
        .copied()
        .unwrap_or(CacheStatus::NONE)
}

/// Whether the client accepts gzip (`Accept-Encoding`, honouring `q=0`).
pub fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        })
}

/// Whether `If-None-Match` names `etag` (or `*`), ignoring weak prefixes.
fn not_modified(h: &HeaderMap, etag: &str) -> bool {
    h.get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// FNV-1a: a stable hash for ETag variants, the same on every instance (unlike the std
/// hasher's random keys), computed without building a string.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The body as a stream of shared slices: nothing is copied.
fn parts_body(parts: Vec<Bytes>) -> Body {
    if parts.len() == 1 {
        if let Some(one) = parts.into_iter().next() {
            return full(one);
        }
        return full(Bytes::new());
    }
    let frames = parts.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// How a cached answer is represented: what `cached_response` needs besides the body.
struct Representation<'a> {
    etag: String,
    gzip: bool,
    content_type: &'a str,
    /// `X-Snapshot-Time` for snapshot answers.
    snapshot_time: Option<EpochMs>,
}

/// Common to snapshot and blob answers: encoding, validators, `304`.
fn cached_response(
    req: &HeaderMap,
    rep: Representation<'_>,
    cache: CacheStatus,
    body: impl FnOnce() -> (Vec<Bytes>, usize),
) -> Response<Body> {
    let fresh = not_modified(req, &rep.etag);
    let (parts, len) = if fresh { (Vec::new(), 0) } else { body() };
    let mut resp = Response::new(if fresh { empty() } else { parts_body(parts) });
    if fresh {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = resp.headers_mut();
    put(h, "etag", &rep.etag);
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Some(t) = rep.snapshot_time {
        put(h, X_SNAPSHOT_TIME, &t.to_string());
    }
    if !fresh {
        put(h, "content-type", rep.content_type);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if rep.gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
    }
    stamp(&mut resp, cache);
    resp
}

/// Loose rows (outside whole chunks) above this many bytes make a gzip answer worth
/// compressing once and keeping with the snapshot, rather than framing them uncompressed.
const DERIVE_ABOVE: usize = 16 << 10;

/// Derived answers up to this size are kept as one contiguous buffer.
const CONTIGUOUS_AT_MOST: usize = 256 << 10;

/// The selected rows of `snap` in the legacy array or the page envelope.
fn render(snap: &Snapshot, q: &CitizensQuery, picked: &Picked, gzip: bool) -> (Vec<Bytes>, usize) {
    let mut a = if gzip {
        Assembler::gzip()
    } else {
        Assembler::identity()
    };
    a.literal(if q.page.is_some() {
        b"{\"citizens\":["
    } else {
        b"["
    });
    snap.render_rows(picked, &mut a);
    match q.page {
        Some(p) => a.literal(
            format!(
                "],\"page\":{},\"size\":{},\"hasMore\":{},\"count\":{}}}",
                p.page, p.size, picked.has_more, picked.count
            )
            .as_bytes(),
        ),
        None => a.literal(b"]"),
    }
    a.finish()
}

/// A citizens read answered from a snapshot.
///
/// Full wards are stored bytes. Other gzip selections are derived once per snapshot and kept
/// with it: chunk-aligned pages and whole booths as framed slices of the stored gzip, selections
/// that cut through chunks (deltas, unaligned pages) compressed once, off the async workers.
/// Identity selections are slices of the identity JSON, assembled per request.
pub async fn snapshot_answer(
    snap: Arc<Snapshot>,
    q: &CitizensQuery,
    req: &HeaderMap,
    cache: CacheStatus,
) -> Response<Body> {
    let gzip = accepts_gzip(req);
    let variant = {
        use std::hash::{Hash, Hasher};
        let mut h = Fnv::default();
        (&q.booths, q.since_ms, q.page).hash(&mut h);
        h.finish()
    };
    let etag = format!(
        "\"{}-{:x}{}\"",
        snap.tag,
        variant,
        if gzip { "-gz" } else { "" }
    );
    let rep = Representation {
        etag,
        gzip,
        content_type: "application/json",
        snapshot_time: Some(snap.built_at),
    };
    if not_modified(req, &rep.etag) {
        return cached_response(req, rep, cache, || (Vec::new(), 0));
    }
    if q.is_full_ward() {
        let b = if gzip {
            snap.full_gzip()
        } else {
            snap.full_identity()
        };
        let n = b.len();
        return cached_response(req, rep, cache, || (vec![b], n));
    }
    if let Some(parts) = gzip.then(|| snap.derived(variant)).flatten() {
        return cached_response(req, rep, cache, || (parts.0.clone(), parts.1));
    }
    let body = if gzip {
        derive_gzip(&snap, q, variant).await
    } else {
        let sel = selection(q);
        render(&snap, q, &snap.pick(&sel), false)
    };
    cached_response(req, rep, cache, || body)
}

fn selection(q: &CitizensQuery) -> Selection<'_> {
    Selection {
        booths: q.booths.as_ref(),
        since_ms: q.since_ms,
        page: q.page,
    }
}

/// A gzip selection that is not stored bytes, made once and kept with its snapshot: framed
/// from stored pieces when few loose rows remain, else compressed once off the async workers.
async fn derive_gzip(snap: &Arc<Snapshot>, q: &CitizensQuery, variant: u64) -> (Vec<Bytes>, usize) {
    let picked = snap.pick(&selection(q));
    if snap.loose_bytes(&picked) <= DERIVE_ABOVE {
        // Kept as one contiguous buffer when small (a 1,000-row page is ~60 KB): each later
        // hit is then a single write of head and body, like a file served from disk.
        let (parts, n) = render(snap, q, &picked, true);
        let parts = if n <= CONTIGUOUS_AT_MOST {
            vec![concat(&parts, n).into()]
        } else {
            parts
        };
        snap.keep_derived(variant, Arc::new((parts.clone(), n)));
        return (parts, n);
    }
    let (s, q2) = (snap.clone(), q.clone());
    let built = tokio::task::spawn_blocking(move || {
        let (parts, n) = render(&s, &q2, &picked, false);
        let gz = crate::gzip::gzip_whole(&concat(&parts, n));
        let n = gz.len();
        s.keep_derived(variant, Arc::new((vec![gz.clone()], n)));
        (vec![gz], n)
    })
    .await;
    match built {
        Ok(parts) => parts,
        Err(_) => render(snap, q, &snap.pick(&selection(q)), true),
    }
}

/// The pieces of an answer as one buffer of `n` bytes.
fn concat(parts: &[Bytes], n: usize) -> Vec<u8> {
    let mut one = Vec::with_capacity(n);
    for p in parts {
        one.extend_from_slice(p);
    }
    one
}

/// A master-data (or other cached) answer from a blob.
pub fn blob_answer(blob: &Blob, req: &HeaderMap, cache: CacheStatus) -> Response<Body> {
    let gzip = accepts_gzip(req);
    let etag = format!("\"{}{}\"", blob.tag, if gzip { "-gz" } else { "" });
    let rep = Representation {
        etag,
        gzip,
        content_type: &blob.content_type,
        snapshot_time: None,
    };
    cached_response(req, rep, cache, || {
        let b = if gzip {
            blob.gzip.clone()
        } else {
            blob.identity.clone()
        };
        let n = b.len();
        (vec![b], n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_properly() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, identity"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("GZIP"));
        assert!(accepts_gzip(&h));
    }

    #[test]
    fn errors_are_json_naming_the_problem() {
        let r = ApiError::BadParam(ParamError {
            param: "wardNo",
            message: "must be digits".into(),
        })
        .into_response();
        assert_eq!(r.status(), 400);
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
            limit: 10,
            policy: "10;w=1".into(),
        }
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let r = ApiError::Upstream(UpstreamError::Timeout(Duration::from_secs(1))).into_response();
        assert_eq!(r.status(), 504);
        assert!(r.headers().contains_key("retry-after"));
    }

    #[test]
    fn if_none_match_handles_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(not_modified(&h, "\"b\""));
        assert!(!not_modified(&h, "\"c\""));
    }
}
