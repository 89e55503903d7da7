//! L1: the in-process cache, least-recently-used entries evicted first, bounded by bytes.

use std::sync::Mutex;

use lru::LruCache;

use super::key::{CacheKey, Entry};

pub struct L1 {
    inner: Mutex<Inner>,
}

/// Entries with the weight they were accounted at: an entry may grow while held (a snapshot's
/// id index is read out on its first write), and must leave with what it came in with.
struct Inner {
    map: LruCache<CacheKey, (Entry, usize)>,
    bytes: usize,
}

impl Default for L1 {
    fn default() -> Self {
        L1 {
            inner: Mutex::new(Inner {
                map: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }
}

impl L1 {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the map consistent (no multi-step updates).
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A hit is a map lookup and an `Arc` clone; the lock is held for nothing else.
    pub fn get(&self, key: &CacheKey) -> Option<Entry> {
        self.lock().map.get(key).map(|(e, _)| e.clone())
    }

    /// Inserts, then evicts least-recently-used entries until within `max_bytes`.
    /// An entry larger than the whole bound is not kept.
    pub fn insert(&self, key: CacheKey, entry: Entry, max_bytes: usize) {
        let w = entry.weight();
        let mut g = self.lock();
        if let Some((_, old)) = g.map.pop(&key) {
            g.bytes -= old;
        }
        if w > max_bytes {
            return;
        }
        g.bytes += w;
        g.map.put(key, (entry, w));
        while g.bytes > max_bytes {
            match g.map.pop_lru() {
                Some((_, (_, old))) => g.bytes -= old,
                None => break,
            }
        }
    }

    pub fn remove(&self, key: &CacheKey) -> Option<Entry> {
        let mut g = self.lock();
        let (old, w) = g.map.pop(key)?;
        g.bytes -= w;
        Some(old)
    }

    /// Removes every entry matching `pred` (purges).
    pub fn remove_where(&self, pred: impl Fn(&CacheKey) -> bool) -> usize {
        let mut g = self.lock();
        let keys: Vec<CacheKey> = g
            .map
            .iter()
            .filter(|(k, _)| pred(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            if let Some((_, w)) = g.map.pop(k) {
                g.bytes -= w;
            }
        }
        keys.len()
    }

    /// (bytes, entries)
    pub fn usage(&self) -> (usize, usize) {
        let g = self.lock();
        (g.bytes, g.map.len())
    }

    /// A copy of the entries, for the admin listing (not on any request path).
    pub fn entries(&self) -> Vec<(CacheKey, Entry)> {
        self.lock()
            .map
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}
