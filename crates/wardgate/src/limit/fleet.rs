//! The limits held across the fleet: each request spends a token of its buckets (its address's
//! ceiling, and its device's quota or its address's own) from a lease this instance holds, and
//! the tokens spent are reported to one GCRA schedule per bucket in Redis in batches
//! (`cache::fleet`), so that N instances behind round-robin give a client its configured rate,
//! not N times it, without a Redis round trip per request.
//!
//! **Invariant:** every token spent is charged to the fleet's schedule once (reported late;
//! forgotten only when Redis does not answer its report, at most a lease), and an instance
//! spends at most `lease` tokens of a bucket that Redis has not yet counted, none while
//! Redis's last answer refused the bucket. `lease` = `lease_share` of the rate or of the
//! burst, whichever is more (at least 1), so with `n` instances a client gets at most its rate,
//! its burst and `2 × n` leases more: `n` spent and not yet reported, `n` spent after the
//! schedule in Redis had run past its burst, before their instances heard.
//!
//! A request whose lease is spent waits for a report of the buckets requests wait on (started
//! at once, one batch for all of them, bounded by `FLEET_TIMEOUT`); every bucket's tokens are
//! reported in a sweep every `SWEEP_EVERY`, so a light client costs Redis one key every few
//! seconds, not one per request. A report that fails leaves the decision to this instance's
//! own limiter.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;

use super::{Bound, ClientIdentity, Limited};
use crate::cache::fleet::{Spent, FLEET_TIMEOUT};
use crate::cache::l2::L2;
use crate::config::{LimitClass, Quota};

/// Buckets one instance remembers per shard; a forgotten bucket's unreported tokens are lost
/// to the schedule (at most a lease each), its state in Redis is not.
const BUCKETS_PER_SHARD: usize = 16_384;
const SHARDS: usize = 16;

/// How often every bucket's unreported tokens are reported (a sweep). Between sweeps only the
/// buckets whose lease is spent are, at once: the bound on overshoot does not depend on the
/// sweep (unreported tokens stay within a lease per bucket), and the longer it is, the more
/// requests of a light client one report carries. What a sweep reports late is charged late:
/// a little early for the client's schedule, never lost.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// A bucket of the fleet, named alike on every instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BucketName {
    class: LimitClass,
    of: Owner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Device(u64),
    Address(IpAddr),
    Ceiling(IpAddr),
}

/// Its name in Redis (under the `rl` kind of the fleet's keys).
impl std::fmt::Display for BucketName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.class.as_str();
        match self.of {
            Owner::Device(d) => write!(f, "{c}:d:{d:016x}"),
            Owner::Address(a) => write!(f, "{c}:a:{a}"),
            Owner::Ceiling(a) => write!(f, "{c}:c:{a}"),
        }
    }
}

/// One bucket as this instance holds it.
struct Held {
    quota: Quota,
    /// Tokens spent here and not yet reported.
    unreported: u32,
    /// Tokens spent here, in a report that has not been answered.
    reporting: u32,
    /// Until when Redis's last answer refused the bucket.
    refused_until: Option<Instant>,
    /// Whether it is in its shard's list of buckets with tokens to report.
    listed: bool,
    /// Whether it is in its shard's list of buckets a request waits on.
    waited: bool,
}

#[derive(Default)]
struct Shard {
    buckets: Option<LruCache<BucketName, Held>>,
    /// Buckets with tokens to report.
    to_report: Vec<BucketName>,
    /// Buckets whose lease is spent and a request waits: the next report's.
    waiting: Vec<BucketName>,
}

impl Shard {
    fn buckets(&mut self) -> &mut LruCache<BucketName, Held> {
        let cap = NonZeroUsize::new(BUCKETS_PER_SHARD).unwrap_or(NonZeroUsize::MIN);
        self.buckets.get_or_insert_with(|| LruCache::new(cap))
    }
}

/// What a try to spend a token found.
enum Spend {
    Spent,
    Refused(Duration),
    /// The lease is spent: the next report decides.
    AwaitReport,
}

/// The outcome of the last report: how many there were, and whether Redis answered it.
#[derive(Clone, Copy, Debug, Default)]
struct Reported {
    count: u64,
    ok: bool,
}

