//! Prometheus metrics, registered once and shared; `/metrics` renders them in text format.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::route::RouteClass;

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

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Every metric wardgate exports.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ClassLabels, Histogram>,
    pub upstream_requests: Family<OutcomeLabels, Counter>,
    pub upstream_duration: Histogram,
    pub coalesced_waits: Counter,
    pub l1_bytes: Gauge,
    pub l1_entries: Gauge,
    pub redis_errors: Counter,
    pub rate_limited: Family<ClassLabels, Counter>,
    pub builds: Family<SourceLabels, Counter>,
    pub build_duration: Histogram,
    pub build_rows: Counter,
    pub ready: Gauge,
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
            coalesced_waits: Counter::default(),
            l1_bytes: Gauge::default(),
            l1_entries: Gauge::default(),
            redis_errors: Counter::default(),
            rate_limited: Family::default(),
            builds: Family::default(),
            build_duration: latency(),
            build_rows: Counter::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by route class, status and cache result",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to the upstream, by outcome",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Upstream time to response head",
            m.upstream_duration.clone(),
        );
        registry.register(
            "coalesced_waits",
            "Requests that waited on a build another request started",
            m.coalesced_waits.clone(),
        );
        registry.register(
            "l1_bytes",
            "Bytes held by the in-process cache",
            m.l1_bytes.clone(),
        );
        registry.register(
            "l1_entries",
            "Entries held by the in-process cache",
            m.l1_entries.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis commands that failed",
            m.redis_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused with 429, by route class",
            m.rate_limited.clone(),
        );
        registry.register(
            "snapshot_builds",
            "Snapshots and blobs built, by source",
            m.builds.clone(),
        );
        registry.register(
            "snapshot_build_duration_seconds",
            "Time to build a snapshot or blob",
            m.build_duration.clone(),
        );
        registry.register(
            "snapshot_build_rows",
            "Rows put into snapshots",
            m.build_rows.clone(),
        );
        registry.register("ready", "1 when /readyz answers 200", m.ready.clone());
        let info: Family<VersionLabels, Gauge> = Family::default();
        info.get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        registry.register(
            "build_info",
            "wardgate version (canaries are told apart by it)",
            info,
        );
        Metrics { registry, ..m }
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
