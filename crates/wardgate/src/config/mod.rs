//! The one typed configuration: TOML file, overridden by `WARDGATE_*` env and flags, validated once.
//!
//! Every field documents its unit. `Config::validate` runs right after the layers are merged and
//! before any port is bound, so a bad setting stops wardgate with a message naming the setting
//! and the fix, never half-way through serving.
//!
//! This file holds the top `Config`, its loading and its rendering. Each section (or group of
//! sections) lives in a file of its own with its `validate`; `values` holds the types settings
//! are written in (durations, sizes, secrets, quotas).

mod backend;
mod budget;
mod cache;
mod citizens;
mod cors;
mod limits;
mod listen;
mod ops;
mod replica;
mod runtime;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use budget::WardBudgetConfig;
pub use cache::{CacheConfig, MasterMaxAge};
pub use citizens::CitizensConfig;
pub use cors::{CorsConfig, CorsMode};
pub use limits::{ClientIpHeader, LimitsConfig, RateLimitConfig};
pub use listen::TlsConfig;
pub use ops::{DrainConfig, LogConfig, LogFormat, ReadyConfig};
pub use replica::{split_ward, ReplicaConfig, ReplicaConnFlags, ReplicaTls};
pub use runtime::{RuntimeConfig, SendfileMode};
pub use values::{ByteSize, Dur, LimitClass, Quota, RateLimitFlag, Secret};

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

/// Fails with the first of `durations` that is zero, naming its setting.
fn require_nonzero(durations: &[(&'static str, Dur)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, d)| d.0.is_zero()) {
        Some((setting, _)) => Err(invalid(setting, "must be more than 0s")),
        None => Ok(()),
    }
}

/// Fails unless `path` is a file, naming the setting that gave it.
fn require_file(setting: &'static str, path: &Path) -> Result<(), ConfigError> {
    if !path.is_file() {
        return Err(invalid(
            setting,
            format!("{} is not a readable file", path.display()),
        ));
    }
    Ok(())
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
    /// Redis URL (L2), `redis://` or `rediss://` (TLS), user and password in it for AUTH/ACL;
    /// for a Cluster, its seed nodes separated by commas. Unset = L1 only.
    pub redis_url: Option<Secret>,
    /// PEM bundle trusted for `rediss://` instead of the system roots (a managed Redis's CA).
    pub redis_ca: Option<PathBuf>,
    /// `redis_url` names a Redis Cluster: commands are routed by slot (a ward's keys share
    /// one: its hash tag), purges walk every master, pub/sub goes through any node.
    pub redis_cluster: bool,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// MySQL read replica URL; when set, snapshots are built from it.
    pub mysql_url: Option<Secret>,
    pub replica: ReplicaConfig,
    /// Bearer token for /admin/*; unset = closed.
    pub admin_token: Option<Secret>,
    pub citizens: CitizensConfig,
    pub cors: CorsConfig,
    pub cache: CacheConfig,
    pub limits: LimitsConfig,
    pub rate_limit: RateLimitConfig,
    pub ward_budget: WardBudgetConfig,
    pub tls: TlsConfig,
    pub drain: DrainConfig,
    pub ready: ReadyConfig,
    pub log: LogConfig,
    pub runtime: RuntimeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            upstream: "http://127.0.0.1:8585".into(),
            upstream_ca: None,
            redis_url: None,
            redis_ca: None,
            redis_cluster: false,
            redis_prefix: "wardgate".into(),
            mysql_url: None,
            replica: ReplicaConfig::default(),
            admin_token: None,
            citizens: CitizensConfig::default(),
            cors: CorsConfig::default(),
            cache: CacheConfig::default(),
            limits: LimitsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            ward_budget: WardBudgetConfig::default(),
            tls: TlsConfig::default(),
            drain: DrainConfig::default(),
            ready: ReadyConfig::default(),
            log: LogConfig::default(),
            runtime: RuntimeConfig::default(),
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

    /// Checks every setting; called once after merging file, env and flags. Each section checks
    /// its own fields; the checks are in the order their errors have always been reported in.
    pub fn validate(&self) -> Result<(), ConfigError> {
        backend::validate_upstream(&self.upstream)?;
        // Cross-field: the admin listener never shares the public port.
        listen::check_admin_apart(self.listen, self.admin_listen)?;
        backend::validate_redis(
            self.redis_url.as_ref(),
            self.redis_ca.as_deref(),
            self.redis_cluster,
        )?;
        backend::validate_mysql_url(self.mysql_url.as_ref())?;
        self.replica.validate(self.mysql_url.as_ref())?;
        backend::validate_redis_prefix(&self.redis_prefix)?;
        ops::validate_admin_token(self.admin_token.as_ref())?;
        self.citizens.validate()?;
        self.cors.validate()?;
        // Includes the cross-field delta-overlap check (all its terms are `[cache]` settings).
        self.cache.validate()?;
        self.limits.validate()?;
        self.rate_limit.validate()?;
        self.ward_budget.validate()?;
        self.tls.validate()?;
        listen::check_tls_apart(self.tls.listen, self.listen, self.admin_listen)?;
        backend::validate_upstream_ca(self.upstream_ca.as_deref())?;
        self.drain.validate()?;
        self.ready.validate()?;
        self.log.validate()?;
        self.runtime.validate()
    }

    /// The effective configuration as TOML, secrets masked (for `check-config`).
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Settings whose change needs a restart, named for the reload log line.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.limits, &new.limits);
        [
            ("listen", self.listen != new.listen),
            ("admin_listen", self.admin_listen != new.admin_listen),
            ("tls.listen", self.tls.listen != new.tls.listen),
            ("upstream", self.upstream != new.upstream),
            ("upstream_ca", self.upstream_ca != new.upstream_ca),
            ("redis_url", self.redis_url != new.redis_url),
            ("redis_ca", self.redis_ca != new.redis_ca),
            ("redis_cluster", self.redis_cluster != new.redis_cluster),
            ("redis_prefix", self.redis_prefix != new.redis_prefix),
            ("mysql_url", self.mysql_url != new.mysql_url),
            ("replica.tls", self.replica.tls != new.replica.tls),
            (
                "replica.ca_file",
                self.replica.ca_file != new.replica.ca_file,
            ),
            (
                "replica.query_timeout",
                self.replica.query_timeout != new.replica.query_timeout,
            ),
            (
                "limits.max_header_bytes",
                a.max_header_bytes != b.max_header_bytes,
            ),
            (
                "limits.max_connections",
                a.max_connections != b.max_connections,
            ),
            (
                "limits.header_read_timeout",
                a.header_read_timeout != b.header_read_timeout,
            ),
            ("limits.idle_timeout", a.idle_timeout != b.idle_timeout),
            (
                "limits.upstream_connect_timeout",
                a.upstream_connect_timeout != b.upstream_connect_timeout,
            ),
            ("log.format", self.log.format != new.log.format),
            ("runtime", self.runtime != new.runtime),
        ]
        .into_iter()
        .filter_map(|(setting, changed)| changed.then_some(setting))
        .collect()
    }
}

