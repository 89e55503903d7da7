//! `seed`: creates the database and schema, then (re)loads one synthetic assembly fast and reproducibly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, TxOpts, Value};
use tokio::sync::{mpsc, Mutex};
use tracing::info;

use crate::master::MasterData;
use crate::params::{valid_assembly, valid_state};
use crate::voter::{datetime_value, Citizen, CITIZEN_COLUMNS, SCHEMA_SQL};
use crate::{mysql, synth, OriginError};

/// Default database URL of the demo and tests.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/wardgate";

/// Arguments of `wardgate-sample seed`.
#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    /// MySQL/MariaDB URL; the database in its path is created if missing.
    #[arg(long, env = "WARDGATE_MYSQL_URL", default_value = DEFAULT_MYSQL_URL)]
    pub mysql_url: String,
    /// State name stored in every row.
    #[arg(long, default_value = "Karnataka")]
    pub state: String,
    /// Assembly constituency number.
    #[arg(long, default_value = "150")]
    pub assembly: String,
    /// Number of wards (1..=999).
    #[arg(long, default_value_t = 10)]
    pub wards: u32,
    /// Voters in each ward.
    #[arg(long, default_value_t = 1000)]
    pub voters_per_ward: u32,
    /// Rows per multi-row INSERT (19 placeholders each; at most 3000 to stay under the
    /// protocol's 65,535 placeholders per statement).
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
}

/// What `seed` loaded and how fast.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub database: String,
    pub state: String,
    pub assembly: String,
    pub wards: u32,
    pub booths: u32,
    pub rows: u64,
    pub elapsed: Duration,
    pub rows_per_sec: f64,
}

/// Connections inserting concurrently. Two keep MariaDB busy while the other connection's
/// batch is on the wire; more only contend for this 2-core machine's CPU.
const INSERT_CONNECTIONS: usize = 2;

fn validate(args: &SeedArgs) -> Result<(), OriginError> {
    let bad = |m: &str| Err(OriginError::Invalid(m.to_string()));
    if !valid_state(&args.state) {
        return bad("--state: letters, spaces, '.', '-', at most 64 characters");
    }
    if !valid_assembly(&args.assembly) {
        return bad("--assembly: 1 to 6 digits");
    }
    if !(1..=999).contains(&args.wards) {
        return bad("--wards: 1..=999");
    }
    if args.voters_per_ward == 0 {
        return bad("--voters-per-ward: at least 1");
    }
    if i64::from(args.wards) * i64::from(args.voters_per_ward) >= synth::ID_STRIDE {
        return bad("--wards x --voters-per-ward must stay below 10,000,000 per assembly");
    }
    if !(1..=3000).contains(&args.batch) {
        return bad("--batch: 1..=3000");
    }
    Ok(())
}

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

/// Loads the synthetic assembly described by `args` (see the module doc). Idempotent: the
/// assembly's previous citizens and ward/booth rows are replaced.
pub async fn seed(args: &SeedArgs) -> Result<SeedReport, OriginError> {
    validate(args)?;
    let database = create_database(&args.mysql_url).await?;
    let pool = mysql::pool(&args.mysql_url)?;
    let result = seed_into(&pool, args, database).await;
    pool.disconnect().await?;
    result
}

