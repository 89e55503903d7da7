//! The `[limits]` and `[rate_limit]` sections: sizes, concurrency and timeouts at the edge, and
//! per-client quotas.

use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{invalid, require_nonzero, ByteSize, ConfigError, Dur, LimitClass, Quota};

/// Sizes, concurrency and timeouts at the edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest sync POST body, bytes.
    pub max_body_bytes: ByteSize,
    /// Largest request head, bytes.
    pub max_header_bytes: ByteSize,
    /// Concurrent client connections.
    pub max_connections: u32,
    /// Concurrent upstream requests.
    pub upstream_max_inflight: u32,
    /// Requests that may queue for an upstream slot.
    pub max_queued_upstream: u32,
    /// Time to receive a request head, counted from its first bytes (slowloris guard); the
    /// wait for a keep-alive connection's next request is `idle_timeout`'s.
    pub header_read_timeout: Dur,
    /// Time to receive a request body.
    pub body_read_timeout: Dur,
    /// Time a connection may move no bytes (idle keep-alive, stalled client) before it is
    /// closed.
    pub idle_timeout: Dur,
    /// Upstream connect timeout.
    pub upstream_connect_timeout: Dur,
    /// Upstream response-head timeout.
    pub upstream_timeout: Dur,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: ByteSize(2 << 20),
            max_header_bytes: ByteSize(16 << 10),
            max_connections: 50_000,
            upstream_max_inflight: 256,
            max_queued_upstream: 1024,
            header_read_timeout: Dur(Duration::from_secs(10)),
            body_read_timeout: Dur(Duration::from_secs(30)),
            idle_timeout: Dur(Duration::from_secs(60)),
            upstream_connect_timeout: Dur(Duration::from_secs(2)),
            upstream_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes.0 == 0 {
            return Err(invalid("limits.max_body_bytes", "must be more than 0"));
        }
        if self.max_header_bytes.0 < 1024 || self.max_header_bytes.0 > (1 << 20) {
            return Err(invalid("limits.max_header_bytes", "must be 1KiB..=1MiB"));
        }
        if self.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be more than 0"));
        }
        if self.upstream_max_inflight == 0 {
            return Err(invalid(
                "limits.upstream_max_inflight",
                "must be more than 0",
            ));
        }
        require_nonzero(&[
            ("limits.header_read_timeout", self.header_read_timeout),
            ("limits.body_read_timeout", self.body_read_timeout),
            ("limits.idle_timeout", self.idle_timeout),
            (
                "limits.upstream_connect_timeout",
                self.upstream_connect_timeout,
            ),
            ("limits.upstream_timeout", self.upstream_timeout),
        ])
    }
}

/// Per-client rate limits: per device, per address and a ceiling per address (`limit`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Header naming the client's device (a device or user token), counted within its
    /// address's ceiling; requests without it are counted by address alone.
    pub key_header: Option<String>,
    /// Peers allowed to tell the client's address in `client_ip_header` (the load balancers),
    /// as CIDRs or addresses.
    pub trusted_proxies: Vec<String>,
    /// The one header the trusted load balancer sets with the client's address:
    /// `x-forwarded-for` (the right-most address not in `trusted_proxies`), `forwarded`
    /// (RFC 7239, likewise) or `x-real-ip` (its last value). No other header is ever believed.
    pub client_ip_header: ClientIpHeader,
    /// Every address's ceiling, as a multiple of each class's quota (rate and burst alike),
    /// over all its requests whatever device ids they carry. ≥ 1.
    ///
    /// Default 4: the class quotas were sized for a whole carrier-NAT address of about 1,000
    /// active volunteers (≈ 14 downloads/s on election day) when the app sent no device id, so
    /// one quota already carries a NAT address's real traffic; 4× leaves room for the largest
    /// share of volunteers one CGNAT address plausibly carries in a sync storm (a party office
    /// on one carrier and one cell site, several thousand phones syncing at once), while one
    /// script cycling device ids gets no more than 4 quotas from its address.
    pub address_ceiling: f64,
    /// Distinct device ids kept per address and class; a new device id beyond them is counted
    /// against its address's ceiling only (never refused for being new). Default 1,024: about
    /// as many volunteers as a NAT address carries (above), and a bound on what one address can
    /// make the limiter hold.
    pub max_devices_per_address: u32,
    /// Keys (addresses and devices) one class's limiter holds at most; past it the idlest
    /// are evicted, counted in `wardgate_limiter_evictions_total`. Default 2,000,000: 43-69 MB
    /// per million keys (measured in `tests/limits.rs`), so at most ~140 MB a class.
    pub max_keys: u32,
    /// With Redis configured, hold every limit across the fleet (`limit::fleet`): the tokens
    /// each instance spends are charged, in batches, to one schedule per client in Redis, so N
    /// instances give a client its rate, not N times it. Each instance falls back to its own
    /// limits while Redis is away.
    pub shared: bool,
    /// The lease: the share of a quota's rate (per second) or of its burst, whichever is more,
    /// of tokens one instance may spend before Redis has counted them (at least one token);
    /// past it, a request waits for the next batch to be answered (a Redis round trip). Across
    /// `n` instances a client gets at most its rate and burst plus `2 × n` leases (spent after
    /// Redis last refused it, or not yet reported), a fixed excess, not a rate: 0.05 at the
    /// default downloads quota (50/s, burst 500) is a lease of 25 tokens.
    pub lease_share: f64,
    /// Voter downloads quota, per device (or per address without a device header).
    pub downloads: Quota,
    /// Master-data quota, likewise.
    pub master: Quota,
    /// Sync writes quota, likewise.
    pub writes: Quota,
    /// Pass-through quota, likewise.
    pub passthrough: Quota,
}

