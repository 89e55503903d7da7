//! The `[ward_budget]` section: how many distinct wards one client may read in a day.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// Distinct wards per client per day (UTC), fleet-wide when Redis is configured. A volunteer
/// works a few wards; a scraper walking a state's roll reads thousands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WardBudgetConfig {
    /// Off: no budget (the rate limits still apply).
    pub enabled: bool,
    /// Wards a day per device (`rate_limit.key_header`, when the app sends one). A booth
    /// agent needs one or two wards and an assembly-level volunteer's `wardNo=-1` read counts
    /// all of its ~20: 60 leaves room for both and for a reinstall.
    pub per_device: u32,
    /// Wards a day per client address, whatever devices it names. Installed apps send no
    /// device header today, so this is what binds them: one carrier-NAT address may carry
    /// hundreds of volunteers (at ~5 wards each, 1,000 wards is ~200 of them), while one
    /// address walking a state of 10M voters reads ~1,000 wards and a large state 15,000.
    pub per_address: u32,
}

impl Default for WardBudgetConfig {
    fn default() -> Self {
        WardBudgetConfig {
            enabled: true,
            per_device: 60,
            per_address: 1_000,
        }
    }
}

impl WardBudgetConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.per_device == 0 || self.per_address == 0 {
            return Err(invalid(
                "ward_budget",
                "per_device and per_address must be at least 1 (set enabled = false to turn the budget off)",
            ));
        }
        if self.per_device > self.per_address {
            return Err(invalid(
                "ward_budget.per_device",
                "must not exceed per_address: a device reads through its address",
            ));
        }
        Ok(())
    }
}
