//! The limits held across the fleet: each request spends a token of its buckets (its address's
//! ceiling, and its device's quota or its address's own), tokens leased from one GCRA schedule
//! in Redis (`cache::fleet`) a few at a time, so that N instances behind round-robin give a
//! client its configured rate, not N times it.
//!
//! **Invariant:** the overshoot is bounded by the leases: at most `lease` tokens per bucket and
//! instance are spent after their schedule, and a lease lapses once its tokens' schedule has
//! passed. `lease` = `rate × lease_share` (at least 1), so with `n` instances a client gets at
//! most `rate × (1 + n × lease_share)` plus its burst.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::{Bound, ClientIdentity, Limited};
use crate::cache::fleet::Lease;
use crate::cache::l2::L2;
use crate::config::{LimitClass, Quota};

/// Buckets whose leases one instance remembers per shard; a forgotten lease is a few tokens
/// given back to the schedule.
const LEASES_PER_SHARD: usize = 16_384;
const SHARDS: usize = 16;

/// Tokens leased here and not yet spent.
struct Held {
    tokens: u32,
    until: Instant,
}

/// This instance's leases of the fleet's buckets.
pub struct FleetLeases {
    shards: Vec<Mutex<LruCache<String, Held>>>,
    share: f64,
}

/// One bucket a request spends from: its name in Redis, its quota and the bound it stands for.
struct Bucket {
    name: String,
    quota: Quota,
    bound: Bound,
}

impl FleetLeases {
    /// `share`: the part of a bucket's rate one lease takes (`rate_limit.lease_share`).
    pub fn new(share: f64) -> FleetLeases {
        let cap = NonZeroUsize::new(LEASES_PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        FleetLeases {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(cap)))
                .collect(),
            share,
        }
    }

    fn shard(&self, name: &str) -> std::sync::MutexGuard<'_, LruCache<String, Held>> {
        let h = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        let m = &self.shards[h % SHARDS];
        // Every update leaves the map consistent.
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Spends a token of each bucket of `who`: `None` when Redis could not be asked in time
    /// (the caller decides with its own limiter).
    pub async fn check(
        &self,
        l2: &L2,
        class: LimitClass,
        who: &ClientIdentity,
        quota: Quota,
        ceiling: Quota,
    ) -> Option<Result<(), Limited>> {
        let c = class.as_str();
        let own = match who.device() {
            Some(d) => Bucket {
                name: format!("{c}:d:{:016x}", d.0),
                quota,
                bound: Bound::Device,
            },
            None => Bucket {
                name: format!("{c}:a:{}", who.address()),
                quota,
                bound: Bound::Address,
            },
        };
        let ceiling = Bucket {
            name: format!("{c}:c:{}", who.address()),
            quota: ceiling,
            bound: Bound::Ceiling,
        };
        for b in [ceiling, own] {
            if let Err(l) = self.spend(l2, &b).await? {
                return Some(Err(l));
            }
        }
        Some(Ok(()))
    }

    async fn spend(&self, l2: &L2, b: &Bucket) -> Option<Result<(), Limited>> {
        let now = Instant::now();
        if let Some(h) = self.shard(&b.name).get_mut(&b.name) {
            if h.tokens > 0 && h.until > now {
                h.tokens -= 1;
                return Some(Ok(()));
            }
        }
        let interval = Duration::from_secs_f64(1.0 / b.quota.rate.max(1e-6));
        let want = (b.quota.rate * self.share).floor().max(1.0) as u32;
        match l2.lease(&b.name, interval, b.quota.burst, want).await? {
            Lease::Granted(n) => {
                if n > 1 {
                    // Requests of one client on several connections lease at once: each adds
                    // its remainder to what is held, none overwrites another's.
                    let until = now + interval * n;
                    let mut shard = self.shard(&b.name);
                    let held =
                        shard.get_or_insert_mut(b.name.clone(), || Held { tokens: 0, until });
                    if held.until <= now {
                        held.tokens = 0;
                    }
                    held.tokens += n - 1;
                    held.until = held.until.max(until);
                }
                Some(Ok(()))
            }
            Lease::Refused(wait) => Some(Err(Limited {
                retry_after: wait,
                quota: b.quota,
                bound: b.bound,
            })),
        }
    }
}
