//! Replica builds that cannot drift from the backend: in front of a backend that writes dates
//! as Spring Boot 2.0 does (ISO-8601), a replica writing epoch ms is caught by the shape probe,
//! builds stay on the backend, and the `[replica]` setting the probe names makes them match.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wardgate::legacy::DateStyle;

/// Polls `/readyz` until its `replica` detail contains `want`.
async fn replica_detail(gate: &Gate, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = reqwest::get(gate.admin_url("/readyz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let detail = v["replica"].as_str().unwrap_or_default().to_string();
        if detail.contains(want) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "replica detail {detail:?} never said {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_probe_keeps_builds_on_the_backend_until_replica_rows_match() {
    let origin = Origin::builder()
        .mysql()
        .iso_dates()
        .wards(5)
        .voters_per_ward(200)
        .start()
        .await;
    let db = origin.database.clone().unwrap();
    let replica = format!("{}/{db}", mysql_root_url());
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            no_rate_limits(c);
            c.mysql_url = Some(wardgate::config::Secret(replica.clone()));
        })
        .start()
        .await;
    let c = client();
    let same = |w: u32| {
        let (c, gate_url, origin_url) = (
            c.clone(),
            gate.citizens(&ward_query(w)),
            origin.citizens(&ward_query(w)),
        );
        async move {
            let got = fetch(&c, gate_url).await;
            assert_eq!(
                got,
                fetch(&c, origin_url).await,
                "ward {w}: the backend's bytes"
            );
        }
    };

    // Not compared yet: the first cold ward is the backend's, and is compared beside.
    let reads = origin.citizens_reads().await;
    same(1).await;
    let detail = replica_detail(&gate, "differs").await;
    assert!(detail.contains("modifieddate"), "{detail}");
    assert!(detail.contains("dates = \"iso\""), "{detail}");
    let metrics = gate.metrics().await;
    assert!(
        metrics.contains("wardgate_replica_probes_total{outcome=\"differs\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("wardgate_replica_trusted 0"), "{metrics}");
    // A mismatch keeps builds on the backend: a cold ward is still the backend's own.
    same(2).await;
    // (each `same` reads the ward from the origin once itself)
    assert_eq!(
        origin.citizens_reads().await,
        reads + 4,
        "wards 1 and 2 from the backend"
    );

    // The setting the probe named, on reload: compared again, then built from the replica.
    let mut cfg = (*gate.shared().live.load_full()).clone();
    cfg.replica.dates = DateStyle::Iso;
    gate.running.as_ref().unwrap().reload(cfg);
    same(3).await;
    replica_detail(&gate, "shaped as the backend's").await;
    let reads = origin.citizens_reads().await;
    same(4).await;
    same(5).await;
    assert_eq!(
        origin.citizens_reads().await,
        reads + 2,
        "wards 4 and 5 from the replica, byte-equal to the backend's ISO rows"
    );
    // Every read kind of a replica-built ward is the backend's own answer; so is the ward
    // renewed from the replica after a write.
    let ward4 = |rest: &str| format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=4&{rest}");
    for q in [
        ward4("date=-1&boothNos=2,3"),
        ward4("date=-1&boothNos=-1&page=1&size=70"),
        ward4("date=-1&boothNos=-1&page=0&size=500"),
    ] {
        assert_eq!(
            fetch(&c, gate.citizens(&q)).await,
            fetch(&c, origin.citizens(&q)).await,
            "{q}"
        );
    }
    // A delta: the backend's rows for the window wardgate widens the date to.
    let date = wardgate::time::EpochMs::now().0 - 10 * 60_000;
    let rows: Vec<Value> = fetch_json(&c, gate.citizens(&ward_query(4))).await;
    let since = tiered(date, newest_change(&rows));
    let delta = fetch(
        &c,
        gate.citizens(&ward4(&format!("date={date}&boothNos=-1"))),
    )
    .await;
    let want = ward4(&format!("date={since}&boothNos=-1"));
    assert_eq!(delta, fetch(&c, origin.citizens(&want)).await, "delta");
    let id = rows[7]["id"].as_i64().unwrap();
    let r = c
        .post(gate.citizens(&ward_query(4)))
        .body(format!("[{{\"id\":{id},\"voted\":true}}]"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let after = fetch(&c, gate.citizens(&ward_query(4))).await;
    assert_eq!(
        after,
        fetch(&c, origin.citizens(&ward_query(4))).await,
        "renewed from the replica"
    );
    let row: Vec<Value> = serde_json::from_slice(&after).unwrap();
    assert_eq!(row[7]["voted"], true);
    assert!(
        row[7]["modifieddate"].is_string(),
        "ISO, as the backend writes it"
    );
    gate.stop().await;

    // `check-config --probe` runs the same comparison on demand, and names the setting.
    let probe = |dates: Option<&str>| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wardgate.toml");
        let replica_section =
            dates.map_or(String::new(), |d| format!("[replica]\ndates = \"{d}\"\n"));
        std::fs::write(&file, replica_section).unwrap();
        bin()
            .args(["check-config", "--config", file.to_str().unwrap()])
            .args(["--upstream", &origin.url(), "--mysql-url", &replica])
            .args(["--probe", "--probe-ward", &format!("{STATE}/{ASSEMBLY}/1")])
            .output()
            .unwrap()
    };
    let out = probe(None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("modifieddate") && err.contains("dates = \"iso\""),
        "{err}"
    );
    let out = probe(Some("iso"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("shaped as the backend's"), "{err}");
    origin.cleanup().await;
}
