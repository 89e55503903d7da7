//! Request ids: `X-Request-Id` taken from a trusted proxy or made here, carried by a request's task to the backend, its answer and its log line.
//!
//! One id follows a request from the phone to the backend's log: it is on the answer (errors
//! included), in the access line, and on every backend request the request causes, a build it
//! starts included (a coalesced build carries the id of the request that started it, and its
//! log lines name it). An incoming id is taken only from a trusted proxy (the peer test
//! `limit::client_ip` makes) and only when it is well-formed: at most [`MAX_LEN`] characters of
//! `[A-Za-z0-9._:-]`, which need no escaping in a header, a JSON string or a log line. Anything
//! else is replaced, never echoed.
//!
//! A made id is 32 lowercase hex digits, as nginx's `$request_id` and a W3C trace-id: a random
//! per-process prefix (16 digits) and a counter (16 digits). Making one costs an atomic
//! increment and a 32-byte header value, no system call: hits are served at ~30k/s. Within one
//! instance ids count up, which tells an operator their order; the count since start is all
//! they reveal.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header, in requests and answers alike.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Its spelling in `Access-Control-Expose-Headers`.
pub const HEADER_CASED: &str = "X-Request-Id";

/// Longest incoming id accepted (a UUID is 36, a W3C traceparent 55).
pub const MAX_LEN: usize = 64;

tokio::task_local! {
    /// The id of the request this task serves (or the build it started).
    static CURRENT: RequestId;
}

/// A request's id: well-formed by construction (see the module's comment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id of a request: its `X-Request-Id` when the peer is a trusted proxy and the value
    /// is well-formed (exactly one, of the allowed characters); else a new one.
    pub fn of(headers: &HeaderMap, from_trusted_proxy: bool) -> RequestId {
        if from_trusted_proxy {
            let mut sent = headers.get_all(HEADER).iter();
            if let (Some(v), None) = (sent.next(), sent.next()) {
                if let Some(id) = RequestId::parse(v) {
                    return id;
                }
            }
        }
        RequestId::generate()
    }

    /// `v` as an id, if it is well-formed.
    pub fn parse(v: &HeaderValue) -> Option<RequestId> {
        let b = v.as_bytes();
        let ok = (1..=MAX_LEN).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
        ok.then(|| RequestId(v.clone()))
    }

    /// A new id: this process's prefix and the next count.
    pub fn generate() -> RequestId {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        static PREFIX: OnceLock<u64> = OnceLock::new();
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let prefix = *PREFIX.get_or_init(random_u64);
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], prefix);
        hex_into(&mut buf[16..], n);
        // Hex digits are always a valid header value; the fallback is never taken.
        let v = HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"));
        RequestId(v)
    }

    pub fn as_str(&self) -> &str {
        // Checked (or made) of ASCII: `to_str` cannot fail.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The id of the request (or build) the calling task serves, if any.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(RequestId::clone).ok()
    }

    /// Sets `X-Request-Id` on a backend request to the id of the request (or build) the calling
    /// task serves; without one, removes any: the backend never sees an id a client wrote.
    pub fn forward(h: &mut HeaderMap) {
        let put = CURRENT.try_with(|id| {
            h.insert(HEADER, id.0.clone());
        });
        if put.is_err() {
            h.remove(HEADER);
        }
    }

    /// Runs `f` as the task of this id: the backend requests it makes carry it
    /// (`upstream`), and so does a build it starts (`cache`).
    pub fn scope<F: Future>(self, f: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random number for the prefix, from the randomly keyed hasher std seeds from the OS once
/// per thread (no dependency, no system call per id); the time and pid are mixed in so that
/// two instances started alike still differ.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or_default());
    h.finish()
}

/// `n` as 16 lowercase hex digits into `out` (16 bytes).
fn hex_into(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn made_ids_are_32_hex_digits_and_distinct() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 32);
            assert!(id.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(a, b);
        assert_eq!(a.as_str()[..16], b.as_str()[..16], "one prefix per process");
    }

    #[test]
    fn a_well_formed_id_from_a_trusted_proxy_is_kept() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let id = RequestId::of(&headers(&[uuid]), true);
        assert_eq!(id.as_str(), uuid);
        let max = "a".repeat(MAX_LEN);
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_str(&max).unwrap());
        assert_eq!(RequestId::of(&h, true).as_str(), max);
        assert_eq!(
            RequestId::of(&headers(&["lb:1.2_3-x"]), true).as_str(),
            "lb:1.2_3-x"
        );
    }

    #[test]
    fn anything_else_is_replaced() {
        let too_long = "a".repeat(MAX_LEN + 1);
        let mut long = HeaderMap::new();
        long.insert(HEADER, HeaderValue::from_str(&too_long).unwrap());
        let cases = [
            (headers(&["chosen-by-the-phone"]), false),
            (headers(&[""]), true),
            (headers(&["two words"]), true),
            (headers(&["quote\"d"]), true),
            (headers(&["{\"json\":1}"]), true),
            (headers(&["a", "b"]), true),
            (long, true),
        ];
        for (h, trusted) in cases {
            let id = RequestId::of(&h, trusted);
            assert_eq!(id.as_str().len(), 32, "{h:?} trusted={trusted}");
            assert!(h
                .get_all(HEADER)
                .iter()
                .all(|v| v.as_bytes() != id.as_str().as_bytes()));
        }
        let bytes = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert!(RequestId::parse(&bytes).is_none());
    }

    #[tokio::test]
    async fn the_id_rides_its_task() {
        assert!(RequestId::current().is_none());
        let id = RequestId::generate();
        let mut h = headers(&["from-a-client"]);
        let seen = id
            .clone()
            .scope(async {
                RequestId::forward(&mut h);
                RequestId::current()
            })
            .await;
        assert_eq!(seen.as_ref(), Some(&id));
        assert_eq!(
            h.get_all(HEADER).iter().collect::<Vec<_>>(),
            [id.header_value()]
        );
        RequestId::forward(&mut h);
        assert!(
            !h.contains_key(HEADER),
            "outside a request, none is forwarded"
        );
    }
}
