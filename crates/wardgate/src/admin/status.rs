//! `GET /admin/status`: the operator's view as one JSON document of a stable schema (`docs/status.md`).
//!
//! Rates are over the last minute: the counters now against the oldest sample of the ring
//! (`sampler`); coverage and readiness come from the last survey (`coverage`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use super::coverage::{AssemblyCoverage, Survey};
use super::sampler::{self, Counts};
use crate::cache::warm_progress::WarmProgress;
use crate::shared::Shared;
use crate::time::EpochMs;

/// The schema's version: bumped only when a field is removed or changes meaning (fields are
/// added without a bump).
pub const SCHEMA: u32 = 1;

/// The whole document.
#[derive(Debug, Serialize)]
pub struct Status {
    pub schema: u32,
    pub generated_at_ms: i64,
    pub instance: Instance,
    pub ready: Ready,
    /// The span the rates below are over, seconds (up to 60; less just after the start).
    pub window_seconds: f64,
    pub traffic: Traffic,
    pub backend: Backend,
    pub builds: Builds,
    pub writes: Writes,
    pub too_many_requests: TooMany,
    /// `STALE` answers per second, by cause (`revalidate`, `error`).
    pub stale_serves_per_second: BTreeMap<String, f64>,
    pub l1: L1Use,
    pub redis: RedisHealth,
    pub replica: ReplicaHealth,
    pub coverage: CoverageDoc,
    pub warm: WarmDoc,
}

