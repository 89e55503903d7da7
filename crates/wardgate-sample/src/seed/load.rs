//! The seed's SQL: database and schema creation, citizen inserts, clearing an assembly, master rows.

use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, Transaction, TxOpts, Value};
use tracing::info;

use crate::datetime::datetime_value;
use crate::master::{AssemblyInfo, MasterData, WardInfo};
use crate::sql::SCHEMA_SQL;
use crate::voter::{Citizen, CITIZEN_COLUMNS};
use crate::OriginError;

/// Database name of the URL, checked to be a plain identifier because `CREATE DATABASE`
/// cannot take it as a parameter.
fn database_name(opts: &Opts) -> Result<String, OriginError> {
    let name = opts
        .db_name()
        .ok_or_else(|| OriginError::Invalid("the MySQL URL must name a database".into()))?;
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(OriginError::Invalid(format!(
            "database name {name:?}: use letters, digits and '_'"
        )));
    }
    Ok(name.to_string())
}

/// Creates the URL's database if missing (connecting without a default database first).
pub async fn create_database(url: &str) -> Result<String, OriginError> {
    let opts = Opts::from_url(url)?;
    let name = database_name(&opts)?;
    let mut conn = Conn::new(OptsBuilder::from_opts(opts).db_name(None::<String>)).await?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
    ))
    .await?;
    conn.disconnect().await?;
    Ok(name)
}

/// Creates the schema's tables where missing.
pub async fn create_schema(pool: &Pool) -> Result<(), OriginError> {
    let mut conn = pool.get_conn().await?;
    for stmt in SCHEMA_SQL {
        conn.query_drop(*stmt).await?;
    }
    Ok(())
}

fn insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; CITIZEN_COLUMNS.len()].join(","));
    let mut sql = format!(
        "INSERT INTO citizen ({}) VALUES ",
        CITIZEN_COLUMNS.join(",")
    );
    sql.reserve(rows * (one.len() + 1));
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

fn push_params(c: &Citizen, p: &mut Vec<Value>) {
    let opt = |s: &Option<String>| s.as_deref().map_or(Value::NULL, Value::from);
    p.push(Value::Int(c.id));
    p.push(c.state.as_str().into());
    p.push(c.assembly_no.as_str().into());
    p.push(c.ward_no.as_str().into());
    p.push(c.booth_no.as_str().into());
    p.push(c.srno.as_str().into());
    p.push(c.voter_id.as_str().into());
    p.push(opt(&c.first_name));
    p.push(opt(&c.family_name));
    p.push(opt(&c.gender));
    p.push(c.age.map_or(Value::NULL, |a| Value::Int(i64::from(a))));
    p.push(opt(&c.mobile));
    p.push(opt(&c.address));
    // DECIMAL as its text: the server parses it exactly, no float rounding on the way.
    p.push(opt(&c.latitude));
    p.push(opt(&c.longitude));
    p.push(opt(&c.party_preference));
    p.push(opt(&c.responded_status));
    p.push(Value::Int(i64::from(c.voted)));
    p.push(datetime_value(c.modifieddate));
}

