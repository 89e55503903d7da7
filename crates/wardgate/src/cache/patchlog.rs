//! A write costs Redis its rows, not its ward: a patched snapshot is stored as an entry on its
//! ward's patch log (`…}:log`, a list beside the whole copy, under the same hash tag), on the
//! whole copy it descends from (its *root*, named by `…}:root`). An instance holding that root
//! or a patch of it catches up by reading the log alone; every `COMPACT_AT` entries, or when
//! the root in Redis is another, the ward is stored whole again and its log emptied.
//!
//! **Invariant:** an entry is appended only while the root in Redis is the one it was patched
//! on (one script, one slot), and a reader applies only entries on the root it holds, so a log
//! never patches a copy it was not written for.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use redis::AsyncCommands;

use super::l2::{L2, OP_TIMEOUT, PATCH_LOG_SUFFIXES};
use super::{Cache, CacheKey, Entry};
use crate::params::WardKey;
use crate::snapshot::{patch_rows, Lineage, PatchRow, Snapshot, FORMAT_VERSION};
use crate::time::{EpochMs, UtcOffset};

/// Entries a log may hold before the ward is stored whole again: a reader applies them all
/// in one patch, so this bounds what catching up costs.
const COMPACT_AT: u64 = 32;

/// One logged patch: the cheap read's rows as the backend sent them, and what it vouches for.
pub struct LogEntry {
    pub seen_at: EpochMs,
    pub includes: Vec<EpochMs>,
    /// Offset of zone-less datetimes in `rows` (`citizens.backend_date_offset`).
    pub offset: UtcOffset,
    pub rows: Bytes,
}

const MAGIC: &[u8; 4] = b"WGPL";

impl LogEntry {
    /// The entry of patched copy `s`, whose cheap read answered `rows`.
    pub fn of(s: &Snapshot, offset: UtcOffset, rows: Bytes) -> LogEntry {
        LogEntry {
            seen_at: s.seen_at,
            includes: s.includes.to_vec(),
            offset,
            rows,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows.len() + 64);
        out.extend_from_slice(MAGIC);
        out.put_i64_le(self.seen_at.0);
        out.put_i32_le(self.offset.0);
        out.put_u32_le(self.includes.len() as u32);
        for at in &self.includes {
            out.put_i64_le(at.0);
        }
        out.extend_from_slice(&self.rows);
        out
    }

    pub fn decode(data: &[u8]) -> Option<LogEntry> {
        let rest = data.strip_prefix(MAGIC)?;
        let i64_at =
            |b: &[u8], at: usize| Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
        let seen_at = EpochMs(i64_at(rest, 0)?);
        let offset = UtcOffset(i32::from_le_bytes(rest.get(8..12)?.try_into().ok()?));
        let n = u32::from_le_bytes(rest.get(12..16)?.try_into().ok()?) as usize;
        let includes = (0..n)
            .map(|i| i64_at(rest, 16 + i * 8).map(EpochMs))
            .collect::<Option<Vec<_>>>()?;
        let rows = Bytes::copy_from_slice(rest.get(16 + n * 8..)?);
        Some(LogEntry {
            seen_at,
            includes,
            offset,
            rows,
        })
    }
}

/// `onto` with `entries` applied in one patch: for each row the newest version logged (the
/// later entry on a tie), the latest `seen_at`, and every included write past it.
pub fn apply(onto: &Snapshot, entries: &[LogEntry]) -> Option<Snapshot> {
    let mut rows: Vec<PatchRow> = Vec::new();
    let mut seen_at = onto.seen_at;
    let mut includes: Vec<EpochMs> = onto.includes.to_vec();
    for e in entries {
        rows.extend(patch_rows(&e.rows, e.offset).ok()?);
        seen_at = seen_at.max(e.seen_at);
        includes.extend(&e.includes);
    }
    // Newest version per id; a stable sort keeps the later entry last among equals.
    rows.sort_by_key(|r| (r.id, r.modified));
    rows.reverse();
    rows.dedup_by_key(|r| r.id);
    includes.retain(|i| *i > seen_at);
    includes.sort_unstable();
    includes.dedup();
    let patched = onto.patch(&rows, seen_at, includes.into()).ok()?.ok()?;
    let l = onto.lineage();
    patched.set_lineage(Lineage {
        root: l.root,
        patches: l.patches + entries.len() as u32,
    });
    Some(patched)
}

impl L2 {
    fn log_key(&self, w: &WardKey) -> String {
        format!(
            "{}{}",
            self.ward_key(w, FORMAT_VERSION),
            PATCH_LOG_SUFFIXES[1]
        )
    }

    fn root_key(&self, w: &WardKey) -> String {
        format!(
            "{}{}",
            self.ward_key(w, FORMAT_VERSION),
            PATCH_LOG_SUFFIXES[0]
        )
    }

    /// Stores `s` whole as its ward's root: the copy, its tag as the root, an empty log, in one
    /// transaction (one slot).
    pub async fn put_root(&self, s: &Snapshot, ttl: Duration) {
        self.put_root_encoded(s, s.encode(), ttl).await;
    }

