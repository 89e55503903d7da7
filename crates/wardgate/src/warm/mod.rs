//! `wardgate warm`: fills Redis with ward snapshots ahead of election day.
//!
//! Idempotent and resumable: a ward whose copy in Redis is still fresh is skipped unless
//! `--force`, so an interrupted run is finished by running it again. Wards are built with
//! bounded concurrency; from the read replica each ward's rows are streamed (memory is bounded
//! by a ward, not by the assembly).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use clap::Args;
use futures_util::StreamExt;

use crate::cache::l2::L2;
use crate::cache::probe;
use crate::cache::topology::RedisTarget;
use crate::cache::{Builder, CacheKey, Entry};
use crate::config::{Config, Dur, ReplicaConnFlags, Secret};
use crate::legacy::{BoolStyle, DateStyle, DecimalStyle, RowFormat};
use crate::metrics::Metrics;
use crate::params::WardKey;
use crate::replica::shape::Verdict;
use crate::replica::Replica;
use crate::snapshot::{FORMAT_VERSION, PREVIOUS_FORMAT_VERSION};
use crate::time::EpochMs;
use crate::upstream::Upstream;

mod progress;
use progress::Progress;

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
    #[command(flatten)]
    pub replica: ReplicaConnFlags,
    /// Build from the upstream instead (when no --mysql-url is given).
    #[arg(
        long,
        env = "WARDGATE_UPSTREAM",
        default_value = "http://127.0.0.1:8585"
    )]
    pub upstream: String,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Wards built at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Rebuild wards even when Redis holds a fresh copy.
    #[arg(long)]
    pub force: bool,
    /// Max age of snapshots (a copy younger than this is fresh and skipped).
    #[arg(long, env = "WARDGATE_SNAPSHOT_MAX_AGE", default_value = "5m")]
    pub snapshot_max_age: Dur,
    /// How long past max age the serving instances renew a copy in the background.
    #[arg(long, env = "WARDGATE_MAX_STALE", default_value = "1h")]
    pub max_stale: Dur,
    /// How long the warmed copies stay in Redis (their TTL): served HIT while fresh or while
    /// the change watch finds them unchanged, else renewed, and STALE while the backend is
    /// down.
    #[arg(long, env = "WARDGATE_RETENTION", default_value = "48h")]
    pub retention: Dur,
    /// Warm even when Redis would have to evict to hold it (else the warm refuses).
    #[arg(long)]
    pub allow_eviction: bool,
    /// Snapshot formats to write, comma-separated: this version's, and during a format
    /// rollout the previous one too, so that instances of both sides find every ward warm
    /// [default: this version's].
    #[arg(long, value_delimiter = ',')]
    pub formats: Vec<u16>,
    /// With --mysql-url: `DATETIME`s as the backend writes them (`[replica] dates`).
    #[arg(long, value_enum, default_value_t = DateStyle::default())]
    pub replica_dates: DateStyle,
    /// With --mysql-url: `TINYINT(1)` as the backend writes it (`[replica] booleans`).
    #[arg(long, value_enum, default_value_t = BoolStyle::default())]
    pub replica_booleans: BoolStyle,
    /// With --mysql-url: `DECIMAL`s as the backend writes them (`[replica] decimals`).
    #[arg(long, value_enum, default_value_t = DecimalStyle::default())]
    pub replica_decimals: DecimalStyle,
    /// With --mysql-url: warm without first comparing one replica-built ward with the
    /// backend's (for a backend that is down; the copies' shape is then unchecked).
    #[arg(long)]
    pub no_probe: bool,
}

impl WarmArgs {
    /// The formats to write, this version's first; refuses any this version cannot write.
    fn formats(&self) -> Result<Vec<u16>, String> {
        let mut out = vec![FORMAT_VERSION];
        for f in &self.formats {
            if *f != FORMAT_VERSION && *f != PREVIOUS_FORMAT_VERSION {
                return Err(format!(
                    "--formats: this wardgate writes snapshot formats {FORMAT_VERSION} and {PREVIOUS_FORMAT_VERSION}, not {f}"
                ));
            }
            if !out.contains(f) {
                out.push(*f);
            }
        }
        if !self.formats.is_empty() && !self.formats.contains(&FORMAT_VERSION) {
            out.remove(0);
        }
        Ok(out)
    }
}

