//! The limit stage: who the client is, and whether it is within its quota (GCRA, per route class).
//!
//! The client is its socket address, unless that address is a trusted proxy (the load balancer),
//! in which case it is the right-most untrusted address in `X-Forwarded-For` / `Forwarded`.
//! When the configured key header (a device or user token) is present it keys the quota instead,
//! so volunteers behind one carrier-NAT address do not share one budget.
//!
//! **Invariant:** the limiter's memory is bounded: idle keys are swept every few seconds and the
//! key count is capped (`MAX_KEYS`), beyond which the oldest state is dropped (failing open for
//! those clients rather than growing without bound).

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as GQuota, RateLimiter};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{Config, LimitClass, Quota};

/// Most keys one class's limiter holds before it is reset.
pub const MAX_KEYS: usize = 2_000_000;

/// Who a request is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// IPv4 address, or the /64 of an IPv6 address (one subscriber).
    Ip(IpAddr),
    /// Hash of the key header's value (bounded size whatever the client sends).
    Token(u64),
}

/// A refusal: how long until the next request would be allowed.
#[derive(Debug)]
pub struct Limited {
    pub retry_after: Duration,
    pub quota: Quota,
}

/// One GCRA limiter per route class.
pub struct Limiter {
    classes: [(LimitClass, Quota, DefaultKeyedRateLimiter<ClientKey>); 4],
    clock: DefaultClock,
}

fn gquota(q: Quota) -> GQuota {
    let period = Duration::from_secs_f64(1.0 / q.rate.max(1e-6));
    let burst = NonZeroU32::new(q.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    GQuota::with_period(period)
        .unwrap_or_else(|| GQuota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Limiter {
    pub fn new(cfg: &Config) -> Limiter {
        let make = |c: LimitClass| {
            let q = cfg.rate_limit.quota(c);
            (c, q, RateLimiter::keyed(gquota(q)))
        };
        Limiter {
            classes: LimitClass::ALL.map(make),
            clock: DefaultClock::default(),
        }
    }

    /// Whether the new config's quotas differ (a reload then swaps in a new limiter).
    pub fn same_quotas(&self, cfg: &Config) -> bool {
        self.classes
            .iter()
            .all(|(c, q, _)| cfg.rate_limit.quota(*c) == *q)
    }

    /// Counts one request of `class` for `key`.
    pub fn check(&self, class: LimitClass, key: &ClientKey) -> Result<(), Limited> {
        let Some((_, q, l)) = self.classes.iter().find(|(c, _, _)| *c == class) else {
            return Ok(());
        };
        l.check_key(key).map_err(|not_until| Limited {
            retry_after: not_until.wait_time_from(self.clock.now()),
            quota: *q,
        })
    }

    /// Drops idle keys. Returns false when a class still holds more than `MAX_KEYS`: the
    /// caller then replaces the whole limiter with a fresh one.
    pub fn sweep(&self) -> bool {
        let mut within = true;
        for (c, _, l) in &self.classes {
            l.retain_recent();
            l.shrink_to_fit();
            if l.len() > MAX_KEYS {
                tracing::warn!(
                    class = c.as_str(),
                    keys = l.len(),
                    "rate limiter key cap reached; resetting its state"
                );
                within = false;
            }
        }
        within
    }

    /// A limiter with the same quotas and no state.
    pub fn fresh(&self) -> Limiter {
        let classes = self
            .classes
            .each_ref()
            .map(|(c, q, _)| (*c, *q, RateLimiter::keyed(gquota(*q))));
        Limiter {
            classes,
            clock: DefaultClock::default(),
        }
    }

    /// Keys held in all classes (metrics, tests).
    pub fn keys(&self) -> usize {
        self.classes.iter().map(|(_, _, l)| l.len()).sum()
    }
}

/// Runs `sweep` every few seconds for as long as the limiter lives.
pub fn spawn_sweeper(limiter: Arc<arc_swap::ArcSwap<Limiter>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let l = limiter.load_full();
            // retain_recent walks every key: keep it off the async workers.
            let l2 = l.clone();
            if let Ok(false) = tokio::task::spawn_blocking(move || l2.sweep()).await {
                limiter.store(Arc::new(l.fresh()));
            }
        }
    });
}

