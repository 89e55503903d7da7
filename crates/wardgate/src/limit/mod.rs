//! The limit stage: who the client is, and whether it is within its limits (GCRA, per route
//! class).
//!
//! **Who.** The client's address is the TCP peer's, unless the peer is in
//! `rate_limit.trusted_proxies` (the load balancer): then it is read from the one header
//! `rate_limit.client_ip_header` names, the one that load balancer sets, and no other
//! (`forwarded::client_ip`): for `x-forwarded-for` and `forwarded`, the right-most address that
//! is not itself a trusted proxy; for `x-real-ip`, its last value. Headers of the other kinds are
//! ignored whoever sends them, so a client behind the load balancer can never choose its own
//! address. IPv6 addresses count by their /64 (one subscriber). The device is the value of
//! `rate_limit.key_header` (`X-Device-Id`), when the app sends one: the installed apps do not.
//!
//! **Limits.** Every request passes its address's *ceiling*, `rate_limit.address_ceiling` times
//! the class's quota, whatever device ids it carries; and, besides, its device's quota (the
//! class quota), or, without a device header, its address's own quota (the class quota again,
//! as before devices were counted: what binds the installed apps today). An address keeps at
//! most `rate_limit.max_devices_per_address` devices; further new device ids from it are
//! counted against the ceiling only. So a client that makes up a device id per request is held
//! to its address's ceiling.
//!
//! **Invariant:** the limiter's memory is bounded and no pressure turns the limits off: keys
//! that have refilled are swept every 5 s, and a class holds at most `rate_limit.max_keys`
//! keys, beyond which the idlest are evicted (`table`; counted in
//! `wardgate_limiter_evictions_total`): a client being refused is the last to be forgotten.
//!
//! **Across the fleet.** With Redis, `Limiter::admit` holds the same limits fleet-wide
//! (`fleet`: tokens spent from leases this instance holds, charged in batches to one GCRA
//! schedule per bucket in Redis), and falls back to this instance's `Limiter::check` while
//! Redis is away. `ClientIdentity` names
//! buckets alike on every instance (the address and `DeviceId`, a stable hash).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::cache::l2::L2;
use crate::config::{LimitClass, Quota, RateLimitConfig};
use crate::metrics::Metrics;

mod fleet;
mod forwarded;
mod table;

pub use forwarded::{client_ip, trusted_peer};
use table::Table;

/// A device id as the limiter counts it: a stable 64-bit hash of the key header's value
/// (FNV-1a), the same on every instance and build, so that a fleet-wide limiter names it alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId(pub u64);

impl DeviceId {
    pub fn of(value: &[u8]) -> DeviceId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in value {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        DeviceId(h)
    }
}

/// Who a request is counted against: its address and, when it sent one, its device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    address: IpAddr,
    device: Option<DeviceId>,
}

impl ClientIdentity {
    /// `address` as it is counted: IPv4, or the /64 of an IPv6 address.
    pub fn new(address: IpAddr, device: Option<DeviceId>) -> ClientIdentity {
        let address = match address.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        ClientIdentity { address, device }
    }

    /// The client at `ip` (from `client_ip`), with its device from `key_header` when present
    /// (at most 256 bytes are believed: a longer value is no device).
    pub fn of(ip: IpAddr, headers: &HeaderMap, key_header: Option<&str>) -> ClientIdentity {
        let device = key_header
            .and_then(|h| headers.get(h))
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(|v| DeviceId::of(v.as_bytes()));
        ClientIdentity::new(ip, device)
    }

    pub fn address(&self) -> IpAddr {
        self.address
    }

    pub fn device(&self) -> Option<DeviceId> {
        self.device
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The device's quota.
    Device,
    /// The address's own quota (requests without a device header).
    Address,
    /// The address's ceiling over all its devices.
    Ceiling,
}

impl Bound {
    /// The name in a 429's JSON body (`limited_by`).
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Device => "device_quota",
            Bound::Address => "address_quota",
            Bound::Ceiling => "address_ceiling",
        }
    }

    /// The words in a 429's message.
    pub fn describe(self) -> &'static str {
        match self {
            Bound::Device => "this device's quota",
            Bound::Address => "this address's quota for requests without a device id",
            Bound::Ceiling => "the address ceiling, shared by every device behind one address",
        }
    }
}

