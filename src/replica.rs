//! Builds ward snapshots straight from the MySQL read replica, rows streamed.
//!
//! Rows flow from the replica's result stream through a bounded channel into a builder on a
//! blocking thread, which compresses each chunk as it closes: memory stays bounded by one ward
//! however large the assembly, and compression overlaps the network read.

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, Row};

use crate::params::WardKey;
use crate::snapshot::{Snapshot, SnapshotBuilder};
use crate::upstream::UpstreamError;
use crate::voter::{citizen_query, Citizen, CitizenFilter, SESSION_SETUP_SQL};

/// A pool whose connections read `DATETIME` as UTC, so `modifieddate` round-trips as epoch ms.
pub fn pool(url: &str) -> Result<Pool, mysql_async::Error> {
    let opts = mysql_async::Opts::from_url(url).map_err(mysql_async::Error::from)?;
    Ok(Pool::new(
        OptsBuilder::from_opts(opts).setup(vec![SESSION_SETUP_SQL]),
    ))
}

fn replica_err(e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Replica(e.to_string())
}

/// Reads one ward with the reference query and builds its snapshot.
pub async fn build_ward(
    pool: &Pool,
    w: &WardKey,
    built_at: i64,
) -> Result<Snapshot, UpstreamError> {
    let mut conn = pool.get_conn().await.map_err(replica_err)?;
    let (sql, params) = citizen_query(&CitizenFilter {
        state: &w.state,
        assembly_no: &w.assembly,
        ward_no: Some(&w.ward),
        booth_nos: None,
        modified_after_ms: None,
        limit_offset: None,
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Citizen>(1024);
    let key = w.clone();
    let builder = tokio::task::spawn_blocking(move || {
        let mut b = SnapshotBuilder::new(key);
        let mut buf = Vec::with_capacity(512);
        while let Some(c) = rx.blocking_recv() {
            buf.clear();
            c.write_json(&mut buf);
            b.push_row(&buf, &c.booth_no, c.modifieddate)?;
        }
        Ok::<_, UpstreamError>(b.finish(built_at))
    });
    let mut result = conn.exec_iter(sql, params).await.map_err(replica_err)?;
    if let Some(mut rows) = result.stream::<Row>().await.map_err(replica_err)? {
        while let Some(row) = rows.next().await {
            let c = Citizen::from_row(row.map_err(replica_err)?).map_err(replica_err)?;
            if tx.send(c).await.is_err() {
                break; // the builder failed; its error is reported below
            }
        }
    }
    drop(tx);
    builder.await.map_err(replica_err)?
}
