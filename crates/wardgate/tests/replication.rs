//! Gap-free deltas with writes patched, the change watch on and a real lagging replica: a
//! primary and a replica of this test's own, the replica `MASTER_DELAY`ed, a legacy client on
//! a skewed clock, and writers through wardgate and straight into the primary.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::*;
use wardgate::config::{Dur, Secret};
use wardgate_test_support::MariaDb;

/// How far the replica lags its primary.
const DELAY_S: u64 = 2;

fn rows_by_id(v: Value) -> HashMap<i64, Value> {
    let rows = v.as_array().unwrap().iter();
    rows.map(|r| (r["id"].as_i64().unwrap(), r.clone()))
        .collect()
}

/// The phone's clock: ahead of the truth by most of the allowed skew.
fn phone_ms() -> i64 {
    wardgate::time::EpochMs::now().0 + 800
}

/// Points `replica` at `primary` from the primary's first binary log, `DELAY_S` behind.
async fn replicate(primary: &MariaDb, replica: &MariaDb) -> mysql_async::Conn {
    let mut c = mysql_async::Conn::from_url(format!("{}/", replica.root_url()))
        .await
        .unwrap();
    let sql = format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_PASSWORD='', MASTER_LOG_FILE='primary-bin.000001', MASTER_LOG_POS=4, \
         MASTER_DELAY={DELAY_S}",
        primary.port()
    );
    c.query_drop(sql).await.unwrap();
    c.query_drop("START SLAVE").await.unwrap();
    c
}

/// Waits until the replica holds `rows` citizens in `db`.
async fn caught_up(c: &mut mysql_async::Conn, db: &str, rows: u64) {
    let t = Instant::now();
    loop {
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM `{db}`.citizen"))
            .await
            .unwrap_or(None);
        if n == Some(rows) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the replica never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_skewed_client_misses_nothing_with_patches_the_watch_and_a_delayed_replica() {
    let (primary, replica) = (MariaDb::primary(), MariaDb::replica());
    let mut on_replica = replicate(&primary, &replica).await;
    let origin = Origin::builder()
        .mysql_at(&primary.root_url())
        .wards(1)
        .voters_per_ward(400)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    caught_up(&mut on_replica, &db, 400).await;
    let gate = Gate::builder(&origin.url())
        .redis()
        .config(|c| {
            no_rate_limits(c);
            c.mysql_url = Some(Secret(format!("{}/{db}", replica.root_url())));
            c.replica.watch_every = Dur(Duration::from_millis(200));
            c.replica.max_lag = Dur(Duration::from_secs(5));
            // Long enough that nothing here is renewed by the clock: only the watch and the
            // patches keep the ward level, and the wide overlap (91 s) covers nothing.
            c.cache.snapshot_max_age = Dur(Duration::from_secs(30));
            c.cache.max_stale = Dur(Duration::from_secs(60));
            c.cache.clock_skew = Dur(Duration::from_secs(1));
        })
        .start()
        .await;
    let c = client();
    let q =
        |date: i64| format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date={date}&boothNos=-1");
    let mut clock = phone_ms();
    let mut copy = rows_by_id(fetch_json(&c, gate.citizens(&q(-1))).await);
    let ids: Vec<i64> = copy.keys().copied().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let through = {
        let (c, url, ids, stop, writes) = (
            c.clone(),
            gate.citizens(&q(-1)),
            ids.clone(),
            stop.clone(),
            writes.clone(),
        );
        tokio::spawn(async move {
            for n in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = ids[(n * 7) % ids.len()];
                let r = c
                    .post(&url)
                    .body(format!(r#"[{{"id":{id},"mobile":"9{n:09}"}}]"#))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["x-cache"], "PATCHED");
                let _ = r.bytes().await;
                writes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };
    let direct = {
        let (pool, ids, stop, writes) = (
            mysql_async::Pool::new(format!("{}/{db}", primary.root_url()).as_str()),
            ids.clone(),
            stop.clone(),
            writes.clone(),
        );
        tokio::spawn(async move {
            let mut conn = pool.get_conn().await.unwrap();
            for n in 1.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = ids[(n * 13 + 5) % ids.len()];
                let sql =
                    "UPDATE citizen SET party_preference = ?, modifieddate = NOW(3) WHERE id = ?";
                conn.exec_drop(sql, (format!("P{n}"), id)).await.unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let next = phone_ms();
        copy.extend(rows_by_id(fetch_json(&c, gate.citizens(&q(clock))).await));
        clock = next;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    through.await.unwrap();
    direct.await.unwrap();
    assert!(writes.load(Ordering::Relaxed) > 300, "{writes:?}");

    // Deltas were narrow: the overlap now is the watch's, not max age's.
    let narrow = gate.shared().cache.narrow_age().expect("the watch runs");
    let w = wardgate::params::WardKey::parse(STATE, ASSEMBLY, "1").unwrap();
    let overlap = gate.shared().cache.delta_overlap(&w, phone_ms() - 5_000);
    eprintln!("narrow overlap {overlap:?} (copies at most {narrow:?} old), wide 91 s");
    assert!(overlap < Duration::from_secs(20), "{overlap:?}");

    // The last direct writes reach the replica, then the watch, then the phone.
    tokio::time::sleep(Duration::from_secs(DELAY_S + 2)).await;
    for _ in 0..3 {
        let next = phone_ms();
        copy.extend(rows_by_id(fetch_json(&c, gate.citizens(&q(clock))).await));
        clock = next;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let table = rows_by_id(fetch_json(&c, origin.citizens(&q(-1))).await);
    let missed: Vec<_> = table
        .iter()
        .filter(|(id, row)| copy.get(id) != Some(row))
        .map(|(id, _)| *id)
        .collect();
    assert!(
        missed.is_empty(),
        "{} rows missed: {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    assert_eq!(copy.len(), table.len(), "no phantom rows");
    // Direct writes reach the ward through the next patch's cheap read or, once writes through
    // wardgate stop, through the watch; which of the two did is not this test's concern.
    let renewals = gate.metric("wardgate_watch_renewals_total").await;
    let writes = writes.load(Ordering::Relaxed);
    eprintln!("{writes} writes, {renewals} watch renewals");
    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
}