#[derive(Debug, Serialize)]
pub struct Instance {
    /// `version+revision`, as in `X-Wardgate-Version`.
    pub version: &'static str,
    pub started_at_ms: i64,
    pub uptime_seconds: f64,
    /// 1 as started, one more at each reload applied (SIGHUP).
    pub config_generation: u64,
    pub config_loaded_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct Ready {
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Why not, as `/readyz` says; `null` when ready.
    pub reason: Option<String>,
    pub draining: bool,
    pub checked_at_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    /// Every answer, any route and status.
    pub answers_per_second: f64,
    pub answers_total: f64,
    /// Share (0-1) of reads (voter lists and master data) answered from cache, `HIT` or
    /// `STALE`, of all reads answered `HIT`, `STALE`, `MISS` or `PASS`; `null` without reads.
    pub hit_ratio: Option<f64>,
    /// Reads per second by cache result.
    pub reads_per_second: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Backend {
    /// Requests sent to the backend, per second.
    pub requests_per_second: f64,
    /// The same by outcome (`ok`, `error`, `timeout`, `shed`).
    pub by_outcome: BTreeMap<String, f64>,
    /// Answer bytes read from the backend, per second.
    pub bytes_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct Builds {
    /// Ward and master-data builds running now.
    pub in_flight: usize,
    pub per_second: f64,
    /// By source (`upstream`, `replica`, …).
    pub by_source: BTreeMap<String, f64>,
    /// 99th percentile of build time over the window, seconds; `null` without builds.
    pub p99_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Writes {
    pub per_second: f64,
    /// By status class of the answer (`2xx`, `4xx`, `5xx`).
    pub by_status: BTreeMap<String, f64>,
    /// By what their cheap read came to (`patched`, or why the ward was read whole).
    pub patches: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct TooMany {
    /// 429s per second, every cause.
    pub per_second: f64,
    /// Of the rate limiter, by route class.
    pub rate_limited: BTreeMap<String, f64>,
    /// Of the ward budget, by whose budget (`device`, `address`).
    pub ward_budget: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct L1Use {
    /// Whole wards and master data held, bytes, against `bound_bytes`.
    pub bytes: usize,
    pub bound_bytes: usize,
    pub entries: usize,
    /// Derived answers, bytes, against their own share of L1.
    pub derived_bytes: usize,
    pub derived_bound_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct RedisHealth {
    pub configured: bool,
    /// The last health check (every 2 s); `null` without Redis or before the first.
    pub up: Option<bool>,
    pub errors_per_second: f64,
}

#[derive(Debug, Serialize)]
pub struct ReplicaHealth {
    pub configured: bool,
    /// Whether wards are built from it, and why (as `/readyz` says).
    pub state: Option<String>,
    pub trusted: bool,
    pub errors_per_second: BTreeMap<String, f64>,
    /// Age of the rows the last change-watch round vouched for, seconds.
    pub watch_lag_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct CoverageDoc {
    pub checked_at_ms: i64,
    pub snapshot_max_age_seconds: f64,
    pub assemblies: Vec<AssemblyCoverage>,
}

#[derive(Debug, Serialize)]
pub struct WarmDoc {
    /// What the last `wardgate warm` published in Redis (`{prefix}:warm:progress`, kept a
    /// day after its last update): `null` when none did.
    pub run: Option<WarmProgress>,
}

/// The facts of the document, gathered by the admin listener.
pub struct Inputs<'a> {
    pub shared: &'a Shared,
    pub survey: &'a Survey,
    /// The oldest sample of the window, if any.
    pub oldest: Option<(Instant, Counts)>,
    pub started: (Instant, EpochMs),
    /// `admin::readiness`, when draining (answered at once); else the survey's.
    pub draining: Option<Result<(), String>>,
}

/// Builds the document.
pub fn status(i: Inputs<'_>) -> Status {
    let shared = i.shared;
    let now = Counts::now(&shared.metrics);
    let (old, secs) = match &i.oldest {
        Some((at, c)) => (c.clone(), at.elapsed().as_secs_f64()),
        None => (now.clone(), 0.0),
    };
    let w = Window {
        old: &old,
        new: &now,
        secs,
    };
    Status {
        schema: SCHEMA,
        generated_at_ms: EpochMs::now().0,
        instance: instance(shared, i.started),
        ready: ready(i.survey, i.draining),
        window_seconds: secs,
        traffic: traffic(&w),
        backend: backend(&w),
        builds: builds(shared, &w),
        writes: writes(&w),
        too_many_requests: too_many(&w),
        stale_serves_per_second: w.by(|c| &c.stale, &["revalidate", "error"]),
        l1: l1(shared),
        redis: redis(shared, &w),
        replica: replica(shared, &w),
        coverage: CoverageDoc {
            checked_at_ms: i.survey.checked_at.0,
            snapshot_max_age_seconds: shared.live.load().cache.snapshot_max_age.0.as_secs_f64(),
            assemblies: i.survey.assemblies.clone(),
        },
        warm: WarmDoc {
            run: i.survey.warm_run.clone(),
        },
    }
}

/// Two samples and the seconds between them.
struct Window<'a> {
    old: &'a Counts,
    new: &'a Counts,
    secs: f64,
}

impl Window<'_> {
    fn rate(&self, f: impl Fn(&Counts) -> f64) -> f64 {
        if self.secs <= 0.0 {
            return 0.0;
        }
        (f(self.new) - f(self.old)).max(0.0) / self.secs
    }

    /// Per-second rates of one counter by label, `known` labels always present.
    fn by(
        &self,
        f: impl Fn(&Counts) -> &BTreeMap<String, f64>,
        known: &[&str],
    ) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = known.iter().map(|k| (k.to_string(), 0.0)).collect();
        for k in f(self.new).keys() {
            let r = self.rate(|c| f(c).get(k).copied().unwrap_or(0.0));
            out.insert(k.clone(), r);
        }
        out
    }
}

fn instance(shared: &Shared, (at, at_ms): (Instant, EpochMs)) -> Instance {
    Instance {
        version: crate::respond::VERSION,
        started_at_ms: at_ms.0,
        uptime_seconds: at.elapsed().as_secs_f64(),
        config_generation: shared.config_generation.load(Ordering::SeqCst),
        config_loaded_at_ms: shared.config_loaded_at.load(Ordering::SeqCst),
    }
}

fn ready(survey: &Survey, draining: Option<Result<(), String>>) -> Ready {
    let (r, checked_at_ms) = match &draining {
        Some(r) => (r, EpochMs::now().0),
        None => (&survey.ready, survey.checked_at.0),
    };
    Ready {
        ready: r.is_ok(),
        reason: r.as_ref().err().cloned(),
        draining: draining.is_some(),
        checked_at_ms,
    }
}

fn traffic(w: &Window<'_>) -> Traffic {
    let reads = w.by(|c| &c.reads, &["HIT", "STALE", "MISS", "PASS"]);
    let r = |k: &str| reads.get(k).copied().unwrap_or(0.0);
    let all = r("HIT") + r("STALE") + r("MISS") + r("PASS");
    Traffic {
        answers_per_second: w.rate(|c| c.answers),
        answers_total: w.new.answers,
        hit_ratio: (all > 0.0).then(|| (r("HIT") + r("STALE")) / all),
        reads_per_second: reads,
    }
}

fn backend(w: &Window<'_>) -> Backend {
    Backend {
        requests_per_second: w.rate(|c| c.backend.values().sum()),
        by_outcome: w.by(|c| &c.backend, &["ok", "error", "timeout", "shed"]),
        bytes_per_second: w.rate(|c| c.backend_bytes),
    }
}

fn builds(shared: &Shared, w: &Window<'_>) -> Builds {
    Builds {
        in_flight: shared.cache.builds_in_flight(),
        per_second: w.rate(|c| c.builds.values().sum()),
        by_source: w.by(|c| &c.builds, &[]),
        p99_seconds: sampler::quantile(0.99, &w.old.build_buckets, &w.new.build_buckets),
    }
}

fn writes(w: &Window<'_>) -> Writes {
    Writes {
        per_second: w.rate(|c| c.writes.values().sum()),
        by_status: w.by(|c| &c.writes, &["2xx", "4xx", "5xx"]),
        patches: w.by(|c| &c.write_patches, &["patched"]),
    }
}

fn too_many(w: &Window<'_>) -> TooMany {
    let classes = ["citizens", "write", "master", "passthrough"];
    TooMany {
        per_second: w
            .rate(|c| c.rate_limited.values().sum::<f64>() + c.ward_budget.values().sum::<f64>()),
        rate_limited: w.by(|c| &c.rate_limited, &classes),
        ward_budget: w.by(|c| &c.ward_budget, &["device", "address"]),
    }
}

fn l1(shared: &Shared) -> L1Use {
    let cfg = shared.live.load();
    let (bytes, entries) = shared.cache.l1.usage();
    L1Use {
        bytes,
        bound_bytes: cfg.cache.entries_max_bytes(),
        entries,
        derived_bytes: shared.cache.derived.usage().0,
        derived_bound_bytes: cfg.cache.derived_max_bytes(),
    }
}

fn redis(shared: &Shared, w: &Window<'_>) -> RedisHealth {
    let up = shared.cache.l2.as_ref().and_then(|_| {
        match shared.metrics.redis_up.get() {
            -1 => None, // not checked yet
            up => Some(up == 1),
        }
    });
    RedisHealth {
        configured: shared.cache.l2.is_some(),
        up,
        errors_per_second: w.rate(|c| c.redis_errors),
    }
}

fn replica(shared: &Shared, w: &Window<'_>) -> ReplicaHealth {
    let state = shared.cache.replica_state();
    ReplicaHealth {
        configured: state.is_some(),
        state,
        trusted: shared.metrics.replica_trusted.get() == 1,
        errors_per_second: w.by(|c| &c.replica_errors, &[]),
        watch_lag_seconds: shared.cache.watch_lag().map(|d| d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(hit: f64, stale: f64, miss: f64, answers: f64) -> Counts {
        let reads = [("HIT", hit), ("STALE", stale), ("MISS", miss)];
        Counts {
            answers,
            reads: reads.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Counts::default()
        }
    }

    #[test]
    fn rates_and_the_hit_ratio_are_over_the_window() {
        let (old, new) = (
            counts(100.0, 0.0, 50.0, 200.0),
            counts(190.0, 10.0, 50.0, 320.0),
        );
        let w = Window {
            old: &old,
            new: &new,
            secs: 20.0,
        };
        let t = traffic(&w);
        // 100 reads in the window, all from cache: the 50 misses before it do not count.
        assert_eq!(t.hit_ratio, Some(1.0));
        assert_eq!(t.answers_per_second, 6.0);
        assert_eq!(t.answers_total, 320.0);
        assert_eq!(t.reads_per_second["HIT"], 4.5);
        assert_eq!(
            t.reads_per_second["PASS"], 0.0,
            "known results are always listed"
        );
        let still = Window {
            old: &new,
            new: &new,
            secs: 20.0,
        };
        assert_eq!(traffic(&still).hit_ratio, None, "no reads, no ratio");
        let none = Window { secs: 0.0, ..still };
        assert_eq!(traffic(&none).answers_per_second, 0.0);
    }
}
