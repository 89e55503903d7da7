//! Assembles the stages into a running instance: shared state, listeners, reload and drain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::cache::l2::L2;
use crate::cache::topology::RedisTarget;
use crate::cache::{Builder, Cache};
use crate::config::{Config, Live, SendfileMode};
use crate::limit::Limiter;
use crate::metrics::Metrics;
use crate::params::WardKey;
use crate::proxy::Proxy;
use crate::replica::Replica;
use crate::shared::Shared;
use crate::upstream::Upstream;
use crate::{accept, admin};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How cached answers reach the socket (`runtime.sendfile`): sealed and sent by `sendfile`,
/// copied, or whichever costs this machine less (`wardgate_sealed::SendPath::Auto`). Set
/// before any answer is cached. Process-wide (the sealing budget is): in production one server
/// runs per process; where tests start several in one process, the last started decides.
fn send_answers_by(mode: SendfileMode) {
    wardgate_sealed::set_send_path(mode.into());
    tracing::info!(
        sealed_answers_max = wardgate_sealed::fd_budget(),
        "cached answers sent by {}",
        match mode {
            SendfileMode::Auto => "sendfile or copying, whichever costs less (trials every 30 s)",
            SendfileMode::On => "sendfile",
            SendfileMode::Off => "copying",
        }
    );
}

/// A serving instance.
pub struct Running {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The TLS listener's address, when `tls.listen` gives it one of its own.
    pub tls_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    limiter: Arc<ArcSwap<Limiter>>,
    /// The acceptor of the listener that speaks TLS (`tls.listen`, else the public one).
    tls: Arc<accept::Tls>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// One line of a targets file: a whole assembly, or one ward of it (`state,assembly[,ward]`).
pub type Target = (String, String, Option<String>);

/// Reads a targets file (`wardgate warm --targets`, `ready.warm_targets`): `state,assembly[,ward]`
/// lines, blank lines and `#` comments ignored; errors name the file and line.
pub fn read_targets(path: &std::path::Path) -> Result<Vec<Target>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        match f.as_slice() {
            [s, a] => out.push((s.to_string(), a.to_string(), None)),
            [s, a, w] => out.push((s.to_string(), a.to_string(), Some(w.to_string()))),
            _ => {
                return Err(format!(
                    "{}:{}: expected state,assembly[,ward]",
                    path.display(),
                    n + 1
                ))
            }
        }
    }
    Ok(out)
}

/// The wards a targets file names (readiness counts the wards it can name; whole-assembly
/// lines are skipped here).
pub fn read_ward_targets(path: &std::path::Path) -> Result<Vec<WardKey>, String> {
    read_targets(path)?
        .into_iter()
        .filter_map(|(s, a, w)| Some((s, a, w?)))
        .map(|(s, a, w)| {
            WardKey::parse(&s, &a, &w).map_err(|e| format!("{}: {s},{a},{w}: {e}", path.display()))
        })
        .collect()
}

