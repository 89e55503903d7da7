//! Watermarks: per ward and per assembly, the writes a copy must hold to be served.
//!
//! Raised when the backend acknowledges a write (here, and on every instance through Redis);
//! a copy read from the source before a write's acknowledgement is superseded and never served
//! again, unless a patch saw that very write come back (`Snapshot::includes`).
//!
//! **Invariant:** a copy is served only if every write to its ward acknowledged after its
//! `seen_at` is one it includes, and no whole-assembly write was acknowledged after it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::key::{CacheKey, Entry, WriteScope};
use crate::params::{AssemblyKey, WardKey};
use crate::time::EpochMs;

/// Acknowledgement times remembered per ward; older ones are folded into `forgotten`, which a
/// copy must reach (no patch is vouched for beyond them).
const RECENT_ACKS: usize = 32;

/// One ward's acknowledged writes: the recent ones by time, and the latest of the rest.
#[derive(Default)]
struct WardMarks {
    recent: VecDeque<EpochMs>,
    forgotten: Option<EpochMs>,
}

impl WardMarks {
    fn latest(&self) -> Option<EpochMs> {
        self.recent.iter().copied().max().max(self.forgotten)
    }

    fn raise(&mut self, at: EpochMs) {
        if self.recent.contains(&at) || self.forgotten.is_some_and(|f| f >= at) {
            return;
        }
        self.recent.push_back(at);
        if self.recent.len() > RECENT_ACKS {
            self.forgotten = self.forgotten.max(self.recent.pop_front());
        }
    }

    /// Whether a copy that has seen every write acknowledged up to `seen_at`, and `includes`,
    /// holds every write remembered here.
    fn held_by(&self, seen_at: EpochMs, includes: &[EpochMs]) -> bool {
        self.forgotten.is_none_or(|f| f <= seen_at)
            && self
                .recent
                .iter()
                .all(|at| *at <= seen_at || includes.contains(at))
    }
}

#[derive(Default)]
struct Marks {
    wards: HashMap<WardKey, WardMarks>,
    /// Whole-assembly writes: they supersede every ward of the assembly (whole-assembly reads
    /// are answered from the wards' snapshots, so they follow).
    assemblies: HashMap<AssemblyKey, EpochMs>,
}

impl Marks {
    /// The whole-assembly write `w`'s assembly last had. Checked on every hit: with no such
    /// write remembered (the usual day) it costs no key built for the lookup.
    fn assembly_mark(&self, w: &WardKey) -> Option<EpochMs> {
        if self.assemblies.is_empty() {
            return None;
        }
        self.assemblies.get(&w.assembly_key()).copied()
    }
}

#[derive(Default)]
pub struct Watermarks(Mutex<Marks>);

impl Watermarks {
    /// The latest acknowledgement a copy of `key` read afresh must follow: its ward's or its
    /// assembly's, whichever is later. Blobs (master data) are not written through wardgate:
    /// none.
    pub fn floor(&self, key: &CacheKey) -> EpochMs {
        let Ok(m) = self.0.lock() else {
            return EpochMs(i64::MIN);
        };
        let floor = match key {
            CacheKey::Ward(w) => m
                .wards
                .get(w)
                .and_then(WardMarks::latest)
                .max(m.assembly_mark(w)),
            CacheKey::Blob(_) => None,
        };
        floor.unwrap_or(EpochMs(i64::MIN))
    }

    /// Whether `e` may be served as a copy of `key` (the invariant above).
    pub fn admits(&self, key: &CacheKey, e: &Entry) -> bool {
        let (seen_at, includes) = (e.seen_at(), e.includes());
        let Ok(m) = self.0.lock() else {
            return false;
        };
        match key {
            CacheKey::Ward(w) => {
                m.assembly_mark(w).is_none_or(|a| a <= seen_at)
                    && m.wards
                        .get(w)
                        .is_none_or(|wm| wm.held_by(seen_at, includes))
            }
            CacheKey::Blob(_) => true,
        }
    }

