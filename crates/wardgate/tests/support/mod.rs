//! Fixtures for the black-box tests: a sample origin, wardgate instances and a client, built
//! with small builders. Redis and MariaDB are throwaway servers of this test process
//! (`wardgate_test_support`); every test gets its own Redis key prefix and its own MariaDB
//! database, so tests running at the same time never disturb each other.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wardgate::config::{Config, Secret};
use wardgate::server::{self, Running};
use wardgate_sample::{self as origin, MemoryStore, OriginOptions, Store};
// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use wardgate_test_support::{free_port, listens_on, mysql_root_url, redis_url, RedisServer};

/// The `wardgate` binary of this build, as an operator runs it.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"))
}

/// `wardgate warm` of the test assembly into Redis under `prefix`; callers add its source
/// (`--mysql-url`, or `--upstream` with `--wards`) and the flags they test.
pub fn warm_cmd(prefix: &str) -> std::process::Command {
    let mut c = bin();
    c.args(["warm", "--state", STATE, "--assembly", ASSEMBLY])
        .args(["--redis-url", &redis_url(), "--redis-prefix", prefix]);
    c
}

/// `warm_cmd` of wards `wards` (e.g. `1-2`) from `upstream`.
pub fn warm_from_upstream(upstream: &str, wards: &str, prefix: &str) -> std::process::Command {
    let mut c = warm_cmd(prefix);
    c.args(["--upstream", upstream, "--wards", wards]);
    c
}

pub const STATE: &str = "Karnataka";
pub const ASSEMBLY: &str = "150";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The start wardgate gives a delta it forwards (default config): the client's `date` less
/// the overlap.
pub fn widened(date: i64) -> i64 {
    let overlap = wardgate::config::Config::default()
        .cache
        .effective_delta_overlap()
        .as_millis() as i64;
    (date - overlap).max(0)
}

/// The start of a delta answered from a snapshot whose newest row was modified at `newest`:
/// the widened date, moved back to its tier.
pub fn tiered(date: i64, newest: i64) -> i64 {
    wardgate::snapshot::tier_start(widened(date), wardgate::time::EpochMs(newest))
}

/// The newest `modifieddate` of `rows` (epoch ms or the backend's ISO-8601 text), epoch ms.
pub fn newest_change(rows: &[serde_json::Value]) -> i64 {
    use wardgate::time::{EpochMs, UtcOffset};
    let stamps = rows.iter().filter_map(|r| match &r["modifieddate"] {
        serde_json::Value::String(t) => EpochMs::parse_legacy(t, UtcOffset(0)).map(|t| t.0),
        n => n.as_i64(),
    });
    stamps.max().expect("rows with dates")
}

/// Bytes the Redis at `url` has sent to its clients so far (`INFO stats`): a test's own
/// `RedisServer`, so that they are this test's.
pub async fn redis_out(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut c)
        .await
        .unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("total_net_output_bytes:"))
        .unwrap();
    line[23..].trim().parse().unwrap()
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The query of a full-ward legacy read.
pub fn ward_query(ward: u32) -> String {
    format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo={ward}&date=-1&boothNos=-1")
}

/// A running sample origin (the stand-in backend).
pub struct Origin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    pub database: Option<String>,
}

pub struct OriginBuilder {
    wards: u32,
    voters: u32,
    latency: Duration,
    mysql: bool,
    mysql_root: Option<String>,
    /// What follows the database name in the origin's MySQL URL (`?socket=…`).
    mysql_params: String,
    addr: Option<SocketAddr>,
    serials: origin::Serials,
    dates: origin::voter::DateForm,
    cors: origin::answer::CorsMode,
}

