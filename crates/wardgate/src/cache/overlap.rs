//! How far back a delta reaches (see "Deltas without gaps" in ARCHITECTURE.md): the copy a
//! phone got at its last sync may have been incomplete by its age, so a delta dated `d` must
//! reach back the age of any copy of its ward served around `d`, plus the clock skew.
//!
//! Without the change watch, a copy served may be `snapshot_max_age + max_stale` old: the
//! overlap is that plus the skew (the **wide** overlap); an older one (stale-if-error, a
//! night-old warm while the backend is down) is recorded as below. With it, a copy is vouched for every
//! `replica.watch_every`, so served copies are at most two intervals plus the replica's lag
//! (bounded by `replica.max_lag`) old: the **narrow** overlap is that plus the skew and the
//! backend's commit slack (`2 × 5 s + 30 s + 120 s + 10 s` = 170 s by default). Every serve
//! older than that (a `STALE` answer in an outage, a replica lagging past `max_lag`, a ward the
//! watch cannot vouch for) is recorded for its ward, here and in Redis for the fleet, and a
//! delta dated within a recorded stretch gets the wide overlap.
//!
//! **Invariant:** a delta gets the narrow overlap only for a date after this process's watch
//! first vouched for anything, within the last `WIDE_MEMORY`, and outside every recorded
//! stretch of its ward's old serves.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Cache, CacheKey, Entry};
use crate::params::WardKey;
use crate::time::EpochMs;

/// How long old serves are remembered; a delta dated before that gets the wide overlap.
pub const WIDE_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A stretch of time in which copies of a ward older than the narrow bound were served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wide {
    pub first: EpochMs,
    pub last: EpochMs,
    /// The oldest copy served in it, ms.
    pub age_ms: i64,
}

impl Wide {
    /// `first,last,age_ms`, as kept in Redis.
    pub fn encode(&self) -> String {
        format!("{},{},{}", self.first.0, self.last.0, self.age_ms)
    }

    pub fn decode(s: &str) -> Option<Wide> {
        let mut it = s.split(',').map(|p| p.parse::<i64>().ok());
        let (first, last, age_ms) = (it.next()??, it.next()??, it.next()??);
        Some(Wide {
            first: EpochMs(first),
            last: EpochMs(last),
            age_ms,
        })
    }

    fn merge(self, other: Wide) -> Wide {
        Wide {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
            age_ms: self.age_ms.max(other.age_ms),
        }
    }
}

pub(super) type WideServes = HashMap<WardKey, Wide>;

impl Cache {
    /// The narrow bound on a served copy's age while the watch runs; `None` without it.
    pub fn narrow_age(&self) -> Option<Duration> {
        let cfg = self.live.load();
        let watching = self.builder.has_replica()
            && !cfg.replica.watch_every.0.is_zero()
            && self.watch_started.load(Ordering::Relaxed) != i64::MIN;
        watching.then(|| cfg.replica.watch_every.0 * 2 + cfg.replica.max_lag.0)
    }

    /// The overlap for a delta of ward `w` dated `date` (epoch ms, the phone's clock).
    pub fn delta_overlap(&self, w: &WardKey, date: i64) -> Duration {
        let cfg = self.live.load();
        let wide = cfg.cache.effective_delta_overlap();
        // The phone's clock may be off by the skew; the backend stamps a little before it
        // commits (`COMMIT_SLACK`).
        let skew = cfg.cache.clock_skew.0 + super::write::COMMIT_SLACK;
        let skew_ms = skew.as_millis() as i64;
        let recorded = self.wide.lock().ok().and_then(|m| m.get(w).copied());
        let old = recorded
            .filter(|o| date + skew_ms >= o.first.0 && date - skew_ms <= o.last.0)
            .map(|o| Duration::from_millis(o.age_ms.max(0) as u64) + skew);
        let since = self.watch_started.load(Ordering::Relaxed);
        let narrow = match (self.narrow_age(), cfg.cache.delta_overlap) {
            (Some(n), None)
                if date - skew_ms >= since
                    && EpochMs(date).age_ms() <= WIDE_MEMORY.as_millis() as i64 =>
            {
                Some(n + skew)
            }
            _ => None,
        };
        narrow.unwrap_or(wide).max(old.unwrap_or_default())
    }

    /// The oldest a served copy may be without being recorded: the narrow bound while the
    /// watch runs, else max age plus max stale (what the wide overlap covers).
    fn recorded_past(&self) -> Duration {
        self.narrow_age()
            .unwrap_or_else(|| self.live.load().cache.max_served_age())
    }

    /// Records the serve of `e` as a copy of `key` if it is older than `recorded_past`: a
    /// stale-if-error answer, or with the watch on, any copy it does not vouch for.
    pub(super) fn note_served(&self, key: &CacheKey, e: &Entry) {
        let CacheKey::Ward(w) = key else {
            return;
        };
        let age_ms = e.complete_since().age_ms();
        if age_ms <= self.recorded_past().as_millis() as i64 {
            return;
        }
        let now = EpochMs::now();
        let seen = Wide {
            first: now,
            last: now,
            age_ms,
        };
        let grown = self.remember_wide(w, seen);
        if let (Some(wide), Some(l2)) = (grown, self.l2.clone()) {
            let w = w.clone();
            tokio::spawn(async move { l2.put_wide(&w, &wide.encode(), WIDE_MEMORY).await });
        }
    }

    /// Merges `seen` into `w`'s record; the record when it grew by more than a second or in
    /// age (worth telling the fleet).
    pub(super) fn remember_wide(&self, w: &WardKey, seen: Wide) -> Option<Wide> {
        let mut m = self.wide.lock().ok()?;
        let old = m.get(w).copied();
        let merged = old.map_or(seen, |o| o.merge(seen));
        m.insert(w.clone(), merged);
        if m.len() > 100_000 {
            let horizon = EpochMs::now().0 - WIDE_MEMORY.as_millis() as i64;
            m.retain(|_, r| r.last.0 >= horizon);
        }
        let grew = old.is_none_or(|o| merged.last.0 - o.last.0 > 1_000 || merged.age_ms > o.age_ms);
        grew.then_some(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_merges() {
        let a = Wide {
            first: EpochMs(10),
            last: EpochMs(20),
            age_ms: 5,
        };
        assert_eq!(Wide::decode(&a.encode()), Some(a));
        assert_eq!(Wide::decode("1,2"), None);
        let b = Wide {
            first: EpochMs(15),
            last: EpochMs(40),
            age_ms: 3,
        };
        assert_eq!(
            a.merge(b),
            Wide {
                first: EpochMs(10),
                last: EpochMs(40),
                age_ms: 5
            }
        );
    }
}
