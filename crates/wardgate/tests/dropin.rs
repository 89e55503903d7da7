//! wardgate as a drop-in for the Spring Boot backend, tried over HTTP as its clients would:
//! the backend's envelope, headers and error shape, retries clients can act on, the release a
//! binary was built from.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_backends_envelope_headers_and_errors() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(1200)
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    // Pages: the backend's HashMap envelope, byte for byte, the last full page included
    // (1200 rows in pages of 400: page 2 is full and says hasMore, page 3 is empty).
    for page in 0..4 {
        let q = format!("{}&page={page}&size=400", ward_query(1));
        let want = fetch(&c, origin.citizens(&q)).await;
        let r = c.get(gate.citizens(&q)).send().await.unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "application/json;charset=UTF-8"
        );
        let got = r.bytes().await.unwrap();
        assert_eq!(got, want, "page {page}");
        let v: Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(v["hasMore"], page < 3, "page {page}");
        assert!(v.get("count").is_none());
    }
    // Cached full wards, gzip and identity, say the backend's Content-Type.
    let r = c
        .get(gate.citizens(&ward_query(1)))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=UTF-8"
    );

    // wardgate's own errors have Spring Boot's shape, like the backend's own.
    let bad = "state=Karnataka&assemblyNo=150&wardNo=1%27--&date=-1&boothNos=-1";
    let mine: Value = c
        .get(gate.citizens(bad))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs: Value = reqwest::get(origin.citizens("state=Karnataka"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in ["timestamp", "status", "error", "message", "path"] {
        assert!(mine.get(key).is_some(), "{key} in {mine}");
        assert!(theirs.get(key).is_some(), "{key} in {theirs}");
    }
    assert_eq!(mine["param"], "wardNo");
    assert_eq!(mine["error"], theirs["error"]);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_5xx_answer_to_a_write_carries_retry_after() {
    // A load balancer in front of the backend answers writes 502 and 503 (it says nothing of
    // when to retry); then it is gone altogether.
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb_addr = lb.local_addr().unwrap();
    let statuses = [
        "502 Bad Gateway",
        "503 Service Unavailable",
        "500 Internal Server Error",
    ];
    let server = tokio::spawn(async move {
        for status in statuses {
            let (mut s, _) = lb.accept().await.unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let _ = s.read(&mut buf).await;
            let body = "<html>upstream error</html>";
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body.as_bytes()).await.unwrap();
        }
    });
    let gate = Gate::builder(&format!("http://{lb_addr}"))
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let write = || {
        c.post(gate.citizens(&ward_query(1)))
            .header("content-type", "application/json")
            .body(r#"[{"id":1,"voted":true}]"#)
            .send()
    };
    for want in [502, 503, 500] {
        let r = write().await.unwrap();
        assert_eq!(r.status(), want);
        assert!(
            r.headers().contains_key("retry-after"),
            "{want}: {:?}",
            r.headers()
        );
        assert_eq!(r.headers()["x-cache"], "PASS");
    }
    server.await.unwrap();
    // Nothing listens now: the write was never delivered, and the answer says when to retry.
    let r = tokio::time::timeout(Duration::from_secs(30), write())
        .await
        .unwrap()
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert!(r.headers().contains_key("retry-after"));
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_release_a_binary_was_built_from_is_on_every_answer_and_in_build_info() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let rev = String::from_utf8(rev.stdout).unwrap().trim().to_string();
    let release = std::env::var("WARDGATE_RELEASE").unwrap_or(rev);
    assert!(!release.is_empty());
    let origin = Origin::builder().wards(1).voters_per_ward(10).start().await;
    let gate = Gate::builder(&origin.url()).start().await;
    let want = format!("{}+{release}", env!("CARGO_PKG_VERSION"));
    let r = reqwest::get(gate.url("/nope")).await.unwrap();
    assert_eq!(r.headers()["x-wardgate-version"], want.as_str());
    let metrics = reqwest::get(gate.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let info = metrics
        .lines()
        .find(|l| l.starts_with("wardgate_build_info{"))
        .expect("build_info exported");
    assert!(info.contains(&format!("revision=\"{release}\"")), "{info}");
    gate.stop().await;
}

/// A backend that answers every request with `body` (the rows of one ward as some backend
/// writes them) and counts what it answered.
async fn fixed_backend(body: &'static str) -> (String, Arc<AtomicU64>) {
    let lb = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = lb.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = lb.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 << 10];
                let _ = s.read(&mut buf).await;
                count.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json;charset=UTF-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_wardgate_cannot_index_are_served_whole_and_filtered_reads_forwarded() {
    // Dates in a form no Spring/Jackson default writes: wardgate cannot read them, the
    // backend can still answer deltas itself.
    let rows = r#"[{"id":1,"booth_no":"1","modifieddate":"24/11/2026 10:15"},{"id":2,"booth_no":"2","modifieddate":"24/11/2026 10:16"}]"#;
    let (upstream, served) = fixed_backend(rows).await;
    let gate = Gate::builder(&upstream)
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    for want in ["MISS", "HIT"] {
        let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
        assert_eq!(r.status(), 200, "never a 503 where the backend can answer");
        assert_eq!(r.headers()["x-cache"], want);
        assert_eq!(r.text().await.unwrap(), rows);
    }
    // A booth subset is still answered from the snapshot (booths were readable)...
    let booth = "state=Karnataka&assemblyNo=150&wardNo=1&date=-1&boothNos=2";
    let r = c.get(gate.citizens(booth)).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    let got: Value = r.json().await.unwrap();
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(served.load(Ordering::SeqCst), 1);
    // ...a delta is the backend's to answer.
    let delta = "state=Karnataka&assemblyNo=150&wardNo=1&date=1764000000000&boothNos=-1";
    let r = c.get(gate.citizens(delta)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "PASS");
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let metrics = reqwest::get(gate.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "wardgate_unindexed_builds_total{field=\"modifieddate\"} 1",
        "wardgate_unindexed_reads_total{field=\"modifieddate\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
    gate.stop().await;
}