/// A refusal: which limit, its quota, and how long until the next request would be allowed.
#[derive(Debug)]
pub struct Limited {
    pub retry_after: Duration,
    pub quota: Quota,
    pub bound: Bound,
}

/// The settings a limiter is made of (a reload with others makes a new one).
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    quotas: [Quota; 4],
    ceiling: f64,
    max_devices: u32,
    max_keys: u32,
    shared: bool,
    lease_share: f64,
}

impl Settings {
    fn of(cfg: &RateLimitConfig) -> Settings {
        Settings {
            quotas: LimitClass::ALL.map(|c| cfg.quota(c)),
            ceiling: cfg.address_ceiling,
            max_devices: cfg.max_devices_per_address,
            max_keys: cfg.max_keys,
            shared: cfg.shared,
            lease_share: cfg.lease_share,
        }
    }

    fn ceiling(&self, q: Quota) -> Quota {
        Quota {
            rate: q.rate * self.ceiling,
            burst: (f64::from(q.burst) * self.ceiling)
                .ceil()
                .min(f64::from(u32::MAX)) as u32,
        }
    }
}

/// The limits of every route class.
pub struct Limiter {
    settings: Settings,
    tables: [Table; 4],
    /// Leases of the fleet's buckets, when limits are shared (`rate_limit.shared`).
    fleet: Option<Arc<fleet::FleetLeases>>,
    epoch: Instant,
    evictions: Counter,
    keys: Gauge,
}

impl Limiter {
    pub fn new(cfg: &RateLimitConfig, metrics: &Metrics) -> Limiter {
        let settings = Settings::of(cfg);
        let tables = settings.quotas.map(|q| {
            let max_keys = settings.max_keys as usize;
            Table::new(q, settings.ceiling(q), settings.max_devices, max_keys)
        });
        Limiter {
            fleet: settings
                .shared
                .then(|| Arc::new(fleet::FleetLeases::new(settings.lease_share))),
            settings,
            tables,
            epoch: Instant::now(),
            evictions: metrics.limiter_evictions.clone(),
            keys: metrics.limiter_keys.clone(),
        }
    }

    /// Whether the new config's limits are these (a reload then keeps this limiter's state).
    pub fn same_settings(&self, cfg: &RateLimitConfig) -> bool {
        self.settings == Settings::of(cfg)
    }

    fn now(&self) -> u64 {
        // Nanoseconds since the limiter began: 584 years fit.
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The decision, fleet-wide when limits are shared and Redis answers (`fleet`), else this
    /// instance's own (`check`).
    pub async fn admit(
        &self,
        l2: Option<&Arc<L2>>,
        class: LimitClass,
        who: &ClientIdentity,
    ) -> Result<(), Limited> {
        if let (Some(fleet), Some(l2)) = (&self.fleet, l2.filter(|l| l.is_up())) {
            let q = self.settings.quotas[class_index(class)];
            let ceiling = self.settings.ceiling(q);
            if let Some(verdict) = fleet.check(l2, class, who, q, ceiling).await {
                return verdict;
            }
        }
        self.check(class, who)
    }

    /// This instance's decision: counts one request of `class` from `who` if it is within its
    /// limits.
    pub fn check(&self, class: LimitClass, who: &ClientIdentity) -> Result<(), Limited> {
        let i = class_index(class);
        let (evicted, verdict) = self.tables[i].check(who.address, who.device, self.now());
        if evicted > 0 {
            self.evictions.inc_by(evicted);
        }
        verdict.map_err(|r| {
            let quota = self.settings.quotas[i];
            Limited {
                retry_after: Duration::from_nanos(r.wait),
                quota: match r.bound {
                    Bound::Ceiling => self.settings.ceiling(quota),
                    Bound::Device | Bound::Address => quota,
                },
                bound: r.bound,
            }
        })
    }

    /// Drops the keys that have refilled, in every class; sets `wardgate_limiter_keys`.
    pub fn sweep(&self) {
        let now = self.now();
        let held: usize = self.tables.iter().map(|t| t.sweep(now)).sum();
        self.keys.set(held as i64);
    }

    /// Keys held in all classes (addresses and devices).
    pub fn keys(&self) -> usize {
        self.tables.iter().map(Table::len).sum()
    }
}

/// Runs `sweep` every 5 s for as long as the process lives, on whichever limiter is in force.
/// Tables and quotas are in `LimitClass::ALL`'s order.
fn class_index(class: LimitClass) -> usize {
    LimitClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(0)
}

pub fn spawn_sweeper(limiter: Arc<arc_swap::ArcSwap<Limiter>>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let l = limiter.load_full();
            // A sweep walks every key: keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || l.sweep()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn limiter(f: impl FnOnce(&mut RateLimitConfig)) -> Limiter {
        let mut cfg = RateLimitConfig::default();
        f(&mut cfg);
        Limiter::new(&cfg, &Metrics::new())
    }

