//! The cache stage: L1 in process, L2 in Redis, and one build per key between them.
//!
//! Freshness is judged at request time against the live config, so a reload of max ages applies
//! to entries already cached. For a key, the states are:
//!
//! | age of the L1 copy           | answer                                  | `X-Cache` |
//! |------------------------------|-----------------------------------------|-----------|
//! | ≤ max age                    | the copy                                | `HIT`     |
//! | ≤ max age + max stale        | the copy, and a background renewal      | `STALE`   |
//! | older, absent or superseded  | wait (bounded) for the one build        | `MISS`    |
//!
//! A copy is *superseded* when a write to its ward was acknowledged after the copy was read from
//! the source (its watermark, see `invalidate`): it is never served again, anywhere.

pub mod coalesce;
pub mod l1;
pub mod l2;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::blob::Blob;
use crate::config::Config;
use crate::metrics::{CacheStatus, Metrics};
use crate::params::WardKey;
use crate::snapshot::Snapshot;
use crate::upstream::{Upstream, UpstreamError};
use crate::Live;
use coalesce::{Coalescer, WaitError};
use l1::L1;
use l2::L2;

/// What is cached: a ward's snapshot or a blob keyed by path and normalized query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Ward(WardKey),
    Blob(String),
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheKey::Ward(w) => write!(f, "ward:{w}"),
            CacheKey::Blob(b) => write!(f, "blob:{b}"),
        }
    }
}

/// A cached value. Cloning is an `Arc` clone.
#[derive(Clone, Debug)]
pub enum Entry {
    Snapshot(Arc<Snapshot>),
    Blob(Arc<Blob>),
}

impl Entry {
    pub fn built_at_ms(&self) -> i64 {
        match self {
            Entry::Snapshot(s) => s.built_at_ms,
            Entry::Blob(b) => b.built_at_ms,
        }
    }

    pub fn weight(&self) -> usize {
        match self {
            Entry::Snapshot(s) => s.weight(),
            Entry::Blob(b) => b.weight(),
        }
    }
}

/// An entry and how it was found.
pub struct Found {
    pub entry: Entry,
    pub status: CacheStatus,
}

/// Why nothing could be served.
#[derive(Debug)]
pub enum CacheError {
    /// Nothing servable and no build finished in time (or the build failed): 503 + Retry-After.
    Unavailable { reason: String },
    /// The upstream gave a definite answer that is not cacheable (e.g. 404): relayed as is.
    Upstream(Arc<UpstreamError>),
}

/// After a failed build, how long before another build of the same key is started.
const RETRY_BUILD_AFTER: Duration = Duration::from_secs(1);

/// The (state, assembly) of a whole-assembly citizens page cached as a blob (its key is the
/// path and the normalized query wardgate itself built), or `None` for any other blob.
fn assembly_of_page(blob_key: &str) -> Option<(String, String)> {
    let query = blob_key
        .strip_prefix(crate::route::CITIZENS_PATH)?
        .strip_prefix('?')?;
    let mut state = None;
    let mut assembly = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "assemblyNo" => assembly = Some(v.into_owned()),
            _ => {}
        }
    }
    Some((state?, assembly?))
}

/// Current time, epoch ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Cache {
    pub l1: L1,
    pub l2: Option<Arc<L2>>,
    builds: Arc<Coalescer<CacheKey, Entry, UpstreamError>>,
    /// Per key, the earliest build time a copy must have (set by acknowledged writes).
    watermarks: Mutex<HashMap<CacheKey, i64>>,
    /// Per assembly (state, assembly), the latest watermark of any of its wards: whole-assembly
    /// pages (cached as blobs) hold rows of every ward, so any write supersedes them.
    assembly_writes: Mutex<HashMap<(String, String), i64>>,
    /// Keys with a post-write renewal waiting for the running build to end.
    renewals: Mutex<HashSet<CacheKey>>,
    /// When the last build of a key failed: no new build is started for `RETRY_BUILD_AFTER`,
    /// so a failing backend is not asked again at the rate requests arrive.
    failed: Mutex<HashMap<CacheKey, Instant>>,
    source: Arc<Upstream>,
    live: Live,
    metrics: Arc<Metrics>,
}