/// The client's address: the peer, or the forwarded address when the peer is a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer_ip) {
        // Anyone else may write anything in those headers: they are ignored.
        return peer_ip;
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for elem in v.split(',') {
            for pair in elem.split(';') {
                let Some((k, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if !k.trim().eq_ignore_ascii_case("for") {
                    continue;
                }
                let val = val.trim().trim_matches('"');
                let host = match val.strip_prefix('[') {
                    Some(rest) => rest.split(']').next().unwrap_or(""),
                    None => val.split(':').next().unwrap_or(""),
                };
                if let Ok(ip) = host.parse::<IpAddr>() {
                    chain.push(ip);
                }
            }
        }
    }
    if chain.is_empty() {
        for v in headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            chain.extend(v.split(',').filter_map(|s| s.trim().parse::<IpAddr>().ok()));
        }
    }
    // Right to left: the first address not added by one of our own proxies is the client.
    chain
        .iter()
        .rev()
        .map(|ip| ip.to_canonical())
        .find(|ip| !is_trusted(ip))
        .or_else(|| chain.first().map(|ip| ip.to_canonical()))
        .unwrap_or(peer_ip)
}

/// The key a request is counted against.
pub fn client_key(ip: IpAddr, headers: &HeaderMap, key_header: Option<&str>) -> ClientKey {
    if let Some(v) = key_header
        .and_then(|h| headers.get(h))
        .filter(|v| !v.is_empty() && v.len() <= 256)
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        v.as_bytes().hash(&mut h);
        return ClientKey::Token(h.finish());
    }
    match ip {
        IpAddr::V4(_) => ClientKey::Ip(ip),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            ClientKey::Ip(IpAddr::V6(std::net::Ipv6Addr::new(
                s[0], s[1], s[2], s[3], 0, 0, 0, 0,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.7"),
        );
        let trusted = nets(&["10.0.0.0/8"]);
        let lb: SocketAddr = "10.0.0.2:5555".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:5555".parse().unwrap();
        assert_eq!(
            client_ip(lb, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(stranger, &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );

        let mut f = HeaderMap::new();
        f.insert(
            "forwarded",
            HeaderValue::from_static("for=\"[2001:db8::1]:443\";proto=https, for=10.0.0.9"),
        );
        assert_eq!(
            client_ip(lb, &f, &trusted),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn quota_and_burst_are_per_key() {
        let mut cfg = Config::default();
        cfg.rate_limit.downloads = Quota {
            rate: 1.0,
            burst: 3,
        };
        let l = Limiter::new(&cfg);
        let a = ClientKey::Ip("1.1.1.1".parse().unwrap());
        let b = ClientKey::Ip("2.2.2.2".parse().unwrap());
        for _ in 0..3 {
            assert!(l.check(LimitClass::Downloads, &a).is_ok());
        }
        let e = l.check(LimitClass::Downloads, &a).unwrap_err();
        assert!(
            e.retry_after > Duration::from_millis(500) && e.retry_after <= Duration::from_secs(1)
        );
        assert!(
            l.check(LimitClass::Downloads, &b).is_ok(),
            "another IP has its own budget"
        );
        assert!(
            l.check(LimitClass::Master, &a).is_ok(),
            "another class has its own budget"
        );
    }

    #[test]
    fn key_header_wins_over_ip_and_ipv6_is_keyed_by_prefix() {
        let mut h = HeaderMap::new();
        h.insert("x-device-id", HeaderValue::from_static("dev-123"));
        let ip: IpAddr = "100.64.0.1".parse().unwrap();
        assert!(matches!(
            client_key(ip, &h, Some("x-device-id")),
            ClientKey::Token(_)
        ));
        assert_eq!(
            client_key(ip, &HeaderMap::new(), Some("x-device-id")),
            ClientKey::Ip(ip)
        );
        let a = client_key("2001:db8:1:2::5".parse().unwrap(), &HeaderMap::new(), None);
        let b = client_key("2001:db8:1:2::9".parse().unwrap(), &HeaderMap::new(), None);
        assert_eq!(a, b);
    }

    #[test]
    fn memory_stays_bounded_with_a_million_ips() {
        let mut cfg = Config::default();
        // A quick refill so that swept keys are indistinguishable from fresh ones.
        cfg.rate_limit.downloads = Quota {
            rate: 1000.0,
            burst: 1,
        };
        let l = Limiter::new(&cfg);
        for i in 0..1_000_000u32 {
            let key = ClientKey::Ip(IpAddr::V4(std::net::Ipv4Addr::from(i)));
            let _ = l.check(LimitClass::Downloads, &key);
        }
        assert!(l.keys() >= 900_000, "keys are tracked: {}", l.keys());
        std::thread::sleep(Duration::from_millis(20));
        l.sweep();
        assert_eq!(l.keys(), 0, "idle keys are swept");
    }
}