    fn at(ip: &str) -> ClientIdentity {
        ClientIdentity::new(ip.parse().unwrap(), None)
    }

    #[test]
    fn quota_and_burst_are_per_address_and_class() {
        let l = limiter(|c| {
            c.downloads = Quota {
                rate: 1.0,
                burst: 3,
            }
        });
        let (a, b) = (at("1.1.1.1"), at("2.2.2.2"));
        for _ in 0..3 {
            assert!(l.check(LimitClass::Downloads, &a).is_ok());
        }
        let e = l.check(LimitClass::Downloads, &a).unwrap_err();
        assert!(
            e.retry_after > Duration::from_millis(500) && e.retry_after <= Duration::from_secs(1)
        );
        assert_eq!((e.bound, e.quota.burst), (Bound::Address, 3));
        assert!(
            l.check(LimitClass::Downloads, &b).is_ok(),
            "another address"
        );
        assert!(l.check(LimitClass::Master, &a).is_ok(), "another class");
    }

    #[test]
    fn the_ceiling_is_the_quota_times_address_ceiling() {
        let l = limiter(|c| {
            c.master = Quota {
                rate: 2.0,
                burst: 3,
            };
            c.address_ceiling = 2.5;
        });
        let passed = (0..20u64)
            .filter(|i| {
                let who = ClientIdentity::new("1.1.1.1".parse().unwrap(), Some(DeviceId(*i)));
                l.check(LimitClass::Master, &who).is_ok()
            })
            .count();
        assert_eq!(passed, 8, "burst 3 × 2.5, rounded up");
        let who = ClientIdentity::new("1.1.1.1".parse().unwrap(), Some(DeviceId(77)));
        let e = l.check(LimitClass::Master, &who).unwrap_err();
        assert_eq!(
            (e.bound, e.quota.burst, e.quota.rate),
            (Bound::Ceiling, 8, 5.0)
        );
    }

    #[test]
    fn the_device_is_the_key_header_and_ipv6_counts_by_its_prefix() {
        let mut h = HeaderMap::new();
        h.insert("x-device-id", HeaderValue::from_static("dev-123"));
        let ip: IpAddr = "100.64.0.1".parse().unwrap();
        let who = ClientIdentity::of(ip, &h, Some("x-device-id"));
        assert_eq!(who.device(), Some(DeviceId::of(b"dev-123")));
        assert_eq!(
            ClientIdentity::of(ip, &HeaderMap::new(), Some("x-device-id")).device(),
            None
        );
        h.insert(
            "x-device-id",
            HeaderValue::from_str(&"x".repeat(300)).unwrap(),
        );
        assert_eq!(
            ClientIdentity::of(ip, &h, Some("x-device-id")).device(),
            None
        );
        assert_eq!(at("2001:db8:1:2::5"), at("2001:db8:1:2::9"));
        assert_ne!(at("2001:db8:1:2::5"), at("2001:db8:1:3::5"));
        assert_eq!(at("::ffff:10.1.2.3"), at("10.1.2.3"));
        // Stable across processes and builds (a fleet-wide limiter names keys by it).
        assert_eq!(DeviceId::of(b"a"), DeviceId(0xaf63_dc4c_8601_ec8c));
    }

    #[test]
    fn memory_stays_bounded_with_a_million_addresses() {
        // A quick refill so that keys have refilled by the sweep.
        let l = limiter(|c| {
            c.downloads = Quota {
                rate: 1000.0,
                burst: 1,
            }
        });
        for i in 0..1_000_000u32 {
            let who = ClientIdentity::new(IpAddr::V4(i.into()), None);
            let _ = l.check(LimitClass::Downloads, &who);
        }
        assert!(l.keys() >= 900_000, "keys are tracked: {}", l.keys());
        std::thread::sleep(Duration::from_millis(20));
        l.sweep();
        assert_eq!(l.keys(), 0, "idle keys are swept");
    }
}
