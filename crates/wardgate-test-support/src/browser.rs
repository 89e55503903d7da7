//! Pages on origins of their own, run in headless Chromium, reporting what their script saw.
//!
//! Only a browser enforces CORS, so only a browser can show that a cross-origin page may (or
//! may not) read a response. [`PageOrigin`] serves pages from a loopback port of its own; each
//! [`PageOrigin::run`] loads one page in a fresh headless Chromium (Debian package `chromium`,
//! or `WARDGATE_TEST_CHROMIUM`), whose script reports its result to the page's own origin
//! (same-origin, so the report itself never depends on CORS). Chromium runs under the
//! supervisor of the other servers, so it is killed when the run ends, and also when the test
//! process ends however it ends; its profile, config and cache live in a directory of the run.
//! Non-loopback traffic goes to a proxy that is not there, so Chromium never reaches the
//! internet.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::server::{temp_dir, StartError, Supervised};

/// The variable naming the Chromium binary, when it is not `chromium` or `chromium-browser`
/// on PATH.
pub const CHROMIUM_ENV: &str = "WARDGATE_TEST_CHROMIUM";

/// Longest request head the pages' server reads; the browser's are far shorter.
const MAX_HEAD: usize = 64 * 1024;

/// How long a connection may stay silent before the pages' server drops it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long Chromium's helper processes may outlive its browser process before they are killed.
const HELPER_GRACE: Duration = Duration::from_secs(5);

/// Lines of Chromium's output quoted in panic messages.
const OUTPUT_TAIL_LINES: usize = 30;

/// Flags of every run. `--no-sandbox` because the tests run as root; logging to stderr puts
/// the page's console (and uncaught errors) into the panic message of a run that reported
/// nothing; the rest keep a throwaway headless browser quiet and fast: no first-run UI, no
/// background fetches, and (`--proxy-server` to the discard port, which loopback bypasses) no
/// way to the internet.
const CHROMIUM_FLAGS: &[&str] = &[
    "--enable-logging=stderr",
    "--log-level=0",
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--no-pings",
    "--mute-audio",
    "--proxy-server=http://127.0.0.1:9",
];

/// Pages served from their own origin (a loopback port of their own), each running a test's
/// script and reporting back to the same origin.
///
/// Besides the pages it answers the fixed [`route`](PageOrigin::route)s a test adds, so one
/// `PageOrigin` can be another's cross-origin resource. The server stops on drop.
pub struct PageOrigin {
    host: String,
    port: u16,
    shared: Arc<Shared>,
    next_page: AtomicU64,
    accept: Option<JoinHandle<()>>,
}

/// What the connection threads read and write.
#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    /// The scripts of the runs under way, by page number, with where their reports go.
    pages: Mutex<HashMap<u64, Page>>,
    /// Fixed answers by path (without the query), with how often each was asked for.
    routes: Mutex<HashMap<String, Route>>,
    /// Every request so far, as "METHOD target", for the message of a run that failed.
    requests: Mutex<Vec<String>>,
}

struct Page {
    script: String,
    reports: Sender<String>,
}

struct Route {
    headers: Vec<(String, String)>,
    body: String,
    hits: usize,
}

/// One answer of the pages' server.
struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn new(status: &'static str, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    fn not_found() -> Response {
        Response::new("404 Not Found", "text/plain", "not found\n".into())
    }
}

