//! The cache stage: L1 in process, L2 in Redis, and one build per key between them.
//!
//! Freshness is judged at request time against the live config, so a reload of max ages applies
//! to entries already cached. For a key, the states are:
//!
//! | age of the copy (its build, or the watch's last vouching) | answer                 | `X-Cache` |
//! |-----------------------------------------|-------------------------------------------|-----------|
//! | ≤ max age                               | the copy                                  | `HIT`     |
//! | ≤ max age + max stale                   | the copy, and a background renewal        | `STALE`   |
//! | ≤ stale-if-error, the upstream failing  | the copy (L1, or Redis's if L1 has none)  | `STALE`   |
//! | older, absent or superseded             | wait (bounded) for the one build; if it fails, the copy within stale-if-error | `MISS` / `STALE` |
//!
//! A copy is *superseded* when a write to its ward was acknowledged after the copy was read from
//! the source and it does not include that write (`watermark`): it is never served again,
//! anywhere; it stays in L1 only as the base its patch log catches up (`patchlog`).

pub mod build;
pub mod coalesce;
pub mod derived;
mod fill;
pub mod fleet;
mod health;
pub mod key;
pub mod l1;
pub mod l2;
pub mod overlap;
mod patchlog;
pub mod probe;
mod status;
pub mod stored;
mod sync;
pub mod topology;
pub mod warm_progress;
mod watch;
pub mod watermark;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::Instrument;

use crate::blob::Blob;
use crate::config::{Config, Dur, Live};
use crate::metrics::Metrics;
use crate::params::{AssemblyKey, WardKey};
use crate::request_id::RequestId;
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
    /// stale one. Otherwise the time seen of any copy held (a build must do better).
    ///
    /// Within max age: `HIT`. Within max stale past it: `STALE` while one renewal runs
    /// (stale-while-revalidate). Older, within `stale_if_error`: `STALE` only while the
    /// upstream fails (stale-if-error); else the request waits for the build, and is answered
    /// the old copy if the build fails (`stale_if_error`). A healthy backend is never
    /// answered for with a copy older than max age plus max stale: a stale "who voted" list
    /// is worse than a wait of one build.
    fn l1_answer(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
        cfg: &Config,
    ) -> Result<(Entry, CacheStatus), Option<EpochMs>> {
        let Some(e) = self.l1.get(key) else {
            return Err(None);
        };
        if !self.admits(key, &e) {
            return Err(Some(e.seen_at()));
        }
        let age = Duration::from_millis(e.fresh_since().age_ms().max(0) as u64);
        if age <= max_age {
            return Ok((e, CacheStatus::HIT));
        }
        let cause = if age <= max_age + cfg.cache.max_stale.0 {
            self.renew(key, max_age);
            "revalidate"
        } else if age > cfg.cache.stale_if_error_age() {
            return Err(Some(e.seen_at()));
        } else if self.recently_failed(key) {
            "error"
        } else {
            return Err(Some(e.seen_at()));
        };
        self.count_stale(cause);
        Ok((e, CacheStatus::STALE))
    }

    fn count_stale(&self, cause: &'static str) {
        let labels = crate::metrics::OutcomeNameLabels { outcome: cause };
        self.metrics.stale_serves.get_or_create(&labels).inc();
    }

    /// What a request whose build gave nothing answers instead of 503: the copy held, if it
    /// is within `stale_if_error` (stale-if-error).
    fn stale_if_error(&self, key: &CacheKey, cfg: &Config) -> Option<(Entry, CacheStatus)> {
        let e = self.l1.get(key)?;
        let bound = cfg.cache.stale_if_error_age();
        let ok = self.admits(key, &e) && e.fresh_since().within(bound);
        ok.then(|| {
            self.count_stale("error");
            (e, CacheStatus::STALE)
        })
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
                Err(e) => {
                    return match self.stale_if_error(key, &cfg) {
                        Some(old) => Ok(old),
                        None => Err(wait_error(key, e, cfg.cache.miss_wait)),
                    }
                }
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

    /// Joins or starts the build of `key`. A build started here runs as the request that
    /// started it (a renewal by the watch, with none, gets an id of its own): its backend
    /// reads carry that request's id, and its log lines name it.
    fn join(
        self: &Arc<Self>,
        key: &CacheKey,
        max_age: Duration,
        have: Option<EpochMs>,
    ) -> (Build, bool) {
        let this = self.clone();
        let k = key.clone();
        self.builds.join(key, move || {
            let id = RequestId::current().unwrap_or_else(RequestId::generate);
            let span = tracing::info_span!("build", request_id = %id);
            id.scope(async move { this.fill(k, max_age, have).await })
                .instrument(span)
        })
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

    /// Drops every copy held in this process, wards, master data and derived answers alike;
    /// how many.
    pub fn drop_local(&self) -> usize {
        let n = self.l1.remove_where(|_| true) + self.derived.clear();
        self.count_l1();
        n
    }

    /// Drops every copy, here and in Redis, and tells the other instances to drop theirs
    /// (the wipe after an election): (copies here, Redis keys removed, `None` when Redis
    /// failed or is not configured).
    pub async fn purge_all(&self) -> (usize, Option<usize>) {
        let here = self.drop_local();
        let redis = match &self.l2 {
            Some(l2) => l2.delete_all().await,
            None => None,
        };
        (here, redis)
    }

    /// The wards L1 holds a copy of that may be served (no write supersedes it), with since
    /// when each counts as fresh (the status page's coverage; not on any request path).
    pub fn l1_wards(&self) -> Vec<(WardKey, EpochMs)> {
        self.l1
            .entries()
            .into_iter()
            .filter_map(|(k, e)| match &k {
                CacheKey::Ward(w) if self.admits(&k, &e) => Some((w.clone(), e.fresh_since())),
                _ => None,
            })
            .collect()
    }

    /// Ward and blob builds running now.
    pub fn builds_in_flight(&self) -> usize {
        self.builds.running()
    }

    /// Whether a copy of `key` younger than `max_age` is held here (and may be served) or in
    /// Redis (readiness).
    pub async fn has_fresh(&self, key: &CacheKey, max_age: Duration) -> bool {
        let fresh = |e: &Entry| e.fresh_since().within(max_age);
        if self
            .l1
            .get(key)
            .is_some_and(|e| fresh(&e) && self.admits(key, &e))
        {
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
