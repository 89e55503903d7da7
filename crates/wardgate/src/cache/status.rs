//! What the cache did for a request: the `X-Cache` header and the `cache` metric label.

/// What the cache did for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum CacheStatus {
    /// Served from L1 or L2 within max age.
    HIT,
    /// Built (or joined a build) because nothing usable was cached.
    MISS,
    /// Served past max age: being renewed, or the upstream is failing.
    STALE,
    /// Not cacheable: forwarded to the upstream.
    PASS,
    /// A write: forwarded, and answered from the snapshot its cheap read patched.
    PATCHED,
    /// Answered by wardgate itself without the cache (errors, rate limits).
    NONE,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::HIT => "HIT",
            CacheStatus::MISS => "MISS",
            CacheStatus::STALE => "STALE",
            CacheStatus::PASS => "PASS",
            CacheStatus::PATCHED => "PATCHED",
            CacheStatus::NONE => "NONE",
        }
    }
}
