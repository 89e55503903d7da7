//! MariaDB/MySQL access for the origin: pool setup, the reference read, updates, master data, CSV.

use bytes::Bytes;
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{from_row_opt, Opts, OptsBuilder, Pool, PoolConstraints, Row, TxOpts, Value};
use tokio::sync::mpsc;

use crate::datetime::datetime_value;
use crate::master::{
    AssemblyInfo, BoothInfo, DashboardStats, PartyInfo, Setting, StateInfo, WardInfo,
};
use crate::sql::{citizen_query, scope_where, CitizenFilter, SESSION_SETUP_SQL};
use crate::store::{write_csv_row, CitizenUpdate};
use crate::voter::Citizen;
use crate::OriginError;

/// At most this many connections, unless the URL says otherwise (`?pool_max=N`): HikariCP's
/// default `maximumPoolSize`, the pool a Spring Boot 2.0 backend runs with. A burst of requests
/// queues for a connection there, not as a hundred queries running in the database at once.
pub const DEFAULT_POOL_MAX: usize = 10;

/// A pool whose every connection runs in UTC (so `NOW(3)` and DATETIME values mean the same
/// epoch ms as in the code).
pub fn pool(url: &str) -> Result<Pool, OriginError> {
    let opts = Opts::from_url(url)?;
    // No reset on return to the pool: the origin never changes session state beyond the
    // setup statement, and a reset would cost a round trip (plus the setup again) per request.
    let mut pool_opts = opts.pool_opts().clone().with_reset_connection(false);
    if !url.contains("pool_max=") {
        let min = pool_opts.constraints().min().min(DEFAULT_POOL_MAX);
        if let Some(c) = PoolConstraints::new(min, DEFAULT_POOL_MAX) {
            pool_opts = pool_opts.with_constraints(c);
        }
    }
    let opts = OptsBuilder::from_opts(opts)
        .setup(vec![SESSION_SETUP_SQL])
        .pool_opts(pool_opts);
    Ok(Pool::new(opts))
}

/// Decodes typed result rows, turning a type mismatch into an error instead of the panic
/// `exec::<T>` would raise.
async fn rows_as<T: FromRow>(
    pool: &Pool,
    sql: &str,
    params: Vec<Value>,
) -> Result<Vec<T>, OriginError> {
    let mut conn = pool.get_conn().await?;
    let rows: Vec<Row> = conn.exec(sql, params).await?;
    rows.into_iter()
        .map(|r| from_row_opt::<T>(r).map_err(|e| OriginError::Decode(format!("{sql}: {e}"))))
        .collect()
}

pub async fn read_citizens(
    pool: &Pool,
    f: &CitizenFilter<'_>,
) -> Result<Vec<Citizen>, OriginError> {
    let (sql, params) = citizen_query(f);
    let mut conn = pool.get_conn().await?;
    let mut result = conn.exec_iter(sql, params).await?;
    let mut out = Vec::new();
    while let Some(row) = result.next().await? {
        out.push(Citizen::from_row(row)?);
    }
    Ok(out)
}

pub async fn apply_updates(
    pool: &Pool,
    updates: &[CitizenUpdate],
    now_ms: i64,
) -> Result<u64, OriginError> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut affected = 0;
    for u in updates {
        let mut sql = String::from("UPDATE citizen SET ");
        let mut params: Vec<Value> = Vec::with_capacity(6);
        let mut set = |col: &str, v: Value| {
            sql.push_str(col);
            sql.push_str(" = ?, ");
            params.push(v);
        };
        if let Some(v) = &u.responded_status {
            set("responded_status", v.as_deref().into());
        }
        if let Some(v) = u.voted {
            set("voted", Value::Int(i64::from(v)));
        }
        if let Some(v) = &u.mobile {
            set("mobile", v.as_deref().into());
        }
        if let Some(v) = &u.party_preference {
            set("party_preference", v.as_deref().into());
        }
        sql.push_str("modifieddate = ? WHERE id = ?");
        params.push(datetime_value(now_ms));
        params.push(Value::Int(u.id));
        tx.exec_drop(sql, params).await?;
        affected += tx.affected_rows();
    }
    // Dropping an uncommitted transaction (on any `?` above) rolls it back.
    tx.commit().await?;
    Ok(affected)
}

pub async fn dashboard(pool: &Pool, f: &CitizenFilter<'_>) -> Result<DashboardStats, OriginError> {
    let mut sql = String::from(
        "SELECT responded_status, COUNT(*), CAST(COALESCE(SUM(voted), 0) AS SIGNED) FROM citizen",
    );
    let mut params = Vec::new();
    scope_where(f, &mut sql, &mut params);
    sql.push_str(" GROUP BY responded_status");
    let groups: Vec<(Option<String>, i64, i64)> = rows_as(pool, &sql, params).await?;
    let mut st = DashboardStats::default();
    for (status, count, voted) in groups {
        let count = u64::try_from(count).unwrap_or(0);
        st.total += count;
        st.voted += u64::try_from(voted).unwrap_or(0);
        if let Some(s) = status {
            if !s.is_empty() {
                st.responded += count;
            }
            *st.by_status.entry(s).or_default() += count;
        }
    }
    Ok(st)
}

