//! The accept stage: listeners, TLS, HTTP/1.1 and h2 connections, limits and graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use wardgate_sealed::SendfileStream;

use crate::config::Config;
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::tls_server_config;

/// Time a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor in force; swapped on SIGHUP when the certificate files change.
pub type Tls = Arc<ArcSwapOption<TlsAcceptor>>;

pub fn load_tls(cfg: &Config) -> Result<Option<TlsAcceptor>, String> {
    match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => Ok(Some(TlsAcceptor::from(Arc::new(tls_server_config(c, k)?)))),
        _ => Ok(None),
    }
}

/// The connection builder: HTTP/1.1 and h2 with the configured head limits and timeouts.
pub fn builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.limits.header_read_timeout.0)
        .max_buf_size((cfg.limits.max_header_bytes.0 as usize).max(8192))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.limits.max_header_bytes.0 as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Serves the public port until `stop` fires, then lets in-flight requests finish within
/// `drain.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Tls,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = proxy.shared.live.load_full();
    let builder = builder(&cfg);
    let idle = cfg.limits.idle_timeout.0;
    let connections = Arc::new(Semaphore::new(cfg.limits.max_connections as usize));
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
        let acceptor = tls.load_full();
        let info = ConnInfo {
            peer,
            tls: acceptor.is_some(),
        };
        let proxy = proxy.clone();
        let svc = service_fn(move |req| proxy.clone().handle(req, info));
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                None => {
                    let io = crate::idle::IdleIo::new(SendfileStream::new(tcp), idle);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acc) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let io = crate::idle::IdleIo::new(stream, idle);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
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
