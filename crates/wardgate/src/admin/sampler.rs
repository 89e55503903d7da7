//! The last minute of the counters: a background task samples them every second into a ring.
//!
//! The samples are read from the rendered metrics (what `/metrics` exports), so the request
//! path counts nothing more than it already does for Prometheus; a sample keeps only the sums
//! the status page shows, a few hundred bytes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::Metrics;

/// How often the counters are sampled.
pub const EVERY: Duration = Duration::from_secs(1);

/// The span rates are computed over: "the last minute".
pub const WINDOW: Duration = Duration::from_secs(60);

/// Cumulative counts since the start, at one instant: each map is one exported counter summed
/// by the label the status page shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Every answer (`wardgate_requests`).
    pub answers: f64,
    /// Reads (`citizens` and `master` route classes) by cache result.
    pub reads: BTreeMap<String, f64>,
    /// Writes by status class (`2xx`, `4xx`, `5xx`).
    pub writes: BTreeMap<String, f64>,
    /// Writes by what their cheap read came to (`wardgate_write_patches`).
    pub write_patches: BTreeMap<String, f64>,
    /// Backend requests by outcome (`wardgate_upstream_requests`).
    pub backend: BTreeMap<String, f64>,
    pub backend_bytes: f64,
    /// Builds by source (`wardgate_snapshot_builds`).
    pub builds: BTreeMap<String, f64>,
    /// Build durations: (bucket's upper bound in seconds, cumulative count), ascending.
    pub build_buckets: Vec<(f64, f64)>,
    /// 429s of the rate limiter by route class.
    pub rate_limited: BTreeMap<String, f64>,
    /// 429s of the ward budget by whose budget.
    pub ward_budget: BTreeMap<String, f64>,
    /// `STALE` serves by cause.
    pub stale: BTreeMap<String, f64>,
    pub redis_errors: f64,
    /// Replica errors by kind.
    pub replica_errors: BTreeMap<String, f64>,
}

impl Counts {
    /// The counts `metrics` holds now.
    pub fn now(metrics: &Metrics) -> Counts {
        let text = metrics.render();
        let mut c = Counts::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((name, labels, v)) = parse_line(line) {
                c.add(name, &labels, v);
            }
        }
        c.build_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        c
    }

    fn add(&mut self, name: &str, labels: &[(&str, String)], v: f64) {
        let label = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| *n == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let to = |m: &mut BTreeMap<String, f64>, k: &str| {
            *m.entry(k.to_string()).or_default() += v;
        };
        match name {
            "wardgate_requests_total" => {
                self.answers += v;
                match label("route_class") {
                    "citizens" | "master" => to(&mut self.reads, label("cache")),
                    "write" => to(&mut self.writes, &status_class(label("status"))),
                    _ => {}
                }
            }
            "wardgate_upstream_requests_total" => to(&mut self.backend, label("outcome")),
            "wardgate_upstream_bytes_total" => self.backend_bytes += v,
            "wardgate_snapshot_builds_total" => to(&mut self.builds, label("source")),
            "wardgate_snapshot_build_duration_seconds_bucket" => {
                let le = match label("le") {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap_or(f64::INFINITY),
                };
                self.build_buckets.push((le, v));
            }
            "wardgate_rate_limited_total" => to(&mut self.rate_limited, label("route_class")),
            "wardgate_ward_budget_refused_total" => to(&mut self.ward_budget, label("outcome")),
            "wardgate_stale_serves_total" => to(&mut self.stale, label("outcome")),
            "wardgate_write_patches_total" => to(&mut self.write_patches, label("outcome")),
            "wardgate_redis_errors_total" => self.redis_errors += v,
            "wardgate_replica_errors_total" => to(&mut self.replica_errors, label("kind")),
            _ => {}
        }
    }
}

/// `200` → `2xx`.
fn status_class(status: &str) -> String {
    match status.chars().next() {
        Some(c @ '1'..='5') => format!("{c}xx"),
        _ => "other".into(),
    }
}

/// A sample line's labels, names and (unescaped) values.
type Labels<'a> = Vec<(&'a str, String)>;

/// One sample line of the text exposition, `name{k="v",...} value`: its name, labels and
/// value. Label values are unescaped (`\\`, `\"`, `\n`).
fn parse_line(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series.trim(), Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                (i, '"') => break i,
                (_, c) => v.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').trim(), v));
        rest = &after[end + 1..];
    }
    Some((name, labels, value))
}

/// The samples of the last minute, oldest first.
#[derive(Default)]
pub struct Ring {
    samples: Mutex<VecDeque<(Instant, Counts)>>,
}

