//! The one builder every cache fill goes through: a gate permit, a timeout, then the source.
//!
//! **Invariant:** every build, from the upstream or from the read replica, holds a permit of
//! the upstream's gate for as long as it reads the source, and ends within its time bound.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;

use super::key::{CacheKey, Entry};
use crate::blob::Blob;
use crate::config::Live;
use crate::gate::Permit;
use crate::metrics::{FieldLabels, Metrics, Outcome, SourceLabels};
use crate::params::{CitizensQuery, Scope, WardKey};
use crate::replica::{Replica, ReplicaError};
use crate::route::CITIZENS_PATH;
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
}

/// Where entries come from.
pub struct Builder {
    upstream: Arc<Upstream>,
    /// Wards are read from here when set (`mysql_url`), blobs always from the upstream.
    replica: Option<Replica>,
    live: Live,
    metrics: Arc<Metrics>,
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
            content_type: ArcSwap::from_pointee(HeaderValue::from_static(BACKEND_JSON)),
        }
    }

    /// The `Content-Type` of citizens answers, as the backend last wrote it.
    pub fn content_type(&self) -> HeaderValue {
        HeaderValue::clone(&self.content_type.load())
    }

    /// Builds the entry for `key`. A build waits for a gate slot like any backend request,
    /// then has twice the upstream timeout: one for the answer's head, one for its body.
    pub async fn build(&self, key: &CacheKey) -> Result<Entry, BuildError> {
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
        tokio::time::timeout(within, self.read(key, built_at, permit))
            .await
            .map_err(|_| BuildError::Timeout(within))?
    }

    async fn read(&self, key: &CacheKey, at: EpochMs, permit: Permit) -> Result<Entry, BuildError> {
        let source = match (key, &self.replica) {
            (CacheKey::Ward(_), Some(_)) => "replica",
            _ => "upstream",
        };
        self.metrics
            .builds
            .get_or_create(&SourceLabels { source })
            .inc();
        match key {
            CacheKey::Ward(w) => {
                let snap = match &self.replica {
                    Some(r) => r.build_ward(w, at, &permit).await?,
                    None => self.ward_from_upstream(w, at, permit).await?,
                };
                Ok(Entry::Snapshot(Arc::new(snap)))
            }
            CacheKey::Blob(pq) => {
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

    async fn ward_from_upstream(
        &self,
        w: &WardKey,
        at: EpochMs,
        permit: Permit,
    ) -> Result<Snapshot, BuildError> {
        let q = CitizensQuery {
            scope: Scope::Ward(w.clone()),
            booths: None,
            since_ms: None,
            page: None,
        };
        let pq = format!("{CITIZENS_PATH}?{}", q.to_upstream_query());
        let got = self.upstream.fetch(&pq, permit).await?.ok()?;
        if let Some(ct) = got.headers.get(http::header::CONTENT_TYPE) {
            if **self.content_type.load() != ct {
                self.content_type.store(Arc::new(ct.clone()));
            }
        }
        let body = got.body;
        let (key, local) = (w.clone(), self.live.load().citizens.date_offset());
        let snap =
            off_workers(move || Snapshot::from_backend_json(key, &body, at, local)).await??;
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
        Ok(snap)
    }
}

/// Runs CPU-heavy work (compressing ~4 MB takes tens of ms) off the async workers.
async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BuildError::Task(e.to_string()))
}
