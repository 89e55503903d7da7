//! After a write: its cheap read patches the ward's snapshot, so that a write costs the backend
//! the rows it changed rather than the whole ward; after a write that cannot be patched, the
//! client's read builds the ward with one full read.
//!
//! **Invariant:** a patched copy is kept only if every row the write carried came back newer
//! than the copy held it, so a backend that answered from a replica behind the write never
//! makes wardgate serve the ward without it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::MutexGuard;

use super::patchlog::LogEntry;
use super::{Cache, CacheKey, Entry, WriteScope};
use crate::metrics::OutcomeNameLabels;
use crate::params::WardKey;
use crate::snapshot::{patch_rows, PatchRow, Refused, RowId, Snapshot};
use crate::time::EpochMs;

/// Margin for the backend's stamping: it stamps `modifieddate` before it commits, so a row may
/// become visible a little after its stamp (a write's cheap read, and the narrow delta overlap,
/// reach back this much further).
pub(super) const COMMIT_SLACK: Duration = Duration::from_secs(10);

/// Patches of one ward run one at a time (each starts from the last one's copy); wards share
/// these locks by hash, which is enough: a patch holds its lock for milliseconds.
pub(super) type PatchLocks = [tokio::sync::Mutex<()>; 64];

impl Cache {
    /// The copy a write to `w` can be patched onto: L1's, when it may be served (after catching
    /// up from the ward's patch log if another instance's write superseded it) and its rows are
    /// dated (a cheap read selects rows by `modifieddate`).
    pub async fn patch_base(&self, w: &WardKey) -> Option<Arc<Snapshot>> {
        let key = CacheKey::Ward(w.clone());
        let mut held = self.l1.get(&key)?;
        if !self.admits(&key, &held) {
            let caught = self.catch_up(self.l2.as_deref()?, &key, &held).await?;
            if !self.admits(&key, &caught) {
                return None;
            }
            self.keep(&key, &caught, &self.live.load_full());
            held = caught;
        }
        match held {
            Entry::Snapshot(s) if !s.unindexed().modifieddate => Some(s),
            _ => None,
        }
    }

    /// The `date` of a write's cheap read against `base`: every row changed since `base` was
    /// read is stamped after it, whatever the skew between the backend's clocks.
    ///
    /// `base` holds every row committed before some instant *T* at which its source was
    /// read, and its newest stamp is at most *T* + skew. A row committed after *T* was stamped
    /// at least *T* − skew − commit slack, so after `newest − 2·skew − slack`.
    pub fn cheap_read_date(&self, base: &Snapshot) -> i64 {
        let skew = self.live.load().cache.clock_skew.0;
        let back = (skew * 2 + COMMIT_SLACK).as_millis() as i64;
        base.newest_change().0.saturating_sub(back).max(0)
    }

    /// After the backend acknowledged at `at` a write carrying rows `written`, whose cheap read
    /// against `base` was sent at `sent` and answered `answer`: the patched copy is kept here
    /// and in Redis, and every older copy superseded, before the client hears "ok". When the
    /// answer cannot patch, the ward is renewed by one full read instead.
    pub async fn patch_after_write(
        self: &Arc<Self>,
        base: Arc<Snapshot>,
        answer: Result<Bytes, Refused>,
        written: Vec<RowId>,
        sent: EpochMs,
        at: EpochMs,
    ) -> Option<Arc<Snapshot>> {
        let w = base.key.clone();
        let lock = &self.patch_locks[lock_of(&w)];
        let guard = lock.lock().await;
        let offset = self.live.load().citizens.date_offset();
        let rows = answer.and_then(|b| Ok((patch_rows(&b, offset)?, b)));
        let patched = match rows {
            Ok((rows, raw)) => {
                let made = self.patch(&base, rows, written, sent, at).await;
                made.map(|s| (s, raw))
            }
            Err(refused) => Err(refused),
        };
        let outcome = match &patched {
            Ok(_) => "patched",
            Err(r) => r.as_str(),
        };
        self.metrics
            .write_patches
            .get_or_create(&OutcomeNameLabels { outcome })
            .inc();
        match patched {
            Ok((s, raw)) => {
                self.keep_patched(&s, LogEntry::of(&s, offset, raw), at, guard)
                    .await;
                Some(s)
            }
            Err(refused) => {
                drop(guard);
                tracing::info!(ward = %w, reason = refused.as_str(), "write not patched; the ward is read whole");
                self.acknowledge(&WriteScope::Ward(w), at).await;
                None
            }
        }
    }

    /// Keeps a patched copy here, then stores it in Redis (as `entry` on its patch log), and
    /// only then announces the write acknowledged at `at`: an instance that hears of the write
    /// finds the copy that holds it. Patches of the ward wait (`guard`) until it is stored.
    async fn keep_patched(
        &self,
        s: &Arc<Snapshot>,
        entry: LogEntry,
        at: EpochMs,
        guard: MutexGuard<'_, ()>,
    ) {
        let (scope, key) = (
            WriteScope::Ward(s.key.clone()),
            CacheKey::Ward(s.key.clone()),
        );
        self.raise_watermark(&scope, at);
        let cfg = self.live.load_full();
        self.keep(&key, &Entry::Snapshot(s.clone()), &cfg);
        if let Some(l2) = &self.l2 {
            let ttl = cfg.cache.redis_ttl();
            self.store_patch(l2, s, entry, ttl).await;
            drop(guard);
            l2.publish_watermark(&scope, at).await;
        }
    }

    /// The patched copy, if every written row came back newer than `base` held it.
    async fn patch(
        &self,
        base: &Arc<Snapshot>,
        rows: Vec<PatchRow>,
        written: Vec<RowId>,
        sent: EpochMs,
        at: EpochMs,
    ) -> Result<Arc<Snapshot>, Refused> {
        let key = CacheKey::Ward(base.key.clone());
        // Patches of this ward that ended since `base` was taken are in L1's copy: start there.
        let onto = match self.l1.get(&key) {
            Some(Entry::Snapshot(s))
                if s.built_at == base.built_at && s.seen_at >= base.seen_at =>
            {
                s
            }
            _ => base.clone(),
        };
        let base = base.clone();
        let made = crate::background::run(move || -> Result<Snapshot, Refused> {
            for id in &written {
                let held = base.modified_of(*id).map_err(|_| Refused::Unreadable)?;
                let back = rows
                    .iter()
                    .filter(|r| r.id == *id)
                    .map(|r| r.modified)
                    .max();
                match (held, back) {
                    (None, _) => return Err(Refused::NewRow),
                    (Some(h), Some(b)) if b > h => {}
                    _ => return Err(Refused::NotSeen),
                }
            }
            let seen_at = onto.seen_at.max(sent);
            let mut includes: Vec<EpochMs> = onto.includes.iter().copied().chain([at]).collect();
            includes.retain(|i| *i > seen_at);
            includes.sort_unstable();
            includes.dedup();
            onto.patch(&rows, seen_at, includes.into_boxed_slice())
                .map_err(|_| Refused::Unreadable)?
        });
        made.await.map_err(|_| Refused::Unreadable)?.map(Arc::new)
    }
}

fn lock_of(w: &WardKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    w.hash(&mut h);
    (h.finish() % 64) as usize
}
