//! `wardgate warm`: fills Redis with ward snapshots ahead of election day.
//!
//! Idempotent and resumable: a ward whose copy in Redis is still fresh is skipped unless
//! `--force`, so an interrupted run is finished by running it again. Wards are built with
//! bounded concurrency; from the read replica each ward's rows are streamed (memory is bounded
//! by a ward, not by the assembly).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::Args;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;

use crate::cache::l2::L2;
use crate::cache::{now_ms, CacheKey, Entry};
use crate::config::{Config, Dur, Secret};
use crate::metrics::Metrics;
use crate::params::WardKey;
use crate::upstream::Upstream;

/// `wardgate warm`.
#[derive(Args, Debug, Clone)]
pub struct WarmArgs {
    /// State to warm (repeatable; pairs with --assembly in order, or one state for all).
    #[arg(long)]
    pub state: Vec<String>,
    /// Assembly to warm (repeatable).
    #[arg(long)]
    pub assembly: Vec<String>,
    /// Wards of the assemblies, e.g. `1-120` or `1,4,9`; default: every ward the replica has.
    #[arg(long)]
    pub wards: Option<String>,
    /// File of `state,assembly[,ward]` lines (instead of --state/--assembly).
    #[arg(long)]
    pub targets: Option<PathBuf>,
    /// Build from the MySQL read replica (rows streamed).
    #[arg(long, env = "WARDGATE_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: Option<String>,
    /// Build from the upstream instead (when no --mysql-url is given).
    #[arg(
        long,
        env = "WARDGATE_UPSTREAM",
        default_value = "http://127.0.0.1:8585"
    )]
    pub upstream: String,
    /// Redis to fill.
    #[arg(long, env = "WARDGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of the Redis keys (the same as the serving instances').
    #[arg(long, env = "WARDGATE_REDIS_PREFIX", default_value = "wardgate")]
    pub redis_prefix: String,
    /// Wards built at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Rebuild wards even when Redis holds a fresh copy.
    #[arg(long)]
    pub force: bool,
    /// Max age of snapshots (a copy younger than this is fresh and skipped).
    #[arg(long, env = "WARDGATE_SNAPSHOT_MAX_AGE", default_value = "5m")]
    pub snapshot_max_age: Dur,
    /// How long past max age the serving instances may still use the copy; sets the Redis TTL.
    #[arg(long, env = "WARDGATE_MAX_STALE", default_value = "1h")]
    pub max_stale: Dur,
}

/// What a warm run did.
#[derive(Debug, Default)]
pub struct WarmReport {
    pub built: u64,
    pub skipped: u64,
    pub rows: u64,
    pub failed: Vec<(WardKey, String)>,
    pub elapsed: Duration,
}

impl WarmReport {
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn parse_wards(spec: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (
                    a.parse().map_err(|_| format!("bad ward range `{part}`"))?,
                    b.parse().map_err(|_| format!("bad ward range `{part}`"))?,
                );
                if b < a || b - a > 100_000 {
                    return Err(format!("bad ward range `{part}`"));
                }
                out.extend((a..=b).map(|w| w.to_string()));
            }
            None => out.push(part.to_string()),
        }
    }
    Ok(out)
}

/// Every ward of an assembly the replica holds.
async fn replica_wards(
    pool: &mysql_async::Pool,
    state: &str,
    assembly: &str,
) -> Result<Vec<String>, String> {
    let mut c = pool.get_conn().await.map_err(|e| e.to_string())?;
    c.exec("SELECT DISTINCT ward_no FROM citizen WHERE state = ? AND assembly_no = ? ORDER BY ward_no + 0", (state, assembly))
        .await
        .map_err(|e| e.to_string())
}

