//! The floor under a page hit: hyper's HTTP/1.1 and wardgate's `sendfile` stream, answering
//! every request with one sealed file's bytes and three headers, and nothing else (no routing,
//! validation, limits, cache lookup, log or metrics). `bench/hit-cost.sh` runs it beside
//! wardgate and nginx, so that a page hit's cost splits into the stack's and wardgate's own.
//!
//!   cargo run --release -p wardgate --example hit_floor -- BODY_FILE PORT

use std::convert::Infallible;

use http_body_util::Full;
use hyper::header::HeaderValue;

#[global_allocator]
static GLOBAL: wardgate_alloc::Allocator = wardgate_alloc::Allocator;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(port)) = (args.next(), args.next()) else {
        return Err("usage: hit_floor BODY_FILE PORT".into());
    };
    let port: u16 = port.parse().map_err(|e| format!("port {port}: {e}"))?;
    let raw = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let body = wardgate_sealed::seal(&raw);
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
            let body = body.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(wardgate_sealed::SendfileStream::new(tcp));
                let answer = hyper::service::service_fn(move |_req| {
                    let mut resp = hyper::Response::new(Full::new(body.clone()));
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
