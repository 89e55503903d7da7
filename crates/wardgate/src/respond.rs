//! The respond stage: answers assembled from cached bytes, and the one place errors become
//! HTTP responses.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;

use crate::blob::Blob;
use crate::body::{empty, full, Body, BoxError};
use crate::cache::build::BACKEND_JSON;
use crate::cache::{Cache, CacheError, CacheStatus};
use crate::gzip::Assembler;
use crate::params::{CitizensQuery, Page, ParamError};
use crate::request_id::RequestId;
use crate::snapshot::{tier_start, IdentityBody, Picked, Selection, Snapshot, SnapshotError};
use crate::time::EpochMs;
use crate::upstream::UpstreamError;

/// The version and the release it was built from (git revision or operator label, set by
/// `build.rs`): what `X-Wardgate-Version` says, so a canary is told apart from stable.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("WARDGATE_REVISION"));
// Names and values every answer carries, made once: parsing a header name or checking a
// static value costs a walk over its bytes per answer otherwise.
const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const X_SNAPSHOT_TIME: HeaderName = HeaderName::from_static("x-snapshot-time");
const X_VERSION: HeaderName = HeaderName::from_static("x-wardgate-version");
const VERSION_VALUE: HeaderValue = HeaderValue::from_static(VERSION);
const VARY_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");

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
    /// An unpaginated assembly-wide answer of more rows than `citizens.assembly_max_rows`.
    TooManyRows {
        rows: usize,
        limit: u32,
    },
    /// The client took longer than `limits.body_read_timeout` to send its body.
    BodyTimeout,
    /// Over the per-client quota.
    RateLimited {
        retry_after: Duration,
        limit: u32,
        policy: String,
        /// Which limit: `device_quota`, `address_quota` or `address_ceiling` (`limit::Bound`).
        limited_by: &'static str,
        /// That limit in words, for the message.
        what: &'static str,
    },
    /// Past the client's distinct wards of the day (`budget`).
    WardBudget {
        whose: &'static str,
        budget: u32,
        held: u64,
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

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::Unavailable { reason } => ApiError::Unavailable {
                reason,
                retry_after: Duration::from_secs(5),
            },
            CacheError::Upstream(e) => ApiError::Upstream(e),
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::BadParam(e)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParam(_) | ApiError::BadBody(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } | ApiError::TooManyRows { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } | ApiError::WardBudget { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
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

    /// The response. Every error answer is built here and nowhere else: Spring Boot's error
    /// attributes (`timestamp`, `status`, `error`, `message`, `path`), as a client of the
    /// backend parses them, with wardgate's own fields beside them (`request_id`: the
    /// public port's answers name their request, `X-Request-Id`).
    pub fn into_response(self, path: &str, request_id: Option<&RequestId>) -> Response<Body> {
        let status = self.status();
        let mut extra = HeaderMap::new();
        let body = match self.detail(&mut extra) {
            Detail::Relayed(body) => body,
            Detail::Own(message, mut fields) => {
                fields.insert("timestamp".into(), json!(EpochMs::now().to_jackson_iso()));
                fields.insert("status".into(), json!(status.as_u16()));
                fields.insert(
                    "error".into(),
                    json!(status.canonical_reason().unwrap_or("")),
                );
                fields.insert("message".into(), json!(message));
                fields.insert("path".into(), json!(path));
                if let Some(id) = request_id {
                    fields.insert("request_id".into(), json!(id.as_str()));
                }
                Bytes::from(serde_json::Value::Object(fields).to_string())
            }
        };
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(BACKEND_JSON));
        h.extend(extra);
        stamp(&mut resp, CacheStatus::NONE);
        resp
    }

    /// The message and wardgate's own fields of an error, and the headers it needs.
    fn detail(self, extra: &mut HeaderMap) -> Detail {
        match self {
            ApiError::BadParam(e) => own(e.message, &[("param", json!(e.param))]),
            ApiError::BadBody(msg) => own(msg, &[("param", json!("body"))]),
            ApiError::TooLarge { limit } => own(
                format!("request body is larger than {limit} bytes"),
                &[("limit", json!(limit))],
            ),
            ApiError::TooManyRows { rows, limit } => own(
                format!(
                    "the whole assembly is {rows} rows, more than one answer may hold ({limit}): \
                     ask by ward (wardNo) or paginate (page, size)"
                ),
                &[("rows", json!(rows)), ("limit", json!(limit))],
            ),
            ApiError::BodyTimeout => own("request body was not received in time".into(), &[]),
            ApiError::RateLimited {
                retry_after,
                limit,
                policy,
                limited_by,
                what,
            } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                put(extra, "retry-after", &secs.to_string());
                put(extra, "ratelimit-limit", &limit.to_string());
                put(extra, "ratelimit-remaining", "0");
                put(extra, "ratelimit-reset", &secs.to_string());
                put(extra, "ratelimit-policy", &policy);
                own(
                    format!("too many requests: over {what}"),
                    &[
                        ("retry_after_seconds", json!(secs)),
                        ("limited_by", json!(limited_by)),
                    ],
                )
            }
            ApiError::WardBudget {
                whose,
                budget,
                held,
            } => over_ward_budget(whose, budget, held, extra),
            ApiError::Unavailable {
                reason,
                retry_after,
            } => {
                let secs = retry_after.as_secs().max(1);
                put(extra, "retry-after", &secs.to_string());
                own(reason, &[("retry_after_seconds", json!(secs))])
            }
            ApiError::Upstream(UpstreamError::Status {
                status,
                content_type,
                body,
            }) => {
                // A definite upstream answer (404 for an unknown id, say) is relayed as it is.
                if let Some(ct) = content_type {
                    extra.insert(header::CONTENT_TYPE, ct);
                }
                if status.is_server_error() {
                    put(extra, "retry-after", "5");
                }
                Detail::Relayed(body)
            }
            ApiError::Upstream(e) => {
                // The app keeps its unsent changes and retries after this.
                put(extra, "retry-after", "5");
                own(e.to_string(), &[("retry_after_seconds", json!(5))])
            }
            ApiError::NotFound => own("not found".into(), &[]),
            ApiError::Unauthorized => {
                put(extra, "www-authenticate", "Bearer");
                own("a valid bearer token is required".into(), &[])
            }
            ApiError::MethodNotAllowed => own("method not allowed".into(), &[]),
        }
    }
}

