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
