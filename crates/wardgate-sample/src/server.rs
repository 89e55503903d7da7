//! The origin's HTTP server (hyper 1, HTTP/1.1 and h2): options, connections and the test counters.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::params::DEFAULT_MAX_PAGE_SIZE;
use crate::routes::handle;
use crate::store::Store;

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
    /// How rows' `modifieddate` is written.
    pub dates: crate::voter::DateForm,
    /// How cross-origin requests are answered.
    pub cors: crate::answer::CorsMode,
}

impl Default for OriginOptions {
    fn default() -> Self {
        OriginOptions {
            latency: Duration::ZERO,
            max_page_size: DEFAULT_MAX_PAGE_SIZE,
            max_body_bytes: 16 * 1024 * 1024,
            dates: crate::voter::DateForm::EpochMs,
            cors: crate::answer::CorsMode::Any,
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
    /// Rows the citizens answers held, and their JSON bytes: what the reads cost the backend.
    pub citizens_rows: AtomicU64,
    pub citizens_bytes: AtomicU64,
    /// Citizens reads of whole wards or assemblies (`date=-1`, every booth, no page): the
    /// backend's most expensive answer.
    pub full_reads: AtomicU64,
    /// CORS preflights answered (no handler runs for them, as in Spring).
    pub preflights: AtomicU64,
    /// Master-data requests (states, constituencies, wards and booths, parties,
    /// settings, dashboard stats).
    pub master: AtomicU64,
    /// Requests being handled now, and the most ever handled at once (load-shedding tests).
    pub inflight: AtomicU64,
    pub max_inflight: AtomicU64,
    /// The latest requests, as the request log wrote them (`recent` in the stats).
    pub recent: Mutex<VecDeque<Seen>>,
}

/// How many of the latest requests the stats list.
const RECENT: usize = 64;

/// One request as the origin's request log saw it: what a Spring Boot backend's access log
/// (or a request-logging filter) writes, the `X-Request-Id` it was sent included.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub request_id: Option<String>,
}

/// Counts a request as in flight until dropped.
pub(crate) struct InFlight<'a>(&'a OriginStats);

impl<'a> InFlight<'a> {
    pub(crate) fn enter(s: &'a OriginStats) -> InFlight<'a> {
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
    /// Keeps `seen` among the latest requests.
    pub(crate) fn saw(&self, seen: Seen) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(seen);
    }

    pub(crate) fn json(&self) -> Vec<u8> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let recent = serde_json::to_string(&*recent).unwrap_or_else(|_| "[]".into());
        format!(
            "{{\"requests\":{},\"citizens_reads\":{},\"citizens_writes\":{},\"citizens_rows\":{},\"citizens_bytes\":{},\"full_reads\":{},\"master\":{},\"preflights\":{},\"max_inflight\":{},\"recent\":{recent}}}",
            self.requests.load(Ordering::Relaxed),
            self.citizens_reads.load(Ordering::Relaxed),
            self.citizens_writes.load(Ordering::Relaxed),
            self.citizens_rows.load(Ordering::Relaxed),
            self.citizens_bytes.load(Ordering::Relaxed),
            self.full_reads.load(Ordering::Relaxed),
            self.master.load(Ordering::Relaxed),
            self.preflights.load(Ordering::Relaxed),
            self.max_inflight.load(Ordering::Relaxed)
        )
        .into_bytes()
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.citizens_reads,
            &self.citizens_writes,
            &self.citizens_rows,
            &self.citizens_bytes,
            &self.full_reads,
            &self.master,
            &self.preflights,
            &self.max_inflight,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) opts: OriginOptions,
    pub(crate) stats: OriginStats,
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
