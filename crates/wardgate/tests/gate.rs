//! Builds from the read replica pass the backend gate and end within their time bound, like
//! builds from the upstream: a replica that accepts connections and never answers cannot hold
//! more than the gate's slots, nor hold them for ever.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wardgate::config::{Dur, Secret};

/// A TCP server that accepts connections and never says a word: a replica that hangs.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let (url, task, _) = counting_silent_server().await;
    (url, task)
}

/// The same, counting the connections it was offered.
async fn counting_silent_server() -> (
    String,
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    (format!("mysql://root@{addr}/silent"), task, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_holds_at_most_its_pool_of_replica_connections() {
    let origin = Origin::builder().wards(6).start().await;
    let (replica, silent, offered) = counting_silent_server().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.mysql_url = Some(Secret(replica));
            c.replica.pool_max = 2;
            c.replica.watch_every = Dur(Duration::ZERO);
            c.limits.upstream_timeout = Dur(Duration::from_millis(700));
            no_rate_limits(c);
        })
        .start()
        .await;
    gate.shared()
        .cache
        .replica_trust()
        .assume(wardgate::legacy::RowFormat::default());
    let c = client();
    // Six cold wards at once, every one wanting a replica connection.
    let asks: Vec<_> = (1..=6)
        .map(|w| {
            let (c, url) = (c.clone(), gate.citizens(&ward_query(w)));
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = offered.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("{seen} connections offered to the replica by 6 cold wards, pool_max 2");
    assert!((1..=2).contains(&seen), "{seen} connections");
    for a in asks {
        let _ = a.await;
    }
    gate.stop().await;
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_builds_hold_a_gate_slot_and_time_out() {
    let origin = Origin::builder().start().await;
    let (replica, silent) = silent_server().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.mysql_url = Some(Secret(replica));
            c.limits.upstream_max_inflight = 1;
            c.limits.max_queued_upstream = 0;
            c.limits.upstream_timeout = Dur(Duration::from_millis(300));
            c.cache.miss_wait = Dur(Duration::from_secs(10));
        })
        .start()
        .await;
    // As if the shape probe had passed: builds go to the (silent) replica.
    let format = wardgate::legacy::RowFormat::default();
    gate.shared().cache.replica_trust().assume(format);
    let c = client();

    // Ward 1's build takes the one slot and hangs on the replica...
    let first = tokio::spawn({
        let (c, url) = (c.clone(), gate.citizens(&ward_query(1)));
        async move {
            let t = Instant::now();
            let r = c.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap(),
                t.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so ward 2's build finds the gate full (no queue) and is shed at once.
    let t = Instant::now();
    let r = c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("concurrency limit"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "shed, not queued");

    // Ward 1's build ends at its bound (2 x upstream_timeout), long before miss_wait.
    let (status, body, took) = first.await.unwrap();
    assert_eq!(status, 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did not finish within"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        origin.citizens_reads().await,
        0,
        "wards come from the replica"
    );
    silent.abort();
    gate.stop().await;
}
