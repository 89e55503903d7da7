//! The `[citizens]` section: the voter-list endpoint's paging policy.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

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

impl CitizensConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.max_page_size) {
            return Err(invalid("citizens.max_page_size", "must be 1..=100000"));
        }
        Ok(())
    }
}