/// What an error answer's body is made of.
enum Detail {
    /// The backend's own answer, relayed.
    Relayed(Bytes),
    /// wardgate's: the message, and its own fields beside Spring's.
    Own(String, serde_json::Map<String, serde_json::Value>),
}

/// wardgate's own error: its message and fields.
fn own(message: String, fields: &[(&str, serde_json::Value)]) -> Detail {
    let fields = fields.iter().map(|(k, v)| (k.to_string(), v.clone()));
    Detail::Own(message, fields.collect())
}

/// A 429 for a client past its distinct wards of the day (`budget`).
fn over_ward_budget(whose: &str, budget: u32, held: u64, extra: &mut HeaderMap) -> Detail {
    // The budget renews at midnight UTC.
    let secs = 86_400 - EpochMs::now().0.div_euclid(1000).rem_euclid(86_400);
    put(extra, "retry-after", &secs.to_string());
    let message = format!(
        "daily ward budget: this {whose} has read {held} distinct wards today, its budget is \
         {budget}; the wards already read stay available"
    );
    let fields = [
        ("retry_after_seconds".to_string(), json!(secs)),
        (
            "limited_by".to_string(),
            json!(format!("{whose}_ward_budget")),
        ),
        ("budget".to_string(), json!(budget)),
    ];
    Detail::Own(message, fields.into_iter().collect())
}

