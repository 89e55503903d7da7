//! The read replica: ward snapshots built straight from MySQL rows, streamed.
//!
//! Rows flow from the replica's result stream through a bounded channel into a builder on a
//! blocking thread, which hands each chunk as it closes to the cores' pool to compress: memory
//! stays bounded by one ward however large the assembly, and compression overlaps the read.
//!
//! Every operation (a connection taken, TLS included, and its query) ends within
//! `replica.query_timeout`, and each failure is counted by kind in
//! `wardgate_replica_errors_total`.

mod connect;
mod freshness;
pub mod shape;

pub use freshness::FINGERPRINT_SQL;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, Row, Value};

use crate::config::{ReplicaConfig, ReplicaTls};
use crate::gate::Permit;
use crate::legacy::{RowError, RowFormat, RowWriter};
use crate::metrics::{KindLabels, Metrics};
use crate::params::WardKey;
use crate::snapshot::{Snapshot, SnapshotBuilder, SnapshotError};
use crate::time::EpochMs;

/// The query the backend runs for a whole ward, in its row order.
const WARD_SQL: &str =
    "SELECT * FROM citizen WHERE state = ? AND assembly_no = ? AND ward_no = ? ORDER BY srno + 0, id";

/// Why a ward could not be built from the replica.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// `hint` says what to do about it, when wardgate knows (`connect::hint`).
    #[error("read replica: {error}{hint}")]
    MySql {
        error: mysql_async::Error,
        hint: &'static str,
    },
    #[error("read replica row: {0}")]
    Row(#[from] RowError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("read replica: the builder task failed: {0}")]
    Task(String),
    #[error("read replica fingerprint: {0}")]
    Fingerprint(String),
    #[error("read replica: {0}")]
    Setup(String),
    #[error("read replica: {what} took longer than replica.query_timeout ({after:?})")]
    Timeout { what: &'static str, after: Duration },
}

impl From<mysql_async::Error> for ReplicaError {
    fn from(error: mysql_async::Error) -> Self {
        // The hint is added by `Replica::timed`, which knows how the replica is reached.
        ReplicaError::MySql { error, hint: "" }
    }
}

/// A pool of replica connections whose `DATETIME`s read as UTC, so `modifieddate` round-trips
/// as epoch ms. Cloning shares the pool.
#[derive(Clone)]
pub struct Replica {
    pool: Pool,
    tls: bool,
    query_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The error of the last operation, while no operation has succeeded since.
    last_error: Arc<Mutex<Option<String>>>,
    /// The lag last measured, ms (`freshness`); `u64::MAX` while unknown.
    lag_ms: Arc<AtomicU64>,
    lag_measured: Arc<Mutex<Option<std::time::Instant>>>,
}

impl Replica {
    /// A pool of at most `max_connections` connections to the replica at `url`, reached as
    /// `cfg` says (TLS, its CA bundle, the query timeout). Connects lazily: a replica that
    /// refuses shows in the first operation's error.
    pub fn new(
        url: &str,
        cfg: &ReplicaConfig,
        max_connections: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Replica, ReplicaError> {
        Ok(Replica {
            pool: connect::pool(url, cfg, max_connections)?,
            tls: cfg.tls == ReplicaTls::Required,
            query_timeout: cfg.query_timeout.0,
            metrics,
            last_error: Arc::default(),
            lag_ms: Arc::default(),
            lag_measured: Arc::default(),
        })
    }

    /// Runs one operation within the query timeout; a failure is counted and remembered.
    async fn timed<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, ReplicaError>>,
    ) -> Result<T, ReplicaError> {
        let after = self.query_timeout;
        let r = match tokio::time::timeout(after, op).await {
            Ok(Err(ReplicaError::MySql { error, .. })) => Err(ReplicaError::MySql {
                hint: connect::hint(&error, self.tls),
                error,
            }),
            Ok(r) => r,
            Err(_) => Err(ReplicaError::Timeout { what, after }),
        };
        let mut last = self.last_error.lock().ok();
        match &r {
            Ok(_) => {
                if let Some(l) = last.as_deref_mut() {
                    *l = None;
                }
            }
            Err(e) => {
                let kind = connect::kind(e);
                self.metrics
                    .replica_errors
                    .get_or_create(&KindLabels { kind })
                    .inc();
                if let Some(l) = last.as_deref_mut() {
                    *l = Some(e.to_string());
                }
            }
        }
        r
    }

    /// Why the last operation failed, while none has succeeded since (a build that fell back
    /// to the backend names it when the backend fails too).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }

    /// Every ward of an assembly the replica holds (what `warm` builds when no wards are named).
    pub async fn wards(&self, state: &str, assembly: &str) -> Result<Vec<String>, ReplicaError> {
        self.timed("the ward list", async {
            let mut c = self.pool.get_conn().await?;
            let sql = "SELECT DISTINCT ward_no FROM citizen WHERE state = ? AND assembly_no = ? ORDER BY ward_no + 0";
            Ok(c.exec(sql, (state, assembly)).await?)
        })
        .await
    }

    /// Reads one ward with the backend's query and builds its snapshot, its rows written in
    /// `format`, under a gate permit, within the query timeout.
    pub async fn build_ward(
        &self,
        w: &WardKey,
        built_at: EpochMs,
        format: RowFormat,
        _permit: &Permit,
    ) -> Result<Snapshot, ReplicaError> {
        self.timed("the ward read", self.read_ward(w, built_at, format))
            .await
    }

    async fn read_ward(
        &self,
        w: &WardKey,
        built_at: EpochMs,
        format: RowFormat,
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
        let builder = crate::background::run_build({
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
