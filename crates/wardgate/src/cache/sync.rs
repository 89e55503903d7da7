//! Watermarks from other instances: Redis pub/sub, and a periodic re-read that covers lost
//! messages and brings in the fleet's records of old serves (`overlap`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::key::{CacheKey, WriteScope};
use super::l2::{Announcement, L2};
use super::overlap::Wide;
use super::topology::RedisTarget;
use super::Cache;
use crate::params::WardKey;

impl Cache {
    /// Follows the watermarks other instances raise, for as long as the cache lives.
    pub fn follow_watermarks(self: &Arc<Self>, l2: &Arc<L2>, redis: &RedisTarget) {
        let weak = Arc::downgrade(self);
        l2.subscribe(redis, move |heard| {
            let Some(c) = weak.upgrade() else { return };
            match heard {
                Announcement::Watermark(scope, at) => c.raise_watermark(&scope, at),
                Announcement::PurgeAll => {
                    let n = c.drop_local();
                    tracing::warn!(
                        dropped = n,
                        "purge of every copy announced: dropped this instance's"
                    );
                }
            }
        });
        spawn_recheck(Arc::downgrade(self), l2.clone());
    }
}

/// Pub/sub can lose messages (a reconnect, say): every few seconds the watermarks of the wards
/// held in L1, and of their assemblies, are re-read from Redis, bounding how long a missed
/// write can go unnoticed.
fn spawn_recheck(cache: Weak<Cache>, l2: Arc<L2>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else { return };
            for batch in held_scopes(&cache).chunks(500) {
                for (scope, wm) in batch.iter().zip(l2.watermarks(batch).await) {
                    if let Some(at) = wm {
                        cache.raise_watermark(scope, at);
                    }
                }
            }
            let wards: Vec<WardKey> = held_scopes(&cache)
                .into_iter()
                .filter_map(|s| match s {
                    WriteScope::Ward(w) => Some(w),
                    WriteScope::Assembly(_) => None,
                })
                .collect();
            for batch in wards.chunks(500) {
                for (w, record) in batch.iter().zip(l2.wides(batch).await) {
                    if let Some(wide) = record.as_deref().and_then(Wide::decode) {
                        cache.remember_wide(w, wide);
                    }
                }
            }
        }
    });
}

/// The wards held, and the assemblies they belong to (whole-assembly writes).
fn held_scopes(cache: &Cache) -> Vec<WriteScope> {
    let mut wards = Vec::new();
    let mut assemblies = Vec::new();
    for (k, _) in cache.ward_keys() {
        if let CacheKey::Ward(w) = k {
            assemblies.push(w.assembly_key());
            wards.push(WriteScope::Ward(w));
        }
    }
    assemblies.sort();
    assemblies.dedup();
    wards.extend(assemblies.into_iter().map(WriteScope::Assembly));
    wards
}
