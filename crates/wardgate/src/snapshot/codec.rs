//! The Redis format of a snapshot: a versioned header, row facts, chunk bounds and the full-ward
//! gzip; `decode` refuses other versions and anything inconsistent.

use bytes::{BufMut, Bytes};

use super::build::whole_check;
use super::inflate::inflate_piece;
use super::{next_id, Chunk, Fingerprint, RowTable, Snapshot, SnapshotError, Unindexed};
use crate::gzip::{self, Check};
use crate::params::WardKey;
use crate::time::EpochMs;

/// Format version of a ward's copy in Redis, payload and key spelling together; bump on any
/// change to `encode` or to the key. Format 3 is format 2's payload under keys that carry the
/// ward as a Redis Cluster hash tag (`cache::l2`); format 4 adds, after the tag, what a patch
/// vouches for (`seen_at` and the writes it includes).
pub const FORMAT_VERSION: u16 = 4;

/// The format before this one, which this version reads and `warm --formats` writes: the same
/// chunking, without the patch stamps (a copy read in it counts as read at its build time, so a
/// write acknowledged since supersedes it). Reading it keeps a canary of a new format warm
/// from the copies the fleet wrote.
pub const PREVIOUS_FORMAT_VERSION: u16 = 3;
const MAGIC: &[u8; 4] = b"WGSN";

/// A chunk's bounds as stored: first row, end row, and its byte range in the full-ward gzip.
type ChunkHead = (u32, u32, usize, usize);

impl Snapshot {
    /// Serializes for Redis: a versioned header, row facts, chunk bounds and the full-ward gzip.
    /// Identity bytes are not stored: `decode` inflates each chunk once to verify it.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_header_version(FORMAT_VERSION)
    }

    /// Serializes in `format`, this one or the previous (which has the same payload), for
    /// `warm --formats`.
    pub fn encode_as(&self, format: u16) -> Result<Vec<u8>, SnapshotError> {
        match format {
            FORMAT_VERSION | PREVIOUS_FORMAT_VERSION => Ok(self.encode_header_version(format)),
            other => Err(SnapshotError::OtherVersion(other)),
        }
    }

    fn encode_header_version(&self, format: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.gz_full.len() + self.rows() * 14 + 256);
        out.extend_from_slice(MAGIC);
        out.put_u16_le(format);
        out.put_i64_le(self.built_at.0);
        for s in [
            &self.key.state,
            &self.key.assembly,
            &self.key.ward,
            &self.tag,
        ] {
            put_str(&mut out, s);
        }
        if format >= 4 {
            out.put_i64_le(self.seen_at.0);
            out.put_u32_le(self.includes.len() as u32);
            for at in &self.includes {
                out.put_i64_le(at.0);
            }
            match &self.fingerprint {
                Some(f) => {
                    out.put_u8(1);
                    out.put_u64_le(f.rows);
                    out.put_i128_le(f.sum_ms);
                    out.put_i128_le(f.sum_id_ms);
                    out.put_u32_le(f.xor_crc);
                }
                None => out.put_u8(0),
            }
        }
        out.put_u32_le(self.booths.len() as u32);
        for b in &self.booths {
            put_str(&mut out, b);
        }
        out.put_u32_le(self.rows() as u32);
        for i in 0..self.rows() {
            out.put_u32_le(self.rows.json_len(i));
            out.put_i64_le(self.rows.modified(i));
            out.put_u16_le(self.rows.booth(i));
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

    /// Reads what `encode` or `encode_as` wrote; refuses other versions and anything
    /// inconsistent. Every chunk is inflated once here, to check it against its rows and the
    /// gzip trailer, and then dropped: the snapshot keeps only the gzip.
    pub fn decode(data: Bytes) -> Result<Snapshot, SnapshotError> {
        let mut r = Reader { data: &data, at: 0 };
        let (built_at, key, tag, version) = read_header(&mut r)?;
        let (seen_at, includes, fingerprint) = match version {
            4.. => {
                let (seen_at, includes) = read_patch_stamps(&mut r)?;
                (seen_at, includes, read_fingerprint(&mut r)?)
            }
            _ => (built_at, Box::default(), None),
        };
        let nb = r.u32()? as usize;
        let booths = (0..nb).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        let rows = read_rows(&mut r, booths.len())?;
        let heads = read_chunk_heads(&mut r)?;
        let glen = r.u32()? as usize;
        // A copy, so that the fetched buffer (row facts and all) is not kept alive by a slice;
        // sealed, so that every send of it is a sendfile (`wardgate_sealed`).
        let gz_full = wardgate_sealed::seal(r.take(glen)?);
        let chunks = check_chunks(heads, &rows, &gz_full)?;
        Ok(Snapshot {
            unindexed: Unindexed::of(&booths, &chunks),
            key,
            built_at,
            seen_at,
            includes,
            fingerprint,
            vouched_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            lineage: super::Lineage::of(&tag),
            tag,
            id: next_id(),
            gz_full,
            rows,
            booths,
            chunks,
            ids: Default::default(),
        })
    }
}

