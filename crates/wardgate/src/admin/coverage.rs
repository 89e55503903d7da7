//! Per assembly, the wards cached fresh, stale or not at all, here and in Redis, with readiness.
//!
//! A survey reads every warm-target ward's state (L1, and three small Redis commands each), so
//! it is taken at most every [`SURVEY_EVERY`] however many pages poll, and only while one does:
//! an instance nobody watches sends Redis nothing for it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::stored::Stored;
use crate::cache::warm_progress::WarmProgress;
use crate::params::WardKey;
use crate::shared::Shared;
use crate::time::EpochMs;

/// The longest a survey is reused.
pub const SURVEY_EVERY: Duration = Duration::from_secs(5);

/// What a survey found.
pub struct Survey {
    pub taken: Instant,
    pub checked_at: EpochMs,
    /// `admin::readiness` then.
    pub ready: Result<(), String>,
    pub assemblies: Vec<AssemblyCoverage>,
    /// What the last `wardgate warm` published (`{prefix}:warm:progress`), if one ran within
    /// a day.
    pub warm_run: Option<WarmProgress>,
}

/// One assembly's wards, by whether a copy may be served.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AssemblyCoverage {
    pub state: String,
    pub assembly: String,
    /// Wards `ready.warm_targets` names in this assembly; `None` when it names none (then only
    /// the wards cached here are known).
    pub target_wards: Option<usize>,
    /// Wards with a copy (here or in Redis) younger than `cache.snapshot_max_age`.
    pub fresh: usize,
    /// Wards whose newest copy is older, but still servable `STALE` (renewing, or while the
    /// backend fails: within `cache.stale_if_error`).
    pub stale: usize,
    /// Target wards without a servable copy; `None` without target wards.
    pub missing: Option<usize>,
    /// Wards this instance holds in L1 (targets or not).
    pub in_l1: usize,
    /// What Redis holds of the target wards; `None` without Redis or target wards, or when
    /// Redis did not answer.
    pub redis: Option<RedisCoverage>,
}

/// The copies Redis holds of an assembly's target wards (this version's format).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RedisCoverage {
    pub wards: usize,
    pub bytes: u64,
    /// When the first of them expires (its TTL ends), epoch ms.
    pub until_first_ms: Option<i64>,
    /// When the last of them expires, epoch ms.
    pub until_last_ms: Option<i64>,
}

/// The last survey, reused for [`SURVEY_EVERY`].
#[derive(Default)]
pub struct Surveys {
    last: tokio::sync::Mutex<Option<Arc<Survey>>>,
}

impl Surveys {
    /// A survey at most [`SURVEY_EVERY`] old; requests arriving while one is taken wait for it.
    pub async fn current(&self, shared: &Shared) -> Arc<Survey> {
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref().filter(|s| s.taken.elapsed() < SURVEY_EVERY) {
            return s.clone();
        }
        let s = Arc::new(survey(shared).await);
        *last = Some(s.clone());
        s
    }
}

/// Ages that sort a copy into fresh, stale or missing.
struct Ages {
    now: EpochMs,
    fresh: Duration,
    servable: Duration,
}

impl Ages {
    fn of(&self, since: EpochMs) -> Class {
        let age = Duration::from_millis((self.now.0 - since.0).max(0) as u64);
        if age <= self.fresh {
            Class::Fresh
        } else if age <= self.servable {
            Class::Stale
        } else {
            Class::Missing
        }
    }
}

enum Class {
    Fresh,
    Stale,
    Missing,
}

async fn survey(shared: &Shared) -> Survey {
    let ready = super::readiness(shared).await;
    let targets = shared.warm_targets.load_full();
    let (stored, warm_run) = match &shared.cache.l2 {
        Some(l2) => {
            let stored = if targets.is_empty() {
                None
            } else {
                l2.stored(&targets).await
            };
            (stored, l2.warm_progress().await)
        }
        None => (None, None),
    };
    let cfg = shared.live.load();
    let now = EpochMs::now();
    let ages = Ages {
        now,
        fresh: cfg.cache.snapshot_max_age.0,
        servable: cfg.cache.stale_if_error_age(),
    };
    let l1: HashMap<WardKey, EpochMs> = shared.cache.l1_wards().into_iter().collect();
    Survey {
        taken: Instant::now(),
        checked_at: now,
        ready,
        assemblies: tally(&targets, stored.as_deref(), &l1, &ages),
        warm_run,
    }
}

