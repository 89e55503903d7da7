//! One route class's limiter state: GCRA per address and per device of an address, sharded by
//! address, with a hard key cap enforced by evicting the idlest keys.
//!
//! A key's whole state is its *theoretical arrival time* (TAT, ns since the table began): a key
//! whose TAT is not after now has refilled its burst and is the same as no key at all, so it is
//! dropped for free (`Shard::prune`). Past the cap, the keys with the earliest TATs are evicted:
//! they are the ones closest to refilled, so they lose the least; a client that is being
//! refused has the latest TATs and is the last to go. An address's slot stays while it has
//! device slots, so its ceiling and its device count are never forgotten under them.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use super::{Bound, DeviceId};
use crate::config::Quota;

/// Shards per class: each has its own lock, and a sweep or an eviction holds one at a time.
pub const SHARDS: usize = 32;

/// GCRA of one quota, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Gcra {
    /// Time one request costs: 1 / rate.
    interval: u64,
    /// How far ahead of now a TAT may run: burst × interval.
    limit: u64,
}

impl Gcra {
    pub fn new(q: Quota) -> Gcra {
        let interval = (1e9 / q.rate.max(1e-9)).min(u64::MAX as f64 / 4.0) as u64;
        let interval = interval.max(1);
        Gcra {
            interval,
            limit: interval.saturating_mul(u64::from(q.burst.max(1))),
        }
    }

    /// One request at `now`: the key's new TAT if it conforms, else the wait (ns) until it would.
    fn step(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let next = tat.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead <= self.limit {
            Ok(next)
        } else {
            Err(ahead - self.limit)
        }
    }
}

/// An address: its ceiling (every request from it), its own quota (requests without a device
/// header) and how many device slots it holds.
#[derive(Clone, Copy, Debug, Default)]
struct AddrSlot {
    ceiling: u64,
    own: u64,
    devices: u32,
}

impl AddrSlot {
    fn tat(&self) -> u64 {
        self.ceiling.max(self.own)
    }
}

/// A device of an address: its TAT and its address's key.
#[derive(Clone, Copy, Debug)]
struct DevSlot {
    tat: u64,
    addr: u64,
}

/// Keys are already keyed SipHash values: the maps use them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else rather than panic.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

#[derive(Default)]
struct Shard {
    addrs: Map<AddrSlot>,
    devices: Map<DevSlot>,
}

impl Shard {
    fn len(&self) -> usize {
        self.addrs.len() + self.devices.len()
    }

    /// Drops the keys that hold nothing (refilled). Not evictions: nothing is forgotten.
    fn prune(&mut self, now: u64) {
        let Shard { addrs, devices } = self;
        devices.retain(|_, d| {
            let keep = d.tat > now;
            if !keep {
                if let Some(a) = addrs.get_mut(&d.addr) {
                    a.devices = a.devices.saturating_sub(1);
                }
            }
            keep
        });
        addrs.retain(|_, a| a.devices > 0 || a.tat() > now);
    }

    /// Makes room for `needed` new keys under `cap`: first what holds nothing, then the
    /// idlest eighth of the rest. Returns how many keys with state were evicted.
    fn make_room(&mut self, cap: usize, needed: usize, now: u64) -> u64 {
        self.prune(now);
        if self.len() + needed <= cap {
            return 0;
        }
        let target = (cap / 8).max(needed);
        // What may go: devices, and addresses without devices (theirs go with them first).
        let mut tats: Vec<u64> = self.devices.values().map(|d| d.tat).collect();
        tats.extend(
            self.addrs
                .values()
                .filter(|a| a.devices == 0)
                .map(AddrSlot::tat),
        );
        if tats.is_empty() {
            return 0;
        }
        let k = target.min(tats.len()) - 1;
        let threshold = *tats.select_nth_unstable(k).1;
        let mut left = target;
        let Shard { addrs, devices } = self;
        devices.retain(|_, d| {
            if left == 0 || d.tat > threshold {
                return true;
            }
            left -= 1;
            if let Some(a) = addrs.get_mut(&d.addr) {
                a.devices = a.devices.saturating_sub(1);
            }
            false
        });
        addrs.retain(|_, a| {
            if left == 0 || a.devices > 0 || a.tat() > threshold {
                return true;
            }
            left -= 1;
            false
        });
        (target - left) as u64
    }

