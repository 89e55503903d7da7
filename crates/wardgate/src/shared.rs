//! The state every stage of a request shares.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::cache::Cache;
use crate::config::Live;
use crate::metrics::Metrics;
use crate::params::WardKey;
use crate::upstream::Upstream;

/// State every stage of a request shares.
pub struct Shared {
    pub live: Live,
    /// The generation of `live`: 1 as started, one more at each reload applied (SIGHUP).
    pub config_generation: AtomicU64,
    /// When `live` was last loaded, epoch ms.
    pub config_loaded_at: AtomicI64,
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    pub cache: Arc<Cache>,
    /// Parsed `rate_limit.trusted_proxies`.
    pub trusted: ArcSwap<Vec<ipnet::IpNet>>,
    /// Set on SIGTERM: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Wards that readiness waits for (`ready.warm_targets`).
    pub warm_targets: ArcSwap<Vec<WardKey>>,
    /// The backend's CORS answers, learned per route and `Origin`.
    pub cors: crate::cors::Cors,
    /// The wards each client read today (`[ward_budget]`).
    pub budget: crate::budget::WardBudget,
}