/// The stages every request shares: metrics, upstream, Redis, replica, the cache over them.
fn stages(cfg: &Config) -> Result<Shared, StartError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| StartError::Setup(format!("{what}: {e}"));
    let live: Live = Arc::new(ArcSwap::from_pointee(cfg.clone()));
    let metrics = Arc::new(Metrics::new());
    let upstream =
        Arc::new(Upstream::new(cfg, live.clone(), metrics.clone()).map_err(StartError::Setup)?);
    let redis = match &cfg.redis_url {
        Some(url) => Some(
            RedisTarget::new(url.expose(), cfg.redis_ca.as_deref(), cfg.redis_cluster)
                .map_err(|e| setup("redis_url", &e))?,
        ),
        None => None,
    };
    let l2 = redis
        .as_ref()
        .map(|t| L2::start(t, &cfg.redis_prefix, metrics.clone()));
    let replica = match &cfg.mysql_url {
        Some(url) => Some(
            Replica::new(
                url.expose(),
                &cfg.replica,
                cfg.replica.pool_max as usize,
                metrics.clone(),
            )
            .map_err(|e| setup("mysql_url", &e))?,
        ),
        None => None,
    };
    let builder = Builder::new(
        upstream.clone(),
        replica.clone(),
        live.clone(),
        metrics.clone(),
    );
    let cache = Cache::new(l2.clone(), builder, live.clone(), metrics.clone());
    if let Some(replica) = replica {
        cache.watch_changes(replica);
    }
    if let (Some(l2), Some(target)) = (&l2, &redis) {
        cache.follow_watermarks(l2, target);
    }
    let targets = match &cfg.ready.warm_targets {
        Some(p) => read_ward_targets(p).map_err(StartError::Setup)?,
        None => Vec::new(),
    };
    Ok(Shared {
        trusted: ArcSwap::from_pointee(cfg.rate_limit.trusted_nets()),
        live,
        config_generation: AtomicU64::new(1),
        config_loaded_at: AtomicI64::new(crate::time::EpochMs::now().0),
        metrics,
        upstream,
        cache,
        draining: AtomicBool::new(false),
        warm_targets: ArcSwap::from_pointee(targets),
        cors: crate::cors::Cors::new(l2),
        budget: Default::default(),
    })
}

/// The bound listeners and the addresses they got.
struct Listeners {
    public: (TcpListener, SocketAddr),
    admin: (TcpListener, SocketAddr),
    tls: Option<(TcpListener, SocketAddr)>,
}

/// Binds the public, admin and (with `tls.listen`) TLS listeners.
fn bind_all(cfg: &Config) -> Result<Listeners, StartError> {
    let bind = |addr: SocketAddr| {
        let err = |source| StartError::Bind { addr, source };
        let l = accept::bind(addr).map_err(err)?;
        let local = l.local_addr().map_err(err)?;
        Ok::<_, StartError>((l, local))
    };
    Ok(Listeners {
        public: bind(cfg.listen)?,
        admin: bind(cfg.admin_listen)?,
        tls: cfg.tls.listen.map(bind).transpose()?,
    })
}

/// Builds the shared state and binds the listeners. Config must already be validated.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    crate::background::start_pool();
    send_answers_by(cfg.runtime.sendfile);
    let shared = Arc::new(stages(&cfg)?);
    let limiter = Arc::new(ArcSwap::from_pointee(Limiter::new(
        &cfg.rate_limit,
        &shared.metrics,
    )));
    crate::limit::spawn_sweeper(limiter.clone());
    let tls = Arc::new(accept::Tls::load(&cfg).map_err(StartError::Setup)?);
    let Listeners {
        public: (public, public_addr),
        admin: (admin_l, admin_addr),
        tls: tls_l,
    } = bind_all(&cfg)?;
    let tls_addr = tls_l.as_ref().map(|(_, a)| *a);

    let (stop, stop_rx) = watch::channel(false);
    let proxy = Arc::new(Proxy {
        shared: shared.clone(),
        limiter: limiter.clone(),
    });
    // One connection bound for the process, shared by the public listeners.
    let connections = Arc::new(Semaphore::new(cfg.limits.max_connections as usize));
    // With a TLS port of its own, the public port stays plain HTTP whatever `[tls]` says.
    let public_tls = match tls_l {
        Some(_) => Arc::new(accept::Tls::plain()),
        None => tls.clone(),
    };
    let serve = |l, tls| accept::serve(l, proxy.clone(), tls, connections.clone(), stop_rx.clone());
    let mut tasks = vec![
        tokio::spawn(serve(public, public_tls)),
        tokio::spawn(admin::serve(admin_l, shared.clone(), stop_rx.clone())),
        tokio::spawn(accept::watch_certs(
            tls.clone(),
            shared.live.clone(),
            shared.metrics.clone(),
            stop_rx.clone(),
        )),
    ];
    if let Some((l, _)) = tls_l {
        tasks.push(tokio::spawn(serve(l, tls.clone())));
    }
    tracing::info!(%public_addr, %admin_addr, tls_addr = ?tls_addr, upstream = %cfg.upstream, redis = cfg.redis_url.is_some(), replica = cfg.mysql_url.is_some(), tls = tls.is_on(), "wardgate serving");
    Ok(Running {
        public_addr,
        admin_addr,
        tls_addr,
        shared,
        limiter,
        tls,
        stop,
        tasks,
    })
}

