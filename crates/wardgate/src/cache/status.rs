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

    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::HIT,
        CacheStatus::MISS,
        CacheStatus::STALE,
        CacheStatus::PASS,
        CacheStatus::PATCHED,
        CacheStatus::NONE,
    ];

    /// The status `as_str` names.
    pub fn of_str(s: &str) -> Option<CacheStatus> {
        CacheStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_name() {
        for c in CacheStatus::ALL {
            assert_eq!(CacheStatus::of_str(c.as_str()), Some(c));
        }
        assert_eq!(CacheStatus::of_str("hit"), None);
        assert_eq!(CacheStatus::of_str(""), None);
    }
}
