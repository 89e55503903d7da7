//! The floor under a hit: hyper's HTTP/1.1 and wardgate's `sendfile` stream, answering each
//! request with one sealed file's bytes and three headers, and nothing else (no routing,
//! validation, limits, cache lookup, log or metrics). `bench/hit-cost.sh` runs it beside
//! wardgate and nginx on the same pages and wards, so that a hit's cost splits into the
//! stack's and wardgate's own, and a ratio to nginx that even the floor misses is seen to be
//! the kernel's, not wardgate's.
//!
//!   cargo run --release -p wardgate --example hit_floor -- PORT BODY_FILE...
//!
//! A request for `/N` gets the Nth file (1-based, wrapping); any other path the first.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;

#[global_allocator]
static GLOBAL: wardgate_alloc::Allocator = wardgate_alloc::Allocator;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let port = args.next().ok_or("usage: hit_floor PORT BODY_FILE...")?;
    let port: u16 = port.parse().map_err(|e| format!("port {port}: {e}"))?;
    let bodies = args
        .map(|path| {
            let raw = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            Ok(wardgate_sealed::seal(&raw))
        })
        .collect::<Result<Vec<Bytes>, String>>()?;
    if bodies.is_empty() {
        return Err("usage: hit_floor PORT BODY_FILE...".into());
    }
    let bodies = Arc::new(bodies);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
        loop {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(wardgate_sealed::SendfileStream::new(tcp));
                let answer = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let body = pick(&bodies, req.uri().path()).clone();
                    let mut resp = hyper::Response::new(Full::new(body));
                    let h = resp.headers_mut();
                    h.insert("content-type", HeaderValue::from_static("application/json"));
                    h.insert("content-encoding", HeaderValue::from_static("gzip"));
                    h.insert("etag", HeaderValue::from_static("\"floor\""));
                    async move { Ok::<_, Infallible>(resp) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, answer);
                let _ = conn.await;
            });
        }
    })
}

/// The body `/N` names: the Nth (1-based, wrapping), else the first.
fn pick<'a>(bodies: &'a [Bytes], path: &str) -> &'a Bytes {
    let n = path.trim_start_matches('/').parse::<usize>().unwrap_or(1);
    &bodies[n.saturating_sub(1) % bodies.len()]
}
