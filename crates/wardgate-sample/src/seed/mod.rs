//! `seed`: creates the database and schema, then (re)loads one synthetic assembly fast and reproducibly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Pool;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tracing::info;

use crate::synth::{self, RollSpec, Serials};
use crate::voter::Citizen;
use crate::{mysql, OriginError};

mod load;

pub use load::{create_database, create_schema};

/// Default database URL of the demo and tests.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/wardgate";

/// Everything `seed` takes: the database, the roll to load, the insert batch. These are the
/// arguments of `wardgate-sample seed`.
#[derive(clap::Args, Debug, Clone)]
pub struct SeedOptions {
    /// MySQL/MariaDB URL; the database in its path is created if missing. Read from
    /// `WARDGATE_SAMPLE_MYSQL_URL`, never from the proxy's `WARDGATE_MYSQL_URL`: on an ops box
    /// that one names the real replica, and `seed` truncates the tables it loads.
    #[arg(long, env = "WARDGATE_SAMPLE_MYSQL_URL", default_value = DEFAULT_MYSQL_URL)]
    pub mysql_url: String,
    #[command(flatten)]
    pub roll: RollSpec,
    /// Rows per multi-row INSERT (19 placeholders each; at most 3000 to stay under the
    /// protocol's 65,535 placeholders per statement).
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
}

/// [`SeedOptions`] with the default serial shape (per booth), as plain fields: code that
/// builds it as a struct literal (the proxy's test fixtures) keeps compiling as the roll's
/// options grow.
#[derive(Debug, Clone)]
pub struct SeedArgs {
    pub mysql_url: String,
    pub state: String,
    pub assembly: String,
    pub wards: u32,
    pub voters_per_ward: u32,
    pub batch: usize,
}

impl From<&SeedArgs> for SeedOptions {
    fn from(a: &SeedArgs) -> Self {
        SeedOptions {
            mysql_url: a.mysql_url.clone(),
            roll: RollSpec::new(&a.state, &a.assembly, a.wards, a.voters_per_ward),
            batch: a.batch,
        }
    }
}

/// What `seed` loaded and how fast.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub database: String,
    pub state: String,
    pub assembly: String,
    pub wards: u32,
    pub serials: Serials,
    pub booths: u32,
    pub rows: u64,
    pub elapsed: Duration,
    pub rows_per_sec: f64,
}

/// Connections inserting concurrently. Two keep MariaDB busy while the other connection's
/// batch is on the wire; more only contend for this 2-core machine's CPU.
const INSERT_CONNECTIONS: usize = 2;

fn validate(opts: &SeedOptions) -> Result<(), OriginError> {
    opts.roll.validate().map_err(OriginError::Invalid)?;
    if !(1..=3000).contains(&opts.batch) {
        return Err(OriginError::Invalid("--batch: 1..=3000".into()));
    }
    Ok(())
}

/// [`seed_with`] the default serial shape.
pub async fn seed(args: &SeedArgs) -> Result<SeedReport, OriginError> {
    seed_with(&args.into()).await
}

/// Loads the synthetic assembly described by `opts` (see the module doc). Idempotent: the
/// assembly's previous citizens and ward/booth rows are replaced.
pub async fn seed_with(opts: &SeedOptions) -> Result<SeedReport, OriginError> {
    validate(opts)?;
    let database = load::create_database(&opts.mysql_url).await?;
    let pool = mysql::pool(&opts.mysql_url)?;
    let result = seed_into(&pool, opts, database).await;
    pool.disconnect().await?;
    result
}

async fn seed_into(
    pool: &Pool,
    opts: &SeedOptions,
    database: String,
) -> Result<SeedReport, OriginError> {
    let roll = &opts.roll;
    load::create_schema(pool).await?;
    let master = synth::master_data(roll);
    load::load_master(pool, &master).await?;
    load::clear_citizens(pool, &roll.state, &roll.assembly).await?;

    let total = u64::from(roll.wards) * u64::from(roll.voters_per_ward);
    info!(database, state = %roll.state, assembly = %roll.assembly, wards = roll.wards, serials = ?roll.serials, rows = total, "seeding citizens");
    let started = Instant::now();
    let progress = Arc::new(Progress::new(total, started));
    load_citizens(pool, opts, &progress).await?;

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
        state: roll.state.clone(),
        assembly: roll.assembly.clone(),
        wards: roll.wards,
        serials: roll.serials,
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
    opts: &SeedOptions,
    progress: &Arc<Progress>,
) -> Result<(), OriginError> {
    let (tx, rx) = mpsc::channel::<Vec<Citizen>>(2);
    let generator = spawn_generator(opts.roll.clone(), tx);
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..INSERT_CONNECTIONS)
        .map(|_| spawn_inserter(pool.clone(), rx.clone(), progress.clone(), opts.batch))
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
fn spawn_generator(roll: RollSpec, tx: mpsc::Sender<Vec<Citizen>>) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        for w in 1..=roll.wards {
            if tx.blocking_send(synth::generate_ward(&roll, w)).is_err() {
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
        let ok = SeedOptions {
            mysql_url: DEFAULT_MYSQL_URL.into(),
            roll: RollSpec::default(),
            batch: 2000,
        };
        assert!(validate(&ok).is_ok());
        let with = |change: fn(&mut RollSpec)| {
            let mut o = ok.clone();
            change(&mut o.roll);
            o
        };
        for bad in [
            with(|r| r.state = "K'; DROP".into()),
            with(|r| r.assembly = "x".into()),
            with(|r| r.wards = 0),
            with(|r| r.wards = 1000),
            with(|r| r.voters_per_ward = 0),
            with(|r| (r.wards, r.voters_per_ward) = (999, 20_000)),
            SeedOptions {
                batch: 4000,
                ..ok.clone()
            },
        ] {
            assert!(validate(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn literal_args_mean_per_booth_serials() {
        let args = SeedArgs {
            mysql_url: DEFAULT_MYSQL_URL.into(),
            state: "Karnataka".into(),
            assembly: "151".into(),
            wards: 2,
            voters_per_ward: 30,
            batch: 7,
        };
        let opts = SeedOptions::from(&args);
        assert_eq!(opts.roll, RollSpec::new("Karnataka", "151", 2, 30));
        assert_eq!(opts.roll.serials, Serials::PerBooth);
        assert_eq!((opts.mysql_url, opts.batch), (args.mysql_url, 7));
    }
}
