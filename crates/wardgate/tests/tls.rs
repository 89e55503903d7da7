//! TLS termination with rustls: handshake, HTTP/2 over TLS by ALPN, a certificate swap on
//! SIGHUP without a restart, and a certificate renewed in place (a Kubernetes Secret volume)
//! picked up with no signal.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A self-signed certificate for `localhost`, written as PEM files; returns the cert PEM.
fn make_cert(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert.pem()
}

fn tls_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_h2_and_a_certificate_swap_on_sighup() {
    let origin = Origin::builder().start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let Served { child, port, .. } = serve_process(|cmd| {
        cmd.args(["--upstream", &origin.url()])
            .args(["--tls-cert", cert.to_str().unwrap()])
            .args(["--tls-key", key.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    });
    let mut child = ChildProc { child, port };
    let url = format!(
        "https://localhost:{port}/open/volunteer/citizens?{}",
        ward_query(1)
    );

    // A TLS handshake and HTTP/1.1 (ALPN http/1.1).
    let c = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(first.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let body = r.bytes().await.unwrap();
    assert!(body.starts_with(b"[{\"id\":"));

    // HTTP/2 over TLS, negotiated by ALPN h2: the same bytes.
    let r = tls_client(&first).get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap(), body);

    // Plain HTTP on the TLS port is refused.
    assert!(client()
        .get(format!("http://127.0.0.1:{port}/open/volunteer/states"))
        .send()
        .await
        .is_err());

    // A new certificate, then SIGHUP: new connections get it, no restart.
    let second = make_cert(dir.path());
    assert!(
        tls_client(&second).get(&url).send().await.is_err(),
        "not yet swapped"
    );
    let ok = Command::new("kill")
        .args(["-HUP", &child.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = tls_client(&second).get(&url).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tls_client(&first).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
    assert!(
        child.child.try_wait().unwrap().is_none(),
        "still the same process"
    );
    child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_https_upstream_is_verified_against_the_configured_ca() {
    let origin = Origin::builder().start().await;
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path());
    // An HTTPS hop in front of the origin: a wardgate terminating TLS.
    let https_front = Gate::builder(&origin.url())
        .config(|c| {
            c.tls.cert = Some(dir.path().join("cert.pem"));
            c.tls.key = Some(dir.path().join("key.pem"));
        })
        .start()
        .await;
    let upstream = format!("https://localhost:{}", https_front.addr.port());
    // Trusting the right CA: served through the HTTPS upstream.
    let gate = Gate::builder(&upstream)
        .config(|c| c.upstream_ca = Some(dir.path().join("cert.pem")))
        .start()
        .await;
    let c = client();
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let want = fetch(&c, origin.citizens(&ward_query(1))).await;
    assert_eq!(r.bytes().await.unwrap(), want);
    // With only the system roots the self-signed upstream is refused: nothing is served.
    let untrusting = Gate::builder(&upstream).start().await;
    let r = c
        .get(untrusting.citizens(&ward_query(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    gate.stop().await;
    untrusting.stop().await;
    https_front.stop().await;
}

/// A self-signed certificate for `localhost` and its key, as PEM.
struct Pair {
    cert: String,
    key: String,
}

fn pair() -> Pair {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Writes `tls.crt` and `tls.key` into `dir` as the kubelet updates a Secret volume: the files
/// in a new directory `..<version>`, a `..data_tmp` link to it renamed over `..data` (one
/// atomic step for both files), and `tls.crt` / `tls.key` links through `..data`, made once.
/// The old version's files are removed, so nothing of them can be read after the swap.
fn kubelet_write(dir: &std::path::Path, version: u32, cert: &str, key: &str) {
    use std::os::unix::fs::symlink;
    let name = format!("..2026_05_0{version}_10_00_00.{version}");
    std::fs::create_dir(dir.join(&name)).unwrap();
    std::fs::write(dir.join(&name).join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join(&name).join("tls.key"), key).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&name, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// An HTTP/1.1 keep-alive connection over one TLS session with wardgate, trusting `ca_pem`
/// only: every request sent on it goes over that same session, or fails.
async fn hold_connection(
    port: u16,
    ca_pem: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

/// A request on a held connection: the status, after reading the whole body.
async fn held_get(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> u16 {
    use http_body_util::BodyExt;
    send.ready()
        .await
        .expect("the held connection is still open");
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    let r = send
        .send_request(req)
        .await
        .expect("answered on the held connection");
    let status = r.status().as_u16();
    r.into_body().collect().await.unwrap();
    status
}

/// Polls `f` every 100 ms until it is true, at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_renewed_in_place_is_used_without_a_signal_and_a_bad_one_is_not() {
    let origin = Origin::builder().start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = pair();
    kubelet_write(dir.path(), 1, &a.cert, &a.key);
    let every = Duration::from_secs(1);
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.tls.cert = Some(dir.path().join("tls.crt"));
            c.tls.key = Some(dir.path().join("tls.key"));
            c.tls.listen = Some("127.0.0.1:0".parse().unwrap());
            c.tls.reload_every = wardgate::config::Dur(every);
        })
        .start()
        .await;
    let port = gate.running.as_ref().unwrap().tls_addr.unwrap().port();
    let url = format!(
        "https://localhost:{port}/open/volunteer/citizens?{}",
        ward_query(1)
    );
    let path = format!("/open/volunteer/citizens?{}", ward_query(1));
    let serves = |pem: &str| {
        let (c, url) = (tls_client(pem), url.clone());
        async move { matches!(c.get(&url).send().await, Ok(r) if r.status() == 200) }
    };

    // Plain HTTP goes on on the public port, next to the TLS port.
    let r = client().get(gate.citizens(&ward_query(1))).send().await;
    assert_eq!(r.unwrap().status(), 200);
    assert!(serves(&a.cert).await);
    // A connection opened with certificate A, held open across the renewals.
    let mut held = hold_connection(port, &a.cert).await;
    assert_eq!(held_get(&mut held, &path).await, 200);

    // A broken renewal: another key's certificate beside A's key. Refused, counted, and A
    // goes on serving new handshakes.
    let stranger = pair();
    kubelet_write(dir.path(), 2, &stranger.cert, &a.key);
    let refused = r#"wardgate_tls_reloads_total{outcome="error"}"#;
    eventually(every * 5, "the broken pair counted", || async {
        gate.metric(refused).await >= 1.0
    })
    .await;
    assert!(serves(&a.cert).await, "A kept after a broken pair");
    assert!(!serves(&stranger.cert).await);
    // Looked at again, the same broken pair is neither parsed nor counted again.
    tokio::time::sleep(every * 2).await;
    assert_eq!(
        gate.metric(refused).await,
        1.0,
        "a refused pair is counted once"
    );

    // B, renewed in place with no signal: new handshakes get B within the look interval.
    let b = pair();
    kubelet_write(dir.path(), 3, &b.cert, &b.key);
    let took = eventually(every * 5, "certificate B served", || serves(&b.cert)).await;
    assert!(took <= every * 3, "B after {took:?}");
    assert!(!serves(&a.cert).await, "A is no longer presented");
    let loaded = r#"wardgate_tls_reloads_total{outcome="ok"}"#;
    assert_eq!(gate.metric(loaded).await, 1.0);

    // The connection opened under A keeps its session and is answered.
    assert_eq!(held_get(&mut held, &path).await, 200);
    gate.stop().await;
}
