//! The `[cache]` section: L1 size and the freshness of ward snapshots and master data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, require_nonzero, ByteSize, ConfigError, Dur};

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
    /// Bound of the in-process cache, bytes: whole wards and blobs, plus the derived budget.
    pub l1_max_bytes: ByteSize,
    /// Share of `l1_max_bytes` kept for derived answers (booth subsets, deltas, unaligned
    /// pages), percent, 1-50. Whole wards get the rest, so derived answers never push them out.
    pub derived_share_percent: u8,
    /// Age after which a ward snapshot is renewed in the background.
    pub snapshot_max_age: Dur,
    /// How long past max age an old copy is served `STALE` while one background build renews
    /// it (stale-while-revalidate).
    pub max_stale: Dur,
    /// How long copies are kept in Redis (`warm --retention` too): a night-old warm is still
    /// there in the morning.
    pub retention: Dur,
    /// The oldest copy (counted from its build) served `STALE` while the upstream fails
    /// (stale-if-error); unset = `retention`.
    pub stale_if_error: Option<Dur>,
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
            derived_share_percent: 10,
            snapshot_max_age: Dur(Duration::from_secs(300)),
            max_stale: Dur(Duration::from_secs(3_600)),
            retention: Dur(Duration::from_secs(48 * 3_600)),
            stale_if_error: None,
            clock_skew: Dur(Duration::from_secs(120)),
            delta_overlap: None,
            miss_wait: Dur(Duration::from_secs(30)),
            master_max_age: MasterMaxAge::default(),
        }
    }
}

impl CacheConfig {
    /// Bytes of L1 for derived answers.
    pub fn derived_max_bytes(&self) -> usize {
        (self.l1_max_bytes.0 / 100 * u64::from(self.derived_share_percent)) as usize
    }

    /// Bytes of L1 for whole wards and blobs: what the derived budget leaves.
    pub fn entries_max_bytes(&self) -> usize {
        self.l1_max_bytes.0 as usize - self.derived_max_bytes()
    }

    /// The oldest copy served without the upstream failing: max age plus max stale.
    pub fn max_served_age(&self) -> Duration {
        self.snapshot_max_age.0 + self.max_stale.0
    }

    /// The oldest copy served while the upstream fails.
    pub fn stale_if_error_age(&self) -> Duration {
        self.stale_if_error
            .map_or(self.retention.0, |d| d.0)
            .max(self.max_served_age())
    }

    /// How long a copy is kept in Redis: the retention, and never less than it may be served.
    pub fn redis_ttl(&self) -> Duration {
        self.retention.0.max(self.stale_if_error_age())
    }

    /// The overlap applied to delta reads: never less than the oldest copy that may have been
    /// served plus the clock skew (see "Deltas without gaps" in ARCHITECTURE.md).
    pub fn effective_delta_overlap(&self) -> Duration {
        self.delta_overlap
            .map(|d| d.0)
            .unwrap_or(self.max_served_age() + self.clock_skew.0)
    }
}

impl CacheConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.l1_max_bytes.0 < (1 << 20) {
            return Err(invalid("cache.l1_max_bytes", "must be at least 1MiB"));
        }
        if !(1..=50).contains(&self.derived_share_percent) {
            return Err(invalid(
                "cache.derived_share_percent",
                "must be 1-50: the share of L1 kept for derived answers",
            ));
        }
        require_nonzero(&[
            ("cache.snapshot_max_age", self.snapshot_max_age),
            ("cache.miss_wait", self.miss_wait),
        ])?;
        self.check_delta_overlap()
    }

    /// Cross-field check, delta overlap >= snapshot_max_age + max_stale + clock_skew: a phone's
    /// previous answer may have been read from the source that long before its own clock says
    /// (the oldest copy served, plus the skew), so a smaller overlap could skip rows modified in
    /// between ("Deltas without gaps" in ARCHITECTURE.md).
    fn check_delta_overlap(&self) -> Result<(), ConfigError> {
        let Some(o) = self.delta_overlap else {
            return Ok(());
        };
        let min = self.max_served_age() + self.clock_skew.0;
        if o.0 < min {
            return Err(invalid(
                "cache.delta_overlap",
                format!(
                    "{o} is less than snapshot_max_age + max_stale + clock_skew ({}): deltas could miss rows; raise it or leave it unset",
                    Dur(min)
                ),
            ));
        }
        Ok(())
    }
}
