//! The listeners: the `[tls]` section, and keeping the admin port apart from the public ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, require_file, ConfigError, Dur};

/// TLS termination: on a listener of its own (`listen`), or on the public listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert: Option<PathBuf>,
    /// PEM private key of the leaf certificate.
    pub key: Option<PathBuf>,
    /// Address of a listener of its own that speaks HTTPS, while the public `listen` goes on
    /// speaking plain HTTP (apps with an `http://` base URL). Unset = with `cert` and `key`
    /// the public `listen` itself speaks HTTPS only. Needs `cert` and `key`. [restart]
    pub listen: Option<SocketAddr>,
    /// How often the `cert` and `key` files are read and compared with the pair in force, as
    /// a duration (`30s`); a changed pair that parses is swapped in for new handshakes, as on
    /// SIGHUP. For certificates renewed in place without a signal (a Kubernetes Secret
    /// volume, certbot). `0s` = off (SIGHUP only); else 1s to 1d.
    pub reload_every: Dur,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            listen: None,
            reload_every: Dur(Duration::from_secs(30)),
        }
    }
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let every = self.reload_every.0;
        if !every.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&every)
        {
            return Err(invalid(
                "tls.reload_every",
                "must be 0s (off) or between 1s and 1d",
            ));
        }
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => {
                Err(invalid("tls", "set both `cert` and `key`, or neither"))
            }
            (Some(cert), Some(key)) => {
                require_file("tls.cert", cert)?;
                require_file("tls.key", key)
            }
            (None, None) if self.listen.is_some() => Err(invalid(
                "tls.listen",
                "needs `tls.cert` and `tls.key` (the certificate it serves)",
            )),
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

/// Cross-field check, `tls.listen` against `listen` and `admin_listen`: three listeners, three
/// ports (port 0 cannot collide).
pub(super) fn check_tls_apart(
    tls_listen: Option<SocketAddr>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<(), ConfigError> {
    match tls_listen {
        Some(t) if t.port() != 0 && (t == listen || t == admin_listen) => Err(invalid(
            "tls.listen",
            "must differ from `listen` and `admin_listen`",
        )),
        _ => Ok(()),
    }
}
