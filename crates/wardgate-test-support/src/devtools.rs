//! A page of the server under test, open in headless Chromium, read live over the DevTools
//! protocol.
//!
//! [`PageOrigin`](crate::PageOrigin)'s pages report to their own origin; a page that a server
//! under test serves itself, under its own CSP (`connect-src 'self'`), cannot. [`LivePage`]
//! loads such a page in a fresh Chromium started with `--remote-debugging-port=0`, connects to
//! the page's DevTools websocket, and evaluates expressions in it (`Runtime.evaluate`): a test
//! reads the DOM as rendered, as often as it likes, without reloading the page. Chromium runs
//! supervised, as `PageOrigin`'s do: killed when the page is dropped or the test process ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::browser::Chromium;

/// How long one DevTools command may take to be answered.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// The window the page is laid out in until [`LivePage::resize`]: a laptop's.
const WINDOW: &str = "--window-size=1280,1000";

/// One page open in headless Chromium, driven over the DevTools protocol.
pub struct LivePage {
    // Declared first, dropped first: the websocket closes before Chromium is killed.
    ws: WebSocket<TcpStream>,
    next_id: u64,
    _chromium: Chromium,
}

impl LivePage {
    /// Opens `url` (loopback only: Chromium has no way out) and connects to it; panics, with
    /// Chromium's output, if its DevTools endpoint does not come up `within`.
    pub fn open(url: &str, within: Duration) -> LivePage {
        let mut chromium = Chromium::start_with(url, &["--remote-debugging-port=0", WINDOW]);
        let active = chromium.dir.join("profile").join("DevToolsActivePort");
        let mut target = None;
        let waited = chromium.supervised.wait_ready(within, || {
            target = debugger_port(&active).and_then(page_target);
            target.is_some()
        });
        if let Err(e) = waited {
            let (why, output) = chromium.explain(&e, within);
            panic!("no DevTools page target for {url}: {why}\n{output}");
        }
        let target = target.expect("wait_ready returns Ok only once a target was found");
        let ws = connect(&target);
        LivePage {
            ws,
            next_id: 1,
            _chromium: chromium,
        }
    }

    /// The value of `expression` in the page (promises awaited; `null` for `undefined`).
    /// Panics if it throws.
    pub fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let r = self.call("Runtime.evaluate", params);
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("`{expression}` threw in the page: {ex}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Evaluates `expression` every 100 ms until its value is truthy (not `null`, `false`,
    /// `0` or `""`), and returns that value; panics with the last value and the page's text
    /// if it is not within `within`.
    pub fn wait_for(&mut self, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expression);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!("`{expression}` still {v} after {within:?}; the page shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Lays the page out in a `width`×`height` viewport (CSS pixels), as a phone when `mobile`.
    pub fn resize(&mut self, width: u32, height: u32, mobile: bool) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.call("Emulation.setDeviceMetricsOverride", params);
    }

    /// Writes a PNG of the whole page (not only the viewport) to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let params = json!({"format": "png", "captureBeyondViewport": true});
        let r = self.call("Page.captureScreenshot", params);
        let data = r["data"].as_str().expect("a screenshot has data");
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("the screenshot is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// Sends one command and returns its result, skipping the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(command))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        while Instant::now() < deadline {
            let msg = match self.ws.read() {
                Ok(m) => m,
                // The read timeout: look at the deadline, then wait on.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("reading the answer to {method}: {e}"),
            };
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(text.as_str()).expect("DevTools sends JSON");
            if v["id"] != id {
                continue; // an event
            }
            if let Some(e) = v.get("error") {
                panic!("{method} failed: {e}");
            }
            return v["result"].clone();
        }
        panic!("{method} not answered within {CALL_TIMEOUT:?}");
    }
}

/// The port Chromium's DevTools listen on, once it has written `DevToolsActivePort`.
fn debugger_port(active: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(active).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The websocket URL of the first page target, asked of the DevTools HTTP endpoint (which
/// keeps the connection open whatever the request says: the body is read by its length).
fn page_target(port: u16) -> Option<String> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(CALL_TIMEOUT)).ok()?;
    let head = format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    (&s).write_all(head.as_bytes()).ok()?;
    let mut reader = BufReader::new(&s);
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    let targets: Value = serde_json::from_slice(&body).ok()?;
    targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
        .as_str()
        .map(str::to_owned)
}

/// Connects to a target's websocket; each read waits at most a second, so that `call` keeps
/// to its deadline.
fn connect(url: &str) -> WebSocket<TcpStream> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("a DevTools websocket URL: {url}"));
    let stream = TcpStream::connect(authority).unwrap_or_else(|e| panic!("{url}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let (ws, _) = tungstenite::client(url, stream).unwrap_or_else(|e| panic!("{url}: {e}"));
    ws
}
