//! The warm lasts the night: warmed copies past max age are served `STALE` by a fresh instance
//! while the backend is down, and an instance waiting for another's build watches a few bytes
//! of Redis, not the ward.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wardgate::config::Dur;

/// A short max age, so that a warm a few seconds old stands for one a night old.
fn short_max_age(c: &mut wardgate::config::Config) {
    c.cache.snapshot_max_age = Dur(Duration::from_secs(1));
    c.cache.max_stale = Dur(Duration::from_millis(500));
    no_rate_limits(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_instance_serves_every_warmed_ward_stale_while_the_backend_is_down() {
    let origin = Origin::builder()
        .wards(4)
        .voters_per_ward(500)
        .start()
        .await;
    let prefix = unique("wgmorning");
    let out = warm_from_upstream(&origin.url(), "1-4", &prefix)
        .args(["--snapshot-max-age", "1s", "--max-stale", "500ms"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("bytes stored in Redis until"), "{stdout}");
    let c = client();
    let mut want = Vec::new();
    for w in 1..=4 {
        want.push(rows_of(&fetch(&c, origin.citizens(&ward_query(w))).await));
    }
    origin.kill();
    tokio::time::sleep(Duration::from_secs(2)).await; // the warm is now past max age and max stale
    let gate = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&prefix)
        .config(short_max_age)
        .start()
        .await;
    let ready = c.get(gate.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    for w in 1..=4u32 {
        let r = c.get(gate.citizens(&ward_query(w))).send().await.unwrap();
        assert_eq!(r.status(), 200, "ward {w}");
        assert_eq!(r.headers()["x-cache"], "STALE", "ward {w}");
        let age: u64 = r.headers()["age"].to_str().unwrap().parse().unwrap();
        assert!(age >= 2, "Age {age}");
        assert_eq!(
            rows_of(&r.bytes().await.unwrap()),
            want[w as usize - 1],
            "ward {w}"
        );
    }
    // Still the backend down: served again from L1, stale-if-error.
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert!(
        gate.metric("wardgate_stale_serves_total{outcome=\"error\"}")
            .await
            >= 5.0
    );
    gate.stop().await;
    redis_cleanup(&prefix).await;
}

fn rows_of(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_instance_watches_a_few_bytes_and_builds_once_the_holder_is_gone() {
    let redis = RedisServer::start();
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(2_000)
        .start()
        .await;
    let prefix = unique("wgwait");
    let config = |c: &mut wardgate::config::Config| {
        short_max_age(c);
        c.cache.miss_wait = Dur(Duration::from_secs(10));
    };
    let first = Gate::builder(&origin.url())
        .redis_url(&redis.url())
        .redis_prefix(&prefix)
        .config(config)
        .start()
        .await;
    let c = client();
    let whole = fetch(&c, first.citizens(&ward_query(1))).await.len() as u64;
    first.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await; // the copy in Redis is old now
                                                      // Another instance holds the ward's build lock (as if it were building it).
    let lock = format!(
        "{prefix}:lock:{prefix}:s{}:ward:{{karnataka:{ASSEMBLY}:1}}",
        wardgate::snapshot::FORMAT_VERSION
    );
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("someone-else")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut r)
        .await
        .unwrap();

    let second = Gate::builder(&origin.url())
        .redis_url(&redis.url())
        .redis_prefix(&prefix)
        .config(config)
        .start()
        .await;
    let asked = tokio::spawn({
        let (c, url) = (c.clone(), second.citizens(&ward_query(1)));
        async move {
            let r = c.get(url).send().await.unwrap();
            (
                r.headers()["x-cache"].to_str().unwrap().to_string(),
                r.bytes().await.unwrap().len(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = redis_out(&redis.url()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_sec = (redis_out(&redis.url()).await - before) / 2;
    eprintln!(
        "a waiting instance reads {per_sec} bytes/s from Redis (the ward is {whole} bytes of JSON)"
    );
    assert!(per_sec < 5_000, "{per_sec} bytes/s");
    if asked.is_finished() {
        panic!(
            "it did not wait for the lock's holder: {:?}",
            asked.await.unwrap()
        );
    }
    // The holder dies: its lock goes, and the waiter builds the ward itself, once.
    let t = Instant::now();
    let _: () = redis::cmd("DEL")
        .arg(&lock)
        .query_async(&mut r)
        .await
        .unwrap();
    let (cache, len) = asked.await.unwrap();
    eprintln!("built {:?} after the lock went", t.elapsed());
    assert_eq!((cache.as_str(), len as u64), ("MISS", whole));
    // A lock poll (every 0.5 s) and one build of the ward (debug build, a busy machine), not
    // the lock's expiry.
    assert!(t.elapsed() < Duration::from_secs(6));
    assert_eq!(
        second
            .metric("wardgate_snapshot_builds_total{source=\"upstream\"}")
            .await,
        1.0
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_replica_a_night_old_warm_of_unchanged_wards_is_served_fresh() {
    let origin = Origin::builder()
        .mysql()
        .wards(2)
        .voters_per_ward(300)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let prefix = unique("wgmorningr");
    let out = warm_from_upstream(&origin.url(), "1-2", &prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = client();
    let want = rows_of(&fetch(&c, origin.citizens(&ward_query(1))).await);
    origin.kill(); // the backend is down: only Redis and the replica answer
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gate = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&prefix)
        .config(|c| {
            short_max_age(c);
            c.mysql_url = Some(wardgate::config::Secret(format!(
                "{}/{db}",
                mysql_root_url()
            )));
        })
        .start()
        .await;
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-cache"],
        "MISS",
        "taken from Redis, vouched for by the replica"
    );
    assert_eq!(rows_of(&r.bytes().await.unwrap()), want);
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(
        r.headers()["x-cache"],
        "HIT",
        "fresh: its rows are unchanged"
    );
    assert_eq!(
        gate.metric("wardgate_snapshot_builds_total").await,
        0.0,
        "nothing built"
    );
    gate.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_that_would_not_fit_refuses_before_storing_anything() {
    let redis = RedisServer::start();
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // A Redis that holds about one ward of 2,000 voters, set to evict as the shipped one did.
    for (k, v) in [("maxmemory", "3mb"), ("maxmemory-policy", "allkeys-lru")] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let origin = Origin::builder()
        .wards(20)
        .voters_per_ward(2_000)
        .start()
        .await;
    let prefix = unique("wgfit");
    let warm = |extra: &[&str]| {
        let mut c = bin();
        c.args([
            "warm",
            "--state",
            STATE,
            "--assembly",
            ASSEMBLY,
            "--wards",
            "1-20",
        ])
        .args([
            "--upstream",
            &origin.url(),
            "--redis-url",
            &redis.url(),
            "--redis-prefix",
            &prefix,
        ])
        .args(extra);
        c.output().unwrap()
    };
    let out = warm(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("would be evicted") && stderr.contains("--allow-eviction"),
        "{stderr}"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(keys.is_empty(), "nothing stored: {keys:?}");
    // The operator's override: warmed, loudly.
    let out = warm(&["--allow-eviction"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warming anyway"));
}