impl Running {
    /// Applies a re-read config: reloadable settings swap atomically; restart-only ones are
    /// named in the log and kept as they were.
    pub fn reload(&self, mut new: Config) {
        let old = self.shared.live.load_full();
        let ignored = old.restart_only_changes(&new);
        if !ignored.is_empty() {
            tracing::warn!(settings = ?ignored, "reload: these settings need a restart; keeping their running values");
        }
        // Keep restart-only settings as they run now.
        new.listen = old.listen;
        new.tls.listen = old.tls.listen;
        new.admin_listen = old.admin_listen;
        new.upstream = old.upstream.clone();
        new.upstream_ca = old.upstream_ca.clone();
        new.redis_url = old.redis_url.clone();
        new.redis_ca = old.redis_ca.clone();
        new.redis_cluster = old.redis_cluster;
        new.redis_prefix = old.redis_prefix.clone();
        new.mysql_url = old.mysql_url.clone();
        new.replica.tls = old.replica.tls;
        new.replica.ca_file = old.replica.ca_file.clone();
        new.replica.query_timeout = old.replica.query_timeout;
        new.limits.max_header_bytes = old.limits.max_header_bytes;
        new.limits.max_connections = old.limits.max_connections;
        new.limits.header_read_timeout = old.limits.header_read_timeout;
        new.limits.idle_timeout = old.limits.idle_timeout;
        new.limits.upstream_connect_timeout = old.limits.upstream_connect_timeout;
        new.log.format = old.log.format;

        self.reload_tls(&new);
        if !self.limiter.load().same_settings(&new.rate_limit) {
            let limiter = Limiter::new(&new.rate_limit, &self.shared.metrics);
            self.limiter.store(Arc::new(limiter));
        }
        if let Some(p) = &new.ready.warm_targets {
            match read_ward_targets(p) {
                Ok(t) => self.shared.warm_targets.store(Arc::new(t)),
                Err(e) => tracing::error!(error = %e, "reload: warm targets not loaded"),
            }
        }
        self.shared
            .trusted
            .store(Arc::new(new.rate_limit.trusted_nets()));
        self.shared.upstream.reload(&new);
        self.shared.live.store(Arc::new(new));
        let generation = self.shared.config_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let now = crate::time::EpochMs::now().0;
        self.shared.config_loaded_at.store(now, Ordering::SeqCst);
        tracing::info!(generation, "configuration reloaded");
    }

    /// SIGHUP's part for TLS: the certificate files are read again, changed or not (a bad pair
    /// is logged by `Tls::reload` and the one in force kept).
    fn reload_tls(&self, new: &Config) {
        if new.tls.cert.is_some() {
            self.tls.reload(new, true, &self.shared.metrics);
        } else if self.tls_addr.is_some() {
            // The TLS port stays open until a restart: it never turns into plain HTTP.
            tracing::error!("reload: `tls.listen` is serving and needs `tls.cert` and `tls.key`; keeping the certificate in force");
        } else {
            self.tls.turn_off();
        }
    }

    /// Marks the instance as draining: `/readyz` answers 503 from now on.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        self.shared.metrics.ready.set(0);
    }

    /// Graceful stop: not ready at once, keep serving for `drain.grace` (the load balancer
    /// notices), close the listeners, then let in-flight requests finish.
    pub async fn drain(self) {
        self.begin_drain();
        let grace = self.shared.live.load().drain.grace.0;
        tracing::info!("draining: /readyz answers 503; serving for {grace:?} more");
        tokio::time::sleep(grace).await;
        self.stop_now().await;
    }

    /// Closes the listeners and waits for in-flight requests (bounded by `shutdown_timeout`).
    pub async fn stop_now(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        tracing::info!("stopped");
    }
}
