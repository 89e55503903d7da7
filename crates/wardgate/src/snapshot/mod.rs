//! A ward snapshot: the ward's rows, kept as identity JSON and as precompressed deflate chunks.
//!
//! Built once per ward (from the upstream's full-ward answer or streamed from the read replica),
//! a snapshot answers every read of its ward: the full array, a booth subset, a delta, or a page,
//! in gzip or identity, by slicing and framing stored bytes.
//!
//! **Invariant:** a chunk never spans two booths and every multiple of `CHUNK_ROWS` starts a
//! chunk, so full wards, whole booths and pages whose size is a multiple of `CHUNK_ROWS` are
//! served from compressed chunks alone; other selections frame their edge rows as stored blocks.
//! Either way the hot path never compresses.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::gzip::{self, Assembler, Check};
use crate::params::{BoothSet, Page, WardKey};

/// Rows per compressed chunk. Divides the default page size (1,000) so default pages are
/// chunk-aligned. Measured on a 10,000-row ward at level 6, against one whole gzip stream
/// (535 KB): 100-row chunks cost +14.2% bytes, 250 +5.9%, 500 +3.0% (booth boundaries
/// included). Unaligned selections are compressed once per snapshot anyway (`derived`).
pub const CHUNK_ROWS: usize = 500;
/// Format version of the Redis encoding; bump on any change to `encode`.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"WGSN";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("upstream answer is not a JSON array of rows: {0}")]
    NotAnArray(String),
    #[error("row {index} lacks a usable {field}")]
    BadRow { index: usize, field: &'static str },
    #[error("ward has more than 65535 booths")]
    TooManyBooths,
    #[error("stored snapshot is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("stored snapshot has format version {0}, this wardgate reads {FORMAT_VERSION}")]
    OtherVersion(u16),
}

/// Per-row facts the filters need, and where the row's JSON lies in `identity`.
#[derive(Clone, Copy, Debug)]
struct RowMeta {
    start: u32,
    len: u32,
    modified: i64,
    booth: u16,
}

/// A run of rows compressed once as one deflate piece, lying at `gz` in the full-ward gzip.
#[derive(Clone, Debug)]
struct Chunk {
    first_row: u32,
    end_row: u32,
    gz: std::ops::Range<usize>,
    check: Check,
    min_modified: i64,
    max_modified: i64,
    booth: u16,
}

/// One ward's rows, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    pub key: WardKey,
    /// When the source was read, epoch ms (`X-Snapshot-Time`): the rows are at least this new.
    pub built_at_ms: i64,
    /// Identifies this content: part of every ETag served from it.
    pub tag: String,
    /// The full-ward legacy answer, `[row,row,...]`: identity answers are slices of it.
    identity: Bytes,
    /// The same as one gzip member: header, `[` stored, chunk pieces separated by stored `,`,
    /// `]` stored, final block, trailer. The full-ward gzip answer is this very buffer, and any
    /// run of consecutive chunks (with their commas) is one slice of it.
    gz_full: Bytes,
    rows: Vec<RowMeta>,
    booths: Vec<String>,
    chunks: Vec<Chunk>,
    /// Gzip answers for selections other than the full ward, kept with the snapshot (see
    /// `Snapshot::derived`): aligned pages as their framed slices, deltas and unaligned pages
    /// compressed once.
    derived: Derived,
}

/// Most derived answers kept per snapshot, and their total size bound.
const DERIVED_ENTRIES: usize = 32;
const DERIVED_BYTES: usize = 4 << 20;

/// A derived answer: its body parts and their total length.
pub type Parts = std::sync::Arc<(Vec<Bytes>, usize)>;

/// A small LRU of derived gzip answers, keyed by the selection's hash; the byte bound counts
/// each answer's full length, shared slices included, so it errs on the safe side.
#[derive(Debug)]
struct Derived(std::sync::Mutex<(lru::LruCache<u64, Parts>, usize)>);

