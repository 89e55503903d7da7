//! Freshness and the write path under faults: gap-free deltas, writes across upstream restarts,
//! Redis restarts, coalesced renewals. Fault tests kill only processes they started.

mod support;

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::*;
use wardgate::config::Dur;

fn rows_by_id(v: Value) -> HashMap<i64, Value> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r.clone()))
        .collect()
}

/// One legacy sync: the rows of a delta, upserted by id as the app does.
async fn sync(c: &reqwest::Client, url: String, copy: &mut HashMap<i64, Value>) {
    let rows: Value = fetch_json(c, url).await;
    copy.extend(rows_by_id(rows));
}

fn now_ms() -> i64 {
    wardgate::time::EpochMs::now().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_legacy_syncing_client_converges_with_zero_missed_and_zero_phantom_rows() {
    let origin = Origin::builder()
        .mysql()
        .wards(1)
        .voters_per_ward(400)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let max_age = Duration::from_millis(1500);
    let gate = Gate::builder(&origin.url())
        .redis()
        .config(|c| {
            no_rate_limits(c);
            c.cache.snapshot_max_age = Dur(max_age);
            c.cache.max_stale = Dur(Duration::from_secs(2));
            c.cache.clock_skew = Dur(Duration::from_millis(500));
        })
        .start()
        .await;
    let c = client();
    let q =
        |date: i64| format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date={date}&boothNos=-1");

    // The legacy protocol: a full download, then deltas with the app's own clock as `date`.
    let mut clock = now_ms();
    let mut copy = rows_by_id(fetch_json(&c, gate.citizens(&q(-1))).await);
    let ids: Vec<i64> = copy.keys().copied().collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    // Writer 1: sync POSTs through wardgate.
    let w1 = {
        let (c, url, ids, stop, writes) = (
            c.clone(),
            gate.citizens(&q(-1)),
            ids.clone(),
            stop.clone(),
            writes.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = ids[(n as usize * 7) % ids.len()];
                let body = format!("[{{\"id\":{id},\"mobile\":\"9{:09}\"}}]", n);
                let r = c.post(&url).body(body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                writes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    // Writer 2: straight into MariaDB, behind wardgate's back.
    let w2 = {
        let (pool, ids, stop, writes) =
            (mysql_pool(&db), ids.clone(), stop.clone(), writes.clone());
        tokio::spawn(async move {
            let mut conn = pool.get_conn().await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let id = ids[(n as usize * 13 + 5) % ids.len()];
                conn.exec_drop(
                    "UPDATE citizen SET party_preference = ?, modifieddate = NOW(3) WHERE id = ?",
                    (format!("P{n}"), id),
                )
                .await
                .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let next_clock = now_ms();
        sync(&c, gate.citizens(&q(clock)), &mut copy).await;
        clock = next_clock;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    w1.await.unwrap();
    w2.await.unwrap();
    assert!(writes.load(Ordering::Relaxed) > 50);

    // One max age after the writers stop, a couple of ordinary syncs bring the copy level.
    tokio::time::sleep(max_age + Duration::from_millis(300)).await;
    for _ in 0..3 {
        let next_clock = now_ms();
        sync(&c, gate.citizens(&q(clock)), &mut copy).await;
        clock = next_clock;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let table = rows_by_id(fetch_json(&c, origin.citizens(&q(-1))).await);
    let missed: Vec<_> = table
        .iter()
        .filter(|(id, row)| copy.get(id) != Some(row))
        .map(|(id, _)| id)
        .collect();
    let phantom: Vec<_> = copy.keys().filter(|id| !table.contains_key(id)).collect();
    assert!(
        missed.is_empty(),
        "{} rows differ from the table: {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert!(phantom.is_empty(), "phantom rows: {phantom:?}");
    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_upstream_restarts_and_cached_wards_keep_being_served() {
    // The database and a killable origin process.
    let seeded = Origin::builder()
        .mysql()
        .wards(2)
        .voters_per_ward(1500)
        .start()
        .await;
    let db = seeded.database.clone().unwrap();
    let url = format!("{}/{db}", mysql_root_url());
    let port = free_port();
    let upstream = Arc::new(std::sync::Mutex::new(origin_process(&url, port)));
    let gate = Gate::builder(&format!("http://127.0.0.1:{port}"))
        .config(|c| {
            no_rate_limits(c);
            c.cache.snapshot_max_age = Dur(Duration::from_millis(500));
            c.cache.max_stale = Dur(Duration::from_secs(5));
            c.cache.clock_skew = Dur(Duration::from_millis(500));
            c.limits.upstream_timeout = Dur(Duration::from_secs(5));
        })
        .start()
        .await;
    let c = client();
    let ward1 = rows_by_id(fetch_json(&c, gate.citizens(&ward_query(1))).await);
    assert_eq!(
        c.get(gate.citizens(&ward_query(2)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ids: Vec<i64> = ward1.keys().copied().collect();

    // Readers of ward 2 (cached) while ward 1 takes the writes.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (c, url, stop) = (c.clone(), gate.citizens(&ward_query(2)), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut stale, mut bad) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url).send().await.unwrap();
                if r.status() == 200 {
                    ok += 1;
                    stale += usize::from(r.headers()["x-cache"] == "STALE");
                } else {
                    bad += 1;
                }
                let _ = r.bytes().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, stale, bad)
        })
    };
    // The backend is killed and restarted three times during the writes.
    let killer = {
        let (upstream, url, stop) = (upstream.clone(), url.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(900));
                upstream.lock().unwrap().kill();
                std::thread::sleep(Duration::from_millis(700));
                *upstream.lock().unwrap() = origin_process(&url, port);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    // 1,200 sync POSTs, each changing one row to a value of its own. Like the app after its
    // first download, they carry a delta `date`, so each answer is small.
    let delta_url = gate.citizens(&format!(
        "state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date={}&boothNos=-1",
        now_ms()
    ));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i64, String)>::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (c, url, ids, acked, failed) = (
            c.clone(),
            delta_url.clone(),
            ids.clone(),
            acked.clone(),
            failed.clone(),
        );
        writers.push(tokio::spawn(async move {
            for i in 0..300usize {
                let id = ids[(w * 300 + i) % ids.len()];
                let mobile = format!("8{:09}", w * 1000 + i);
                let body = format!("[{{\"id\":{id},\"mobile\":\"{mobile}\"}}]");
                match c.post(&url).body(body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        acked.lock().unwrap().push((id, mobile));
                    }
                    Ok(r) => {
                        assert!(matches!(r.status().as_u16(), 502..=504), "{}", r.status());
                        assert!(r.headers().contains_key("retry-after"));
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.unwrap();
    let (ok, stale, bad) = reader.await.unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 300, "{} acknowledged", acked.len());
    let pool = mysql_pool(&db);
    let mut conn = pool.get_conn().await.unwrap();
    let in_db: HashMap<i64, Option<String>> = conn
        .query::<(i64, Option<String>), _>("SELECT id, mobile FROM citizen")
        .await
        .unwrap()
        .into_iter()
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(id, m)| in_db.get(id) != Some(&Some(m.clone())))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in MariaDB: {lost:?}");
    assert_eq!(
        bad, 0,
        "reads of a cached ward failed while the upstream was down"
    );
    assert!(ok > 20 && stale > 0, "ok={ok} stale={stale}");
    eprintln!(
        "writes: {} acknowledged, {} refused for retry; reads: {ok} ok ({stale} stale)",
        acked.len(),
        failed.load(Ordering::Relaxed)
    );
    gate.stop().await;
    seeded.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_and_restarted_under_read_load() {
    let origin = Origin::builder()
        .wards(4)
        .voters_per_ward(300)
        .start()
        .await;
    // A Redis of its own, to kill and bring back on the same port.
    let mut redis = RedisServer::start();
    let gate = Gate::builder(&origin.url())
        .redis_url(&redis.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    for w in 1..=3 {
        assert_eq!(
            c.get(gate.citizens(&ward_query(w)))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, gate_urls, stop) = (
            c.clone(),
            (1..=3)
                .map(|w| gate.citizens(&ward_query(w)))
                .collect::<Vec<_>>(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0, 0);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&gate_urls[i % 3]).send().await.unwrap();
                if r.status().is_server_error() {
                    bad += 1;
                } else {
                    ok += 1;
                }
                let _ = r.bytes().await;
                i += 1;
            }
            (ok, bad)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Degraded, not unready: L1 and the backend still serve, so the load balancer keeps it.
    let ready = c.get(gate.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["redis"], "unreachable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(gate.metric("wardgate_redis_up").await, 0.0);
    let _redis = RedisServer::start_on(redis.port()); // back, empty
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = load.await.unwrap();
    assert_eq!(bad, 0);
    assert!(ok > 50);
    let t = Instant::now();
    while gate.metric("wardgate_redis_up").await != 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "Redis never seen back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // wardgate uses Redis again: a new ward's snapshot lands in the restarted server.
    assert_eq!(
        c.get(gate.citizens(&ward_query(4)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:s*:ward:*:4*", gate.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wardgate did not write to the restarted Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_sync_posts_to_one_ward_causes_few_rebuilds_and_bad_bodies_are_refused() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(2000)
        .latency(Duration::from_millis(50))
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let url = gate.citizens(&ward_query(1));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let builds = |gate: &Gate| -> u64 {
        gate.shared()
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("wardgate_snapshot_builds_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let before = builds(&gate);
    let mut tasks = Vec::new();
    for i in 0..150 {
        let (c, url) = (c.clone(), url.clone());
        // Bogus but well-formed: ids that do not exist. The backend answers 200.
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(&url)
                .body(format!("[{{\"id\":{},\"voted\":true}}]", 999_000_000 + i))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Let the renewals settle, then count.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rebuilds = builds(&gate) - before;
    assert!(
        (1..=6).contains(&rebuilds),
        "{rebuilds} rebuilds for 150 writes"
    );

    // Oversized and malformed bodies never reach the backend. Count from a quiet backend: a
    // renewal still running on a loaded machine would otherwise land in the count.
    let reads = quiet_requests(&origin).await;
    let big = format!("[{{\"id\":1,\"address\":\"{}\"}}]", "x".repeat(3 << 20));
    let r = c.post(&url).body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .contains("larger"));
    assert_eq!(origin.stats().await["requests"].as_u64().unwrap(), reads);
    let seen: HashSet<u16> = [r#"[{"id":"x"}]"#, "[", "[{}]"]
        .iter()
        .map(|b| {
            let c = c.clone();
            let url = url.clone();
            let b = b.to_string();
            async move { c.post(&url).body(b).send().await.unwrap().status().as_u16() }
        })
        .collect::<futures_util::stream::FuturesUnordered<_>>()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    assert_eq!(seen, HashSet::from([400]));
    assert_eq!(origin.stats().await["requests"].as_u64().unwrap(), reads);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upstream_never_sees_more_than_the_cap_and_the_excess_gets_503() {
    let origin = Origin::builder()
        .wards(12)
        .voters_per_ward(50)
        .latency(Duration::from_millis(400))
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            no_rate_limits(c);
            c.limits.upstream_max_inflight = 2;
            c.limits.max_queued_upstream = 2;
        })
        .start()
        .await;
    let c = client();
    let mut tasks = Vec::new();
    for w in 1..=12 {
        let (c, url) = (c.clone(), gate.citizens(&ward_query(w)));
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (503, true) => shed += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ok + shed, 12);
    assert!(ok >= 2 && shed >= 1, "ok={ok} shed={shed}");
    let max = origin.stats().await["max_inflight"].as_u64().unwrap();
    assert!(max <= 2, "the backend saw {max} concurrent requests");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_backend_is_not_asked_at_the_rate_requests_arrive() {
    // A backend that answers every request with 500, counting them.
    let (upstream, hits) =
        canned_backend(|_| ("500 Internal Server Error", "text/plain", String::new())).await;
    let gate = Gate::builder(&upstream)
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(600) {
        let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        n += 1;
    }
    assert!(n > 20, "{n} requests");
    let asked = hits.load(Ordering::SeqCst);
    assert!(
        asked <= 2,
        "{n} requests in 0.6 s asked the failing backend {asked} times"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_lock_is_released_only_by_its_holder() {
    use wardgate::cache::l2::{Lock, L2};
    use wardgate::cache::CacheKey;
    let prefix = unique("wglock");
    let metrics = Arc::new(wardgate::metrics::Metrics::new());
    let target = wardgate::cache::topology::RedisTarget::single(&redis_url()).unwrap();
    let a = L2::start(&target, &prefix, metrics.clone());
    let b = L2::start(&target, &prefix, metrics);
    while !(a.ping().await && b.ping().await) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let key = CacheKey::Ward(wardgate::params::WardKey::parse(STATE, ASSEMBLY, "1").unwrap());
    // A's lock expires while its build runs long; B takes it over.
    let Lock::Held(a_token) = a.try_lock(&key, Duration::from_millis(150)).await else {
        panic!("A takes the free lock")
    };
    assert!(matches!(
        b.try_lock(&key, Duration::from_secs(5)).await,
        Lock::Busy
    ));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let Lock::Held(b_token) = b.try_lock(&key, Duration::from_secs(5)).await else {
        panic!("B takes the expired lock")
    };
    // A finishing late must not release B's lock.
    a.unlock(&key, &a_token).await;
    assert!(matches!(
        a.try_lock(&key, Duration::from_secs(5)).await,
        Lock::Busy
    ));
    b.unlock(&key, &b_token).await;
    assert!(matches!(
        a.try_lock(&key, Duration::from_secs(5)).await,
        Lock::Held(_)
    ));
    redis_cleanup(&prefix).await;
}

/// The backend's request count once it has stopped moving (two reads 300 ms apart agree).
async fn quiet_requests(origin: &Origin) -> u64 {
    let mut last = origin.requests().await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = origin.requests().await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the backend kept receiving requests for 12 s");
}

/// A cold build that fails fails for everyone who joined it, at once and with one backend
/// request: each waiter gets the same 503 with `Retry-After`, none waits for `miss_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_build_reaches_every_waiter_at_once() {
    let (upstream, hits) = canned_backend(|_| {
        // Slow enough that every waiter has joined the build before it fails.
        std::thread::sleep(Duration::from_millis(400));
        (
            "502 Bad Gateway",
            "text/html",
            "<html>bad gateway</html>".into(),
        )
    })
    .await;
    let gate = Gate::builder(&upstream)
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let start = Instant::now();
    let waiters: Vec<_> = (0..30)
        .map(|_| {
            let (c, url) = (c.clone(), gate.citizens(&ward_query(1)));
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                let retry = r.headers().contains_key("retry-after");
                let body: serde_json::Value = r.json().await.unwrap();
                (retry, body, start.elapsed())
            })
        })
        .collect();
    for w in waiters {
        let (retry, body, at) = w.await.unwrap();
        assert_eq!(body["status"], 503, "{body}");
        assert!(retry, "Retry-After on {body}");
        assert!(at < Duration::from_secs(3), "failed after {at:?}");
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one build"
    );
    gate.stop().await;
}