impl PageOrigin {
    /// Starts serving on a free loopback port. `host` is the host name the page's URL uses
    /// ("127.0.0.1" or "localhost"): two `PageOrigin`s differ in port, and in host when the
    /// test wants that too.
    pub fn start(host: &str) -> PageOrigin {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 gives a free port");
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("page-origin-{port}"))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("a thread can be spawned")
        };
        PageOrigin {
            host: host.to_owned(),
            port,
            shared,
            next_page: AtomicU64::new(0),
            accept: Some(accept),
        }
    }

    /// e.g. "http://localhost:41234": what a browser sends as `Origin` from these pages.
    pub fn origin(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The loopback port the pages are served on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers `path` (any method, any query) with 200, `headers` and `body`, replacing an
    /// earlier route of that path: a cross-origin resource for the pages of another
    /// `PageOrigin`. `Content-Type: text/plain` and `Cache-Control: no-store` are added unless
    /// `headers` names them.
    pub fn route(&self, path: &str, headers: &[(&str, &str)], body: &str) {
        let route = Route {
            headers: headers
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body: body.to_owned(),
            hits: 0,
        };
        lock(&self.shared.routes).insert(path.to_owned(), route);
    }

    /// How many requests reached the route of `path` so far (0 for no such route): whether a
    /// request the browser refused to show the page was sent at all.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.shared.routes).get(path).map_or(0, |r| r.hits)
    }

    /// Loads a page whose body runs `script` (JavaScript, may use `await`; it is wrapped in an
    /// async function) in headless Chromium, and returns what the script passed to
    /// `report(value)` (`JSON.stringify`'d). An exception the script throws, or a syntax
    /// error in it, is reported as `{"thrown": String(e)}`, so a failed `fetch` comes back as
    /// `{"thrown":"TypeError: Failed to fetch"}`. Panics, with the requests this origin saw
    /// and Chromium's output, if nothing was reported within `within` (which includes
    /// Chromium's start) or Chromium exited first.
    pub fn run(&self, script: &str, within: Duration) -> String {
        let n = self.next_page.fetch_add(1, Ordering::Relaxed);
        let (reports, reported) = mpsc::channel();
        let page = Page {
            script: script.to_owned(),
            reports,
        };
        lock(&self.shared.pages).insert(n, page);
        let _forget = ForgetPage {
            shared: &self.shared,
            n,
        };
        let seen_before = lock(&self.shared.requests).len();
        let url = format!("{}/page/{n}", self.origin());
        let started = Instant::now();
        let mut chromium = Chromium::start(&url);
        let outcome = chromium
            .wait_for_report(&reported, within)
            .map_err(|e| chromium.explain(&e, within));
        let ran = started.elapsed();
        drop(chromium);
        if std::env::var_os("WARDGATE_TEST_VERBOSE").is_some() {
            eprintln!(
                "ran {url} in headless Chromium in {ran:?}, stopped it in {:?}",
                started.elapsed() - ran
            );
        }
        outcome.unwrap_or_else(|(why, output)| {
            let requests = lock(&self.shared.requests)[seen_before..].join("\n");
            panic!(
                "the page {url} reported nothing: {why}\n\
                 its script:\n{script}\n\
                 requests {} saw meanwhile:\n{requests}\n{output}",
                self.origin()
            )
        })
    }
}

impl Drop for PageOrigin {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Removes a run's page when the run ends, returning or panicking.
struct ForgetPage<'a> {
    shared: &'a Shared,
    n: u64,
}

impl Drop for ForgetPage<'_> {
    fn drop(&mut self) {
        lock(&self.shared.pages).remove(&self.n);
    }
}

/// One headless Chromium on one page, with a directory of its own (profile, config, cache,
/// output), killed and removed, helpers and all, on drop.
pub(crate) struct Chromium {
    pub(crate) supervised: Supervised,
    pub(crate) dir: PathBuf,
}

impl Chromium {
    fn start(url: &str) -> Chromium {
        Chromium::start_with(url, &[])
    }

    /// Starts Chromium on `url` with `extra` flags after the usual ones.
    pub(crate) fn start_with(url: &str, extra: &[&str]) -> Chromium {
        let bin = chromium_bin();
        let dir = temp_dir("wardgate-chromium-");
        // Through `env`, since the supervisor passes no environment of its own: Chromium's
        // crash handler database and caches go to the run's directory, not to $HOME.
        let mut args: Vec<OsString> = vec![
            prefixed("XDG_CONFIG_HOME=", &dir.join("config")),
            prefixed("XDG_CACHE_HOME=", &dir.join("cache")),
            bin.into(),
        ];
        args.extend(CHROMIUM_FLAGS.iter().map(OsString::from));
        args.extend(extra.iter().map(OsString::from));
        args.push(prefixed("--user-data-dir=", &dir.join("profile")));
        args.push(url.into());
        let supervised = Supervised::spawn(Path::new("env"), &args, dir.clone());
        Chromium { supervised, dir }
    }

