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
    /// Time to receive a request head.
    pub header_read_timeout: Dur,
    /// Time to receive a request body.
    pub body_read_timeout: Dur,
    /// Keep-alive idle timeout.
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

/// Per-client rate limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Header keying the limiter when present (device/user token); IP otherwise.
    pub key_header: Option<String>,
    /// Peers allowed to set X-Forwarded-For / Forwarded, as CIDRs.
    pub trusted_proxies: Vec<String>,
    /// Voter downloads quota.
    pub downloads: Quota,
    /// Master-data quota.
    pub master: Quota,
    /// Sync writes quota.
    pub writes: Quota,
    /// Pass-through quota.
    pub passthrough: Quota,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            key_header: Some("X-Device-Id".into()),
            trusted_proxies: vec!["127.0.0.1/32".into(), "::1/128".into()],
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
