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
//! the source (its watermark, see `watermark`): it is never served again, anywhere.

pub mod build;
pub mod coalesce;
pub mod derived;
pub mod key;
pub mod l1;
pub mod l2;
pub mod overlap;
mod patchlog;
pub mod probe;
mod status;
mod sync;
mod watch;
pub mod watermark;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::blob::Blob;
use crate::config::{Config, Dur, Live};
use crate::metrics::Metrics;
use crate::params::{AssemblyKey, WardKey};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::time::EpochMs;
use crate::upstream::UpstreamError;
pub use build::{BuildError, Builder};
use coalesce::{Coalescer, WaitError};
use derived::Derived;
use key::Kind;
pub use key::{CacheKey, Entry, WriteScope};
use l1::L1;
use l2::L2;
pub use status::CacheStatus;
use watermark::Watermarks;
pub use write::Written;

/// A cached value and how it was found.
pub struct Found<T> {
    pub value: T,
    pub status: CacheStatus,
}

/// Why nothing could be served.
#[derive(Debug)]
pub enum CacheError {
    /// Nothing servable and no build finished in time (or the build failed): 503 + Retry-After.
    Unavailable { reason: String },
    /// The upstream gave a definite answer that is not cacheable (e.g. 404): relayed as is.
    Upstream(UpstreamError),
}

/// How long a request waits for a derived answer another request is making (one
/// compression of at most a ward: tens of ms).
const DERIVE_WAIT: Duration = Duration::from_secs(30);

/// After a failed build, how long before another build of the same key is started.
const RETRY_BUILD_AFTER: Duration = Duration::from_secs(1);

type Build = tokio::sync::watch::Receiver<coalesce::Outcome<Entry, BuildError>>;

pub struct Cache {
    pub l1: L1,
    /// Derived answers, in their own share of L1.
    pub derived: Derived,
    pub l2: Option<Arc<L2>>,
    builds: Arc<Coalescer<CacheKey, Entry, BuildError>>,
    /// Derived answers being made, by snapshot id and selection: each made once.
    deriving: Arc<Coalescer<(u64, u64), Bytes, SnapshotError>>,
    marks: Watermarks,
    /// When the last build of a key failed: no new build is started for `RETRY_BUILD_AFTER`,
    /// so a failing backend is not asked again at the rate requests arrive.
    failed: Mutex<HashMap<CacheKey, Instant>>,
    /// The instant the last complete watch round vouched for, epoch ms (`i64::MIN`: none yet).
    watched_as_of: std::sync::atomic::AtomicI64,
    /// The instant the first watch round vouched for (`overlap`: deltas dated before get the
    /// wide overlap).
    watch_started: std::sync::atomic::AtomicI64,
    /// Stretches in which old copies of a ward were served (`overlap`).
    wide: Mutex<overlap::WideServes>,
    /// Patches of a ward run one at a time (`write`).
    patch_locks: write::PatchLocks,
    builder: Builder,
    live: Live,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// Whether replica-built rows may be served (`cache::probe`).
    pub fn replica_trust(&self) -> &Arc<probe::Trust> {
        self.builder.trust()
    }

    /// With a replica: whether wards are built from it, and why.
    pub fn replica_state(&self) -> Option<String> {
        self.builder.replica_state()
    }

    /// The `Content-Type` of citizens answers: the backend's own, charset included.
    pub fn citizens_content_type(&self) -> http::HeaderValue {
        self.builder.content_type()
    }

    pub fn new(
        l2: Option<Arc<L2>>,
        builder: Builder,
        live: Live,
        metrics: Arc<Metrics>,
    ) -> Arc<Cache> {
        Arc::new(Cache {
            l1: L1::default(),
            derived: Derived::default(),
            l2,
            builds: Arc::default(),
            deriving: Arc::default(),
            marks: Watermarks::default(),
            failed: Mutex::new(HashMap::new()),
            watched_as_of: std::sync::atomic::AtomicI64::new(i64::MIN),
            watch_started: std::sync::atomic::AtomicI64::new(i64::MIN),
            wide: Mutex::default(),
            patch_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            builder,
            live,
            metrics,
        })
    }

    /// A ward's snapshot, whose copies are fresh for `max_age`.
    pub async fn ward(
        self: &Arc<Self>,
        w: &WardKey,
        max_age: Duration,
    ) -> Result<Found<Arc<Snapshot>>, CacheError> {
        let key = CacheKey::Ward(w.clone());
        let found: Found<Arc<Snapshot>> = self.lookup(&key, max_age).await?;
        self.note_served(&key, &Entry::Snapshot(found.value.clone()));
        Ok(found)
    }

