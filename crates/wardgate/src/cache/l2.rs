//! L2: Redis shared by every instance. Optional, and never a reason to fail a request.
//!
//! **Invariant:** every key embeds the format version of what it holds (and the payload repeats
//! it), so an old and a new wardgate sharing one Redis during a canary never read each other's
//! data. Every Redis error is counted and logged, and the caller carries on as on a miss.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use redis::AsyncCommands;

use super::key::{CacheKey, Entry, WriteScope};
use super::topology::{RedisConn, RedisTarget};
use crate::blob::{self, Blob};
use crate::metrics::Metrics;
use crate::params::WardKey;
use crate::snapshot::{self, Snapshot};
use crate::time::EpochMs;

/// Bound on any one Redis command, so a sick Redis costs a request at most this.
pub(super) const OP_TIMEOUT: Duration = Duration::from_millis(500);

pub struct L2 {
    pub(super) conn: ArcSwapOption<RedisConn>,
    prefix: String,
    pub(super) metrics: Arc<Metrics>,
}

impl L2 {
    /// Starts connecting in the background; until connected, lookups are misses.
    pub fn start(target: &RedisTarget, prefix: &str, metrics: Arc<Metrics>) -> Arc<L2> {
        let l2 = Arc::new(L2 {
            conn: ArcSwapOption::empty(),
            prefix: prefix.to_string(),
            metrics,
        });
        tokio::spawn(super::health::keep_connected(
            Arc::downgrade(&l2),
            target.clone(),
        ));
        l2
    }

    pub(super) fn conn(&self) -> Option<RedisConn> {
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// Whether the last health check found Redis up (`wardgate_redis_up`): no wait.
    pub fn is_up(&self) -> bool {
        self.metrics.redis_up.get() == 1
    }

    /// Whether Redis answers a PING now (readiness).
    pub async fn ping(&self) -> bool {
        let Some(mut c) = self.conn() else {
            return false;
        };
        let r: Result<Result<String, _>, _> =
            tokio::time::timeout(OP_TIMEOUT, redis::cmd("PING").query_async(&mut c)).await;
        matches!(r, Ok(Ok(_)))
    }

    pub(super) fn failed(&self, what: &str, e: impl std::fmt::Display) {
        self.metrics.redis_errors.inc();
        tracing::warn!(error = %e, op = what, "Redis command failed");
    }

    pub fn data_key(&self, key: &CacheKey) -> String {
        match key {
            CacheKey::Ward(w) => self.ward_key(w, snapshot::FORMAT_VERSION),
            CacheKey::Blob(b) => format!("{}:b{}:blob:{}", self.prefix, blob::FORMAT_VERSION, b),
        }
    }

    pub(super) fn ward_key(&self, w: &WardKey, version: u16) -> String {
        self.ward_key_tail(version, &format!("{}:{}:{}", w.state, w.assembly, w.ward))
    }

    /// The data key of format `version` whose tail is `state:assembly:ward` (or a SCAN
    /// pattern of that shape).
    ///
    /// **Invariant:** from format 3 on, every key of one ward (its copy, its build lock) carries
    /// the ward as its Redis Cluster hash tag, `{state:assembly:ward}`, so that they live in one
    /// slot. Watermark keys are the exception: frozen at their first spelling (below).
    fn ward_key_tail(&self, version: u16, tail: &str) -> String {
        let p = &self.prefix;
        if version >= 3 {
            format!("{p}:s{version}:ward:{{{tail}}}")
        } else {
            format!("{p}:s{version}:ward:{tail}")
        }
    }

    /// `{prefix}:wm:` and the data key of the ward as format 1 spelled it; an assembly's has an
    /// empty ward number.
    ///
    /// **Invariant:** watermark keys do not follow the snapshot format version: every version
    /// of wardgate sharing a Redis must see every write. The `s1` in them is frozen (the format
    /// of the release that introduced them), so instances of either side of a format change
    /// read and write the same keys.
    fn watermark_key(&self, scope: &WriteScope) -> String {
        let (a, ward) = match scope {
            WriteScope::Ward(w) => (w.assembly_key(), w.ward.as_str()),
            WriteScope::Assembly(a) => (a.clone(), ""),
        };
        let prefix = &self.prefix;
        format!(
            "{prefix}:wm:{prefix}:s1:ward:{}:{}:{ward}",
            a.state, a.assembly
        )
    }

    /// `{prefix}:{kind}:{name}`, the name as its hash tag: a fleet budget's one key.
    pub(super) fn fleet_key(&self, kind: &str, name: impl std::fmt::Display) -> String {
        format!("{}:{kind}:{{{name}}}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:watermarks", self.prefix)
    }

    /// Records and announces that copies of `scope` built before `at` are superseded.
    pub async fn publish_watermark(&self, scope: &WriteScope, at: EpochMs) {
        let Some(c) = self.conn() else { return };
        let (a, ward) = match scope {
            WriteScope::Ward(w) => (w.assembly_key(), w.ward.as_str()),
            WriteScope::Assembly(a) => (a.clone(), ""),
        };
        let msg = format!("{at}\x1f{}\x1f{}\x1f{ward}", a.state, a.assembly);
        let mut set = redis::cmd("SET");
        set.arg(self.watermark_key(scope))
            .arg(at.0)
            .arg("EX")
            .arg(7 * 86_400);
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(msg);
        // The key and the channel hash to different slots: `each`, not one pipeline.
        let r: Result<Result<Vec<redis::Value>, _>, _> =
            tokio::time::timeout(OP_TIMEOUT, c.each(vec![set, publish])).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => self.failed("SET+PUBLISH watermark", e),
            Err(_) => self.failed("SET+PUBLISH watermark", "timed out"),
        }
    }

