//! `seed`: creates the database and schema, then (re)loads one synthetic assembly fast and reproducibly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Pool;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tracing::info;

use crate::params::{valid_assembly, valid_state};
use crate::voter::Citizen;
use crate::{mysql, synth, OriginError};

mod load;

pub use load::{create_database, create_schema};

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

/// Loads the synthetic assembly described by `args` (see the module doc). Idempotent: the
/// assembly's previous citizens and ward/booth rows are replaced.
pub async fn seed(args: &SeedArgs) -> Result<SeedReport, OriginError> {
    validate(args)?;
    let database = load::create_database(&args.mysql_url).await?;
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
    load::create_schema(pool).await?;
    let master = synth::master_data(
        &args.state,
        &args.assembly,
        args.wards,
        args.voters_per_ward,
    );
    load::load_master(pool, &master).await?;
    load::clear_citizens(pool, &args.state, &args.assembly).await?;

    let total = u64::from(args.wards) * u64::from(args.voters_per_ward);
    info!(database, state = %args.state, assembly = %args.assembly, wards = args.wards, rows = total, "seeding citizens");
    let started = Instant::now();
    let progress = Arc::new(Progress::new(total, started));
    load_citizens(pool, args, &progress).await?;

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

/// Generates and inserts every ward. Generation runs on a blocking thread, a ward ahead of the
/// inserters, so row building overlaps the database's work instead of adding to it.
async fn load_citizens(
    pool: &Pool,
    args: &SeedArgs,
    progress: &Arc<Progress>,
) -> Result<(), OriginError> {
    let (tx, rx) = mpsc::channel::<Vec<Citizen>>(2);
    let generator = spawn_generator(args.clone(), tx);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..INSERT_CONNECTIONS)
        .map(|_| spawn_inserter(pool.clone(), rx.clone(), progress.clone(), args.batch))
        .collect();
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
    first_err.map_or(Ok(()), Err)
}

/// Sends the wards' rows, one ward per message, until done or the inserters stop listening.
fn spawn_generator(args: SeedArgs, tx: mpsc::Sender<Vec<Citizen>>) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        for w in 1..=args.wards {
            let first = synth::ward_first_id(&args.state, &args.assembly, w, args.voters_per_ward);
            let rows =
                synth::generate_ward(&args.state, &args.assembly, w, args.voters_per_ward, first);
            if tx.blocking_send(rows).is_err() {
                // The inserters stopped (an error): stop generating.
                return;
            }
        }
    })
}

/// One connection inserting whole wards as they come.
fn spawn_inserter(
    pool: Pool,
    rx: Arc<Mutex<mpsc::Receiver<Vec<Citizen>>>>,
    progress: Arc<Progress>,
    batch: usize,
) -> JoinHandle<Result<(), OriginError>> {
    tokio::spawn(async move {
        let mut conn = pool.get_conn().await?;
        loop {
            // Hold the lock only to take the next ward, not while inserting it.
            let next = rx.lock().await.recv().await;
            let Some(rows) = next else { break };
            load::insert_ward(&mut conn, &rows, batch).await?;
            progress.add(rows.len() as u64);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