    /// A blob (master data) by its path and normalized query.
    pub async fn blob(
        self: &Arc<Self>,
        path_and_query: String,
        max_age: Duration,
    ) -> Result<Found<Arc<Blob>>, CacheError> {
        self.lookup(&CacheKey::Blob(path_and_query), max_age).await
    }

    async fn lookup<T: Kind>(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
    ) -> Result<Found<T>, CacheError> {
        let (entry, status) = self.get(key, max_age).await?;
        match T::from_entry(entry) {
            Some(value) => Ok(Found { value, status }),
            // Entries are built and decoded by their key's kind: this cannot happen.
            None => Err(CacheError::Unavailable {
                reason: format!("{key} holds an entry of another kind"),
            }),
        }
    }

    /// The latest write a copy of `key` read afresh must follow (see `watermark`).
    fn floor(&self, key: &CacheKey) -> EpochMs {
        self.marks.floor(key)
    }

    /// Whether `e` holds every write acknowledged to `key` (see `watermark`).
    fn admits(&self, key: &CacheKey, e: &Entry) -> bool {
        self.marks.admits(key, e)
    }

    /// Raises the watermark of `scope`: copies built before `at` are superseded. A superseded
    /// ward stays in L1, never served (`l1_answer` admits it no more), as the base its patch
    /// log catches up (`patchlog`); a whole-assembly write drops its wards.
    pub fn raise_watermark(&self, scope: &WriteScope, at: EpochMs) {
        self.marks.raise(scope, at);
        match scope {
            WriteScope::Ward(_) => {}
            WriteScope::Assembly(a) => {
                let of_assembly = |k: &CacheKey| matches!(k, CacheKey::Ward(w) if w.state == a.state && w.assembly == a.assembly);
                for (k, seen) in self.ward_keys_where(of_assembly) {
                    if seen < at {
                        self.l1.remove(&k);
                    }
                }
            }
        }
    }

    /// L1's copy of `key` if it may be served now, with its status; starts the renewal of a
    /// stale one. Otherwise the build time of any copy held (a build must do better).
    fn l1_answer(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
        cfg: &Config,
    ) -> Result<(Entry, CacheStatus), Option<EpochMs>> {
        let Some(e) = self.l1.get(key) else {
            return Err(None);
        };
        let age_ms = e.fresh_since().age_ms();
        let max_age_ms = max_age.as_millis() as i64;
        let stale_ms = max_age_ms + cfg.cache.max_stale.0.as_millis() as i64;
        if self.admits(key, &e) {
            if age_ms <= max_age_ms {
                return Ok((e, CacheStatus::HIT));
            }
            if age_ms <= stale_ms {
                self.renew(key, max_age);
                return Ok((e, CacheStatus::STALE));
            }
        }
        Err(Some(e.seen_at()))
    }

