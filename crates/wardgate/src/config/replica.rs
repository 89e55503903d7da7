//! The `[replica]` section: how rows built from the read replica are written, and how they are checked against the backend's.
//! Also how the replica is reached: TLS, the CA trusted for it, the bound on each query.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Dur, Secret};
use crate::legacy::{BoolStyle, DateStyle, DecimalStyle, RowFormat};

/// Whether connections to the replica are encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaTls {
    /// Plain TCP: a replica on a private network that accepts it.
    #[default]
    Off,
    /// TLS or no connection: the server's certificate is verified against `ca_file` (else
    /// the built-in Mozilla roots) and its name against the URL's host. What RDS and Cloud
    /// SQL need with `require_secure_transport`.
    Required,
}

/// Replica-built rows: their value forms, and the shape probe that keeps them honest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `DATETIME`s as the backend writes them: `epoch_ms`, `iso` (`…+0000`, Spring Boot 2.0's
    /// default with Jackson before 2.11) or `iso_colon` (`…+00:00`, Jackson 2.11+).
    pub dates: DateStyle,
    /// `TINYINT(1)` (`voted`): `true_false` (Connector/J's default) or `numbers` (1/0).
    pub booleans: BoolStyle,
    /// `DECIMAL`s: `jackson` (`BigDecimal.toString()`, `0E-7`) or `plain` (`0.0000000`).
    pub decimals: DecimalStyle,
    /// The ward built both ways to compare shapes, `state/assembly/ward`; unset = the first
    /// ward asked for after start (and after each `probe_every`).
    pub probe_ward: Option<String>,
    /// How often the comparison runs again (one ward read from the backend each time).
    pub probe_every: Dur,
    /// How often each held ward's fingerprint is compared with the replica's (one grouped
    /// query per assembly), so that a ward is renewed when its rows change and stays valid
    /// until they do; `0s` turns the watch off (max age alone then).
    pub watch_every: Dur,
    /// The replica lag the narrow delta overlap allows for (`cache::overlap`): the overlap
    /// is `2 × watch_every + max_lag + clock_skew`. A lag past it is not an error: copies
    /// older than the bound are recorded, and deltas around them get the wide overlap.
    pub max_lag: Dur,
    /// Connections to the replica each instance may hold at most (builds, the watch, the
    /// probe share them; a build waits for one). [restart]
    pub pool_max: u32,
    /// `off` (plain TCP) or `required` (TLS, the certificate verified; a server that
    /// offers no TLS is refused). [restart]
    pub tls: ReplicaTls,
    /// PEM bundle of the CAs trusted for the replica's certificate with `tls = "required"`,
    /// instead of the built-in Mozilla roots (webpki-roots): RDS's regional bundle, Cloud
    /// SQL's `server-ca.pem`. [restart]
    pub ca_file: Option<PathBuf>,
    /// Longest any one replica operation may take, its connection (TLS handshake included)
    /// counted: the lag, fingerprint and ward-list queries, and a ward's read to its last row
    /// (a build is also bounded by twice `limits.upstream_timeout`). Enforced by wardgate,
    /// not the server: MariaDB and MySQL name that session setting differently. [restart]
    pub query_timeout: Dur,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            dates: DateStyle::default(),
            booleans: BoolStyle::default(),
            decimals: DecimalStyle::default(),
            probe_ward: None,
            probe_every: Dur(Duration::from_secs(3600)),
            watch_every: Dur(Duration::from_secs(5)),
            max_lag: Dur(Duration::from_secs(30)),
            pool_max: 8,
            tls: ReplicaTls::Off,
            ca_file: None,
            query_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

impl ReplicaConfig {
    /// Checks the section, and `mysql_url` (`url`) against it.
    pub(super) fn validate(&self, url: Option<&Secret>) -> Result<(), ConfigError> {
        super::require_nonzero(&[
            ("replica.probe_every", self.probe_every),
            ("replica.query_timeout", self.query_timeout),
        ])?;
        self.validate_tls(url)?;
        if !(1..=1000).contains(&self.pool_max) {
            return Err(invalid("replica.pool_max", "must be 1-1000 connections"));
        }
        if let Some(w) = &self.probe_ward {
            if split_ward(w).is_none() {
                return Err(invalid(
                    "replica.probe_ward",
                    format!("{w:?} is not state/assembly/ward (such as Karnataka/150/7)"),
                ));
            }
        }
        Ok(())
    }