    /// Frees the tables' spare capacity after a sweep emptied them (a flood leaves big tables).
    fn shrink(&mut self) {
        if self.addrs.capacity() > 2 * self.addrs.len() + 64 {
            self.addrs.shrink_to_fit();
        }
        if self.devices.capacity() > 2 * self.devices.len() + 64 {
            self.devices.shrink_to_fit();
        }
    }
}

/// A refusal: which bound, and how long (ns) until a request would pass it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub bound: Bound,
    pub wait: u64,
}

/// One class's state and its quotas.
pub struct Table {
    /// A device's quota; also an address's own (requests without a device header).
    quota: Gcra,
    /// An address's ceiling over all its requests.
    ceiling: Gcra,
    max_devices: u32,
    /// Keys one shard holds at most.
    shard_cap: usize,
    /// Keys the maps' hashes from: random per process, so no client can aim at one bucket.
    keys: RandomState,
    shards: Vec<Mutex<Shard>>,
}

impl Table {
    pub fn new(quota: Quota, ceiling: Quota, max_devices: u32, max_keys: usize) -> Table {
        Table {
            quota: Gcra::new(quota),
            ceiling: Gcra::new(ceiling),
            max_devices,
            shard_cap: (max_keys / SHARDS).max(2),
            keys: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding a shard leaves counters, never broken invariants: go on.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request from `addr` (and its `device`) at `now`. Returns the keys evicted
    /// to make room for it, and whether it passed.
    pub fn check(
        &self,
        addr: IpAddr,
        device: Option<DeviceId>,
        now: u64,
    ) -> (u64, Result<(), Refusal>) {
        let ak = self.keys.hash_one(addr_bits(addr));
        // The shard from bits the maps do not index or tag by (low bits, top 7 bits).
        let mut s = self.shard((ak >> 32) as usize % SHARDS);
        let needed = 1 + usize::from(device.is_some());
        let evicted = if s.len() + needed > self.shard_cap {
            s.make_room(self.shard_cap, needed, now)
        } else {
            0
        };
        let Shard { addrs, devices } = &mut *s;
        let slot = addrs.entry(ak).or_default();
        let ceiling = self.ceiling.step(slot.ceiling, now);
        let refuse = |bound, wait| Refusal { bound, wait };
        let Some(device) = device else {
            let own = self.quota.step(slot.own, now);
            return match (own, ceiling) {
                (Ok(own), Ok(ceiling)) => {
                    (slot.own, slot.ceiling) = (own, ceiling);
                    (evicted, Ok(()))
                }
                (own, ceiling) => (evicted, Err(worst(own, ceiling, Bound::Address))),
            };
        };
        let dk = self.keys.hash_one((ak, device.0));
        let dev_tat = match devices.get(&dk) {
            Some(d) => Some(d.tat),
            // New device ids past the bound are counted against the address only.
            None if slot.devices >= self.max_devices => None,
            None => Some(0),
        };
        let quota = dev_tat.map(|t| self.quota.step(t, now)).transpose();
        match (quota, ceiling) {
            (Ok(quota), Ok(ceiling)) => {
                slot.ceiling = ceiling;
                if let Some(tat) = quota {
                    let d = devices.entry(dk).or_insert_with(|| {
                        slot.devices += 1;
                        DevSlot { tat, addr: ak }
                    });
                    d.tat = tat;
                }
                (evicted, Ok(()))
            }
            (Err(wait), Ok(_)) => (evicted, Err(refuse(Bound::Device, wait))),
            (quota, ceiling) => (
                evicted,
                Err(worst(quota.map(|_| 0), ceiling, Bound::Device)),
            ),
        }
    }

    /// Drops every key that holds nothing; returns the keys left.
    pub fn sweep(&self, now: u64) -> usize {
        (0..SHARDS)
            .map(|i| {
                let mut s = self.shard(i);
                s.prune(now);
                s.shrink();
                s.len()
            })
            .sum()
    }

    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).len()).sum()
    }
}

