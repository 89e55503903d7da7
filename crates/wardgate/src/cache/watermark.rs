//! Watermarks: per ward and per assembly, the earliest build time a copy must have to be served.
//!
//! Raised when the backend acknowledges a write (here, and on every instance through Redis);
//! a copy read from the source before its watermark is superseded and never served again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::key::{CacheKey, WriteScope};
use crate::params::{AssemblyKey, WardKey};
use crate::time::EpochMs;

#[derive(Default)]
struct Marks {
    wards: HashMap<WardKey, EpochMs>,
    /// Whole-assembly writes: they supersede every ward of the assembly (whole-assembly reads
    /// are answered from the wards' snapshots, so they follow).
    assemblies: HashMap<AssemblyKey, EpochMs>,
}

#[derive(Default)]
pub struct Watermarks(Mutex<Marks>);

impl Watermarks {
    /// The floor a copy of `key` must reach: its ward's watermark or its assembly's, whichever
    /// is later. Blobs (master data) are not written through wardgate: none.
    pub fn floor(&self, key: &CacheKey) -> EpochMs {
        let Ok(m) = self.0.lock() else {
            return EpochMs(i64::MIN);
        };
        let get = |map: &HashMap<AssemblyKey, EpochMs>, a: &AssemblyKey| map.get(a).copied();
        let floor = match key {
            CacheKey::Ward(w) => m
                .wards
                .get(w)
                .copied()
                .max(get(&m.assemblies, &w.assembly_key())),
            CacheKey::Blob(_) => None,
        };
        floor.unwrap_or(EpochMs(i64::MIN))
    }

    /// Raises the watermark of `scope` to `at` (never lowers it).
    pub fn raise(&self, scope: &WriteScope, at: EpochMs) {
        let Ok(mut m) = self.0.lock() else { return };
        let raise = |slot: &mut EpochMs| *slot = (*slot).max(at);
        match scope {
            WriteScope::Ward(w) => raise(m.wards.entry(w.clone()).or_insert(at)),
            WriteScope::Assembly(a) => raise(m.assemblies.entry(a.clone()).or_insert(at)),
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
