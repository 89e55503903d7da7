//! The sample backend: a stand-in for the legacy Spring Boot backend, faithful to the legacy API
//! contract and to the shapes of real rolls. Used by `wardgate demo`, the tests and the benches;
//! never part of the proxy's request path.
#![forbid(unsafe_code)]

pub mod answer;
pub mod datetime;
pub mod decode;
pub mod master;
pub mod memory;
pub mod mysql;
pub mod numeric;
pub mod params;
mod routes;
pub mod seed;
pub mod server;
pub mod sql;
pub mod store;
pub mod synth;
pub mod voter;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use tracing::info;

pub use memory::MemoryStore;
pub use seed::{seed, seed_with, SeedArgs, SeedOptions, DEFAULT_MYSQL_URL};
pub use server::{serve, OriginOptions};
pub use store::Store;
pub use synth::{RollSpec, Serials};

/// Errors of the origin and the seed loader.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("invalid MySQL URL: {0}")]
    Url(#[from] mysql_async::UrlError),
    #[error("MySQL: {0}")]
    MySql(#[from] mysql_async::Error),
    #[error("decoding a row: {0}")]
    Row(#[from] decode::VoterError),
    #[error("decoding a row: {0}")]
    Decode(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("background task failed: {0}")]
    Task(String),
}

/// Arguments of `wardgate-sample serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct OriginArgs {
    /// MySQL/MariaDB URL of the seeded database (env `WARDGATE_SAMPLE_MYSQL_URL`, apart from
    /// the proxy's `WARDGATE_MYSQL_URL`).
    #[arg(long, env = "WARDGATE_SAMPLE_MYSQL_URL", default_value = DEFAULT_MYSQL_URL)]
    pub mysql_url: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8585")]
    pub listen: SocketAddr,
    /// Extra delay per request in milliseconds (to play a slow backend).
    #[arg(long, default_value_t = 0)]
    pub latency: u64,
    /// Serve generated data from memory instead of MariaDB (no database needed).
    #[arg(long)]
    pub memory: bool,
    /// How rows' `modifieddate` is written: epoch ms, or ISO-8601 text as Spring Boot 2.0
    /// writes dates by default (`2026-11-24T10:15:59.297+0000`).
    #[arg(long, value_enum, default_value_t = voter::DateForm::EpochMs)]
    pub dates: voter::DateForm,
    /// How cross-origin requests are answered (a Spring `CorsConfiguration`): `*`, the origin
    /// echoed with credentials, or no CORS headers at all.
    #[arg(long, value_enum, default_value_t = answer::CorsMode::Any)]
    pub cors: answer::CorsMode,
    /// With --memory: the roll to generate.
    #[command(flatten, next_help_heading = "Generated roll (with --memory)")]
    pub roll: RollSpec,
}

impl OriginOptions {
    pub fn from_args(args: &OriginArgs) -> Self {
        OriginOptions {
            latency: Duration::from_millis(args.latency),
            dates: args.dates,
            cors: args.cors,
            ..OriginOptions::default()
        }
    }
}

/// Current time as epoch ms (the `modifieddate` of updates).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Builds the store the arguments ask for: MariaDB (checked reachable) or generated memory.
pub async fn open_store(args: &OriginArgs) -> Result<Store, OriginError> {
    if args.memory {
        args.roll.validate().map_err(OriginError::Invalid)?;
        let m = MemoryStore::generate(&args.roll);
        info!(rows = m.len(), serials = ?args.roll.serials, "memory store generated");
        return Ok(Store::Memory(Arc::new(m)));
    }
    let pool = mysql::pool(&args.mysql_url)?;
    // Fail at start-up, not on the first request, when the database is unreachable.
    pool.get_conn().await?.ping().await?;
    Ok(Store::MySql(pool))
}

/// Binds `--listen` and serves until the process ends.
pub async fn run(args: &OriginArgs) -> Result<(), OriginError> {
    let store = open_store(args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    info!(addr = %listener.local_addr()?, memory = args.memory, "sample origin listening");
    serve(listener, store, OriginOptions::from_args(args)).await?;
    Ok(())
}
