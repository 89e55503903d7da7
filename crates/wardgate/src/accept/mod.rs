//! The accept stage: listeners, TLS, HTTP/1.1 and h2 connections, limits and graceful drain.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::body::Incoming;
use hyper::service::{service_fn, HttpService};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use wardgate_sealed::SendfileStream;

use crate::body::Body;
use crate::config::{Config, Live};
use crate::idle::IdleIo;
use crate::metrics::{Metrics, OutcomeNameLabels};
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::{tls_server_config_from, PemPair};

mod head_timer;
mod http;
use http::{Protocols, Wire};

/// Time a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a disabled file watch (`tls.reload_every = "0s"`) looks whether a reload turned
/// it on.
const WATCH_OFF_RECHECK: Duration = Duration::from_secs(30);

/// The TLS acceptor in force, swapped on SIGHUP and when the certificate files change, and
/// the digest of the PEM pair last read, loaded or refused: an unchanged pair is not parsed
/// again, and a refused one is logged and counted once, not at every look.
pub struct Tls {
    acceptor: ArcSwapOption<TlsAcceptor>,
    seen: Mutex<Option<u64>>,
}

impl Tls {
    /// A listener that never speaks TLS.
    pub fn plain() -> Tls {
        Tls {
            acceptor: ArcSwapOption::empty(),
            seen: Mutex::new(None),
        }
    }

    /// The acceptor for `cfg`'s `[tls]`; none without a certificate.
    pub fn load(cfg: &Config) -> Result<Tls, String> {
        let tls = Tls::plain();
        if let (Some(c), Some(k)) = (&cfg.tls.cert, &cfg.tls.key) {
            let pair = PemPair::read(c, k)?;
            let acceptor = TlsAcceptor::from(Arc::new(tls_server_config_from(&pair)?));
            tls.acceptor.store(Some(Arc::new(acceptor)));
            *tls.seen_lock() = Some(pair.digest());
        }
        Ok(tls)
    }

    pub fn current(&self) -> Option<Arc<TlsAcceptor>> {
        self.acceptor.load_full()
    }

    pub fn is_on(&self) -> bool {
        self.acceptor.load().is_some()
    }

    /// Turns TLS off (a SIGHUP reload without `[tls]`, on the shared public listener).
    pub fn turn_off(&self) {
        self.acceptor.store(None);
        *self.seen_lock() = None;
    }

    /// Reads `cfg`'s certificate and key and, if they changed since the last read (or
    /// `always`, for SIGHUP), swaps in an acceptor made from them. Connections already
    /// accepted keep their session; new handshakes get the new certificate. A pair that does
    /// not load (unreadable, not PEM, key not the certificate's) leaves the one in force
    /// serving. `None` when `cfg` has no pair or it is unchanged. Blocking (reads, parsing).
    pub fn reload(
        &self,
        cfg: &Config,
        always: bool,
        metrics: &Metrics,
    ) -> Option<Result<(), String>> {
        let (Some(c), Some(k)) = (&cfg.tls.cert, &cfg.tls.key) else {
            return None;
        };
        let loaded = PemPair::read(c, k).and_then(|pair| {
            let digest = pair.digest();
            let mut seen = self.seen_lock();
            if !always && *seen == Some(digest) {
                return Ok(None);
            }
            *seen = Some(digest);
            tls_server_config_from(&pair).map(Some)
        });
        let outcome = match loaded {
            Ok(None) => return None,
            Ok(Some(server)) => {
                let acceptor = TlsAcceptor::from(Arc::new(server));
                self.acceptor.store(Some(Arc::new(acceptor)));
                tracing::info!(cert = %c.display(), "TLS certificate loaded; new handshakes use it");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not loaded; keeping the one in force");
                Err(e)
            }
        };
        let outcome_label = if outcome.is_ok() { "ok" } else { "error" };
        metrics
            .tls_reloads
            .get_or_create(&OutcomeNameLabels {
                outcome: outcome_label,
            })
            .inc();
        Some(outcome)
    }

    fn seen_lock(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        // The digest is a plain value: a panic elsewhere cannot leave it half-written.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Looks at the certificate files every `tls.reload_every` and swaps in a changed pair
/// (`Tls::reload`). A Kubernetes Secret volume is renewed in place, by a symlink swap, and no
/// signal is sent: this is how a rotated certificate reaches new handshakes without a restart.
/// A torn pair (read between the swap of one file and of the other) is refused, and the next
/// look, seeing other contents, tries again.
pub async fn watch_certs(
    tls: Arc<Tls>,
    live: Live,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let every = live.load().tls.reload_every.0;
        let wait = if every.is_zero() {
            WATCH_OFF_RECHECK
        } else {
            every
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let cfg = live.load_full();
        if cfg.tls.reload_every.0.is_zero() {
            continue;
        }
        let (tls, metrics) = (tls.clone(), metrics.clone());
        let _ = tokio::task::spawn_blocking(move || tls.reload(&cfg, false, &metrics)).await;
    }
}

/// Serves a public port (plain, or TLS while `tls` has an acceptor) until `stop` fires, then
/// lets in-flight requests finish within `drain.shutdown_timeout`. `connections` is shared by
/// the public listeners: `limits.max_connections` bounds the process, whatever the port.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Arc<Tls>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = proxy.shared.live.load_full();
    let protocols = Arc::new(Protocols::new(&cfg));
    let idle = cfg.limits.idle_timeout.0;
    let graceful = GracefulShutdown::new();
    loop {
        // A connection slot first: past max_connections, new clients wait in the backlog.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.current();
        let info = ConnInfo {
            peer,
            tls: acceptor.is_some(),
        };
        let proxy = proxy.clone();
        let svc = service_fn(move |req| proxy.clone().handle(req, info));
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let draining = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = Accepted { tcp, peer, idle };
            conn.serve(acceptor, &protocols, svc, watcher, draining)
                .await;
        });
    }
    drop(listener);
    let grace = proxy.shared.live.load().drain.shutdown_timeout.0;
    tracing::info!("listener closed; waiting up to {grace:?} for in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached with requests still in flight");
    }
}

/// A connection just accepted, before TLS and before its protocol is known.
struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    /// `limits.idle_timeout`: how long it may move no bytes, its first ones included.
    idle: Duration,
}

impl Accepted {
    /// TLS if the listener speaks it, the protocol chosen, then HTTP until the client leaves
    /// or the drain has closed the connection.
    async fn serve<S>(
        self,
        acceptor: Option<Arc<TlsAcceptor>>,
        protocols: &Protocols,
        svc: S,
        watcher: Watcher,
        mut draining: watch::Receiver<bool>,
    ) where
        S: HttpService<Incoming, ResBody = Body> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Accepted { tcp, peer, idle } = self;
        let Some(acc) = acceptor else {
            // Not watched yet: a client that has sent nothing when the drain starts has no
            // request to finish, and is closed.
            let wire = tokio::select! {
                w = Wire::of_first_bytes(&tcp, idle) => w,
                _ = draining.changed() => None,
            };
            let Some(wire) = wire else {
                return;
            };
            let io = IdleIo::new(SendfileStream::new(tcp), idle);
            let reads = io.reads();
            return protocols.serve(wire, io, reads, svc, watcher, peer).await;
        };
        let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let wire = Wire::of_alpn(stream.get_ref().1.alpn_protocol());
        let io = IdleIo::new(stream, idle);
        let reads = io.reads();
        protocols.serve(wire, io, reads, svc, watcher, peer).await;
    }
}

/// Binds a listener with a large backlog (election-day connection bursts).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
