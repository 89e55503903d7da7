//! The read replica over TLS, as RDS or Cloud SQL with `require_secure_transport` need it: a
//! MariaDB of this test's own that refuses plain TCP, its certificate signed by a CA made for
//! the test. Wards are built from it over TLS (and `warm` fills Redis from it); without TLS,
//! or trusting the wrong CA, wardgate gets a refusal it names, never a panic.

mod support;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::Value;
use support::*;
use wardgate::config::{Config, ReplicaTls, Secret};
use wardgate_test_support::{MariaDb, TestCa};

/// The TLS-only MariaDB the tests of this file share (each seeds a database of its own).
fn tls_db() -> &'static MariaDb {
    static DB: OnceLock<MariaDb> = OnceLock::new();
    DB.get_or_init(MariaDb::tls_only)
}

/// An origin (the sample backend) over a database of its own on the TLS-only server, read
/// through the server's Unix socket, and the replica URL of that database over TCP.
async fn origin_and_replica(wards: u32) -> (Origin, String) {
    let db = tls_db();
    let origin = Origin::builder()
        .mysql_over_socket(db)
        .wards(wards)
        .voters_per_ward(300)
        .start()
        .await;
    let name = origin.database.clone().unwrap();
    (origin, format!("{}/{name}", db.root_url()))
}

/// The replica at `url`, reached over TLS trusting `ca`.
fn over_tls(c: &mut Config, url: &str, ca: std::path::PathBuf) {
    no_rate_limits(c);
    c.mysql_url = Some(Secret(url.to_string()));
    c.replica.tls = ReplicaTls::Required;
    c.replica.ca_file = Some(ca);
}

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
            "replica {detail:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// TLS handshakes the server completed so far (asked over its Unix socket).
async fn tls_handshakes() -> u64 {
    let mut c = mysql_async::Conn::from_url(tls_db().socket_url(""))
        .await
        .unwrap();
    let row: Option<(String, u64)> = c
        .query_first("SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'")
        .await
        .unwrap();
    let _ = c.disconnect().await;
    row.map_or(0, |(_, n)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ward_is_built_once_from_the_replica_over_tls_then_served_as_a_hit() {
    let (origin, replica) = origin_and_replica(2).await;
    let ca = tls_db().ca_file().unwrap();
    let handshakes = tls_handshakes().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| over_tls(c, &replica, ca))
        .start()
        .await;
    let c = client();
    // The first cold ward comes from the backend, and is compared with the replica's rows
    // beside: over TLS too.
    let want1 = fetch(&c, origin.citizens(&ward_query(1))).await;
    assert_eq!(fetch(&c, gate.citizens(&ward_query(1))).await, want1);
    replica_detail(&gate, "shaped as the backend's").await;

    let want2 = fetch(&c, origin.citizens(&ward_query(2))).await;
    origin.reset_stats().await;
    let r = c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap(), want2, "the backend's bytes");
    let r = c.get(gate.citizens(&ward_query(2))).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.bytes().await.unwrap(), want2);
    assert_eq!(
        origin.citizens_reads().await,
        0,
        "ward 2 built from the replica, then a hit: the backend was not asked"
    );
    let metrics = gate.metrics().await;
    assert!(
        metrics.contains("wardgate_snapshot_builds_total{source=\"replica\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("wardgate_replica_errors_total{"),
        "{metrics}"
    );
    assert!(
        tls_handshakes().await > handshakes,
        "the replica's connections were TLS"
    );
    gate.stop().await;
}

/// A way to get the replica's transport wrong: how wardgate is configured, the kind its
/// errors are counted as, and what they say.
type WrongWay = (
    &'static str,
    Box<dyn Fn(&mut Config)>,
    &'static [&'static str],
);