/// Inserts one ward in multi-row statements inside a single transaction (one commit, one
/// log flush per ward instead of per statement).
pub(super) async fn insert_ward(
    conn: &mut Conn,
    rows: &[Citizen],
    batch: usize,
) -> Result<(), OriginError> {
    let full_sql = insert_sql(batch);
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    for chunk in rows.chunks(batch) {
        let mut params = Vec::with_capacity(chunk.len() * CITIZEN_COLUMNS.len());
        for c in chunk {
            push_params(c, &mut params);
        }
        if chunk.len() == batch {
            tx.exec_drop(full_sql.as_str(), params).await?;
        } else {
            tx.exec_drop(insert_sql(chunk.len()), params).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Removes the assembly's citizens. When the table holds nothing else, TRUNCATE does it in
/// an instant; otherwise DELETE in slices keeps each transaction (and its undo log) small.
pub(super) async fn clear_citizens(
    pool: &Pool,
    state: &str,
    assembly: &str,
) -> Result<(), OriginError> {
    let mut conn = pool.get_conn().await?;
    let others: Option<i64> = conn
        .exec_first(
            "SELECT 1 FROM citizen WHERE state <> ? OR assembly_no <> ? LIMIT 1",
            (state, assembly),
        )
        .await?;
    if others.is_none() {
        conn.query_drop("TRUNCATE TABLE citizen").await?;
        return Ok(());
    }
    let started = Instant::now();
    let mut deleted = 0;
    loop {
        conn.exec_drop(
            "DELETE FROM citizen WHERE state = ? AND assembly_no = ? LIMIT 50000",
            (state, assembly),
        )
        .await?;
        let n = conn.affected_rows();
        deleted += n;
        if n == 0 {
            break;
        }
    }
    info!(
        deleted,
        secs = format!("{:.2}", started.elapsed().as_secs_f64()),
        "old rows of the assembly deleted"
    );
    Ok(())
}

/// Writes the master rows in one transaction: upserts the state and constituency, replaces
/// the constituency's wards and booths, and resets the (global) parties and settings.
pub(super) async fn load_master(pool: &Pool, m: &MasterData) -> Result<(), OriginError> {
    let mut conn = pool.get_conn().await?;
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    for s in &m.states {
        tx.exec_drop(
            "INSERT INTO state (id, name, code) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE name = VALUES(name), code = VALUES(code)",
            (s.id, s.name.as_str(), s.code.as_str()),
        )
        .await?;
    }
    for (ac, wards) in &m.assemblies {
        replace_assembly(&mut tx, ac, wards).await?;
    }
    replace_parties_and_settings(&mut tx, m).await?;
    tx.commit().await?;
    Ok(())
}

/// Upserts the constituency and replaces its wards and booths.
async fn replace_assembly(
    tx: &mut Transaction<'_>,
    ac: &AssemblyInfo,
    wards: &[WardInfo],
) -> Result<(), OriginError> {
    tx.exec_drop(
        "INSERT INTO assembly_constituency (id, state_id, assembly_no, name) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE state_id = VALUES(state_id), assembly_no = VALUES(assembly_no), name = VALUES(name)",
        (ac.id, ac.state_id, ac.assembly_no.as_str(), ac.name.as_str()),
    )
    .await?;
    tx.exec_drop(
        "DELETE b FROM booth b JOIN ward w ON b.ward_id = w.id WHERE w.assembly_constituency_id = ?",
        (ac.id,),
    )
    .await?;
    tx.exec_drop(
        "DELETE FROM ward WHERE assembly_constituency_id = ?",
        (ac.id,),
    )
    .await?;
    for w in wards {
        tx.exec_drop(
            "INSERT INTO ward (id, assembly_constituency_id, ward_no, name) VALUES (?, ?, ?, ?)",
            (w.id, ac.id, w.ward_no.as_str(), w.name.as_str()),
        )
        .await?;
        // One small batch per ward; booth counts are ~10, so no multi-row statement.
        tx.exec_batch(
            "INSERT INTO booth (id, ward_id, booth_no, name, first_srno, last_srno) VALUES (?, ?, ?, ?, ?, ?)",
            w.booths.iter().map(|b| {
                (b.id, w.id, b.booth_no.as_str(), b.name.as_str(), b.first_srno, b.last_srno)
            }),
        )
        .await?;
    }
    Ok(())
}

/// Replaces the (global) party list and application settings.
async fn replace_parties_and_settings(
    tx: &mut Transaction<'_>,
    m: &MasterData,
) -> Result<(), OriginError> {
    tx.query_drop("DELETE FROM party").await?;
    tx.exec_batch(
        "INSERT INTO party (id, name, short_name, color) VALUES (?, ?, ?, ?)",
        m.parties.iter().map(|p| {
            (
                p.id,
                p.name.as_str(),
                p.short_name.as_str(),
                p.color.as_str(),
            )
        }),
    )
    .await?;
    tx.query_drop("DELETE FROM application_settings").await?;
    tx.exec_batch(
        "INSERT INTO application_settings (setting_key, setting_value) VALUES (?, ?)",
        m.settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str())),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth;

    #[test]
    fn insert_sql_shape() {
        let sql = insert_sql(2);
        assert!(sql.starts_with("INSERT INTO citizen (id,state,assembly_no,"));
        assert_eq!(sql.matches('?').count(), 38);
        let c = synth::generate_ward(&synth::RollSpec::new("Karnataka", "150", 1, 1), 1).remove(0);
        let mut p = Vec::new();
        push_params(&c, &mut p);
        assert_eq!(p.len(), CITIZEN_COLUMNS.len());
    }

    #[test]
    fn rejects_odd_database_names() {
        let opts = Opts::from_url("mysql://root@127.0.0.1/bad`name").unwrap();
        assert!(database_name(&opts).is_err());
    }
}
