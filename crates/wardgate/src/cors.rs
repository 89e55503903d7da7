//! CORS parity with the backend: the `Access-Control-*` headers a browser needs, on every answer of a guarded route.
//!
//! The app runs in a WebView whose requests are cross-origin, so a browser refuses any answer
//! that lacks the headers the backend would have sent: cached answers, wardgate's own errors
//! (429 and 503 included) and preflights alike. In `learned` mode (the default) wardgate gives
//! each `Origin` what the backend gave it: learned from the backend's answers that pass through
//! (writes, preflights, forwarded reads), or asked for with one preflight of its own when an
//! `Origin` is new. Preflights are relayed, and replayed from what was learned while the
//! backend is down. What one instance learns it shares through Redis, so an instance started
//! during a backend outage answers preflights too. In `configured` mode the `[cors]` settings
//! say it all.
//!
//! **Invariant:** headers learned for one `Origin` are only ever given to that `Origin`; an
//! echoed origin with credentials stays echoed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{
    self, HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{Method, Request, Response, StatusCode};

use crate::body::{empty, Body};
use crate::cache::l2::L2;
use crate::cache::CacheStatus;
use crate::config::CorsConfig;
use crate::respond;
use crate::route::Guarded;
use crate::upstream::Upstream;

/// Most origins (per table) remembered. A fleet of WebViews sends a handful; a client that
/// cycles `Origin` values only makes wardgate forget, and pays a preflight of its own per
/// origin out of its rate limit.
const MAX_ORIGINS: usize = 1024;

/// How long wardgate waits for the backend's answer to its own preflight.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// After a preflight of its own failed, wardgate asks again only this much later: a backend
/// that is down must not add a probe's wait to every answer.
const PROBE_BACKOFF: Duration = Duration::from_secs(5);

/// How long the fleet keeps what was learned in Redis: past the longest outage to ride out,
/// and renewed whenever the backend answers something new.
const SHARED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The CORS headers of an actual (non-preflight) answer for one route and `Origin`. Empty when
/// the backend allows that origin nothing: the browser is refused as the backend refuses it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Allow(Vec<(HeaderName, HeaderValue)>);

impl Allow {
    /// The CORS headers among an answer's (Vary only when it names a CORS request header).
    fn of(h: &HeaderMap) -> Allow {
        let mut out = Vec::new();
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            out.extend(h.get_all(&name).iter().map(|v| (name.clone(), v.clone())));
        }
        let cors_vary = |v: &&HeaderValue| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("origin"))
        };
        out.extend(
            h.get_all(VARY)
                .iter()
                .filter(cors_vary)
                .map(|v| (VARY, v.clone())),
        );
        Allow(out)
    }

    fn map(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in &self.0 {
            h.append(n.clone(), v.clone());
        }
        h
    }

    /// Puts these headers on an answer; `Vary` is added to, never replaced.
    pub fn apply(&self, h: &mut HeaderMap) {
        for (name, value) in &self.0 {
            if *name == VARY {
                h.append(VARY, value.clone());
            } else {
                h.insert(name.clone(), value.clone());
            }
        }
    }
}

/// A preflight's answer as the backend gave it, to give again while the backend is down.
#[derive(Clone, Debug)]
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
}

type PreflightKey = (Guarded, HeaderValue, String, String);

/// What the backend was seen to answer, per route and `Origin`.
pub struct Cors {
    actual: Mutex<HashMap<(Guarded, HeaderValue), Allow>>,
    preflights: Mutex<HashMap<PreflightKey, Stored>>,
    probe_failed: Mutex<Option<Instant>>,
    /// Where the fleet shares what it learned.
    l2: Option<Arc<L2>>,
}

/// A learned answer as the fleet shares it in Redis: the question it answers (checked on
/// reading, so a hash collision can never give one origin another's headers), its status
/// and its CORS headers.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    question: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Record {
    fn new(question: String, status: StatusCode, h: &HeaderMap) -> Record {
        let headers = h
            .iter()
            .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        Record {
            question,
            status: status.as_u16(),
            headers,
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in &self.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(n.as_str()), HeaderValue::from_str(v)) {
                h.append(n, v);
            }
        }
        h
    }
}

/// The Redis name of a learned answer: its kind and a stable hash of its question.
fn shared_name(kind: &str, question: &str) -> String {
    use std::hash::Hasher;
    let mut h = respond::Fnv::default();
    h.write(question.as_bytes());
    format!("{kind}:{:016x}", h.finish())
}

fn actual_question(route: Guarded, origin: &HeaderValue) -> String {
    format!("{route:?}|{}", String::from_utf8_lossy(origin.as_bytes()))
}

fn preflight_question(key: &PreflightKey) -> String {
    let (route, origin, method, asked) = key;
    let origin = String::from_utf8_lossy(origin.as_bytes());
    format!("{route:?}|{origin}|{method}|{asked}")
}

