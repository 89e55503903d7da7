//! `wardgate-sample`: the sample backend's commands. `seed` loads synthetic voters into a
//! database (it truncates the tables it loads, so it lives here, never in the proxy's binary);
//! `serve` answers the legacy API over that database or over generated in-memory voters.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wardgate_sample::{OriginArgs, SeedOptions};

#[derive(Parser, Debug)]
#[command(
    name = "wardgate-sample",
    version,
    about = "The sample backend: a stand-in for the legacy SmartNeta API, for demos, tests and benches"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load deterministic synthetic voters and master data into MariaDB/MySQL (truncates them first).
    Seed(SeedOptions),
    /// Serve the legacy API over MariaDB, or over generated voters with --memory.
    Serve(OriginArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wardgate-sample: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Seed(args) => {
                let r = wardgate_sample::seed_with(&args).await?;
                println!(
                    "seeded {} rows ({} wards, {} booths, {:?} serials) of {}/{} into `{}` in {:.2}s ({:.0} rows/s)",
                    r.rows, r.wards, r.booths, r.serials, r.state, r.assembly, r.database,
                    r.elapsed.as_secs_f64(), r.rows_per_sec
                );
                Ok(())
            }
            Command::Serve(args) => wardgate_sample::run(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardgate-sample: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_sample::Serials;

    fn parse(args: &[&str]) -> Command {
        let argv = std::iter::once("wardgate-sample").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn serials_flag_defaults_to_per_booth() {
        let Command::Seed(s) = parse(&["seed", "--wards", "3"]) else {
            panic!("not seed")
        };
        assert_eq!((s.roll.wards, s.roll.serials), (3, Serials::PerBooth));
        let Command::Seed(s) = parse(&["seed", "--serials", "ward-wide"]) else {
            panic!("not seed")
        };
        assert_eq!(s.roll.serials, Serials::WardWide);
        let Command::Serve(s) = parse(&["serve", "--memory", "--serials", "per-booth"]) else {
            panic!("not serve")
        };
        assert!(s.memory);
        assert_eq!(s.roll.serials, Serials::PerBooth);
        assert!(Cli::try_parse_from(["wardgate-sample", "seed", "--serials", "ward"]).is_err());
    }
}
