//! The one builder every cache fill goes through: a gate permit, a timeout, then the source.
//!
//! **Invariant:** every build, from the upstream or from the read replica, holds a permit of
//! the upstream's gate for as long as it reads the source, and ends within its time bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::HeaderValue;

use bytes::Bytes;

use super::key::{CacheKey, Entry};
use super::probe::{self, Trust};
use crate::blob::Blob;
use crate::config::Live;
use crate::gate::Permit;
use crate::legacy::RowFormat;
use crate::metrics::{FieldLabels, Metrics, Outcome, SourceLabels};
use crate::params::{CitizensQuery, WardKey};
use crate::replica::{Replica, ReplicaError};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::time::EpochMs;
use crate::upstream::{Upstream, UpstreamError};

/// Why a build produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("the backend is at its concurrency limit")]
    Shed,
    #[error("the build did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the build task failed: {0}")]
    Task(String),
    #[error("{backend}; the read replica could not be used either: {replica}")]
    BothFailed {
        backend: Box<BuildError>,
        replica: String,
    },
}

/// Where entries come from.
pub struct Builder {
    upstream: Arc<Upstream>,
    /// Wards are read from here when set (`mysql_url`), blobs always from the upstream.
    replica: Option<Replica>,
    live: Live,
    metrics: Arc<Metrics>,
    /// Whether replica-built rows may be served (the shape probe).
    trust: Arc<Trust>,
    /// The `Content-Type` of the backend's last ward answer: cached answers carry the backend's
    /// own (charset included), and the contract's until a ward was read from the backend.
    content_type: ArcSwap<HeaderValue>,
}

/// What the contract says the backend writes on citizens answers (Spring's
/// `APPLICATION_JSON_UTF8_VALUE`).
pub const BACKEND_JSON: &str = "application/json;charset=UTF-8";

impl Builder {
    pub fn new(
        upstream: Arc<Upstream>,
        replica: Option<Replica>,
        live: Live,
        metrics: Arc<Metrics>,
    ) -> Builder {
        Builder {
            upstream,
            replica,
            live,
            metrics,
            trust: Arc::default(),
            content_type: ArcSwap::from_pointee(HeaderValue::from_static(BACKEND_JSON)),
        }
    }

    /// The `Content-Type` of citizens answers, as the backend last wrote it.
    pub fn content_type(&self) -> HeaderValue {
        HeaderValue::clone(&self.content_type.load())
    }

    /// Builds the entry for `key`. A build waits for a gate slot like any backend request,
    /// then has twice the upstream timeout: one for the answer's head, one for its body.
    /// Builds `key`, whose copy must have seen every write acknowledged up to `floor`.
    pub async fn build(&self, key: &CacheKey, floor: EpochMs) -> Result<Entry, BuildError> {
        let (max_queued, timeout) = {
            let cfg = self.live.load();
            (
                cfg.limits.max_queued_upstream as usize,
                cfg.limits.upstream_timeout.0,
            )
        };
        let permit = match self.upstream.gate().enter(max_queued).await {
            Ok(p) => p,
            Err(_) => {
                self.upstream.outcome(Outcome::shed);
                return Err(BuildError::Shed);
            }
        };
        // Taken before the source is read: a snapshot never claims to be newer than its rows.
        let built_at = EpochMs::now();
        let within = timeout * 2;
        tokio::time::timeout(within, self.read(key, built_at, floor, permit))
            .await
            .map_err(|_| BuildError::Timeout(within))?
    }

    async fn read(
        &self,
        key: &CacheKey,
        at: EpochMs,
        floor: EpochMs,
        permit: Permit,
    ) -> Result<Entry, BuildError> {
        match key {
            CacheKey::Ward(w) => {
                let snap = self.ward(w, at, floor, permit).await?;
                Ok(Entry::Snapshot(Arc::new(snap)))
            }
            CacheKey::Blob(pq) => {
                self.count("upstream");
                let got = self.upstream.fetch(pq, permit).await?.ok()?;
                let ct = got
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/json")
                    .to_string();
                let body = got.body;
                let blob = off_workers(move || Blob::new(body, ct, at)).await?;
                Ok(Entry::Blob(Arc::new(blob)))
            }
        }
    }

    fn phase(&self, phase: &'static str, started: Instant) {
        self.metrics.build_phase_took(phase, started.elapsed());
    }

    fn count(&self, source: &'static str) {
        let labels = SourceLabels { source };
        self.metrics.builds.get_or_create(&labels).inc();
    }

    /// The shape probe's state (`cache::probe`).
    pub fn trust(&self) -> &Arc<Trust> {
        &self.trust
    }

    /// Whether a replica is configured.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The replica, if configured (the change watch reads it too).
    pub fn replica(&self) -> Option<&Replica> {
        self.replica.as_ref()
    }

    /// With a replica: whether wards are built from it, and why (for `/readyz`).
    pub fn replica_state(&self) -> Option<String> {
        self.replica.as_ref().map(|_| self.trust.describe())
    }

