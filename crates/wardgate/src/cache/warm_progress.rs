//! A warm's progress, published in Redis while it runs, so that every instance's status page
//! shows what is being stored where, and until when.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::l2::L2;
use crate::time::EpochMs;

/// How long the last warm's progress stays readable after its last update: the morning after
/// the night's warm.
const KEPT: Duration = Duration::from_secs(24 * 3600);

/// One warm's progress, as `wardgate warm` last published it (every 5 s and at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmProgress {
    /// When the warm began.
    pub started: EpochMs,
    /// When this record was written.
    pub updated: EpochMs,
    /// Where rows are read: `replica` or `upstream`.
    pub source: String,
    /// Wards the warm covers, and those done (built, skipped as fresh, or failed).
    pub total: u64,
    pub done: u64,
    /// Wards that failed so far.
    pub failed: u64,
    /// Rows built so far, and per second since the start.
    pub rows: u64,
    pub rows_per_sec: u64,
    /// Seconds until every ward is done at the rate so far; `None` before the first.
    pub eta_seconds: Option<u64>,
    /// Until when the copies stored are kept in Redis (the warm's retention).
    pub stored_until: EpochMs,
    /// Whether the warm has ended.
    pub finished: bool,
}

impl L2 {
    /// Publishes `p` as the fleet's latest warm progress.
    pub async fn publish_warm(&self, p: &WarmProgress) {
        if let Ok(data) = serde_json::to_vec(p) {
            self.put_shared("warm", "progress", data, KEPT).await;
        }
    }

    /// The latest warm's progress, if one ran within the last day.
    pub async fn warm_progress(&self) -> Option<WarmProgress> {
        let data = self.get_shared("warm", "progress").await?;
        serde_json::from_slice(&data).ok()
    }
}
