//! The listeners: the `[tls]` section of the public one, and keeping the admin port apart.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, require_file, ConfigError};

/// TLS termination on the public listener.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => {
                Err(invalid("tls", "set both `cert` and `key`, or neither"))
            }
            (Some(cert), Some(key)) => {
                require_file("tls.cert", cert)?;
                require_file("tls.key", key)
            }
            (None, None) => Ok(()),
        }
    }
}

/// Cross-field check, `listen` against `admin_listen`: the admin API (metrics, purge) must never
/// be reachable on the public port. Port 0 (any free port, as in tests) cannot collide.
pub(super) fn check_admin_apart(
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<(), ConfigError> {
    if listen == admin_listen && listen.port() != 0 {
        return Err(invalid(
            "admin_listen",
            "must differ from `listen`: the admin API never shares the public port",
        ));
    }
    Ok(())
}
