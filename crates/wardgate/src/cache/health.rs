//! Redis's health: a ping every few seconds (`wardgate_redis_up`, degraded rather than unready
//! while it fails), a fresh connection with a jittered backoff when pings are lost, and what
//! `INFO memory` says (the warm's fit check).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::l2::{L2, OP_TIMEOUT};
use super::topology::RedisTarget;

/// The longest wait between two attempts to reach Redis.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Waits between attempts to reach Redis: doubling from 500 ms up to `MAX_RECONNECT_DELAY`,
/// each drawn at random from its upper half, so that a fleet that lost Redis together does not
/// come back in one wave.
struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        Backoff {
            next: Duration::from_millis(500),
            seed: seed | 1,
        }
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let span = self.next.as_millis() as u64;
        let wait = Duration::from_millis(span / 2 + self.seed % (span / 2 + 1));
        self.next = (self.next * 2).min(MAX_RECONNECT_DELAY);
        wait
    }
}

/// Connects, then pings every `HEALTH_EVERY` for as long as the cache lives: sets
/// `wardgate_redis_up`, logs when Redis goes away or comes back, and after `PINGS_LOST`
/// failed pings in a row connects afresh (with `Backoff`), whatever state the old connection
/// is left in after a failover or restart.
pub(super) async fn keep_connected(weak: Weak<L2>, target: RedisTarget) {
    let mut retry = Backoff::default();
    let (mut up, mut lost) = (false, 0u32);
    // The last connect error logged: a refused certificate or a wrong password is said once
    // at warn, not at every retry.
    let mut said = String::new();
    loop {
        let Some(l2) = weak.upgrade() else { return };
        if l2.conn.load().is_none() || lost >= PINGS_LOST {
            match target.connect().await {
                Ok(c) => {
                    l2.conn.store(Some(Arc::new(c)));
                    (lost, retry) = (0, Backoff::default());
                    said.clear();
                }
                Err(e) => {
                    l2.metrics.redis_errors.inc();
                    let e = e.to_string();
                    if e != said {
                        tracing::warn!(error = %e, "cannot connect to Redis; retrying");
                        said = e;
                    }
                }
            }
        }
        let now_up = l2.ping().await;
        l2.metrics.redis_up.set(i64::from(now_up));
        match (up, now_up) {
            (true, false) => {
                tracing::warn!("Redis unreachable: degraded, serving from L1 and the backend")
            }
            (false, true) => tracing::info!("connected to Redis"),
            _ => {}
        }
        up = now_up;
        lost = if now_up { 0 } else { lost + 1 };
        drop(l2);
        let wait = if now_up || lost < PINGS_LOST {
            HEALTH_EVERY
        } else {
            retry.next()
        };
        tokio::time::sleep(wait).await;
    }
}

/// Failed pings in a row after which the connection is made afresh.
const PINGS_LOST: u32 = 2;

/// How often Redis's health is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// What `INFO memory` says (`L2::memory`), summed over a Cluster's masters.
pub struct RedisMemory {
    /// Bytes used.
    pub used: u64,
    /// `maxmemory`, bytes; 0 when any node is unbounded.
    pub max: u64,
    /// `maxmemory-policy`: the first evicting one found, else `noeviction`.
    pub policy: String,
}

impl L2 {
    /// Redis's memory: bytes used, `maxmemory` (0: unbounded) and `maxmemory-policy`, over
    /// every master of a Cluster (a ward lands on one of them; the warm's fit check is a sum).
    pub async fn memory(&self) -> Option<RedisMemory> {
        let c = self.conn()?;
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let nodes: Vec<String> = tokio::time::timeout(OP_TIMEOUT * 4, c.on_every_master(&info))
            .await
            .ok()?
            .ok()?;
        let mut sum = RedisMemory {
            used: 0,
            max: 0,
            policy: "noeviction".into(),
        };
        let mut unbounded = false;
        for node in &nodes {
            let m = parse_memory(node)?;
            sum.used += m.used;
            sum.max += m.max;
            unbounded |= m.max == 0;
            if m.policy != "noeviction" {
                sum.policy = m.policy;
            }
        }
        if unbounded {
            sum.max = 0;
        }
        (!nodes.is_empty()).then_some(sum)
    }
}

/// One node's `INFO memory`.
fn parse_memory(info: &str) -> Option<RedisMemory> {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    Some(RedisMemory {
        used: field("used_memory")?.parse().ok()?,
        max: field("maxmemory")?.parse().ok()?,
        policy: field("maxmemory_policy")?,
    })
}
