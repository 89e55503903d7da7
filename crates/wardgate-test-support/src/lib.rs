//! Test support for wardgate: the real servers and binaries its tests talk to.
//!
//! [`redis_url`] and [`mysql_root_url`] start one throwaway `redis-server` and `mariadbd` per
//! test process on first use (Debian packages `redis-server`, `mariadb-server`), or name the
//! servers of `WARDGATE_TEST_REDIS` / `WARDGATE_TEST_MYSQL` when set. Started servers stop
//! when the test process ends, however it ends. `WARDGATE_TEST_VERBOSE=1` prints start times.
//! [`MariaDb::tls_only`] starts one that refuses plain connections, its certificate signed by a
//! [`TestCa`] made for it.
//! [`PageOrigin`] runs a test's script in a page of its own origin in headless Chromium (Debian
//! package `chromium`, or `WARDGATE_TEST_CHROMIUM`), for what only a browser enforces: CORS.
//! [`LivePage`] opens any URL in headless Chromium and reads its live DOM over the DevTools
//! protocol: a page of the server under test, as it renders and updates itself.
//! [`listens_on`] tells whether a process itself listens on a port: a server a test starts on
//! a [`free_port`] is ready when it does, not when something answers there.
#![forbid(unsafe_code)]

mod browser;
mod devtools;
mod mariadb;
mod redis;
mod server;
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use browser::{PageOrigin, CHROMIUM_ENV};
pub use devtools::LivePage;
pub use mariadb::{mysql_root_url, MariaDb, MYSQL_ENV};
pub use redis::{redis_url, RedisCluster, RedisServer, TlsRedisServer, REDIS_ENV};
pub use server::{free_port, listens_on};
pub use tls::{ServerCert, TestCa};

/// The `wardgate-sample` binary of this build profile, next to the test binary's `deps/`
/// folder. `cargo test` at the root builds it with everything else; a test started otherwise
/// (`cargo test -p wardgate`) finds it missing or older than the sample's sources, and builds
/// it first, so a test never runs an old sample backend.
pub fn sample_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary has a path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test binaries live in target/<profile>/deps");
        let bin = profile_dir.join("wardgate-sample");
        if is_stale(&bin) {
            build_sample(profile_dir.file_name().is_some_and(|n| n == "release"));
        }
        bin
    })
    .clone()
}

/// Whether `bin` is missing or older than a file of the sample backend's crate.
fn is_stale(bin: &Path) -> bool {
    let Ok(built) = bin.metadata().and_then(|m| m.modified()) else {
        return true;
    };
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wardgate-sample");
    newest(&crate_dir).is_some_and(|t| t > built)
}

fn newest(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let p = e.path();
            if p.is_dir() {
                newest(&p)
            } else {
                e.metadata().and_then(|m| m.modified()).ok()
            }
        })
        .max()
}

fn build_sample(release: bool) {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.args([
        "build",
        "--quiet",
        "-p",
        "wardgate-sample",
        "--bin",
        "wardgate-sample",
    ]);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(status.success(), "building wardgate-sample failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn ping(port: u16) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    #[test]
    fn a_stopped_redis_frees_its_port_and_can_come_back_there() {
        let mut r = RedisServer::start();
        let port = r.port();
        assert!(ping(port));
        r.stop();
        assert!(!ping(port), "the killed Redis still answers");
        let back = RedisServer::start_on(port);
        assert!(ping(back.port()));
    }

    #[test]
    fn the_shared_servers_are_started_once() {
        if std::env::var_os(REDIS_ENV).is_none() {
            assert_eq!(redis_url(), redis_url());
            assert!(redis_url().starts_with("redis://127.0.0.1:"));
        }
        if std::env::var_os(MYSQL_ENV).is_none() {
            let url = mysql_root_url();
            assert_eq!(url, mysql_root_url());
            let port: u16 = url
                .strip_prefix("mysql://root@127.0.0.1:")
                .and_then(|p| p.parse().ok())
                .expect("mysql://root@127.0.0.1:PORT");
            assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        }
    }
}
