//! The Redis format of a snapshot: a versioned header, row facts, chunk bounds and the full-ward
//! gzip; `decode` refuses other versions and anything inconsistent.

use bytes::{BufMut, Bytes};

use super::{row_span, Chunk, Derived, RowMeta, Snapshot, SnapshotError};
use crate::gzip;
use crate::params::WardKey;
use crate::time::EpochMs;

/// Format version of the Redis encoding; bump on any change to `encode`.
pub const FORMAT_VERSION: u16 = 2;

/// The format before this one, which this version also reads: the same layout, with chunks
/// that hold one booth each (a special case of format 2's chunks). Reading it keeps a canary
/// of a new format warm from the copies the fleet wrote.
pub const PREVIOUS_FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"WGSN";

/// A chunk's bounds as stored: first row, end row, and its byte range in the full-ward gzip.
type ChunkHead = (u32, u32, usize, usize);

impl Snapshot {
    /// Serializes for Redis: a versioned header, row facts, chunk bounds and the full-ward gzip.
    /// Identity bytes are not stored: `decode` inflates them, which also verifies the CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.gz_full.len() + self.rows.len() * 14 + 256);
        out.extend_from_slice(MAGIC);
        out.put_u16_le(FORMAT_VERSION);
        out.put_i64_le(self.built_at.0);
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

    /// Reads what `encode` wrote (or format 1); refuses other versions and anything inconsistent.
    pub fn decode(data: Bytes) -> Result<Snapshot, SnapshotError> {
        let mut r = Reader { data: &data, at: 0 };
        let (built_at, key, tag) = read_header(&mut r)?;
        let nb = r.u32()? as usize;
        let booths = (0..nb).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        let (rows, rows_end) = read_rows(&mut r, booths.len())?;
        let heads = read_chunk_heads(&mut r)?;
        let glen = r.u32()? as usize;
        let at = r.at;
        r.take(glen)?;
        let gz_full = data.slice(at..at + glen);
        let identity = inflate_identity(&gz_full, rows_end)?;
        let chunks = check_chunks(heads, &rows, &identity, glen)?;
        Ok(Snapshot {
            key,
            built_at,
            tag,
            identity,
            gz_full,
            rows,
            booths,
            chunks,
            derived: Derived::default(),
        })
    }
}

/// Magic, format version, then build time, ward key and tag.
fn read_header(r: &mut Reader<'_>) -> Result<(EpochMs, WardKey, String), SnapshotError> {
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
    Ok((built_at, key, tag))
}

/// The row facts; each row's place in the identity JSON follows from the lengths before it.
/// Returns the rows and where the identity JSON's closing `]` must stand.
fn read_rows(r: &mut Reader<'_>, booth_count: usize) -> Result<(Vec<RowMeta>, u32), SnapshotError> {
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
        if booth as usize >= booth_count {
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
    Ok((rows, pos))
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

/// Inflates the full-ward gzip back into the identity JSON, which must end at `rows_end`.
fn inflate_identity(gz_full: &[u8], rows_end: u32) -> Result<Bytes, SnapshotError> {
    // The gzip decoder verifies the trailer's CRC-32 and length.
    let identity = Bytes::from(gzip::gunzip(gz_full).map_err(|_| SnapshotError::Corrupt("gzip"))?);
    if identity.len() != rows_end as usize + 1
        || identity.first() != Some(&b'[')
        || identity.last() != Some(&b']')
    {
        return Err(SnapshotError::Corrupt("row lengths"));
    }
    Ok(identity)
}

/// Chunks must tile the rows in order and lie inside the gzip; their checks are recomputed.
fn check_chunks(
    heads: Vec<ChunkHead>,
    rows: &[RowMeta],
    identity: &[u8],
    glen: usize,
) -> Result<Vec<Chunk>, SnapshotError> {
    let mut chunks = Vec::with_capacity(heads.len());
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
        let raw = row_span(identity, rows, first, end);
        chunks.push(Chunk::new(rows, first, end, ga..gb, raw));
    }
    if expect_first as usize != rows.len() {
        return Err(SnapshotError::Corrupt("row count"));
    }
    Ok(chunks)
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
    use crate::snapshot::fixtures::{key, render, ward_json};
    use crate::snapshot::Selection;

    #[test]
    fn redis_encoding_roundtrips_and_refuses_damage() {
        let json = ward_json(777);
        let s = Snapshot::from_legacy_json(key(), &json, EpochMs(42)).unwrap();
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
        let mut previous = enc.clone();
        previous[4..6].copy_from_slice(&PREVIOUS_FORMAT_VERSION.to_le_bytes());
        let back = Snapshot::decode(Bytes::from(previous)).unwrap();
        assert_eq!(
            render(&back, &Selection::default(), true).0,
            json,
            "format 1 is read"
        );
        let mut flipped = enc.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0x55;
        assert!(Snapshot::decode(Bytes::from(flipped)).is_err());
        assert!(Snapshot::decode(Bytes::from(enc[..enc.len() / 2].to_vec())).is_err());
    }
}
