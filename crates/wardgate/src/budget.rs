//! The ward budget stage: how many distinct wards one client reads in a day (`[ward_budget]`).
//! A volunteer works a few wards; a scraper within the rate limits walks a state's roll ward by
//! ward. Counted fleet-wide in Redis (`cache::fleet`), else by this instance alone.
//!
//! **Invariant:** a ward a client already read today is always served to it again, and a
//! client's wards are looked up in Redis only when new to this instance: the hot path of a
//! volunteer re-syncing its wards costs no Redis call.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;

use lru::LruCache;

use crate::cache::l2::L2;
use crate::params::WardKey;
use crate::time::EpochMs;

/// Clients whose wards of the day this instance remembers (each a few wards: tens of MB at
/// most); one forgotten is asked of Redis again, or starts afresh without Redis.
const CLIENTS_HELD: usize = 200_000;

/// Why a read was refused: the budget it would exceed, and whose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// `device` or `address`.
    pub whose: &'static str,
    pub budget: u32,
    /// Wards read today (fleet-wide when known).
    pub held: u64,
}

/// A client whose wards are counted: a device, or an address. Written as its name in Redis
/// (`dev:<hex>`, `ip:<address>`) only when Redis is asked, not on every re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Device(u64),
    Address(IpAddr),
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Device(d) => write!(f, "dev:{d:016x}"),
            Client::Address(a) => write!(f, "ip:{a}"),
        }
    }
}

/// One client's budget: who, and how many wards it may read.
pub struct Budgeted {
    pub client: Client,
    pub whose: &'static str,
    pub budget: u32,
}

/// The wards each client read today, as this instance knows them.
pub struct WardBudget {
    seen: Mutex<LruCache<Client, Held>>,
}

struct Held {
    day: i64,
    wards: HashSet<WardKey>,
}

impl Default for WardBudget {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(CLIENTS_HELD).unwrap_or(std::num::NonZeroUsize::MIN);
        WardBudget {
            seen: Mutex::new(LruCache::new(cap)),
        }
    }
}

/// Today, as a day number (UTC).
fn today() -> i64 {
    EpochMs::now().0.div_euclid(86_400_000)
}

impl WardBudget {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Client, Held>> {
        // Every update leaves the map consistent.
        match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Admits the read of `wards` by each of `clients` (a device and its address), or names
    /// the first budget it would exceed. Nothing is counted for a refused read.
    pub async fn admit(
        &self,
        l2: Option<&L2>,
        clients: &[Budgeted],
        wards: &[WardKey],
    ) -> Result<(), OverBudget> {
        let day = today();
        let mut any_new = false;
        let mut names: Option<Vec<String>> = None; // the wards as Redis names, made once
        for c in clients {
            let new = self.new_to(c.client, day, wards);
            if new == 0 {
                continue;
            }
            any_new = true;
            let shared = match l2 {
                Some(l2) => {
                    let names = names
                        .get_or_insert_with(|| wards.iter().map(ToString::to_string).collect());
                    let client = c.client.to_string();
                    // A cold morning's first reads wait here before any build of theirs starts.
                    let _cold = crate::cold::ColdWork::start();
                    l2.admit_wards(&client, day, c.budget, names).await
                }
                None => None,
            };
            let (admitted, held) = match shared {
                Some(verdict) => verdict,
                // Redis away: this instance's own count decides.
                None => {
                    let held = self.held(c.client, day);
                    (held + new as u64 <= u64::from(c.budget), held)
                }
            };
            if !admitted {
                return Err(OverBudget {
                    whose: c.whose,
                    budget: c.budget,
                    held,
                });
            }
        }
        // A re-read (the common case: a volunteer syncing its wards) has nothing to remember.
        if any_new {
            for c in clients {
                self.remember(c.client, day, wards);
            }
        }
        Ok(())
    }

    /// How many of `wards` `client` has not read today, as far as this instance knows.
    fn new_to(&self, client: Client, day: i64, wards: &[WardKey]) -> usize {
        let mut g = self.lock();
        match g.get(&client).filter(|h| h.day == day) {
            Some(h) => wards.iter().filter(|w| !h.wards.contains(*w)).count(),
            None => wards.len(),
        }
    }

    fn held(&self, client: Client, day: i64) -> u64 {
        let mut g = self.lock();
        g.get(&client)
            .filter(|h| h.day == day)
            .map_or(0, |h| h.wards.len() as u64)
    }

    fn remember(&self, client: Client, day: i64, wards: &[WardKey]) {
        let mut g = self.lock();
        let h = g.get_or_insert_mut(client, || Held {
            day,
            wards: HashSet::new(),
        });
        if h.day != day {
            *h = Held {
                day,
                wards: HashSet::new(),
            };
        }
        h.wards.extend(wards.iter().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wards(n: std::ops::Range<u32>) -> Vec<WardKey> {
        n.map(|i| WardKey::parse("karnataka", "150", &i.to_string()).unwrap())
            .collect()
    }

    #[test]
    fn clients_are_named_in_redis_as_before() {
        assert_eq!(Client::Device(0xab).to_string(), "dev:00000000000000ab");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Client::Address(ip).to_string(), "ip:10.0.0.1");
    }

    #[tokio::test]
    async fn without_redis_each_client_is_held_to_its_budget_and_rereads_are_free() {
        let b = WardBudget::default();
        let device = |d| Budgeted {
            client: Client::Device(d),
            whose: "device",
            budget: 3,
        };
        let address = || Budgeted {
            client: Client::Address("10.0.0.1".parse().unwrap()),
            whose: "address",
            budget: 5,
        };
        let over = |whose, budget, held| {
            Err(OverBudget {
                whose,
                budget,
                held,
            })
        };
        assert_eq!(
            b.admit(None, &[device(1), address()], &wards(0..3)).await,
            Ok(())
        );
        assert_eq!(
            b.admit(None, &[device(1)], &wards(3..4)).await,
            over("device", 3, 3)
        );
        assert_eq!(
            b.admit(None, &[device(1)], &wards(1..3)).await,
            Ok(()),
            "re-reads"
        );
        // Another device of the same address: its own budget, and the address's.
        assert_eq!(
            b.admit(None, &[device(2), address()], &wards(3..5)).await,
            Ok(())
        );
        assert_eq!(
            b.admit(None, &[device(3), address()], &wards(5..6)).await,
            over("address", 5, 5)
        );
    }
}
