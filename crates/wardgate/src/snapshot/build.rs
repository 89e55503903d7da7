//! Building a snapshot: rows streamed into chunks compressed as they close, or a whole legacy
//! full-ward JSON answer parsed into rows.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::{row_span, Chunk, Derived, RowMeta, Snapshot, SnapshotError, CHUNK_ROWS};
use crate::gzip::{self, Check};
use crate::params::WardKey;
use crate::time::EpochMs;

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
        if n > self.chunk_first && n % CHUNK_ROWS == 0 {
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
        let (first, end) = (self.chunk_first as u32, self.rows.len() as u32);
        if first == end {
            return;
        }
        if !self.chunks.is_empty() {
            gzip::put_stored(&mut self.gz, b",");
        }
        let raw = row_span(&self.identity, &self.rows, first, end);
        let at = self.gz.len();
        gzip::deflate_piece(&mut self.compress, raw, &mut self.gz);
        let chunk = Chunk::new(&self.rows, first, end, at..self.gz.len(), raw);
        self.chunks.push(chunk);
        self.chunk_first = end as usize;
    }

    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    pub fn finish(mut self, built_at: EpochMs) -> Snapshot {
        self.close_chunk();
        self.identity.put_u8(b']');
        gzip::put_stored(&mut self.gz, b"]");
        let whole = Check::of(&self.identity);
        gzip::put_trailer(&mut self.gz, whole);
        Snapshot {
            tag: format!("{:08x}{:x}{:x}", whole.crc, whole.len, built_at.0),
            key: self.key,
            built_at,
            identity: self.identity.freeze(),
            gz_full: Bytes::from(self.gz),
            rows: self.rows,
            booths: self.booths,
            chunks: self.chunks,
            derived: Derived::default(),
        }
    }
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
        built_at: EpochMs,
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
        Ok(b.finish(built_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::fixtures::{key, render};
    use crate::snapshot::Selection;

    #[test]
    fn empty_ward_and_bad_rows() {
        let s = Snapshot::from_legacy_json(key(), b"[]", EpochMs(1)).unwrap();
        assert_eq!(render(&s, &Selection::default(), true).0, b"[]");
        assert!(Snapshot::decode(Bytes::from(s.encode())).is_ok());
        assert!(Snapshot::from_legacy_json(key(), b"{\"error\":1}", EpochMs(1)).is_err());
        assert!(Snapshot::from_legacy_json(key(), br#"[{"id":1}]"#, EpochMs(1)).is_err());
    }
}
