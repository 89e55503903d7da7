//! The budgets the fleet shares through Redis, against a real Redis: GCRA tokens charged in
//! batches, and the distinct wards a client reads in a day.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use wardgate::cache::fleet::Spent;
use wardgate::cache::l2::L2;
use wardgate::cache::topology::RedisTarget;

async fn l2(prefix: &str) -> Arc<L2> {
    let target = RedisTarget::single(&redis_url()).unwrap();
    let l2 = L2::start(&target, prefix, Arc::new(wardgate::metrics::Metrics::new()));
    while !l2.ping().await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    l2
}

fn spent(bucket: &(dyn std::fmt::Display + Sync), tokens: u32) -> Spent<'_> {
    // 10 tokens/s, burst 5
    Spent {
        bucket,
        interval: Duration::from_millis(100),
        burst: 5,
        tokens,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_spent_on_any_instance_are_charged_to_one_gcra_schedule() {
    let prefix = unique("wgfleet");
    let (a, b) = (l2(&prefix).await, l2(&prefix).await);
    let every = Duration::from_millis(100);
    // The burst is shared: what one instance spent, the other sees spent.
    assert_eq!(
        a.charge(&[spent(&"k", 3)]).await,
        Some(vec![Duration::ZERO])
    );
    let waits = b.charge(&[spent(&"k", 2)]).await.unwrap();
    assert!(waits[0] > Duration::ZERO && waits[0] <= every, "{waits:?}");
    // Spent tokens are charged even past the burst (they were served): the wait grows.
    let waits = a.charge(&[spent(&"k", 2)]).await.unwrap();
    assert!(waits[0] > 2 * every, "{waits:?}");
    // One call answers many buckets, in order; other buckets have budgets of their own.
    let waits = b
        .charge(&[spent(&"other", 5), spent(&"k", 0), spent(&"third", 1)])
        .await
        .unwrap();
    assert_eq!(waits.len(), 3);
    assert!(waits[0] > Duration::ZERO && waits[0] <= every, "{waits:?}");
    assert!(waits[1] > 2 * every, "{waits:?}");
    assert_eq!(waits[2], Duration::ZERO);
    // A token comes back every interval, for whichever instance spends it.
    tokio::time::sleep(3 * every + Duration::from_millis(50)).await;
    assert_eq!(
        a.charge(&[spent(&"k", 0)]).await,
        Some(vec![Duration::ZERO])
    );
    // More buckets than one call carries are charged in several, answered in order.
    let names: Vec<String> = (0..1100).map(|i| format!("m{i}")).collect();
    let many: Vec<Spent> = (0..1100)
        .map(|i| spent(&names[i], 4 + (i % 2) as u32))
        .collect();
    let waits = a.charge(&many).await.unwrap();
    assert_eq!(waits.len(), 1100);
    for (i, w) in waits.iter().enumerate() {
        assert_eq!(w.is_zero(), i % 2 == 0, "bucket m{i}: {w:?}");
    }
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_distinct_wards_a_day_stay_within_its_budget_fleet_wide() {
    let prefix = unique("wgfleet");
    let (a, b) = (l2(&prefix).await, l2(&prefix).await);
    let w = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    const DAY: i64 = 20_000;
    assert_eq!(
        a.admit_wards("c1", DAY, 3, &w(&["w1", "w2"])).await,
        Some((true, 2))
    );
    assert_eq!(
        b.admit_wards("c1", DAY, 3, &w(&["w2", "w3"])).await,
        Some((true, 3))
    );
    // Past the budget on the other instance: refused, and not counted.
    assert_eq!(
        a.admit_wards("c1", DAY, 3, &w(&["w4"])).await,
        Some((false, 3))
    );
    // A ward already read is read again, whichever instance is asked.
    assert_eq!(
        a.admit_wards("c1", DAY, 3, &w(&["w3", "w1"])).await,
        Some((true, 3))
    );
    // An assembly-wide read is all its wards or none.
    assert_eq!(
        b.admit_wards("c2", DAY, 3, &w(&["w1", "w2", "w3", "w4"]))
            .await,
        Some((false, 0))
    );
    assert_eq!(
        b.admit_wards("c1", DAY + 1, 3, &w(&["w9"])).await,
        Some((true, 1)),
        "a new day"
    );
    redis_cleanup(&prefix).await;
}

/// Requests from one client, as fast as 8 connections go, round-robin over `gates`, for
/// `secs`: (answers served, requests sent, seconds from the first request to the last answer).
async fn round_robin(gates: &[Gate], secs: f64) -> (u64, u64, f64) {
    let urls: Vec<String> = gates.iter().map(|g| g.citizens(&ward_query(1))).collect();
    let c = client();
    let (served, sent) = (
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
        Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, urls, served, sent) = (c.clone(), urls.clone(), served.clone(), sent.clone());
            tokio::spawn(async move {
                while t0.elapsed().as_secs_f64() < secs {
                    let i = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
                    let r = c.get(&urls[i % urls.len()]).send().await.unwrap();
                    if r.status() == 200 {
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        assert_eq!(r.status(), 429);
                    }
                    let _ = r.bytes().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    (load(&served), load(&sent), t0.elapsed().as_secs_f64())
}

/// `n` instances sharing one Redis prefix, downloads limited to `rate`/s (burst `rate`).
async fn fleet(origin: &Origin, n: usize, rate: f64, shared: bool) -> Vec<Gate> {
    let prefix = unique("wgfleet");
    let mut gates = Vec::new();
    for _ in 0..n {
        let g = Gate::builder(&origin.url())
            .redis()
            .redis_prefix(&prefix)
            .config(|c| {
                no_rate_limits(c);
                c.rate_limit.downloads = wardgate::config::Quota {
                    rate,
                    burst: rate as u32,
                };
                c.rate_limit.shared = shared;
            })
            .start()
            .await;
        gates.push(g);
    }
    gates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_behind_round_robin_hold_a_client_to_its_rate_plus_the_leases() {
    let origin = Origin::builder().wards(1).voters_per_ward(20).start().await;
    for (n, rate) in [(3, 30.0), (2, 60.0), (3, 100.0)] {
        let lease = (rate * 0.05f64).floor().max(1.0);
        let gates = fleet(&origin, n, rate, true).await;
        let (served, sent, secs) = round_robin(&gates, 2.0).await;
        // GCRA allows the burst and then the rate; the leases add at most one each per
        // instance and bucket.
        let allowed = rate + rate * secs;
        let bound = allowed + n as f64 * lease * 2.0 + 1.0;
        eprintln!("{n} instances at {rate}/s: {served} of {sent} served in {secs:.2}s (one limiter allows {allowed:.0}, bound {bound:.0})");
        assert!((served as f64) <= bound, "{served} > {bound:.0}");
        let offered = allowed.min(sent as f64);
        assert!(
            (served as f64) >= 0.8 * offered,
            "{served}: the fleet undershoots"
        );
        assert!(
            served as f64 <= 1.2 * allowed,
            "{served}: more than 20% over the rate"
        );
        for g in gates {
            g.stop().await;
        }
    }
    // The same without sharing: each instance gives the client its own budget.
    let gates = fleet(&origin, 3, 30.0, false).await;
    let (served, _, secs) = round_robin(&gates, 2.0).await;
    assert!(
        served as f64 > 2.0 * (30.0 + 30.0 * secs),
        "{served}: per-instance limits"
    );
    for g in gates {
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_walking_more_wards_than_its_budget_is_refused_across_the_fleet() {
    let origin = Origin::builder().wards(5).voters_per_ward(20).start().await;
    let prefix = unique("wgbudget");
    let gate = || {
        Gate::builder(&origin.url())
            .redis()
            .redis_prefix(&prefix)
            .config(|c| {
                no_rate_limits(c);
                c.ward_budget.per_device = 2;
                c.ward_budget.per_address = 3;
            })
            .start()
    };
    let (a, b) = (gate().await, gate().await);
    let c = client();
    let read = |g: &Gate, ward: u32, device: Option<&str>| {
        let mut r = c.get(g.citizens(&ward_query(ward)));
        if let Some(d) = device {
            r = r.header("x-device-id", d);
        }
        r.send()
    };
    // The address reads three wards, over both instances: its budget.
    for (g, w) in [(&a, 1), (&b, 2), (&a, 3)] {
        assert_eq!(read(g, w, None).await.unwrap().status(), 200, "ward {w}");
    }
    let r = read(&b, 4, None).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["limited_by"], "address_ward_budget", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("budget is 3"),
        "{body}"
    );
    // Its wards stay available, on either instance.
    for (g, w) in [(&b, 1), (&a, 2), (&b, 3)] {
        assert_eq!(
            read(g, w, None).await.unwrap().status(),
            200,
            "re-read of ward {w}"
        );
    }
    // A device names its own budget, inside its address's: new wards are still past the
    // address's, and made-up device ids do not reset it.
    let r = read(&a, 5, Some("phone-1")).await.unwrap();
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["limited_by"], "address_ward_budget", "{body}");
    assert_eq!(
        a.metric("wardgate_ward_budget_refused_total{outcome=\"address\"}")
            .await
            + b.metric("wardgate_ward_budget_refused_total{outcome=\"address\"}")
                .await,
        2.0
    );
    a.stop().await;
    b.stop().await;
    redis_cleanup(&prefix).await;
}
