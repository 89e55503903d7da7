//! Access-log lines, formatted straight into the batch: the one log line every request writes.
//!
//! Going through `tracing`'s JSON formatter cost about a tenth of a page hit's CPU (field
//! visitors, serde escaping, a calendar computed per line). This writes the same line, in the
//! same format and under the same `RUST_LOG` filter (target `access`, level INFO), with one
//! calendar computation per second per thread.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;
use crate::time::EpochMs;

use super::{BATCH, FORMAT};

/// What one access-log line says about a request.
pub struct AccessLine<'a> {
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route_class: &'a str,
    pub status: u16,
    pub cache: &'a str,
    /// `Content-Length` of the answer, `-` when it is streamed.
    pub bytes: &'a str,
    pub total_ms: f64,
    pub upstream_ms: Option<f64>,
    /// The request's id (`request_id`): of `[A-Za-z0-9._:-]`, escaped all the same.
    pub request_id: &'a str,
}

thread_local! {
    /// This thread's line buffer and the second its date-time prefix was made for.
    static LINE: RefCell<(String, u64, String)> = const { RefCell::new((String::new(), u64::MAX, String::new())) };
}

/// Writes the access-log line of a request, unless logging is off or `RUST_LOG` filters it.
pub fn access(line: &AccessLine<'_>) {
    let (Some(batch), Some(format)) = (BATCH.get(), FORMAT.get()) else {
        return;
    };
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    LINE.with(|cell| {
        let Ok(mut cell) = cell.try_borrow_mut() else {
            return;
        };
        let (buf, second, prefix) = &mut *cell;
        buf.clear();
        match format {
            LogFormat::Json => {
                buf.push_str("{\"timestamp\":\"");
                timestamp(buf, second, prefix);
                json(buf, line);
            }
            LogFormat::Human => {
                timestamp(buf, second, prefix);
                human(buf, line);
            }
        }
        batch.append(buf.as_bytes());
    });
}

/// `2026-12-02T10:18:41.856352Z`, the calendar part made once per second.
fn timestamp(buf: &mut String, second: &mut u64, prefix: &mut String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    if now.as_secs() != *second {
        *second = now.as_secs();
        prefix.clear();
        let iso = EpochMs(now.as_secs() as i64 * 1000).to_jackson_iso();
        prefix.push_str(&iso[..19]); // up to the seconds
    }
    let _ = write!(buf, "{prefix}.{:06}Z", now.subsec_micros());
}

/// The rest of a JSON line, after `{"timestamp":"<time>`.
fn json(buf: &mut String, l: &AccessLine<'_>) {
    buf.push_str("\",\"level\":\"INFO\",\"client\":\"");
    let _ = write!(buf, "{}", l.client);
    for (name, value) in [("method", l.method), ("path", l.path)] {
        let _ = write!(buf, "\",\"{name}\":\"");
        escape_into(buf, value);
    }
    let _ = write!(
        buf,
        "\",\"route_class\":\"{}\",\"status\":{},\"cache\":\"{}\",\"bytes\":\"",
        l.route_class, l.status, l.cache
    );
    escape_into(buf, l.bytes);
    buf.push_str("\",\"request_id\":\"");
    escape_into(buf, l.request_id);
    let _ = write!(buf, "\",\"total_ms\":{}", l.total_ms);
    if let Some(u) = l.upstream_ms {
        let _ = write!(buf, ",\"upstream_ms\":{u}");
    }
    buf.push_str(",\"target\":\"access\"}\n");
}

/// The rest of a human line, after its time.
fn human(buf: &mut String, l: &AccessLine<'_>) {
    let _ = write!(
        buf,
        "  INFO access: client={} method={} path={:?} route_class={:?} status={} cache={:?} bytes={:?} request_id={:?} total_ms={}",
        l.client, l.method, l.path, l.route_class, l.status, l.cache, l.bytes, l.request_id, l.total_ms
    );
    if let Some(u) = l.upstream_ms {
        let _ = write!(buf, " upstream_ms={u}");
    }
    buf.push('\n');
}

/// `s` as the inside of a JSON string.
fn escape_into(buf: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> AccessLine<'static> {
        AccessLine {
            client: "10.1.2.3:4567".parse().unwrap(),
            method: "GET",
            path: "/open/\"x\"\\\n",
            route_class: "citizens",
            status: 200,
            cache: "HIT",
            bytes: "47043",
            total_ms: 0.25,
            upstream_ms: Some(12.5),
            request_id: "0f8fad5b-d9cb-469f",
        }
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut buf = String::from("{\"timestamp\":\"2026-12-02T10:18:41.856352Z");
        json(&mut buf, &line());
        assert!(buf.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(v["timestamp"], "2026-12-02T10:18:41.856352Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["client"], "10.1.2.3:4567");
        assert_eq!(v["path"], "/open/\"x\"\\\n");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], "47043");
        assert_eq!(v["total_ms"], 0.25);
        assert_eq!(v["upstream_ms"], 12.5);
        assert_eq!(v["request_id"], "0f8fad5b-d9cb-469f");
    }

    #[test]
    fn timestamps_follow_the_clock_across_seconds() {
        let (mut buf, mut second, mut prefix) = (String::new(), 0, String::new());
        timestamp(&mut buf, &mut second, &mut prefix);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let expected = EpochMs(now.as_millis() as i64).to_jackson_iso();
        // same minute (the test does not straddle one in practice), microseconds, Z
        assert_eq!(&buf[..16], &expected[..16]);
        assert_eq!(buf.len(), 27);
        assert!(buf.ends_with('Z'));
    }
}