/// The refusal that lasts longest of a request's two bounds (at least one refused).
fn worst(own: Result<u64, u64>, ceiling: Result<u64, u64>, own_bound: Bound) -> Refusal {
    let own = own.err().unwrap_or(0);
    let ceiling = ceiling.err().unwrap_or(0);
    if ceiling >= own {
        Refusal {
            bound: Bound::Ceiling,
            wait: ceiling,
        }
    } else {
        Refusal {
            bound: own_bound,
            wait: own,
        }
    }
}

/// An address as one number, IPv4 and IPv6 apart.
fn addr_bits(addr: IpAddr) -> (u8, u128) {
    match addr {
        IpAddr::V4(a) => (4, u128::from(u32::from(a))),
        IpAddr::V6(a) => (6, u128::from(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn q(rate: f64, burst: u32) -> Quota {
        Quota { rate, burst }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(i))
    }

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        let g = Gcra::new(q(1.0, 3));
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.step(tat, 10 * S).unwrap();
        }
        assert_eq!(g.step(tat, 10 * S), Err(S));
        assert!(g.step(tat, 11 * S).is_ok(), "one more a second later");
    }

    #[test]
    fn devices_nest_inside_their_address_ceiling() {
        let t = Table::new(q(1.0, 2), q(1.0, 5), 100, 10_000);
        let now = 5 * S;
        let passed = (0..20)
            .filter(|i| t.check(ip(1), Some(DeviceId(*i)), now).1.is_ok())
            .count();
        assert_eq!(passed, 5, "new device ids buy nothing past the ceiling");
        let r = t.check(ip(1), Some(DeviceId(99)), now).1.unwrap_err();
        assert_eq!(r.bound, Bound::Ceiling);
        // Another address's device has its own quota, and is refused by it first.
        assert!(t.check(ip(2), Some(DeviceId(1)), now).1.is_ok());
        assert!(t.check(ip(2), Some(DeviceId(1)), now).1.is_ok());
        let r = t.check(ip(2), Some(DeviceId(1)), now).1.unwrap_err();
        assert_eq!(r.bound, Bound::Device);
        // Without a device, the address's own quota (the same size as a device's).
        assert!(t.check(ip(3), None, now).1.is_ok());
        assert!(t.check(ip(3), None, now).1.is_ok());
        assert_eq!(
            t.check(ip(3), None, now).1.unwrap_err().bound,
            Bound::Address
        );
    }

    #[test]
    fn device_slots_per_address_are_bounded() {
        let t = Table::new(q(1.0, 1), q(1000.0, 1000), 3, 10_000);
        for i in 0..50 {
            assert!(t.check(ip(1), Some(DeviceId(i)), S).1.is_ok());
        }
        assert_eq!(t.len(), 1 + 3, "the address and its first three devices");
    }

    #[test]
    fn past_the_cap_the_idlest_go_and_the_limited_stay() {
        let t = Table::new(q(0.01, 2), q(0.01, 8), 10, SHARDS * 32);
        let now = S;
        assert!(t.check(ip(7), None, now).1.is_ok());
        assert!(t.check(ip(7), None, now).1.is_ok());
        assert!(t.check(ip(7), None, now).1.is_err());
        let evicted: u64 = (100..5_100).map(|i| t.check(ip(i), None, now).0).sum();
        assert!(t.len() <= SHARDS * 32, "{}", t.len());
        assert!(evicted >= 5_000 - (SHARDS as u64) * 32, "{evicted}");
        assert!(t.check(ip(7), None, now).1.is_err(), "still limited");
        // Swept when everything has refilled.
        assert_eq!(t.sweep(now + 1_000 * S), 0);
    }
}