async fn seed_into(
    pool: &Pool,
    args: &SeedArgs,
    database: String,
) -> Result<SeedReport, OriginError> {
    create_schema(pool).await?;
    let master = synth::master_data(
        &args.state,
        &args.assembly,
        args.wards,
        args.voters_per_ward,
    );
    load_master(pool, &master).await?;
    clear_citizens(pool, &args.state, &args.assembly).await?;

    let total = u64::from(args.wards) * u64::from(args.voters_per_ward);
    info!(database, state = %args.state, assembly = %args.assembly, wards = args.wards, rows = total, "seeding citizens");
    let started = Instant::now();

    // Generation runs on a blocking thread, a ward ahead of the inserters, so row building
    // overlaps the database's work instead of adding to it.
    let (tx, rx) = mpsc::channel::<Vec<Citizen>>(2);
    let gen_args = args.clone();
    let generator = tokio::task::spawn_blocking(move || {
        for w in 1..=gen_args.wards {
            let first = synth::ward_first_id(
                &gen_args.state,
                &gen_args.assembly,
                w,
                gen_args.voters_per_ward,
            );
            let rows = synth::generate_ward(
                &gen_args.state,
                &gen_args.assembly,
                w,
                gen_args.voters_per_ward,
                first,
            );
            if tx.blocking_send(rows).is_err() {
                // The inserters stopped (an error): stop generating.
                return;
            }
        }
    });

    let rx = Arc::new(Mutex::new(rx));
    let progress = Arc::new(Progress::new(total, started));
    let mut workers = Vec::with_capacity(INSERT_CONNECTIONS);
    for _ in 0..INSERT_CONNECTIONS {
        let (pool, rx, progress, batch) = (pool.clone(), rx.clone(), progress.clone(), args.batch);
        workers.push(tokio::spawn(async move {
            let mut conn = pool.get_conn().await?;
            loop {
                // Hold the lock only to take the next ward, not while inserting it.
                let next = rx.lock().await.recv().await;
                let Some(rows) = next else { break };
                insert_ward(&mut conn, &rows, batch).await?;
                progress.add(rows.len() as u64);
            }
            Ok::<(), OriginError>(())
        }));
    }
    let mut first_err = None;
    for w in workers {
        let r = w
            .await
            .map_err(|e| OriginError::Task(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = r {
            // Closing the channel stops the generator and the other worker promptly.
            rx.lock().await.close();
            first_err.get_or_insert(e);
        }
    }
    generator
        .await
        .map_err(|e| OriginError::Task(e.to_string()))?;
    if let Some(e) = first_err {
        return Err(e);
    }

    let elapsed = started.elapsed();
    let rows = progress.done();
    let rows_per_sec = rows as f64 / elapsed.as_secs_f64().max(1e-9);
    let booths = master
        .assemblies
        .iter()
        .flat_map(|(_, w)| w)
        .map(|w| w.booths.len() as u32)
        .sum();
    info!(
        rows,
        booths,
        secs = format!("{:.2}", elapsed.as_secs_f64()),
        rows_per_sec = rows_per_sec as u64,
        "seed done"
    );
    Ok(SeedReport {
        database,
        state: args.state.clone(),
        assembly: args.assembly.clone(),
        wards: args.wards,
        booths,
        rows,
        elapsed,
        rows_per_sec,
    })
}

struct Progress {
    total: u64,
    started: Instant,
    state: std::sync::Mutex<(u64, Instant)>,
}

impl Progress {
    fn new(total: u64, started: Instant) -> Self {
        Progress {
            total,
            started,
            state: std::sync::Mutex::new((0, started)),
        }
    }

    /// Counts rows and logs at most once a second.
    fn add(&self, n: u64) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += n;
        let now = Instant::now();
        if now.duration_since(g.1) >= Duration::from_secs(1) || g.0 == self.total {
            g.1 = now;
            let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
            info!(
                rows = g.0,
                total = self.total,
                rows_per_sec = (g.0 as f64 / secs) as u64,
                "seed progress"
            );
        }
    }

    fn done(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
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
async fn insert_ward(conn: &mut Conn, rows: &[Citizen], batch: usize) -> Result<(), OriginError> {
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
async fn clear_citizens(pool: &Pool, state: &str, assembly: &str) -> Result<(), OriginError> {
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
async fn load_master(pool: &Pool, m: &MasterData) -> Result<(), OriginError> {
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
    }
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
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_shape() {
        let sql = insert_sql(2);
        assert!(sql.starts_with("INSERT INTO citizen (id,state,assembly_no,"));
        assert_eq!(sql.matches('?').count(), 38);
        let c = synth::generate_ward("Karnataka", "150", 1, 1, 1).remove(0);
        let mut p = Vec::new();
        push_params(&c, &mut p);
        assert_eq!(p.len(), CITIZEN_COLUMNS.len());
    }

    #[test]
    fn validates_args() {
        let ok = SeedArgs {
            mysql_url: DEFAULT_MYSQL_URL.into(),
            state: "Karnataka".into(),
            assembly: "150".into(),
            wards: 10,
            voters_per_ward: 1000,
            batch: 2000,
        };
        assert!(validate(&ok).is_ok());
        for bad in [
            SeedArgs {
                state: "K'; DROP".into(),
                ..ok.clone()
            },
            SeedArgs {
                assembly: "x".into(),
                ..ok.clone()
            },
            SeedArgs {
                wards: 0,
                ..ok.clone()
            },
            SeedArgs {
                batch: 4000,
                ..ok.clone()
            },
            SeedArgs {
                wards: 999,
                voters_per_ward: 20_000,
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
        let opts = Opts::from_url("mysql://root@127.0.0.1/bad`name").unwrap();
        assert!(database_name(&opts).is_err());
    }
}
