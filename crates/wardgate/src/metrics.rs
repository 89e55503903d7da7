//! Prometheus metrics, registered once and shared; `/metrics` renders them in text format.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::route::RouteClass;

/// Numbers each `Metrics`, for the workers' memos of request handles.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// The request counter and duration histogram of the labels a worker counted last.
struct RequestHandles {
    instance: u64,
    labels: RequestLabels,
    counter: Counter,
    duration: Histogram,
}

thread_local! {
    static LAST_REQUEST: RefCell<Option<RequestHandles>> = const { RefCell::new(None) };
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub route_class: RouteClass,
    pub status: u16,
    /// `cache::CacheStatus::as_str`.
    pub cache: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClassLabels {
    pub route_class: RouteClass,
}

/// How an upstream request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    error,
    timeout,
    shed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: &'static str,
}

/// A row field wardgate indexes (`booth_no`, `modifieddate`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FieldLabels {
    pub field: &'static str,
}

/// A phase of a ward build.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

/// A size of send that `runtime.sendfile = "auto"` judges apart: `small` or `large`
/// (`wardgate_sealed::SendSize`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SizeLabels {
    pub size: &'static str,
}

/// A size of send, and a way cached answers reach the socket: `copy` or `sendfile`
/// (`runtime.sendfile`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SizeWayLabels {
    pub size: &'static str,
    pub way: &'static str,
}

/// How a check ended, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeNameLabels {
    pub outcome: &'static str,
}

/// What kind of failure, by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
    /// The git revision or operator-set release label (`build.rs`).
    pub revision: &'static str,
}