/// The request's `Origin`, when it has one (only cross-origin requests need CORS headers).
pub fn origin(h: &HeaderMap) -> Option<HeaderValue> {
    h.get(ORIGIN).cloned()
}

/// Adds `name` to `Access-Control-Expose-Headers` on a cross-origin answer (one that carries
/// `Access-Control-Allow-Origin`), so a script may read that header of wardgate's own whatever
/// the backend exposes; unless it is listed already, or everything is (`*`, which browsers
/// take for a wildcard only without credentials).
pub fn expose(h: &mut HeaderMap, name: &'static str) {
    if !h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    let credentials = h.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS);
    let listed: Vec<&str> = h
        .get_all(ACCESS_CONTROL_EXPOSE_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    let covered = |n: &&str| n.eq_ignore_ascii_case(name) || (*n == "*" && !credentials);
    if listed.iter().any(covered) {
        return;
    }
    let value = if listed.is_empty() {
        Ok(HeaderValue::from_static(name))
    } else {
        HeaderValue::from_str(&format!("{}, {name}", listed.join(", ")))
    };
    if let Ok(v) = value {
        h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
    }
}

/// The preflight's question: origin, method, and the requested headers in one spelling.
fn preflight_key(route: Guarded, req: &HeaderMap) -> Option<PreflightKey> {
    let origin = req.get(ORIGIN)?.clone();
    let method = req
        .get(ACCESS_CONTROL_REQUEST_METHOD)?
        .to_str()
        .ok()?
        .to_string();
    let mut asked: Vec<String> = req
        .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    asked.sort();
    asked.dedup();
    Some((route, origin, method, asked.join(",")))
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, k: K, v: V) {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    if m.len() >= MAX_ORIGINS && !m.contains_key(&k) {
        m.clear();
    }
    m.insert(k, v);
}

impl Cors {
    pub fn new(l2: Option<Arc<L2>>) -> Cors {
        Cors {
            actual: Mutex::default(),
            preflights: Mutex::default(),
            probe_failed: Mutex::default(),
            l2,
        }
    }

    /// Learns from an answer the backend gave a request from `origin` on `route`. Answers of
    /// 5xx are not learned from: they may come from a load balancer, not the backend.
    pub fn learn_answer(&self, route: Guarded, origin: &HeaderValue, resp: &Response<Body>) {
        if resp.status().is_server_error() {
            return;
        }
        let allow = Allow::of(resp.headers());
        if self.known(route, origin).as_ref() != Some(&allow) {
            self.share(
                "actual",
                actual_question(route, origin),
                StatusCode::OK,
                &allow.map(),
            );
        }
        bounded_insert(&self.actual, (route, origin.clone()), allow);
    }

    /// Writes a learned answer to Redis for the fleet, in the background.
    fn share(&self, kind: &'static str, question: String, status: StatusCode, h: &HeaderMap) {
        let Some(l2) = self.l2.clone() else { return };
        let name = shared_name(kind, &question);
        let Ok(data) = serde_json::to_vec(&Record::new(question, status, h)) else {
            return;
        };
        tokio::spawn(async move { l2.put_shared("cors", &name, data, SHARED_TTL).await });
    }

    /// A learned answer another instance shared, if it answers exactly `question`.
    async fn shared(&self, kind: &str, question: &str) -> Option<Record> {
        let l2 = self.l2.as_ref()?;
        let data = l2.get_shared("cors", &shared_name(kind, question)).await?;
        let record: Record = serde_json::from_slice(&data).ok()?;
        (record.question == question).then_some(record)
    }