/// The configuration in force; swapped atomically on reload.
pub type Live = std::sync::Arc<arc_swap::ArcSwap<Config>>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

        // A brace would make the prefix every key's hash tag: one Redis Cluster slot for all.
        let c = Config {
            redis_prefix: "{wardgate}".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("braces"));

        let mut c = Config::default();
        c.cache.derived_share_percent = 80;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cache.derived_share_percent"), "{e}");
    }

    #[test]
    fn tls_settings_are_checked() {
        let mut c = Config::default();
        c.tls.reload_every = Dur(Duration::from_millis(500));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls.reload_every"), "{e}");
        c.tls.reload_every = Dur(Duration::ZERO);
        c.validate().expect("0s turns the file watch off");

        let mut c = Config::default();
        c.tls.listen = Some(SocketAddr::from(([0, 0, 0, 0], 8443)));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls.listen") && e.contains("tls.cert"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("pem");
        std::fs::write(&pem, "checked for existence only\n").unwrap();
        let mut c = Config::default();
        (c.tls.cert, c.tls.key) = (Some(pem.clone()), Some(pem));
        c.tls.listen = Some(c.listen);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tls.listen") && e.contains("differ"), "{e}");
        c.tls.listen = Some(SocketAddr::from(([0, 0, 0, 0], 8443)));
        c.validate().expect("a TLS port of its own");
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

    #[test]
    fn restart_only_changes_name_the_settings_in_order() {
        let old = Config::default();
        assert!(old.restart_only_changes(&Config::default()).is_empty());
        let mut new = Config::default();
        new.log.format = LogFormat::Json;
        new.listen = SocketAddr::from(([0, 0, 0, 0], 8081));
        new.limits.idle_timeout = Dur(Duration::from_secs(1));
        new.limits.body_read_timeout = Dur(Duration::from_secs(1)); // reloadable
        assert_eq!(
            old.restart_only_changes(&new),
            ["listen", "limits.idle_timeout", "log.format"]
        );
    }
}
