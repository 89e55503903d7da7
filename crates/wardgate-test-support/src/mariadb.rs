//! A throwaway `mariadbd` per test process, from a data directory template made once per build tree.
//!
//! `mariadb-install-db` takes 1-4 s on a shared 2-core machine; copying its result and starting
//! `mariadbd` on the copy takes about 0.3 s. So the first test process on a machine (per
//! `target/` directory and MariaDB version) makes the template, under a lock file, and every
//! server after that starts from a copy.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::server::{find_program, start_on_free_port, temp_dir, Supervised};

/// The environment variable that names a MariaDB/MySQL (`mysql://user[:pw]@host:port`, no
/// database) to use instead of starting one.
pub const MYSQL_ENV: &str = "WARDGATE_TEST_MYSQL";

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for another process making the template.
const TEMPLATE_TIMEOUT: Duration = Duration::from_secs(300);
/// A lock file this old belongs to a process that died making the template.
const STALE_LOCK: Duration = Duration::from_secs(120);
/// Small redo log: the datadir copy stays ~25 MiB instead of ~110 MiB.
const LOG_FILE_SIZE: &str = "--innodb-log-file-size=8M";
/// Bumped when the way the template is made changes.
const TEMPLATE_FORMAT: u32 = 1;
const SBIN: &[&str] = &["/usr/sbin", "/usr/local/sbin"];

/// The root URL (`mysql://root@127.0.0.1:PORT`, no database) of the MariaDB this test process
/// shares: the one named by `WARDGATE_TEST_MYSQL` if set, else a throwaway `mariadbd` started
/// on first use and stopped when the process ends. It has a database `test`; tests keep apart
/// by creating databases of their own.
pub fn mysql_root_url() -> String {
    static SHARED: OnceLock<String> = OnceLock::new();
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var(MYSQL_ENV) {
            Ok(url) if !url.is_empty() => url.trim_end_matches('/').to_string(),
            _ => SERVER.get_or_init(MariaDb::start).root_url(),
        })
        .clone()
}

/// A throwaway `mariadbd` on loopback, root without password over TCP; killed on drop or when
/// the test process ends, its data thrown away.
pub struct MariaDb {
    server: Supervised,
    port: u16,
    /// With `tls_only`: the server's certificate, key and CA.
    tls: Option<crate::ServerCert>,
}

impl MariaDb {
    /// Starts one on a free port, from a copy of the template data directory.
    pub fn start() -> MariaDb {
        MariaDb::start_with(&[])
    }

    /// A primary for replication tests: binary log on, server id 1.
    pub fn primary() -> MariaDb {
        MariaDb::start_with(&[
            "--log-bin=primary-bin",
            "--server-id=1",
            "--binlog-format=ROW",
        ])
    }

    /// A server for a replica (server id 2); the test points it at its primary with
    /// `CHANGE MASTER TO` (a `MASTER_DELAY` makes it lag by that much).
    pub fn replica() -> MariaDb {
        MariaDb::start_with(&["--server-id=2", "--relay-log=replica-relay"])
    }

    /// One that speaks TLS only (`require_secure_transport=ON`: a TCP client without TLS is
    /// refused; the Unix socket, `socket_url`, stays open for setup), its certificate for
    /// `localhost` and `127.0.0.1` signed by a CA made now (`ca_file`).
    pub fn tls_only() -> MariaDb {
        let ca = crate::TestCa::new("wardgate test MariaDB CA");
        let cert = ca.server_cert();
        let opts = [
            arg("--ssl-ca=", &cert.ca_file()),
            arg("--ssl-cert=", &cert.cert_file()),
            arg("--ssl-key=", &cert.key_file()),
        ];
        let opts: Vec<String> = opts
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .chain(["--require-secure-transport=ON".to_string()])
            .collect();
        let mut db = MariaDb::start_with(&opts.iter().map(String::as_str).collect::<Vec<_>>());
        db.tls = Some(cert);
        db
    }

