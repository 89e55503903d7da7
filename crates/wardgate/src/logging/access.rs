//! Access-log lines, formatted straight into the batch: the one log line every request writes.
//!
//! Going through `tracing`'s JSON formatter cost about a tenth of a page hit's CPU (field
//! visitors, serde escaping, a calendar computed per line). This writes the same line, in the
//! same format and under the same `RUST_LOG` filter (target `access`, level INFO), with one
//! calendar computation per second per thread.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Written in ms with µs precision (`0.006`), as integers: no float formatting per line.
    pub total: Duration,
    pub upstream: Option<Duration>,
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
    buf.push_str(prefix);
    buf.push('.');
    padded_into(buf, u64::from(now.subsec_micros()), 6);
    buf.push('Z');
}

/// The rest of a JSON line, after `{"timestamp":"<time>`.
fn json(buf: &mut String, l: &AccessLine<'_>) {
    buf.push_str("\",\"level\":\"INFO\",\"client\":\"");
    addr_into(buf, l.client);
    buf.push_str("\",\"method\":\"");
    escape_into(buf, l.method);
    buf.push_str("\",\"path\":\"");
    escape_into(buf, l.path);
    buf.push_str("\",\"route_class\":\"");
    buf.push_str(l.route_class);
    buf.push_str("\",\"status\":");
    decimal_into(buf, u64::from(l.status));
    buf.push_str(",\"cache\":\"");
    buf.push_str(l.cache);
    buf.push_str("\",\"bytes\":\"");
    escape_into(buf, l.bytes);
    buf.push_str("\",\"request_id\":\"");
    escape_into(buf, l.request_id);
    buf.push_str("\",\"total_ms\":");
    ms_into(buf, l.total);
    if let Some(u) = l.upstream {
        buf.push_str(",\"upstream_ms\":");
        ms_into(buf, u);
    }
    buf.push_str(",\"target\":\"access\"}\n");
}

/// The rest of a human line, after its time.
fn human(buf: &mut String, l: &AccessLine<'_>) {
    let _ = write!(
        buf,
        "  INFO access: client={} method={} path={:?} route_class={:?} status={} cache={:?} bytes={:?} request_id={:?} total_ms=",
        l.client, l.method, l.path, l.route_class, l.status, l.cache, l.bytes, l.request_id
    );
    ms_into(buf, l.total);
    if let Some(u) = l.upstream {
        buf.push_str(" upstream_ms=");
        ms_into(buf, u);
    }
    buf.push('\n');
}

/// `d` in milliseconds with three decimals (µs).
fn ms_into(buf: &mut String, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    decimal_into(buf, us / 1000);
    buf.push('.');
    padded_into(buf, us % 1000, 3);
}

/// The last `places` decimal digits of `n`, zero-padded (`{:0places$}` for `n` that fit).
fn padded_into(buf: &mut String, n: u64, places: u32) {
    for place in (0..places).rev() {
        buf.push(char::from(b'0' + (n / 10u64.pow(place) % 10) as u8));
    }
}

/// `n` in decimal, without `core::fmt` (a few instructions a digit).
fn decimal_into(buf: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        buf.push(char::from(d));
    }
}

/// The client's address as `Display` writes it (`10.1.2.3:4567`); IPv4, the common case,
/// without `core::fmt`, which costs about a thousand instructions per address.
fn addr_into(buf: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push('.');
                }
                decimal_into(buf, u64::from(octet));
            }
            buf.push(':');
            decimal_into(buf, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(buf, "{a}");
        }
    }
}

/// `s` as the inside of a JSON string: runs of plain characters copied at once.
fn escape_into(buf: &mut String, s: &str) {
    // Most fields need nothing escaped: one scan (a fold without early exit, which the
    // compiler vectorises), one copy.
    let escapes = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !escapes {
        buf.push_str(s);
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        // Every byte escaped is ASCII, so `i` is on a character boundary.
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b if b < 0x20 => "",
            _ => continue,
        };
        buf.push_str(&s[plain..i]);
        if escaped.is_empty() {
            let _ = write!(buf, "\\u{:04x}", b);
        } else {
            buf.push_str(escaped);
        }
        plain = i + 1;
    }
    buf.push_str(&s[plain..]);
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
            total: Duration::from_micros(250),
            upstream: Some(Duration::from_micros(12_500)),
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
    fn numbers_and_addresses_are_written_as_display_writes_them() {
        for n in [0u64, 7, 10, 99, 200, 65_535, 1_000_000, u64::MAX] {
            let mut buf = String::new();
            decimal_into(&mut buf, n);
            assert_eq!(buf, n.to_string());
        }
        for a in [
            "10.1.2.3:4567",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8080",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut buf = String::new();
            addr_into(&mut buf, addr);
            assert_eq!(buf, addr.to_string());
        }
        for (us, want) in [
            (0, "0.000"),
            (6, "0.006"),
            (250, "0.250"),
            (12_345_678, "12345.678"),
        ] {
            let mut buf = String::new();
            ms_into(&mut buf, Duration::from_micros(us));
            assert_eq!(buf, want);
        }
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
