//! Watermarks: per ward and per assembly, the earliest build time a copy must have to be served.
//!
//! Raised when the backend acknowledges a write (here, and on every instance through Redis);
//! a copy read from the source before its watermark is superseded and never served again.

use std::collections::HashMap;
use std::sync::Mutex;

use super::key::{CacheKey, WriteScope};
use crate::params::{AssemblyKey, WardKey};
use crate::route::CITIZENS_PATH;
use crate::time::EpochMs;

#[derive(Default)]
struct Marks {
    wards: HashMap<WardKey, EpochMs>,
    /// Whole-assembly writes: they supersede every ward of the assembly.
    assemblies: HashMap<AssemblyKey, EpochMs>,
    /// The latest write of either kind within an assembly: whole-assembly pages (cached as
    /// blobs) hold rows of every ward, so any write supersedes them.
    latest_in_assembly: HashMap<AssemblyKey, EpochMs>,
}

#[derive(Default)]
pub struct Watermarks(Mutex<Marks>);

impl Watermarks {
    /// The floor a copy of `key` must reach: its ward's watermark or its assembly's, whichever
    /// is later; for a whole-assembly page, the latest write in the assembly.
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
            CacheKey::Blob(b) => assembly_of_page(b).and_then(|a| get(&m.latest_in_assembly, &a)),
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
        raise(m.latest_in_assembly.entry(scope.assembly()).or_insert(at));
    }
}

/// The assembly of a whole-assembly citizens page cached as a blob (its key is the path and
/// the normalized query wardgate itself built), or `None` for any other blob.
fn assembly_of_page(blob_key: &str) -> Option<AssemblyKey> {
    let query = blob_key.strip_prefix(CITIZENS_PATH)?.strip_prefix('?')?;
    let mut state = None;
    let mut assembly = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "assemblyNo" => assembly = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(AssemblyKey {
        state: state?,
        assembly: assembly?,
    })
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
    fn assembly_writes_supersede_its_wards_and_ward_writes_its_pages() {
        let m = Watermarks::default();
        let page = CacheKey::Blob(format!(
            "{CITIZENS_PATH}?state=karnataka&assemblyNo=150&wardNo=-1&page=0&size=10"
        ));
        assert_eq!(m.floor(&CacheKey::Ward(ward("1"))), EpochMs(i64::MIN));
        m.raise(&WriteScope::Ward(ward("1")), EpochMs(10));
        assert_eq!(m.floor(&CacheKey::Ward(ward("1"))), EpochMs(10));
        assert_eq!(m.floor(&CacheKey::Ward(ward("2"))), EpochMs(i64::MIN));
        assert_eq!(m.floor(&page), EpochMs(10));
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
