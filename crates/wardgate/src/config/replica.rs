//! The `[replica]` section: how rows built from the read replica are written, and how they are checked against the backend's.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Dur};
use crate::legacy::{BoolStyle, DateStyle, DecimalStyle, RowFormat};

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
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            dates: DateStyle::default(),
            booleans: BoolStyle::default(),
            decimals: DecimalStyle::default(),
            probe_ward: None,
            probe_every: Dur(std::time::Duration::from_secs(3600)),
            watch_every: Dur(std::time::Duration::from_secs(5)),
            max_lag: Dur(std::time::Duration::from_secs(30)),
            pool_max: 8,
        }
    }
}

impl ReplicaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        super::require_nonzero(&[("replica.probe_every", self.probe_every)])?;
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

    pub fn row_format(&self) -> RowFormat {
        RowFormat {
            dates: self.dates,
            booleans: self.booleans,
            decimals: self.decimals,
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
