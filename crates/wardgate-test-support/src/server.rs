//! One throwaway server process under a `sh` supervisor that kills it when the test process ends.
//!
//! The supervisor's stdin is a pipe whose only writer is the test process. When that process
//! ends, however it ends (return, panic, SIGKILL), the pipe closes, the supervisor's `read`
//! returns, it SIGKILLs the server and removes the server's temporary directory. No `unsafe`,
//! no `prctl`: the kernel closing the pipe is the signal.

use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// `sh -c SUPERVISOR sh DIR PROGRAM ARGS...`: runs the server with its output in
/// `DIR/server.log`, kills it when stdin closes, exits when the server exits (with its status,
/// after removing DIR and printing the log's tail on stderr). Its own messages go nowhere and
/// it ignores SIGPIPE, SIGINT and SIGHUP: the test process being gone must not stop the cleanup.
const SUPERVISOR: &str = r#"dir=$1; shift
exec 3<&0 </dev/null 4>&2 2>/dev/null
"$@" >"$dir/server.log" 2>&1 3<&- 4>&- &
pid=$!
trap '' INT HUP PIPE
( read _ <&3; kill -9 "$pid" ) >/dev/null 2>&1 4>&- &
watch=$!
exec 3<&-
wait "$pid"; rc=$?
kill "$watch"
log=$(tail -n 25 "$dir/server.log")
rm -rf "$dir"
printf '%s\n' "$log" >&4
exit "$rc"
"#;

/// Lines of the server's log quoted in panic messages.
const LOG_TAIL_LINES: usize = 25;

/// A server running under the supervisor; stopped (and its directory removed) on `stop` or
/// drop, or when the test process ends.
pub(crate) struct Supervised {
    child: Child,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    command: String,
}

/// Why a server did not come up.
pub(crate) enum StartError {
    /// It exited; `log` is the tail of its output.
    Exited { status: String, log: String },
    /// It still runs but did not answer in time.
    Timeout { log: String },
}

impl StartError {
    /// The port was taken between choosing it and the server binding it.
    pub(crate) fn port_taken(&self) -> bool {
        matches!(self, StartError::Exited { log, .. } if log.contains("Address already in use"))
    }

    pub(crate) fn describe(&self, command: &str, timeout: Duration) -> String {
        match self {
            StartError::Exited { status, log } => {
                format!("`{command}` exited ({status}) before accepting connections; its log ends:\n{log}")
            }
            StartError::Timeout { log } => format!(
                "`{command}` did not accept connections within {timeout:?}; its log ends:\n{log}"
            ),
        }
    }
}

impl Supervised {
    /// Starts `program args` under the supervisor. `dir` (already created) is removed when the
    /// server stops.
    pub(crate) fn spawn(program: &Path, args: &[OsString], dir: PathBuf) -> Supervised {
        let command = std::iter::once(program.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("sh")
            .arg(&dir)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `sh` to supervise `{command}`: {e}"));
        let stdin = child.stdin.take();
        Supervised {
            child,
            stdin,
            dir,
            command,
        }
    }

    /// The server's temporary directory (removed when it stops).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The command line, for messages.
    pub(crate) fn command(&self) -> &str {
        &self.command
    }

    /// Waits until `ready()` holds while the server runs.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                let mut log = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut log);
                }
                return Err(StartError::Exited {
                    status: status.to_string(),
                    log,
                });
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Timeout {
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Kills the server and waits until it is gone (its port free, its directory removed).
    pub(crate) fn stop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on right now (the OS's pick for port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 gives a free port")
        .port()
}

/// A fresh directory under the system temp dir, removed by the supervisor (not on drop).
pub(crate) fn temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("a temporary directory can be created")
        .keep()
}

/// `name` on PATH, else in the first of `also` where it exists (Debian keeps `mariadbd` in
/// /usr/sbin, which is not on every user's PATH), else `name` itself.
pub(crate) fn find_program(name: &str, also: &[&str]) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Starts a server on a free port, choosing another when the port was taken in between (the
/// rare race of `free_port`). `start(port)` spawns it; `ready(port)` probes it.
pub(crate) fn start_on_free_port(
    what: &str,
    timeout: Duration,
    mut start: impl FnMut(u16) -> Supervised,
    mut ready: impl FnMut(u16) -> bool,
) -> (Supervised, u16) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port();
        let started = Instant::now();
        let mut server = start(port);
        match server.wait_ready(timeout, || ready(port)) {
            Ok(()) => {
                if std::env::var_os("WARDGATE_TEST_VERBOSE").is_some() {
                    eprintln!(
                        "started the test {what} on port {port} in {:?}",
                        started.elapsed()
                    );
                }
                return (server, port);
            }
            Err(e) if e.port_taken() && attempt < 5 => continue,
            Err(e) => panic!(
                "cannot start the test {what}: {}",
                e.describe(server.command(), timeout)
            ),
        }
    }
}

/// Whether process `pid` itself listens on TCP `port` (IPv4): one of its file descriptors is
/// the listening socket that `/proc/net/tcp` shows on that port. A connect can succeed on a
/// port some other process took in between; this cannot.
pub fn listens_on(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let suffix = format!(":{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.len() > 9 && f[1].ends_with(&suffix) && f[3] == LISTEN;
            listening.then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_tells_this_process_listening_from_a_port_it_only_connected_from() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listens_on(std::process::id(), port));
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        assert!(!listens_on(std::process::id(), client_port));
        // The process with pid 1 does not hold this process's socket.
        assert!(!listens_on(1, port));
        drop(listener);
        assert!(!listens_on(std::process::id(), port));
    }
}
