//! Request ids over HTTP (issue 19): one id per request, on its answer (errors included), in
//! wardgate's access line and at the backend for a miss and a write; taken from the client
//! only when a trusted proxy sent it well-formed.

mod support;

use std::process::{Command, Stdio};

use support::*;
use wardgate::config::{ByteSize, Quota};

const HEADER: &str = "x-request-id";

/// The answer's `X-Request-Id` (there must be one).
fn id_of(r: &reqwest::Response) -> String {
    let v = r
        .headers()
        .get(HEADER)
        .expect("every answer names its request");
    v.to_str().unwrap().to_string()
}

/// A made id: 32 lowercase hex digits.
fn is_made(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The ids the backend's request log recorded for `method` requests of the citizens route.
async fn backend_ids(origin: &Origin, method: &str) -> Vec<String> {
    let stats = origin.stats().await;
    let Some(recent) = stats["recent"].as_array() else {
        panic!("the origin lists recent requests: {stats}");
    };
    recent
        .iter()
        .filter(|r| r["method"] == method && r["path"] == "/open/volunteer/citizens")
        .map(|r| r["request_id"].as_str().unwrap_or("none").to_string())
        .collect()
}

/// A sync body that changes one row of `rows`.
fn change_one(rows: &[serde_json::Value]) -> String {
    format!(r#"[{{"id":{},"voted":true}}]"#, rows[0]["id"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_in_the_answer_the_access_log_and_the_backend_for_a_miss_and_a_write() {
    let origin = Origin::builder().wards(1).voters_per_ward(40).start().await;
    // The binary, as deployed, so that its own log lines are read (stderr piped).
    let Served { child, port, .. } = serve_process(|cmd| {
        cmd.args(["--upstream", &origin.url()])
            .args(["--log-format", "json", "--access-log-sample", "1"])
            .args(["--drain-grace", "0s"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    });
    let url = format!(
        "http://127.0.0.1:{port}/open/volunteer/citizens?{}",
        ward_query(1)
    );
    let c = client();

    // A miss: the phone sends no id, wardgate makes one and its build's read carries it.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    let miss = id_of(&r);
    assert!(is_made(&miss), "{miss}");
    let rows: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(
        backend_ids(&origin, "GET").await,
        std::slice::from_ref(&miss)
    );

    // A write, through a load balancer (loopback is trusted by default) that names it.
    let lb_id = "lb-3f9a:7c21.write_1";
    let r = c
        .post(&url)
        .header(HEADER, lb_id)
        .body(change_one(&rows))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(id_of(&r), lb_id);
    let _ = r.bytes().await;
    assert_eq!(backend_ids(&origin, "POST").await, [lb_id.to_string()]);

    // wardgate's log: the access line of each request names it, and so does the build.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).expect("an access line is one JSON object"))
        .collect();
    let line_of = |id: &str| {
        let mut of = access.iter().filter(|l| l["request_id"] == id);
        let line = of
            .next()
            .unwrap_or_else(|| panic!("no access line names {id}: {log}"));
        assert!(of.next().is_none(), "one access line per request");
        line.clone()
    };
    let (m, w) = (line_of(&miss), line_of(lb_id));
    assert_eq!(m["method"], "GET");
    assert_eq!(m["cache"], "MISS");
    assert_eq!(w["method"], "POST");
    assert_eq!(w["route_class"], "write");
    assert!(
        log.lines()
            .any(|l| l.contains("snapshot built") && l.contains(&miss)),
        "the build's log line names the request that started it: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_refusals_and_cross_origin_answers_carry_an_id_the_app_can_read() {
    let origin = Origin::builder().wards(1).voters_per_ward(20).start().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.rate_limit.master = Quota {
                rate: 0.01,
                burst: 1,
            };
            c.limits.max_body_bytes = ByteSize(1024);
        })
        .start()
        .await;
    let c = client();
    let app = "https://app.example";
    let mut seen = Vec::new();
    let mut check = |r: &reqwest::Response, status: u16| {
        assert_eq!(r.status(), status);
        let id = id_of(r);
        assert!(is_made(&id), "{status}: {id}");
        let exposed = r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap();
        assert!(exposed.contains("X-Request-Id"), "{status}: {exposed}");
        assert!(!seen.contains(&id), "ids are per request");
        seen.push(id.clone());
        id
    };

    // A bad parameter: 400, named in the header and the error body alike.
    let bad = gate.citizens("state=Karnataka&assemblyNo=150&wardNo=abc&date=-1&boothNos=-1");
    let r = c.get(bad).header("origin", app).send().await.unwrap();
    let id = check(&r, 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str(), "{body}");

    // Over the rate limit: 429.
    let parties = gate.url("/open/volunteer/parties");
    let r = c.get(&parties).header("origin", app).send().await.unwrap();
    check(&r, 200);
    let r = c.get(&parties).header("origin", app).send().await.unwrap();
    let id = check(&r, 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], id.as_str(), "{body}");

    // A body too large: 413.
    let big = format!(r#"[{{"id":1,"note":"{}"}}]"#, "x".repeat(4096));
    let r = c
        .post(gate.citizens(&ward_query(1)))
        .header("origin", app)
        .body(big)
        .send()
        .await
        .unwrap();
    check(&r, 413);

    // A CORS preflight carries one too (and, as the backend's, exposes nothing).
    let r = c
        .request(reqwest::Method::OPTIONS, gate.citizens(&ward_query(1)))
        .header("origin", app)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(is_made(&id_of(&r)));
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_taken_only_from_a_trusted_proxy_and_only_well_formed() {
    let origin = Origin::builder().wards(4).voters_per_ward(20).start().await;
    let c = client();
    let read = |gate: &Gate, ward: u32, id: &str| {
        c.get(gate.citizens(&ward_query(ward)))
            .header(HEADER, id)
            .send()
    };

    // Loopback is not a proxy of ours here: what the phone says is replaced, at the backend
    // too, on a miss and on a write (whose other headers are forwarded as the phone sent them).
    let untrusted = Gate::builder(&origin.url())
        .config(|c| c.rate_limit.trusted_proxies = vec!["10.0.0.0/8".into()])
        .start()
        .await;
    let r = read(&untrusted, 1, "chosen-by-the-phone").await.unwrap();
    let made = id_of(&r);
    assert!(is_made(&made), "{made}");
    let rows: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(backend_ids(&origin, "GET").await, [made]);
    let r = c
        .post(untrusted.citizens(&ward_query(1)))
        .header(HEADER, "chosen-by-the-phone-too")
        .body(change_one(&rows))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let made = id_of(&r);
    assert!(is_made(&made), "{made}");
    assert_eq!(backend_ids(&origin, "POST").await, [made]);
    untrusted.stop().await;

    // From a trusted proxy: a well-formed id is kept, anything else replaced.
    origin.reset_stats().await;
    let trusted = Gate::builder(&origin.url()).start().await;
    let kept = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let r = read(&trusted, 2, kept).await.unwrap();
    assert_eq!(id_of(&r), kept);
    let too_long = "a".repeat(65);
    for (ward, bad) in [(3, "two words \"quoted\""), (4, too_long.as_str())] {
        let r = read(&trusted, ward, bad).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(is_made(&id_of(&r)), "{bad:?} is replaced");
    }
    let at_backend = backend_ids(&origin, "GET").await;
    assert_eq!(at_backend.len(), 3, "{at_backend:?}");
    assert_eq!(at_backend[0], kept);
    assert!(
        at_backend[1..].iter().all(|id| is_made(id)),
        "{at_backend:?}"
    );
    trusted.stop().await;
}