    /// Records a write to `scope` acknowledged at `at`.
    pub fn raise(&self, scope: &WriteScope, at: EpochMs) {
        let Ok(mut m) = self.0.lock() else { return };
        match scope {
            WriteScope::Ward(w) => m.wards.entry(w.clone()).or_default().raise(at),
            WriteScope::Assembly(a) => {
                let slot = m.assemblies.entry(a.clone()).or_insert(at);
                *slot = (*slot).max(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ward(w: &str) -> WardKey {
        WardKey {
            state: "karnataka".into(),
            assembly: "150".into(),
            ward: w.into(),
        }
    }

    fn patched(seen_at: i64, includes: &[i64]) -> Entry {
        let json = br#"[{"id":1,"booth_no":"1","srno":"1","modifieddate":5}]"#;
        let s = crate::snapshot::Snapshot::from_legacy_json(ward("1"), json, EpochMs(1)).unwrap();
        let rows = crate::snapshot::patch_rows(
            br#"[{"id":1,"booth_no":"1","srno":"1","modifieddate":9}]"#,
            crate::time::UtcOffset(0),
        )
        .unwrap();
        let stamps = includes.iter().map(|i| EpochMs(*i)).collect();
        let p = s.patch(&rows, EpochMs(seen_at), stamps).unwrap().unwrap();
        Entry::Snapshot(std::sync::Arc::new(p))
    }

    #[test]
    fn a_patched_copy_holds_its_own_write_but_not_a_concurrent_one() {
        let m = Watermarks::default();
        let key = CacheKey::Ward(ward("1"));
        m.raise(&WriteScope::Ward(ward("1")), EpochMs(10));
        // Read at 20 (after the write acknowledged at 10), the write at 25 its own.
        m.raise(&WriteScope::Ward(ward("1")), EpochMs(25));
        assert!(m.admits(&key, &patched(20, &[25])));
        assert!(
            !m.admits(&key, &patched(20, &[])),
            "the write at 25 is not in it"
        );
        assert!(!m.admits(&key, &patched(5, &[25])), "nor the one at 10");
        // Another instance's write acknowledged at 22, while the read was in flight: the
        // patch cannot vouch for it.
        m.raise(&WriteScope::Ward(ward("1")), EpochMs(22));
        assert!(!m.admits(&key, &patched(20, &[25])));
        assert_eq!(m.floor(&key), EpochMs(25));
        // Past the writes it remembers, a copy must have been read after the forgotten ones.
        for at in 100..100 + RECENT_ACKS as i64 {
            m.raise(&WriteScope::Ward(ward("1")), EpochMs(at));
        }
        assert!(!m.admits(&key, &patched(24, &[25])));
        assert!(m.admits(&key, &patched(200, &[])));
        m.raise(
            &WriteScope::Assembly(ward("1").assembly_key()),
            EpochMs(300),
        );
        assert!(
            !m.admits(&key, &patched(200, &[300])),
            "a whole-assembly write supersedes"
        );
    }

    #[test]
    fn assembly_writes_supersede_its_wards() {
        let m = Watermarks::default();
        assert_eq!(m.floor(&CacheKey::Ward(ward("1"))), EpochMs(i64::MIN));
        m.raise(&WriteScope::Ward(ward("1")), EpochMs(10));
        assert_eq!(m.floor(&CacheKey::Ward(ward("1"))), EpochMs(10));
        assert_eq!(m.floor(&CacheKey::Ward(ward("2"))), EpochMs(i64::MIN));
        m.raise(&WriteScope::Assembly(ward("1").assembly_key()), EpochMs(20));
        assert_eq!(m.floor(&CacheKey::Ward(ward("2"))), EpochMs(20));
        m.raise(&WriteScope::Ward(ward("3")), EpochMs(30));
        m.raise(&WriteScope::Ward(ward("3")), EpochMs(5));
        assert_eq!(
            m.floor(&CacheKey::Ward(ward("3"))),
            EpochMs(30),
            "never lowered"
        );
    }
}
