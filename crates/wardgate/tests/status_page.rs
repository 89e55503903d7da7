//! The operator's view: `/admin/status` after real traffic (its schema, the warm targets'
//! coverage here and in Redis, the rates of the last minute), and the status page in a real
//! headless Chromium, rendering those figures under its CSP and updating itself without a
//! reload. `WARDGATE_SCREENSHOT=1` also writes the page's screenshots into `docs/`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;
use wardgate_test_support::LivePage;

/// Chromium's start and the page's first render.
const WITHIN: Duration = Duration::from_secs(30);

/// Long enough for a survey to be retaken (every 5 s) and the page to poll (every 2 s).
const UPDATED_WITHIN: Duration = Duration::from_secs(20);

/// The sample origin, and wardgate in front of it with Redis and the three wards of the test
/// assembly as warm targets.
struct Setup {
    _origin: Origin,
    gate: Gate,
    _targets: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let origin = Origin::builder()
        .wards(3)
        .voters_per_ward(200)
        .start()
        .await;
    let mut targets = tempfile::NamedTempFile::new().unwrap();
    let lines: String = (1..=3)
        .map(|w| format!("{STATE},{ASSEMBLY},{w}\n"))
        .collect();
    write!(targets, "# the test assembly\n{lines}").unwrap();
    let path = targets.path().to_path_buf();
    let gate = Gate::builder(&origin.url())
        .redis()
        .config(move |c| {
            no_rate_limits(c);
            c.ready.warm_targets = Some(path);
        })
        .start()
        .await;
    Setup {
        _origin: origin,
        gate,
        _targets: targets,
    }
}