/// What a warm run did.
#[derive(Debug, Default)]
pub struct WarmReport {
    /// Bytes stored in Redis by this warm, and until when they stay (their TTL).
    pub stored_bytes: u64,
    pub until: EpochMs,
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

/// Resolves the ward list from the arguments, validating every name.
async fn targets(args: &WarmArgs, replica: Option<&Replica>) -> Result<Vec<WardKey>, String> {
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
        let wards = match (w, &ranged, replica) {
            (Some(w), _, _) => vec![w],
            (None, Some(r), _) => r.clone(),
            (None, None, Some(replica)) => replica.wards(&s, &a).await.map_err(|e| e.to_string())?,
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

/// The replica the wards are read from (`--mysql-url`), if any: one connection per ward built
/// at once, and one for the listing and the probe.
fn replica(
    args: &WarmArgs,
    cfg: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Replica>, String> {
    let Some(u) = &args.mysql_url else {
        return Ok(None);
    };
    let max = args.concurrency.max(1) + 1;
    Replica::new(u, &cfg.replica, max, metrics.clone())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Warms every ward `args` names into Redis, `args.concurrency` at once (a ward whose copy
/// there is still fresh is skipped unless `--force`), and reports what was done.
pub async fn run(args: &WarmArgs) -> Result<WarmReport, String> {
    crate::background::start_pool();
    let cfg = warm_config(args)?;
    let metrics = Arc::new(Metrics::new());
    let live = Arc::new(ArcSwap::from_pointee(cfg.clone()));
    let upstream = Arc::new(Upstream::new(&cfg, live.clone(), metrics.clone())?);
    let l2 = args.redis.connect(metrics.clone()).await?;
    let replica = replica(args, &cfg, &metrics)?;
    let formats = args.formats()?;
    let wards = targets(args, replica.as_ref()).await?;
    let source = if replica.is_some() {
        "replica"
    } else {
        "upstream"
    };
    tracing::info!(wards = wards.len(), source, ?formats, "warming");
    let format = cfg.replica.row_format();
    let shape = ShapeCheck {
        checked: tokio::sync::OnceCell::new(),
        args,
        upstream: upstream.clone(),
        replica: replica.clone(),
        first: wards.iter().take(3).cloned().collect(),
        format,
    };
    let builder = Arc::new(Builder::new(upstream, replica, live, metrics));
    // `shape` compares before the first build (or, with --no-probe, takes the operator's word).
    builder.trust().assume(format);

    let fit = Fit {
        l2: &l2,
        wards: wards.len() as u64,
        allow_eviction: args.allow_eviction,
        checked: tokio::sync::OnceCell::new(),
        stored: AtomicU64::new(0),
    };
    let until = EpochMs(EpochMs::now().0 + args.ttl().as_millis() as i64);
    let progress = Progress::start(wards.len(), l2.clone(), source, until);
    let results: Vec<(WardKey, Result<Option<usize>, String>)> = futures_util::stream::iter(wards)
        .map(|w| {
            let (builder, l2, progress) = (builder.clone(), l2.clone(), &progress);
            let (formats, shape, fit) = (&formats, &shape, &fit);
            async move {
                let r = warm_one(&builder, &l2, &w, args, formats, shape, fit).await;
                progress.ward_done(&r);
                (w, r)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    // Ended either way: the progress says so before a refusal is returned.
    let mut report = progress.finish(results).await;
    for check in [shape.checked.get(), fit.checked.get()] {
        if let Some(Err(refused)) = check {
            return Err(refused.clone());
        }
    }
    report.stored_bytes = fit.stored.load(Ordering::Relaxed);
    report.until = until;
    Ok(report)
}

impl WarmArgs {
    /// The warmed copies' TTL in Redis: the retention, and never less than max age plus max
    /// stale (what serving instances use without the backend failing).
    fn ttl(&self) -> Duration {
        self.retention
            .0
            .max(self.snapshot_max_age.0 + self.max_stale.0)
    }
}

/// Whether the warm fits in Redis without evictions: measured on the first ward built,
/// projected over all of them, against `maxmemory`; checked once, before the first copy is
/// stored. Every warmed key carries a TTL, so under any evicting policy (`allkeys-*` and
/// `volatile-*` alike) a full Redis drops warmed wards: only `noeviction` keeps them.
struct Fit<'a> {
    l2: &'a L2,
    wards: u64,
    allow_eviction: bool,
    checked: tokio::sync::OnceCell<Result<(), String>>,
    /// Bytes of copies stored so far.
    stored: AtomicU64,
}

impl Fit<'_> {
    async fn ensure(&self, bytes: u64) -> Result<(), String> {
        let r = self.checked.get_or_init(|| self.check(bytes)).await.clone();
        if r.is_ok() {
            self.stored.fetch_add(bytes, Ordering::Relaxed);
        }
        r
    }

    async fn check(&self, per_ward: u64) -> Result<(), String> {
        let Some(m) = self.l2.memory().await else {
            tracing::warn!("cannot read Redis's memory settings; not checking that the warm fits");
            return Ok(());
        };
        let need = per_ward * self.wards;
        let evicting = m.policy != "noeviction";
        if evicting {
            tracing::warn!(policy = %m.policy, "Redis may evict warmed wards under pressure (maxmemory-policy {}): run it with noeviction and a maxmemory that holds the warm (docs/runbook.md, sizing)", m.policy);
        }
        let free = m.max.saturating_sub(m.used);
        tracing::info!(
            per_ward,
            need,
            used = m.used,
            maxmemory = m.max,
            "warm size projected"
        );
        if m.max == 0 || need <= free {
            return Ok(());
        }
        let why = format!(
            "the warm needs ~{need} bytes ({per_ward} per ward x {} wards) but Redis has {free} free of maxmemory {} ({}): {}",
            self.wards,
            m.max,
            m.policy,
            if evicting { "warmed wards would be evicted" } else { "writes would be refused" }
        );
        if self.allow_eviction {
            tracing::warn!("{why}; warming anyway (--allow-eviction)");
            return Ok(());
        }
        Err(format!(
            "{why}. Raise maxmemory (docs/runbook.md, sizing) or pass --allow-eviction"
        ))
    }
}

/// The configuration of the warm's own builder: its sources, and a backend gate as wide as
/// `--concurrency`, so that no ward waits behind the gate's queue.
/// Before a replica warm fills Redis for the whole fleet, once, before its first build: one
/// ward built both ways and compared. A mismatch refuses the warm, naming the field and the
/// flag that fixes it; a warm that finds every ward fresh builds nothing and compares nothing.
struct ShapeCheck<'a> {
    checked: tokio::sync::OnceCell<Result<(), String>>,
    args: &'a WarmArgs,
    upstream: Arc<Upstream>,
    replica: Option<Replica>,
    /// The wards tried, in turn, until one gives a verdict.
    first: Vec<WardKey>,
    format: RowFormat,
}

impl ShapeCheck<'_> {
    async fn ensure(&self) -> Result<(), String> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        let check = check_shape(self.args, &self.upstream, replica, &self.first, self.format);
        self.checked.get_or_init(|| check).await.clone()
    }
}

async fn check_shape(
    args: &WarmArgs,
    upstream: &Upstream,
    replica: &Replica,
    wards: &[WardKey],
    format: RowFormat,
) -> Result<(), String> {
    if args.no_probe {
        tracing::warn!("--no-probe: replica rows are not compared with the backend's");
        return Ok(());
    }
    for w in wards {
        let verdict = probe::compare_ward(upstream, replica, w, format, 1).await.map_err(|e| {
            format!("cannot compare the replica's rows with the backend's ({w}): {e}; --no-probe warms unchecked")
        })?;
        match verdict {
            Verdict::Same { rows } => {
                tracing::info!(ward = %w, rows, "replica rows are shaped as the backend's");
                return Ok(());
            }
            Verdict::Differs(m) => {
                return Err(format!(
                    "warm refused: the replica's rows differ from the backend's ({w}): {m} (warm flag --replica-{})",
                    m.setting.map_or("…".into(), |s| s.replace(" = ", " ").replace('"', ""))
                ));
            }
            Verdict::Inconclusive(why) => tracing::warn!(ward = %w, "{why}"),
        }
    }
    Err("warm refused: no ward to compare the replica's rows with the backend's (--no-probe warms unchecked)".into())
}

fn warm_config(args: &WarmArgs) -> Result<Config, String> {
    let mut cfg = Config {
        upstream: args.upstream.clone(),
        mysql_url: args.mysql_url.clone().map(Secret),
        redis_url: Some(Secret(args.redis.redis_url.clone())),
        redis_ca: args.redis.redis_ca.clone(),
        redis_cluster: args.redis.redis_cluster,
        redis_prefix: args.redis.redis_prefix.clone(),
        ..Config::default()
    };
    cfg.replica.dates = args.replica_dates;
    cfg.replica.booleans = args.replica_booleans;
    cfg.replica.decimals = args.replica_decimals;
    args.replica.apply(&mut cfg.replica);
    let concurrency = u32::try_from(args.concurrency.max(1)).unwrap_or(u32::MAX);
    cfg.limits.upstream_max_inflight = cfg.limits.upstream_max_inflight.max(concurrency);
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// The Redis a command-line tool (`warm`, `purge`) works on, named as the serving instances
/// name it.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis URL (`rediss://` for TLS; a Cluster's seed nodes separated by commas).
    #[arg(long, env = "WARDGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// PEM CA bundle trusted for `rediss://` (instead of the system roots).
    #[arg(long, env = "WARDGATE_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// The Redis URL names a Redis Cluster.
    #[arg(long, env = "WARDGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Prefix of the Redis keys (the same as the serving instances').
    #[arg(long, env = "WARDGATE_REDIS_PREFIX", default_value = "wardgate")]
    pub redis_prefix: String,
}

impl RedisArgs {
    /// Connected, or an error once Redis has not answered for 10 s.
    pub async fn connect(&self, metrics: Arc<Metrics>) -> Result<Arc<L2>, String> {
        let target = RedisTarget::new(
            &self.redis_url,
            self.redis_ca.as_deref(),
            self.redis_cluster,
        )?;
        let l2 = L2::start(&target, &self.redis_prefix, metrics);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l2.ping().await {
            if Instant::now() > deadline {
                return Err("Redis is not reachable".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(l2)
    }
}

/// Builds one ward into Redis, in every format asked for, unless each has a fresh copy there
/// (`--force` rebuilds); the rows built, or `None` when skipped.
async fn warm_one(
    builder: &Builder,
    l2: &L2,
    w: &WardKey,
    args: &WarmArgs,
    formats: &[u16],
    shape: &ShapeCheck<'_>,
    fit: &Fit<'_>,
) -> Result<Option<usize>, String> {
    let key = CacheKey::Ward(w.clone());
    let max_age = args.snapshot_max_age.0;
    if !args.force && all_fresh(l2, w, formats, max_age).await {
        return Ok(None);
    }
    shape.ensure().await?;
    let entry = builder
        .build(&key, EpochMs(i64::MIN))
        .await
        .map_err(|e| e.to_string())?;
    let Entry::Snapshot(snap) = &entry else {
        return Err(format!("{key} did not build as a ward"));
    };
    let ttl = args.ttl();
    let mut encoded = Some(snap.encode());
    let bytes = encoded.as_ref().map_or(0, Vec::len) as u64 * formats.len() as u64;
    fit.ensure(bytes).await?;
    for f in formats {
        if *f == FORMAT_VERSION {
            let data = encoded.take().unwrap_or_else(|| snap.encode());
            l2.put_root_encoded(snap, data, ttl).await;
        } else {
            let data = snap.encode_as(*f).map_err(|e| format!("{key}: {e}"))?;
            l2.put_ward_as(w, *f, data, ttl).await;
        }
    }
    Ok(Some(snap.rows()))
}

/// Whether Redis holds a copy of `w` younger than `max_age` in each of `formats`.
async fn all_fresh(l2: &L2, w: &WardKey, formats: &[u16], max_age: Duration) -> bool {
    for f in formats {
        match l2.get_ward(w, *f).await {
            Some(Some(e)) if e.built_at().within(max_age) => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_default_to_this_versions_and_refuse_unknown_ones() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            warm: WarmArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["warm", "--redis-url", "redis://x", "--state", "S"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().warm.formats()
        };
        assert_eq!(parse(&[]).unwrap(), [FORMAT_VERSION]);
        let both = format!("{FORMAT_VERSION},{PREVIOUS_FORMAT_VERSION}");
        assert_eq!(
            parse(&["--formats", &both]).unwrap(),
            [FORMAT_VERSION, PREVIOUS_FORMAT_VERSION]
        );
        let only_old = PREVIOUS_FORMAT_VERSION.to_string();
        assert_eq!(
            parse(&["--formats", &only_old]).unwrap(),
            [PREVIOUS_FORMAT_VERSION]
        );
        assert!(parse(&["--formats", "9"]).unwrap_err().contains("not 9"));
    }

    #[test]
    fn ward_specs_parse() {
        assert_eq!(parse_wards("1-3,7").unwrap(), ["1", "2", "3", "7"]);
        assert!(parse_wards("5-1").is_err());
        assert!(parse_wards("a-b").is_err());
    }
}