    /// The PEM file of the CA that signed the server's certificate (`tls_only`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(crate::ServerCert::ca_file)
    }

    /// `mysql://root@localhost/DB?socket=…`: database `db` over the server's Unix socket,
    /// which `require_secure_transport` leaves open (a socket never leaves the machine).
    pub fn socket_url(&self, db: &str) -> String {
        let sock = self.server.dir().join("sock");
        let sock = sock.to_string_lossy().replace('/', "%2F");
        format!("mysql://root@localhost/{db}?socket={sock}")
    }

    /// Starts one with `extra` server options.
    pub fn start_with(extra: &[&str]) -> MariaDb {
        let template = template();
        let mariadbd = find_program("mariadbd", SBIN);
        let (server, port) = start_on_free_port(
            "MariaDB",
            START_TIMEOUT,
            |port| spawn(&mariadbd, &template, port, extra),
            greets,
        );
        MariaDb {
            server,
            port,
            tls: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT`
    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }
}

fn spawn(mariadbd: &Path, template: &Path, port: u16, extra: &[&str]) -> Supervised {
    let dir = temp_dir("wardgate-mariadb-");
    let data = dir.join("data");
    copy_dir(template, &data)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", template.display(), data.display()));
    let init = dir.join("init.sql");
    fs::write(&init, "CREATE DATABASE IF NOT EXISTS test;\n").expect("writing init.sql");
    let mut args: Vec<OsString> = vec![
        "--no-defaults".into(),
        arg("--datadir=", &data),
        arg("--socket=", &dir.join("sock")),
        arg("--pid-file=", &dir.join("mariadbd.pid")),
        arg("--tmpdir=", &dir),
        arg("--init-file=", &init),
        format!("--port={port}").into(),
        "--bind-address=127.0.0.1".into(),
        LOG_FILE_SIZE.into(),
        // Throwaway data: no durability, small memory.
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-flush-log-at-trx-commit=0".into(),
        "--innodb-doublewrite=0".into(),
        "--max-connections=1000".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    if is_root(&dir) {
        args.push("--user=root".into());
    }
    Supervised::spawn(mariadbd, &args, dir)
}

fn arg(name: &str, path: &Path) -> OsString {
    let mut a = OsString::from(name);
    a.push(path);
    a
}

/// Whether this process runs as root (it owns what it creates): `mariadbd` then needs
/// `--user=root`.
fn is_root(created: &Path) -> bool {
    fs::metadata(created).is_ok_and(|m| m.uid() == 0)
}

/// The server sent its handshake (protocol 10) on `port`: it accepts logins.
fn greets(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && head[4] == 10
}

/// The template data directory for this MariaDB version, made now if no process made it yet.
fn template() -> PathBuf {
    let install_db = find_program("mariadb-install-db", SBIN);
    let version = mariadbd_version();
    let root = template_root();
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
    let done = root.join(format!("mariadb-{version}-v{TEMPLATE_FORMAT}"));
    let lock = root.join(format!("mariadb-{version}-v{TEMPLATE_FORMAT}.lock"));
    let deadline = Instant::now() + TEMPLATE_TIMEOUT;
    loop {
        // Complete when present: it appears by one rename.
        if done.is_dir() {
            return done;
        }
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => {
                let _unlock = RemoveOnDrop(lock.clone());
                if !done.is_dir() {
                    make_template(&install_db, &root, &done);
                }
                return done;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let age = fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a > STALE_LOCK) {
                    let _ = fs::remove_file(&lock);
                    continue;
                }
                assert!(
                    Instant::now() < deadline,
                    "waited {TEMPLATE_TIMEOUT:?} for another test process to make {} (remove {} if none runs)",
                    done.display(),
                    lock.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("creating the lock file {}: {e}", lock.display()),
        }
    }
}

/// Runs `mariadb-install-db` into a scratch directory next to `done`, then renames it there.
fn make_template(install_db: &Path, root: &Path, done: &Path) {
    let scratch = root.join(format!(
        "{}.tmp-{}",
        done.file_name()
            .and_then(|n| n.to_str())
            .expect("template name is UTF-8"),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("creating {}: {e}", scratch.display()));
    let data = scratch.join("data");
    let mut cmd = Command::new(install_db);
    cmd.arg("--no-defaults")
        .arg("--auth-root-authentication-method=normal")
        .arg(arg("--datadir=", &data))
        .arg(LOG_FILE_SIZE)
        .stdin(Stdio::null());
    if is_root(&scratch) {
        cmd.arg("--user=root");
    }
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} (Debian: apt-get install mariadb-server): {e}",
            install_db.display()
        )
    });
    if !out.status.success() || !data.join("mysql").is_dir() {
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().collect();
        let _ = fs::remove_dir_all(&scratch);
        panic!(
            "`{cmd:?}` failed ({}); its output ends:\n{}",
            out.status,
            tail[tail.len().saturating_sub(25)..].join("\n")
        );
    }
    if std::env::var_os("WARDGATE_TEST_VERBOSE").is_some() {
        eprintln!(
            "made the MariaDB template {} in {:?}",
            done.display(),
            started.elapsed()
        );
    }
    if let Err(e) = fs::rename(&data, done) {
        let _ = fs::remove_dir_all(&scratch);
        // Someone else's template won (a stale lock taken over): use theirs.
        if !done.is_dir() {
            panic!("renaming {} to {}: {e}", data.display(), done.display());
        }
    }
    let _ = fs::remove_dir_all(&scratch);
}

/// `target/wardgate-test-support` of the running test binary (`target/<profile>/deps/…`), else
/// the system temp dir.
fn template_root() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|target| target.join("CACHEDIR.TAG").is_file())
        .unwrap_or_else(std::env::temp_dir)
        .join("wardgate-test-support")
}

/// `mariadbd --version`'s version (`10.11.19-MariaDB-0+deb12u1`), made safe for a file name.
fn mariadbd_version() -> String {
    let mariadbd = find_program("mariadbd", SBIN);
    let out = Command::new(&mariadbd)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (Debian: apt-get install mariadb-server): {e}",
                mariadbd.display()
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .unwrap_or("unknown");
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