/// The header a trusted load balancer puts the client's address in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, …` (AWS ALB, GCP, nginx `$proxy_add_x_forwarded_for`,
    /// ingress-nginx).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239; Envoy, some CDNs).
    Forwarded,
    /// `X-Real-IP: client`, set (not appended) by the proxy (nginx `$remote_addr`).
    XRealIp,
}

impl ClientIpHeader {
    /// The header's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::XRealIp => "x-real-ip",
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            key_header: Some("X-Device-Id".into()),
            trusted_proxies: vec!["127.0.0.1/32".into(), "::1/128".into()],
            client_ip_header: ClientIpHeader::XForwardedFor,
            address_ceiling: 4.0,
            max_devices_per_address: 1024,
            max_keys: 2_000_000,
            shared: true,
            lease_share: 0.05,
            downloads: Quota {
                rate: 50.0,
                burst: 500,
            },
            master: Quota {
                rate: 100.0,
                burst: 1000,
            },
            writes: Quota {
                rate: 50.0,
                burst: 500,
            },
            passthrough: Quota {
                rate: 100.0,
                burst: 1000,
            },
        }
    }
}

impl RateLimitConfig {
    pub fn quota(&self, class: LimitClass) -> Quota {
        match class {
            LimitClass::Downloads => self.downloads,
            LimitClass::Master => self.master,
            LimitClass::Writes => self.writes,
            LimitClass::Passthrough => self.passthrough,
        }
    }

    pub fn set_quota(&mut self, class: LimitClass, quota: Quota) {
        match class {
            LimitClass::Downloads => self.downloads = quota,
            LimitClass::Master => self.master = quota,
            LimitClass::Writes => self.writes = quota,
            LimitClass::Passthrough => self.passthrough = quota,
        }
    }

    /// The parsed trusted-proxy networks (valid after `Config::validate`).
    pub fn trusted_nets(&self) -> Vec<IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|c| parse_cidr(c).ok())
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for class in LimitClass::ALL {
            let q = self.quota(class);
            if !(q.rate.is_finite() && q.rate > 0.0) || q.burst == 0 {
                return Err(invalid(
                    "rate_limit",
                    format!(
                        "class `{}`: rate must be > 0 and burst >= 1",
                        class.as_str()
                    ),
                ));
            }
        }
        if !(self.address_ceiling.is_finite() && (1.0..=10_000.0).contains(&self.address_ceiling)) {
            return Err(invalid(
                "rate_limit.address_ceiling",
                "must be 1..=10000 (times the class quota)",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_devices_per_address) {
            return Err(invalid(
                "rate_limit.max_devices_per_address",
                "must be 1..=1000000",
            ));
        }
        if !(self.lease_share.is_finite() && self.lease_share > 0.0 && self.lease_share <= 0.5) {
            return Err(invalid(
                "rate_limit.lease_share",
                "must be more than 0 and at most 0.5 (of a quota's rate per second)",
            ));
        }
        if !(1024..=100_000_000).contains(&self.max_keys) {
            return Err(invalid("rate_limit.max_keys", "must be 1024..=100000000"));
        }
        for cidr in &self.trusted_proxies {
            parse_cidr(cidr).map_err(|m| invalid("rate_limit.trusted_proxies", m))?;
        }
        if let Some(h) = &self.key_header {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                invalid(
                    "rate_limit.key_header",
                    format!("`{h}` is not a header name"),
                )
            })?;
        }
        Ok(())
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR like 10.0.0.0/8 or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn the_client_ip_header_is_named_as_the_header_is() {
        let c = Config::from_toml("[rate_limit]\nclient_ip_header = \"x-real-ip\"\n").unwrap();
        assert_eq!(c.rate_limit.client_ip_header, ClientIpHeader::XRealIp);
        assert!(Config::from_toml("[rate_limit]\nclient_ip_header = \"via\"\n").is_err());
        assert_eq!(
            RateLimitConfig::default().client_ip_header.name(),
            "x-forwarded-for"
        );
    }

    #[test]
    fn limits_of_the_limiter_are_validated() {
        type Spoil = fn(&mut RateLimitConfig);
        let bad: [(&str, Spoil); 4] = [
            ("rate_limit.address_ceiling", |r| r.address_ceiling = 0.5),
            ("rate_limit.address_ceiling", |r| {
                r.address_ceiling = f64::NAN
            }),
            ("rate_limit.max_devices_per_address", |r| {
                r.max_devices_per_address = 0
            }),
            ("rate_limit.max_keys", |r| r.max_keys = 100),
        ];
        for (name, f) in bad {
            let mut r = RateLimitConfig::default();
            f(&mut r);
            let e = r.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
        assert!(RateLimitConfig::default().validate().is_ok());
    }
}