/// Resolves the ward list from the arguments, validating every name.
async fn targets(
    args: &WarmArgs,
    pool: Option<&mysql_async::Pool>,
) -> Result<Vec<WardKey>, String> {
    let mut assemblies: Vec<(String, String, Option<String>)> = Vec::new();
    if let Some(p) = &args.targets {
        assemblies.extend(crate::server::read_targets(p)?);
    }
    if !args.assembly.is_empty() {
        if args.state.is_empty()
            || (args.state.len() != 1 && args.state.len() != args.assembly.len())
        {
            return Err(
                "give one --state for all assemblies, or one --state per --assembly".into(),
            );
        }
        for (i, a) in args.assembly.iter().enumerate() {
            let s = args
                .state
                .get(i)
                .or(args.state.first())
                .cloned()
                .unwrap_or_default();
            assemblies.push((s, a.clone(), None));
        }
    }
    if assemblies.is_empty() {
        return Err("nothing to warm: give --state and --assembly, or --targets FILE".into());
    }
    let ranged = match &args.wards {
        Some(spec) => Some(parse_wards(spec)?),
        None => None,
    };
    let mut out = Vec::new();
    for (s, a, w) in assemblies {
        let wards = match (w, &ranged, pool) {
            (Some(w), _, _) => vec![w],
            (None, Some(r), _) => r.clone(),
            (None, None, Some(pool)) => replica_wards(pool, &s, &a).await?,
            (None, None, None) => return Err(format!("{s}/{a}: name the wards (--wards 1-100, or ward lines in --targets) when warming from the upstream")),
        };
        for w in wards {
            out.push(WardKey::parse(&s, &a, &w).map_err(|e| format!("{s}/{a}/{w}: {e}"))?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

pub async fn run(args: &WarmArgs) -> Result<WarmReport, String> {
    let cfg = Config {
        upstream: args.upstream.clone(),
        mysql_url: args.mysql_url.clone().map(Secret),
        redis_url: Some(Secret(args.redis_url.clone())),
        redis_prefix: args.redis_prefix.clone(),
        ..Config::default()
    };
    cfg.validate().map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(ArcSwap::from_pointee(cfg.clone()));
    let upstream = Arc::new(Upstream::new(&cfg, live, metrics.clone())?);
    let l2 = L2::start(&args.redis_url, &args.redis_prefix, metrics).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !l2.ping().await {
        if Instant::now() > deadline {
            return Err("Redis is not reachable".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pool = match &args.mysql_url {
        Some(u) => Some(crate::replica::pool(u).map_err(|e| e.to_string())?),
        None => None,
    };
    let wards = targets(args, pool.as_ref()).await?;
    tracing::info!(
        wards = wards.len(),
        source = if pool.is_some() {
            "replica"
        } else {
            "upstream"
        },
        "warming"
    );

    let start = Instant::now();
    let rows = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(wards.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} wards  {msg}  ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    // Off a terminal: a log line every 5 s instead of a bar.
    let ticker = {
        let (rows, done, total) = (rows.clone(), done.clone(), wards.len());
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(5));
            t.tick().await;
            loop {
                t.tick().await;
                let r = rows.load(Ordering::Relaxed);
                tracing::info!(
                    done = done.load(Ordering::Relaxed),
                    total,
                    rows = r,
                    rows_per_sec = (r as f64 / start.elapsed().as_secs_f64()) as u64,
                    "warming"
                );
            }
        })
    };
    let max_age = args.snapshot_max_age.0;
    let ttl = max_age + args.max_stale.0;
    let results: Vec<(WardKey, Result<Option<usize>, String>)> = futures_util::stream::iter(wards)
        .map(|w| {
            let (upstream, l2, rows, done, bar) = (
                upstream.clone(),
                l2.clone(),
                rows.clone(),
                done.clone(),
                bar.clone(),
            );
            async move {
                let key = CacheKey::Ward(w.clone());
                let r = async {
                    if !args.force {
                        if let Some(e) = l2.get(&key).await {
                            if now_ms() - e.built_at_ms() <= max_age.as_millis() as i64 {
                                return Ok(None);
                            }
                        }
                    }
                    let entry = upstream.build(&key).await.map_err(|e| e.to_string())?;
                    let n = match &entry {
                        Entry::Snapshot(s) => s.rows(),
                        Entry::Blob(_) => 0,
                    };
                    l2.put(&key, &entry, ttl).await;
                    Ok(Some(n))
                }
                .await;
                if let Ok(Some(n)) = r {
                    rows.fetch_add(n as u64, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                if let Some(b) = &bar {
                    let r = rows.load(Ordering::Relaxed);
                    b.set_message(format!(
                        "{r} rows, {:.0} rows/s",
                        r as f64 / start.elapsed().as_secs_f64()
                    ));
                    b.inc(1);
                }
                (w, r)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    ticker.abort();
    if let Some(b) = bar {
        b.finish();
    }
    let mut report = WarmReport {
        elapsed: start.elapsed(),
        rows: rows.load(Ordering::Relaxed),
        ..WarmReport::default()
    };
    for (w, r) in results {
        match r {
            Ok(Some(_)) => report.built += 1,
            Ok(None) => report.skipped += 1,
            Err(e) => report.failed.push((w, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ward_specs_parse() {
        assert_eq!(parse_wards("1-3,7").unwrap(), ["1", "2", "3", "7"]);
        assert!(parse_wards("5-1").is_err());
        assert!(parse_wards("a-b").is_err());
    }
}
