//! Black-box tests of the edge against the real binary: slowloris, reload on SIGHUP and
//! graceful drain on SIGTERM, and the process's memory settings.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A wardgate process on free ports, killed when dropped.
struct Proc {
    child: Child,
    addr: String,
    admin: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(upstream: &str, extra: &[&str]) -> Proc {
    let Served { child, port, admin } = serve_process(|cmd| {
        cmd.args(["--upstream", upstream, "--access-log-sample", "0"])
            // Load tests come from one address: lift the per-client quota out of their way.
            .args(["--rate-limit", "downloads=100000/s:100000"])
            .args(["--rate-limit", "master=100000/s:100000"])
            .args(extra)
            .env_remove("WARDGATE_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    });
    Proc {
        child,
        addr: format!("127.0.0.1:{port}"),
        admin: format!("127.0.0.1:{admin}"),
    }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits for `p` to exit by itself; fails with `why` if it is still running after `limit`.
fn exit_within(mut p: Proc, limit: Duration, why: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_client_is_cut_at_the_header_timeout_while_others_are_served() {
    let origin = Origin::builder().start().await;
    let gate = spawn(&origin.url(), &["--header-read-timeout", "1s"]);
    let addr = gate.addr.clone();
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let start = Instant::now();
        // One header byte at a time, never finishing the head.
        let _ = s.write_all(b"GET /open/volunteer/states HTTP/1.1\r\nHost: x\r\n");
        let mut closed = false;
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b"X").is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 256];
            s.set_nonblocking(true).unwrap();
            match s.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {
                    closed = true; // a 408 answer, then close
                    break;
                }
                Err(_) => {}
            }
            s.set_nonblocking(false).unwrap();
        }
        (closed, start.elapsed())
    });
    let c = client();
    for _ in 0..10 {
        let r = c
            .get(format!("http://{}/open/volunteer/states", gate.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (closed, after) = slow.join().unwrap();
    assert!(closed, "the slow client was cut");
    assert!(after < Duration::from_secs(3), "cut after {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reload_changes_the_page_cap_under_load_without_failures() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(1500)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("w.toml");
    std::fs::write(&cfg, "[citizens]\nmax_page_size = 1000\n").unwrap();
    let gate = spawn(&origin.url(), &["--config", cfg.to_str().unwrap()]);
    let url = format!(
        "http://{}/open/volunteer/citizens?{}&page=0&size=1000",
        gate.addr,
        ward_query(1)
    );
    let c = client();
    let size_of = |v: serde_json::Value| v["size"].as_u64().unwrap();
    assert_eq!(size_of(fetch_json(&c, &url).await), 1000);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| spawn_load(c.clone(), url.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&cfg, "[citizens]\nmax_page_size = 200\n").unwrap();
    signal(&gate, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: serde_json::Value = fetch_json(&c, &url).await;
        if size_of(v.clone()) == 200 {
            assert_eq!(v["citizens"].as_array().unwrap().len(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "the new cap was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed) = finish_load(&stop, load).await;
    assert!(ok > 10);
    assert_eq!(failed, 0, "no request failed across the reload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_readiness_first_and_fails_no_request() {
    let origin = Origin::builder().start().await;
    let gate = spawn(
        &origin.url(),
        &["--drain-grace", "1s", "--shutdown-timeout", "5s"],
    );
    let url = format!(
        "http://{}/open/volunteer/citizens?{}",
        gate.addr,
        ward_query(1)
    );
    let ready = format!("http://{}/readyz", gate.admin);
    let c = client();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(c.get(&ready).send().await.unwrap().status(), 200);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| spawn_load(c.clone(), url.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&gate, "-TERM");
    // Readiness turns 503 at once, while the public port still serves.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(c.get(&ready).send().await.unwrap().status(), 503);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    // The load balancer stops sending within the grace period; the load stops here too.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (ok, failed) = finish_load(&stop, load).await;
    assert!(ok > 10);
    assert_eq!(failed, 0);
    // Then the process exits by itself, cleanly.
    let status = exit_within(
        gate,
        Duration::from_secs(10),
        "did not exit after the drain",
    );
    assert!(status.success());
}

/// A connection that has not sent a byte (a load balancer's spare) is closed when the drain
/// starts: it has no request to finish, so it must not hold the exit for the whole shutdown
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sent_a_request_does_not_hold_the_drain() {
    let origin = Origin::builder().wards(1).voters_per_ward(10).start().await;
    let gate = spawn(
        &origin.url(),
        &[
            "--drain-grace",
            "1s",
            "--shutdown-timeout",
            "30s",
            "--idle-timeout",
            "60s",
        ],
    );
    let spare = TcpStream::connect(&gate.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&gate, "-TERM");
    let limit = Duration::from_secs(15);
    let status = exit_within(gate, limit, "an idle spare connection held the drain");
    assert!(status.success());
    drop(spare);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let origin = Origin::builder().start().await;
    let gate = spawn(&origin.url(), &["--idle-timeout", "1s"]);
    let addr = gate.addr.clone();
    let (served, closed_after) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /open/volunteer/states HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let served = buf[..n].starts_with(b"HTTP/1.1 200");
        // Keep-alive: the connection stays open, idle, until the timeout closes it.
        let start = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (served, start.elapsed())
    })
    .await
    .unwrap();
    assert!(served);
    assert!(
        closed_after >= Duration::from_millis(800) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
}

/// The head timeout counts from a request's first bytes: the wait between keep-alive requests
/// is the idle timeout's (a load balancer pools connections for longer than a head takes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_wait_longer_than_the_head_timeout_is_left_to_the_idle_timeout() {
    let origin = Origin::builder().start().await;
    let gate = spawn(
        &origin.url(),
        &["--header-read-timeout", "1s", "--idle-timeout", "4s"],
    );
    let addr = gate.addr.clone();
    let (second, closed_after) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let get = b"GET /open/volunteer/states HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut buf = [0u8; 4096];
        s.write_all(get).unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "first answer");
        std::thread::sleep(Duration::from_millis(2500));
        s.write_all(get).unwrap();
        let n = s.read(&mut buf).unwrap_or(0);
        let second = String::from_utf8_lossy(&buf[..n]).into_owned();
        let start = Instant::now();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (second, start.elapsed())
    })
    .await
    .unwrap();
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "the connection was kept past the head timeout: {second:?}"
    );
    assert!(
        closed_after >= Duration::from_secs(3) && closed_after < Duration::from_secs(7),
        "then closed by the idle timeout, after {closed_after:?}"
    );
}

/// The plain port speaks HTTP/1.1 and h2 with prior knowledge (a load balancer's h2c), told
/// apart by the first bytes, and gives up on a client that sends none within the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_port_speaks_http1_and_h2_with_prior_knowledge() {
    let origin = Origin::builder().wards(1).voters_per_ward(20).start().await;
    let gate = spawn(&origin.url(), &["--idle-timeout", "1s"]);
    let url = format!(
        "http://{}/open/volunteer/citizens?{}",
        gate.addr,
        ward_query(1)
    );
    let h1 = client().get(&url).send().await.unwrap();
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    assert_eq!(h1.status(), 200);
    let h1_body = h1.bytes().await.unwrap();
    let h2c = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h2 = h2c.get(&url).send().await.unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert_eq!(h2.status(), 200);
    assert_eq!(
        h2.bytes().await.unwrap(),
        h1_body,
        "the same answer either way"
    );

    let addr = gate.addr.clone();
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(&addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        let mut rest = Vec::new();
        let _ = silent.read_to_end(&mut rest);
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after >= Duration::from_millis(800) && closed_after < Duration::from_secs(4),
        "a silent connection closed after {closed_after:?}"
    );
}

/// A burst of new connections must not wait on huge-page zeroing: the serving process runs
/// with transparent huge pages off (`THP_enabled: 0`), whatever the machine's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_process_runs_without_transparent_huge_pages() {
    let origin = Origin::builder().wards(1).voters_per_ward(10).start().await;
    let p = spawn(&origin.url(), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(str::trim);
    // Kernels before 5.0 do not report it; every kernel wardgate runs on here does.
    assert_eq!(thp, Some("0"), "{status}");
}

/// The `/proc` directories of the threads named `name` in process `pid`.
fn thread_dirs(pid: u32, name: &str) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| Some(t.ok()?.path()))
        .filter(move |dir| {
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|comm| comm.trim() == name)
        })
}