    /// The first report of the page, or why there is none, while Chromium runs.
    fn wait_for_report(
        &mut self,
        reported: &Receiver<String>,
        within: Duration,
    ) -> Result<String, StartError> {
        let mut report = None;
        self.supervised
            .wait_ready(within, || match reported.try_recv() {
                Ok(r) => {
                    report = Some(r);
                    true
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
            })?;
        Ok(report.expect("wait_ready returns Ok only once a report arrived"))
    }

    /// What went wrong, and the command with the tail of Chromium's output (still in the
    /// run's directory while it runs) less its complaints about the missing D-Bus.
    pub(crate) fn explain(&self, e: &StartError, within: Duration) -> (String, String) {
        let (why, output) = match e {
            StartError::Exited { status, log } => {
                (format!("Chromium exited ({status}) first"), log.clone())
            }
            StartError::Timeout { .. } => (
                format!("not within {within:?}"),
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default(),
            ),
        };
        let lines: Vec<&str> = output
            .lines()
            .filter(|l| !l.contains("dbus") && !l.contains("D-Bus"))
            .collect();
        let tail = lines[lines.len().saturating_sub(OUTPUT_TAIL_LINES)..].join("\n");
        let output = format!(
            "`{}`\nChromium's output ends (D-Bus errors left out):\n{tail}",
            self.supervised.command()
        );
        (why, output)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.supervised.stop();
        reap_helpers(&self.dir);
    }
}

/// Chromium's helpers (zygotes, renderers, the network and storage services, the crash
/// handler) exit on their own moments after its browser process, but until then one may still
/// write to the run's directory after the supervisor removed it. Each names that directory on
/// its command line: waits until none is left (killing those still there after
/// [`HELPER_GRACE`]), then removes the directory again.
fn reap_helpers(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let deadline = Instant::now() + HELPER_GRACE;
    loop {
        let left = processes_naming(&needle);
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .arg("-KILL")
                .args(left.iter().map(u32::to_string))
                .status();
            std::thread::sleep(Duration::from_millis(50));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The live processes with `needle` in their command line (none where there is no /proc).
fn processes_naming(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            // A zombie's command line is empty: it is gone but for its exit status.
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

fn prefixed(prefix: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(prefix);
    arg.push(path);
    arg
}

/// `WARDGATE_TEST_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os(CHROMIUM_ENV) {
        return PathBuf::from(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "headless Chromium is needed by the browser tests: apt-get install chromium \
                 (or set {CHROMIUM_ENV})"
            )
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking connection thread leaves plain data behind, still fine to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        // One thread per connection: Chromium opens several at once.
        let _ = std::thread::Builder::new()
            .name("page-origin-conn".into())
            .spawn(move || serve(stream, &shared));
    }
}

/// Answers one request and closes the connection.
fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut reader) = stream.try_clone().map(BufReader::new) else {
        return;
    };
    let Some((method, target, content_length)) = read_head(&mut reader) else {
        return;
    };
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let response = respond(shared, &method, &target, &String::from_utf8_lossy(&body));
    let _ = write_response(&stream, &response);
    let _ = stream.shutdown(Shutdown::Write);
}

/// The method, target and `Content-Length` of a request head, read up to its blank line.
fn read_head(reader: &mut impl BufRead) -> Option<(String, String, usize)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if reader.read_until(b'\n', &mut head).ok()? == 0 || head.len() > MAX_HEAD {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let content_length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse().ok())?;
    Some((method, target, content_length))
}

fn respond(shared: &Shared, method: &str, target: &str, body: &str) -> Response {
    lock(&shared.requests).push(format!("{method} {target}"));
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if let Some(route) = lock(&shared.routes).get_mut(path) {
        route.hits += 1;
        let mut response = Response::new("200 OK", "text/plain", route.body.clone());
        response.headers.clone_from(&route.headers);
        return response;
    }
    let pages = lock(&shared.pages);
    let page = |n: &str| {
        n.parse::<u64>()
            .ok()
            .and_then(|n| Some((n, pages.get(&n)?)))
    };
    if let Some(rest) = path.strip_prefix("/page/") {
        if let Some((_, p)) = rest.strip_suffix(".js").and_then(page) {
            return Response::new("200 OK", "text/javascript", wrap_script(&p.script));
        }
        if let Some((n, _)) = page(rest) {
            return Response::new("200 OK", "text/html; charset=utf-8", page_html(n));
        }
    } else if let Some((_, p)) = path.strip_prefix("/__report/").and_then(page) {
        if method == "POST" {
            let _ = p.reports.send(body.to_owned());
            return Response::new("204 No Content", "text/plain", String::new());
        }
    }
    Response::not_found()
}

/// The page of run `n`: `report` (the first report counts) and a catch-all for errors (a
/// syntax error in the script is one), then the script, loaded from the same origin so no
/// `</script>` in it can cut it short. The icon link keeps the browser from asking for one.
fn page_html(n: u64) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>wardgate browser test {n}</title>
<link rel="icon" href="data:,">
<script>
let wardgateReported = false;
async function report(v) {{
  if (wardgateReported) return;
  wardgateReported = true;
  await fetch("/__report/{n}", {{ method: "POST", body: String(JSON.stringify(v)) }});
}}
window.addEventListener("error", (e) => report({{ thrown: String(e.error ?? e.message) }}));
window.addEventListener("unhandledrejection", (e) => report({{ thrown: String(e.reason) }}));
</script>
<script src="/page/{n}.js"></script>
</head><body></body></html>
"#
    )
}

/// The test's script as the body of an async function whose exceptions are reported.
fn wrap_script(script: &str) -> String {
    format!(
        "(async () => {{\n  try {{\n    await (async () => {{\n{script}\n    }})();\n  }} catch (e) {{\n    \
         await report({{ thrown: String(e) }});\n  }}\n}})();\n"
    )
}

fn write_response(mut stream: &TcpStream, response: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {}\r\n", response.status);
    // Defaults a route's own headers override: a test may well be about caching.
    let defaults = [
        ("Content-Type", response.content_type),
        ("Cache-Control", "no-store"),
    ];
    for (name, value) in defaults {
        if !response
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}
