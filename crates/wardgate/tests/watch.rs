//! Freshness by change: with a replica, a ward stays valid until its rows change, and a change
//! made straight in the database reaches its cached ward within the watch interval, with no
//! client request and no rebuild of the unchanged ward beside it.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wardgate::config::{Dur, Secret};

/// Builds counted so far, every source.
async fn builds(gate: &Gate) -> f64 {
    gate.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("wardgate_snapshot_builds_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_direct_update_under_the_newest_stamp_reaches_its_ward_and_nothing_else_is_rebuilt() {
    let origin = Origin::builder()
        .mysql()
        .wards(2)
        .voters_per_ward(400)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.mysql_url = Some(Secret(format!("{}/{db}", mysql_root_url())));
            c.replica.watch_every = Dur(Duration::from_millis(200));
            // Max age alone would renew both wards while this test runs.
            c.cache.snapshot_max_age = Dur(Duration::from_secs(2));
            no_rate_limits(c);
        })
        .start()
        .await;
    let c = client();
    let ward = |w: u32| gate.citizens(&ward_query(w));
    let one: Vec<Value> = fetch_json(&c, ward(1)).await;
    let _: Vec<Value> = fetch_json(&c, ward(2)).await;
    let before = builds(&gate).await;
    assert!(before >= 2.0, "both wards were built: {before}");

    // Straight in the database (an admin upload, another service): a row of ward 1 changed and
    // stamped under the ward's newest stamp, so MAX(modifieddate) and COUNT(*) stay the same.
    let id = one[10]["id"].as_i64().unwrap();
    let pool = mysql_pool(&db);
    {
        use mysql_async::prelude::Queryable;
        let mut conn = pool.get_conn().await.unwrap();
        let sql = "UPDATE citizen SET party_preference = 'Changed', \
                   modifieddate = (SELECT m FROM (SELECT MIN(modifieddate) AS m FROM citizen \
                   WHERE ward_no = '1') t) WHERE id = ?";
        conn.exec_drop(sql, (id,)).await.unwrap();
    }
    let t = Instant::now();
    loop {
        let rows: Vec<Value> = fetch_json(&c, ward(1)).await;
        let row = rows.iter().find(|r| r["id"].as_i64() == Some(id)).unwrap();
        if row["party_preference"] == "Changed" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the change never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("a direct update reached its ward after {:?}", t.elapsed());
    assert_eq!(gate.metric("wardgate_watch_renewals_total").await, 1.0);
    assert_eq!(
        builds(&gate).await,
        before + 1.0,
        "ward 1 rebuilt once, ward 2 not"
    );

    // Past max age, unchanged wards are still fresh: the watch vouches for them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = c.get(ward(2)).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(
        builds(&gate).await,
        before + 1.0,
        "nothing renewed by the clock"
    );
    assert!(gate.metric("wardgate_watch_lag_seconds").await < 2.0);
    pool.disconnect().await.unwrap();
    gate.stop().await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deltas_around_an_old_serve_reach_back_its_age() {
    let origin = Origin::builder()
        .mysql()
        .wards(1)
        .voters_per_ward(200)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let pool = mysql_pool("");
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            c.mysql_url = Some(Secret(format!("{}/{db}", mysql_root_url())));
            c.replica.watch_every = Dur(Duration::from_millis(100));
            c.replica.max_lag = Dur(Duration::ZERO);
            c.cache.clock_skew = Dur(Duration::from_millis(100));
            no_rate_limits(c);
        })
        .start()
        .await;
    let c = client();
    let w = wardgate::params::WardKey::parse(STATE, ASSEMBLY, "1").unwrap();
    let _: Vec<Value> = fetch_json(&c, gate.citizens(&ward_query(1))).await;
    let cache = &gate.shared().cache;
    let t = Instant::now();
    while cache.narrow_age().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the watch never vouched"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The replica's table goes away (the backend's too, but the copy is in L1): nothing is
    // vouched for any more, and the copy served ages past the narrow bound.
    {
        use mysql_async::prelude::Queryable;
        let mut c = pool.get_conn().await.unwrap();
        c.query_drop(format!(
            "RENAME TABLE `{db}`.citizen TO `{db}`.citizen_away"
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT", "max age still holds");
    let served = wardgate::time::EpochMs::now().0;
    // Dates are compared within the skew and the commit slack (10.1 s here); well past the
    // old serve (a phone clock ahead), the narrow overlap; around it, the old copy's age.
    let narrow = cache.delta_overlap(&w, served + 30_000);
    let around = cache.delta_overlap(&w, served + 10_000);
    eprintln!("narrow {narrow:?}, around the old serve {around:?}");
    assert!(narrow < Duration::from_secs(11), "{narrow:?}");
    assert!(
        around > narrow + Duration::from_millis(1000),
        "{around:?} vs {narrow:?}"
    );
    pool.disconnect().await.unwrap();
    gate.stop().await;
    origin.cleanup().await;
}