    /// Learns from the backend's answer to a preflight: the answer itself, to replay, and the
    /// origin's actual headers when no actual answer taught them yet.
    pub fn learn_preflight(&self, route: Guarded, req: &HeaderMap, resp: &Response<Body>) {
        let Some(key) = preflight_key(route, req) else {
            return;
        };
        if resp.status().is_server_error() {
            return;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in resp.headers() {
            let n = name.as_str();
            if n.starts_with("access-control-") || name == VARY || name == header::ALLOW {
                headers.append(name.clone(), value.clone());
            }
        }
        let origin = key.1.clone();
        let mut actual = Allow::of(resp.headers());
        actual
            .0
            .retain(|(n, _)| *n != ACCESS_CONTROL_EXPOSE_HEADERS);
        self.share(
            "preflight",
            preflight_question(&key),
            resp.status(),
            &headers,
        );
        let stored = Stored {
            status: resp.status(),
            headers,
        };
        bounded_insert(&self.preflights, key, stored);
        let mut m = self.actual.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(&(route, origin.clone())) {
            let question = actual_question(route, &origin);
            self.share("actual", question, StatusCode::OK, &actual.map());
            m.insert((route, origin), actual);
        }
    }

    /// The backend's answer to this very preflight, as it was last given (here, or to another
    /// instance of the fleet).
    pub async fn replay_preflight(
        &self,
        route: Guarded,
        req: &HeaderMap,
    ) -> Option<Response<Body>> {
        let key = preflight_key(route, req)?;
        let local = {
            let m = self.preflights.lock().unwrap_or_else(|p| p.into_inner());
            m.get(&key).cloned()
        };
        let stored = match local {
            Some(s) => s,
            None => {
                let r = self.shared("preflight", &preflight_question(&key)).await?;
                let status = StatusCode::from_u16(r.status).ok()?;
                let stored = Stored {
                    status,
                    headers: r.headers(),
                };
                bounded_insert(&self.preflights, key, stored.clone());
                stored
            }
        };
        let mut resp = Response::new(empty());
        *resp.status_mut() = stored.status;
        *resp.headers_mut() = stored.headers;
        respond::stamp(&mut resp, CacheStatus::STALE);
        Some(resp)
    }

    /// What was learned for `origin` on `route`, here.
    pub fn known(&self, route: Guarded, origin: &HeaderValue) -> Option<Allow> {
        let m = self.actual.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&(route, origin.clone())).cloned()
    }

    /// What was learned for `origin` on `route`, here or by another instance.
    pub async fn known_anywhere(&self, route: Guarded, origin: &HeaderValue) -> Option<Allow> {
        if let Some(a) = self.known(route, origin) {
            return Some(a);
        }
        let r = self
            .shared("actual", &actual_question(route, origin))
            .await?;
        let allow = Allow::of(&r.headers());
        bounded_insert(&self.actual, (route, origin.clone()), allow.clone());
        Some(allow)
    }

    /// Asks the backend with a preflight of wardgate's own (no handler runs for it, so it
    /// costs the backend no query), and learns its answer. `None` when the backend is down.
    pub async fn probe(
        &self,
        upstream: &Upstream,
        route: Guarded,
        origin: &HeaderValue,
    ) -> Option<Allow> {
        let failed_at = *self.probe_failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed_at.is_some_and(|t| t.elapsed() < PROBE_BACKOFF) {
            return None;
        }
        let mut req = Request::new(empty());
        *req.method_mut() = Method::OPTIONS;
        *req.uri_mut() = upstream.uri(route.probe_path()).ok()?;
        let h = req.headers_mut();
        h.insert(ORIGIN, origin.clone());
        h.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("GET"),
        );
        let asked = h.clone();
        let resp = match tokio::time::timeout(PROBE_TIMEOUT, upstream.send(req)).await {
            Ok(Ok(resp)) if !resp.status().is_server_error() => resp,
            outcome => {
                let why = match outcome {
                    Ok(Ok(resp)) => format!("status {}", resp.status()),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
                };
                tracing::warn!(route = ?route, error = %why, "cannot learn the backend's CORS headers");
                *self.probe_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                return None;
            }
        };
        self.learn_preflight(route, &asked, &resp);
        self.known(route, origin)
    }
}

