//! wardgate: an edge read-cache and sync proxy for the SmartNeta voter-outreach backend.
//!
//! See ARCHITECTURE.md for the bird's-eye view and `proxy` for the life of a request.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod blob;
pub mod cache;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod gzip;
pub mod idle;
pub mod legacy;
pub mod limit;
pub mod metrics;
pub mod params;
pub mod proxy;
pub mod replica;
pub mod respond;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod time;
pub mod upstream;
pub mod warm;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The configuration in force; swapped atomically on reload.
pub type Live = Arc<ArcSwap<config::Config>>;

/// State every stage of a request shares.
pub struct Shared {
    pub live: Live,
    pub metrics: Arc<metrics::Metrics>,
    pub upstream: Arc<upstream::Upstream>,
    pub cache: Arc<cache::Cache>,
    /// Parsed `rate_limit.trusted_proxies`.
    pub trusted: ArcSwap<Vec<ipnet::IpNet>>,
    /// Set on SIGTERM: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Wards that readiness waits for (`ready.warm_targets`).
    pub warm_targets: ArcSwap<Vec<params::WardKey>>,
}
