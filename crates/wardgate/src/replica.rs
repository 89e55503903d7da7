//! Builds ward snapshots straight from the MySQL read replica, rows streamed.
//!
//! Rows flow from the replica's result stream through a bounded channel into a builder on a
//! blocking thread, which compresses each chunk as it closes: memory stays bounded by one ward
//! however large the assembly, and compression overlaps the network read.

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, Row, Value};

use crate::legacy::RowWriter;
use crate::params::WardKey;
use crate::snapshot::{Snapshot, SnapshotBuilder};
use crate::upstream::UpstreamError;

/// A pool whose connections read `DATETIME` as UTC, so `modifieddate` round-trips as epoch ms.
pub fn pool(url: &str) -> Result<Pool, mysql_async::Error> {
    let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
    Ok(Pool::new(
        OptsBuilder::from_opts(opts).setup(vec!["SET time_zone = '+00:00'"]),
    ))
}

fn replica_err(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Replica(e.to_string())
}

/// The query the backend runs for a whole ward, in its row order.
const WARD_SQL: &str =
    "SELECT * FROM citizen WHERE state = ? AND assembly_no = ? AND ward_no = ? ORDER BY srno + 0, id";

/// Reads one ward with the reference query and builds its snapshot.
pub async fn build_ward(
    pool: &Pool,
    w: &WardKey,
    built_at: i64,
) -> Result<Snapshot, UpstreamError> {
    let mut conn = pool.get_conn().await.map_err(replica_err)?;
    let params = vec![
        Value::from(w.state.as_str()),
        Value::from(w.assembly.as_str()),
        Value::from(w.ward.as_str()),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Row>(1024);
    let mut result = conn
        .exec_iter(WARD_SQL, params)
        .await
        .map_err(replica_err)?;
    let writer = RowWriter::new(&result.columns().unwrap_or_default()).map_err(replica_err)?;
    let key = w.clone();
    let builder = tokio::task::spawn_blocking(move || {
        let mut b = SnapshotBuilder::new(key);
        let mut buf = Vec::with_capacity(512);
        while let Some(row) = rx.blocking_recv() {
            buf.clear();
            let facts = writer.write(row, &mut buf).map_err(replica_err)?;
            b.push_row(&buf, &facts.booth_no, facts.modified.0)?;
        }
        Ok::<_, UpstreamError>(b.finish(built_at))
    });
    if let Some(mut rows) = result.stream::<Row>().await.map_err(replica_err)? {
        while let Some(row) = rows.next().await {
            if tx.send(row.map_err(replica_err)?).await.is_err() {
                break; // the builder failed; its error is reported below
            }
        }
    }
    drop(tx);
    builder.await.map_err(replica_err)?
}