/// Reads a ward whole; returns its `X-Cache`.
async fn read(gate: &Gate, ward: u32) -> String {
    let r = client()
        .get(gate.citizens(&ward_query(ward)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    let _ = r.bytes().await.unwrap();
    cache
}

async fn status(gate: &Gate) -> Value {
    let r = client()
        .get(gate.admin_url("/admin/status"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The status until `done` holds of it (a survey is reused for 5 s; Redis is written after
/// the answer).
async fn status_when(gate: &Gate, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + UPDATED_WITHIN;
    loop {
        let s = status(gate).await;
        if done(&s) || tokio::time::Instant::now() >= deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_document_shows_coverage_rates_and_health_after_traffic() {
    let env = setup().await;
    let gate = &env.gate;
    let url = gate.admin_url("/admin/status");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    let wrong = client()
        .get(&url)
        .bearer_auth("x".repeat(ADMIN_TOKEN.len()));
    assert_eq!(wrong.send().await.unwrap().status(), 401);

    assert_eq!(read(gate, 1).await, "MISS");
    for _ in 0..3 {
        assert_eq!(read(gate, 1).await, "HIT");
    }
    assert_eq!(read(gate, 2).await, "MISS");
    let s = status_when(gate, |s| {
        s["coverage"]["assemblies"][0]["redis"]["wards"] == 2
    })
    .await;

    assert_eq!(s["schema"], 1);
    assert_eq!(s["instance"]["version"], wardgate::respond::VERSION);
    assert_eq!(s["instance"]["config_generation"], 1);
    assert_eq!(s["ready"]["ready"], true, "{s}");
    let a = &s["coverage"]["assemblies"][0];
    assert_eq!(
        s["coverage"]["assemblies"].as_array().unwrap().len(),
        1,
        "{s}"
    );
    // Named as wardgate keys it: the state in lower case.
    let state = STATE.to_ascii_lowercase();
    assert_eq!(
        (a["state"].as_str(), a["assembly"].as_str()),
        (Some(state.as_str()), Some(ASSEMBLY))
    );
    assert_eq!(
        (
            &a["target_wards"],
            &a["fresh"],
            &a["stale"],
            &a["missing"],
            &a["in_l1"]
        ),
        (&3.into(), &2.into(), &0.into(), &1.into(), &2.into()),
        "{a}"
    );
    let now = wardgate::time::EpochMs::now().0;
    assert!(a["redis"]["bytes"].as_u64().unwrap() > 1000, "{a}");
    // Stored for the cache's Redis TTL (48 h by default).
    assert!(
        a["redis"]["until_first_ms"].as_i64().unwrap() > now + 47 * 3_600_000,
        "{a}"
    );

    // 3 HITs of 5 reads, all within the window (wardgate started less than a minute ago).
    let t = &s["traffic"];
    assert!((t["hit_ratio"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{t}");
    assert_eq!(t["answers_total"], 5.0, "{t}");
    assert!(t["reads_per_second"]["HIT"].as_f64().unwrap() > 0.0, "{t}");
    assert!(
        s["backend"]["requests_per_second"].as_f64().unwrap() > 0.0,
        "{s}"
    );
    assert!(
        s["backend"]["bytes_per_second"].as_f64().unwrap() > 10_000.0 / 60.0,
        "{s}"
    );
    assert!(s["builds"]["p99_seconds"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["builds"]["in_flight"], 0);
    assert_eq!(s["too_many_requests"]["per_second"], 0.0);
    assert_eq!(
        s["stale_serves_per_second"]["error"], 0.0,
        "causes are listed even at 0"
    );
    let l1 = &s["l1"];
    assert!(l1["bytes"].as_u64().unwrap() > 0 && l1["bytes"].as_u64() < l1["bound_bytes"].as_u64());
    assert_eq!(
        (&s["redis"]["configured"], &s["redis"]["up"]),
        (&true.into(), &true.into())
    );
    assert_eq!(s["replica"]["configured"], false);
    assert_eq!(s["warm"]["run"], Value::Null);

    // A reload is a new generation.
    let running = gate.running.as_ref().unwrap();
    running.reload((*gate.shared().live.load_full()).clone());
    assert_eq!(status(gate).await["instance"]["config_generation"], 2);
    redis_cleanup(&gate.prefix).await;
    env.gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_a_token_under_a_strict_csp() {
    let env = setup().await;
    let gate = &env.gate;
    let r = client().get(gate.admin_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for part in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "img-src data:",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    let page = r.text().await.unwrap();
    assert!(page.contains("/admin/status") && !page.contains(ADMIN_TOKEN));
    let post = client().post(gate.admin_url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    redis_cleanup(&gate.prefix).await;
    env.gate.stop().await;
}

/// Runs blocking DevTools calls off the async workers (wardgate keeps serving on them).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The hit ratio shown, once the page shows one.
const HIT_RATIO: &str = "(() => { const t = document.getElementById('hit-ratio')?.textContent; \
                         return /^[0-9.]+%$/.test(t || '') ? t : null; })()";

/// The counts of the test assembly's coverage bar.
const COUNTS: &str =
    "document.querySelector('[data-assembly=\"karnataka/150\"] .counts')?.textContent";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_in_chromium_and_updates_without_a_reload() {
    let env = setup().await;
    let gate = &env.gate;
    assert_eq!(read(gate, 1).await, "MISS");
    for _ in 0..3 {
        assert_eq!(read(gate, 1).await, "HIT");
    }
    let url = format!("http://{}/?token={ADMIN_TOKEN}", gate.admin);
    let mut page = blocking(|| LivePage::open(&url, WITHIN));
    blocking(|| {
        let name = "document.querySelector('[data-assembly=\"karnataka/150\"] .name')?.textContent";
        assert_eq!(page.wait_for(name, WITHIN), "karnataka / 150");
        assert_eq!(
            page.wait_for(HIT_RATIO, WITHIN),
            "75.0%",
            "3 HITs of 4 reads"
        );
        // The token left the address bar for this tab's storage.
        assert_eq!(page.eval("location.search"), "");
        assert_eq!(
            page.eval("sessionStorage.getItem('wardgate-admin-token')"),
            ADMIN_TOKEN
        );
        // The CSP let the inline script run (it drew the above) and the inline style apply.
        assert_eq!(
            page.eval("getComputedStyle(document.querySelector('main')).display"),
            "grid"
        );
        page.eval("window.wardgateProbe = 'same document'");
    });
    let refreshes =
        blocking(|| page.eval("Number(document.getElementById('updated').dataset.refreshes)"));

    for ward in [2, 3] {
        assert_eq!(read(gate, ward).await, "MISS");
    }
    for _ in 0..4 {
        assert_eq!(read(gate, 1).await, "HIT");
    }
    publish_warm_progress(&gate.prefix).await;
    blocking(|| {
        assert_eq!(
            page.wait_for(&format!("{HIT_RATIO} === '70.0%'"), UPDATED_WITHIN),
            true
        );
        let all_fresh = format!("({COUNTS} || '').startsWith('3 fresh')");
        assert_eq!(page.wait_for(&all_fresh, UPDATED_WITHIN), true);
        let warm =
            "document.getElementById('warm').textContent.includes('Running warm: 1 of 3 wards · 1,200 rows/s from the replica · ETA 120')";
        assert_eq!(page.wait_for(warm, UPDATED_WITHIN), true);
        // Updated in place: the same document, loaded once, refreshed since.
        assert_eq!(page.eval("window.wardgateProbe"), "same document");
        assert_eq!(page.eval("document.body.dataset.loads"), "1");
        assert_eq!(
            page.eval("performance.getEntriesByType('navigation')[0].type"),
            "navigate"
        );
        let now = page.eval("Number(document.getElementById('updated').dataset.refreshes)");
        assert!(
            now.as_f64() > refreshes.as_f64(),
            "{now} refreshes, {refreshes} before"
        );
        screenshot(&mut page, "status-page.png");

        // On a phone the panels stack and nothing scrolls sideways.
        page.resize(390, 844, true);
        std::thread::sleep(Duration::from_millis(300));
        let columns = "getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length";
        assert_eq!(page.eval(columns), 1);
        let fits = "document.documentElement.scrollWidth <= window.innerWidth";
        assert_eq!(page.eval(fits), true);
        screenshot(&mut page, "status-page-phone.png");
    });
    drop(page);
    redis_cleanup(&gate.prefix).await;
    env.gate.stop().await;
}

/// What a running `wardgate warm` publishes for the status page, as it publishes it.
async fn publish_warm_progress(prefix: &str) {
    use wardgate::cache::warm_progress::WarmProgress;
    use wardgate::time::EpochMs;
    let target = wardgate::cache::topology::RedisTarget::single(&redis_url()).unwrap();
    let l2 = wardgate::cache::l2::L2::start(
        &target,
        prefix,
        std::sync::Arc::new(wardgate::metrics::Metrics::new()),
    );
    while !l2.ping().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = EpochMs::now();
    l2.publish_warm(&WarmProgress {
        started: EpochMs(now.0 - 60_000),
        updated: now,
        source: "replica".into(),
        total: 3,
        done: 1,
        failed: 0,
        rows: 72_000,
        rows_per_sec: 1_200,
        eta_seconds: Some(120),
        stored_until: EpochMs(now.0 + 48 * 3_600_000),
        finished: false,
    })
    .await;
}

/// With `WARDGATE_SCREENSHOT=1`, the page as shown now, into `docs/NAME`.
fn screenshot(page: &mut LivePage, name: &str) {
    if std::env::var_os("WARDGATE_SCREENSHOT").is_some_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        page.screenshot(&docs.join(name));
    }
}
