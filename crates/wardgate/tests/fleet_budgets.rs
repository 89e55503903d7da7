//! The budgets the fleet shares through Redis, against a real Redis: GCRA tokens leased in
//! batches, and the distinct wards a client reads in a day.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use wardgate::cache::fleet::Lease;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_share_one_gcra_schedule_across_instances() {
    let prefix = unique("wgfleet");
    let (a, b) = (l2(&prefix).await, l2(&prefix).await);
    let every = Duration::from_millis(100); // 10 tokens/s, burst 5
                                            // The burst is shared: what one instance leased, the other cannot.
    assert_eq!(a.lease("k", every, 5, 3).await, Some(Lease::Granted(3)));
    assert_eq!(b.lease("k", every, 5, 3).await, Some(Lease::Granted(2)));
    match a.lease("k", every, 5, 1).await {
        Some(Lease::Refused(wait)) => assert!(wait <= every, "{wait:?}"),
        other => panic!("a sixth token in the burst: {other:?}"),
    }
    // A token comes back every interval, for whichever instance asks.
    tokio::time::sleep(every + Duration::from_millis(20)).await;
    assert_eq!(b.lease("k", every, 5, 3).await, Some(Lease::Granted(1)));
    // Other keys have budgets of their own.
    assert_eq!(b.lease("other", every, 5, 5).await, Some(Lease::Granted(5)));
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wards_seen_counts_distinct_wards_per_client_and_day() {
    let prefix = unique("wgfleet");
    let (a, b) = (l2(&prefix).await, l2(&prefix).await);
    assert_eq!(a.wards_seen("c1", 20_000, &["w1", "w2"]).await, Some(2));
    assert_eq!(b.wards_seen("c1", 20_000, &["w2", "w3"]).await, Some(3));
    assert_eq!(
        b.wards_seen("c1", 20_001, &["w1"]).await,
        Some(1),
        "a new day"
    );
    assert_eq!(
        a.wards_seen("c2", 20_000, &["w1"]).await,
        Some(1),
        "another client"
    );
    redis_cleanup(&prefix).await;
}