/// Without TLS, and with TLS trusting a CA that did not sign the replica's certificate.
fn wrong_ways(replica: &str, wrong_ca: &Path) -> [WrongWay; 2] {
    let (plain, tls) = (replica.to_string(), replica.to_string());
    let wrong_ca = wrong_ca.to_path_buf();
    [
        (
            "server",
            Box::new(move |c: &mut Config| {
                no_rate_limits(c);
                c.mysql_url = Some(Secret(plain.clone()));
            }),
            &[
                "Access denied",
                "requires TLS",
                "set replica.tls = \"required\"",
            ],
        ),
        (
            "tls",
            Box::new(move |c: &mut Config| over_tls(c, &tls, wrong_ca.clone())),
            &[
                "invalid peer certificate",
                "UnknownIssuer",
                "replica.ca_file",
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_tls_or_with_the_wrong_ca_the_refusal_is_named_not_a_panic() {
    let (origin, replica) = origin_and_replica(3).await;
    // The server itself refuses a plain connection (MariaDB says "access denied"; the same
    // user gets in over TLS in the test above, and over the socket here).
    let plain = mysql_async::Conn::from_url(&replica).await.err().unwrap();
    assert!(plain.to_string().contains("Access denied"), "{plain}");
    let wrong = tempfile::tempdir().unwrap();
    let wrong_ca = wrong.path().join("other-ca.pem");
    TestCa::new("not the replica's CA").write_ca(&wrong_ca);
    let c = client();

    // With the backend up, wards come from it: the replica is not needed to serve.
    for (kind, configure, _) in wrong_ways(&replica, &wrong_ca) {
        let gate = Gate::builder(&origin.url())
            .config(|c| configure(c))
            .start()
            .await;
        let r = c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
        assert_eq!(r.status(), 200, "{kind}");
        gate.stop().await;
    }
    // With the backend down too, the 503 names both causes, and the replica's is counted.
    origin.kill();
    for (n, (kind, configure, says)) in (2..).zip(wrong_ways(&replica, &wrong_ca)) {
        let gate = Gate::builder(&origin.url())
            .config(|c| configure(c))
            .start()
            .await;
        let r = c.get(gate.citizens(&ward_query(n))).send().await.unwrap();
        assert_eq!(r.status(), 503, "{kind}");
        let body: Value = r.json().await.unwrap();
        let message = body["message"].as_str().unwrap_or_default();
        eprintln!("{kind}: {message}");
        assert!(
            message.contains("cannot connect to the upstream"),
            "{message}"
        );
        for s in says {
            assert!(message.contains(s), "{kind}: {message:?} lacks {s:?}");
        }
        let counted = format!("wardgate_replica_errors_total{{kind=\"{kind}\"}}");
        assert!(gate.metric(&counted).await >= 1.0, "{kind} counted");
        gate.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_never_answers_costs_one_query_timeout_not_the_build_bound() {
    let origin = Origin::builder().wards(1).voters_per_ward(50).start().await;
    // Accepts connections and says nothing: no greeting, no TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("mysql://root@{}/silent", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            no_rate_limits(c);
            c.mysql_url = Some(Secret(url));
            c.replica.query_timeout = wardgate::config::Dur(Duration::from_millis(300));
            // A build may take 20 s: only the query timeout can make this one quick.
            c.limits.upstream_timeout = wardgate::config::Dur(Duration::from_secs(10));
        })
        .start()
        .await;
    gate.shared()
        .cache
        .replica_trust()
        .assume(wardgate::legacy::RowFormat::default());
    let t = Instant::now();
    let r = client()
        .get(gate.citizens(&ward_query(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "from the backend, the replica's lag unknown"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let timeouts = "wardgate_replica_errors_total{kind=\"timeout\"}";
    assert!(
        gate.metric(timeouts).await >= 1.0,
        "{}",
        gate.metrics().await
    );
    gate.stop().await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_fills_redis_from_the_replica_over_tls() {
    let (origin, replica) = origin_and_replica(2).await;
    let ca = tls_db().ca_file().unwrap();
    let prefix = unique("wgtlswarm");
    let warm = |extra: &[&str]| {
        let mut cmd = warm_cmd(&prefix);
        cmd.args(["--mysql-url", &replica, "--upstream", &origin.url()])
            .args(extra);
        cmd.output().unwrap()
    };
    let ca_arg = ca.to_str().unwrap();

    // Told nothing of TLS: refused by the server, and the output says what to set.
    let out = warm(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Access denied"), "{err}");
    assert!(err.contains("set replica.tls = \"required\""), "{err}");
    // A CA without TLS is a mistake named before anything is read.
    let out = warm(&["--replica-ca", ca_arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("replica.ca_file") && err.contains("--replica-tls required"),
        "{err}"
    );

    let out = warm(&["--replica-tls", "required", "--replica-ca", ca_arg]);
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout} {err}");
    assert!(
        stdout.contains("2 wards built") && stdout.contains("600 rows"),
        "{stdout}"
    );

    // A fresh instance whose backend is down serves the warmed wards.
    let want = fetch(&client(), origin.citizens(&ward_query(2))).await;
    origin.kill();
    let gate = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&prefix)
        .start()
        .await;
    let r = client()
        .get(gate.citizens(&ward_query(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), want);
    gate.stop().await;
    redis_cleanup(&prefix).await;
}
