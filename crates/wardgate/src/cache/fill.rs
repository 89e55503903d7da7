//! The build behind a miss: a copy from Redis (there now, caught up from its patch log, or
//! stored by the instance holding the build lock while this one waits), else the source.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{l2, BuildError, Cache, CacheKey, Config, Entry, WriteScope, L2, RETRY_BUILD_AFTER};
use crate::time::EpochMs;

impl Cache {
    /// The build behind a miss: L2 first (another instance may have built it), then the
    /// cross-instance lock, then the source. Runs as its own task (see `coalesce`).
    pub(super) async fn fill(
        self: Arc<Self>,
        key: CacheKey,
        max_age: Duration,
        have: Option<EpochMs>,
    ) -> Result<Entry, BuildError> {
        let cfg: Arc<Config> = self.live.load_full();
        let usable = |e: &Entry| {
            Some(e.seen_at()) > have && self.admits(&key, e) && e.fresh_since().within(max_age)
        };
        let mut lock = l2::Lock::Unavailable;
        if let Some(l2) = &self.l2 {
            if let Some(e) = self.l2_copy(l2, &key, &cfg, &usable, &mut lock).await {
                return Ok(e);
            }
        }
        let result = self.build_and_keep(&key, &cfg).await;
        // Waiters are released as this returns; the Redis copy, then the lock's release (so
        // that other instances waiting on the lock find the copy), follow in the background.
        if let Some(l2) = self.l2.clone() {
            let copy = result.as_ref().ok().cloned();
            let ttl = cfg.cache.redis_ttl();
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                if let Some(e) = copy {
                    let started = Instant::now();
                    l2.put(&key, &e, ttl).await;
                    if let Entry::Snapshot(_) = e {
                        metrics.build_phase_took("store", started.elapsed());
                    }
                }
                if let l2::Lock::Held(token) = &lock {
                    l2.unlock(&key, token).await;
                }
            });
        }
        result
    }

    /// A usable copy from Redis: there now, or built by the instance that holds the build lock
    /// while we wait for it. Leaves `lock` held when this instance is to build.
    async fn l2_copy(
        &self,
        l2: &L2,
        key: &CacheKey,
        cfg: &Config,
        usable: &impl Fn(&Entry) -> bool,
        lock: &mut l2::Lock,
    ) -> Option<Entry> {
        // A write acknowledged by another instance may not have reached us by pub/sub.
        if let CacheKey::Ward(w) = key {
            let scopes = [
                WriteScope::Ward(w.clone()),
                WriteScope::Assembly(w.assembly_key()),
            ];
            for scope in scopes {
                if let Some(at) = l2.watermark(&scope).await {
                    self.raise_watermark(&scope, at);
                }
            }
        }
        // A superseded copy held here catches up from the ward's patch log: no ward is read.
        if let Some(held) = self.l1.get(key) {
            if let Some(e) = self.catch_up(l2, key, &held).await.filter(|e| usable(e)) {
                self.keep(key, &e, cfg);
                return Some(e);
            }
        }
        match l2.get(key).await {
            // Fresh, or unchanged on the replica since (the watch vouches for it now).
            Some(e)
                if usable(&e)
                    || (self.admits(key, &e)
                        && self.vouch_from_replica(&e).await
                        && usable(&e)) =>
            {
                self.keep(key, &e, cfg);
                return Some(e);
            }
            // Too old to be fresh, young enough to stand in if the build fails
            // (stale-if-error; a night-old warm in the morning with the backend down).
            Some(e)
                if e.fresh_since().within(cfg.cache.stale_if_error_age())
                    && self.l1.get(key).is_none_or(|h| h.seen_at() < e.seen_at()) =>
            {
                self.keep(key, &e, cfg);
            }
            _ => {}
        }
        *lock = l2.try_lock(key, cfg.cache.miss_wait.0).await;
        if !matches!(lock, l2::Lock::Busy) {
            return None;
        }
        // Another instance is building it: wait for it to appear rather than build too.
        self.wait_for_other(l2, key, cfg, usable, lock).await
    }

    /// Waits for the instance holding `key`'s build lock to store its copy. A ward's waiters
    /// watch its small root key (`patchlog`), not the copy, and fetch the copy once it moves;
    /// every half second they try the lock, so a holder that died (its lock expired) costs one
    /// more build, by whichever waiter takes the lock, never a stuck ward.
    async fn wait_for_other(
        &self,
        l2: &L2,
        key: &CacheKey,
        cfg: &Config,
        usable: &impl Fn(&Entry) -> bool,
        lock: &mut l2::Lock,
    ) -> Option<Entry> {
        let deadline = Instant::now() + cfg.cache.miss_wait.0;
        let ward = match key {
            CacheKey::Ward(w) => Some(w),
            CacheKey::Blob(_) => None,
        };
        let mut root = match ward {
            Some(w) => l2.root_of(w).await,
            None => None,
        };
        let (mut polls, mut unanswered) = (0u32, 0u32);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            polls += 1;
            let moved = match ward {
                Some(w) => {
                    let now = l2.root_of(w).await;
                    let moved = now.is_some() && now != root;
                    root = now;
                    moved
                }
                None => true, // a blob is small: fetched each time
            };
            if moved {
                if let Some(e) = l2.get(key).await.filter(|e| usable(e)) {
                    self.keep(key, &e, cfg);
                    return Some(e);
                }
            }
            if polls % 10 == 0 {
                *lock = l2.try_lock(key, cfg.cache.miss_wait.0).await;
                match lock {
                    l2::Lock::Held(_) => return None, // the holder is gone: this one builds
                    l2::Lock::Busy => unanswered = 0,
                    // Redis failing twice running: build here rather than wait on it.
                    l2::Lock::Unavailable if unanswered > 0 => return None,
                    l2::Lock::Unavailable => unanswered += 1,
                }
            }
        }
        None
    }

    /// Builds `key` from the source and keeps it in L1 (`fill` stores it in L2 after); a
    /// failure is remembered for `RETRY_BUILD_AFTER`.
    async fn build_and_keep(&self, key: &CacheKey, cfg: &Config) -> Result<Entry, BuildError> {
        let started = Instant::now();
        let built = self.builder.build(key, self.floor(key)).await;
        self.metrics
            .build_duration
            .observe(started.elapsed().as_secs_f64());
        self.note_outcome(key, &built);
        let e = built?;
        if let Entry::Snapshot(s) = &e {
            self.metrics.build_rows.inc_by(s.rows() as u64);
            tracing::info!(key = %key, rows = s.rows(), gzip_bytes = s.gzip_bytes(), ms = started.elapsed().as_millis() as u64, "snapshot built");
        }
        self.keep(key, &e, cfg);
        Ok(e)
    }

    /// Remembers a failed build for `RETRY_BUILD_AFTER`, forgets it on success.
    fn note_outcome(&self, key: &CacheKey, built: &Result<Entry, BuildError>) {
        let Ok(mut failed) = self.failed.lock() else {
            return;
        };
        match built {
            Ok(_) => {
                failed.remove(key);
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "build failed");
                // Entries matter for a second only: sweep them so the map stays small.
                if failed.len() > 10_000 {
                    failed.retain(|_, t| t.elapsed() < RETRY_BUILD_AFTER);
                }
                failed.insert(key.clone(), Instant::now());
            }
        }
    }
}