impl Ring {
    /// Adds a sample, dropping those older than the window needs.
    pub fn push(&self, at: Instant, counts: Counts) {
        let mut s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        s.push_back((at, counts));
        while s
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > WINDOW)
        {
            s.pop_front();
        }
    }

    /// The oldest sample within the window before `now`.
    pub fn oldest(&self, now: Instant) -> Option<(Instant, Counts)> {
        let s = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        s.iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
            .cloned()
    }
}

/// Samples `metrics` into `ring` every [`EVERY`] until `stop` fires.
pub fn spawn(metrics: Arc<Metrics>, ring: Arc<Ring>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => ring.push(Instant::now(), Counts::now(&metrics)),
                _ = stop.changed() => return,
            }
        }
    });
}

/// The `q` quantile (0-1) of the observations between two cumulative bucket lists, as
/// Prometheus's `histogram_quantile` estimates it: linear within the bucket it falls in, the
/// highest finite bound when it falls past them. `None` without observations.
pub fn quantile(q: f64, older: &[(f64, f64)], newer: &[(f64, f64)]) -> Option<f64> {
    let before = |le: f64| {
        older
            .iter()
            .find(|(b, _)| *b == le)
            .map_or(0.0, |(_, n)| *n)
    };
    let delta: Vec<(f64, f64)> = newer.iter().map(|&(le, n)| (le, n - before(le))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, n) in &delta {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = if n > below {
                (rank - below) / (n - below)
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, n);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{OutcomeNameLabels, RequestLabels};
    use crate::route::RouteClass;

    #[test]
    fn lines_of_the_exposition_are_parsed_with_their_labels() {
        let (n, l, v) = parse_line(r#"wardgate_x_total{a="1",b="q\"uo\\te"} 2.5"#).unwrap();
        assert_eq!((n, v), ("wardgate_x_total", 2.5));
        assert_eq!(
            l,
            vec![("a", "1".to_string()), ("b", "q\"uo\\te".to_string())]
        );
        assert_eq!(parse_line("wardgate_up 1").unwrap().0, "wardgate_up");
        assert!(parse_line("wardgate_bad{a=\"1\"").is_none());
        assert!(parse_line("# EOF").is_none());
    }

    #[test]
    fn counts_are_read_from_the_metrics_as_exported() {
        let m = Metrics::new();
        let req = |cache, status, route_class| RequestLabels {
            route_class,
            status,
            cache,
        };
        m.requests
            .get_or_create(&req("HIT", 200, RouteClass::Citizens))
            .inc_by(7);
        m.requests
            .get_or_create(&req("MISS", 200, RouteClass::Master))
            .inc_by(2);
        m.requests
            .get_or_create(&req("PATCHED", 200, RouteClass::Write))
            .inc();
        m.requests
            .get_or_create(&req("NONE", 503, RouteClass::Write))
            .inc();
        m.upstream_bytes.inc_by(1000);
        m.build_duration.observe(0.2);
        let cause = OutcomeNameLabels { outcome: "error" };
        m.stale_serves.get_or_create(&cause).inc_by(3);
        let c = Counts::now(&m);
        assert_eq!(c.answers, 11.0);
        assert_eq!(c.reads.get("HIT"), Some(&7.0));
        assert_eq!(c.reads.get("MISS"), Some(&2.0));
        assert_eq!(c.writes.get("2xx"), Some(&1.0));
        assert_eq!(c.writes.get("5xx"), Some(&1.0));
        assert_eq!(c.backend_bytes, 1000.0);
        assert_eq!(c.stale.get("error"), Some(&3.0));
        assert_eq!(c.build_buckets.last(), Some(&(f64::INFINITY, 1.0)));
        assert_eq!(c.build_buckets.len(), 17, "16 buckets and +Inf");
    }

    #[test]
    fn quantiles_come_from_the_buckets_of_the_window() {
        let older = [(0.1, 10.0), (0.2, 10.0), (f64::INFINITY, 10.0)];
        let newer = [(0.1, 10.0), (0.2, 110.0), (f64::INFINITY, 110.0)];
        // The 100 observations of the window all fall in (0.1, 0.2].
        let p99 = quantile(0.99, &older, &newer).unwrap();
        assert!((p99 - 0.199).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.99, &newer, &newer), None, "no observations");
        let past = [(0.1, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(quantile(0.5, &[], &past), Some(0.1));
    }

    #[test]
    fn the_ring_keeps_one_window() {
        let ring = Ring::default();
        let t0 = Instant::now();
        for s in 0..70u32 {
            let c = Counts {
                answers: f64::from(s),
                ..Counts::default()
            };
            ring.push(t0 + Duration::from_secs(s.into()), c);
        }
        let now = t0 + Duration::from_secs(69);
        let (at, oldest) = ring.oldest(now).unwrap();
        assert_eq!(now - at, WINDOW);
        assert_eq!(oldest.answers, 9.0);
    }
}
