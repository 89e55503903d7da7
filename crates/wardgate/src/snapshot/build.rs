//! Building a snapshot: rows streamed into chunks compressed as they close, or a whole legacy
//! full-ward JSON answer parsed into rows.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::Deserialize;

use super::fingerprint::Summing;
use super::{next_id, Chunk, RowTable, Snapshot, SnapshotError, Unindexed, CHUNK_ROWS};
use crate::gzip::{self, Check};
use crate::params::WardKey;
use crate::time::{EpochMs, UtcOffset};

/// Builds a snapshot from rows in order. Each chunk, as it closes, is compressed on the
/// cores' pool (`rayon`, one thread per core) while the caller goes on parsing or reading
/// rows: a ward's chunks compress on every core at once, overlapping the read, and `finish`
/// lays the pieces out in order.
pub struct SnapshotBuilder {
    key: WardKey,
    /// The JSON of the chunk being filled: its rows and the commas between them.
    pending: Vec<u8>,
    lens: Vec<u32>,
    booth_of: Vec<u32>,
    modified: Vec<i64>,
    booths: Vec<String>,
    booth_index: HashMap<String, u16>,
    /// Chunks closed so far, in order: their rows, and their piece and check once compressed.
    closed: Vec<(u32, u32, Compressed)>,
    chunk_first: usize,
    fingerprint: Summing,
    /// CPU time the pool has spent compressing this builder's chunks, in ns, summed over its
    /// threads.
    compressing: Arc<AtomicU64>,
}

/// Where a build's CPU went, besides fetching: for `wardgate_build_phase_seconds`. CPU time,
/// not wall time: the building thread and the pool share the cores, so each phase's wall
/// time would count the other's too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildPhases {
    /// The building thread's CPU: parsing rows, laying the pieces out.
    pub parse: Duration,
    /// The chunks' compression, summed over the pool's threads.
    pub compress: Duration,
}

/// The calling thread's CPU time so far (zero where the clock cannot be read).
///
/// Read through libc (`cpu_time`), not rustix: rustix finds the clock in the vDSO by parsing
/// it, which crashes the process under valgrind (rustix#1559), and `bench/hit-cost.sh`
/// counts a hit's instructions under callgrind with builds in flight.
fn thread_cpu() -> Duration {
    cpu_time::ThreadTime::try_now()
        .map(|t| t.as_duration())
        .unwrap_or_default()
}

/// A chunk's piece and check, delivered when the pool has compressed it.
type Compressed = mpsc::Receiver<(Vec<u8>, Check)>;

thread_local! {
    /// One compressor per pool thread, reset for every piece.
    static COMPRESSOR: RefCell<flate2::Compress> = RefCell::new(gzip::compressor());
}

impl SnapshotBuilder {
    pub fn new(key: WardKey) -> SnapshotBuilder {
        SnapshotBuilder {
            key,
            pending: Vec::with_capacity(256 << 10),
            lens: Vec::new(),
            booth_of: Vec::new(),
            modified: Vec::new(),
            booths: Vec::new(),
            booth_index: HashMap::new(),
            closed: Vec::new(),
            chunk_first: 0,
            fingerprint: Summing::default(),
            compressing: Arc::default(),
        }
    }

    /// Appends one row: its compact JSON object, its `id` (if readable), its booth and its
    /// `modifieddate` (epoch ms).
    pub fn push_row(
        &mut self,
        json: &[u8],
        id: Option<u64>,
        booth: &str,
        modified: i64,
    ) -> Result<(), SnapshotError> {
        self.fingerprint.add(id, modified);
        let booth = match self.booth_index.get(booth) {
            Some(b) => *b,
            None => {
                let idx =
                    u16::try_from(self.booths.len()).map_err(|_| SnapshotError::TooManyBooths)?;
                self.booths.push(booth.to_string());
                self.booth_index.insert(booth.to_string(), idx);
                idx
            }
        };
        let len = u32::try_from(json.len()).map_err(|_| SnapshotError::BadRow {
            index: self.lens.len(),
            field: "length (over 4 GiB)",
        })?;
        let n = self.lens.len();
        if n > self.chunk_first && n % CHUNK_ROWS == 0 {
            self.close_chunk();
        }
        if n > self.chunk_first {
            self.pending.push(b',');
        }
        self.pending.extend_from_slice(json);
        self.lens.push(len);
        self.booth_of.push(u32::from(booth));
        self.modified.push(modified);
        Ok(())
    }

