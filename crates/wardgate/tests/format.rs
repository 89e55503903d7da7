//! A snapshot format change during a canary: an instance of the new format serves the copies
//! the fleet wrote in the previous one, instead of starting cold.

mod support;

use std::sync::Arc;

use redis::AsyncCommands;
use support::*;
use wardgate::snapshot::{Snapshot, FORMAT_VERSION, PREVIOUS_FORMAT_VERSION};
use wardgate::time::EpochMs;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_format_instance_serves_the_previous_formats_copies() {
    let origin = Origin::builder().start().await;
    let c = client();
    let json = fetch(&c, origin.citizens(&ward_query(1))).await;
    // A copy as an instance of the previous format stored it, under its own key.
    let key = wardgate::params::WardKey::parse(STATE, ASSEMBLY, "1").unwrap();
    let snap = Snapshot::from_legacy_json(key, &json, EpochMs::now()).unwrap();
    let old = snap.encode_as(PREVIOUS_FORMAT_VERSION).unwrap();
    let prefix = unique("wgformat");
    let mut r = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let old_key = format!("{prefix}:s{PREVIOUS_FORMAT_VERSION}:ward:{{karnataka:{ASSEMBLY}:1}}");
    let _: () = r.set_ex(&old_key, old, 600).await.unwrap();

    // The new instance's backend is down: only that copy can answer.
    origin.kill();
    let gate = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&prefix)
        .start()
        .await;
    wait_for_redis(&gate).await;
    let resp = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), json);

    // A purge drops the copies of both formats: nothing is left to fall back to.
    let purge = c
        .post(gate.admin_url(&format!("/admin/purge?state={STATE}&assemblyNo={ASSEMBLY}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let left: Option<Vec<u8>> = r.get(&old_key).await.unwrap();
    assert!(left.is_none(), "the previous format's copy is purged too");
    let resp = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    assert_eq!(resp.status(), 503, "purged, and the backend is down");
    gate.stop().await;
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_writes_every_format_the_fleet_runs() {
    let origin = Origin::builder().wards(2).start().await;
    let c = client();
    let prefix = unique("wgformats");
    let formats = format!("{FORMAT_VERSION},{PREVIOUS_FORMAT_VERSION}");
    let warm = || {
        warm_from_upstream(&origin.url(), "1-2", &prefix)
            .args(["--formats", &formats])
            .output()
            .unwrap()
    };
    let out = warm();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("2 wards built"),
        "{stdout} {stderr}"
    );
    let mut r = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for ward in ["1", "2"] {
        let json = fetch(&c, origin.citizens(&ward_query(ward.parse().unwrap()))).await;
        // Both formats' keys carry the ward as their hash tag.
        let keys = [FORMAT_VERSION, PREVIOUS_FORMAT_VERSION].map(|f| {
            (
                f,
                format!("{prefix}:s{f}:ward:{{karnataka:{ASSEMBLY}:{ward}}}"),
            )
        });
        for (f, k) in keys {
            let raw: Vec<u8> = r.get(&k).await.unwrap();
            assert_eq!(raw[4..6], f.to_le_bytes(), "{k} is in format {f}");
            let s = Snapshot::decode(raw.into()).unwrap();
            assert_eq!(gunzip(&s.full_gzip()), json, "{k} holds the origin's rows");
        }
    }
    // Resumable across formats: a second run finds both copies of both wards fresh.
    let again = warm();
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 wards built, 2 already fresh"));
    redis_cleanup(&prefix).await;
}

async fn wait_for_redis(gate: &Gate) {
    let l2 = Arc::clone(gate.shared().cache.l2.as_ref().unwrap());
    for _ in 0..100 {
        if l2.ping().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("Redis did not come up");
}
