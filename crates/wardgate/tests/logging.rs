//! A log pipe that stops draining (a stuck collector) does not stall requests: every request
//! is logged, and lines that cannot be written are dropped and counted.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_log_pipe_drops_lines_instead_of_stalling_requests() {
    let origin = Origin::builder().wards(1).voters_per_ward(50).start().await;
    // stderr is a pipe nobody reads: once its ~64 KiB fill, every write to it would block.
    let Served { child, port, admin } = serve_process(|cmd| {
        cmd.args(["--upstream", &origin.url()])
            .args(["--access-log-sample", "1", "--log-buffer-lines", "64"])
            .args(["--rate-limit", "downloads=1000000/s:1000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    });
    let mut wardgate = ChildProc { child, port };
    let c = client();
    let url = format!(
        "http://127.0.0.1:{port}/open/volunteer/citizens?{}",
        ward_query(1)
    );
    // ~300 bytes a line: 4,000 lines are far more than the pipe and the queue hold.
    let started = Instant::now();
    let mut served = 0;
    let deadline = Duration::from_secs(60);
    let all = futures_util::future::join_all((0..8).map(|_| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let mut ok = 0;
            for _ in 0..500 {
                let r = tokio::time::timeout(Duration::from_secs(10), c.get(&url).send()).await;
                let r = r.expect("a request stalled behind the log pipe").unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
                ok += 1;
            }
            ok
        }
    }));
    for n in tokio::time::timeout(deadline, all)
        .await
        .expect("requests kept being served")
    {
        served += n;
    }
    assert_eq!(served, 4000);
    let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wardgate_log_lines_dropped "))
        .expect("the dropped-lines gauge is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(
        dropped > 1000,
        "{dropped} lines dropped of 4,000 unwritable"
    );
    eprintln!(
        "4,000 requests in {:?}, {dropped} log lines dropped",
        started.elapsed()
    );
    wardgate.kill();
}

/// wardgate logging in `format` at `rust_log` in front of a fresh origin, its stderr piped.
struct Logged {
    _origin: Origin,
    child: std::process::Child,
    port: u16,
}

async fn logged(format: &str, rust_log: &str) -> Logged {
    let origin = Origin::builder().wards(1).voters_per_ward(20).start().await;
    let Served { child, port, .. } = serve_process(|cmd| {
        cmd.args(["--upstream", &origin.url()])
            .args(["--log-format", format, "--drain-grace", "0s"])
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
    });
    Logged {
        _origin: origin,
        child,
        port,
    }
}

impl Logged {
    fn citizens(&self) -> String {
        format!(
            "http://127.0.0.1:{}/open/volunteer/citizens?{}",
            self.port,
            ward_query(1)
        )
    }

    /// Stops wardgate (SIGTERM: its log is flushed) and returns what it wrote on stderr.
    async fn stderr(self) -> String {
        let child = self.child;
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        String::from_utf8(out.stderr).unwrap()
    }
}

/// Runs wardgate with `format` and `rust_log`, sends one read, stops it, and returns stderr.
async fn stderr_after_one_read(format: &str, rust_log: &str) -> String {
    let w = logged(format, rust_log).await;
    let r = client().get(w.citizens()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    w.stderr().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_voter_data_reaches_the_log_even_at_debug() {
    let w = logged("json", "debug").await;
    let c = client();
    let rows: Vec<serde_json::Value> = c
        .get(w.citizens())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // A sync carrying a change: its body names a voter and a mobile number.
    let id = &rows[3]["id"];
    let body = format!(r#"[{{"id":{id},"voted":true,"mobile":"9876501234","name":"Qwertyuiop"}}]"#);
    let r = c.post(w.citizens()).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let log = w.stderr().await;
    assert!(
        log.contains("/open/volunteer/citizens"),
        "the requests are logged: {log}"
    );
    for secret in ["9876501234", "Qwertyuiop"] {
        assert!(
            !log.contains(secret),
            "a sync body's {secret} is in the log"
        );
    }
    // Nor any row's personal fields (voter ids, names, mobiles, addresses).
    let mut checked = 0;
    for row in &rows {
        for field in ["voter_id", "family_name", "mobile", "address"] {
            if let Some(v) = row[field].as_str().filter(|v| v.len() > 5) {
                assert!(!log.contains(v), "row {field} {v:?} is in the log");
                checked += 1;
            }
        }
    }
    assert!(checked >= rows.len() * 2, "only {checked} values checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_writes_one_access_line_in_the_configured_format() {
    let json = stderr_after_one_read("json", "info").await;
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).expect("an access line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 1, "{json}");
    let l = &lines[0];
    assert_eq!(l["level"], "INFO");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/open/volunteer/citizens");
    assert_eq!(l["route_class"], "citizens");
    assert_eq!(l["status"], 200);
    assert_eq!(l["cache"], "MISS");
    assert_eq!(
        l["request_id"].as_str().map(str::len),
        Some(32),
        "a made id"
    );
    assert!(l["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(l["total_ms"].as_f64().unwrap() >= 0.0);
    let ts = l["timestamp"].as_str().unwrap();
    assert_eq!(
        (ts.len(), &ts[4..5], &ts[10..11], &ts[26..]),
        (27, "-", "T", "Z")
    );

    let human = stderr_after_one_read("human", "info").await;
    let line = human
        .lines()
        .find(|l| l.contains(" INFO access: "))
        .expect(&human);
    assert!(
        line.contains("method=GET path=\"/open/volunteer/citizens\""),
        "{line}"
    );
    assert!(line.contains(" status=200 cache=\"MISS\""), "{line}");
    assert!(line.contains(" request_id=\""), "{line}");

    // RUST_LOG filters access lines as it filters every other target
    let quiet = stderr_after_one_read("json", "info,access=off").await;
    assert!(!quiet.contains("\"target\":\"access\""), "{quiet}");
    assert!(quiet.contains("wardgate serving"), "{quiet}");
}
