//! Freshness by change: with a replica, every `replica.watch_every` each held ward's fingerprint
//! is compared with the replica's. A ward whose rows changed is renewed at once; one whose rows
//! did not counts as read when the replica's rows were (the round's start less the replica's
//! lag), so a snapshot stays valid until its rows change. While the replica cannot answer, no
//! ward is vouched for and max age applies again.
//!
//! **Invariant:** a snapshot is vouched for only by a fingerprint equal to its own, read from
//! a replica known to be at most its measured lag behind, and only as of then.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Cache, CacheKey, Entry};
use crate::params::{AssemblyKey, WardKey};
use crate::replica::{Replica, ReplicaError};
use crate::snapshot::Snapshot;
use crate::time::EpochMs;

impl Cache {
    /// Watches the held wards for changes on `replica`, for as long as the cache lives.
    pub fn watch_changes(self: &Arc<Self>, replica: Replica) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move { watch(cache, replica).await });
    }

    /// One round: every held ward's fingerprint against the replica's, assembly by assembly.
    async fn watch_round(self: &Arc<Self>, replica: &Replica) -> Result<(), ReplicaError> {
        let started = EpochMs::now();
        let Some(lag) = replica.lag().await else {
            return Err(ReplicaError::Fingerprint("replica lag unknown".into()));
        };
        let mut found = Vec::new();
        for (a, wards) in self.held_by_assembly() {
            found.push((replica.fingerprints(&a.state, &a.assembly).await?, wards));
        }
        // The replica may have fallen further behind while the round read it.
        let lag = lag.max(replica.measure_lag().await?);
        let as_of = EpochMs(started.0 - lag.as_millis() as i64);
        let mut changed = Vec::new();
        for (theirs, wards) in found {
            for (w, s) in wards {
                let Some(mine) = s.fingerprint else { continue };
                let found = theirs.get(&w.ward).copied().unwrap_or_default();
                if found == mine {
                    s.vouch(as_of);
                } else if s.seen_at <= as_of {
                    // (A copy newer than the replica's rows is not judged by them.)
                    changed.push(w);
                }
            }
        }
        let _ = self.watch_started.compare_exchange(
            i64::MIN,
            as_of.0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.watched_as_of.store(as_of.0, Ordering::Relaxed);
        self.metrics.watch_renewals.inc_by(changed.len() as u64);
        let max_age = self.live.load().cache.snapshot_max_age.0;
        for w in changed {
            tracing::info!(ward = %w, "rows changed on the replica; renewing");
            let key = CacheKey::Ward(w);
            let have = self.l1.get(&key).map(|e| e.seen_at());
            let _ = self.join(&key, max_age, have);
        }
        Ok(())
    }

    /// Vouches for `e` at once if the replica's rows have its fingerprint: a copy from Redis
    /// past max age (the night's warm, in the morning) is then fresh, and no ward is built.
    /// One grouped query for its assembly; false without the watch or on any doubt.
    pub(super) async fn vouch_from_replica(&self, e: &Entry) -> bool {
        let (Entry::Snapshot(s), Some(replica)) = (e, self.builder.replica()) else {
            return false;
        };
        let Some(mine) = s.fingerprint else {
            return false;
        };
        if self.live.load().replica.watch_every.0.is_zero() {
            return false;
        }
        let started = EpochMs::now();
        let Some(lag) = replica.lag().await else {
            return false;
        };
        let Ok(theirs) = replica.fingerprints(&s.key.state, &s.key.assembly).await else {
            return false;
        };
        let as_of = EpochMs(started.0 - lag.as_millis() as i64);
        let same = theirs.get(&s.key.ward).copied().unwrap_or_default() == mine;
        if same && s.seen_at <= as_of {
            s.vouch(as_of);
        }
        same
    }

    /// The snapshots held, grouped by assembly (one replica query each).
    fn held_by_assembly(&self) -> BTreeMap<AssemblyKey, Vec<(WardKey, Arc<Snapshot>)>> {
        let mut out: BTreeMap<AssemblyKey, Vec<_>> = BTreeMap::new();
        for (k, e) in self.l1.entries() {
            if let (CacheKey::Ward(w), Entry::Snapshot(s)) = (k, e) {
                out.entry(w.assembly_key()).or_default().push((w, s));
            }
        }
        out
    }

    /// How far behind the rows the last complete round vouched for are, if any round ended.
    pub fn watch_lag(&self) -> Option<Duration> {
        match self.watched_as_of.load(Ordering::Relaxed) {
            i64::MIN => None,
            at => Some(Duration::from_millis(EpochMs(at).age_ms().max(0) as u64)),
        }
    }
}

async fn watch(cache: Weak<Cache>, replica: Replica) {
    loop {
        let every = match cache.upgrade() {
            Some(c) => c.live.load().replica.watch_every.0,
            None => return,
        };
        if every.is_zero() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::time::sleep(every).await;
        let Some(c) = cache.upgrade() else { return };
        if let Err(e) = c.watch_round(&replica).await {
            // Nothing more is vouched for until a round succeeds: max age applies meanwhile.
            tracing::warn!(error = %e, "change watch round failed");
        }
    }
}