/// What a patch vouches for: `seen_at`, and the writes acknowledged after it that it includes.
fn read_patch_stamps(r: &mut Reader<'_>) -> Result<(EpochMs, Box<[EpochMs]>), SnapshotError> {
    let seen_at = EpochMs(r.i64()?);
    let n = r.u32()? as usize;
    if n > 1 << 16 {
        return Err(SnapshotError::Corrupt("includes"));
    }
    let includes = (0..n)
        .map(|_| r.i64().map(EpochMs))
        .collect::<Result<_, _>>()?;
    Ok((seen_at, includes))
}

fn read_fingerprint(r: &mut Reader<'_>) -> Result<Option<Fingerprint>, SnapshotError> {
    match r.take(1)?[0] {
        0 => Ok(None),
        1 => Ok(Some(Fingerprint {
            rows: r.u64()?,
            sum_ms: r.i128()?,
            sum_id_ms: r.i128()?,
            xor_crc: r.u32()?,
        })),
        _ => Err(SnapshotError::Corrupt("fingerprint")),
    }
}

/// Magic, format version, then build time, ward key and tag; and the version read.
/// Bytes at the head of an encoded snapshot that [`built_at_of`] reads: magic, format, build
/// time.
pub const HEAD_BYTES: usize = 14;

/// The build time an encoded snapshot records, read from its first [`HEAD_BYTES`] alone: the
/// status page asks Redis for those bytes of each warmed ward, not for its whole copy.
pub fn built_at_of(head: &[u8]) -> Option<EpochMs> {
    let mut r = Reader { data: head, at: 0 };
    if r.take(4).ok()? != MAGIC {
        return None;
    }
    let version = r.u16().ok()?;
    if version != FORMAT_VERSION && version != PREVIOUS_FORMAT_VERSION {
        return None;
    }
    r.i64().ok().map(EpochMs)
}

fn read_header(r: &mut Reader<'_>) -> Result<(EpochMs, WardKey, String, u16), SnapshotError> {
    if r.take(4)? != MAGIC {
        return Err(SnapshotError::Corrupt("magic"));
    }
    let version = r.u16()?;
    if version != FORMAT_VERSION && version != PREVIOUS_FORMAT_VERSION {
        return Err(SnapshotError::OtherVersion(version));
    }
    let built_at = EpochMs(r.i64()?);
    let key = WardKey {
        state: r.string()?,
        assembly: r.string()?,
        ward: r.string()?,
    };
    let tag = r.string()?;
    Ok((built_at, key, tag, version))
}

/// The row facts: length of each row's JSON, `modifieddate`, booth index.
fn read_rows(r: &mut Reader<'_>, booth_count: usize) -> Result<RowTable, SnapshotError> {
    let nr = r.u32()? as usize;
    let cap = nr.min(1 << 22);
    let (mut lens, mut booths, mut modified) = (
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
        Vec::with_capacity(cap),
    );
    for _ in 0..nr {
        lens.push(r.u32()?);
        modified.push(r.i64()?);
        let booth = r.u16()?;
        if booth as usize >= booth_count {
            return Err(SnapshotError::Corrupt("booth index"));
        }
        booths.push(u32::from(booth));
    }
    Ok(RowTable::new(&lens, &booths, &modified))
}

/// Each chunk's stored bounds, checked against the rows and the gzip in `check_chunks`.
fn read_chunk_heads(r: &mut Reader<'_>) -> Result<Vec<ChunkHead>, SnapshotError> {
    let nc = r.u32()? as usize;
    let mut heads = Vec::with_capacity(nc.min(1 << 20));
    for _ in 0..nc {
        heads.push((r.u32()?, r.u32()?, r.u32()? as usize, r.u32()? as usize));
    }
    Ok(heads)
}

