//! The ward budget stage: how many distinct wards one client reads in a day (`[ward_budget]`).
//! A volunteer works a few wards; a scraper within the rate limits walks a state's roll ward by
//! ward. Counted fleet-wide in Redis (`cache::fleet`), else by this instance alone.
//!
//! **Invariant:** a ward a client already read today is always served to it again, and a
//! client's wards are looked up in Redis only when new to this instance: the hot path of a
//! volunteer re-syncing its wards costs no Redis call.

use std::collections::HashSet;
use std::sync::Mutex;

use lru::LruCache;

use crate::cache::l2::L2;
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

/// One client's budget: its name in Redis (`dev:…`, `ip:…`) and how many wards it may read.
pub struct Budgeted<'a> {
    pub name: &'a str,
    pub whose: &'static str,
    pub budget: u32,
}

/// The wards each client read today, as this instance knows them.
pub struct WardBudget {
    seen: Mutex<LruCache<String, Held>>,
}

struct Held {
    day: i64,
    wards: HashSet<String>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Held>> {
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
        clients: &[Budgeted<'_>],
        wards: &[String],
    ) -> Result<(), OverBudget> {
        let day = today();
        let mut any_new = false;
        for c in clients {
            let new = self.new_to(c.name, day, wards);
            if new.is_empty() {
                continue;
            }
            any_new = true;
            let shared = match l2 {
                Some(l2) => l2.admit_wards(c.name, day, c.budget, wards).await,
                None => None,
            };
            let (admitted, held) = match shared {
                Some(verdict) => verdict,
                // Redis away: this instance's own count decides.
                None => {
                    let held = self.held(c.name, day);
                    (held + new.len() as u64 <= u64::from(c.budget), held)
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
                self.remember(c.name, day, wards);
            }
        }
        Ok(())
    }

    /// The wards of `wards` that `client` has not read today as far as this instance knows.
    fn new_to<'w>(&self, client: &str, day: i64, wards: &'w [String]) -> Vec<&'w String> {
        let mut g = self.lock();
        match g.get(client).filter(|h| h.day == day) {
            Some(h) => wards.iter().filter(|w| !h.wards.contains(*w)).collect(),
            None => wards.iter().collect(),
        }
    }

    fn held(&self, client: &str, day: i64) -> u64 {
        let mut g = self.lock();
        g.get(client)
            .filter(|h| h.day == day)
            .map_or(0, |h| h.wards.len() as u64)
    }

    fn remember(&self, client: &str, day: i64, wards: &[String]) {
        let mut g = self.lock();
        let h = g.get_or_insert_mut(client.to_string(), || Held {
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

    fn wards(n: std::ops::Range<u32>) -> Vec<String> {
        n.map(|i| format!("karnataka:150:{i}")).collect()
    }

    #[tokio::test]
    async fn without_redis_each_client_is_held_to_its_budget_and_rereads_are_free() {
        let b = WardBudget::default();
        let device = |name| Budgeted {
            name,
            whose: "device",
            budget: 3,
        };
        let address = || Budgeted {
            name: "ip:10.0.0.1",
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
            b.admit(None, &[device("d1"), address()], &wards(0..3))
                .await,
            Ok(())
        );
        assert_eq!(
            b.admit(None, &[device("d1")], &wards(3..4)).await,
            over("device", 3, 3)
        );
        assert_eq!(
            b.admit(None, &[device("d1")], &wards(1..3)).await,
            Ok(()),
            "re-reads"
        );
        // Another device of the same address: its own budget, and the address's.
        assert_eq!(
            b.admit(None, &[device("d2"), address()], &wards(3..5))
                .await,
            Ok(())
        );
        assert_eq!(
            b.admit(None, &[device("d3"), address()], &wards(5..6))
                .await,
            over("address", 5, 5)
        );
    }
}
