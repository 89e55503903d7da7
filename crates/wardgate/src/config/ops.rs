//! The operations sections: `[drain]`, `[ready]`, `[log]`, and the admin API's token.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Dur, Secret};

/// Graceful drain on SIGTERM.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// Serving goes on this long after SIGTERM turned /readyz to 503, a duration: the time a
    /// load balancer that health-checks /readyz takes to stop sending (VMs). On Kubernetes
    /// the pod's preStop sleep covers the load balancer, before SIGTERM, while still ready.
    pub grace: Dur,
    /// In-flight requests then get this long to finish, a duration; connections still open
    /// after it are closed.
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

impl DrainConfig {
    /// Nothing to check: any duration, 0s included, is a valid grace and shutdown timeout.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
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

impl ReadyConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_warm_percent > 100 {
            return Err(invalid("ready.min_warm_percent", "must be 0..=100"));
        }
        if self.min_warm_percent > 0 && self.warm_targets.is_none() {
            return Err(invalid(
                "ready.warm_targets",
                "is required when ready.min_warm_percent > 0",
            ));
        }
        Ok(())
    }
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
    /// Log lines held for the writer thread, at most (about 300 bytes each). Past this, while
    /// the log pipe does not drain, lines are dropped and counted
    /// (`wardgate_log_lines_dropped`) instead of stalling requests.
    pub buffer_lines: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            access_log_sample: 1.0,
            buffer_lines: 65_536,
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.access_log_sample) {
            return Err(invalid("log.access_log_sample", "must be 0.0..=1.0"));
        }
        if !(64..=4_000_000).contains(&self.buffer_lines) {
            return Err(invalid("log.buffer_lines", "must be 64..=4000000"));
        }
        Ok(())
    }
}

/// `admin_token`: long enough not to be guessed, when set (unset keeps `/admin/*` closed).
pub(super) fn validate_admin_token(token: Option<&Secret>) -> Result<(), ConfigError> {
    if let Some(tok) = token {
        if tok.expose().len() < 16 {
            return Err(invalid(
                "admin_token",
                "must be at least 16 characters (or unset to keep admin routes closed)",
            ));
        }
    }
    Ok(())
}
