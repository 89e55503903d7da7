//! Throwaway `redis-server`s: one shared per test process, and extra ones tests may kill.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use crate::server::{find_program, free_port, start_on_free_port, temp_dir, Supervised};
use crate::tls::ServerCert;

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
    spawn_with(vec!["--port".into(), port.to_string().into()])
}

/// `redis-server` on loopback, keeping nothing on disk, listening as `listen` says (its ports,
/// its TLS or Cluster settings).
fn spawn_with(listen: Vec<OsString>) -> Supervised {
    let dir = temp_dir("wardgate-redis-");
    let mut args = listen;
    for a in [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
    ] {
        args.push(a.into());
    }
    args.push(dir.clone().into());
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

/// A `redis-server` that speaks TLS only (no plain port), presenting `cert`,
/// with its default user off: clients log in as `TLS_REDIS_USER` (an ACL user), as on a managed
/// Redis.
pub struct TlsRedisServer {
    _server: Supervised,
    port: u16,
}

impl TlsRedisServer {
    pub fn start(cert: &ServerCert) -> TlsRedisServer {
        let tls = |port: u16| {
            spawn_with(vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string().into(),
                "--tls-cert-file".into(),
                cert.cert_file().into(),
                "--tls-key-file".into(),
                cert.key_file().into(),
                "--tls-ca-cert-file".into(),
                cert.ca_file().into(),
                "--tls-auth-clients".into(),
                "no".into(),
                "--user".into(),
                "default".into(),
                "off".into(),
                "--user".into(),
                TLS_REDIS_USER.into(),
                "on".into(),
                format!(">{TLS_REDIS_PASSWORD}").into(),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ])
        };
        // Without a TLS client here, a listening port is the sign of life (Redis binds it
        // once it has loaded).
        let (server, port) = start_on_free_port("TLS Redis", START_TIMEOUT, tls, accepts);
        TlsRedisServer {
            _server: server,
            port,
        }
    }

    /// `rediss://USER:PASSWORD@127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!(
            "rediss://{TLS_REDIS_USER}:{TLS_REDIS_PASSWORD}@127.0.0.1:{}/",
            self.port
        )
    }
}

/// The ACL user of a `TlsRedisServer`, and its password.
pub const TLS_REDIS_USER: &str = "wardgate";
const TLS_REDIS_PASSWORD: &str = "test-password-4f2a";

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// A Redis Cluster of `masters` nodes on loopback (no replicas), its slots spread by
/// `redis-cli --cluster create`; every node stops when this is dropped.
pub struct RedisCluster {
    nodes: Vec<(Supervised, u16)>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<(Supervised, u16)> = (0..masters)
            .map(|_| {
                let bus = free_port();
                let node = move |port: u16| {
                    spawn_with(vec![
                        "--port".into(),
                        port.to_string().into(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        bus.to_string().into(),
                        "--cluster-config-file".into(),
                        format!("nodes-{port}.conf").into(),
                        "--cluster-node-timeout".into(),
                        "3000".into(),
                    ])
                };
                start_on_free_port("Redis Cluster node", START_TIMEOUT, node, answers_ping)
            })
            .collect();
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster
    }

    fn create(&self) {
        let mut cmd = std::process::Command::new(find_program("redis-cli", &[]));
        cmd.arg("--cluster").arg("create");
        cmd.args(self.nodes.iter().map(|(_, p)| format!("127.0.0.1:{p}")));
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = cmd
            .output()
            .expect("redis-cli runs (Debian package redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while !self.nodes.iter().all(|(_, p)| cluster_ok(*p)) {
            assert!(
                std::time::Instant::now() < deadline,
                "the test Redis Cluster did not reach cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(_, p)| *p).collect()
    }

    /// Every node as a seed: `redis://127.0.0.1:P1/,redis://127.0.0.1:P2/,…`.
    pub fn urls(&self) -> String {
        self.ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The node on `port` says `cluster_state:ok` (every slot served).
fn cluster_ok(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"CLUSTER INFO\r\n").is_err() {
        return false;
    }
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(16).any(|w| w == b"cluster_state:ok") {
            return true;
        }
        if got.len() > 200 && got.ends_with(b"\r\n") {
            break;
        }
    }
    false
}
