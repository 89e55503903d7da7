//! Which HTTP a connection speaks, known before hyper reads a byte, and the connection driven.
//!
//! A generic detector (hyper-util's `auto`) reads the first 24 bytes itself and hands them
//! back through a rewinding wrapper; hyper's 8 KiB read buffer, handed those 24 bytes first,
//! then grows to 16 KiB and copies, on every new connection (in a profile of a cold storm's
//! intake, a quarter of the serving workers' CPU). Here the protocol is known beforehand
//! (TLS: its ALPN; plain TCP: a peek at the first bytes, which consumes nothing), so hyper
//! reads the whole request into its first buffer. Measured end to end, a new connection
//! costs about what it did: the rest of its start is first-touch memory.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulConnection, Watcher};
use tokio::net::TcpStream;

use super::head_timer::HeadTimer;
use crate::body::Body;
use crate::config::Config;
use crate::idle::Reads;

/// The HTTP/2 connection preface starts with the one request line HTTP/1.1 can never send
/// (RFC 9113 §3.4 reserves the `PRI` method for it).
const H2_PREFACE_START: &[u8; 4] = b"PRI ";

/// How long to wait before looking again at a connection whose first segment stops inside
/// `PRI ` (a client that sends its first bytes one at a time); doubled at each look up to
/// `PEEK_AGAIN_AT_MOST`, so that a client stalling there costs a few wake-ups, not a spin.
const PEEK_AGAIN_AFTER: Duration = Duration::from_millis(5);
const PEEK_AGAIN_AT_MOST: Duration = Duration::from_millis(320);

/// What a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

impl Wire {
    /// A TLS connection's protocol, as negotiated by ALPN (`h2` offered first). A client that
    /// names none speaks HTTP/1.1: HTTP/2 over TLS requires ALPN (RFC 9113 §3.2).
    pub fn of_alpn(alpn: Option<&[u8]>) -> Wire {
        match alpn {
            Some(b"h2") => Wire::Http2,
            _ => Wire::Http1,
        }
    }

    /// A plain connection's protocol, from its first bytes, left in the socket for hyper:
    /// HTTP/2 with prior knowledge (h2c) starts `PRI `, anything else is read as HTTP/1.1.
    /// `None` when the client closed before sending anything. Waits at most `patience` for
    /// the first bytes.
    pub async fn of_first_bytes(tcp: &TcpStream, patience: Duration) -> Option<Wire> {
        tokio::time::timeout(patience, Wire::peek(tcp))
            .await
            .ok()
            .flatten()
    }

    async fn peek(tcp: &TcpStream) -> Option<Wire> {
        let mut first = [0u8; 4];
        let mut wait = PEEK_AGAIN_AFTER;
        loop {
            let n = tcp.peek(&mut first).await.ok()?;
            if n == 0 {
                return None;
            }
            if n == first.len() || !H2_PREFACE_START.starts_with(&first[..n]) {
                return Some(Wire::from_start(&first[..n]));
            }
            // "P", "PR" or "PRI": `POST` or `PUT` as much as the preface, until more arrives.
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(PEEK_AGAIN_AT_MOST);
        }
    }

    fn from_start(first: &[u8]) -> Wire {
        if first == H2_PREFACE_START {
            Wire::Http2
        } else {
            Wire::Http1
        }
    }
}

/// The HTTP/1.1 and h2 connection settings of a listener: head limits, timeouts, keep-alive.
pub struct Protocols {
    /// Everything but the timer, which is the connection's own (`HeadTimer`).
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Protocols {
    pub fn new(cfg: &Config) -> Protocols {
        let mut http1 = http1::Builder::new();
        let header_read_timeout = cfg.limits.header_read_timeout.0;
        http1
            .header_read_timeout(header_read_timeout)
            .max_buf_size((cfg.limits.max_header_bytes.0 as usize).max(8192))
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(cfg.limits.max_header_bytes.0 as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        Protocols {
            http1,
            http2,
            header_read_timeout,
        }
    }

    /// Serves `io` as `wire` until the client leaves or a graceful shutdown has drained it.
    /// `reads` counts the reads `io` made (its HTTP/1.1 head timer runs from them).
    pub async fn serve<I, S>(
        &self,
        wire: Wire,
        io: I,
        reads: Reads,
        svc: S,
        watcher: Watcher,
        peer: SocketAddr,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: HttpService<hyper::body::Incoming, ResBody = Body> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = TokioIo::new(io);
        match wire {
            Wire::Http1 => {
                let mut http1 = self.http1.clone();
                http1.timer(HeadTimer::new(reads, self.header_read_timeout));
                drive(watcher, http1.serve_connection(io, svc), peer).await
            }
            Wire::Http2 => drive(watcher, self.http2.serve_connection(io, svc), peer).await,
        }
    }
}

async fn drive<C>(watcher: Watcher, conn: C, peer: SocketAddr)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_decides_over_tls() {
        assert_eq!(Wire::of_alpn(Some(b"h2")), Wire::Http2);
        assert_eq!(Wire::of_alpn(Some(b"http/1.1")), Wire::Http1);
        assert_eq!(Wire::of_alpn(None), Wire::Http1);
    }

    #[test]
    fn only_the_preface_line_is_h2() {
        assert_eq!(Wire::from_start(b"PRI "), Wire::Http2);
        for start in [&b"GET "[..], b"POST", b"PUT ", b"PRIX", b"OPTI"] {
            assert_eq!(Wire::from_start(start), Wire::Http1, "{start:?}");
        }
    }

    /// A first segment cut inside `PRI ` is looked at again; the bytes stay for hyper.
    #[tokio::test]
    async fn a_split_first_segment_is_waited_for_and_left_unread() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            c.write_all(b"PR").await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(b"I * HTTP/2.0").await.unwrap();
            c
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let wire = Wire::of_first_bytes(&server, Duration::from_secs(5)).await;
        assert_eq!(wire, Some(Wire::Http2));
        let _client = client.await.unwrap();
        let mut all = [0u8; 14];
        server.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"PRI * HTTP/2.0");
    }

    #[tokio::test]
    async fn a_silent_client_is_given_up_on_and_a_closed_one_is_none() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wait = Duration::from_millis(50);
        assert_eq!(Wire::of_first_bytes(&server, wait).await, None);
        drop(silent);
        let patient = Duration::from_secs(30);
        let t0 = std::time::Instant::now();
        assert_eq!(Wire::of_first_bytes(&server, patient).await, None);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "EOF is seen at once"
        );
    }
}
