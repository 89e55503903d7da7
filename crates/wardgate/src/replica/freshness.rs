//! What the replica says of freshness: each ward's fingerprint, one grouped query per assembly
//! over the download index, and how far the replica lags its primary.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How old a lag measure may be before `lag` measures again.
const LAG_REMEASURE: Duration = Duration::from_secs(1);

use mysql_async::prelude::Queryable;
use mysql_async::Row;

use super::{Replica, ReplicaError};
use crate::snapshot::Fingerprint;

/// Each ward's fingerprint (`snapshot::Fingerprint`), computed as wardgate computes it over a
/// snapshot: `m` is `modifieddate` in epoch ms (the pool's sessions are in UTC). The columns it
/// reads, `ward_no`, `modifieddate` and the primary key `id`, are all in the download index
/// `(state, assembly_no, ward_no, modifieddate)`, so the query reads no table rows.
pub const FINGERPRINT_SQL: &str = "SELECT ward_no, COUNT(*), CAST(SUM(m) AS CHAR), \
     CAST(SUM(CAST(id AS DECIMAL(20)) * m) AS CHAR), BIT_XOR(CRC32(CONCAT(id, '/', m))) \
     FROM (SELECT ward_no, id, CAST(ROUND(UNIX_TIMESTAMP(modifieddate) * 1000) AS SIGNED) AS m \
     FROM citizen WHERE state = ? AND assembly_no = ?) t GROUP BY ward_no";

impl Replica {
    /// The fingerprint of every ward of an assembly, by ward number.
    pub async fn fingerprints(
        &self,
        state: &str,
        assembly: &str,
    ) -> Result<HashMap<String, Fingerprint>, ReplicaError> {
        let rows: Vec<Row> = self
            .timed("the fingerprint query", async {
                let mut c = self.pool.get_conn().await?;
                Ok(c.exec(FINGERPRINT_SQL, (state, assembly)).await?)
            })
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            type Columns = (String, u64, Option<String>, Option<String>, u64);
            let (ward, n, sum, sum_id, xor): Columns = mysql_async::from_row_opt(row)
                .map_err(|e| ReplicaError::Fingerprint(e.to_string()))?;
            let int = |s: Option<String>| -> Result<i128, ReplicaError> {
                let s = s.unwrap_or_default();
                s.parse()
                    .map_err(|_| ReplicaError::Fingerprint(format!("sum {s:?}")))
            };
            let f = Fingerprint {
                rows: n,
                sum_ms: int(sum)?,
                sum_id_ms: int(sum_id)?,
                xor_crc: xor as u32,
            };
            out.insert(ward, f);
        }
        Ok(out)
    }

    /// Measures how far the replica lags its primary (`Seconds_Behind_Master`, whole seconds,
    /// so one more is added): zero for a server that replicates from nothing; an error while
    /// replication is stopped (the lag is then unknown and unbounded).
    pub async fn measure_lag(&self) -> Result<Duration, ReplicaError> {
        let status: Option<Row> = self
            .timed("the lag query", async {
                let mut c = self.pool.get_conn().await?;
                Ok(c.query_first("SHOW SLAVE STATUS").await?)
            })
            .await?;
        let lag = match status {
            None => Duration::ZERO,
            Some(row) => match row.get_opt::<Option<u64>, _>("Seconds_Behind_Master") {
                Some(Ok(Some(s))) => Duration::from_secs(s + 1),
                _ => {
                    self.lag_ms.store(u64::MAX, Ordering::Relaxed);
                    return Err(ReplicaError::Fingerprint(
                        "replication is not running (Seconds_Behind_Master is NULL)".into(),
                    ));
                }
            },
        };
        self.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
        Ok(lag)
    }

    /// The lag, measured again when the last measure is over a second old; `None` while
    /// unknown (replication stopped, or the replica unreachable).
    pub async fn lag(&self) -> Option<Duration> {
        let fresh = self
            .lag_measured
            .lock()
            .map(|t| t.is_some_and(|t| t.elapsed() < LAG_REMEASURE))
            .unwrap_or(false);
        if !fresh {
            if let Ok(mut t) = self.lag_measured.lock() {
                *t = Some(Instant::now());
            }
            if self.measure_lag().await.is_err() {
                self.lag_ms.store(u64::MAX, Ordering::Relaxed);
            }
        }
        match self.lag_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}