    /// `ca_file` only with TLS, and a PEM bundle of certificates; a URL that asks for TLS
    /// itself (`require_ssl=true`) only with `tls = "required"`, so that the section says how
    /// the replica is reached.
    fn validate_tls(&self, url: Option<&Secret>) -> Result<(), ConfigError> {
        if let Some(ca) = &self.ca_file {
            if self.tls == ReplicaTls::Off {
                return Err(invalid(
                    "replica.ca_file",
                    "is set but replica.tls is \"off\": set replica.tls = \"required\" (flag --replica-tls required)",
                ));
            }
            crate::tls::read_ca_bundle(ca).map_err(|e| invalid("replica.ca_file", e))?;
        }
        let asks_tls = url
            .and_then(|u| mysql_async::Opts::from_url(u.expose()).ok())
            .is_some_and(|o| o.ssl_opts().is_some());
        if asks_tls && self.tls == ReplicaTls::Off {
            return Err(invalid(
                "mysql_url",
                "asks for TLS (require_ssl=true) but replica.tls is \"off\": set replica.tls = \"required\" (flag --replica-tls required), and replica.ca_file for a private CA",
            ));
        }
        Ok(())
    }

    pub fn row_format(&self) -> RowFormat {
        RowFormat {
            dates: self.dates,
            booleans: self.booleans,
            decimals: self.decimals,
        }
    }
}

/// How the replica is reached, as flags (or `WARDGATE_*` variables) over `[replica]`: shared
/// by `serve`, `check-config` and `warm` (which reads no config file).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReplicaConnFlags {
    /// TLS to the read replica (`replica.tls`) [default: off].
    #[arg(long, env = "WARDGATE_REPLICA_TLS", value_enum)]
    pub replica_tls: Option<ReplicaTls>,
    /// PEM CA bundle trusted for the replica's certificate, instead of the built-in roots
    /// (`replica.ca_file`; needs --replica-tls required).
    #[arg(long, env = "WARDGATE_REPLICA_CA", value_name = "FILE")]
    pub replica_ca: Option<PathBuf>,
    /// Longest any one replica operation may take, its connection included
    /// (`replica.query_timeout`) [default: 30s].
    #[arg(long, env = "WARDGATE_REPLICA_QUERY_TIMEOUT")]
    pub replica_query_timeout: Option<Dur>,
}

impl ReplicaConnFlags {
    /// The flags given, over `r`.
    pub fn apply(&self, r: &mut ReplicaConfig) {
        if let Some(t) = self.replica_tls {
            r.tls = t;
        }
        if let Some(ca) = &self.replica_ca {
            r.ca_file = Some(ca.clone());
        }
        if let Some(t) = self.replica_query_timeout {
            r.query_timeout = t;
        }
    }
}

/// `state/assembly/ward` as its three parts, the state in letters, spaces, `.` and `-`, the
/// numbers in digits (the contract's formats; `params` parses them into a ward key).
pub fn split_ward(s: &str) -> Option<(&str, &str, &str)> {
    let mut parts = s.split('/');
    let (state, assembly, ward) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str| (1..=9).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let letters = state
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b" .-".contains(&b));
    (parts.next().is_none() && !state.is_empty() && letters && digits(assembly) && digits(ward))
        .then_some((state, assembly, ward))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(r: &ReplicaConfig, url: &str) -> String {
        let url = Secret(url.to_string());
        r.validate(Some(&url)).unwrap_err().to_string()
    }

    #[test]
    fn tls_settings_are_checked_and_named() {
        let plain = "mysql://ro@replica:3306/sampark";
        let asks_tls = "mysql://ro@replica:3306/sampark?require_ssl=true";
        let mut r = ReplicaConfig::default();
        assert!(r.validate(Some(&Secret(plain.into()))).is_ok());
        // A URL asking for TLS is not left to the driver: the section must say so too.
        let e = error(&r, asks_tls);
        assert!(e.contains("mysql_url") && e.contains("replica.tls"), "{e}");
        r.tls = ReplicaTls::Required;
        assert!(r.validate(Some(&Secret(asks_tls.into()))).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let (ca, junk) = (dir.path().join("ca.pem"), dir.path().join("junk.pem"));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["replica".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        std::fs::write(&junk, "not a certificate\n").unwrap();
        r.ca_file = Some(ca.clone());
        assert!(r.validate(Some(&Secret(plain.into()))).is_ok());
        for (file, says) in [
            (junk, "no PEM certificate"),
            (dir.path().join("missing.pem"), "missing.pem"),
        ] {
            r.ca_file = Some(file);
            let e = error(&r, plain);
            assert!(e.contains("replica.ca_file") && e.contains(says), "{e}");
        }
        let r = ReplicaConfig {
            ca_file: Some(ca),
            ..ReplicaConfig::default()
        };
        let e = error(&r, plain);
        assert!(
            e.contains("replica.ca_file") && e.contains("replica.tls"),
            "{e}"
        );
        let r = ReplicaConfig {
            query_timeout: Dur(Duration::ZERO),
            ..ReplicaConfig::default()
        };
        assert!(error(&r, plain).contains("replica.query_timeout"));
    }
}
