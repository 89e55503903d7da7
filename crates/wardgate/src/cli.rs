//! Command-line interface: subcommands and the flags that override the config file.
//!
//! Precedence, lowest first: config file (`--config`), environment `WARDGATE_*`, flags. clap
//! reads the environment for every flag, so env and flags share one definition here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{
    ByteSize, ClientIpHeader, Config, ConfigError, Dur, LogFormat, RateLimitFlag, ReplicaConnFlags,
    Secret, SendfileMode,
};

#[derive(Parser, Debug)]
#[command(
    name = "wardgate",
    version,
    about = "Edge read-cache and sync proxy for the SmartNeta voter app"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the public and admin listeners in front of the upstream.
    Serve(ServeArgs),
    /// Validate the configuration, print the effective config (secrets masked) and exit;
    /// with --probe, also compare one replica-built ward with the backend's.
    CheckConfig(CheckArgs),
    /// Run the sample backend and wardgate over generated in-memory data: nothing to install.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Fill Redis with ward snapshots ahead of time (idempotent, resumable).
    Warm(crate::warm::WarmArgs),
    /// Drop every cached copy, in Redis and in every running instance (after the election).
    Purge(crate::purge::PurgeArgs),
}

/// `wardgate demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Public listener of the demo wardgate (another free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener of the demo wardgate.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Wards of generated voters.
    #[arg(long, default_value_t = 20)]
    pub wards: u32,
    /// Voters per ward.
    #[arg(long, default_value_t = 2000)]
    pub voters_per_ward: u32,
}

/// `wardgate check-config`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Also build one ward from the read replica (`mysql_url`) and from the upstream and
    /// compare their rows' shapes: keys, value types and forms. Fails on a difference, naming
    /// the field and the `[replica]` setting that fixes it.
    #[arg(long)]
    pub probe: bool,
    /// The ward --probe compares, `state/assembly/ward` [default: replica.probe_ward].
    #[arg(long, requires = "probe")]
    pub probe_ward: Option<String>,
}

impl CheckArgs {
    /// The `--probe` comparison: the verdict as a line to print, or why it failed.
    pub async fn probe(&self, cfg: &Config) -> Result<String, String> {
        use crate::replica::shape::Verdict;
        let url = cfg
            .mysql_url
            .as_ref()
            .ok_or("--probe needs a read replica: set mysql_url (or --mysql-url)")?;
        let spelled = self.probe_ward.as_ref().or(cfg.replica.probe_ward.as_ref()).ok_or(
            "--probe needs a ward to compare: --probe-ward state/assembly/ward (or replica.probe_ward)",
        )?;
        let w = crate::cache::build::ward_key(spelled)
            .ok_or_else(|| format!("--probe-ward {spelled:?} is not state/assembly/ward"))?;
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let live = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone()));
        let upstream = crate::upstream::Upstream::new(cfg, live, metrics.clone())?;
        let max = cfg.replica.pool_max as usize;
        let replica = crate::replica::Replica::new(url.expose(), &cfg.replica, max, metrics)
            .map_err(|e| e.to_string())?;
        let format = cfg.replica.row_format();
        let verdict = crate::cache::probe::compare_ward(&upstream, &replica, &w, format, 1)
            .await
            .map_err(|e| format!("probe of {w}: {e}"))?;
        match verdict {
            Verdict::Same { rows } => Ok(format!(
                "probe of {w}: replica rows are shaped as the backend's ({rows} rows compared)"
            )),
            Verdict::Differs(m) => Err(format!("probe of {w}: {m}")),
            Verdict::Inconclusive(why) => Err(format!("probe of {w}: inconclusive: {why}")),
        }
    }
}

