//! wardgate as a drop-in for the Spring Boot backend, tried over HTTP as its clients would:
//! the backend's envelope, headers and error shape, retries clients can act on, the release a
//! binary was built from.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use support::*;

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
    let r = get_gzip(&c, gate.citizens(&ward_query(1))).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    let _ = r.bytes().await;
    // Where the build's time went, and compressions made while a request waited: a gzip
    // booth subset is compressed once, then served as made.
    let booth = "state=Karnataka&assemblyNo=150&wardNo=1&date=-1&boothNos=2,3";
    let mut compressions = Vec::new();
    for _ in 0..3 {
        let r = get_gzip(&c, gate.citizens(booth)).await;
        assert_eq!(
            gunzip(&r.bytes().await.unwrap()),
            fetch(&c, origin.citizens(booth)).await
        );
        compressions.push(gate.metric("wardgate_request_compressions_total").await);
    }
    assert!(
        compressions[0] >= 1.0 && compressions.iter().all(|n| *n == compressions[0]),
        "{compressions:?}"
    );
    for phase in ["fetch", "chunk", "parse", "compress"] {
        let name = format!("wardgate_build_phase_seconds_count{{phase=\"{phase}\"}}");
        assert!(gate.metric(&name).await >= 1.0, "{name}");
    }

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

