//! Throwaway `redis-server`s: one shared per test process, and extra ones tests may kill.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use crate::server::{find_program, start_on_free_port, temp_dir, Supervised};

/// The environment variable that names a Redis to use instead of starting one.
pub const REDIS_ENV: &str = "WARDGATE_TEST_REDIS";

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The URL (`redis://127.0.0.1:PORT/`) of the Redis this test process shares: the one named
/// by `WARDGATE_TEST_REDIS` if set, else a throwaway `redis-server` started on first use and
/// stopped when the process ends. Tests keep apart by key prefix.
pub fn redis_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var(REDIS_ENV) {
            Ok(url) if !url.is_empty() => url,
            _ => SERVER.get_or_init(RedisServer::start).url(),
        })
        .clone()
}

/// A throwaway `redis-server` on loopback that keeps nothing on disk; killed on `stop`, on
/// drop, or when the test process ends.
pub struct RedisServer {
    server: Supervised,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> RedisServer {
        let (server, port) = start_on_free_port("Redis", START_TIMEOUT, spawn, answers_ping);
        RedisServer { server, port }
    }

    /// Starts one on `port` (to bring a Redis back where it was); panics if it cannot.
    pub fn start_on(port: u16) -> RedisServer {
        let mut server = spawn(port);
        if let Err(e) = server.wait_ready(START_TIMEOUT, || answers_ping(port)) {
            panic!(
                "cannot start the test Redis: {}",
                e.describe(server.command(), START_TIMEOUT)
            );
        }
        RedisServer { server, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: a crash, as far as clients can tell) and waits until its port
    /// is free.
    pub fn stop(&mut self) {
        self.server.stop();
    }
}

fn spawn(port: u16) -> Supervised {
    let dir = temp_dir("wardgate-redis-");
    let args: Vec<OsString> = vec![
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.clone().into(),
    ];
    Supervised::spawn(&find_program("redis-server", &[]), &args, dir)
}

/// A Redis answers `PING` on `port`.
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