/// The headers `[cors]` gives `origin` on an actual answer (empty if it is not allowed).
pub fn configured(cfg: &CorsConfig, origin: &HeaderValue) -> Allow {
    let any = cfg.allowed_origins.iter().any(|o| o == "*");
    let listed = cfg
        .allowed_origins
        .iter()
        .any(|o| o.as_bytes() == origin.as_bytes());
    let mut out = Vec::new();
    if any && !cfg.allow_credentials {
        out.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
    } else if any || listed {
        out.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
        if cfg.allow_credentials {
            out.push((
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
    }
    if !out.is_empty() && !cfg.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cfg.expose_headers.join(", ")) {
            out.push((ACCESS_CONTROL_EXPOSE_HEADERS, v));
        }
    }
    out.push((VARY, HeaderValue::from_static("Origin")));
    Allow(out)
}

/// wardgate's own answer to a preflight under `[cors]`: 200 with what may be sent, or 403 as
/// Spring refuses an origin or method it does not allow.
pub fn configured_preflight(cfg: &CorsConfig, req: &HeaderMap) -> Response<Body> {
    let allow = req
        .get(ORIGIN)
        .map(|o| configured(cfg, o))
        .unwrap_or_default();
    let method_ok = req
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .is_some_and(|m| matches!(m.as_bytes(), b"GET" | b"HEAD" | b"POST"));
    let allowed = allow
        .0
        .iter()
        .any(|(n, _)| *n == ACCESS_CONTROL_ALLOW_ORIGIN);
    let mut resp = Response::new(empty());
    if !allowed || !method_ok {
        *resp.status_mut() = StatusCode::FORBIDDEN;
    } else {
        let h = resp.headers_mut();
        allow.apply(h);
        h.remove(ACCESS_CONTROL_EXPOSE_HEADERS);
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,POST"),
        );
        if let Ok(v) = HeaderValue::from_str(&cfg.allow_headers.join(", ")) {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(cfg.max_age.0.as_secs()),
        );
    }
    respond::stamp(&mut resp, CacheStatus::NONE);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&'static str, &'static str)]) -> Response<Body> {
        let mut r = Response::new(empty());
        for (n, v) in headers {
            r.headers_mut().append(*n, HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn an_exposed_header_joins_the_backends_list_on_cross_origin_answers_only() {
        let exposed = |headers: &[(&'static str, &'static str)]| {
            let mut r = answer(headers);
            expose(r.headers_mut(), "X-Request-Id");
            let h = r.headers().get_all(ACCESS_CONTROL_EXPOSE_HEADERS);
            h.iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let acao = ("access-control-allow-origin", "*");
        assert!(
            exposed(&[]).is_empty(),
            "not cross-origin: nothing to expose"
        );
        assert_eq!(exposed(&[acao]), ["X-Request-Id"]);
        let theirs = ("access-control-expose-headers", "Content-Disposition");
        assert_eq!(
            exposed(&[acao, theirs]),
            ["Content-Disposition, X-Request-Id"]
        );
        let both = (
            "access-control-expose-headers",
            "content-disposition, x-request-id",
        );
        assert_eq!(
            exposed(&[acao, both]),
            ["content-disposition, x-request-id"]
        );
        let any = ("access-control-expose-headers", "*");
        assert_eq!(exposed(&[acao, any]), ["*"]);
        // With credentials `*` is a header's name, not a wildcard.
        let creds = ("access-control-allow-credentials", "true");
        assert_eq!(exposed(&[acao, creds, any]), ["*, X-Request-Id"]);
    }

    #[test]
    fn what_one_origin_learned_is_never_given_to_another() {
        let cors = Cors::new(None);
        let a = HeaderValue::from_static("http://a.example");
        let b = HeaderValue::from_static("http://b.example");
        let echoed = answer(&[
            ("access-control-allow-origin", "http://a.example"),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
            ("vary", "Accept-Encoding"),
        ]);
        cors.learn_answer(Guarded::Citizens, &a, &echoed);
        let got = cors.known(Guarded::Citizens, &a).unwrap();
        let mut h = HeaderMap::new();
        h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        got.apply(&mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://a.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            h.get_all(VARY).iter().count(),
            2,
            "Vary added to, not replaced"
        );
        assert!(cors.known(Guarded::Citizens, &b).is_none());
        assert!(cors.known(Guarded::Master, &a).is_none());
        // A load balancer's 502 teaches nothing.
        let mut lb = answer(&[]);
        *lb.status_mut() = StatusCode::BAD_GATEWAY;
        cors.learn_answer(Guarded::Citizens, &b, &lb);
        assert!(cors.known(Guarded::Citizens, &b).is_none());
    }

    #[test]
    fn preflights_are_replayed_for_the_same_question_only() {
        let cors = Cors::new(None);
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("http://a.example"));
        req.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("Content-Type, x-device-id"),
        );
        let resp = answer(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET,HEAD,POST"),
            ("access-control-max-age", "1800"),
            ("content-length", "0"),
        ]);
        cors.learn_preflight(Guarded::Citizens, &req, &resp);
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("x-device-id,content-type"),
        );
        let replay = |req: HeaderMap| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async { cors.replay_preflight(Guarded::Citizens, &req).await })
        };
        let again = replay(req.clone()).unwrap();
        assert_eq!(again.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(again.headers()["x-cache"], "STALE");
        assert!(!again.headers().contains_key("content-length"));
        // The actual answers' headers follow from it until an actual answer is seen.
        let o = HeaderValue::from_static("http://a.example");
        assert!(cors.known(Guarded::Citizens, &o).is_some());
        req.insert(ORIGIN, HeaderValue::from_static("http://b.example"));
        assert!(replay(req).is_none());
    }

    #[test]
    fn configured_origins_are_echoed_only_when_listed() {
        let cfg = CorsConfig {
            allowed_origins: vec!["http://localhost".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        };
        let mut h = HeaderMap::new();
        configured(&cfg, &HeaderValue::from_static("http://localhost")).apply(&mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost");
        let mut h = HeaderMap::new();
        configured(&cfg, &HeaderValue::from_static("http://evil.example")).apply(&mut h);
        assert!(!h.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("http://evil.example"));
        req.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert_eq!(configured_preflight(&cfg, &req).status(), 403);
        req.insert(ORIGIN, HeaderValue::from_static("http://localhost"));
        let ok = configured_preflight(&cfg, &req);
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()[ACCESS_CONTROL_MAX_AGE], "1800");
    }
}