    /// The recorded watermark of `scope`, if any.
    pub async fn watermark(&self, scope: &WriteScope) -> Option<EpochMs> {
        let mut c = self.conn()?;
        let r: Result<Result<Option<i64>, _>, _> =
            tokio::time::timeout(OP_TIMEOUT, c.get(self.watermark_key(scope))).await;
        match r {
            Ok(Ok(v)) => v.map(EpochMs),
            Ok(Err(e)) => {
                self.failed("GET watermark", e);
                None
            }
            Err(_) => None,
        }
    }

    /// Watermarks of many keys at once (the periodic re-check that covers lost messages).
    pub async fn watermarks(&self, keys: &[WriteScope]) -> Vec<Option<EpochMs>> {
        let Some(c) = self.conn() else {
            return vec![None; keys.len()];
        };
        let gets = keys.iter().map(|k| get(self.watermark_key(k))).collect();
        let r: Result<Result<Vec<Option<i64>>, _>, _> =
            tokio::time::timeout(OP_TIMEOUT * 4, c.each(gets)).await;
        match r {
            Ok(Ok(v)) if v.len() == keys.len() => v.into_iter().map(|v| v.map(EpochMs)).collect(),
            Ok(Err(e)) => {
                self.failed("GET watermarks", e);
                vec![None; keys.len()]
            }
            _ => vec![None; keys.len()],
        }
    }