/// Every metric wardgate exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ClassLabels, Histogram>,
    pub upstream_requests: Family<OutcomeLabels, Counter>,
    pub upstream_duration: Histogram,
    /// Bytes of answer bodies read from the upstream (builds, writes, pass-through).
    pub upstream_bytes: Counter,
    pub coalesced_waits: Counter,
    pub l1_bytes: Gauge,
    pub l1_entries: Gauge,
    pub derived_bytes: Gauge,
    pub redis_errors: Counter,
    pub rate_limited: Family<ClassLabels, Counter>,
    /// Limiter keys dropped before they had refilled, because a class held `rate_limit.max_keys`
    /// (`limit::table`): the idlest go first.
    pub limiter_evictions: Counter,
    /// Reads refused for their client's ward budget, by whose budget (`device`, `address`).
    pub ward_budget_refused: Family<OutcomeNameLabels, Counter>,
    /// Limiter keys held (addresses and devices, all classes), set at every sweep (5 s).
    pub limiter_keys: Gauge,
    pub builds: Family<SourceLabels, Counter>,
    pub build_duration: Histogram,
    pub build_rows: Counter,
    /// Wards built with rows lacking a readable indexed field.
    pub unindexed_builds: Family<FieldLabels, Counter>,
    /// Filtered reads forwarded because their ward lacks the field they filter on.
    pub unindexed_reads: Family<FieldLabels, Counter>,
    /// Replica shape probes, by outcome (`same`, `differs`, `inconclusive`).
    pub replica_probes: Family<OutcomeNameLabels, Counter>,
    /// 1 while wards are built from the replica, 0 while from the backend.
    pub replica_trusted: Gauge,
    /// Replica operations that failed, by kind: `tls` (handshake, certificate), `timeout`
    /// (`replica.query_timeout`), `server` (refused by the server), `io`, `driver`, `other`.
    pub replica_errors: Family<KindLabels, Counter>,
    /// Compressions made while a request waited (derived answers, each made once).
    pub request_compressions: Counter,
    /// Time per phase of a ward build (`fetch`: the backend's answer read; `chunk`: parsed,
    /// chunked and compressed; `replica`: read and built from the replica).
    pub build_phase: Family<PhaseLabels, Histogram>,
    /// Writes by what their cheap read came to: `patched` into the ward's snapshot, or the
    /// reason the ward was read whole instead (`cache::write`).
    pub write_patches: Family<OutcomeNameLabels, Counter>,
    /// Copies served `STALE`, by cause: `revalidate` (within max stale, renewing), `error`
    /// (older, the upstream failing).
    pub stale_serves: Family<OutcomeNameLabels, Counter>,
    /// Wards the change watch found changed on the replica and renewed (`cache::watch`).
    pub watch_renewals: Counter,
    /// How far behind now the rows the last watch round vouched for are, seconds, set at
    /// scrape: the round's interval and duration plus the replica's lag.
    pub watch_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Log lines dropped because the log pipe did not drain (`logging`), set at scrape.
    pub log_lines_dropped: Gauge,
    /// Times the serving workers entered the real-time class during cold work, since the start,
    /// and 1 if the kernel refused the class (`runtime.realtime_while_cold`), set at scrape.
    pub realtime_entries: Gauge,
    pub realtime_refused: Gauge,
    /// Answers held in sealed memory files, to be sent by `sendfile` (`wardgate_sealed`), set at
    /// scrape: how many, and the memory they take (whole pages).
    pub sealed_answers: Gauge,
    pub sealed_bytes: Gauge,
    /// Answers kept in ordinary memory although large enough to seal (file-descriptor budget
    /// spent, or memfd refused), since the start, set at scrape.
    pub sealed_refused: Gauge,
    /// Bytes sent by `sendfile` from sealed answers, since the start, set at scrape.
    pub sendfile_bytes: Gauge,
    /// The way sealed answers go now, by size of send, set at scrape: 1 `sendfile`, 0 copied.
    pub sendfile_chosen: Family<SizeLabels, Gauge>,
    /// What `runtime.sendfile = "auto"`'s last trials of each size measured each way, the
    /// process's CPU ns per KiB sent, set at scrape (absent until a size's trials have judged).
    pub send_trial_cost: Family<SizeWayLabels, Gauge>,
    pub ready: Gauge,
    /// TLS certificate loads after the start (SIGHUP, or a change of the files seen by the
    /// `tls.reload_every` watch), by outcome: `ok` (new handshakes use it) or `error` (refused;
    /// the pair in force goes on serving).
    pub tls_reloads: Family<OutcomeNameLabels, Counter>,
    /// 1 while Redis answers, 0 while it does not (degraded, still ready), checked every 2 s
    /// (`cache::l2`); -1 before the first check.
    pub redis_up: Gauge,
    /// Tells this registry's handles apart from another's in a worker's memo (`count_request`).
    instance: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wardgate");
        let latency = || Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            upstream_requests: Family::default(),
            upstream_duration: latency(),
            upstream_bytes: Counter::default(),
            coalesced_waits: Counter::default(),
            l1_bytes: Gauge::default(),
            l1_entries: Gauge::default(),
            derived_bytes: Gauge::default(),
            redis_errors: Counter::default(),
            rate_limited: Family::default(),
            limiter_evictions: Counter::default(),
            ward_budget_refused: Family::default(),
            limiter_keys: Gauge::default(),
            builds: Family::default(),
            build_duration: latency(),
            build_rows: Counter::default(),
            unindexed_builds: Family::default(),
            unindexed_reads: Family::default(),
            replica_probes: Family::default(),
            replica_trusted: Gauge::default(),
            replica_errors: Family::default(),
            log_lines_dropped: Gauge::default(),
            realtime_entries: Gauge::default(),
            realtime_refused: Gauge::default(),
            sealed_answers: Gauge::default(),
            sealed_bytes: Gauge::default(),
            sealed_refused: Gauge::default(),
            sendfile_bytes: Gauge::default(),
            sendfile_chosen: Family::default(),
            send_trial_cost: Family::default(),
            request_compressions: Counter::default(),
            build_phase: Family::new_with_constructor(latency),
            write_patches: Family::default(),
            stale_serves: Family::default(),
            watch_renewals: Counter::default(),
            watch_lag_seconds: Gauge::default(),
            ready: Gauge::default(),
            tls_reloads: Family::default(),
            redis_up: {
                let g = Gauge::default();
                g.set(-1);
                g
            },
            registry: Registry::default(),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
        };
        m.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Registers every metric under its exported name (`wardgate_` + name) and help text.
    fn register(&self, r: &mut Registry) {
        r.register(
            "requests",
            "Requests answered, by route class, status and cache result",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head",
            self.request_duration.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests sent to the upstream, by outcome",
            self.upstream_requests.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Upstream time to response head",
            self.upstream_duration.clone(),
        );
        r.register(
            "upstream_bytes",
            "Bytes of answer bodies read from the upstream (builds, writes, pass-through)",
            self.upstream_bytes.clone(),
        );
        r.register(
            "coalesced_waits",
            "Requests that waited on a build another request started",
            self.coalesced_waits.clone(),
        );
        r.register(
            "l1_bytes",
            "Bytes held by the in-process cache",
            self.l1_bytes.clone(),
        );
        r.register(
            "l1_entries",
            "Entries held by the in-process cache",
            self.l1_entries.clone(),
        );
        r.register(
            "derived_bytes",
            "Bytes held by derived answers (booth subsets, deltas, unaligned pages), within their share of L1",
            self.derived_bytes.clone(),
        );
        r.register(
            "redis_errors",
            "Redis commands that failed",
            self.redis_errors.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused with 429, by route class",
            self.rate_limited.clone(),
        );
        r.register(
            "snapshot_builds",
            "Snapshots and blobs built, by source",
            self.builds.clone(),
        );
        r.register(
            "snapshot_build_duration_seconds",
            "Time to build a snapshot or blob",
            self.build_duration.clone(),
        );
        r.register(
            "snapshot_build_rows",
            "Rows put into snapshots",
            self.build_rows.clone(),
        );
        self.register_limiter(r);
        self.register_health(r);
        self.register_rows(r);
        self.register_sealed(r);
        self.register_freshness(r);
    }

    /// The rate limiter's state (`limit`).
    fn register_limiter(&self, r: &mut Registry) {
        r.register(
            "ward_budget_refused",
            "Reads refused with 429 past their client's distinct wards of the day, by whose budget (outcome = device, address)",
            self.ward_budget_refused.clone(),
        );
        r.register(
            "limiter_evictions",
            "Rate-limiter keys evicted before they had refilled, at the key cap",
            self.limiter_evictions.clone(),
        );
        r.register(
            "limiter_keys",
            "Rate-limiter keys held, addresses and devices, all classes",
            self.limiter_keys.clone(),
        );
    }

    /// Readiness, Redis's health, the TLS certificate's reloads.
    fn register_health(&self, r: &mut Registry) {
        r.register("ready", "1 when /readyz answers 200", self.ready.clone());
        r.register(
            "tls_reloads",
            "TLS certificate loads after the start (SIGHUP or changed files), by outcome (ok; error: the certificate in force kept)",
            self.tls_reloads.clone(),
        );
        r.register(
            "redis_up",
            "1 while Redis answers; 0 while it does not (degraded: serving from L1 and the backend, still ready)",
            self.redis_up.clone(),
        );
    }

    /// The row-shape metrics, and the build's identity.
    /// Writes and the change watch (`cache::write`, `cache::watch`).
    fn register_freshness(&self, r: &mut Registry) {
        r.register(
            "write_patches",
            "Writes whose cheap read patched their ward (patched), or why the ward was read whole instead",
            self.write_patches.clone(),
        );
        r.register(
            "stale_serves",
            "Copies served STALE, by cause (revalidate, error)",
            self.stale_serves.clone(),
        );
        r.register(
            "watch_renewals",
            "Wards the change watch found changed on the replica and renewed",
            self.watch_renewals.clone(),
        );
        r.register(
            "watch_lag_seconds",
            "Age of the replica rows the last change-watch round vouched for (interval, round time and replica lag)",
            self.watch_lag_seconds.clone(),
        );
    }

    fn register_sealed(&self, r: &mut Registry) {
        r.register(
            "sealed_answers",
            "Cached answers held in sealed memory files, to be sent with sendfile (runtime.sendfile on, or auto)",
            self.sealed_answers.clone(),
        );
        r.register(
            "sealed_bytes",
            "Memory taken by sealed answers (whole pages), part of L1",
            self.sealed_bytes.clone(),
        );
        r.register(
            "sealed_refused",
            "Answers large enough to seal kept in ordinary memory (descriptor budget spent or memfd refused), since start",
            self.sealed_refused.clone(),
        );
        r.register(
            "sendfile_bytes",
            "Bytes sent with sendfile from sealed answers, since start",
            self.sendfile_bytes.clone(),
        );
        r.register(
            "sendfile_chosen",
            "The way sealed answers go now, by size of send (large: 256 KiB or more): 1 sendfile, 0 copied (runtime.sendfile)",
            self.sendfile_chosen.clone(),
        );
        r.register(
            "send_trial_cpu_ns_per_kib",
            "What auto's last send-path trials of each size measured each way: the process's CPU ns per KiB sent",
            self.send_trial_cost.clone(),
        );
    }

    fn register_rows(&self, r: &mut Registry) {
        r.register(
            "unindexed_builds",
            "Wards built with rows whose field (label) wardgate cannot read; they serve whole",
            self.unindexed_builds.clone(),
        );
        r.register(
            "unindexed_reads",
            "Reads forwarded to the backend because their ward lacks the field they filter on",
            self.unindexed_reads.clone(),
        );
        r.register(
            "replica_probes",
            "Comparisons of a replica-built ward with the backend's, by outcome",
            self.replica_probes.clone(),
        );
        r.register(
            "replica_trusted",
            "1 while wards are built from the replica (its rows matched the backend's), else 0",
            self.replica_trusted.clone(),
        );
        r.register(
            "replica_errors",
            "Read replica operations that failed, by kind (tls, timeout, server, io, driver, other)",
            self.replica_errors.clone(),
        );
        r.register(
            "request_compressions",
            "Compressions made while a request waited (derived answers, each made once)",
            self.request_compressions.clone(),
        );
        r.register(
            "build_phase_seconds",
            "Time per phase of a ward build: fetch (the backend's answer), chunk (parse and compress, as waiters wait for them), parse (the building thread's CPU), compress (the chunks' compression, CPU summed over the pool's threads), store (the Redis copy, after waiters are answered), replica (read and built)",
            self.build_phase.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped since start because stderr did not drain (requests never wait on it)",
            self.log_lines_dropped.clone(),
        );
        r.register(
            "serving_realtime_entries",
            "Times the serving workers entered the real-time class because cold work ran (builds, ward-budget lookups), since start (runtime.realtime_while_cold)",
            self.realtime_entries.clone(),
        );
        r.register(
            "serving_realtime_refused",
            "1 if the kernel refused the serving workers the real-time class (no CAP_SYS_NICE or RLIMIT_RTPRIO)",
            self.realtime_refused.clone(),
        );
        let info: Family<VersionLabels, Gauge> = Family::default();
        info.get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
            revision: env!("WARDGATE_REVISION"),
        })
        .set(1);
        r.register(
            "build_info",
            "wardgate version and release revision (canaries are told apart by it)",
            info,
        );
    }

    /// Counts a finished request by its labels and observes its duration. Each worker keeps
    /// the counter and histogram it used last: a run of like requests (a stream of hits) skips
    /// the families' lock and label hashing.
    pub fn count_request(&self, labels: RequestLabels, elapsed: std::time::Duration) {
        LAST_REQUEST.with_borrow_mut(|memo| {
            let handles = match memo {
                Some(m) if m.instance == self.instance && m.labels == labels => m,
                _ => memo.insert(RequestHandles {
                    instance: self.instance,
                    counter: self.requests.get_or_create(&labels).clone(),
                    duration: self
                        .request_duration
                        .get_or_create(&ClassLabels {
                            route_class: labels.route_class,
                        })
                        .clone(),
                    labels,
                }),
            };
            handles.counter.inc();
            handles.duration.observe(elapsed.as_secs_f64());
        })
    }

    /// Observes how long one phase of a ward build took (`build_phase_seconds`).
    pub fn build_phase_took(&self, phase: &'static str, took: std::time::Duration) {
        let h = self.build_phase.get_or_create(&PhaseLabels { phase });
        h.observe(took.as_secs_f64());
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn labels(status: u16) -> RequestLabels {
        RequestLabels {
            route_class: RouteClass::Citizens,
            status,
            cache: "HIT",
        }
    }

    fn count(m: &Metrics, status: u16) -> u64 {
        m.requests.get_or_create(&labels(status)).get()
    }

    #[test]
    fn a_worker_memo_counts_each_request_in_its_own_registry_and_labels() {
        let (a, b) = (Metrics::new(), Metrics::new());
        for _ in 0..3 {
            a.count_request(labels(200), Duration::from_millis(1));
        }
        b.count_request(labels(200), Duration::from_millis(1));
        a.count_request(labels(304), Duration::from_millis(1));
        a.count_request(labels(200), Duration::from_millis(1));
        assert_eq!((count(&a, 200), count(&a, 304)), (4, 1));
        assert_eq!((count(&b, 200), count(&b, 304)), (1, 0));
        let observed = |m: &Metrics| {
            m.render()
                .lines()
                .find(|l| l.starts_with("wardgate_request_duration_seconds_count"))
                .map(str::to_owned)
        };
        assert!(
            observed(&a).is_some_and(|l| l.ends_with(" 5")),
            "{:?}",
            observed(&a)
        );
        assert!(
            observed(&b).is_some_and(|l| l.ends_with(" 1")),
            "{:?}",
            observed(&b)
        );
    }
}
