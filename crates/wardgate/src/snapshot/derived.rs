//! The derived answers kept with a snapshot: a small LRU of gzip answers for selections other
//! than the full ward, so each is assembled or compressed once per snapshot, not per request.

use bytes::Bytes;

use super::Snapshot;

/// Most derived answers kept per snapshot, and their total size bound.
const DERIVED_ENTRIES: usize = 32;
pub(super) const DERIVED_BYTES: usize = 4 << 20;

/// A derived answer: its body parts and their total length.
pub type Parts = std::sync::Arc<(Vec<Bytes>, usize)>;

/// A small LRU of derived gzip answers, keyed by the selection's hash; the byte bound counts
/// each answer's full length, shared slices included, so it errs on the safe side.
#[derive(Debug)]
pub(super) struct Derived(std::sync::Mutex<(lru::LruCache<u64, Parts>, usize)>);

impl Default for Derived {
    fn default() -> Self {
        let cap =
            std::num::NonZeroUsize::new(DERIVED_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        Derived(std::sync::Mutex::new((lru::LruCache::new(cap), 0)))
    }
}

impl Snapshot {
    /// A derived gzip answer kept for the selection `key`, if any.
    pub fn derived(&self, key: u64) -> Option<Parts> {
        let mut g = self.derived.0.lock().ok()?;
        g.0.get(&key).cloned()
    }

    /// Keeps a derived gzip answer (bounded in count and bytes, least recently used out first).
    pub fn keep_derived(&self, key: u64, parts: Parts) {
        if parts.1 > DERIVED_BYTES {
            return;
        }
        let Ok(mut g) = self.derived.0.lock() else {
            return;
        };
        let (map, bytes) = &mut *g;
        let len = parts.1;
        if let Some(old) = map.put(key, parts) {
            *bytes -= old.1;
        }
        *bytes += len;
        while *bytes > DERIVED_BYTES {
            match map.pop_lru() {
                Some((_, old)) => *bytes -= old.1,
                None => break,
            }
        }
    }
}
