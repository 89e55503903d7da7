//! The derived budget: gzip answers for selections other than a full ward (booth subsets,
//! deltas, unaligned pages), made once per snapshot and selection and kept, least recently used
//! out first, within their own share of L1, so that they can never push whole wards out.

use std::sync::Mutex;

use bytes::Bytes;
use lru::LruCache;

/// A derived answer is kept under its snapshot's id and the selection's hash.
type DerivedKey = (u64, u64);

/// Derived answers, each one contiguous buffer of its own: what the budget counts is exactly
/// what the entries hold, and no entry keeps a dropped snapshot's bytes alive.
pub struct Derived {
    inner: Mutex<Inner>,
}

struct Inner {
    map: LruCache<DerivedKey, Bytes>,
    bytes: usize,
}

impl Default for Derived {
    fn default() -> Self {
        Derived {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }
}

/// Bytes an entry costs besides its body: the map's slot and the buffer's header.
const ENTRY_OVERHEAD: usize = 96;

impl Derived {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the map and its byte count consistent.
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The answer kept for `variant` of snapshot `snapshot`, if any.
    pub fn get(&self, snapshot: u64, variant: u64) -> Option<Bytes> {
        self.lock().map.get(&(snapshot, variant)).cloned()
    }

    /// Keeps an answer, then evicts least-recently-used ones until within `max_bytes`. The
    /// body is copied into an exactly sized buffer of its own (once per answer), so that the
    /// budget counts what is held: a compressor's buffer has slack, a slice shares a ward's.
    /// The buffer is sealed, so that every send of it is a sendfile (`wardgate_sealed`).
    pub fn keep(&self, snapshot: u64, variant: u64, body: Bytes, max_bytes: usize) {
        let w = body.len() + ENTRY_OVERHEAD;
        if w > max_bytes {
            return;
        }
        let body = wardgate_sealed::seal(&body);
        let mut g = self.lock();
        if let Some(old) = g.map.put((snapshot, variant), body) {
            g.bytes -= old.len() + ENTRY_OVERHEAD;
        }
        g.bytes += w;
        while g.bytes > max_bytes {
            match g.map.pop_lru() {
                Some((_, old)) => g.bytes -= old.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    /// (bytes, entries)
    pub fn usage(&self) -> (usize, usize) {
        let g = self.lock();
        (g.bytes, g.map.len())
    }

    /// Drops every answer (the wipe after an election); how many there were.
    pub fn clear(&self) -> usize {
        let mut g = self.lock();
        let n = g.map.len();
        g.map.clear();
        g.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_holds_and_evicts_least_recently_used_first() {
        let d = Derived::default();
        let body = |n| Bytes::from(vec![7u8; n]);
        let max = 3 * (1000 + ENTRY_OVERHEAD);
        d.keep(1, 1, body(1000), max);
        d.keep(1, 2, body(1000), max);
        d.keep(2, 1, body(1000), max);
        assert!(d.get(1, 1).is_some(), "touch (1,1): (1,2) is now oldest");
        d.keep(2, 2, body(1000), max);
        assert_eq!(d.usage(), (max, 3));
        assert!(d.get(1, 2).is_none());
        assert!(d.get(1, 1).is_some() && d.get(2, 2).is_some());
        d.keep(3, 3, body(max), max);
        assert!(
            d.get(3, 3).is_none(),
            "larger than the whole budget: not kept"
        );
        assert_eq!(d.usage().1, 3);
    }
}