impl Origin {
    pub fn builder() -> OriginBuilder {
        OriginBuilder {
            wards: 3,
            voters: 1200,
            latency: Duration::ZERO,
            mysql: false,
            mysql_root: None,
            mysql_params: String::new(),
            addr: None,
            serials: origin::Serials::PerBooth,
            dates: origin::voter::DateForm::EpochMs,
            cors: origin::answer::CorsMode::Any,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The origin's own citizens URL for `query`, to compare wardgate's answers against.
    pub fn citizens(&self, query: &str) -> String {
        format!("{}/open/volunteer/citizens?{query}", self.url())
    }

    /// Counters of what reached the backend.
    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/__origin/stats", self.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn citizens_reads(&self) -> u64 {
        self.stats().await["citizens_reads"].as_u64().unwrap()
    }

    /// Zeroes the counters (`stats` then counts from here).
    pub async fn reset_stats(&self) {
        let r = client()
            .post(format!("{}/__origin/reset-stats", self.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    pub async fn requests(&self) -> u64 {
        self.stats().await["requests"].as_u64().unwrap()
    }

    /// Stops serving (the backend "goes down"); open connections end too.
    pub fn kill(&self) {
        self.task.abort();
    }

    /// Drops the test database, if any.
    pub async fn cleanup(&self) {
        if let Some(db) = &self.database {
            drop_database(db).await;
        }
    }
}

impl OriginBuilder {
    pub fn wards(mut self, n: u32) -> Self {
        self.wards = n;
        self
    }
    pub fn voters_per_ward(mut self, n: u32) -> Self {
        self.voters = n;
        self
    }
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    /// Serve from a freshly seeded MariaDB database instead of memory.
    pub fn mysql(mut self) -> Self {
        self.mysql = true;
        self
    }
    /// The same, on the server at `root_url` (`mysql://root@host:port`) rather than the
    /// shared one.
    pub fn mysql_at(mut self, root_url: &str) -> Self {
        self.mysql = true;
        self.mysql_root = Some(root_url.to_string());
        self
    }
    /// The same, on `db`'s Unix socket: for a server that refuses plain TCP (`tls_only`).
    pub fn mysql_over_socket(mut self, db: &wardgate_test_support::MariaDb) -> Self {
        let url = db.socket_url("");
        let (root, params) = url.split_once("/?").expect("a socket URL has ?socket=");
        self.mysql = true;
        self.mysql_root = Some(root.to_string());
        self.mysql_params = format!("?{params}");
        self
    }
    /// How serial numbers run in the generated roll (in memory; per booth by default).
    /// Write `modifieddate` as ISO-8601 text, as Spring Boot 2.0 does by default.
    pub fn iso_dates(mut self) -> Self {
        self.dates = origin::voter::DateForm::Iso;
        self
    }
    /// How the backend answers cross-origin requests (`*` by default, as Spring's
    /// `allowedOrigins = "*"`).
    pub fn cors(mut self, cors: origin::answer::CorsMode) -> Self {
        self.cors = cors;
        self
    }
    pub fn serials(mut self, serials: origin::Serials) -> Self {
        self.serials = serials;
        self
    }
    /// Listen on a given address (to restart an origin where it was).
    pub fn at(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub async fn start(self) -> Origin {
        let (store, database) = if self.mysql {
            let db = unique("wg_it");
            let root = self.mysql_root.clone().unwrap_or_else(mysql_root_url);
            let url = format!("{root}/{db}{}", self.mysql_params);
            origin::seed(&origin::SeedArgs {
                mysql_url: url.clone(),
                state: STATE.into(),
                assembly: ASSEMBLY.into(),
                wards: self.wards,
                voters_per_ward: self.voters,
                batch: 2000,
            })
            .await
            .expect("seed MariaDB");
            (Store::MySql(origin::mysql::pool(&url).unwrap()), Some(db))
        } else {
            let spec = origin::RollSpec::new(STATE, ASSEMBLY, self.wards, self.voters)
                .with_serials(self.serials);
            let store = tokio::task::spawn_blocking(move || MemoryStore::generate(&spec))
                .await
                .unwrap();
            (Store::Memory(Arc::new(store)), None)
        };
        let listener = tokio::net::TcpListener::bind(
            self.addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = OriginOptions {
            latency: self.latency,
            dates: self.dates,
            cors: self.cors,
            ..OriginOptions::default()
        };
        let task = tokio::spawn(origin::serve(listener, store, opts));
        Origin {
            addr,
            task,
            database,
        }
    }
}

pub async fn drop_database(db: &str) {
    use mysql_async::prelude::Queryable;
    if let Ok(mut c) = mysql_async::Conn::from_url(format!("{}/", mysql_root_url())).await {
        let _ = c
            .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .await;
        let _ = c.disconnect().await;
    }
}

/// A wardgate instance under test.
pub struct Gate {
    pub running: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub prefix: String,
}

pub struct GateBuilder {
    cfg: Config,
}

impl Gate {
    /// In front of `upstream`, on free loopback ports, L1 only, generous rate limits.
    pub fn builder(upstream: &str) -> GateBuilder {
        let mut cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            upstream: upstream.to_string(),
            admin_token: Some(Secret(ADMIN_TOKEN.into())),
            redis_prefix: unique("wgtest"),
            ..Config::default()
        };
        cfg.drain.grace = wardgate::config::Dur(Duration::from_millis(200));
        cfg.drain.shutdown_timeout = wardgate::config::Dur(Duration::from_secs(5));
        cfg.log.access_log_sample = 0.0;
        GateBuilder { cfg }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn citizens(&self, query: &str) -> String {
        self.url(&format!("/open/volunteer/citizens?{query}"))
    }

    /// `/metrics` as Prometheus text.
    pub async fn metrics(&self) -> String {
        let r = reqwest::get(self.admin_url("/metrics")).await.unwrap();
        r.text().await.unwrap()
    }

    /// The value of the first sample named `name` (labels included, if given), 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_in(&self.metrics().await, name)
    }

    pub fn shared(&self) -> &Arc<wardgate::shared::Shared> {
        &self.running.as_ref().unwrap().shared
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.begin_drain();
            r.stop_now().await;
        }
    }
}

impl GateBuilder {
    /// Use the test process's Redis with a fresh key prefix.
    pub fn redis(mut self) -> Self {
        self.cfg.redis_url = Some(Secret(redis_url()));
        self
    }
    /// Share another instance's Redis prefix.
    pub fn redis_prefix(mut self, prefix: &str) -> Self {
        self.cfg.redis_prefix = prefix.to_string();
        self
    }
    pub fn redis_url(mut self, url: &str) -> Self {
        self.cfg.redis_url = Some(Secret(url.into()));
        self
    }
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.cfg);
        self
    }

    pub async fn start(self) -> Gate {
        self.cfg.validate().expect("test config is valid");
        let prefix = self.cfg.redis_prefix.clone();
        let running = server::start(self.cfg).await.expect("wardgate starts");
        let (addr, admin) = (running.public_addr, running.admin_addr);
        let gate = Gate {
            running: Some(running),
            addr,
            admin,
            prefix,
        };
        // Redis connects in the background (readiness does not wait for it): wait until it
        // answers when it is configured, and until ready, each for at most 2 s (a test may
        // point at a Redis that is down on purpose).
        for _ in 0..100 {
            let redis_up = match &gate.shared().cache.l2 {
                Some(l2) => l2.ping().await,
                None => true,
            };
            if redis_up && wardgate::admin::readiness(gate.shared()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gate
    }
}

/// A client that shows raw bytes: no transparent decompression, no proxies.
/// The value of the first sample named `name` (labels included, if given) in Prometheus text,
/// 0 if absent.
pub fn metric_in(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|l| l.starts_with(name));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

pub fn gunzip(b: &[u8]) -> Vec<u8> {
    wardgate::gzip::gunzip(b).expect("valid gzip")
}

/// Deletes every Redis key of a prefix (tests clean up after themselves).
pub async fn redis_cleanup(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
    }
}

/// A child process killed (SIGKILL) when dropped: sample origins and wardgate instances for
/// fault tests.
pub struct ChildProc {
    pub child: std::process::Child,
    pub port: u16,
}

impl ChildProc {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `wardgate serve` process listening on two loopback ports of its own.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    pub admin: u16,
}

/// Starts `wardgate serve` as deployed, on fresh loopback ports (`--listen`, `--admin-listen`),
/// and returns once the process itself listens on both; `args` adds the rest of its command
/// line and its stdio. A port `free_port` picked can be taken before wardgate binds it (by
/// another test's connection): wardgate then exits, and another pair is tried.
pub fn serve_process(args: impl Fn(&mut std::process::Command)) -> Served {
    for _ in 0..5 {
        let (port, admin) = (free_port(), free_port());
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wardgate"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")]);
        args(&mut cmd);
        let mut child = cmd.spawn().expect("the wardgate binary starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                break; // it exited: a port was taken
            }
            if listens_on(child.id(), port) && listens_on(child.id(), admin) {
                return Served { child, port, admin };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("wardgate did not start listening in five tries");
}

pub fn wait_port(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sample origin as its own process (so it can be killed and restarted) over `mysql_url`.
pub fn origin_process(mysql_url: &str, port: u16) -> ChildProc {
    let child = std::process::Command::new(wardgate_test_support::sample_bin())
        .args([
            "serve",
            "--mysql-url",
            mysql_url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    ChildProc { child, port }
}

/// Lifts the per-client quotas: load tests come from one address.
pub fn no_rate_limits(c: &mut Config) {
    let q = wardgate::config::Quota {
        rate: 1e6,
        burst: 1_000_000,
    };
    for class in wardgate::config::LimitClass::ALL {
        c.rate_limit.set_quota(class, q);
    }
}

/// A pool on a test database whose session clock is UTC (like the origin's).
pub fn mysql_pool(db: &str) -> mysql_async::Pool {
    wardgate_sample::mysql::pool(&format!("{}/{db}", mysql_root_url())).unwrap()
}

/// Closed-loop load on `url` until `stop` is set; returns (answered 200, failed).
pub fn spawn_load(
    c: reqwest::Client,
    url: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u32, u32)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match c.get(&url).send().await {
                Ok(r) if r.status() == 200 => {
                    let _ = r.bytes().await;
                    ok += 1
                }
                _ => failed += 1,
            }
        }
        (ok, failed)
    })
}

/// GET `url` and return the body (the test fails on any transport error).
pub async fn fetch(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> bytes::Bytes {
    c.get(url).send().await.unwrap().bytes().await.unwrap()
}

/// GET `url` accepting gzip, as the app asks for every download.
pub async fn get_gzip(c: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::Response {
    c.get(url)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap()
}

/// GET `url` and parse the body as JSON.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    c: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> T {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// Stops the load started with `spawn_load` and sums its (answered 200, failed) counts.
pub async fn finish_load(
    stop: &std::sync::atomic::AtomicBool,
    load: Vec<tokio::task::JoinHandle<(u32, u32)>>,
) -> (u32, u32) {
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    (ok, failed)
}

/// A canned answer of `canned_backend`: status line (`"502 Bad Gateway"`), content type, body.
pub type Canned = (&'static str, &'static str, String);

/// A backend stand-in (a load balancer's error page, rows some backend writes) on a loopback
/// port: it reads each request whole and answers `answer(n)`, `n` counting requests from 0,
/// closing the connection. Returns its URL and the count of requests answered.
pub async fn canned_backend(
    answer: impl Fn(u64) -> Canned + Send + Sync + 'static,
) -> (String, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicU64::new(0));
    let (count, answer) = (served.clone(), Arc::new(answer));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (count, answer) = (count.clone(), answer.clone());
            tokio::spawn(async move {
                // The head, then as many body bytes as it declares: answering before the
                // request is read whole would reset the connection under the client.
                let mut got = Vec::new();
                let mut buf = vec![0u8; 16 << 10];
                let body_at = loop {
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..body_at]).to_ascii_lowercase();
                let declared = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while got.len() < body_at + declared {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, content_type, body) = answer(count.fetch_add(1, Ordering::SeqCst));
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    (url, served)
}