/// A sync POST with one mark.
async fn write(c: &reqwest::Client, gate: &Gate) -> reqwest::Response {
    let req = c
        .post(gate.citizens(&ward_query(1)))
        .header("content-type", "application/json")
        .body(r#"[{"id":1,"voted":true}]"#)
        .send();
    tokio::time::timeout(Duration::from_secs(30), req)
        .await
        .expect("answered in time")
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_5xx_answer_to_a_write_carries_retry_after() {
    // A load balancer in front of the backend answers writes 502, 503 and 500, saying
    // nothing of when to retry.
    const STATUSES: [&str; 3] = [
        "502 Bad Gateway",
        "503 Service Unavailable",
        "500 Internal Server Error",
    ];
    let (lb, _) = canned_backend(|n| {
        let status = STATUSES[(n as usize).min(2)];
        (status, "text/html", "<html>upstream error</html>".into())
    })
    .await;
    let gate = Gate::builder(&lb).config(no_rate_limits).start().await;
    let c = client();
    for want in [502, 503, 500] {
        let r = write(&c, &gate).await;
        assert_eq!(r.status(), want);
        assert!(
            r.headers().contains_key("retry-after"),
            "{want}: {:?}",
            r.headers()
        );
        assert_eq!(r.headers()["x-cache"], "PASS");
    }
    gate.stop().await;
    // Nothing listens: the write was never delivered, and the answer says when to retry.
    let gate = Gate::builder("http://127.0.0.1:9")
        .config(no_rate_limits)
        .start()
        .await;
    let r = write(&c, &gate).await;
    assert_eq!(r.status(), 503);
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
    let metrics = gate.metrics().await;
    let info = metrics
        .lines()
        .find(|l| l.starts_with("wardgate_build_info{"))
        .expect("build_info exported");
    assert!(info.contains(&format!("revision=\"{release}\"")), "{info}");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_wardgate_cannot_index_are_served_whole_and_filtered_reads_forwarded() {
    // Dates in a form no Spring/Jackson default writes: wardgate cannot read them, the
    // backend can still answer deltas itself.
    let rows = r#"[{"id":1,"booth_no":"1","modifieddate":"24/11/2026 10:15"},{"id":2,"booth_no":"2","modifieddate":"24/11/2026 10:16"}]"#;
    let (upstream, served) =
        canned_backend(|_| ("200 OK", "application/json;charset=UTF-8", rows.into())).await;
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
    let metrics = gate.metrics().await;
    for want in [
        "wardgate_unindexed_builds_total{field=\"modifieddate\"} 1",
        "wardgate_unindexed_reads_total{field=\"modifieddate\"} 1",
    ] {
        assert!(metrics.contains(want), "{want} in:\n{metrics}");
    }
    gate.stop().await;
}

/// Rows keyed by id, each as the exact JSON text it was sent in.
fn rows_by_id(body: &[u8]) -> std::collections::BTreeMap<i64, String> {
    let rows: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body).unwrap();
    rows.iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.get()).unwrap();
            (v["id"].as_i64().unwrap(), r.get().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assembly_level_volunteers_get_every_ward_from_snapshots_without_the_backend() {
    let origin = Origin::builder()
        .wards(3)
        .voters_per_ward(700)
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    // Wards 1 and 2 are cached; ward 3 is not yet.
    for w in [1, 2] {
        let _ = fetch(&c, gate.citizens(&ward_query(w))).await;
    }
    let all = format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=-1&date=-1&boothNos=-1");
    let want = rows_by_id(&fetch(&c, origin.citizens(&all)).await);
    assert_eq!(want.len(), 2100);

    // Installed apps: unpaginated, identity; the missing ward is built, not skipped.
    let r = c.get(gate.citizens(&all)).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let identity = r.bytes().await.unwrap();
    assert_eq!(
        rows_by_id(&identity),
        want,
        "the backend's rows, byte for byte"
    );
    // In ward order, each ward in reference order (srno restarts per booth: interleaved).
    let wards: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&identity).unwrap();
    let order: Vec<&str> = wards
        .iter()
        .map(|r| r["ward_no"].as_str().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "ward order");
    let ward1 = fetch(&c, origin.citizens(&ward_query(1))).await;
    assert!(identity.starts_with(&ward1[..ward1.len() - 1]));

    // From here on, no backend row read: gzip, pages, booth subsets, deltas, an absent wardNo.
    let reads = origin.citizens_reads().await;
    let r = get_gzip(&c, gate.citizens(&all)).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(gunzip(&r.bytes().await.unwrap()), identity);
    let no_ward = format!("state={STATE}&assemblyNo={ASSEMBLY}&date=-1&boothNos=-1");
    assert_eq!(fetch(&c, gate.citizens(&no_ward)).await, identity);
    for gz in [false, true] {
        let mut joined = Vec::new();
        for page in 0..5 {
            let q = format!("{all}&page={page}&size=500");
            let mut req = c.get(gate.citizens(&q));
            if gz {
                req = req.header("accept-encoding", "gzip");
            }
            let body = req.send().await.unwrap().bytes().await.unwrap();
            let body = if gz { gunzip(&body) } else { body.to_vec() };
            let v: Value = serde_json::from_slice(&body).unwrap();
            let n = v["citizens"].as_array().unwrap().len();
            assert_eq!(n, [500, 500, 500, 500, 100][page], "page {page}");
            assert_eq!(v["hasMore"], n == 500);
            joined.extend(v["citizens"].as_array().unwrap().iter().cloned());
        }
        assert_eq!(joined, wards, "pages concatenate to the whole (gzip: {gz})");
    }
    for filter in ["date=-1&boothNos=2,5", "date=1&boothNos=-1"] {
        let q = format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=-1&{filter}");
        let got = rows_by_id(&fetch(&c, gate.citizens(&q)).await);
        let want = rows_by_id(&fetch(&c, origin.citizens(&q)).await);
        assert!(!want.is_empty());
        assert_eq!(got, want, "{filter}");
    }
    // (the comparisons above asked the origin itself 2 times)
    assert_eq!(
        origin.citizens_reads().await,
        reads + 2,
        "no backend row read by wardgate"
    );
    gate.stop().await;

    // An answer no phone can hold is refused with a clear message; a page is still served.
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            no_rate_limits(c);
            c.citizens.assembly_max_rows = 1000;
        })
        .start()
        .await;
    let r = c.get(gate.citizens(&all)).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["rows"], 2100);
    assert!(v["message"].as_str().unwrap().contains("paginate"), "{v}");
    let page = c
        .get(gate.citizens(&format!("{all}&page=0&size=1000")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    gate.stop().await;
}