/// This instance's leases of the fleet's buckets and its reports of what it spent.
pub struct FleetLeases {
    shards: Vec<Mutex<Shard>>,
    share: f64,
    /// A report is running.
    reporting: AtomicBool,
    /// A request waits for a report of the buckets in `waiting`.
    urgent: AtomicBool,
    /// A sweep of every bucket is due.
    sweep: AtomicBool,
    /// When the last sweep began, in ns since `epoch`.
    last_sweep: AtomicU64,
    epoch: Instant,
    reports: watch::Sender<Reported>,
}

impl FleetLeases {
    /// `share`: the part of a bucket's rate one lease holds (`rate_limit.lease_share`).
    pub fn new(share: f64) -> FleetLeases {
        FleetLeases {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            share,
            reporting: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            sweep: AtomicBool::new(false),
            last_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
            reports: watch::channel(Reported::default()).0,
        }
    }

    fn shard(&self, name: &BucketName) -> MutexGuard<'_, Shard> {
        // Spreads the lock, nothing more: any stable mix of the name will do.
        let h = match name.of {
            Owner::Device(d) => d,
            Owner::Address(a) | Owner::Ceiling(a) => match a {
                IpAddr::V4(v4) => u64::from(u32::from(v4)),
                IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
            },
        };
        let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59;
        // Every update leaves the shard consistent.
        self.shards[h as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn elapsed_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Tokens of a bucket this instance may spend before Redis has counted them: `share` of
    /// its rate or of its burst, whichever is more (a sync's burst of pages does not wait).
    fn lease(&self, q: Quota) -> u32 {
        (q.rate.max(f64::from(q.burst)) * self.share)
            .floor()
            .clamp(1.0, f64::from(u32::MAX)) as u32
    }

    /// Spends a token of each bucket of `who`: `None` when Redis could not be asked in time
    /// (the caller decides with its own limiter).
    pub async fn check(
        self: &Arc<Self>,
        l2: &Arc<L2>,
        class: LimitClass,
        who: &ClientIdentity,
        quota: Quota,
        ceiling: Quota,
    ) -> Option<Result<(), Limited>> {
        let own = match who.device() {
            Some(d) => (Owner::Device(d.0), quota, Bound::Device),
            None => (Owner::Address(who.address()), quota, Bound::Address),
        };
        let ceiling = (Owner::Ceiling(who.address()), ceiling, Bound::Ceiling);
        // Its own bucket first: a device refused its quota spends nothing of the ceiling it
        // shares with every device behind its address.
        for (of, quota, bound) in [own, ceiling] {
            let name = BucketName { class, of };
            if let Err(l) = self.spend(l2, name, quota, bound).await? {
                return Some(Err(l));
            }
        }
        self.report_if_due(l2);
        Some(Ok(()))
    }

    async fn spend(
        self: &Arc<Self>,
        l2: &Arc<L2>,
        name: BucketName,
        quota: Quota,
        bound: Bound,
    ) -> Option<Result<(), Limited>> {
        // Requests of one client on many connections share its lease: each report lets some
        // through, until Redis refuses the bucket; only a Redis that does not answer within
        // `FLEET_TIMEOUT` leaves the decision to this instance.
        let deadline = tokio::time::Instant::now() + FLEET_TIMEOUT;
        loop {
            let mut reports = self.reports.subscribe();
            match self.try_spend(name, quota) {
                Spend::Spent => return Some(Ok(())),
                Spend::Refused(retry_after) => {
                    return Some(Err(Limited {
                        retry_after,
                        quota,
                        bound,
                    }))
                }
                Spend::AwaitReport => {
                    self.urgent.store(true, Ordering::SeqCst);
                    self.start_report(l2);
                    match tokio::time::timeout_at(deadline, reports.changed()).await {
                        Ok(Ok(())) if reports.borrow().ok => continue,
                        _ => return None,
                    }
                }
            }
        }
    }

    fn try_spend(&self, name: BucketName, quota: Quota) -> Spend {
        let lease = self.lease(quota);
        let now = Instant::now();
        let mut shard = self.shard(&name);
        let held = shard.buckets().get_or_insert_mut(name, || Held {
            quota,
            unreported: 0,
            reporting: 0,
            refused_until: None,
            listed: false,
            waited: false,
        });
        // A reload may change the quota; the bucket's count in Redis carries over.
        held.quota = quota;
        if let Some(until) = held.refused_until {
            if until > now {
                return Spend::Refused(until - now);
            }
            held.refused_until = None;
        }
        if held.unreported + held.reporting >= lease {
            if !held.waited {
                held.waited = true;
                shard.waiting.push(name);
            }
            return Spend::AwaitReport;
        }
        held.unreported += 1;
        if !held.listed {
            held.listed = true;
            shard.to_report.push(name);
        }
        Spend::Spent
    }

    /// Starts a sweep when the last is older than `SWEEP_EVERY`.
    fn report_if_due(self: &Arc<Self>, l2: &Arc<L2>) {
        let now = self.elapsed_ns();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= SWEEP_EVERY.as_nanos() as u64
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.sweep.store(true, Ordering::SeqCst);
            self.start_report(l2);
        }
    }