pub async fn states(pool: &Pool) -> Result<Vec<StateInfo>, OriginError> {
    let rows: Vec<(i64, String, String)> =
        rows_as(pool, "SELECT id, name, code FROM state ORDER BY id", vec![]).await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, code)| StateInfo { id, name, code })
        .collect())
}

fn assembly_info((id, state_id, assembly_no, name): (i64, i64, String, String)) -> AssemblyInfo {
    AssemblyInfo {
        id,
        state_id,
        assembly_no,
        name,
    }
}

pub async fn assemblies(
    pool: &Pool,
    state_id: i64,
) -> Result<Option<Vec<AssemblyInfo>>, OriginError> {
    let exists: Vec<(i64,)> = rows_as(
        pool,
        "SELECT id FROM state WHERE id = ?",
        vec![state_id.into()],
    )
    .await?;
    if exists.is_empty() {
        return Ok(None);
    }
    let rows: Vec<(i64, i64, String, String)> = rows_as(
        pool,
        "SELECT id, state_id, assembly_no, name FROM assembly_constituency WHERE state_id = ? ORDER BY id",
        vec![state_id.into()],
    )
    .await?;
    Ok(Some(rows.into_iter().map(assembly_info).collect()))
}

pub async fn wards_and_booths(
    pool: &Pool,
    assembly_id: i64,
) -> Result<Option<(AssemblyInfo, Vec<WardInfo>)>, OriginError> {
    let ac: Vec<(i64, i64, String, String)> = rows_as(
        pool,
        "SELECT id, state_id, assembly_no, name FROM assembly_constituency WHERE id = ?",
        vec![assembly_id.into()],
    )
    .await?;
    let Some(ac) = ac.into_iter().next().map(assembly_info) else {
        return Ok(None);
    };
    let wards: Vec<(i64, String, String)> = rows_as(
        pool,
        "SELECT id, ward_no, name FROM ward WHERE assembly_constituency_id = ? ORDER BY id",
        vec![assembly_id.into()],
    )
    .await?;
    let booths: Vec<(i64, i64, String, String, i64, i64)> = rows_as(
        pool,
        "SELECT b.id, b.ward_id, b.booth_no, b.name, b.first_srno, b.last_srno FROM booth b \
         JOIN ward w ON b.ward_id = w.id WHERE w.assembly_constituency_id = ? ORDER BY b.id",
        vec![assembly_id.into()],
    )
    .await?;
    let mut wards: Vec<WardInfo> = wards
        .into_iter()
        .map(|(id, ward_no, name)| WardInfo {
            id,
            ward_no,
            name,
            booths: Vec::new(),
        })
        .collect();
    for (id, ward_id, booth_no, name, first_srno, last_srno) in booths {
        if let Some(w) = wards.iter_mut().find(|w| w.id == ward_id) {
            w.booths.push(BoothInfo {
                id,
                booth_no,
                name,
                first_srno,
                last_srno,
            });
        }
    }
    Ok(Some((ac, wards)))
}

pub async fn parties(pool: &Pool) -> Result<Vec<PartyInfo>, OriginError> {
    let rows: Vec<(i64, String, String, String)> = rows_as(
        pool,
        "SELECT id, name, short_name, color FROM party ORDER BY id",
        vec![],
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, short_name, color)| PartyInfo {
            id,
            name,
            short_name,
            color,
        })
        .collect())
}

pub async fn settings(pool: &Pool) -> Result<Vec<Setting>, OriginError> {
    let rows: Vec<(String, String)> = rows_as(
        pool,
        "SELECT setting_key, setting_value FROM application_settings ORDER BY setting_key",
        vec![],
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, value)| Setting { key, value })
        .collect())
}

/// Streams the assembly's rows as CSV records into `tx`, row by row from the server, in
/// chunks; stops quietly when the receiver is gone (the client hung up).
pub async fn stream_csv(
    pool: &Pool,
    state: &str,
    assembly_no: &str,
    tx: &mpsc::Sender<Result<Bytes, OriginError>>,
) -> Result<(), OriginError> {
    let f = CitizenFilter {
        state,
        assembly_no,
        ward_no: None,
        booth_nos: None,
        modified_after_ms: None,
        limit_offset: None,
    };
    let (sql, params) = citizen_query(&f);
    let mut conn = pool.get_conn().await?;
    let mut result = conn.exec_iter(sql, params).await?;
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(row) = result.next().await? {
        write_csv_row(&Citizen::from_row(row)?, &mut buf);
        if buf.len() >= 60 * 1024 {
            let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(64 * 1024)));
            if tx.send(Ok(chunk)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !buf.is_empty() {
        // A closed receiver here only means the client left; nothing to report.
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    }
    Ok(())
}
