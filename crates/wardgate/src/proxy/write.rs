//! Writes: a sync POST with changes, forwarded with its body untouched and answered 2xx only if
//! the backend answered 2xx.
//!
//! A write to a ward wardgate holds goes with a **cheap read**: the same ward, every booth, no
//! page, `date` just before the snapshot's newest change (`Cache::cheap_read_date`), which the
//! backend answers from its download index with the few rows changed since. Those rows patch
//! the snapshot (`cache::write`), and the client is answered from the patched snapshot, for its
//! own query, as the backend would have answered it. A write that cannot be patched costs one
//! full read of its ward; a whole-assembly write is forwarded with its own query, as before.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response};

use super::sync::validate_sync_body;
use super::{relay, Answer, ConnInfo, Proxy, Trace};
use crate::body::{full, Body};
use crate::cache::{CacheStatus, WriteScope};
use crate::params::{CitizensQuery, Scope};
use crate::respond::ApiError;
use crate::route::CITIZENS_PATH;
use crate::snapshot::Refused;
use crate::time::EpochMs;
use crate::upstream::{self as up, UpstreamError};

impl Proxy {
    /// A sync POST with changes (phases 1–4 done): forwarded, then answered.
    pub(super) async fn write(
        &self,
        q: CitizensQuery,
        parts: http::request::Parts,
        body: Bytes,
        ip: std::net::IpAddr,
        conn: ConnInfo,
        trace: &mut Trace,
    ) -> Answer {
        let written = validate_sync_body(&body)?;
        let mut headers = forwarded_headers(parts.headers.clone(), ip, conn);
        let Scope::Ward(w) = &q.scope else {
            return self.write_as_sent(&q, headers, body, trace).await;
        };
        headers.remove(header::ACCEPT_ENCODING); // wardgate reads this answer
        let cache = &self.shared.cache;
        let base = cache.patch_base(w).await;
        let cheap = CitizensQuery {
            scope: q.scope.clone(),
            booths: None,
            since_ms: Some(match &base {
                Some(b) => cache.cheap_read_date(b),
                // Nothing to patch: the answer is not used, so ask for as little as possible.
                None => EpochMs::now().0,
            }),
            page: None,
        };
        let sent = EpochMs::now();
        let resp = self.send_write(&cheap, &headers, &body, trace).await?;
        if !resp.status().is_success() {
            return Ok(failed_write(resp));
        }
        let answer = self.upstream().read_body(resp.into_body()).await;
        let at = EpochMs::now();
        let Some(base) = base else {
            // Nothing held to patch: the client's read builds the ward, after the write.
            cache.acknowledge(&WriteScope::Ward(w.clone()), at).await;
            return self.read(q, &parts.headers, None).await;
        };
        let answer = answer.map_err(|_| Refused::Unreadable);
        let patched = cache.patch_after_write(base, answer, written, sent, at);
        match patched.await {
            Some(s) => {
                let q = self.widened(q);
                self.ward_answer(&q, s, &parts.headers, CacheStatus::PATCHED)
                    .await
            }
            // Superseded (`patch_after_write`): this read builds the ward afresh.
            None => self.read(q, &parts.headers, None).await,
        }
    }

    /// A whole-assembly write (its rows' wards are unknown): forwarded with the client's query
    /// and relayed; on success every ward of the assembly is superseded.
    async fn write_as_sent(
        &self,
        q: &CitizensQuery,
        headers: http::HeaderMap,
        body: Bytes,
        trace: &mut Trace,
    ) -> Answer {
        let resp = self.send_write(q, &headers, &body, trace).await?;
        if !resp.status().is_success() {
            return Ok(failed_write(resp));
        }
        if let Scope::Assembly(a) = &q.scope {
            let scope = WriteScope::Assembly(a.clone());
            self.shared.cache.acknowledge(&scope, EpochMs::now()).await;
        }
        Ok(relay(resp))
    }

    /// Sends the write with `q` as its read part. Retried once only when the connection was
    /// never made: the backend certainly did not see the write. Any other failure may have
    /// applied it, so the app must decide.
    async fn send_write(
        &self,
        q: &CitizensQuery,
        headers: &http::HeaderMap,
        body: &Bytes,
        trace: &mut Trace,
    ) -> Result<Response<Body>, ApiError> {
        let pq = format!("{CITIZENS_PATH}?{}", q.to_upstream_query());
        let start = Instant::now();
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut req = Request::new(full(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = self.upstream().uri(&pq).map_err(ApiError::Upstream)?;
            *req.headers_mut() = headers.clone();
            match self.upstream().send(req).await {
                Err(UpstreamError::Connect(e)) if attempt == 1 => {
                    tracing::warn!(error = %e, "write not delivered (connect failed); retrying once");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        };
        trace.upstream = Some(start.elapsed());
        resp.map_err(ApiError::Upstream)
    }
}

/// The client's headers as the backend gets them with a write: hop-by-hop ones removed,
/// forwarding headers set, a JSON body declared.
fn forwarded_headers(
    mut headers: http::HeaderMap,
    ip: std::net::IpAddr,
    conn: ConnInfo,
) -> http::HeaderMap {
    up::strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    up::add_forwarded(&mut headers, ip, if conn.tls { "https" } else { "http" });
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// A write the backend refused or failed, relayed. A 5xx here may come from a load balancer in
/// front of the backend, which says nothing of when to retry: the app keeps its changes, and
/// is told when to send them again.
fn failed_write(resp: Response<Body>) -> Response<Body> {
    let mut resp = relay(resp);
    if resp.status().is_server_error() && !resp.headers().contains_key(header::RETRY_AFTER) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}