/// The threads named `name` in process `pid`.
fn threads_named(pid: u32, name: &str) -> usize {
    thread_dirs(pid, name).count()
}

/// `--workers` sizes the serving runtime, and a miss's build runs on the build runtime beside
/// it: its parse takes a blocking thread of that runtime, not of the serving one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_and_builds_run_on_runtimes_of_their_own() {
    let origin = Origin::builder().wards(1).voters_per_ward(50).start().await;
    let p = spawn(&origin.url(), &["--workers", "3", "--build-threads", "2"]);
    let pid = p.child.id();
    assert!(threads_named(pid, "wardgate-serve") >= 3);
    assert_eq!(threads_named(pid, "wardgate-builds"), 2, "no build yet");
    let url = format!(
        "http://{}/open/volunteer/citizens?{}",
        p.addr,
        ward_query(1)
    );
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-cache"], "MISS");
    assert!(
        threads_named(pid, "wardgate-builds") > 2,
        "the build's parse ran on a blocking thread of the build runtime"
    );
}

/// How many threads named `name` in process `pid` are in the real-time class (`SCHED_FIFO`,
/// the `policy` field of `/proc/<pid>/task/<tid>/stat`).
fn realtime_threads_named(pid: u32, name: &str) -> usize {
    thread_dirs(pid, name)
        .filter(|dir| {
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis start at field 3; policy is 41.
            let policy = stat
                .rsplit_once(')')
                .and_then(|(_, f)| f.split_whitespace().nth(38));
            policy == Some("1")
        })
        .count()
}