fn put(h: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// What every response carries: the cache result (`X-Cache`, which the access log and the
/// metrics read back) and the version (canaries are told apart).
pub fn stamp<B>(resp: &mut Response<B>, cache: CacheStatus) {
    let h = resp.headers_mut();
    h.insert(X_CACHE, HeaderValue::from_static(cache.as_str()));
    h.insert(X_VERSION, VERSION_VALUE);
}

/// The cache result `stamp` recorded on a response. Read back from its header rather than
/// kept as a typed extension: the first extension costs a response three allocations.
pub fn cache_status<B>(resp: &Response<B>) -> CacheStatus {
    resp.headers()
        .get(X_CACHE)
        .and_then(|v| CacheStatus::of_str(v.to_str().ok()?))
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
pub(crate) struct Fnv(u64);

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

/// How a cached answer is represented: what `cached_response` needs besides the body.
pub(crate) struct Representation {
    pub etag: String,
    pub gzip: bool,
    pub content_type: HeaderValue,
    /// `X-Snapshot-Time` for snapshot answers.
    pub snapshot_time: Option<EpochMs>,
}

/// Common to snapshot and blob answers: encoding, validators, `304`.
pub(crate) fn cached_response(
    req: &HeaderMap,
    rep: Representation,
    cache: CacheStatus,
    body: impl FnOnce() -> (Body, usize),
) -> Response<Body> {
    let fresh = not_modified(req, &rep.etag);
    let (body, len) = if fresh { (empty(), 0) } else { body() };
    let mut resp = Response::new(body);
    // Room for its 11 headers and CORS's four: one allocation, not two regrowths, per hit.
    *resp.headers_mut() = HeaderMap::with_capacity(16);
    if fresh {
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = resp.headers_mut();
    if let Ok(etag) = HeaderValue::from_maybe_shared(Bytes::from(rep.etag.into_bytes())) {
        h.insert(header::ETAG, etag); // the tag's own buffer, not a copy
    }
    h.insert(header::VARY, VARY_ENCODING);
    h.insert(header::CACHE_CONTROL, NO_CACHE);
    if let Some(t) = rep.snapshot_time {
        h.insert(X_SNAPSHOT_TIME, HeaderValue::from(t.0));
        // Seconds since the rows were read (RFC 9111 §5.1): what a STALE answer's client sees.
        let age = t.age_ms().max(0) / 1000;
        h.insert(header::AGE, HeaderValue::from(age));
    }
    if !fresh {
        h.insert(header::CONTENT_TYPE, rep.content_type);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        if rep.gzip {
            h.insert(header::CONTENT_ENCODING, GZIP);
        }
    }
    stamp(&mut resp, cache);
    resp
}

/// Loose rows (outside whole chunks) above this many bytes make a gzip answer worth
/// compressing once, rather than framing them uncompressed.
const DERIVE_ABOVE: usize = 16 << 10;

/// The head and tail around `count` selected rows: the legacy array, or the page envelope as
/// the backend's `HashMap` serialises it, where `hasMore` is `rows == size`
/// (docs/contract.md).
pub(crate) fn envelope(page: Option<Page>, count: usize) -> (Bytes, Bytes) {
    match page {
        Some(p) => (
            Bytes::from(format!(
                "{{\"size\":{},\"hasMore\":{},\"page\":{},\"citizens\":[",
                p.size,
                count as u64 == u64::from(p.size),
                p.page
            )),
            Bytes::from_static(b"]}"),
        ),
        None => (Bytes::from_static(b"["), Bytes::from_static(b"]")),
    }
}

fn frame(q: &CitizensQuery, picked: &Picked) -> (Bytes, Bytes) {
    envelope(q.page, picked.count)
}

/// A citizens read answered from a snapshot.
///
/// Full wards in gzip are stored bytes. Other gzip selections are derived once per snapshot
/// and kept in the cache's derived budget: framed from stored pieces when few rows lie outside
/// whole chunks, else compressed once, off the async workers. Identity answers are inflated
/// from the chunks as they are sent.
pub async fn snapshot_answer(
    store: &Arc<Cache>,
    snap: Arc<Snapshot>,
    q: &CitizensQuery,
    req: &HeaderMap,
    cache: CacheStatus,
) -> Result<Response<Body>, ApiError> {
    let q = &*tiered(q, snap.newest_change());
    let gzip = accepts_gzip(req);
    let variant = {
        use std::hash::{Hash, Hasher};
        let mut h = Fnv::default();
        (&q.booths, q.since_ms, q.page).hash(&mut h);
        h.finish()
    };
    let rep = Representation {
        etag: etag_of(&snap.tag, variant, gzip),
        gzip,
        content_type: store.citizens_content_type(),
        snapshot_time: Some(snap.built_at),
    };
    if not_modified(req, &rep.etag) {
        return Ok(cached_response(req, rep, cache, || (empty(), 0)));
    }
    if !gzip {
        let body = if q.is_full_ward() {
            snap.full_identity()
        } else {
            let picked = snap.pick(&selection(q));
            let (head, tail) = frame(q, &picked);
            snap.identity(&picked, head, tail)
        };
        let n = body.len();
        return Ok(cached_response(req, rep, cache, || {
            (identity_body(body), n)
        }));
    }
    let body = if q.is_full_ward() {
        snap.full_gzip()
    } else {
        let make = || derive_gzip(snap.clone(), q.clone());
        match store.derived_answer(snap.id, variant, make).await {
            Ok(b) => b,
            Err(e) => return Err(unreadable(&snap, e)),
        }
    };
    let n = body.len();
    Ok(cached_response(req, rep, cache, || (full(body), n)))
}

/// `"<tag>-<variant in hex>[-gz]"`, as `format!` would write it, without `core::fmt`: every
/// snapshot answer names one.
fn etag_of(tag: &str, variant: u64, gzip: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut etag = String::with_capacity(tag.len() + 24);
    etag.push('"');
    etag.push_str(tag);
    etag.push('-');
    let digits = (64 - variant.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        etag.push(char::from(HEX[(variant >> (4 * i) & 0xf) as usize]));
    }
    if gzip {
        etag.push_str("-gz");
    }
    etag.push('"');
    etag
}

/// An identity answer's body: rows inflated from their chunks as the client reads.
fn identity_body(body: IdentityBody) -> Body {
    identity_bodies(vec![body])
}

/// Identity answers of several snapshots, one after the other (an assembly's wards).
pub(crate) fn identity_bodies(bodies: Vec<IdentityBody>) -> Body {
    let parts = bodies.into_iter().flatten();
    let frames = parts.map(|part| part.map(Frame::data).map_err(BoxError::from));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// A body of parts sent as they are (an assembled gzip member).
pub(crate) fn parts_body(parts: Vec<Bytes>) -> Body {
    let frames = parts.into_iter().map(|b| Ok::<_, BoxError>(Frame::data(b)));
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// A snapshot whose stored bytes do not inflate: it was checked when built or loaded, so this
/// is memory gone bad; the client is told to retry rather than sent a wrong answer.
pub(crate) fn unreadable(snap: &Snapshot, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(ward = %snap.key, error = %e, "snapshot unreadable");
    ApiError::Unavailable {
        reason: format!("cached ward {} is unreadable: {e}", snap.key),
        retry_after: Duration::from_secs(1),
    }
}

/// `q` with its delta start moved back to its tier before `anchor`, a ward's newest change
/// (see `snapshot::tiers`): phones that each send their own `date` share a few answers.
pub(crate) fn tiered(q: &CitizensQuery, anchor: EpochMs) -> Cow<'_, CitizensQuery> {
    match q.since_ms {
        Some(since) => Cow::Owned(CitizensQuery {
            since_ms: Some(tier_start(since, anchor)),
            ..q.clone()
        }),
        None => Cow::Borrowed(q),
    }
}

pub(crate) fn selection(q: &CitizensQuery) -> Selection<'_> {
    Selection {
        booths: q.booths.as_ref(),
        since_ms: q.since_ms,
        page: q.page,
    }
}

/// A gzip selection that is not stored bytes, made once per snapshot off the async workers
/// (its loose rows are inflated from their chunks): framed from stored pieces when few loose
/// rows remain, else compressed whole.
/// Returns the answer, and whether making it took a compression (counted: the hot path should
/// not compress).
async fn derive_gzip(
    snap: Arc<Snapshot>,
    q: CitizensQuery,
) -> Result<(Bytes, bool), SnapshotError> {
    let made = crate::background::run(move || {
        let picked = snap.pick(&selection(&q));
        let (head, tail) = frame(&q, &picked);
        if snap.loose_bytes(&picked) <= DERIVE_ABOVE {
            let mut a = Assembler::gzip();
            a.literal(&head);
            snap.render_gzip(&picked, &mut a)?;
            a.literal(&tail);
            let (parts, n) = a.finish();
            return Ok((Bytes::from(concat(&parts, n)), false));
        }
        let identity = snap.identity(&picked, head, tail).collect()?;
        Ok((crate::gzip::gzip_whole(&identity), true))
    })
    .await;
    made.unwrap_or(Err(SnapshotError::Corrupt("derivation task failed")))
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
        content_type: HeaderValue::from_str(&blob.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static(BACKEND_JSON)),
        snapshot_time: None,
    };
    cached_response(req, rep, cache, || {
        let b = if gzip {
            blob.gzip.clone()
        } else {
            blob.identity.clone()
        };
        let n = b.len();
        (full(b), n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_read_as_format_writes_them() {
        for (tag, variant, gzip) in [
            ("k-1", 0u64, true),
            ("k-1", 0xf, false),
            ("abc", 0x10, true),
            ("x", u64::MAX, false),
            ("t", 0x0123_4567_89ab_cdef, true),
        ] {
            let want = format!("\"{tag}-{variant:x}{}\"", if gzip { "-gz" } else { "" });
            assert_eq!(etag_of(tag, variant, gzip), want);
        }
    }

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
        .into_response("/open/volunteer/citizens", None);
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers()["content-type"],
            "application/json;charset=UTF-8"
        );
        let r = ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
            limit: 10,
            policy: "10;w=1".into(),
            limited_by: "address_ceiling",
            what: "the address ceiling",
        }
        .into_response("/", None);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let r = ApiError::Upstream(UpstreamError::Timeout(Duration::from_secs(1)))
            .into_response("/", None);
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
