//! The limits held across the fleet: each request spends a token of its buckets (its address's
//! ceiling, and its device's quota or its address's own) from a lease this instance holds; a
//! spent lease is reported to one GCRA schedule per bucket in Redis (`cache::fleet`), which
//! answers whether the bucket may go on, so that N instances behind round-robin give a client
//! its configured rate, not N times it, without a Redis round trip per request.
//!
//! **Invariant:** an instance spends at most `lease` tokens of a bucket that Redis has not
//! counted, none while Redis's last answer refused the bucket; what it reports is charged once
//! (a report Redis did not answer is not resent). `lease` = `lease_share` of the rate or of the
//! burst, whichever is more (at least 1), so with `n` instances a client gets at most its rate,
//! its burst and `2 × n` leases more: `n` spent and not yet reported, `n` spent after the
//! schedule in Redis had run past its burst, before their instances heard.
//!
//! A request whose lease is spent waits for a report of the buckets requests wait on (started
//! at once, one batch for all of them, bounded by `FLEET_TIMEOUT`). A light client, one that
//! never spends a lease on an instance, costs Redis nothing: its bucket is dropped once idle
//! (`PRUNE_EVERY`), its few unreported tokens with it. A report that fails leaves the decision
//! to this instance's own limiter.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Bound, ClientIdentity, Limited};
use crate::cache::fleet::{Spent, FLEET_TIMEOUT};
use crate::cache::l2::L2;
use crate::config::{LimitClass, Quota};

/// Buckets one instance holds per shard; past it, new clients are decided by this instance's
/// own limiter until a prune drops idle buckets. 16 × 16,384: a quarter of a million clients
/// within a few seconds.
const BUCKETS_PER_SHARD: usize = 16_384;
const SHARDS: usize = 16;

/// How often idle buckets are dropped: those no request spent from since the last prune, with
/// nothing in a report and no refusal running. Their unreported tokens (fewer than a lease)
/// are forgiven: the client was within its lease here, and is gone.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

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
    /// Whether it is in its shard's list of buckets a request waits on.
    waited: bool,
    /// Whether a request spent from it since the last prune.
    used: bool,
}

impl Held {
    /// Unused since the last prune, and holding nothing the fleet needs: no tokens in a
    /// report, no waiter, no refusal running.
    fn idle(&self, now: Instant) -> bool {
        !self.used
            && self.reporting == 0
            && !self.waited
            && self.refused_until.is_none_or(|t| t <= now)
    }
}

/// Bucket names hash cheaply (a multiply per word): the map's lock, not its hash, is what a
/// client could aim at, and the shards are few.
#[derive(Default)]
struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<BucketName, Held, BuildHasherDefault<Mix>>,
    /// Buckets whose lease is spent and a request waits: the next report's.
    waiting: Vec<BucketName>,
}

/// What a try to spend a token found.
enum Spend {
    Spent,
    Refused(Duration),
    /// The lease is spent: the next report decides.
    AwaitReport,
    /// This instance holds as many buckets as it may: its own limiter decides.
    Untracked,
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
    /// When the last prune began, in ns since `epoch`.
    last_prune: AtomicU64,
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
            last_prune: AtomicU64::new(0),
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
        self.prune_if_due();
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
        // `FLEET_TIMEOUT` leaves the decision to this instance. (The clock is read only when a
        // request waits: a spend within the lease reads none.)
        let mut deadline = None;
        loop {
            match self.try_spend(name, quota) {
                Spend::Spent => return Some(Ok(())),
                Spend::Refused(retry_after) => {
                    return Some(Err(Limited {
                        retry_after,
                        quota,
                        bound,
                    }))
                }
                Spend::Untracked => return None,
                Spend::AwaitReport => {
                    // A report that ends before this subscribes is followed by the one asked
                    // for here.
                    let mut reports = self.reports.subscribe();
                    self.urgent.store(true, Ordering::SeqCst);
                    self.start_report(l2);
                    let deadline = *deadline
                        .get_or_insert_with(|| tokio::time::Instant::now() + FLEET_TIMEOUT);
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
        let mut shard = self.shard(&name);
        if shard.buckets.len() >= BUCKETS_PER_SHARD && !shard.buckets.contains_key(&name) {
            return Spend::Untracked;
        }
        let held = shard.buckets.entry(name).or_insert(Held {
            quota,
            unreported: 0,
            reporting: 0,
            refused_until: None,
            waited: false,
            used: false,
        });
        held.used = true;
        // A reload may change the quota; the bucket's count in Redis carries over.
        held.quota = quota;
        if let Some(until) = held.refused_until {
            let now = Instant::now();
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
        Spend::Spent
    }

    /// Drops idle buckets, off the request, when the last prune is older than `PRUNE_EVERY`.
    fn prune_if_due(self: &Arc<Self>) {
        let now = self.elapsed_ns();
        let last = self.last_prune.load(Ordering::Relaxed);
        let due = now.saturating_sub(last) >= PRUNE_EVERY.as_nanos() as u64;
        if due
            && self
                .last_prune
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.prune());
        }
    }

    fn prune(&self) {
        for m in &self.shards {
            let mut shard = m.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            shard.buckets.retain(|_, h| !h.idle(now));
            for h in shard.buckets.values_mut() {
                h.used = false;
            }
        }
    }

    /// Runs a report of the buckets requests wait on now, or right after the one running.
    fn start_report(self: &Arc<Self>, l2: &Arc<L2>) {
        if self.reporting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, l2) = (self.clone(), l2.clone());
        tokio::spawn(async move {
            loop {
                while me.urgent.swap(false, Ordering::SeqCst) {
                    let ok = me.report(&l2).await;
                    me.reports.send_modify(|r| {
                        r.count += 1;
                        r.ok = ok;
                    });
                }
                me.reporting.store(false, Ordering::SeqCst);
                // A request that asked between the last check and the store above found a
                // report running: run it, unless another task took over.
                if !me.urgent.load(Ordering::SeqCst) || me.reporting.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    /// Reports, in one batch, the unreported tokens of the buckets requests wait on, and
    /// applies Redis's answers.
    async fn report(&self, l2: &L2) -> bool {
        let batch = self.take_unreported();
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
            let Some(held) = shard.buckets.get_mut(name) else {
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

    /// The unreported tokens of the buckets requests wait on, moved to `reporting`.
    fn take_unreported(&self) -> Vec<(BucketName, Quota, u32)> {
        let mut batch = Vec::new();
        for m in &self.shards {
            let mut shard = m.lock().unwrap_or_else(|p| p.into_inner());
            for name in std::mem::take(&mut shard.waiting) {
                let Some(held) = shard.buckets.get_mut(&name) else {
                    continue;
                };
                held.waited = false;
                if held.unreported > 0 {
                    batch.push((name, held.quota, held.unreported));
                    held.reporting += held.unreported;
                    held.unreported = 0;
                }
            }
        }
        batch
    }
}
