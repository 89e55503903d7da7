//! The one typed configuration: TOML file, overridden by `WARDGATE_*` env and flags, validated once.
//!
//! Every field documents its unit. `Config::validate` runs right after the layers are merged and
//! before any port is bound, so a bad setting stops wardgate with a message naming the setting
//! and the fix, never half-way through serving.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A setting that was invalid, naming the setting and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

/// A duration written like `500ms`, `30s`, `5m`, `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("`{s}` is not a duration like 30s, 5m or 1d ({e})"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size written like `512KiB`, `2MiB`, `4GiB`, or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size like 512KiB, 2MiB or 4GiB"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" | "k" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}` (use KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mul)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A value that must never be printed: URLs with passwords, tokens.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    /// URLs keep scheme and host so an operator can tell which server is meant; the rest is masked.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let masked = match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
                let host = host.split('/').next().unwrap_or_default();
                format!("{scheme}://***@{host}/***")
            }
            None => "***".to_string(),
        };
        s.serialize_str(&masked)
    }
}

/// Route classes that have their own rate quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitClass {
    Downloads,
    Master,
    Writes,
    Passthrough,
}

impl LimitClass {
    pub const ALL: [LimitClass; 4] = [
        LimitClass::Downloads,
        LimitClass::Master,
        LimitClass::Writes,
        LimitClass::Passthrough,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Downloads => "downloads",
            LimitClass::Master => "master",
            LimitClass::Writes => "writes",
            LimitClass::Passthrough => "passthrough",
        }
    }
}

impl FromStr for LimitClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LimitClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown rate-limit class `{s}` (use downloads, master, writes or passthrough)"
                )
            })
    }
}

/// A per-key quota: sustained rate and burst.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Sustained requests per second per key.
    pub rate: f64,
    /// Requests a key may make at once above the sustained rate.
    pub burst: u32,
}

/// `--rate-limit CLASS=RATE/s[:BURST]`, e.g. `downloads=2/s:10`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitFlag {
    pub class: LimitClass,
    pub quota: Quota,
}