/// Polls `f` every 20 ms until it is true or `limit` has passed; whether it became true.
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// While a miss's build waits on the backend, the serving workers run in the real-time class
/// (where the process may: root, or CAP_SYS_NICE), and in the normal class again once it is
/// answered; the blocking threads never do. Where the class is refused, the metric says so and
/// no thread has it. `--realtime-while-cold false` keeps the workers normal throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_workers_are_realtime_while_a_build_is_in_flight_and_normal_after() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(20)
        .latency(Duration::from_millis(1500))
        .start()
        .await;
    for on in ["true", "false"] {
        let p = spawn(
            &origin.url(),
            &["--workers", "2", "--realtime-while-cold", on],
        );
        let pid = p.child.id();
        let realtime = move || realtime_threads_named(pid, "wardgate-serve");
        assert_eq!(realtime(), 0, "nothing cold yet ({on})");
        let url = format!(
            "http://{}/open/volunteer/citizens?{}",
            p.addr,
            ward_query(1)
        );
        let miss = tokio::spawn(reqwest::get(url));
        let metrics = format!("http://{}/metrics", p.admin);
        let scrape = |name: &'static str| {
            let metrics = metrics.clone();
            async move {
                let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
                metric_in(&text, name)
            }
        };
        let during = eventually(Duration::from_secs(1), || realtime() == 2).await;
        let refused = scrape("wardgate_serving_realtime_refused").await == 1.0;
        match (on, refused) {
            ("true", false) => {
                assert!(during, "both workers real-time while the build waits");
                assert!(scrape("wardgate_serving_realtime_entries").await >= 1.0);
            }
            _ => {
                assert!(
                    !during && realtime() == 0,
                    "no worker real-time ({on}, refused {refused})"
                );
            }
        }
        let resp = miss.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-cache"], "MISS");
        assert!(
            eventually(Duration::from_secs(3), || realtime() == 0).await,
            "back to the normal class once nothing is cold ({on})"
        );
    }
}