impl Cache {
    pub fn new(
        l2: Option<Arc<L2>>,
        source: Arc<Upstream>,
        live: Live,
        metrics: Arc<Metrics>,
    ) -> Arc<Cache> {
        Arc::new(Cache {
            l1: L1::default(),
            l2,
            builds: Arc::default(),
            watermarks: Mutex::new(HashMap::new()),
            assembly_writes: Mutex::new(HashMap::new()),
            renewals: Mutex::new(HashSet::new()),
            failed: Mutex::new(HashMap::new()),
            source,
            live,
            metrics,
        })
    }

    /// The watermark of `key`: its own, or its assembly's if a whole-assembly write was later.
    /// A whole-assembly page is superseded by a write to any ward of the assembly.
    fn watermark(&self, key: &CacheKey) -> i64 {
        if let CacheKey::Blob(b) = key {
            return assembly_of_page(b)
                .and_then(|sa| self.assembly_writes.lock().ok()?.get(&sa).copied())
                .unwrap_or(i64::MIN);
        }
        let Ok(m) = self.watermarks.lock() else {
            return i64::MIN;
        };
        let own = m.get(key).copied().unwrap_or(i64::MIN);
        let wide = match key {
            CacheKey::Ward(w) if !w.is_assembly_scope() => m
                .get(&CacheKey::Ward(w.assembly_scope()))
                .copied()
                .unwrap_or(i64::MIN),
            _ => i64::MIN,
        };
        own.max(wide)
    }

    /// Raises the watermark of `key`: copies built before `at_ms` are superseded.
    pub fn raise_watermark(&self, key: &CacheKey, at_ms: i64) {
        if let Ok(mut m) = self.watermarks.lock() {
            let w = m.entry(key.clone()).or_insert(i64::MIN);
            *w = (*w).max(at_ms);
        }
        if let (CacheKey::Ward(w), Ok(mut m)) = (key, self.assembly_writes.lock()) {
            let latest = m
                .entry((w.state.clone(), w.assembly.clone()))
                .or_insert(i64::MIN);
            *latest = (*latest).max(at_ms);
        }
        match key {
            // A whole-assembly write supersedes every ward of the assembly held here.
            CacheKey::Ward(scope) if scope.is_assembly_scope() => {
                for (k, built) in self.ward_keys() {
                    let same = matches!(&k, CacheKey::Ward(w) if w.state == scope.state && w.assembly == scope.assembly);
                    if same && built < at_ms {
                        self.l1.remove(&k);
                    }
                }
            }
            _ => {
                if self.l1.get(key).is_some_and(|e| e.built_at_ms() < at_ms) {
                    self.l1.remove(key);
                }
            }
        }
    }

