//! wardgate's entry point. `serve` reads as the life of the process: configuration validated
//! before any port is bound, tracing, listeners, signals, drain.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use wardgate::cli::{CheckArgs, Cli, Command, ServeArgs};
use wardgate::config::{Config, LogFormat, RuntimeConfig};
use wardgate::logging;
use wardgate::server;

/// mimalloc's per-thread free lists: a hit allocates and frees a few dozen small objects
/// (request head, headers, the answer's head, the access line), and glibc's malloc spent
/// ~7% of a page hit's CPU on them.
#[global_allocator]
static ALLOC: wardgate_alloc::Allocator = wardgate_alloc::Allocator;

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve_process(args),
        Command::CheckConfig(args) => on_runtime(async move { check_config(&args).await }),
        #[cfg(feature = "demo")]
        Command::Demo(args) => tool(async move { wardgate::demo::run(&args).await }),
        Command::Purge(args) => tool(async move {
            let n = wardgate::purge::run(&args).await?;
            println!("purge: {n} Redis keys removed; running instances told to drop their copies");
            Ok(())
        }),
        Command::Warm(args) => tool(warm(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wardgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`: its configuration is read (and validated) first, because `[runtime]` sizes the
/// runtimes it then runs on.
fn serve_process(args: ServeArgs) -> Result<(), String> {
    let cfg = args.load().map_err(|e| e.to_string())?;
    let runtimes = Runtimes::start(Some(&cfg.runtime)).map_err(cannot_start)?;
    runtimes.serving.block_on(serve(args, cfg))
}

/// The other commands, on a runtime of tokio's defaults (their builds run on it too).
fn on_runtime(
    command: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), String> {
    let runtimes = Runtimes::start(None).map_err(cannot_start)?;
    runtimes.serving.block_on(command)
}

/// A tool command (`demo`, `purge`, `warm`): its logs in the human format, on a default runtime.
fn tool(command: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    on_runtime(async move {
        let _log = logging::init(LogFormat::Human, DEFAULT_BUFFER_LINES);
        command.await
    })
}

fn cannot_start(e: std::io::Error) -> String {
    format!("cannot start the runtime: {e}")
}

async fn warm(args: wardgate::warm::WarmArgs) -> Result<(), String> {
    let r = wardgate::warm::run(&args).await?;
    println!(
        "warm: {} wards built, {} already fresh, {} failed; {} rows in {:.1}s ({:.0} rows/s); {} bytes stored in Redis until {}",
        r.built, r.skipped, r.failed.len(), r.rows, r.elapsed.as_secs_f64(), r.rows_per_sec(),
        r.stored_bytes, r.until.to_jackson_iso()
    );
    if r.failed.is_empty() {
        return Ok(());
    }
    for (w, e) in &r.failed {
        eprintln!("warm: FAILED {w}: {e}");
    }
    let names: Vec<String> = r.failed.iter().map(|(w, _)| w.to_string()).collect();
    Err(format!(
        "{} ward(s) failed: {}",
        names.len(),
        names.join(" ")
    ))
}

/// Turns transparent huge pages off for this process. The allocator asks for them, and then
/// the first touch of each 2 MiB region is zeroed at once: when a cold storm opens a thousand
/// connections, their fresh buffers cost ~100 ms of page zeroing on the workers, and every hit
/// queued behind them waits that long (bench, hits beside the cold storm on a 2-core VM: p99
/// 88–640 ms with them, 34–177 ms without). Latency-bound servers (Redis among them) run
/// without them for this reason; sealed answers live in memfds, which never used them.
fn small_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "transparent huge pages stay on: a burst of new connections may stall");
    }
}

/// Lines queued for the log writer by the commands that take no config (`demo`, `warm`).
const DEFAULT_BUFFER_LINES: u32 = 65_536;

async fn check_config(args: &CheckArgs) -> Result<(), String> {
    let cfg = args.serve.load().map_err(|e| e.to_string())?;
    print!("{}", cfg.to_masked_toml());
    eprintln!("wardgate: configuration is valid");
    if args.probe {
        eprintln!("wardgate: {}", args.probe(&cfg).await?);
    }
    Ok(())
}

/// Task polls between two looks at the sockets on a serving worker (tokio's default: 61). A cold
/// storm's first requests arrive as a backlog of a thousand tasks; a hit that becomes readable
/// meanwhile is only queued when its worker next looks, so looking every few tasks lets it in
/// ahead of the storm's later arrivals (dev storm harness, hits beside the storm, 7 alternating
/// runs: p99 median 10.7 ms at 4, 17.2 ms at 61; page and full-ward hit throughput within the
/// run-to-run noise).
const SERVING_EVENT_INTERVAL: u32 = 4;

/// The serving runtime and, for `serve`, the build runtime beside it (`background`).
struct Runtimes {
    serving: tokio::runtime::Runtime,
    _builds: Option<tokio::runtime::Runtime>,
}

impl Runtimes {
    /// With `serve`'s `[runtime]`: its workers, and a build runtime that every build is
    /// spawned on. Other commands: tokio's defaults, builds on the one runtime.
    fn start(cfg: Option<&RuntimeConfig>) -> std::io::Result<Runtimes> {
        let mut serving = tokio::runtime::Builder::new_multi_thread();
        serving.enable_all().thread_name("wardgate-serve");
        let Some(cfg) = cfg else {
            return Ok(Runtimes {
                serving: serving.build()?,
                _builds: None,
            });
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let builds = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.build_threads_for(cores))
            .thread_name("wardgate-builds")
            // A build's buffers are freed on the worker that read them and on the job's
            // blocking thread, which may then sit idle: each hands them back when the builds
            // go quiet (`background::release_when_quiet`), or as it ends.
            .on_thread_park(wardgate::background::release_when_quiet)
            .thread_keep_alive(wardgate::background::JOB_THREAD_KEEP_ALIVE)
            .on_thread_stop(wardgate_alloc::release_freed)
            .enable_all()
            .build()?;
        wardgate::background::set_build_runtime(builds.handle().clone());
        serving
            .worker_threads(cfg.workers_for(cores))
            .event_interval(SERVING_EVENT_INTERVAL);
        if cfg.realtime_while_cold {
            // Only the workers park: the serving runtime's blocking threads keep their class.
            wardgate::cold::realtime_while_cold();
            serving
                .on_thread_park(wardgate::cold::follow_cold_work)
                .on_thread_unpark(wardgate::cold::follow_cold_work);
        }
        Ok(Runtimes {
            serving: serving.build()?,
            _builds: Some(builds),
        })
    }
}

async fn serve(args: ServeArgs, cfg: Config) -> Result<(), String> {
    // 1. Configuration: file < env < flags, validated before anything is bound (by
    //    `serve_process`, which sizes the runtimes from it).
    // 2. Logs, in the format the configuration asks for, written off the request path.
    let _log = logging::init(cfg.log.format, cfg.log.buffer_lines);
    // 3. Memory in small pages, descriptors for connections and sealed answers, then stages
    //    and listeners.
    small_pages();
    wardgate_sealed::raise_fd_limit();
    let running = server::start(cfg).await.map_err(|e| e.to_string())?;
    // 4. Signals: SIGHUP reloads, SIGTERM/SIGINT drain.
    let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = hup.recv() => match args.load() {
                Ok(new) => running.reload(new),
                Err(e) => tracing::error!(error = %e, "reload refused: the new configuration is invalid; keeping the current one"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // 5. Drain: not ready at once, serve through the grace period, then finish in-flight work.
    running.drain().await;
    Ok(())
}