    /// A ward from the replica while its rows are known to be shaped as the backend's (see
    /// `cache::probe`) and it has caught up with `floor`, else from the backend; a comparison
    /// that is due runs beside it.
    ///
    /// **Invariant:** a replica-built copy claims to be no newer than the replica's rows: its
    /// build time is the read's start less the replica's measured lag, so a write acknowledged
    /// after that is never taken as seen.
    async fn ward(
        &self,
        w: &WardKey,
        at: EpochMs,
        floor: EpochMs,
        permit: Permit,
    ) -> Result<Snapshot, BuildError> {
        let Some(replica) = &self.replica else {
            return Ok(self.ward_from_upstream(w, at, permit).await?.0);
        };
        let cfg = self.live.load_full();
        let format = cfg.replica.row_format();
        let probing = self.trust.claim(format, cfg.replica.probe_every.0);
        let probe_ward = cfg.replica.probe_ward.as_deref().and_then(ward_key);
        let beside = match probe_ward {
            Some(pw) if probing && pw != *w => {
                self.spawn_probe(pw, None, format);
                false
            }
            _ => probing,
        };
        let caught_up = match replica.lag().await {
            Some(lag) if !beside && self.trust.replica_ok(format) => {
                Some(EpochMs(at.0 - lag.as_millis() as i64)).filter(|as_of| *as_of >= floor)
            }
            _ => None,
        };
        if let Some(as_of) = caught_up {
            self.count("replica");
            let started = Instant::now();
            let snap = replica.build_ward(w, as_of, format, &permit).await?;
            self.phase("replica", started);
            return Ok(snap);
        }
        match self.ward_from_upstream(w, at, permit).await {
            Ok((snap, body)) => {
                if beside {
                    self.spawn_probe(w.clone(), Some(body), format);
                }
                Ok(snap)
            }
            Err(e) => {
                if beside {
                    self.trust.release();
                }
                Err(with_replica_cause(e, replica))
            }
        }
    }

    /// Compares `w` as the backend wrote it (`backend`, or read now) with the replica's rows,
    /// in the background, and records the verdict.
    fn spawn_probe(&self, w: WardKey, backend: Option<Bytes>, format: RowFormat) {
        let Some(replica) = self.replica.clone() else {
            return self.trust.release();
        };
        let (upstream, trust, metrics) = (
            self.upstream.clone(),
            self.trust.clone(),
            self.metrics.clone(),
        );
        let max_queued = self.live.load().limits.max_queued_upstream as usize;
        tokio::spawn(async move {
            let verdict = match &backend {
                Some(b) => {
                    probe::against_replica(&upstream, &replica, &w, b, format, max_queued).await
                }
                None => probe::compare_ward(&upstream, &replica, &w, format, max_queued).await,
            };
            match verdict {
                Ok(v) => trust.record(format, v, &metrics),
                Err(e) => {
                    tracing::warn!(ward = %w, error = %e, "replica shape probe failed; will try again");
                    trust.release();
                }
            }
        });
    }

    /// A ward read from the backend, and the backend's answer it was built from.
    async fn ward_from_upstream(
        &self,
        w: &WardKey,
        at: EpochMs,
        permit: Permit,
    ) -> Result<(Snapshot, Bytes), BuildError> {
        self.count("upstream");
        let pq = probe::ward_path(w);
        let started = Instant::now();
        let got = self.upstream.fetch(&pq, permit).await?.ok()?;
        self.phase("fetch", started);
        if let Some(ct) = got.headers.get(http::header::CONTENT_TYPE) {
            if **self.content_type.load() != ct {
                self.content_type.store(Arc::new(ct.clone()));
            }
        }
        let body = got.body;
        let (key, local) = (w.clone(), self.live.load().citizens.date_offset());
        let kept = body.clone();
        let started = Instant::now();
        let (snap, phases) =
            off_workers(move || Snapshot::from_backend_json_timed(key, &kept, at, local)).await??;
        self.phase("chunk", started);
        self.metrics.build_phase_took("parse", phases.parse);
        self.metrics.build_phase_took("compress", phases.compress);
        let unindexed = snap.unindexed();
        for (field, lacking) in [
            ("booth_no", unindexed.booth_no),
            ("modifieddate", unindexed.modifieddate),
        ] {
            if lacking {
                // The ward serves whole and by page; reads filtering on `field` are forwarded.
                tracing::warn!(ward = %w, field, "backend rows carry a {field} wardgate cannot read");
                let labels = FieldLabels { field };
                self.metrics.unindexed_builds.get_or_create(&labels).inc();
            }
        }
        Ok((snap, body))
    }
}

/// A ward the backend failed to give, naming too why the replica was not used when its last
/// operation failed: with both sources down, the 503 says what is wrong with each. A client
/// error of the backend's is its answer, passed on as it is.
fn with_replica_cause(e: BuildError, replica: &Replica) -> BuildError {
    if let BuildError::Upstream(UpstreamError::Status { status, .. }) = &e {
        if status.is_client_error() {
            return e;
        }
    }
    match replica.last_error() {
        Some(cause) => BuildError::BothFailed {
            backend: Box::new(e),
            replica: cause,
        },
        None => e,
    }
}

/// `state/assembly/ward` (`replica.probe_ward`) as a ward key, in the contract's formats.
pub fn ward_key(s: &str) -> Option<WardKey> {
    let (state, assembly, ward) = crate::config::split_ward(s)?;
    let q = format!("state={state}&assemblyNo={assembly}&wardNo={ward}");
    let q = CitizensQuery::parse(&q, &crate::config::CitizensConfig::default()).ok()?;
    q.ward().cloned()
}

/// Runs CPU-heavy work (compressing ~4 MB takes tens of ms) off the async workers, below
/// serving's priority (`background`).
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BuildError> {
    crate::background::run_build(f)
        .await
        .map_err(|e| BuildError::Task(e.to_string()))
}