/// Every `serve` setting that may be given as a flag (or `WARDGATE_*` variable).
#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file (see config/wardgate.toml).
    #[arg(long, env = "WARDGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Public listener [default: 0.0.0.0:8080].
    #[arg(long, env = "WARDGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin listener: /healthz, /readyz, /metrics, /admin/* [default: 127.0.0.1:9090].
    #[arg(long, env = "WARDGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Upstream (legacy backend) base URL [default: http://127.0.0.1:8585].
    #[arg(long, env = "WARDGATE_UPSTREAM")]
    pub upstream: Option<String>,
    /// PEM CA bundle for an https upstream (instead of the system roots).
    #[arg(long, env = "WARDGATE_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Redis URL for the shared L2 cache (`rediss://` for TLS; a Cluster's seed nodes
    /// separated by commas); unset = L1 only.
    #[arg(long, env = "WARDGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// PEM CA bundle trusted for `rediss://` (instead of the system roots).
    #[arg(long, env = "WARDGATE_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// The Redis URL names a Redis Cluster.
    #[arg(long, env = "WARDGATE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Prefix of every Redis key [default: wardgate].
    #[arg(long, env = "WARDGATE_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// MySQL read replica URL: build ward snapshots from it instead of the upstream.
    #[arg(long, env = "WARDGATE_MYSQL_URL", hide_env_values = true)]
    pub mysql_url: Option<String>,
    #[command(flatten)]
    pub replica: ReplicaConnFlags,
    /// L1 bound, e.g. 2GiB.
    #[arg(long, env = "WARDGATE_L1_MAX_BYTES")]
    pub l1_max_bytes: Option<ByteSize>,
    /// Largest page size; larger asks are capped [default: 1000].
    #[arg(long, env = "WARDGATE_MAX_PAGE_SIZE")]
    pub max_page_size: Option<u32>,
    /// Refuse unpaginated reads with 400.
    #[arg(long, env = "WARDGATE_REQUIRE_PAGINATION", num_args = 0..=1, default_missing_value = "true")]
    pub require_pagination: Option<bool>,
    /// Accept wardNo=-1 (whole assembly), served from the assembly's ward snapshots.
    #[arg(long, env = "WARDGATE_ALLOW_ASSEMBLY_WIDE", num_args = 0..=1, default_missing_value = "true")]
    pub allow_assembly_wide: Option<bool>,
    /// Snapshot max age before background renewal, e.g. 5m.
    #[arg(long, env = "WARDGATE_SNAPSHOT_MAX_AGE")]
    pub snapshot_max_age: Option<Dur>,
    /// How long past max age old copies are served while one renewal runs, e.g. 1h.
    #[arg(long, env = "WARDGATE_MAX_STALE")]
    pub max_stale: Option<Dur>,
    /// How long copies are kept in Redis, e.g. 48h.
    #[arg(long, env = "WARDGATE_RETENTION")]
    pub retention: Option<Dur>,
    /// The oldest copy served while the upstream fails, e.g. 48h [default: the retention].
    #[arg(long, env = "WARDGATE_STALE_IF_ERROR")]
    pub stale_if_error: Option<Dur>,
    /// Clock skew allowed between phones and wardgate, e.g. 2m.
    #[arg(long, env = "WARDGATE_CLOCK_SKEW")]
    pub clock_skew: Option<Dur>,
    /// Delta overlap; default snapshot max age + max stale + clock skew.
    #[arg(long, env = "WARDGATE_DELTA_OVERLAP")]
    pub delta_overlap: Option<Dur>,
    /// Longest wait for a running build before 503, e.g. 15s.
    #[arg(long, env = "WARDGATE_MISS_WAIT")]
    pub miss_wait: Option<Dur>,
    /// Largest sync POST body, e.g. 2MiB.
    #[arg(long, env = "WARDGATE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<ByteSize>,
    /// Largest request head, e.g. 16KiB.
    #[arg(long, env = "WARDGATE_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<ByteSize>,
    /// Concurrent client connections.
    #[arg(long, env = "WARDGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Concurrent upstream requests; beyond it (and the queue) 503.
    #[arg(long, env = "WARDGATE_UPSTREAM_MAX_INFLIGHT")]
    pub upstream_max_inflight: Option<u32>,
    /// Requests that may queue for an upstream slot.
    #[arg(long, env = "WARDGATE_MAX_QUEUED_UPSTREAM")]
    pub max_queued_upstream: Option<u32>,
    /// Time to receive a request head, from its first bytes (slowloris guard).
    #[arg(long, env = "WARDGATE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<Dur>,
    /// Time to receive a request body.
    #[arg(long, env = "WARDGATE_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<Dur>,
    /// Time a connection may move no bytes (idle keep-alive, stalled client).
    #[arg(long, env = "WARDGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<Dur>,
    /// Upstream connect timeout.
    #[arg(long, env = "WARDGATE_UPSTREAM_CONNECT_TIMEOUT")]
    pub upstream_connect_timeout: Option<Dur>,
    /// Upstream response-head timeout.
    #[arg(long, env = "WARDGATE_UPSTREAM_TIMEOUT")]
    pub upstream_timeout: Option<Dur>,
    /// Per-client quota, repeatable: CLASS=RATE/s[:BURST], CLASS in downloads, master, writes, passthrough.
    #[arg(long = "rate-limit", value_name = "CLASS=RATE/s[:BURST]")]
    pub rate_limit: Vec<RateLimitFlag>,
    /// Header keying the limiter when present (device/user token).
    #[arg(long, env = "WARDGATE_RATE_LIMIT_KEY_HEADER")]
    pub rate_limit_key_header: Option<String>,
    /// Peers allowed to tell the client's address in --client-ip-header, comma-separated CIDRs.
    #[arg(long, env = "WARDGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// The one header the trusted load balancer sets with the client's address [default: x-forwarded-for].
    #[arg(long, env = "WARDGATE_CLIENT_IP_HEADER", value_enum)]
    pub client_ip_header: Option<ClientIpHeader>,
    /// Every address's ceiling over all its devices, times each class's quota [default: 4].
    #[arg(long, env = "WARDGATE_RATE_LIMIT_ADDRESS_CEILING")]
    pub rate_limit_address_ceiling: Option<f64>,
    /// PEM certificate chain: serve HTTPS.
    #[arg(long, env = "WARDGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WARDGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// HTTPS on a port of its own; the public --listen stays plain HTTP.
    #[arg(long, env = "WARDGATE_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// How often the certificate files are compared with the pair in force (0s = off) [default: 30s].
    #[arg(long, env = "WARDGATE_TLS_RELOAD_EVERY")]
    pub tls_reload_every: Option<Dur>,
    /// After SIGTERM, keep serving this long while /readyz answers 503.
    #[arg(long, env = "WARDGATE_DRAIN_GRACE")]
    pub drain_grace: Option<Dur>,
    /// Then give in-flight requests this long.
    #[arg(long, env = "WARDGATE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<Dur>,
    /// Not ready until this percent of --warm-targets wards is cached.
    #[arg(long, env = "WARDGATE_READY_MIN_WARM")]
    pub ready_min_warm: Option<u8>,
    /// state,assembly[,ward] lines for --ready-min-warm.
    #[arg(long, env = "WARDGATE_WARM_TARGETS")]
    pub warm_targets: Option<PathBuf>,
    /// Async worker threads serving requests (0 = one per core).
    #[arg(long, env = "WARDGATE_WORKERS")]
    pub workers: Option<usize>,
    /// Threads of the build runtime, where misses' builds do their I/O (0 = one per core).
    #[arg(long, env = "WARDGATE_BUILD_THREADS")]
    pub build_threads: Option<usize>,
    /// How cached answers are sent: by sendfile from sealed memory files (on), copied (off),
    /// or whichever trials show to cost this process less (auto).
    #[arg(long, env = "WARDGATE_SENDFILE", value_enum, num_args = 0..=1, default_missing_value = "on")]
    pub sendfile: Option<SendfileMode>,
    /// Serving workers take the real-time class during cold work: builds, budget lookups (needs CAP_SYS_NICE).
    #[arg(long, env = "WARDGATE_REALTIME_WHILE_COLD", num_args = 0..=1, default_missing_value = "true")]
    pub realtime_while_cold: Option<bool>,
    /// Log format.
    #[arg(long, env = "WARDGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Share (0.0-1.0) of requests that get an access-log line.
    #[arg(long, env = "WARDGATE_ACCESS_LOG_SAMPLE")]
    pub access_log_sample: Option<f64>,
    /// Log lines held for the writer at most; past it lines are dropped and counted.
    #[arg(long, env = "WARDGATE_LOG_BUFFER_LINES")]
    pub log_buffer_lines: Option<u32>,
}

