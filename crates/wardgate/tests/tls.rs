//! TLS termination with rustls: handshake, HTTP/2 over TLS by ALPN, and a certificate swap on
//! SIGHUP without a restart.

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
    let (port, admin) = (free_port(), free_port());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut child = ChildProc {
        child: Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
            ])
            .args([
                "--upstream",
                &origin.url(),
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        port,
    };
    wait_port(admin);
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