    /// Runs the reports asked for (`urgent`, `sweep`) now, or right after the one running.
    fn start_report(self: &Arc<Self>, l2: &Arc<L2>) {
        if self.reporting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, l2) = (self.clone(), l2.clone());
        tokio::spawn(async move {
            loop {
                loop {
                    let sweep = me.sweep.swap(false, Ordering::SeqCst);
                    let urgent = me.urgent.swap(false, Ordering::SeqCst);
                    if !(sweep || urgent) {
                        break;
                    }
                    let ok = me.report(&l2, sweep).await;
                    me.reports.send_modify(|r| {
                        r.count += 1;
                        r.ok = ok;
                    });
                }
                me.reporting.store(false, Ordering::SeqCst);
                // A request that asked between the last check and the store above found a
                // report running: run it, unless another task took over.
                let asked = me.urgent.load(Ordering::SeqCst) || me.sweep.load(Ordering::SeqCst);
                if !asked || me.reporting.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    /// Reports, in one batch, the unreported tokens of every bucket (`sweep`) or of those a
    /// request waits on, and applies Redis's answers.
    async fn report(&self, l2: &L2, sweep: bool) -> bool {
        let batch = self.take_unreported(sweep);
        if batch.is_empty() {
            return true;
        }
        let spent: Vec<Spent> = batch
            .iter()
            .map(|(name, quota, tokens)| Spent {
                bucket: name,
                interval: Duration::from_secs_f64(1.0 / quota.rate.max(1e-6)),
                burst: quota.burst.max(1),
                tokens: *tokens,
            })
            .collect();
        let answers = l2.charge(&spent).await;
        let now = Instant::now();
        for (i, (name, _, tokens)) in batch.iter().enumerate() {
            let mut shard = self.shard(name);
            let Some(held) = shard.buckets().peek_mut(name) else {
                continue;
            };
            held.reporting = held.reporting.saturating_sub(*tokens);
            // Unanswered, they may have been charged or not: never sent twice (a bucket is
            // never charged for more than was served), at most a lease forgotten.
            if let Some(Some(wait)) = answers.as_ref().map(|a| a.get(i).copied()) {
                if !wait.is_zero() {
                    held.refused_until = Some(now + wait);
                }
            }
        }
        answers.is_some()
    }

    /// The unreported tokens of every bucket (`sweep`) or of those a request waits on, moved
    /// to `reporting`.
    fn take_unreported(&self, sweep: bool) -> Vec<(BucketName, Quota, u32)> {
        let mut batch = Vec::new();
        for m in &self.shards {
            let mut shard = m.lock().unwrap_or_else(|p| p.into_inner());
            let waiting = std::mem::take(&mut shard.waiting);
            let listed = if sweep {
                std::mem::take(&mut shard.to_report)
            } else {
                Vec::new()
            };
            for name in waiting.iter().chain(&listed) {
                let Some(held) = shard.buckets().peek_mut(name) else {
                    continue;
                };
                held.waited = false;
                if sweep {
                    held.listed = false;
                }
                if held.unreported > 0 {
                    batch.push((*name, held.quota, held.unreported));
                    held.reporting += held.unreported;
                    held.unreported = 0;
                }
            }
        }
        batch
    }
}