    /// Listens for what other instances announce until the process ends, reconnecting as
    /// needed (to the next node named, on a Cluster).
    pub fn subscribe(
        self: &Arc<Self>,
        target: &RedisTarget,
        on: impl Fn(Announcement) + Send + Sync + 'static,
    ) {
        let clients = target.pubsub_clients();
        let channel = self.channel();
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            for client in clients.iter().cycle() {
                if weak.upgrade().is_none() {
                    return;
                }
                match client.get_async_pubsub().await {
                    Ok(ps) => listen(ps, &channel, &on).await,
                    Err(e) => {
                        if let Some(l2) = weak.upgrade() {
                            l2.metrics.redis_errors.inc();
                        }
                        tracing::debug!(error = %e, "Redis pub/sub unreachable; retrying");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn lock_key(&self, key: &CacheKey) -> String {
        format!("{}:lock:{}", self.prefix, self.data_key(key))
    }

    /// The cached entry, or `None` on a miss, a Redis error or data of another format.
    /// A ward missing in this version's format is looked for in the previous one, which
    /// this version reads: during a format rollout the new instances serve what the fleet wrote.
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        let CacheKey::Ward(w) = key else {
            let raw = self.get_raw(&self.data_key(key)).await??;
            return Blob::decode(&raw).map(|b| Entry::Blob(Arc::new(b)));
        };
        match self.get_ward(w, snapshot::FORMAT_VERSION).await? {
            Some(s) => Some(s),
            None => self.get_ward(w, snapshot::PREVIOUS_FORMAT_VERSION).await?,
        }
    }

    /// A ward's copy in `format`: `None` when Redis failed, `Some(None)` when it is absent or
    /// unreadable.
    pub async fn get_ward(&self, w: &WardKey, format: u16) -> Option<Option<Entry>> {
        let k = self.ward_key(w, format);
        let Some(raw) = self.get_raw(&k).await? else {
            return Some(None);
        };
        // Decoding inflates every chunk once to verify it; keep it off the async workers.
        let data = Bytes::from(raw);
        // This format's copy is the root of a patch log: its entries are applied too.
        let log = match format {
            snapshot::FORMAT_VERSION => self.log(w, 0).await.unwrap_or_default(),
            _ => Default::default(),
        };
        let decoded = tokio::task::spawn_blocking(move || {
            let s = Snapshot::decode(data)?;
            match log {
                (Some(root), entries) if root == s.tag && !entries.is_empty() => {
                    super::patchlog::apply(&s, &entries)
                        .ok_or(snapshot::SnapshotError::Corrupt("patch log"))
                }
                _ => Ok(s),
            }
        })
        .await;
        Some(match decoded {
            Ok(Ok(s)) => Some(Entry::Snapshot(Arc::new(s))),
            Ok(Err(e)) => {
                tracing::warn!(key = %k, error = %e, "ignoring stored snapshot");
                None
            }
            Err(_) => None,
        })
    }

    /// `GET key`: `None` when Redis failed, `Some(None)` when the key is absent. A ward's copy
    /// is ~0.6 MB: it gets the time a write of one gets.
    async fn get_raw(&self, k: &str) -> Option<Option<Vec<u8>>> {
        let mut c = self.conn()?;
        match tokio::time::timeout(OP_TIMEOUT * 4, c.get(k)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed("GET", e);
                None
            }
            Err(_) => {
                self.failed("GET", "timed out");
                None
            }
        }
    }

    /// Stores an entry for `ttl` (max age + max stale: past that nobody may serve it).
    /// A ward is stored as the root of its patch log (`patchlog`).
    pub async fn put(&self, key: &CacheKey, entry: &Entry, ttl: Duration) {
        match entry {
            Entry::Snapshot(s) => self.put_root(s, ttl).await,
            Entry::Blob(b) => self.set(&self.data_key(key), b.encode(), ttl).await,
        }
    }

    /// Stores a ward's copy encoded in `format` (`Snapshot::encode_as`) under that format's key:
    /// `warm --formats` writes the previous format for the instances that still run it.
    pub async fn put_ward_as(&self, w: &WardKey, format: u16, data: Vec<u8>, ttl: Duration) {
        self.set(&self.ward_key(w, format), data, ttl).await;
    }

    /// A ward's record of old serves (`cache::overlap`), `first,last,age_ms`, kept for `ttl`.
    pub async fn put_wide(&self, w: &WardKey, record: &str, ttl: Duration) {
        self.set(&self.wide_key(w), record.as_bytes().to_vec(), ttl)
            .await;
    }

    /// The records of old serves of `wards` (one GET each: Cluster-safe).
    pub async fn wides(&self, wards: &[WardKey]) -> Vec<Option<String>> {
        let none = || vec![None; wards.len()];
        let Some(c) = self.conn() else {
            return none();
        };
        let gets = wards.iter().map(|w| get(self.wide_key(w))).collect();
        let r: Result<Result<Vec<Option<String>>, _>, _> =
            tokio::time::timeout(OP_TIMEOUT * 4, c.each(gets)).await;
        match r {
            Ok(Ok(v)) if v.len() == wards.len() => v,
            Ok(Err(e)) => {
                self.failed("GET wide", e);
                none()
            }
            _ => none(),
        }
    }

    /// `{prefix}:wide:{state:assembly:ward}`: the ward as its hash tag, like its copy.
    fn wide_key(&self, w: &WardKey) -> String {
        format!(
            "{}:wide:{{{}:{}:{}}}",
            self.prefix, w.state, w.assembly, w.ward
        )
    }

    async fn set(&self, k: &str, data: Vec<u8>, ttl: Duration) {
        let Some(mut c) = self.conn() else { return };
        let ms = ttl.as_millis().clamp(1_000, u128::from(u32::MAX)) as u64;
        let r: Result<Result<(), _>, _> =
            tokio::time::timeout(OP_TIMEOUT * 4, c.pset_ex(k, data, ms)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed("SET", e),
            Err(_) => self.failed("SET", "timed out"),
        }
    }

    /// A small record shared by the fleet under `{prefix}:{kind}:{name}` (what one instance
    /// learned of the backend, such as its CORS answers): `None` when absent or Redis failed.
    pub async fn get_shared(&self, kind: &str, name: &str) -> Option<Vec<u8>> {
        self.get_raw(&format!("{}:{kind}:{name}", self.prefix))
            .await?
    }

    /// Stores a shared record for `ttl`.
    pub async fn put_shared(&self, kind: &str, name: &str, data: Vec<u8>, ttl: Duration) {
        self.set(&format!("{}:{kind}:{name}", self.prefix), data, ttl)
            .await;
    }

    /// Deletes every ward key matching `pattern_tail` (`state:assembly:ward` or
    /// `state:assembly:*`), in this format and in the previous one (which `get` falls back to),
    /// walking the keyspace with SCAN so Redis is never blocked.
    pub async fn delete_matching(&self, pattern_tail: &str) -> usize {
        let mut n = 0;
        for v in [snapshot::FORMAT_VERSION, snapshot::PREVIOUS_FORMAT_VERSION] {
            let pattern = self.ward_key_tail(v, pattern_tail);
            n += self.scan_and_delete(&pattern).await;
        }
        n
    }

    /// Deletes every key under this prefix (every format, lock, watermark and record: the
    /// wipe after an election), then tells every instance to drop its own copies. The count
    /// of keys removed; `None` when Redis failed before the walk was done.
    pub async fn delete_all(&self) -> Option<usize> {
        let c = self.conn()?;
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        let keys = match c.scan(&pattern).await {
            Ok(keys) => keys,
            Err(e) => {
                self.failed("SCAN", e);
                return None;
            }
        };
        let unlinks = keys.iter().map(|k| unlink(k.clone())).collect();
        let removed: Vec<i64> = c
            .each(unlinks)
            .await
            .map_err(|e| self.failed("UNLINK", e))
            .ok()?;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(PURGE_ALL);
        if let Err(e) = c.each::<redis::Value>(vec![publish]).await {
            self.failed("PUBLISH purge-all", e);
        }
        Some(removed.iter().filter(|n| **n > 0).count())
    }

    async fn scan_and_delete(&self, pattern: &str) -> usize {
        let Some(c) = self.conn() else { return 0 };
        let keys = match c.scan(pattern).await {
            Ok(keys) => keys,
            Err(e) => {
                self.failed("SCAN", e);
                return 0;
            }
        };
        // One UNLINK per key: no multi-key command spans wards (Redis Cluster), and the values
        // are freed off Redis's main thread. A copy's patch log goes with it.
        let per_key = 1 + PATCH_LOG_SUFFIXES.len();
        let unlinks = keys
            .iter()
            .flat_map(|k| {
                let log = PATCH_LOG_SUFFIXES.iter().map(move |s| format!("{k}{s}"));
                std::iter::once(k.clone()).chain(log).map(unlink)
            })
            .collect();
        match c.each::<i64>(unlinks).await {
            // Copies removed: the first UNLINK of each key's group.
            Ok(removed) => removed.iter().step_by(per_key).filter(|n| **n > 0).count(),
            Err(e) => {
                self.failed("UNLINK", e);
                0
            }
        }
    }

    /// Takes the short cross-instance build lock for `key`.
    pub async fn try_lock(&self, key: &CacheKey, ttl: Duration) -> Lock {
        let Some(mut c) = self.conn() else {
            return Lock::Unavailable;
        };
        static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = format!(
            "{}-{}-{}",
            std::process::id(),
            EpochMs::now().0,
            TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let r: Result<Result<Option<String>, _>, _> =
            tokio::time::timeout(OP_TIMEOUT, c.set_options(self.lock_key(key), &token, opts)).await;
        match r {
            Ok(Ok(Some(_))) => Lock::Held(token),
            Ok(Ok(None)) => Lock::Busy,
            Ok(Err(e)) => {
                self.failed("SET NX", e);
                Lock::Unavailable
            }
            Err(_) => {
                self.failed("SET NX", "timed out");
                Lock::Unavailable
            }
        }
    }

    /// Releases the lock if it is still ours: after a slow build it may have expired and been
    /// taken by another instance, whose lock must not be deleted.
    pub async fn unlock(&self, key: &CacheKey, token: &str) {
        let Some(mut c) = self.conn() else { return };
        const RELEASE: &str =
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
        let r: Result<Result<i64, _>, _> = tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(self.lock_key(key))
                .arg(token)
                .query_async(&mut c),
        )
        .await;
        if let Ok(Err(e)) = r {
            self.failed("EVAL unlock", e);
        }
    }
}

/// The keys of a ward's patch log, its copy's key followed by one of these (`patchlog`).
pub(super) const PATCH_LOG_SUFFIXES: [&str; 2] = [":root", ":log"];

/// `UNLINK key`, for `RedisConn::each`.
fn unlink(key: String) -> redis::Cmd {
    let mut cmd = redis::cmd("UNLINK");
    cmd.arg(key);
    cmd
}

/// `s` matched literally in a SCAN pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `GET key`, for `RedisConn::each`.
fn get(key: String) -> redis::Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key);
    cmd
}