    /// Hands the chunk being filled to the pool to compress.
    fn close_chunk(&mut self) {
        let (first, end) = (self.chunk_first as u32, self.lens.len() as u32);
        if first == end {
            return;
        }
        self.chunk_first = end as usize;
        let json = std::mem::replace(&mut self.pending, Vec::with_capacity(256 << 10));
        let (tx, rx) = mpsc::sync_channel(1);
        // Allocated here, on the build's own thread, as the JSON was: when the build is done
        // and frees both, they go back from the pages of a thread that releases its freed
        // memory when builds are over (`background::run_build`), not from the pool's, which
        // then sit idle holding them.
        let mut piece = Vec::with_capacity(json.len() / 6 + 64);
        let compressing = self.compressing.clone();
        rayon::spawn(move || {
            let started = thread_cpu();
            COMPRESSOR.with(|c| gzip::deflate_piece(&mut c.borrow_mut(), &json, &mut piece));
            let check = Check::of(&json);
            let took = thread_cpu().saturating_sub(started).as_nanos();
            let took = u64::try_from(took).unwrap_or(u64::MAX);
            compressing.fetch_add(took, Ordering::Relaxed);
            // The JSON is freed before the piece is handed over, so that a finished build
            // holds only what its snapshot keeps (no buffer still freeing on the pool).
            drop(json);
            // The builder may be gone (its build failed); then nobody needs the piece.
            let _ = tx.send((piece, check));
        });
        self.closed.push((first, end, rx));
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// The snapshot, once every chunk is compressed: the full-ward gzip is `[`, the pieces
    /// separated by stored commas, `]`, and the trailer.
    pub fn finish(self, built_at: EpochMs) -> Result<Snapshot, SnapshotError> {
        self.finish_timed(built_at).map(|(snap, _)| snap)
    }

    /// `finish`, with the CPU time the pool spent compressing the chunks.
    fn finish_timed(mut self, built_at: EpochMs) -> Result<(Snapshot, Duration), SnapshotError> {
        self.close_chunk();
        let mut gz = Vec::with_capacity(self.lens.len() * 48 + 256);
        gz.extend_from_slice(&gzip::GZIP_HEADER);
        gzip::put_stored(&mut gz, b"[");
        let mut laid = Vec::with_capacity(self.closed.len());
        for (i, (first, end, rx)) in self.closed.into_iter().enumerate() {
            let (piece, check) = rx
                .recv()
                .map_err(|_| SnapshotError::Corrupt("a chunk's compression did not finish"))?;
            if i > 0 {
                gzip::put_stored(&mut gz, b",");
            }
            let at = gz.len();
            gz.extend_from_slice(&piece);
            laid.push((first, end, at..gz.len(), check));
        }
        gzip::put_stored(&mut gz, b"]");
        let whole = whole_check(laid.iter().map(|c| c.3));
        gzip::put_trailer(&mut gz, whole);
        let rows = RowTable::new(&self.lens, &self.booth_of, &self.modified);
        let chunks: Vec<Chunk> = laid
            .into_iter()
            .map(|(first, end, gz, check)| Chunk::new(&rows, first, end, gz, check))
            .collect();
        let tag = format!("{:08x}{:x}{:x}", whole.crc, whole.len, built_at.0);
        let compressed = Duration::from_nanos(self.compressing.load(Ordering::Relaxed));
        let snap = Snapshot {
            unindexed: Unindexed::of(&self.booths, &chunks),
            lineage: super::Lineage::of(&tag),
            tag,
            id: next_id(),
            key: self.key,
            built_at,
            seen_at: built_at,
            includes: Box::default(),
            fingerprint: self.fingerprint.finish(),
            vouched_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            ids: Default::default(),
            // sealed, so that every send of it is a sendfile (`wardgate_sealed`)
            gz_full: wardgate_sealed::seal(&gz),
            rows,
            booths: self.booths,
            chunks,
        };
        Ok((snap, compressed))
    }
}

/// The check of the whole identity answer, `[` chunk `,` chunk ... `]`, from its chunks' own.
pub(super) fn whole_check(chunks: impl Iterator<Item = Check>) -> Check {
    let comma = Check::of(b",");
    let mut whole = Check::of(b"[");
    for (i, c) in chunks.enumerate() {
        if i > 0 {
            whole = whole.then(comma);
        }
        whole = whole.then(c);
    }
    whole.then(Check::of(b"]"))
}

/// The two fields of a row the filters need; the rest stays raw JSON. Either may be missing
/// or in a form wardgate cannot read: the row is kept, unindexed (`Snapshot::unindexed`).
#[derive(Deserialize)]
struct RowFacts {
    #[serde(default)]
    id: Fact,
    #[serde(default)]
    booth_no: Fact,
    /// Epoch ms, or text in any form `EpochMs::parse_legacy` reads (Spring Boot 2.0 writes
    /// dates as ISO-8601 text unless the application says otherwise).
    #[serde(default)]
    modifieddate: Fact,
}

/// A row fact as the JSON has it: text, an integer, absent or `null`, or anything else.
#[derive(Default)]
pub(super) enum Fact {
    S(String),
    N(i64),
    #[default]
    Missing,
    Other,
}

/// Read by the value's own type, in one pass. (An untagged enum buffered every value and
/// tried each variant in turn, building a serde error for every number it first tried as
/// text: a fifth of a cold build's parse.)
impl<'de> Deserialize<'de> for Fact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fact, D::Error> {
        d.deserialize_any(FactVisitor)
    }
}

