//! CORS parity over HTTP, across a fleet: what one instance learned of the backend's CORS
//! answers serves another, started while the backend is down; a 429 carries them too; and
//! an `Origin` is only ever given what the backend gave that `Origin`.

mod support;

use support::*;
use wardgate_sample::answer::CorsMode;

const APP: &str = "http://localhost:8100";
const STRANGER: &str = "http://elsewhere.example";

/// A preflight of the app's sync POST from `origin`.
async fn preflight(c: &reqwest::Client, gate: &Gate, origin: &str) -> reqwest::Response {
    c.request(reqwest::Method::OPTIONS, gate.citizens(&ward_query(1)))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

async fn read(c: &reqwest::Client, gate: &Gate, origin: &str) -> reqwest::Response {
    c.get(gate.citizens(&ward_query(1)))
        .header("origin", origin)
        .send()
        .await
        .unwrap()
}

fn allowed(r: &reqwest::Response) -> Option<&str> {
    r.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_one_instance_learned_serves_the_fleet_while_the_backend_is_down() {
    // A backend that echoes the origin with credentials.
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(50)
        .cors(CorsMode::Echo)
        .start()
        .await;
    let first = Gate::builder(&origin.url())
        .redis()
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    assert_eq!(preflight(&c, &first, APP).await.status(), 200);
    let r = read(&c, &first, APP).await;
    assert_eq!(allowed(&r), Some(APP));
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let vary: Vec<&str> = r
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(vary.iter().any(|v| v.contains("Origin")), "{vary:?}");
    assert!(
        vary.iter().any(|v| v.contains("Accept-Encoding")),
        "{vary:?}"
    );
    // Another origin gets its own echo (asked of the backend), never the app's.
    assert_eq!(allowed(&read(&c, &first, STRANGER).await), Some(STRANGER));
    let _ = read(&c, &first, APP).await.bytes().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // shared in the background

    // The backend goes down; a fresh instance (the ward and what was learned are in Redis).
    origin.kill();
    let limited = wardgate::config::Quota {
        rate: 0.1,
        burst: 1,
    };
    let second = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&first.prefix)
        .config(|c| {
            no_rate_limits(c);
            c.rate_limit.downloads = limited;
        })
        .start()
        .await;
    let p = preflight(&c, &second, APP).await;
    assert_eq!(p.status(), 200, "replayed as the backend answered it");
    assert_eq!(allowed(&p), Some(APP));
    assert_eq!(p.headers()["x-cache"], "STALE");
    let r = read(&c, &second, APP).await;
    assert_eq!(r.status(), 200);
    assert_eq!(allowed(&r), Some(APP));
    // Over the limit: the 429 is readable by the app too.
    let r = read(&c, &second, APP).await;
    assert_eq!(r.status(), 429);
    assert_eq!(allowed(&r), Some(APP));
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    // A write the backend cannot take: its 503 is readable by the app (so it keeps its marks).
    let w = c
        .post(second.citizens(&ward_query(1)))
        .header("origin", APP)
        .header("content-type", "application/json")
        .body(r#"[{"id":1,"voted":true}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(w.status(), 503);
    assert_eq!(allowed(&w), Some(APP));
    // An origin the backend was never asked about gets nothing it could misuse.
    let p = preflight(&c, &second, "http://never.example").await;
    assert!(p.status().is_server_error(), "{}", p.status());
    assert_eq!(allowed(&p), None);
    let prefix = first.prefix.clone();
    first.stop().await;
    second.stop().await;
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_cors_answers_preflights_itself() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(20)
        .cors(CorsMode::None)
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            no_rate_limits(c);
            c.cors.mode = wardgate::config::CorsMode::Configured;
            c.cors.allowed_origins = vec![APP.into()];
        })
        .start()
        .await;
    let c = client();
    let p = preflight(&c, &gate, APP).await;
    assert_eq!(p.status(), 200);
    assert_eq!(allowed(&p), Some(APP));
    assert_eq!(
        origin.stats().await["preflights"],
        0,
        "not asked of the backend"
    );
    assert_eq!(preflight(&c, &gate, STRANGER).await.status(), 403);
    assert_eq!(allowed(&read(&c, &gate, APP).await), Some(APP));
    assert_eq!(allowed(&read(&c, &gate, STRANGER).await), None);
    gate.stop().await;
}
