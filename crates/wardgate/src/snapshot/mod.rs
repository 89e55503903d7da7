//! A ward snapshot: the ward's rows, kept as identity JSON and as precompressed deflate chunks.
//!
//! Built once per ward (from the upstream's full-ward answer or streamed from the read replica),
//! a snapshot answers every read of its ward: the full array, a booth subset, a delta, or a page,
//! in gzip or identity, by slicing and framing stored bytes.
//!
//! **Invariant:** chunks are runs of `CHUNK_ROWS` rows in reference order, whatever their
//! booths: electoral rolls number voters per booth, so `ORDER BY srno + 0` interleaves a ward's
//! booths row by row, and a chunk that ended at every booth change would hold one row. Full
//! wards and pages whose size is a multiple of `CHUNK_ROWS` are served from compressed chunks
//! alone; booth subsets, deltas and unaligned pages are derived once per snapshot and selection
//! (`derived`). Either way the hot path never compresses.
//!
//! `build` turns rows into a snapshot, `pick` answers a selection from it, `codec` is its Redis
//! format and `derived` the small cache of gzip answers kept with it.

mod build;
mod codec;
mod derived;
#[cfg(test)]
mod fixtures;
mod pick;

use std::ops::Range;

use bytes::Bytes;

use crate::gzip::Check;
use crate::params::WardKey;
use crate::time::EpochMs;

pub use build::SnapshotBuilder;
pub use codec::{FORMAT_VERSION, PREVIOUS_FORMAT_VERSION};
pub use derived::Parts;
pub use pick::{Picked, Selection};

use derived::{Derived, DERIVED_BYTES};

/// Rows per compressed chunk. Divides the default page size (1,000) so default pages are
/// chunk-aligned. Measured on a 10,000-row ward at level 6, against one whole gzip stream:
/// independent 250-row chunks cost about +5% bytes, 500-row ones about +2.6%; larger chunks
/// would save little more and make every unaligned selection recompress more.
pub const CHUNK_ROWS: usize = 500;

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
    gz: Range<usize>,
    check: Check,
    min_modified: i64,
    max_modified: i64,
    /// The booths of its rows (indexes into `Snapshot::booths`), sorted, each once.
    booths: Box<[u16]>,
}

impl Chunk {
    /// The chunk of rows `first..end`, whose JSON is `raw`, lying at `gz` in the full-ward gzip.
    fn new(rows: &[RowMeta], first: u32, end: u32, gz: Range<usize>, raw: &[u8]) -> Chunk {
        let span = &rows[first as usize..end as usize];
        Chunk {
            first_row: first,
            end_row: end,
            gz,
            check: Check::of(raw),
            min_modified: span.iter().map(|r| r.modified).min().unwrap_or(i64::MIN),
            max_modified: span.iter().map(|r| r.modified).max().unwrap_or(i64::MIN),
            booths: {
                let mut b: Vec<u16> = span.iter().map(|r| r.booth).collect();
                b.sort_unstable();
                b.dedup();
                b.into_boxed_slice()
            },
        }
    }
}

/// One ward's rows, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    pub key: WardKey,
    /// When the source was read, epoch ms (`X-Snapshot-Time`): the rows are at least this new.
    pub built_at: EpochMs,
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

impl Snapshot {
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Bytes this snapshot holds in memory (what L1 accounts).
    pub fn weight(&self) -> usize {
        self.identity.len()
            + self.gz_full.len()
            + DERIVED_BYTES / 4 // derived answers: their bound, discounted (most wards have few)
            + self.rows.len() * std::mem::size_of::<RowMeta>()
            + self.chunks.iter().map(|c| std::mem::size_of::<Chunk>() + c.booths.len() * 2).sum::<usize>()
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

    /// Rows `first..end` of the identity JSON, the commas between them included.
    fn span(&self, first: u32, end: u32) -> Bytes {
        self.identity.slice(row_range(&self.rows, first, end))
    }
}

/// The same span as `Snapshot::span`, while the identity JSON is still being built or checked.
fn row_span<'a>(identity: &'a [u8], rows: &[RowMeta], first: u32, end: u32) -> &'a [u8] {
    &identity[row_range(rows, first, end)]
}

/// Where rows `first..end` lie in the identity JSON: from the first's start to the last's end.
fn row_range(rows: &[RowMeta], first: u32, end: u32) -> Range<usize> {
    let a = rows[first as usize].start as usize;
    let last = rows[end as usize - 1];
    a..(last.start + last.len) as usize
}
