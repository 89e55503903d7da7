//! The `[citizens]` section: the voter-list endpoint's paging policy.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};
use crate::time::UtcOffset;

/// Citizens endpoint policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CitizensConfig {
    /// Largest page `size` (rows); larger asks are capped to it.
    pub max_page_size: u32,
    /// Refuse unpaginated reads with 400.
    pub require_pagination: bool,
    /// Accept `wardNo=-1` (and an absent `wardNo`): the whole assembly, as the backend does,
    /// served from the assembly's ward snapshots, paginated or not.
    pub allow_assembly_wide: bool,
    /// Most rows an unpaginated whole-assembly answer may hold; larger ones get 413 naming the
    /// count (ask by ward, or paginate). 100,000 rows is ~40 MB of JSON, about what a phone's
    /// WebView can parse at once.
    pub assembly_max_rows: u32,
    /// Offset from UTC of the datetimes the backend writes without a zone (a row's
    /// `modifieddate` as `2026-11-24 15:45:59.297`), `±HH:MM`. Dates with a zone or as epoch
    /// ms need none.
    pub backend_date_offset: String,
}

impl Default for CitizensConfig {
    fn default() -> Self {
        CitizensConfig {
            max_page_size: 1000,
            require_pagination: false,
            allow_assembly_wide: true,
            assembly_max_rows: 100_000,
            backend_date_offset: "+00:00".into(),
        }
    }
}

impl CitizensConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.max_page_size) {
            return Err(invalid("citizens.max_page_size", "must be 1..=100000"));
        }
        if self.assembly_max_rows == 0 {
            return Err(invalid(
                "citizens.assembly_max_rows",
                "must be at least 1 (switch assembly-wide reads off with allow_assembly_wide = false)",
            ));
        }
        if UtcOffset::parse(&self.backend_date_offset).is_none() {
            return Err(invalid(
                "citizens.backend_date_offset",
                "must be an offset from UTC such as +05:30 or +00:00",
            ));
        }
        Ok(())
    }

    /// `backend_date_offset`, validated.
    pub fn date_offset(&self) -> UtcOffset {
        UtcOffset::parse(&self.backend_date_offset).unwrap_or_default()
    }
}
