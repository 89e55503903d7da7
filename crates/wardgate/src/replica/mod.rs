//! The read replica: ward snapshots built straight from MySQL rows, streamed.
//!
//! Rows flow from the replica's result stream through a bounded channel into a builder on a
//! blocking thread, which hands each chunk as it closes to the cores' pool to compress: memory
//! stays bounded by one ward however large the assembly, and compression overlaps the read.

mod freshness;
pub mod shape;

pub use freshness::FINGERPRINT_SQL;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, Row, Value};

use crate::gate::Permit;
use crate::legacy::{RowError, RowFormat, RowWriter};
use crate::params::WardKey;
use crate::snapshot::{Snapshot, SnapshotBuilder, SnapshotError};
use crate::time::EpochMs;

/// The query the backend runs for a whole ward, in its row order.
const WARD_SQL: &str =
    "SELECT * FROM citizen WHERE state = ? AND assembly_no = ? AND ward_no = ? ORDER BY srno + 0, id";

/// Why a ward could not be built from the replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("read replica: {0}")]
    MySql(#[from] mysql_async::Error),
    #[error("read replica row: {0}")]
    Row(#[from] RowError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("read replica: the builder task failed: {0}")]
    Task(String),
    #[error("read replica fingerprint: {0}")]
    Fingerprint(String),
}

/// A pool of replica connections whose `DATETIME`s read as UTC, so `modifieddate` round-trips
/// as epoch ms. Cloning shares the pool.
#[derive(Clone)]
pub struct Replica {
    pool: Pool,
    /// The lag last measured, ms (`freshness`); `u64::MAX` while unknown.
    lag_ms: Arc<AtomicU64>,
    lag_measured: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

impl Replica {
    /// A pool of at most `max_connections` connections to the replica at `url` (its own
    /// `pool_max` parameter, if the URL has one, is overridden): each instance of a fleet
    /// holds this many, so the replica sees `max_connections` × instances, not 100 × instances.
    pub fn new(url: &str, max_connections: usize) -> Result<Replica, mysql_async::Error> {
        let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
        let max = max_connections.max(1);
        let constraints = mysql_async::PoolConstraints::new(0, max).unwrap_or_default();
        let pool = mysql_async::PoolOpts::default().with_constraints(constraints);
        let opts = OptsBuilder::from_opts(opts)
            .pool_opts(pool)
            .setup(vec!["SET time_zone = '+00:00'"]);
        Ok(Replica {
            pool: Pool::new(opts),
            lag_ms: Arc::default(),
            lag_measured: Arc::default(),
        })
    }

    /// Every ward of an assembly the replica holds (what `warm` builds when no wards are named).
    pub async fn wards(&self, state: &str, assembly: &str) -> Result<Vec<String>, ReplicaError> {
        let mut c = self.pool.get_conn().await?;
        let sql = "SELECT DISTINCT ward_no FROM citizen WHERE state = ? AND assembly_no = ? ORDER BY ward_no + 0";
        Ok(c.exec(sql, (state, assembly)).await?)
    }

    /// Reads one ward with the backend's query and builds its snapshot, its rows written in
    /// `format`, under a gate permit.
    pub async fn build_ward(
        &self,
        w: &WardKey,
        built_at: EpochMs,
        format: RowFormat,
        _permit: &Permit,
    ) -> Result<Snapshot, ReplicaError> {
        let mut conn = self.pool.get_conn().await?;
        let params = vec![
            Value::from(w.state.as_str()),
            Value::from(w.assembly.as_str()),
            Value::from(w.ward.as_str()),
        ];
        let mut result = conn.exec_iter(WARD_SQL, params).await?;
        let writer = RowWriter::new(&result.columns().unwrap_or_default(), format)?;
        // Rows cross to the builder in batches: one wake-up per batch, not per row.
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Row>>(8);
        let builder = crate::background::run({
            let key = w.clone();
            move || build_from_rows(key, writer, rx, built_at)
        });
        if let Some(mut rows) = result.stream::<Row>().await? {
            let mut batch = Vec::with_capacity(ROW_BATCH);
            while let Some(row) = rows.next().await {
                batch.push(row?);
                if batch.len() == ROW_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(ROW_BATCH));
                    if tx.send(full).await.is_err() {
                        break; // the builder failed; its error is reported below
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(batch).await;
            }
        }
        drop(tx);
        builder
            .await
            .map_err(|e| ReplicaError::Task(e.to_string()))?
    }
}

/// Rows handed to the builder at a time.
const ROW_BATCH: usize = 256;

/// The blocking half of a build: each row written as the backend writes it, then chunked.
fn build_from_rows(
    key: WardKey,
    writer: RowWriter,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Row>>,
    built_at: EpochMs,
) -> Result<Snapshot, ReplicaError> {
    let mut b = SnapshotBuilder::new(key);
    let mut buf = Vec::with_capacity(512);
    while let Some(rows) = rx.blocking_recv() {
        for row in rows {
            buf.clear();
            let facts = writer.write(row, &mut buf)?;
            b.push_row(&buf, facts.id, &facts.booth_no, facts.modified.0)?;
        }
    }
    Ok(b.finish(built_at)?)
}