impl Default for Derived {
    fn default() -> Self {
        let cap =
            std::num::NonZeroUsize::new(DERIVED_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        Derived(std::sync::Mutex::new((lru::LruCache::new(cap), 0)))
    }
}

/// Which rows a read wants, already validated.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection<'a> {
    pub booths: Option<&'a BoothSet>,
    /// Rows with `modifieddate > since` only.
    pub since_ms: Option<i64>,
    pub page: Option<Page>,
}

/// A run of picked rows: whole chunks or rows within one chunk.
enum Piece {
    Chunk(usize),
    Rows(u32, u32),
}

/// The rows a selection picked, as runs over the snapshot.
pub struct Picked {
    runs: Vec<Piece>,
    pub count: usize,
    pub has_more: bool,
}

/// Streams rows into a snapshot, compressing each chunk as soon as it closes, so memory stays
/// bounded by one ward and the compression work overlaps the source's row stream.
pub struct SnapshotBuilder {
    key: WardKey,
    identity: BytesMut,
    rows: Vec<RowMeta>,
    booths: Vec<String>,
    booth_index: HashMap<String, u16>,
    chunks: Vec<Chunk>,
    gz: Vec<u8>,
    chunk_first: usize,
    compress: flate2::Compress,
}

impl SnapshotBuilder {
    pub fn new(key: WardKey) -> SnapshotBuilder {
        let mut gz = Vec::with_capacity(256 << 10);
        gz.extend_from_slice(&gzip::GZIP_HEADER);
        gzip::put_stored(&mut gz, b"[");
        let mut identity = BytesMut::with_capacity(1 << 20);
        identity.put_u8(b'[');
        SnapshotBuilder {
            key,
            identity,
            rows: Vec::new(),
            booths: Vec::new(),
            booth_index: HashMap::new(),
            chunks: Vec::new(),
            gz,
            chunk_first: 0,
            compress: gzip::compressor(),
        }
    }

    /// Appends one row: its compact JSON object, its booth and its `modifieddate` (epoch ms).
    pub fn push_row(
        &mut self,
        json: &[u8],
        booth: &str,
        modified: i64,
    ) -> Result<(), SnapshotError> {
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
        let n = self.rows.len();
        if n > self.chunk_first
            && (n % CHUNK_ROWS == 0 || self.rows[self.chunk_first].booth != booth)
        {
            self.close_chunk();
        }
        if !self.rows.is_empty() {
            self.identity.put_u8(b',');
        }
        self.rows.push(RowMeta {
            start: self.identity.len() as u32,
            len: json.len() as u32,
            modified,
            booth,
        });
        self.identity.put_slice(json);
        Ok(())
    }

    fn close_chunk(&mut self) {
        let (first, end) = (self.chunk_first, self.rows.len());
        if first == end {
            return;
        }
        if !self.chunks.is_empty() {
            gzip::put_stored(&mut self.gz, b",");
        }
        let raw = row_span(&self.identity, &self.rows, first as u32, end as u32);
        let at = self.gz.len();
        gzip::deflate_piece(&mut self.compress, raw, &mut self.gz);
        let rows = &self.rows[first..end];
        self.chunks.push(Chunk {
            first_row: first as u32,
            end_row: end as u32,
            gz: at..self.gz.len(),
            check: Check::of(raw),
            min_modified: rows.iter().map(|r| r.modified).min().unwrap_or(i64::MIN),
            max_modified: rows.iter().map(|r| r.modified).max().unwrap_or(i64::MIN),
            booth: rows[0].booth,
        });
        self.chunk_first = end;
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    pub fn finish(mut self, built_at_ms: i64) -> Snapshot {
        self.close_chunk();
        self.identity.put_u8(b']');
        gzip::put_stored(&mut self.gz, b"]");
        let whole = Check::of(&self.identity);
        gzip::put_trailer(&mut self.gz, whole);
        Snapshot {
            tag: format!("{:08x}{:x}{:x}", whole.crc, whole.len, built_at_ms),
            key: self.key,
            built_at_ms,
            identity: self.identity.freeze(),
            gz_full: Bytes::from(self.gz),
            rows: self.rows,
            booths: self.booths,
            chunks: self.chunks,
            derived: Derived::default(),
        }
    }
}

fn row_span<'a>(identity: &'a [u8], rows: &[RowMeta], first: u32, end: u32) -> &'a [u8] {
    let a = rows[first as usize].start as usize;
    let last = rows[end as usize - 1];
    &identity[a..(last.start + last.len) as usize]
}