    /// The same, with `s` already encoded (`warm` measures the encoding before storing it).
    pub async fn put_root_encoded(&self, s: &Snapshot, data: Vec<u8>, ttl: Duration) {
        let Some(mut c) = self.conn() else { return };
        let ms = ttl.as_millis().clamp(1_000, u128::from(u32::MAX)) as u64;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.ward_key(&s.key, FORMAT_VERSION))
            .arg(data)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("SET")
            .arg(self.root_key(&s.key))
            .arg(&s.tag)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("DEL")
            .arg(self.log_key(&s.key))
            .ignore();
        let r: Result<Result<(), _>, _> =
            tokio::time::timeout(OP_TIMEOUT * 4, pipe.query_async(&mut c)).await;
        match r {
            Ok(Ok(())) => s.set_lineage(Lineage {
                root: s.tag.as_str().into(),
                patches: 0,
            }),
            Ok(Err(e)) => self.failed("SET root", e),
            Err(_) => self.failed("SET root", "timed out"),
        }
    }

    /// Appends `entry` to the log of `w` if its root in Redis is `root`: the log's length, or
    /// `None` when the root is another (or Redis failed).
    pub async fn append(
        &self,
        w: &WardKey,
        root: &str,
        entry: Vec<u8>,
        ttl: Duration,
    ) -> Option<u64> {
        const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
             local n = redis.call('RPUSH', KEYS[2], ARGV[2]); \
             redis.call('PEXPIRE', KEYS[2], ARGV[3]); return n else return -1 end";
        let mut c = self.conn()?;
        let ms = ttl.as_millis().clamp(1_000, u128::from(u32::MAX)) as u64;
        let r: Result<Result<i64, _>, _> = tokio::time::timeout(
            OP_TIMEOUT,
            redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(2)
                .arg(self.root_key(w))
                .arg(self.log_key(w))
                .arg(root)
                .arg(entry)
                .arg(ms)
                .query_async(&mut c),
        )
        .await;
        match r {
            Ok(Ok(n)) => u64::try_from(n).ok(),
            Ok(Err(e)) => {
                self.failed("EVAL append", e);
                None
            }
            Err(_) => None,
        }
    }

    /// The tag of `w`'s whole copy in Redis (its root): a few bytes to watch instead of the
    /// copy. `None` when absent or Redis failed.
    pub async fn root_of(&self, w: &WardKey) -> Option<String> {
        let mut c = self.conn()?;
        let r = tokio::time::timeout(OP_TIMEOUT, c.get(self.root_key(w))).await;
        match r {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.failed("GET root", e);
                None
            }
            Err(_) => None,
        }
    }

    /// The root of `w` in Redis and its log's entries from `from` on.
    pub async fn log(&self, w: &WardKey, from: u32) -> Option<(Option<String>, Vec<LogEntry>)> {
        let mut c = self.conn()?;
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.root_key(w));
        pipe.cmd("LRANGE").arg(self.log_key(w)).arg(from).arg(-1);
        type RootAndLog = (Option<String>, Vec<Vec<u8>>);
        let r: Result<Result<RootAndLog, _>, _> =
            tokio::time::timeout(OP_TIMEOUT, pipe.query_async(&mut c)).await;
        match r {
            Ok(Ok((root, raw))) => Some((
                root,
                raw.iter().filter_map(|e| LogEntry::decode(e)).collect(),
            )),
            Ok(Err(e)) => {
                self.failed("LRANGE log", e);
                None
            }
            Err(_) => None,
        }
    }
}

impl Cache {
    /// Stores a patched copy: as an entry on its root's log, or whole when the log is long or
    /// the root in Redis is another.
    pub(super) async fn store_patch(
        &self,
        l2: &L2,
        s: &Arc<Snapshot>,
        entry: LogEntry,
        ttl: Duration,
    ) {
        let lineage = s.lineage();
        if u64::from(lineage.patches) < COMPACT_AT {
            let appended = l2.append(&s.key, &lineage.root, entry.encode(), ttl).await;
            if appended.is_some_and(|n| n == u64::from(lineage.patches)) {
                return;
            }
        }
        l2.put_root(s, ttl).await;
    }

    /// `held` brought up to date from its ward's log, when `held` stands on the root Redis
    /// holds: the log is all that is read.
    pub(super) async fn catch_up(&self, l2: &L2, key: &CacheKey, held: &Entry) -> Option<Entry> {
        let (CacheKey::Ward(w), Entry::Snapshot(s)) = (key, held) else {
            return None;
        };
        let lineage = s.lineage();
        let (root, entries) = l2.log(w, lineage.patches).await?;
        if root.as_deref() != Some(&*lineage.root) || entries.is_empty() {
            return None;
        }
        let s = s.clone();
        let caught = crate::background::run(move || apply(&s, &entries))
            .await
            .ok()??;
        Some(Entry::Snapshot(Arc::new(caught)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips() {
        let e = LogEntry {
            seen_at: EpochMs(7),
            includes: vec![EpochMs(8), EpochMs(9)],
            offset: UtcOffset(330),
            rows: Bytes::from_static(b"[{\"id\":1}]"),
        };
        let back = LogEntry::decode(&e.encode()).unwrap();
        assert_eq!(
            (back.seen_at, back.includes, back.offset.0),
            (EpochMs(7), vec![EpochMs(8), EpochMs(9)], 330)
        );
        assert_eq!(back.rows, e.rows);
        assert!(LogEntry::decode(b"WGPL\x01").is_none());
    }
}