    /// The entry for `key`, whose copies are fresh for `max_age`.
    async fn get(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
    ) -> Result<(Entry, CacheStatus), CacheError> {
        let cfg = self.live.load_full();
        let mut have = match self.l1_answer(key, max_age, &cfg) {
            Ok(found) => return Ok(found),
            Err(have) => have,
        };
        // The backend just failed this key: answer 503 at once rather than ask it again.
        if self.recently_failed(key) && !self.builds.is_running(key) {
            return Err(unavailable(format!(
                "{key} cannot be built now: the upstream failed moments ago"
            )));
        }
        // Join (or start) the one build; a result older than the watermark (a build that began
        // before a write was acknowledged) is not good enough: wait for the next one.
        let deadline = Instant::now() + cfg.cache.miss_wait.0;
        let mut joined_other = false;
        loop {
            let floor = self.floor(key);
            let (rx, started) = self.join(key, max_age, have);
            if !started && !joined_other {
                joined_other = true;
                self.metrics.coalesced_waits.inc();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match coalesce::wait(rx, left).await {
                Ok(e) if e.seen_at() >= floor || self.admits(key, &e) => {
                    return Ok((e, CacheStatus::MISS))
                }
                Ok(e) => have = Some(e.seen_at()),
                Err(e) => return Err(wait_error(key, e, cfg.cache.miss_wait)),
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!("{key} is being renewed after a write")));
            }
        }
    }

    /// Records a write to `scope` acknowledged at `at`, here and (through Redis) on every
    /// instance: from here on no copy without it is served, and the next read builds afresh.
    pub async fn acknowledge(&self, scope: &WriteScope, at: EpochMs) {
        self.raise_watermark(scope, at);
        if let Some(l2) = &self.l2 {
            l2.publish_watermark(scope, at).await;
        }
    }

    /// Copies of the wards held here, with their times seen (for the watermark re-check).
    pub fn ward_keys(&self) -> Vec<(CacheKey, EpochMs)> {
        self.ward_keys_where(|_| true)
    }

    fn ward_keys_where(&self, keep: impl Fn(&CacheKey) -> bool) -> Vec<(CacheKey, EpochMs)> {
        self.l1
            .entries()
            .into_iter()
            .filter(|(k, _)| matches!(k, CacheKey::Ward(_)) && keep(k))
            .map(|(k, e)| (k, e.seen_at()))
            .collect()
    }

    /// Starts a background renewal of `key` unless one is running or the last one just failed
    /// (stale-while-revalidate; stale-if-error while the upstream fails).
    pub fn renew(self: &Arc<Self>, key: &CacheKey, max_age: Duration) {
        if self.recently_failed(key) {
            return;
        }
        let have = self.l1.get(key).map(|e| e.seen_at());
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
        have: Option<EpochMs>,
    ) -> (Build, bool) {
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
        have: Option<EpochMs>,
    ) -> Result<Entry, BuildError> {
        let cfg: Arc<Config> = self.live.load_full();
        let usable = |e: &Entry| {
            Some(e.seen_at()) > have && self.admits(&key, e) && e.fresh_since().within(max_age)
        };
        let mut lock = l2::Lock::Unavailable;
        if let Some(l2) = &self.l2 {
            if let Some(e) = self.l2_copy(l2, &key, &cfg, &usable, &mut lock).await {
                return Ok(e);
            }
        }
        let result = self.build_and_keep(&key, &cfg).await;
        // Waiters are released as this returns; the Redis copy, then the lock's release (so
        // that other instances waiting on the lock find the copy), follow in the background.
        if let Some(l2) = self.l2.clone() {
            let copy = result.as_ref().ok().cloned();
            let ttl = max_age + cfg.cache.max_stale.0;
            tokio::spawn(async move {
                if let Some(e) = copy {
                    l2.put(&key, &e, ttl).await;
                }
                if let l2::Lock::Held(token) = &lock {
                    l2.unlock(&key, token).await;
                }
            });
        }
        result
    }

    /// A usable copy from Redis: there now, or built by the instance that holds the build lock
    /// while we wait for it. Leaves `lock` held when this instance is to build.
    async fn l2_copy(
        &self,
        l2: &L2,
        key: &CacheKey,
        cfg: &Config,
        usable: &impl Fn(&Entry) -> bool,
        lock: &mut l2::Lock,
    ) -> Option<Entry> {
        // A write acknowledged by another instance may not have reached us by pub/sub.
        if let CacheKey::Ward(w) = key {
            let scopes = [
                WriteScope::Ward(w.clone()),
                WriteScope::Assembly(w.assembly_key()),
            ];
            for scope in scopes {
                if let Some(at) = l2.watermark(&scope).await {
                    self.raise_watermark(&scope, at);
                }
            }
        }
        // A superseded copy held here catches up from the ward's patch log: no ward is read.
        if let Some(held) = self.l1.get(key) {
            if let Some(e) = self.catch_up(l2, key, &held).await.filter(|e| usable(e)) {
                self.keep(key, &e, cfg);
                return Some(e);
            }
        }
        if let Some(e) = l2.get(key).await.filter(|e| usable(e)) {
            self.keep(key, &e, cfg);
            return Some(e);
        }
        *lock = l2.try_lock(key, cfg.cache.miss_wait.0).await;
        if !matches!(lock, l2::Lock::Busy) {
            return None;
        }
        // Another instance is building it: wait for it to appear rather than build too.
        let deadline = Instant::now() + cfg.cache.miss_wait.0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(e) = l2.get(key).await.filter(|e| usable(e)) {
                self.keep(key, &e, cfg);
                return Some(e);
            }
        }
        None
    }

    /// Builds `key` from the source and keeps it in L1 (`fill` stores it in L2 after); a
    /// failure is remembered for `RETRY_BUILD_AFTER`.
    async fn build_and_keep(&self, key: &CacheKey, cfg: &Config) -> Result<Entry, BuildError> {
        let started = Instant::now();
        let built = self.builder.build(key, self.floor(key)).await;
        self.metrics
            .build_duration
            .observe(started.elapsed().as_secs_f64());
        self.note_outcome(key, &built);
        let e = built?;
        if let Entry::Snapshot(s) = &e {
            self.metrics.build_rows.inc_by(s.rows() as u64);
            tracing::info!(key = %key, rows = s.rows(), gzip_bytes = s.gzip_bytes(), ms = started.elapsed().as_millis() as u64, "snapshot built");
        }
        self.keep(key, &e, cfg);
        Ok(e)
    }

    /// Remembers a failed build for `RETRY_BUILD_AFTER`, forgets it on success.
    fn note_outcome(&self, key: &CacheKey, built: &Result<Entry, BuildError>) {
        let Ok(mut failed) = self.failed.lock() else {
            return;
        };
        match built {
            Ok(_) => {
                failed.remove(key);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "build failed");
                // Entries matter for a second only: sweep them so the map stays small.
                if failed.len() > 10_000 {
                    failed.retain(|_, t| t.elapsed() < RETRY_BUILD_AFTER);
                }
                failed.insert(key.clone(), Instant::now());
            }
        }
    }

    fn keep(&self, key: &CacheKey, e: &Entry, cfg: &Config) {
        if !self.admits(key, e) {
            return;
        }
        self.l1
            .insert(key.clone(), e.clone(), cfg.cache.entries_max_bytes());
        self.count_l1();
    }

    /// The derived answer `variant` of the snapshot `snapshot_id`: kept, or made by `make()`
    /// once however many requests ask for it at once (they wait for the one making it), then
    /// kept within the derived budget. `make` says whether it compressed (counted: the hot
    /// path should not compress); it is called only on a miss.
    pub async fn derived_answer<F>(
        self: &Arc<Self>,
        snapshot_id: u64,
        variant: u64,
        make: impl FnOnce() -> F,
    ) -> Result<Bytes, String>
    where
        F: Future<Output = Result<(Bytes, bool), SnapshotError>> + Send + 'static,
    {
        if let Some(b) = self.derived.get(snapshot_id, variant) {
            return Ok(b);
        }
        let this = self.clone();
        let (rx, _) = self.deriving.join(&(snapshot_id, variant), move || {
            let make = make();
            async move {
                // A making that ended between the look-up above and this join kept it.
                if let Some(b) = this.derived.get(snapshot_id, variant) {
                    return Ok(b);
                }
                let (body, compressed) = make.await?;
                if compressed {
                    this.metrics.request_compressions.inc();
                }
                let max = this.live.load().cache.derived_max_bytes();
                this.derived.keep(snapshot_id, variant, body.clone(), max);
                let held = this.derived.usage().0 as i64;
                this.metrics.derived_bytes.set(held);
                Ok(body)
            }
        });
        coalesce::wait(rx, DERIVE_WAIT).await.map_err(|e| match e {
            WaitError::Failed(e) => e.to_string(),
            WaitError::TimedOut => format!("not made within {DERIVE_WAIT:?}"),
            WaitError::Aborted => "its making failed".to_string(),
        })
    }

    fn count_l1(&self) {
        let (bytes, entries) = self.l1.usage();
        self.metrics.l1_bytes.set(bytes as i64);
        self.metrics.l1_entries.set(entries as i64);
    }

    /// Drops every cached copy of the matching wards, here and in Redis (admin purge).
    pub async fn purge(&self, a: &AssemblyKey, ward: Option<&str>) -> usize {
        let n = self.l1.remove_where(|k| match k {
            CacheKey::Ward(w) => {
                w.state == a.state && w.assembly == a.assembly && ward.is_none_or(|x| x == w.ward)
            }
            CacheKey::Blob(_) => false,
        });
        let mut m = n;
        if let Some(l2) = &self.l2 {
            let tail = match ward {
                Some(w) => format!("{}:{}:{w}", a.state, a.assembly),
                None => format!("{}:{}:*", a.state, a.assembly),
            };
            m = m.max(l2.delete_matching(&tail).await);
        }
        self.count_l1();
        m
    }

    /// Whether a fresh copy of `key` is held here or in Redis (readiness, `warm`).
    pub async fn has_fresh(&self, key: &CacheKey, max_age: Duration) -> bool {
        let fresh = |e: &Entry| e.fresh_since().within(max_age);
        if self.l1.get(key).is_some_and(|e| fresh(&e)) {
            return true;
        }
        match &self.l2 {
            Some(l2) => l2.get(key).await.is_some_and(|e| fresh(&e)),
            None => false,
        }
    }
}

fn unavailable(reason: String) -> CacheError {
    CacheError::Unavailable { reason }
}

/// What a requester that waited for a build answers when the build gave nothing usable.
fn wait_error(key: &CacheKey, e: WaitError<BuildError>, miss_wait: Dur) -> CacheError {
    match e {
        WaitError::TimedOut => unavailable(format!(
            "{key} is being built; it took longer than {miss_wait}"
        )),
        WaitError::Failed(e) => match &*e {
            BuildError::Upstream(UpstreamError::Status {
                status,
                content_type,
                body,
            }) if status.is_client_error() => CacheError::Upstream(UpstreamError::Status {
                status: *status,
                content_type: content_type.clone(),
                body: body.clone(),
            }),
            other => unavailable(format!("cannot build {key}: {other}")),
        },
        WaitError::Aborted => unavailable(format!("the build of {key} was aborted")),
    }
}