struct FactVisitor;

impl<'de> serde::de::Visitor<'de> for FactVisitor {
    type Value = Fact;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Fact, E> {
        Ok(Fact::S(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Fact, E> {
        Ok(Fact::S(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Fact, E> {
        Ok(Fact::N(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Fact, E> {
        Ok(i64::try_from(v).map_or(Fact::Other, Fact::N))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Fact, E> {
        Ok(Fact::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Fact, E> {
        Ok(Fact::Other)
    }
    fn visit_unit<E>(self) -> Result<Fact, E> {
        Ok(Fact::Missing)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Fact, A::Error> {
        serde::de::IgnoredAny.visit_seq(seq).map(|_| Fact::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Fact, A::Error> {
        serde::de::IgnoredAny.visit_map(map).map(|_| Fact::Other)
    }
}

impl Snapshot {
    /// Builds from the legacy answer to a full-ward read: a JSON array of row objects.
    /// Rows keep their exact JSON text and order.
    pub fn from_legacy_json(
        key: WardKey,
        body: &[u8],
        built_at: EpochMs,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::from_backend_json(key, body, built_at, UtcOffset(0))
    }

    /// The same, reading zone-less datetimes in `local` (`citizens.backend_date_offset`).
    /// A row whose booth or `modifieddate` cannot be read is kept with that fact unknown
    /// (`UNKNOWN_BOOTH`, `UNKNOWN_STAMP`): the ward still serves every read that does not
    /// filter on it.
    pub fn from_backend_json(
        key: WardKey,
        body: &[u8],
        built_at: EpochMs,
        local: UtcOffset,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::from_backend_json_timed(key, body, built_at, local).map(|(snap, _)| snap)
    }

    /// `from_backend_json`, with where its CPU went.
    pub fn from_backend_json_timed(
        key: WardKey,
        body: &[u8],
        built_at: EpochMs,
        local: UtcOffset,
    ) -> Result<(Snapshot, BuildPhases), SnapshotError> {
        let started = thread_cpu();
        let rows: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(body).map_err(|e| SnapshotError::NotAnArray(e.to_string()))?;
        let mut b = SnapshotBuilder::new(key);
        let mut booth_buf = String::new();
        for (index, raw) in rows.iter().enumerate() {
            let facts: RowFacts = match raw.get().starts_with('{') {
                true => serde_json::from_str(raw.get()).ok(),
                false => None,
            }
            .ok_or(SnapshotError::BadRow {
                index,
                field: "object",
            })?;
            let booth = booth_of(&facts.booth_no, &mut booth_buf);
            let modified = stamp_of(&facts.modifieddate, local);
            b.push_row(raw.get().as_bytes(), id_of(&facts.id), booth, modified)?;
        }
        let (snap, compress) = b.finish_timed(built_at)?;
        let parse = thread_cpu().saturating_sub(started);
        Ok((snap, BuildPhases { parse, compress }))
    }
}

/// A row's booth as the filters name it (`UNKNOWN_BOOTH` when unreadable); `buf` holds a
/// number's digits.
pub(super) fn booth_of<'a>(fact: &'a Fact, buf: &'a mut String) -> &'a str {
    match fact {
        Fact::S(s) if s != UNKNOWN_BOOTH => s.as_str(),
        Fact::N(n) => {
            buf.clear();
            buf.push_str(&n.to_string());
            buf.as_str()
        }
        _ => UNKNOWN_BOOTH,
    }
}

/// A row's `id`, when it is a non-negative integer (a number, or digits in a string).
pub(super) fn id_of(fact: &Fact) -> Option<u64> {
    match fact {
        Fact::N(n) => u64::try_from(*n).ok(),
        Fact::S(s) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// A row's `modifieddate`, epoch ms (`UNKNOWN_STAMP` when unreadable), zone-less text read in
/// `local`.
pub(super) fn stamp_of(fact: &Fact, local: UtcOffset) -> i64 {
    match fact {
        Fact::N(n) if *n != UNKNOWN_STAMP => *n,
        Fact::S(s) => EpochMs::parse_legacy(s, local).map_or(UNKNOWN_STAMP, |t| t.0),
        _ => UNKNOWN_STAMP,
    }
}

/// The booth of a row whose `booth_no` could not be read. No booth filter names it: filters
/// are digit strings (`params`).
pub const UNKNOWN_BOOTH: &str = "";

/// The `modifieddate` of a row whose date could not be read.
pub const UNKNOWN_STAMP: i64 = i64::MIN;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::snapshot::fixtures::{key, render, ward_json};
    use crate::snapshot::{Selection, Unindexed};

    #[test]
    fn a_build_says_what_its_parse_and_its_compression_cost() {
        let json = ward_json(4 * CHUNK_ROWS);
        let (snap, phases) =
            Snapshot::from_backend_json_timed(key(), &json, EpochMs(1), UtcOffset(0)).unwrap();
        assert_eq!(snap.rows(), 4 * CHUNK_ROWS);
        assert!(phases.parse > Duration::ZERO, "{phases:?}");
        assert!(phases.compress > Duration::ZERO, "{phases:?}");
        // CPU time, not wall time: what this thread and the pool spent, nothing it waited.
        let wall = std::time::Instant::now();
        let spent = thread_cpu();
        let (_, again) =
            Snapshot::from_backend_json_timed(key(), &json, EpochMs(1), UtcOffset(0)).unwrap();
        assert!(again.parse <= thread_cpu() - spent, "{again:?}");
        assert!(again.parse <= wall.elapsed(), "{again:?}");
    }

    #[test]
    fn empty_ward_and_bad_rows() {
        let s = Arc::new(Snapshot::from_legacy_json(key(), b"[]", EpochMs(1)).unwrap());
        assert_eq!(render(&s, &Selection::default(), true).0, b"[]");
        assert!(Snapshot::decode(Bytes::from(s.encode())).is_ok());
        assert!(Snapshot::from_legacy_json(key(), b"{\"error\":1}", EpochMs(1)).is_err());
        assert!(Snapshot::from_legacy_json(key(), b"[1,2]", EpochMs(1)).is_err());
        let s = Snapshot::from_legacy_json(key(), br#"[{"id":1}]"#, EpochMs(1)).unwrap();
        assert_eq!(
            s.unindexed(),
            Unindexed {
                booth_no: true,
                modifieddate: true
            }
        );
    }

    #[test]
    fn facts_are_read_by_the_json_value_type() {
        let kind = |json: &str| match serde_json::from_str::<Fact>(json).unwrap() {
            Fact::S(s) => format!("S {s}"),
            Fact::N(n) => format!("N {n}"),
            Fact::Missing => "Missing".into(),
            Fact::Other => "Other".into(),
        };
        let cases = [
            (r#""12""#, "S 12"),
            (r#""a\"b""#, "S a\"b"),
            ("12", "N 12"),
            ("-3", "N -3"),
            ("9223372036854775807", "N 9223372036854775807"),
            ("9223372036854775808", "Other"),
            ("1.5", "Other"),
            ("true", "Other"),
            ("null", "Missing"),
            ("[1,[2]]", "Other"),
            (r#"{"a":{"b":1}}"#, "Other"),
        ];
        for (json, want) in cases {
            assert_eq!(kind(json), want, "{json}");
        }
        // Absent from the row: the default.
        let r: RowFacts = serde_json::from_str(r#"{"name":"x","id":7}"#).unwrap();
        assert!(matches!((r.id, r.booth_no), (Fact::N(7), Fact::Missing)));
    }

    #[test]
    fn dates_are_read_as_the_backend_writes_them() {
        let rows = br#"[{"booth_no":"1","modifieddate":"2025-11-26T10:15:59.297+0000"},{"booth_no":2,"modifieddate":"2025-11-26 15:45:59.297"},{"booth_no":"1","modifieddate":1764152159298}]"#;
        let s = Snapshot::from_backend_json(key(), rows, EpochMs(1), UtcOffset(330)).unwrap();
        let stamps: Vec<i64> = (0..3).map(|i| s.rows.modified(i)).collect();
        assert_eq!(
            stamps,
            [1_764_152_159_297, 1_764_152_159_297, 1_764_152_159_298]
        );
        assert_eq!(render(&Arc::new(s), &Selection::default(), true).0, rows);
        let bad = br#"[{"booth_no":"1","modifieddate":"last tuesday"},{"booth_no":"2","modifieddate":5}]"#;
        let s = Arc::new(Snapshot::from_legacy_json(key(), bad, EpochMs(1)).unwrap());
        assert_eq!(
            s.unindexed(),
            Unindexed {
                booth_no: false,
                modifieddate: true
            }
        );
        // Served whole and by booth, byte for byte; decoded from Redis, still unindexed.
        assert_eq!(render(&s, &Selection::default(), true).0, bad);
        let again = Snapshot::decode(Bytes::from(s.encode())).unwrap();
        assert!(again.unindexed().modifieddate);
    }
}
