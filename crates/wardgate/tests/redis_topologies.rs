//! Redis as operators run it at election scale: a 3-master Redis Cluster and a TLS-only Redis
//! (with its own CA), each started here from Debian's `redis-server`. On each, through HTTP and
//! the CLI: a ward built once and served as a HIT, shared with a second instance without the
//! backend, a write heard by the other instance, a purge that reaches Redis, and a warm.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use wardgate::config::Config;
use wardgate_test_support::{RedisCluster, TestCa, TlsRedisServer};

/// How the instances and the warm reach the Redis under test.
struct Topology {
    url: String,
    ca: Option<PathBuf>,
    cluster: bool,
}

impl Topology {
    fn apply(&self, c: &mut Config) {
        c.redis_url = Some(wardgate::config::Secret(self.url.clone()));
        c.redis_ca = self.ca.clone();
        c.redis_cluster = self.cluster;
        no_rate_limits(c);
    }

    /// `wardgate SUB` on this Redis.
    fn command(&self, sub: &str, prefix: &str) -> std::process::Command {
        let mut cmd = bin();
        cmd.arg(sub)
            .args(["--redis-url", &self.url, "--redis-prefix", prefix]);
        if let Some(ca) = &self.ca {
            cmd.arg("--redis-ca").arg(ca);
        }
        if self.cluster {
            cmd.arg("--redis-cluster");
        }
        cmd
    }

    fn warm(&self, upstream: &str, wards: &str, prefix: &str) -> std::process::Output {
        let mut cmd = self.command("warm", prefix);
        cmd.args(["--state", STATE, "--assembly", ASSEMBLY]).args([
            "--upstream",
            upstream,
            "--wards",
            wards,
        ]);
        cmd.output().unwrap()
    }
}

const ROWS: u32 = 1_200;

async fn get(c: &reqwest::Client, url: String) -> (String, Vec<Value>) {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    (
        cache,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

/// The read, write, purge and warm paths, end to end, on `t`.
async fn every_path_works_on(t: &Topology) {
    let origin = Origin::builder()
        .wards(3)
        .voters_per_ward(ROWS)
        .start()
        .await;
    let prefix = unique("wgtopo");
    let gate = || {
        Gate::builder(&origin.url())
            .redis_prefix(&prefix)
            .config(|c| t.apply(c))
            .start()
    };
    let (first, second) = (gate().await, gate().await);
    let c = client();
    let q = ward_query(1);

    // Built once, then a HIT; stored in Redis, where the second instance finds it.
    assert_eq!(get(&c, first.citizens(&q)).await.0, "MISS");
    let (cache, rows) = get(&c, first.citizens(&q)).await;
    assert_eq!((cache.as_str(), rows.len()), ("HIT", ROWS as usize));
    // (Until the first's copy is stored, its build lock in Redis makes the second wait for it.)
    let (_, shared) = get(&c, second.citizens(&q)).await;
    assert_eq!(shared, rows, "the second instance serves the first's copy");
    assert_eq!(
        origin.citizens_reads().await,
        1,
        "one build for both instances"
    );

    // A write through the first instance reaches the second (pub/sub, or the re-check).
    let id = rows[100]["id"].clone();
    let r = c
        .post(first.citizens(&q))
        .body(format!(r#"[{{"id":{id},"voted":true}}]"#))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t0 = Instant::now();
    loop {
        let (_, rows) = get(&c, second.citizens(&q)).await;
        let row = rows.iter().find(|r| r["id"] == id).unwrap();
        if row["voted"] == Value::Bool(true) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the write never reached the second instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A purge reaches Redis: a third instance has to build the ward again.
    let purged: Value = c
        .post(first.admin_url(&format!(
            "/admin/purge?state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(purged["purged"].as_u64() >= Some(1), "{purged}");
    let third = gate().await;
    let reads = origin.citizens_reads().await;
    assert_eq!(get(&c, third.citizens(&q)).await.0, "MISS");
    assert_eq!(origin.citizens_reads().await, reads + 1, "purged in Redis");

    // Every command fitted the topology (on a Cluster: no pipeline or multi-key command
    // across slots, which Redis refuses with CROSSSLOT).
    for g in [&first, &second, &third] {
        assert_eq!(g.metric("wardgate_redis_errors").await, 0.0);
    }

    // The warm fills it; an instance whose backend is down serves what was warmed.
    let out = t.warm(&origin.url(), "2-3", &prefix);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cold = Gate::builder("http://127.0.0.1:9")
        .redis_prefix(&prefix)
        .config(|c| t.apply(c))
        .start()
        .await;
    for w in [2, 3] {
        let (_, rows) = get(&c, cold.citizens(&ward_query(w))).await;
        assert_eq!(rows.len(), ROWS as usize, "ward {w} from the warm");
    }

    // The wipe after the election: every key in Redis, and every instance's own copies.
    let out = t.command("purge", &prefix).arg("--all").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let removed: u64 = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(removed >= 2, "{said}");
    let t0 = Instant::now();
    loop {
        // With its backend down and its copies gone, the cold instance has nothing to serve.
        let r = c.get(cold.citizens(&ward_query(2))).send().await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "ward 2 still served after the wipe"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for g in [first, second, third, cold] {
        g.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_path_works_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    every_path_works_on(&Topology {
        url: cluster.urls(),
        ca: None,
        cluster: true,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_path_works_on_a_tls_only_redis() {
    let cert = TestCa::new("wardgate test Redis CA").server_cert();
    let redis = TlsRedisServer::start(&cert);
    every_path_works_on(&Topology {
        url: redis.url(),
        ca: Some(cert.ca_file()),
        cluster: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_whose_certificate_is_not_trusted_is_unreachable_not_fatal() {
    let cert = TestCa::new("wardgate test Redis CA").server_cert();
    let other = TestCa::new("not the Redis's CA").server_cert();
    let redis = TlsRedisServer::start(&cert);
    let origin = Origin::builder().wards(1).voters_per_ward(50).start().await;
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            Topology {
                url: redis.url(),
                ca: Some(other.ca_file()),
                cluster: false,
            }
            .apply(c)
        })
        .start()
        .await;
    let c = client();
    // Served from the backend and L1; Redis reported down, not trusted by mistake.
    assert_eq!(get(&c, gate.citizens(&ward_query(1))).await.1.len(), 50);
    let t0 = Instant::now();
    while gate.metric("wardgate_redis_up").await != 0.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "Redis's health never checked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready: Value = c
        .get(gate.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["redis"], "unreachable", "{ready}");
    assert!(gate.metric("wardgate_redis_errors").await >= 1.0);
    gate.stop().await;
}
