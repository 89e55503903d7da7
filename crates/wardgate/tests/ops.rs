//! Black-box tests of the operator's surface: warm, admin API, metrics, check-config, limits
//! and behaviour under faults.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_fills_redis_so_a_fresh_instance_never_asks_the_upstream() {
    // An assembly of 200,000 voters: 20 wards of 10,000.
    let origin = Origin::builder()
        .mysql()
        .wards(20)
        .voters_per_ward(10_000)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let prefix = unique("wgwarm");
    let warm = |force: bool| {
        let mut c = warm_cmd(&prefix);
        c.args(["--mysql-url", &format!("{}/{db}", mysql_root_url())])
            .args(["--upstream", &origin.url(), "--concurrency", "4"]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let out = warm(false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("20 wards built")
            && stdout.contains("200000 rows")
            && stdout.contains("rows/s"),
        "{stdout}"
    );
    // Its progress stays in Redis for every instance's status page: done, and until when.
    let mut r = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let record: String = redis::cmd("GET")
        .arg(format!("{prefix}:warm:progress"))
        .query_async(&mut r)
        .await
        .unwrap();
    let p: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        (
            &p["finished"],
            &p["done"],
            &p["total"],
            &p["rows"],
            &p["source"]
        ),
        (
            &true.into(),
            &20.into(),
            &20.into(),
            &200_000.into(),
            &"replica".into()
        ),
        "{p}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        p["stored_until"].as_i64().unwrap() > now_ms + 3_600_000,
        "{p}"
    );
    assert_eq!(p["eta_seconds"], 0, "{p}");
    // Resumable: a second run finds every ward fresh.
    let again = warm(false);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 wards built, 20 already fresh"));

    // A fresh instance whose upstream is unreachable serves every ward from Redis.
    let gate = Gate::builder("http://127.0.0.1:9")
        .redis()
        .redis_prefix(&prefix)
        .start()
        .await;
    let c = client();
    for w in 1..=20 {
        let r = get_gzip(&c, gate.citizens(&ward_query(w))).await;
        assert_eq!(r.status(), 200, "ward {w}");
        let rows: Vec<serde_json::Value> =
            serde_json::from_slice(&gunzip(&r.bytes().await.unwrap())).unwrap();
        assert_eq!(rows.len(), 10_000, "ward {w}");
    }
    // Byte-for-byte against the origin for a few of them.
    for w in [1, 20] {
        let want = fetch(&c, origin.citizens(&ward_query(w))).await;
        let r = c.get(gate.citizens(&ward_query(w))).send().await.unwrap();
        assert_eq!(r.status(), 200, "ward {w}");
        assert_eq!(r.bytes().await.unwrap(), want, "ward {w}");
    }
    assert_eq!(
        origin.citizens_reads().await,
        3,
        "one ward read by warm's shape probe (its second run built nothing), and this test's own two reference reads"
    );
    gate.stop().await;

    // A ward that does not exist upstream is named in a non-zero exit.
    let bad = warm_from_upstream("http://127.0.0.1:9", "1", &unique("wgwarm"))
        .arg("--force")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("karnataka/150/1"));
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_parse_and_move_and_admin_routes_need_the_token() {
    let origin = Origin::builder().start().await;
    let gate = Gate::builder(&origin.url()).redis().start().await;
    let c = client();
    let scrape = || async {
        let text = c
            .get(gate.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
    };
    let count = |s: &prometheus_parse::Scrape, cache: &str| -> f64 {
        s.samples
            .iter()
            .filter(|x| {
                x.metric == "wardgate_requests_total" && x.labels.get("cache") == Some(cache)
            })
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let before = scrape().await;
    assert!(before
        .samples
        .iter()
        .any(|x| x.metric == "wardgate_build_info" && x.labels.get("version").is_some()));
    for _ in 0..3 {
        fetch(&c, gate.citizens(&ward_query(1))).await;
    }
    let after = scrape().await;
    assert_eq!(count(&after, "MISS") - count(&before, "MISS"), 1.0);
    assert_eq!(count(&after, "HIT") - count(&before, "HIT"), 2.0);
    assert!(after.samples.iter().any(|x| x.metric == "wardgate_l1_bytes"
        && matches!(x.value, prometheus_parse::Value::Gauge(v) if v > 0.0)));

    // Admin routes: 401 without the token, then purge makes the next read a MISS.
    let r = c
        .get(gate.admin_url("/admin/snapshots"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(gate.admin_url(&format!(
            "/admin/purge?state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let list: serde_json::Value = c
        .get(gate.admin_url("/admin/snapshots"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["snapshots"][0]["rows"], 1200, "{list}");
    let r = c
        .post(gate.admin_url(&format!(
            "/admin/purge?state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    // Purged in Redis too: the ward was read from the upstream again.
    assert_eq!(origin.citizens_reads().await, 2);
    // Health and readiness.
    assert_eq!(
        c.get(gate.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(gate.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
}

#[test]
fn check_config_validates_and_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "mysql_url = \"mysql://ro:hunter2@replica:3306/sampark\"\n[citizens]\nmax_page_size = 500\n").unwrap();
    let out = bin()
        .args(["check-config", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("max_page_size = 500"));
    assert!(!stdout.contains("hunter2"), "{stdout}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[cache]\nsnapshot_max_age = \"5m\"\ndelta_overlap = \"1m\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache.delta_overlap"));
    let out = bin()
        .args(["check-config", "--snapshot-max-age", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The shipped reference config is valid.
    let out = bin()
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/wardgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_per_client_and_forwarded_addresses_count_only_from_trusted_proxies() {
    let origin = Origin::builder().start().await;
    let quota = wardgate::config::Quota {
        rate: 0.5,
        burst: 2,
    };
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.rate_limit.master = quota;
            c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".into()];
        })
        .start()
        .await;
    let c = client();
    let get = |xff: &'static str| {
        c.get(gate.url("/open/volunteer/parties"))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(get("203.0.113.1").await.unwrap().status(), 200);
    let r = get("203.0.113.1").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(r.headers()["ratelimit-limit"], "2");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    // Another client behind the same (trusted) proxy has its own budget.
    assert_eq!(get("203.0.113.2").await.unwrap().status(), 200);
    gate.stop().await;

    // From an untrusted peer the header is ignored: every "client" shares the peer's budget.
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.rate_limit.master = quota;
            c.rate_limit.trusted_proxies = vec!["10.0.0.0/8".into()];
        })
        .start()
        .await;
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
            v.push(
                c.get(gate.url("/open/volunteer/parties"))
                    .header("x-forwarded-for", ip)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429]);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_is_not_the_clients_problem() {
    let origin = Origin::builder().start().await;
    // Nothing listens on port 1: every Redis operation fails.
    let gate = Gate::builder(&origin.url())
        .redis_url("redis://127.0.0.1:1/")
        .start()
        .await;
    let c = client();
    for _ in 0..3 {
        let r = c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        origin.citizens_reads().await,
        1,
        "served from L1 after one build"
    );
    let ready = c.get(gate.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "degraded, still ready: L1 and the backend serve"
    );
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["redis"], "unreachable");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_upstream_down_cached_wards_are_served_stale_and_cold_ones_get_503() {
    let origin = Origin::builder().start().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.cache.snapshot_max_age = wardgate::config::Dur(Duration::from_millis(300));
            c.cache.miss_wait = wardgate::config::Dur(Duration::from_secs(2));
        })
        .start()
        .await;
    let c = client();
    assert_eq!(
        c.get(gate.citizens(&ward_query(1)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    origin.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "STALE");
    }
    let r = c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // A write cannot be acknowledged: the app keeps it and retries.
    let r = c
        .post(gate.citizens(&ward_query(1)))
        .body("[{\"id\":1,\"voted\":true}]")
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 502..=504), "{}", r.status());
    assert!(r.headers().contains_key("retry-after"));
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_ready_until_the_warm_share_of_target_wards_is_cached() {
    let origin = Origin::builder()
        .wards(4)
        .voters_per_ward(100)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.csv");
    std::fs::write(
        &targets,
        (1..=4)
            .map(|w| format!("{STATE},{ASSEMBLY},{w}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.ready.min_warm_percent = 50;
            c.ready.warm_targets = Some(targets.clone());
        })
        .start()
        .await;
    let c = client();
    let ready = || async {
        c.get(gate.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 503, "cold");
    c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(ready().await, 503, "25% warm");
    c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
    assert_eq!(ready().await, 200, "50% warm");
    gate.stop().await;
}