/// The two fields of a row the filters need; the rest stays raw JSON.
#[derive(Deserialize)]
struct RowFacts {
    booth_no: StrOrNum,
    modifieddate: i64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    S(String),
    N(i64),
}

impl Snapshot {
    /// Builds from the legacy answer to a full-ward read: a JSON array of row objects.
    /// Rows keep their exact JSON text and order.
    pub fn from_legacy_json(
        key: WardKey,
        body: &[u8],
        built_at_ms: i64,
    ) -> Result<Snapshot, SnapshotError> {
        let rows: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(body).map_err(|e| SnapshotError::NotAnArray(e.to_string()))?;
        let mut b = SnapshotBuilder::new(key);
        let mut booth_buf = String::new();
        for (index, raw) in rows.iter().enumerate() {
            let facts: RowFacts =
                serde_json::from_str(raw.get()).map_err(|_| SnapshotError::BadRow {
                    index,
                    field: "booth_no or modifieddate",
                })?;
            let booth = match &facts.booth_no {
                StrOrNum::S(s) => s.as_str(),
                StrOrNum::N(n) => {
                    booth_buf.clear();
                    booth_buf.push_str(&n.to_string());
                    booth_buf.as_str()
                }
            };
            b.push_row(raw.get().as_bytes(), booth, facts.modifieddate)?;
        }
        Ok(b.finish(built_at_ms))
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Bytes this snapshot holds in memory (what L1 accounts).
    pub fn weight(&self) -> usize {
        self.identity.len()
            + self.gz_full.len()
            + DERIVED_BYTES / 4 // derived answers: their bound, discounted (most wards have few)
            + self.rows.len() * std::mem::size_of::<RowMeta>()
            + self.chunks.len() * std::mem::size_of::<Chunk>()
            + 256
    }

    /// Size of the full ward as gzip, bytes.
    pub fn gzip_bytes(&self) -> usize {
        self.gz_full.len()
    }

    /// The full-ward answer as gzip: stored bytes, served as they are.
    pub fn full_gzip(&self) -> Bytes {
        self.gz_full.clone()
    }

    /// The full-ward answer as identity JSON.
    pub fn full_identity(&self) -> Bytes {
        self.identity.clone()
    }

    /// Picks the rows of a selection: SQL semantics of the reference query (filters, then
    /// `LIMIT size OFFSET page*size` over the snapshot's `ORDER BY srno + 0, id` order).
    pub fn pick(&self, sel: &Selection<'_>) -> Picked {
        let booth_ok: Option<Vec<bool>> = sel
            .booths
            .map(|set| self.booths.iter().map(|b| set.0.contains(b)).collect());
        let (mut skip, mut take) = match sel.page {
            Some(p) => (p.offset(), u64::from(p.size)),
            None => (0, u64::MAX),
        };
        let mut runs = Vec::new();
        let mut count = 0usize;
        let mut has_more = false;
        let row_matches = |r: &RowMeta| sel.since_ms.is_none_or(|s| r.modified > s);

        for (ci, ch) in self.chunks.iter().enumerate() {
            if booth_ok.as_ref().is_some_and(|ok| !ok[ch.booth as usize]) {
                continue;
            }
            if sel.since_ms.is_some_and(|s| ch.max_modified <= s) {
                continue;
            }
            if take == 0 {
                // The page is full: only whether any later row matches is left to learn.
                has_more = self.rows[ch.first_row as usize..ch.end_row as usize]
                    .iter()
                    .any(row_matches);
                if has_more {
                    break;
                }
                continue;
            }
            let n = u64::from(ch.end_row - ch.first_row);
            if sel.since_ms.is_none_or(|s| ch.min_modified > s) {
                // Every row of the chunk matches.
                if skip >= n {
                    skip -= n;
                    continue;
                }
                if skip == 0 && take >= n {
                    runs.push(Piece::Chunk(ci));
                    take -= n;
                    count += n as usize;
                    continue;
                }
                let first = ch.first_row + skip as u32;
                let end = (u64::from(first) + take).min(u64::from(ch.end_row)) as u32;
                runs.push(Piece::Rows(first, end));
                take -= u64::from(end - first);
                count += (end - first) as usize;
                skip = 0;
                if take == 0 && end < ch.end_row {
                    has_more = true;
                    break;
                }
                continue;
            }
            // Mixed chunk: walk its rows, gathering consecutive matches into runs.
            let mut open: Option<(u32, u32)> = None;
            for i in ch.first_row..ch.end_row {
                if !row_matches(&self.rows[i as usize]) {
                    if let Some((a, b)) = open.take() {
                        runs.push(Piece::Rows(a, b));
                    }
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if take == 0 {
                    has_more = true;
                    break;
                }
                take -= 1;
                count += 1;
                open = match open {
                    Some((a, b)) if b == i => Some((a, i + 1)),
                    Some((a, b)) => {
                        runs.push(Piece::Rows(a, b));
                        Some((i, i + 1))
                    }
                    None => Some((i, i + 1)),
                };
            }
            if let Some((a, b)) = open {
                runs.push(Piece::Rows(a, b));
            }
            if has_more {
                break;
            }
        }
        Picked {
            runs,
            count,
            has_more,
        }
    }

    /// Writes the picked rows into `out`, separated by commas. The caller frames the array.
    pub fn render_rows(&self, picked: &Picked, out: &mut Assembler) {
        // Consecutive rows (identity) or consecutive chunks (gzip, commas included) are one
        // contiguous slice of the stored buffers: merge runs before emitting.
        let gz = out.is_gzip();
        let comma = Check::of(b",");
        let mut open: Option<(Run, Run)> = None;
        let mut first_out = true;
        let mut emit = |span: (Run, Run), out: &mut Assembler| {
            if !first_out {
                out.literal(b",");
            }
            first_out = false;
            match span {
                (Run::Chunks(a), Run::Chunks(b)) => {
                    let check = (a + 1..=b).fold(self.chunks[a].check, |c, i| {
                        c.then(comma).then(self.chunks[i].check)
                    });
                    let range = self.chunks[a].gz.start..self.chunks[b].gz.end;
                    out.piece(self.gz_full.slice(range), check);
                }
                (Run::Rows(a, _), Run::Rows(_, b)) => out.literal_bytes(self.span(a, b)),
                _ => {}
            }
        };
        for run in &picked.runs {
            let run = match run {
                Piece::Chunk(ci) if gz => Run::Chunks(*ci),
                Piece::Chunk(ci) => Run::Rows(self.chunks[*ci].first_row, self.chunks[*ci].end_row),
                Piece::Rows(a, b) => Run::Rows(*a, *b),
            };
            open = match (open, run) {
                (Some((s, Run::Chunks(e))), Run::Chunks(n)) if n == e + 1 => {
                    Some((s, Run::Chunks(n)))
                }
                (Some((s, Run::Rows(_, e))), Run::Rows(a, b)) if a == e => {
                    Some((s, Run::Rows(a, b)))
                }
                (Some(span), run) => {
                    emit(span, out);
                    Some((run, run))
                }
                (None, run) => Some((run, run)),
            };
        }
        if let Some(span) = open {
            emit(span, out);
        }
    }

    fn span(&self, first: u32, end: u32) -> Bytes {
        let a = self.rows[first as usize].start as usize;
        let last = self.rows[end as usize - 1];
        self.identity.slice(a..(last.start + last.len) as usize)
    }

    /// Serializes for Redis: a versioned header, row facts, chunk bounds and the full-ward gzip.
    /// Identity bytes are not stored: `decode` inflates them, which also verifies the CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.gz_full.len() + self.rows.len() * 14 + 256);
        out.extend_from_slice(MAGIC);
        out.put_u16_le(FORMAT_VERSION);
        out.put_i64_le(self.built_at_ms);
        for s in [
            &self.key.state,
            &self.key.assembly,
            &self.key.ward,
            &self.tag,
        ] {
            put_str(&mut out, s);
        }
        out.put_u32_le(self.booths.len() as u32);
        for b in &self.booths {
            put_str(&mut out, b);
        }
        out.put_u32_le(self.rows.len() as u32);
        for r in &self.rows {
            out.put_u32_le(r.len);
            out.put_i64_le(r.modified);
            out.put_u16_le(r.booth);
        }
        out.put_u32_le(self.chunks.len() as u32);
        for c in &self.chunks {
            out.put_u32_le(c.first_row);
            out.put_u32_le(c.end_row);
            out.put_u32_le(c.gz.start as u32);
            out.put_u32_le(c.gz.end as u32);
        }
        out.put_u32_le(self.gz_full.len() as u32);
        out.extend_from_slice(&self.gz_full);
        out
    }

    /// Reads what `encode` wrote; refuses other versions and anything inconsistent.
    pub fn decode(data: Bytes) -> Result<Snapshot, SnapshotError> {
        let mut r = Reader { data: &data, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(SnapshotError::Corrupt("magic"));
        }
        let version = r.u16()?;
        if version != FORMAT_VERSION {
            return Err(SnapshotError::OtherVersion(version));
        }
        let built_at_ms = r.i64()?;
        let key = WardKey {
            state: r.string()?,
            assembly: r.string()?,
            ward: r.string()?,
        };
        let tag = r.string()?;
        let nb = r.u32()? as usize;
        let booths = (0..nb).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        let nr = r.u32()? as usize;
        let mut rows = Vec::with_capacity(nr.min(1 << 22));
        let mut pos = 1u32; // after '['
        for i in 0..nr {
            if i > 0 {
                pos += 1; // the comma
            }
            let len = r.u32()?;
            let modified = r.i64()?;
            let booth = r.u16()?;
            if booth as usize >= booths.len() {
                return Err(SnapshotError::Corrupt("booth index"));
            }
            rows.push(RowMeta {
                start: pos,
                len,
                modified,
                booth,
            });
            pos = pos
                .checked_add(len)
                .ok_or(SnapshotError::Corrupt("length"))?;
        }
        let nc = r.u32()? as usize;
        let mut heads = Vec::with_capacity(nc.min(1 << 20));
        for _ in 0..nc {
            heads.push((r.u32()?, r.u32()?, r.u32()? as usize, r.u32()? as usize));
        }
        let glen = r.u32()? as usize;
        let at = r.at;
        r.take(glen)?;
        let gz_full = data.slice(at..at + glen);
        // The gzip decoder verifies the trailer's CRC-32 and length.
        let identity =
            Bytes::from(gzip::gunzip(&gz_full).map_err(|_| SnapshotError::Corrupt("gzip"))?);
        if identity.len() != pos as usize + 1
            || identity.first() != Some(&b'[')
            || identity.last() != Some(&b']')
        {
            return Err(SnapshotError::Corrupt("row lengths"));
        }
        let mut chunks = Vec::with_capacity(nc);
        let mut expect_first = 0u32;
        for (first, end, ga, gb) in heads {
            if first != expect_first
                || end <= first
                || end as usize > rows.len()
                || ga > gb
                || gb > glen
            {
                return Err(SnapshotError::Corrupt("chunk bounds"));
            }
            expect_first = end;
            let span = &rows[first as usize..end as usize];
            chunks.push(Chunk {
                first_row: first,
                end_row: end,
                gz: ga..gb,
                check: Check::of(row_span(&identity, &rows, first, end)),
                min_modified: span.iter().map(|r| r.modified).min().unwrap_or(i64::MIN),
                max_modified: span.iter().map(|r| r.modified).max().unwrap_or(i64::MIN),
                booth: span[0].booth,
            });
        }
        if expect_first as usize != rows.len() {
            return Err(SnapshotError::Corrupt("row count"));
        }
        Ok(Snapshot {
            key,
            built_at_ms,
            tag,
            identity,
            gz_full,
            rows,
            booths,
            chunks,
            derived: Derived::default(),
        })
    }

    /// Bytes of picked rows that do not lie in whole chunks (they would be sent uncompressed).
    pub fn loose_bytes(&self, picked: &Picked) -> usize {
        picked
            .runs
            .iter()
            .map(|r| match r {
                Piece::Chunk(_) => 0,
                Piece::Rows(a, b) => self.span(*a, *b).len(),
            })
            .sum()
    }

    /// A derived gzip answer kept for the selection `key`, if any.
    pub fn derived(&self, key: u64) -> Option<Parts> {
        let mut g = self.derived.0.lock().ok()?;
        g.0.get(&key).cloned()
    }

    /// Keeps a derived gzip answer (bounded in count and bytes, least recently used out first).
    pub fn keep_derived(&self, key: u64, parts: Parts) {
        if parts.1 > DERIVED_BYTES {
            return;
        }
        let Ok(mut g) = self.derived.0.lock() else {
            return;
        };
        let (map, bytes) = &mut *g;
        let len = parts.1;
        if let Some(old) = map.put(key, parts) {
            *bytes -= old.1;
        }
        *bytes += len;
        while *bytes > DERIVED_BYTES {
            match map.pop_lru() {
                Some((_, old)) => *bytes -= old.1,
                None => break,
            }
        }
    }
}

/// One end of a run being merged in `render_rows`.
#[derive(Clone, Copy)]
enum Run {
    Chunks(usize),
    Rows(u32, u32),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.put_u32_le(s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(SnapshotError::Corrupt("length"))?;
        let s = self
            .data
            .get(self.at..end)
            .ok_or(SnapshotError::Corrupt("truncated"))?;
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, SnapshotError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| SnapshotError::Corrupt("utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Rows shaped like the legacy ones: booth changes every 37 rows, scattered modifieddates.
    fn ward_json(n: usize) -> Vec<u8> {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"id":{},"booth_no":"{}","srno":"{}","first_name":"Name{}","modifieddate":{}}}"#,
                    1000 + i,
                    1 + i / 37,
                    i + 1,
                    i,
                    1_700_000_000_000i64 + ((i * 7919) % 1000) as i64 * 1000
                )
            })
            .collect();
        format!("[{}]", rows.join(",")).into_bytes()
    }

    fn key() -> WardKey {
        WardKey::parse("Karnataka", "150", "3").unwrap()
    }

    fn rows_of(json: &[u8]) -> Vec<serde_json::Value> {
        serde_json::from_slice(json).unwrap()
    }

    /// The reference semantics, computed the slow way.
    fn reference(all: &[serde_json::Value], sel: &Selection<'_>) -> (Vec<serde_json::Value>, bool) {
        let filtered: Vec<_> = all
            .iter()
            .filter(|r| {
                sel.booths
                    .is_none_or(|b| b.0.contains(r["booth_no"].as_str().unwrap()))
                    && sel
                        .since_ms
                        .is_none_or(|s| r["modifieddate"].as_i64().unwrap() > s)
            })
            .cloned()
            .collect();
        match sel.page {
            None => (filtered, false),
            Some(p) => {
                let off = p.offset() as usize;
                let page: Vec<_> = filtered
                    .iter()
                    .skip(off)
                    .take(p.size as usize)
                    .cloned()
                    .collect();
                let more = filtered.len() > off + page.len();
                (page, more)
            }
        }
    }

    fn render(s: &Snapshot, sel: &Selection<'_>, gz: bool) -> (Vec<u8>, Picked) {
        let picked = s.pick(sel);
        let mut a = if gz {
            Assembler::gzip()
        } else {
            Assembler::identity()
        };
        a.literal(b"[");
        s.render_rows(&picked, &mut a);
        a.literal(b"]");
        let (parts, _) = a.finish();
        let body: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        let body = if gz {
            gzip::gunzip(&body).unwrap()
        } else {
            body
        };
        (body, picked)
    }

    #[test]
    fn full_ward_is_byte_identical_in_both_encodings() {
        let json = ward_json(1234);
        let s = Snapshot::from_legacy_json(key(), &json, 42).unwrap();
        assert_eq!(s.rows(), 1234);
        for gz in [false, true] {
            let (body, picked) = render(&s, &Selection::default(), gz);
            assert_eq!(body, json, "gzip={gz}");
            assert!(picked.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
        }
    }

    #[test]
    fn every_selection_matches_the_reference() {
        let json = ward_json(1000);
        let all = rows_of(&json);
        let s = Snapshot::from_legacy_json(key(), &json, 42).unwrap();
        let booths = BoothSet(BTreeSet::from([
            "2".to_string(),
            "5".to_string(),
            "99".to_string(),
        ]));
        let sinces = [None, Some(1_700_000_500_000), Some(0), Some(i64::MAX - 1)];
        let pages = [
            None,
            Some(Page { page: 0, size: 100 }),
            Some(Page { page: 3, size: 100 }),
            Some(Page { page: 1, size: 333 }),
            Some(Page { page: 9, size: 100 }),
            Some(Page {
                page: 10,
                size: 100,
            }),
            Some(Page { page: 0, size: 1 }),
            Some(Page { page: 7, size: 13 }),
        ];
        for b in [None, Some(&booths)] {
            for since in sinces {
                for page in pages {
                    let sel = Selection {
                        booths: b,
                        since_ms: since,
                        page,
                    };
                    let (want, more) = reference(&all, &sel);
                    for gz in [false, true] {
                        let (body, picked) = render(&s, &sel, gz);
                        assert_eq!(rows_of(&body), want, "{sel:?} gz={gz}");
                        assert_eq!(picked.count, want.len(), "{sel:?}");
                        assert_eq!(picked.has_more, more, "{sel:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn aligned_pages_and_whole_booths_use_chunks_only() {
        let json = ward_json(1000);
        let s = Snapshot::from_legacy_json(key(), &json, 42).unwrap();
        let p = s.pick(&Selection {
            page: Some(Page {
                page: 1,
                size: CHUNK_ROWS as u32,
            }),
            ..Default::default()
        });
        assert!(p.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
        let booths = BoothSet(BTreeSet::from(["4".to_string()]));
        let p = s.pick(&Selection {
            booths: Some(&booths),
            ..Default::default()
        });
        assert_eq!(p.count, 37);
        assert!(p.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
    }

    #[test]
    fn redis_encoding_roundtrips_and_refuses_damage() {
        let json = ward_json(777);
        let s = Snapshot::from_legacy_json(key(), &json, 42).unwrap();
        let enc = s.encode();
        let back = Snapshot::decode(Bytes::from(enc.clone())).unwrap();
        assert_eq!(back.tag, s.tag);
        assert_eq!(back.key, s.key);
        assert_eq!(render(&back, &Selection::default(), true).0, json);

        let mut other = enc.clone();
        other[4] = 9;
        assert!(matches!(
            Snapshot::decode(Bytes::from(other)),
            Err(SnapshotError::OtherVersion(9))
        ));
        let mut flipped = enc.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0x55;
        assert!(Snapshot::decode(Bytes::from(flipped)).is_err());
        assert!(Snapshot::decode(Bytes::from(enc[..enc.len() / 2].to_vec())).is_err());
    }

    #[test]
    fn empty_ward_and_bad_rows() {
        let s = Snapshot::from_legacy_json(key(), b"[]", 1).unwrap();
        assert_eq!(render(&s, &Selection::default(), true).0, b"[]");
        assert!(Snapshot::decode(Bytes::from(s.encode())).is_ok());
        assert!(Snapshot::from_legacy_json(key(), b"{\"error\":1}", 1).is_err());
        assert!(Snapshot::from_legacy_json(key(), br#"[{"id":1}]"#, 1).is_err());
    }
}