/// Chunks must tile the rows in order and the gzip exactly as `SnapshotBuilder` lays it out;
/// each chunk must inflate to its rows' lengths, and their checks must add up to the trailer's.
fn check_chunks(
    heads: Vec<ChunkHead>,
    rows: &RowTable,
    gz: &[u8],
) -> Result<Vec<Chunk>, SnapshotError> {
    let mut framing = Framing { gz, at: 0 };
    framing.expect(&gzip::GZIP_HEADER)?;
    framing.expect_stored(b"[")?;
    let mut chunks = Vec::with_capacity(heads.len());
    let mut expect_first = 0u32;
    for (i, (first, end, ga, gb)) in heads.into_iter().enumerate() {
        if i > 0 {
            framing.expect_stored(b",")?;
        }
        if first != expect_first
            || end <= first
            || end as usize > rows.count()
            || ga != framing.at
            || gb < ga
            || gb > gz.len()
        {
            return Err(SnapshotError::Corrupt("chunk bounds"));
        }
        let raw = inflate_piece(&gz[ga..gb], rows.span_len(first, end))?;
        check_row_edges(&raw, rows, first, end)?;
        chunks.push(Chunk::new(rows, first, end, ga..gb, Check::of(&raw)));
        framing.at = gb;
        expect_first = end;
    }
    if expect_first as usize != rows.count() {
        return Err(SnapshotError::Corrupt("row count"));
    }
    framing.expect_stored(b"]")?;
    framing.expect(&gzip::FINAL_BLOCK)?;
    let mut trailer = Vec::with_capacity(8);
    gzip::put_trailer(&mut trailer, whole_check(chunks.iter().map(|c| c.check)));
    framing.expect(&trailer[gzip::FINAL_BLOCK.len()..])?;
    if framing.at != gz.len() {
        return Err(SnapshotError::Corrupt("trailing bytes"));
    }
    Ok(chunks)
}

/// Every row of an inflated chunk is one JSON object, rows separated by one comma.
fn check_row_edges(raw: &[u8], rows: &RowTable, first: u32, end: u32) -> Result<(), SnapshotError> {
    let mut at = 0usize;
    for i in first..end {
        if i > first {
            if raw.get(at) != Some(&b',') {
                return Err(SnapshotError::Corrupt("row separator"));
            }
            at += 1;
        }
        let len = rows.json_len(i as usize) as usize;
        let row = raw
            .get(at..at + len)
            .ok_or(SnapshotError::Corrupt("row length"))?;
        if row.first() != Some(&b'{') || row.last() != Some(&b'}') {
            return Err(SnapshotError::Corrupt("row object"));
        }
        at += len;
    }
    Ok(())
}

/// Walks the stored framing around the chunks of a full-ward gzip.
struct Framing<'a> {
    gz: &'a [u8],
    at: usize,
}

impl Framing<'_> {
    fn expect(&mut self, want: &[u8]) -> Result<(), SnapshotError> {
        if self.gz.get(self.at..self.at + want.len()) != Some(want) {
            return Err(SnapshotError::Corrupt("gzip framing"));
        }
        self.at += want.len();
        Ok(())
    }

    fn expect_stored(&mut self, literal: &[u8]) -> Result<(), SnapshotError> {
        let mut block = Vec::with_capacity(literal.len() + 5);
        gzip::put_stored(&mut block, literal);
        self.expect(&block)
    }
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
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(self.i64()? as u64)
    }
    fn i128(&mut self) -> Result<i128, SnapshotError> {
        let b = self.take(16)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(i128::from_le_bytes(a))
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
    use std::sync::Arc;

    use crate::snapshot::fixtures::{render, snap, ward_json};
    use crate::snapshot::Selection;

    #[test]
    fn redis_encoding_roundtrips_and_refuses_damage() {
        let json = ward_json(777);
        let s = snap(&json);
        let enc = s.encode();
        let back = Arc::new(Snapshot::decode(Bytes::from(enc.clone())).unwrap());
        assert_eq!(back.tag, s.tag);
        assert_eq!(back.key, s.key);
        assert_eq!(render(&back, &Selection::default(), true).0, json);

        let mut other = enc.clone();
        other[4] = 9;
        assert!(matches!(
            Snapshot::decode(Bytes::from(other)),
            Err(SnapshotError::OtherVersion(9))
        ));
        assert_eq!(built_at_of(&enc[..HEAD_BYTES]), Some(s.built_at));
        assert_eq!(built_at_of(&enc[..HEAD_BYTES - 1]), None, "a cut header");
        let previous = s.encode_as(PREVIOUS_FORMAT_VERSION).unwrap();
        assert_eq!(previous[4..6], PREVIOUS_FORMAT_VERSION.to_le_bytes());
        let back = Arc::new(Snapshot::decode(Bytes::from(previous)).unwrap());
        assert_eq!(
            render(&back, &Selection::default(), true).0,
            json,
            "the previous format is read"
        );
        assert!(matches!(
            s.encode_as(9),
            Err(SnapshotError::OtherVersion(9))
        ));
        let mut flipped = enc.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0x55;
        assert!(Snapshot::decode(Bytes::from(flipped)).is_err());
        assert!(Snapshot::decode(Bytes::from(enc[..enc.len() / 2].to_vec())).is_err());
        // A byte changed inside a chunk's compressed bytes: caught by inflating it.
        let mut inside = enc.clone();
        let at = inside.len() - s.gzip_bytes() / 2;
        inside[at] ^= 0x01;
        assert!(Snapshot::decode(Bytes::from(inside)).is_err());
    }
}