/// Sorts every target ward, and every other ward L1 holds, into its assembly's counts.
fn tally(
    targets: &[WardKey],
    stored: Option<&[Option<Stored>]>,
    l1: &HashMap<WardKey, EpochMs>,
    ages: &Ages,
) -> Vec<AssemblyCoverage> {
    let mut by = BTreeMap::new();
    for (i, w) in targets.iter().enumerate() {
        // `None`: Redis did not answer; `Some(None)`: it holds no copy of the ward.
        let redis = stored.map(|s| s.get(i).copied().flatten());
        let newest = l1.get(w).copied().max(redis.flatten().map(|s| s.built_at));
        let a = of(&mut by, w);
        *a.target_wards.get_or_insert(0) += 1;
        let missing = a.missing.get_or_insert(0);
        match newest.map(|t| ages.of(t)) {
            Some(Class::Fresh) => a.fresh += 1,
            Some(Class::Stale) => a.stale += 1,
            Some(Class::Missing) | None => *missing += 1,
        }
        if let Some(redis) = redis {
            add_stored(
                a.redis.get_or_insert_with(Default::default),
                redis,
                ages.now,
            );
        }
    }
    let named: HashSet<&WardKey> = targets.iter().collect();
    for (w, since) in l1 {
        let a = of(&mut by, w);
        a.in_l1 += 1;
        if !named.contains(w) {
            match ages.of(*since) {
                Class::Fresh => a.fresh += 1,
                Class::Stale => a.stale += 1,
                Class::Missing => {}
            }
        }
    }
    by.into_values().collect()
}

/// The counts of `w`'s assembly.
fn of<'a>(
    by: &'a mut BTreeMap<(String, String), AssemblyCoverage>,
    w: &WardKey,
) -> &'a mut AssemblyCoverage {
    by.entry((w.state.clone(), w.assembly.clone()))
        .or_insert_with(|| AssemblyCoverage {
            state: w.state.clone(),
            assembly: w.assembly.clone(),
            ..AssemblyCoverage::default()
        })
}

fn add_stored(r: &mut RedisCoverage, s: Option<Stored>, now: EpochMs) {
    let Some(s) = s else { return };
    r.wards += 1;
    r.bytes += s.bytes;
    if let Some(left) = s.expires_in {
        let until = now.0 + left.as_millis() as i64;
        r.until_first_ms = Some(r.until_first_ms.map_or(until, |t| t.min(until)));
        r.until_last_ms = Some(r.until_last_ms.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ward(a: &str, w: &str) -> WardKey {
        WardKey::parse("Karnataka", a, w).unwrap()
    }

    #[test]
    fn wards_are_counted_by_their_newest_copy_here_or_in_redis() {
        let now = EpochMs(10_000_000);
        let ages = Ages {
            now,
            fresh: Duration::from_secs(300),
            servable: Duration::from_secs(3600),
        };
        let min = |m: i64| EpochMs(now.0 - m * 60_000);
        let targets = [
            ward("150", "1"),
            ward("150", "2"),
            ward("150", "3"),
            ward("150", "4"),
        ];
        let stored = |at, ttl_s| {
            Some(Stored {
                built_at: at,
                bytes: 1000,
                expires_in: Some(Duration::from_secs(ttl_s)),
            })
        };
        // 1: old in L1, fresh in Redis; 2: stale in Redis; 3: too old in Redis; 4: nowhere.
        let redis = [
            stored(min(1), 100),
            stored(min(30), 50),
            stored(min(90), 10),
            None,
        ];
        let l1 = HashMap::from([(ward("150", "1"), min(20)), (ward("151", "9"), min(2))]);
        let got = tally(&targets, Some(&redis), &l1, &ages);
        let redis_coverage = RedisCoverage {
            wards: 3,
            bytes: 3000,
            until_first_ms: Some(now.0 + 10_000),
            until_last_ms: Some(now.0 + 100_000),
        };
        let expect_150 = AssemblyCoverage {
            state: "karnataka".into(),
            assembly: "150".into(),
            target_wards: Some(4),
            fresh: 1,
            stale: 1,
            missing: Some(2),
            in_l1: 1,
            redis: Some(redis_coverage),
        };
        let expect_151 = AssemblyCoverage {
            state: "karnataka".into(),
            assembly: "151".into(),
            fresh: 1,
            in_l1: 1,
            ..AssemblyCoverage::default()
        };
        assert_eq!(got, vec![expect_150, expect_151]);
        // Redis down: the wards are judged by L1 alone.
        let got = tally(&targets, None, &l1, &ages);
        assert_eq!(
            (got[0].stale, got[0].missing, got[0].redis.clone()),
            (1, Some(3), None)
        );
    }
}