    /// The entry for `key`, whose copies are fresh for `max_age`.
    pub async fn get(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
    ) -> Result<Found, CacheError> {
        let cfg = self.live.load();
        let max_age_ms = max_age.as_millis() as i64;
        let stale_ms = max_age_ms + cfg.cache.max_stale.0.as_millis() as i64;
        let floor = self.watermark(key);
        let mut have = None;
        if let Some(e) = self.l1.get(key) {
            let age = now_ms() - e.built_at_ms();
            if e.built_at_ms() >= floor {
                if age <= max_age_ms {
                    return Ok(Found {
                        entry: e,
                        status: CacheStatus::HIT,
                    });
                }
                if age <= stale_ms {
                    self.renew(key, max_age);
                    return Ok(Found {
                        entry: e,
                        status: CacheStatus::STALE,
                    });
                }
            }
            have = Some(e.built_at_ms());
        }

        // The backend just failed this key: answer 503 at once rather than ask it again.
        if self.recently_failed(key) && !self.builds.is_running(key) {
            return Err(CacheError::Unavailable {
                reason: format!("{key} cannot be built now: the upstream failed moments ago"),
            });
        }
        // Join (or start) the one build; a result older than the watermark (a build that began
        // before a write was acknowledged) is not good enough: wait for the next one.
        let deadline = Instant::now() + cfg.cache.miss_wait.0;
        let mut joined_other = false;
        loop {
            let floor = self.watermark(key);
            let (rx, started) = self.join(key, max_age, have);
            if !started && !joined_other {
                joined_other = true;
                self.metrics.coalesced_waits.inc();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match coalesce::wait(rx, left).await {
                Ok(e) if e.built_at_ms() >= floor => {
                    return Ok(Found {
                        entry: e,
                        status: CacheStatus::MISS,
                    })
                }
                Ok(e) => have = Some(e.built_at_ms()),
                Err(WaitError::TimedOut) => {
                    return Err(CacheError::Unavailable {
                        reason: format!(
                            "{key} is being built; it took longer than {}",
                            crate::config::Dur(cfg.cache.miss_wait.0)
                        ),
                    })
                }
                Err(WaitError::Failed(e)) => {
                    return Err(match &*e {
                        UpstreamError::Status { status, .. } if status.is_client_error() => {
                            CacheError::Upstream(e)
                        }
                        other => CacheError::Unavailable {
                            reason: format!("cannot build {key}: {other}"),
                        },
                    })
                }
                Err(WaitError::Aborted) => {
                    return Err(CacheError::Unavailable {
                        reason: format!("the build of {key} was aborted"),
                    })
                }
            }
            if Instant::now() >= deadline {
                return Err(CacheError::Unavailable {
                    reason: format!("{key} is being renewed after a write"),
                });
            }
        }
    }

    /// After the backend acknowledged a write to `key`'s ward: supersede every older copy, here
    /// and (through Redis) on every instance, then renew it. Renewals are coalesced: however
    /// many writes arrive, at most one build runs for the key, and one more is queued behind it
    /// so the last write is always included.
    pub async fn after_write(self: &Arc<Self>, key: CacheKey, max_age: Duration) {
        let at = now_ms();
        self.raise_watermark(&key, at);
        if let Some(l2) = &self.l2 {
            l2.publish_watermark(&key, at).await;
        }
        if matches!(&key, CacheKey::Ward(w) if w.is_assembly_scope()) {
            return; // its wards are renewed as they are read
        }
        let queued = self
            .renewals
            .lock()
            .map(|mut s| s.insert(key.clone()))
            .unwrap_or(false);
        if !queued {
            return; // a renewal is already queued; it starts after this write
        }
        let this = self.clone();
        tokio::spawn(async move {
            // A build running now may have read the source before the write: let it end first.
            while this.builds.is_running(&key) {
                let (rx, _) = this.join(&key, max_age, None);
                let _ = coalesce::wait(rx, Duration::from_secs(120)).await;
            }
            if let Ok(mut s) = this.renewals.lock() {
                s.remove(&key);
            }
            let (rx, _) = this.join(&key, max_age, None);
            let _ = coalesce::wait(rx, Duration::from_secs(120)).await;
        });
    }

    /// Copies of the wards held here, with their build times (for the watermark re-check).
    pub fn ward_keys(&self) -> Vec<(CacheKey, i64)> {
        self.l1
            .entries()
            .into_iter()
            .filter(|(k, _)| matches!(k, CacheKey::Ward(_)))
            .map(|(k, e)| (k, e.built_at_ms()))
            .collect()
    }

    /// Starts a background renewal of `key` unless one is running or the last one just failed
    /// (stale-while-revalidate; stale-if-error while the upstream fails).
    pub fn renew(self: &Arc<Self>, key: &CacheKey, max_age: Duration) {
        if self.recently_failed(key) {
            return;
        }
        let have = self.l1.get(key).map(|e| e.built_at_ms());
        let _ = self.join(key, max_age, have);
    }

    /// Whether the last build of `key` failed less than `RETRY_BUILD_AFTER` ago.
    fn recently_failed(&self, key: &CacheKey) -> bool {
        self.failed
            .lock()
            .map(|m| m.get(key).is_some_and(|t| t.elapsed() < RETRY_BUILD_AFTER))
            .unwrap_or(false)
    }

    fn join(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
        have: Option<i64>,
    ) -> (
        tokio::sync::watch::Receiver<coalesce::Outcome<Entry, UpstreamError>>,
        bool,
    ) {
        let this = self.clone();
        let k = key.clone();
        self.builds.join(
            key,
            move || async move { this.fill(k, max_age, have).await },
        )
    }

    /// The build behind a miss: L2 first (another instance may have built it), then the
    /// cross-instance lock, then the source. Runs as its own task (see `coalesce`).
    async fn fill(
        self: Arc<Self>,
        key: CacheKey,
        max_age: Duration,
        have: Option<i64>,
    ) -> Result<Entry, UpstreamError> {
        let cfg: Arc<Config> = self.live.load_full();
        let usable = |e: &Entry| {
            e.built_at_ms() > have.unwrap_or(i64::MIN)
                && e.built_at_ms() >= self.watermark(&key)
                && now_ms() - e.built_at_ms() <= max_age.as_millis() as i64
        };
        let mut lock = l2::Lock::Unavailable;
        if let Some(l2) = &self.l2 {
            // A write acknowledged by another instance may not have reached us by pub/sub.
            if let Some(at) = l2.watermark(&key).await {
                self.raise_watermark(&key, at);
            }
            if let CacheKey::Ward(w) = &key {
                let scope = CacheKey::Ward(w.assembly_scope());
                if let Some(at) = l2.watermark(&scope).await {
                    self.raise_watermark(&scope, at);
                }
            }
            if let Some(e) = l2.get(&key).await.filter(|e| usable(e)) {
                self.keep(&key, &e, &cfg);
                return Ok(e);
            }
            lock = l2.try_lock(&key, cfg.cache.miss_wait.0).await;
            if matches!(lock, l2::Lock::Busy) {
                // Another instance is building it: wait for it to appear rather than build too.
                let deadline = Instant::now() + cfg.cache.miss_wait.0;
                while Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if let Some(e) = l2.get(&key).await.filter(|e| usable(e)) {
                        self.keep(&key, &e, &cfg);
                        return Ok(e);
                    }
                }
            }
        }
        let started = Instant::now();
        let built = self.source.build(&key).await;
        self.metrics
            .build_duration
            .observe(started.elapsed().as_secs_f64());
        let result = match built {
            Ok(e) => {
                if let Ok(mut m) = self.failed.lock() {
                    m.remove(&key);
                }
                if let Entry::Snapshot(s) = &e {
                    self.metrics.build_rows.inc_by(s.rows() as u64);
                    tracing::info!(key = %key, rows = s.rows(), gzip_bytes = s.gzip_bytes(), ms = started.elapsed().as_millis() as u64, "snapshot built");
                }
                self.keep(&key, &e, &cfg);
                if let Some(l2) = &self.l2 {
                    l2.put(&key, &e, max_age + cfg.cache.max_stale.0).await;
                }
                Ok(e)
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "build failed");
                if let Ok(mut m) = self.failed.lock() {
                    // Entries matter for a second only: sweep them so the map stays small.
                    if m.len() > 10_000 {
                        m.retain(|_, t| t.elapsed() < RETRY_BUILD_AFTER);
                    }
                    m.insert(key.clone(), Instant::now());
                }
                Err(e)
            }
        };
        if let (Some(l2), l2::Lock::Held(token)) = (&self.l2, &lock) {
            l2.unlock(&key, token).await;
        }
        result
    }

    fn keep(&self, key: &CacheKey, e: &Entry, cfg: &Config) {
        if e.built_at_ms() < self.watermark(key) {
            return;
        }
        self.l1
            .insert(key.clone(), e.clone(), cfg.cache.l1_max_bytes.0 as usize);
        let (bytes, entries) = self.l1.usage();
        self.metrics.l1_bytes.set(bytes as i64);
        self.metrics.l1_entries.set(entries as i64);
    }

    /// Drops every cached copy of the matching wards, here and in Redis (admin purge).
    pub async fn purge(&self, state: &str, assembly: &str, ward: Option<&str>) -> usize {
        let n = self.l1.remove_where(|k| match k {
            CacheKey::Ward(w) => {
                w.state == state && w.assembly == assembly && ward.is_none_or(|x| x == w.ward)
            }
            CacheKey::Blob(_) => false,
        });
        let mut m = n;
        if let Some(l2) = &self.l2 {
            let tail = match ward {
                Some(w) => format!("{state}:{assembly}:{w}"),
                None => format!("{state}:{assembly}:*"),
            };
            m = m.max(l2.delete_matching(&tail).await);
        }
        let (bytes, entries) = self.l1.usage();
        self.metrics.l1_bytes.set(bytes as i64);
        self.metrics.l1_entries.set(entries as i64);
        m
    }

    /// Whether a fresh copy of `key` is held here or in Redis (readiness, `warm`).
    pub async fn has_fresh(&self, key: &CacheKey, max_age: Duration) -> bool {
        let fresh = |e: &Entry| now_ms() - e.built_at_ms() <= max_age.as_millis() as i64;
        if self.l1.get(key).is_some_and(|e| fresh(&e)) {
            return true;
        }
        match &self.l2 {
            Some(l2) => l2.get(key).await.is_some_and(|e| fresh(&e)),
            None => false,
        }
    }
}