impl FromStr for RateLimitFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}` is not CLASS=RATE/s[:BURST], e.g. downloads=2/s:10");
        let (class, spec) = s.split_once('=').ok_or_else(usage)?;
        let class: LimitClass = class.trim().parse()?;
        let (rate, burst) = match spec.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (spec, None),
        };
        let rate: f64 = rate
            .trim()
            .strip_suffix("/s")
            .ok_or_else(usage)?
            .parse()
            .map_err(|_| usage())?;
        let burst: u32 = match burst {
            Some(b) => b.trim().parse().map_err(|_| usage())?,
            None => (rate.ceil() as u32).max(1),
        };
        Ok(RateLimitFlag {
            class,
            quota: Quota { rate, burst },
        })
    }
}

/// Citizens endpoint policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CitizensConfig {
    /// Largest page `size` (rows); larger asks are capped to it.
    pub max_page_size: u32,
    /// Refuse unpaginated reads with 400.
    pub require_pagination: bool,
    /// Accept `wardNo=-1` (whole assembly), paginated only.
    pub allow_assembly_wide: bool,
}

impl Default for CitizensConfig {
    fn default() -> Self {
        CitizensConfig {
            max_page_size: 1000,
            require_pagination: false,
            allow_assembly_wide: false,
        }
    }
}

/// Max age of each master-data route class.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MasterMaxAge {
    /// `/open/volunteer/states`.
    pub states: Dur,
    /// `/open/volunteer/assemblyConstituencys/{stateId}`.
    pub assembly_constituencies: Dur,
    /// `/open/volunteer/wardsAndBooths/{assemblyConstituencyId}`.
    pub wards_and_booths: Dur,
    /// `/open/volunteer/parties`.
    pub parties: Dur,
    /// `/open/volunteer/applicationSettings`.
    pub application_settings: Dur,
    /// `/api/dashboardStats`.
    pub dashboard_stats: Dur,
}

impl Default for MasterMaxAge {
    fn default() -> Self {
        let day = Dur(Duration::from_secs(86_400));
        MasterMaxAge {
            states: day,
            assembly_constituencies: day,
            wards_and_booths: day,
            parties: day,
            application_settings: Dur(Duration::from_secs(3_600)),
            dashboard_stats: Dur(Duration::from_secs(120)),
        }
    }
}

/// Cache sizes and freshness.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bound of the in-process cache, bytes.
    pub l1_max_bytes: ByteSize,
    /// Age after which a ward snapshot is renewed in the background.
    pub snapshot_max_age: Dur,
    /// How long past max age an old copy may be served while the upstream fails.
    pub max_stale: Dur,
    /// Clock skew allowed between phones and wardgate.
    pub clock_skew: Dur,
    /// Delta overlap; unset = snapshot_max_age + max_stale + clock_skew.
    pub delta_overlap: Option<Dur>,
    /// How long a request waits for a running build before 503.
    pub miss_wait: Dur,
    /// Max age per master-data route.
    pub master_max_age: MasterMaxAge,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_max_bytes: ByteSize(2 << 30),
            snapshot_max_age: Dur(Duration::from_secs(300)),
            max_stale: Dur(Duration::from_secs(3_600)),
            clock_skew: Dur(Duration::from_secs(120)),
            delta_overlap: None,
            miss_wait: Dur(Duration::from_secs(30)),
            master_max_age: MasterMaxAge::default(),
        }
    }
}

impl CacheConfig {
    /// The oldest copy wardgate may serve: max age, plus max stale while the upstream fails.
    pub fn max_served_age(&self) -> Duration {
        self.snapshot_max_age.0 + self.max_stale.0
    }

    /// The overlap applied to delta reads: never less than the oldest copy that may have been
    /// served plus the clock skew (see "Deltas without gaps" in ARCHITECTURE.md).
    pub fn effective_delta_overlap(&self) -> Duration {
        self.delta_overlap
            .map(|d| d.0)
            .unwrap_or(self.max_served_age() + self.clock_skew.0)
    }
}

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
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR like 10.0.0.0/8 or an IP address"))
}

/// TLS termination on the public listener.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// Graceful drain on SIGTERM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Serving goes on this long after /readyz turned 503.
    pub grace: Dur,
    /// In-flight requests then get this long to finish.
    pub shutdown_timeout: Dur,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            grace: Dur(Duration::from_secs(5)),
            shutdown_timeout: Dur(Duration::from_secs(25)),
        }
    }
}

/// Readiness gating on a warm cache.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadyConfig {
    /// Percent (0-100) of `warm_targets` wards that must be cached before ready; 0 = off.
    pub min_warm_percent: u8,
    /// `state,assembly[,ward]` lines.
    pub warm_targets: Option<PathBuf>,
}

/// Log output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// Share (0.0-1.0) of requests that get an access-log line.
    pub access_log_sample: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            access_log_sample: 1.0,
        }
    }
}

/// The whole configuration. See `config/wardgate.toml` for the annotated reference.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener address.
    pub listen: SocketAddr,
    /// Admin listener address (health, readiness, metrics, admin API).
    pub admin_listen: SocketAddr,
    /// Base URL of the legacy backend, `http://` or `https://`.
    pub upstream: String,
    /// PEM bundle trusted for an https upstream instead of the system roots.
    pub upstream_ca: Option<PathBuf>,
    /// Redis URL (L2); unset = L1 only.
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// MySQL read replica URL; when set, snapshots are built from it.
    pub mysql_url: Option<Secret>,
    /// Bearer token for /admin/*; unset = closed.
    pub admin_token: Option<Secret>,
    pub citizens: CitizensConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub rate_limit: RateLimitConfig,
    pub tls: TlsConfig,
    pub drain: DrainConfig,
    pub ready: ReadyConfig,
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            upstream: "http://127.0.0.1:8585".into(),
            upstream_ca: None,
            redis_url: None,
            redis_prefix: "wardgate".into(),
            mysql_url: None,
            admin_token: None,
            citizens: CitizensConfig::default(),
            cache: CacheConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            tls: TlsConfig::default(),
            drain: DrainConfig::default(),
            ready: ReadyConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently fall back to a default).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every setting; called once after merging file, env and flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let up: http::Uri = self
            .upstream
            .parse()
            .map_err(|e| invalid("upstream", format!("`{}` is not a URL: {e}", self.upstream)))?;
        match up.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(invalid(
                    "upstream",
                    "must start with http:// or https://, e.g. http://backend:8585",
                ))
            }
        }
        if up.host().is_none() {
            return Err(invalid("upstream", "names no host"));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid(
                "admin_listen",
                "must differ from `listen`: the admin API never shares the public port",
            ));
        }
        if let Some(url) = &self.redis_url {
            redis::Client::open(url.expose())
                .map_err(|e| invalid("redis_url", format!("not a Redis URL: {e}")))?;
        }
        if let Some(url) = &self.mysql_url {
            mysql_async::Opts::from_url(url.expose())
                .map_err(|e| invalid("mysql_url", format!("not a MySQL URL: {e}")))?;
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return Err(invalid("redis_prefix", "must be non-empty, without spaces"));
        }
        if let Some(tok) = &self.admin_token {
            if tok.expose().len() < 16 {
                return Err(invalid(
                    "admin_token",
                    "must be at least 16 characters (or unset to keep admin routes closed)",
                ));
            }
        }
        let c = &self.citizens;
        if !(1..=100_000).contains(&c.max_page_size) {
            return Err(invalid("citizens.max_page_size", "must be 1..=100000"));
        }
        let cache = &self.cache;
        if cache.l1_max_bytes.0 < (1 << 20) {
            return Err(invalid("cache.l1_max_bytes", "must be at least 1MiB"));
        }
        if cache.snapshot_max_age.0.is_zero() {
            return Err(invalid("cache.snapshot_max_age", "must be more than 0s"));
        }
        if cache.miss_wait.0.is_zero() {
            return Err(invalid("cache.miss_wait", "must be more than 0s"));
        }
        if let Some(o) = cache.delta_overlap {
            let min = cache.max_served_age() + cache.clock_skew.0;
            if o.0 < min {
                return Err(invalid(
                    "cache.delta_overlap",
                    format!(
                        "{o} is less than snapshot_max_age + max_stale + clock_skew ({}): deltas could miss rows; raise it or leave it unset",
                        Dur(min)
                    ),
                ));
            }
        }
        let l = &self.limits;
        if l.max_body_bytes.0 == 0 {
            return Err(invalid("limits.max_body_bytes", "must be more than 0"));
        }
        if l.max_header_bytes.0 < 1024 || l.max_header_bytes.0 > (1 << 20) {
            return Err(invalid("limits.max_header_bytes", "must be 1KiB..=1MiB"));
        }
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be more than 0"));
        }
        if l.upstream_max_inflight == 0 {
            return Err(invalid(
                "limits.upstream_max_inflight",
                "must be more than 0",
            ));
        }
        for (name, d) in [
            ("limits.header_read_timeout", l.header_read_timeout),
            ("limits.body_read_timeout", l.body_read_timeout),
            ("limits.idle_timeout", l.idle_timeout),
            (
                "limits.upstream_connect_timeout",
                l.upstream_connect_timeout,
            ),
            ("limits.upstream_timeout", l.upstream_timeout),
        ] {
            if d.0.is_zero() {
                return Err(invalid(name, "must be more than 0s"));
            }
        }
        let rl = &self.rate_limit;
        for class in LimitClass::ALL {
            let q = rl.quota(class);
            if !(q.rate.is_finite() && q.rate > 0.0) || q.burst == 0 {
                return Err(ConfigError::Invalid {
                    setting: "rate_limit",
                    message: format!(
                        "class `{}`: rate must be > 0 and burst >= 1",
                        class.as_str()
                    ),
                });
            }
        }
        for cidr in &rl.trusted_proxies {
            parse_cidr(cidr).map_err(|m| invalid("rate_limit.trusted_proxies", m))?;
        }
        if let Some(h) = &rl.key_header {
            http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                invalid(
                    "rate_limit.key_header",
                    format!("`{h}` is not a header name"),
                )
            })?;
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid("tls", "set both `cert` and `key`, or neither"))
            }
            (Some(cert), Some(key)) => {
                for (setting, p) in [("tls.cert", cert), ("tls.key", key)] {
                    if !p.is_file() {
                        return Err(invalid(
                            setting,
                            format!("{} is not a readable file", p.display()),
                        ));
                    }
                }
            }
            (None, None) => {}
        }
        if let Some(ca) = &self.upstream_ca {
            if !ca.is_file() {
                return Err(invalid(
                    "upstream_ca",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        if self.ready.min_warm_percent > 100 {
            return Err(invalid("ready.min_warm_percent", "must be 0..=100"));
        }
        if self.ready.min_warm_percent > 0 && self.ready.warm_targets.is_none() {
            return Err(invalid(
                "ready.warm_targets",
                "is required when ready.min_warm_percent > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.log.access_log_sample) {
            return Err(invalid("log.access_log_sample", "must be 0.0..=1.0"));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked (for `check-config`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Settings whose change needs a restart, named for the reload log line.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.listen != new.listen {
            out.push("listen");
        }
        if self.admin_listen != new.admin_listen {
            out.push("admin_listen");
        }
        if self.upstream != new.upstream {
            out.push("upstream");
        }
        if self.upstream_ca != new.upstream_ca {
            out.push("upstream_ca");
        }
        if self.redis_url != new.redis_url {
            out.push("redis_url");
        }
        if self.redis_prefix != new.redis_prefix {
            out.push("redis_prefix");
        }
        if self.mysql_url != new.mysql_url {
            out.push("mysql_url");
        }
        let (a, b) = (&self.limits, &new.limits);
        if a.max_header_bytes != b.max_header_bytes {
            out.push("limits.max_header_bytes");
        }
        if a.max_connections != b.max_connections {
            out.push("limits.max_connections");
        }
        if a.header_read_timeout != b.header_read_timeout {
            out.push("limits.header_read_timeout");
        }
        if a.idle_timeout != b.idle_timeout {
            out.push("limits.idle_timeout");
        }
        if a.upstream_connect_timeout != b.upstream_connect_timeout {
            out.push("limits.upstream_connect_timeout");
        }
        if self.log.format != new.log.format {
            out.push("log.format");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_file_is_valid_and_equals_defaults() {
        let text = include_str!("../../../../config/wardgate.toml");
        let file = Config::from_toml(text).expect("reference config parses");
        file.validate().expect("reference config is valid");
        // The reference documents the defaults: they must not drift apart.
        assert_eq!(file.to_masked_toml(), Config::default().to_masked_toml());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[cache]\nsnapshot_maxage = \"5m\"\n").unwrap_err();
        assert!(err.contains("snapshot_maxage"), "{err}");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!("30s".parse::<Dur>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
        assert_eq!("1d".parse::<Dur>().unwrap().0, Duration::from_secs(86_400));
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert_eq!("2MiB".parse::<ByteSize>().unwrap().0, 2 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("2 lakh".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
    }

    #[test]
    fn rate_limit_flag_parses() {
        let f: RateLimitFlag = "downloads=2/s:10".parse().unwrap();
        assert_eq!(f.class, LimitClass::Downloads);
        assert_eq!(
            f.quota,
            Quota {
                rate: 2.0,
                burst: 10
            }
        );
        let f: RateLimitFlag = "writes=0.5/s".parse().unwrap();
        assert_eq!(f.quota.burst, 1);
        assert!("uploads=2/s".parse::<RateLimitFlag>().is_err());
        assert!("downloads=2".parse::<RateLimitFlag>().is_err());
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = Config::default();
        c.cache.delta_overlap = Some(Dur(Duration::from_secs(60)));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cache.delta_overlap"), "{e}");

        let c = Config {
            upstream: "ftp://backend".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("upstream"));

        let mut c = Config::default();
        c.rate_limit.trusted_proxies = vec!["10.0.0.0/33".into()];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("trusted_proxies"));
    }

    #[test]
    fn secrets_are_masked() {
        let c = Config {
            mysql_url: Some(Secret("mysql://ro:hunter2@replica:3306/sampark".into())),
            admin_token: Some(Secret("0123456789abcdef-token".into())),
            ..Config::default()
        };
        let out = c.to_masked_toml();
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("0123456789abcdef"), "{out}");
        assert!(out.contains("replica:3306"), "{out}");
    }
}