/// What instances announce to each other on the channel.
pub enum Announcement {
    /// Copies of the scope built before the instant are superseded.
    Watermark(WriteScope, EpochMs),
    /// Every cached copy is to be dropped (`wardgate purge --all`).
    PurgeAll,
}

/// The payload of `Announcement::PurgeAll`. A watermark starts with its digits, so an
/// instance of a release before this one ignores it (and its copies expire with their TTL).
const PURGE_ALL: &str = "purge-all";

/// Hands every announcement published on `channel` to `on` until the subscription ends.
async fn listen(
    mut ps: redis::aio::PubSub,
    channel: &str,
    on: &(impl Fn(Announcement) + Send + Sync),
) {
    use futures_util::StreamExt;
    if let Err(e) = ps.subscribe(channel).await {
        tracing::warn!(error = %e, "Redis SUBSCRIBE failed");
        return;
    }
    let mut stream = ps.on_message();
    while let Some(msg) = stream.next().await {
        let Ok(payload) = msg.get_payload::<String>() else {
            continue;
        };
        if payload == PURGE_ALL {
            on(Announcement::PurgeAll);
            continue;
        }
        let mut it = payload.split('\x1f');
        let (Some(at), Some(s), Some(a), Some(w)) = (it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let Ok(at) = at.parse::<i64>() else { continue };
        if let Some(scope) = parse_scope(s, a, w) {
            on(Announcement::Watermark(scope, EpochMs(at)));
        }
    }
}

/// The cross-instance build lock, as taken.
pub enum Lock {
    /// This instance builds; release with the token.
    Held(String),
    /// Another instance is building the key.
    Busy,
    /// No Redis to coordinate through: every instance builds for itself.
    Unavailable,
}

/// The scope of a published watermark, validated like any client input; an empty ward
/// number is a whole-assembly watermark.
fn parse_scope(state: &str, assembly: &str, ward: &str) -> Option<WriteScope> {
    let w =
        crate::params::WardKey::parse(state, assembly, if ward.is_empty() { "0" } else { ward })
            .ok()?;
    Some(if ward.is_empty() {
        WriteScope::Assembly(w.assembly_key())
    } else {
        WriteScope::Ward(w)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::WardKey;

    #[tokio::test]
    async fn watermark_keys_do_not_follow_the_format_version() {
        let target = RedisTarget::single("redis://127.0.0.1:1/").unwrap();
        let l2 = L2::start(&target, "p", Arc::new(Metrics::new()));
        let w = WardKey::parse("Karnataka", "150", "7").unwrap();
        // The keys format 1 wrote: an instance of any format reads the writes of every other.
        assert_eq!(
            l2.watermark_key(&WriteScope::Ward(w.clone())),
            "p:wm:p:s1:ward:karnataka:150:7"
        );
        assert_eq!(
            l2.watermark_key(&WriteScope::Assembly(w.assembly_key())),
            "p:wm:p:s1:ward:karnataka:150:"
        );
        assert_eq!(
            l2.data_key(&CacheKey::Ward(w.clone())),
            format!("p:s{}:ward:{{karnataka:150:7}}", snapshot::FORMAT_VERSION),
            "a ward's keys carry it as their hash tag"
        );
        assert_eq!(
            l2.lock_key(&CacheKey::Ward(w.clone())),
            format!(
                "p:lock:p:s{}:ward:{{karnataka:150:7}}",
                snapshot::FORMAT_VERSION
            )
        );
        assert_eq!(
            l2.ward_key(&w, 2),
            "p:s2:ward:karnataka:150:7",
            "format 2: no hash tag"
        );
        assert_eq!(
            l2.ward_key(&w, snapshot::PREVIOUS_FORMAT_VERSION),
            format!(
                "p:s{}:ward:{{karnataka:150:7}}",
                snapshot::PREVIOUS_FORMAT_VERSION
            ),
            "the previous format's keys as it spelled them"
        );
    }
}