macro_rules! set {
    ($flag:expr => $field:expr) => {
        if let Some(v) = $flag.clone() {
            $field = v;
        }
    };
    ($flag:expr => some $field:expr) => {
        if let Some(v) = $flag.clone() {
            $field = Some(v);
        }
    };
}

impl ServeArgs {
    /// The effective config: file, then env and flags on top, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(p) => Config::from_file(p)?,
            None => Config::default(),
        };
        self.apply(&mut c);
        c.validate()?;
        Ok(c)
    }

    fn apply(&self, c: &mut Config) {
        set!(self.listen => c.listen);
        set!(self.admin_listen => c.admin_listen);
        set!(self.upstream => c.upstream);
        set!(self.upstream_ca => some c.upstream_ca);
        if let Some(u) = &self.redis_url {
            c.redis_url = (!u.is_empty()).then(|| Secret(u.clone()));
        }
        set!(self.redis_ca => some c.redis_ca);
        c.redis_cluster |= self.redis_cluster;
        set!(self.redis_prefix => c.redis_prefix);
        if let Some(u) = &self.mysql_url {
            c.mysql_url = (!u.is_empty()).then(|| Secret(u.clone()));
        }
        self.replica.apply(&mut c.replica);
        // The admin token comes from the environment only: flags are visible in `ps`.
        if let Ok(t) = std::env::var("WARDGATE_ADMIN_TOKEN") {
            c.admin_token = (!t.is_empty()).then_some(Secret(t));
        }
        set!(self.l1_max_bytes => c.cache.l1_max_bytes);
        set!(self.max_page_size => c.citizens.max_page_size);
        set!(self.require_pagination => c.citizens.require_pagination);
        set!(self.allow_assembly_wide => c.citizens.allow_assembly_wide);
        set!(self.snapshot_max_age => c.cache.snapshot_max_age);
        set!(self.max_stale => c.cache.max_stale);
        set!(self.retention => c.cache.retention);
        set!(self.stale_if_error => some c.cache.stale_if_error);
        set!(self.clock_skew => c.cache.clock_skew);
        set!(self.delta_overlap => some c.cache.delta_overlap);
        set!(self.miss_wait => c.cache.miss_wait);
        set!(self.max_body_bytes => c.limits.max_body_bytes);
        set!(self.max_header_bytes => c.limits.max_header_bytes);
        set!(self.max_connections => c.limits.max_connections);
        set!(self.upstream_max_inflight => c.limits.upstream_max_inflight);
        set!(self.max_queued_upstream => c.limits.max_queued_upstream);
        set!(self.header_read_timeout => c.limits.header_read_timeout);
        set!(self.body_read_timeout => c.limits.body_read_timeout);
        set!(self.idle_timeout => c.limits.idle_timeout);
        set!(self.upstream_connect_timeout => c.limits.upstream_connect_timeout);
        set!(self.upstream_timeout => c.limits.upstream_timeout);
        for f in &self.rate_limit {
            c.rate_limit.set_quota(f.class, f.quota);
        }
        set!(self.rate_limit_key_header => some c.rate_limit.key_header);
        set!(self.trusted_proxies => c.rate_limit.trusted_proxies);
        set!(self.client_ip_header => c.rate_limit.client_ip_header);
        set!(self.rate_limit_address_ceiling => c.rate_limit.address_ceiling);
        set!(self.tls_cert => some c.tls.cert);
        set!(self.tls_key => some c.tls.key);
        set!(self.tls_listen => some c.tls.listen);
        set!(self.tls_reload_every => c.tls.reload_every);
        set!(self.drain_grace => c.drain.grace);
        set!(self.shutdown_timeout => c.drain.shutdown_timeout);
        set!(self.ready_min_warm => c.ready.min_warm_percent);
        set!(self.warm_targets => some c.ready.warm_targets);
        set!(self.log_format => c.log.format);
        set!(self.access_log_sample => c.log.access_log_sample);
        set!(self.log_buffer_lines => c.log.buffer_lines);
        set!(self.workers => c.runtime.workers);
        set!(self.build_threads => c.runtime.build_threads);
        set!(self.sendfile => c.runtime.sendfile);
        set!(self.realtime_while_cold => c.runtime.realtime_while_cold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.toml");
        std::fs::write(
            &p,
            "[citizens]\nmax_page_size = 500\n[cache]\nsnapshot_max_age = \"10m\"\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "wardgate",
            "serve",
            "--config",
            p.to_str().unwrap(),
            "--max-page-size",
            "200",
            "--rate-limit",
            "downloads=2/s:10",
            "--require-pagination",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let c = args.load().unwrap();
        assert_eq!(c.citizens.max_page_size, 200);
        assert!(c.citizens.require_pagination);
        assert_eq!(
            c.cache.snapshot_max_age.0,
            std::time::Duration::from_secs(600)
        );
        assert_eq!(c.rate_limit.downloads.burst, 10);
    }

    #[test]
    fn replica_flags_set_the_replica_section() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["replica".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        let cli = Cli::try_parse_from([
            "wardgate",
            "serve",
            "--mysql-url",
            "mysql://ro@replica/sampark",
            "--replica-tls",
            "required",
            "--replica-ca",
            ca.to_str().unwrap(),
            "--replica-query-timeout",
            "5s",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let c = args.load().unwrap();
        assert_eq!(c.replica.tls, crate::config::ReplicaTls::Required);
        assert_eq!(c.replica.ca_file.as_deref(), Some(ca.as_path()));
        assert_eq!(c.replica.query_timeout.0, std::time::Duration::from_secs(5));
    }
}
