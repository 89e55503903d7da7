//! A ward snapshot: the ward's rows, kept as precompressed deflate chunks and nothing else.
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
//! and kept in the cache's derived budget. Either way the hot path never compresses.
//!
//! **Invariant:** a snapshot holds its gzip, its packed row facts (`rows`) and chunk bounds,
//! nothing more: identity answers are inflated from the chunks as they are sent (`inflate`),
//! so a cached ward costs about its gzip bytes.
//!
//! `build` turns rows into a snapshot, `pick` answers a selection from it, `codec` is its Redis
//! format.

mod build;
mod codec;
mod fingerprint;
#[cfg(test)]
mod fixtures;
mod inflate;
mod patch;
mod pick;
mod rows;
mod tiers;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::gzip::Check;
use crate::params::WardKey;
use crate::time::EpochMs;

pub use build::{BuildPhases, SnapshotBuilder, UNKNOWN_BOOTH, UNKNOWN_STAMP};
pub use codec::{built_at_of, FORMAT_VERSION, HEAD_BYTES, PREVIOUS_FORMAT_VERSION};
pub use fingerprint::Fingerprint;
pub use inflate::IdentityBody;
pub use patch::{patch_rows, PatchRow, Refused, RowId};
pub use pick::{Picked, Selection};

pub use tiers::tier_start;

use inflate::Part;
use rows::RowTable;

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

/// A run of rows compressed once as one deflate piece, lying at `gz` in the full-ward gzip.
#[derive(Clone, Debug)]
struct Chunk {
    first_row: u32,
    end_row: u32,
    gz: Range<usize>,
    /// CRC-32 and length of the chunk's JSON (its rows and the commas between them).
    check: Check,
    min_modified: i64,
    max_modified: i64,
    /// The booths of its rows (indexes into `Snapshot::booths`), sorted, each once.
    booths: Box<[u16]>,
}

impl Chunk {
    /// The chunk of rows `first..end`, whose JSON has `check`, lying at `gz` in the full-ward
    /// gzip.
    fn new(rows: &RowTable, first: u32, end: u32, gz: Range<usize>, check: Check) -> Chunk {
        let span = first as usize..end as usize;
        let modified = || span.clone().map(|i| rows.modified(i));
        Chunk {
            first_row: first,
            end_row: end,
            gz,
            check,
            min_modified: modified().min().unwrap_or(i64::MIN),
            max_modified: modified().max().unwrap_or(i64::MIN),
            booths: {
                let mut b: Vec<u16> = span.clone().map(|i| rows.booth(i)).collect();
                b.sort_unstable();
                b.dedup();
                b.into_boxed_slice()
            },
        }
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Chunk>() + self.booths.len() * 2
    }
}

/// Where a snapshot stands in Redis: the tag of the whole copy it descends from, and how many
/// logged patches on that copy it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    pub root: Arc<str>,
    pub patches: u32,
}

impl Lineage {
    /// A whole copy's own lineage, as a lock for the snapshot to hold.
    fn of(tag: &str) -> std::sync::Mutex<Lineage> {
        std::sync::Mutex::new(Lineage {
            root: tag.into(),
            patches: 0,
        })
    }
}

/// Distinguishes snapshots for as long as the process runs: derived answers are kept under it.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// One ward's rows, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    pub key: WardKey,
    /// When the source was read, epoch ms (`X-Snapshot-Time`): the rows are at least this new.
    /// A patch keeps it: a patch is not a read of the whole ward, so ages and renewals still
    /// count from here.
    pub built_at: EpochMs,
    /// Every write acknowledged before this is in the rows: the build time, or when the last
    /// patch's read was sent (`cache::watermark`).
    pub seen_at: EpochMs,
    /// Writes acknowledged after `seen_at` whose rows a patch saw come back (their
    /// acknowledgement times): they do not supersede this copy.
    pub includes: Box<[EpochMs]>,
    /// Its rows' fingerprint, as the replica would compute it (`fingerprint`); none when some
    /// row lacks a readable id or date.
    pub fingerprint: Option<Fingerprint>,
    /// Identifies this content: part of every ETag served from it.
    pub tag: String,
    /// Unique to this snapshot in this process (the key of its derived answers).
    pub id: u64,
    /// The full-ward answer as one gzip member: header, `[` stored, chunk pieces separated by
    /// stored `,`, `]` stored, final block, trailer. The full-ward gzip answer is this very
    /// buffer, and any run of consecutive chunks (with their commas) is one slice of it.
    gz_full: Bytes,
    rows: RowTable,
    booths: Vec<String>,
    chunks: Vec<Chunk>,
    /// Filters this snapshot cannot answer (derived from its rows, so not stored).
    unindexed: Unindexed,
    /// When the change watch last found this snapshot's fingerprint on the replica: its rows
    /// were all there as of then (epoch ms; `i64::MIN`: never).
    vouched_at: AtomicI64,
    /// The whole copy in Redis this one descends from, and how many logged patches lie on it
    /// (`cache::patchlog`): a patch is stored as a log entry on that root, not as a ward.
    lineage: std::sync::Mutex<Lineage>,
    /// Row by id, read out of the chunks when the ward is first written to (`patch`).
    ids: OnceLock<Arc<patch::IdIndex>>,
}

/// The row facts a snapshot lacks for some rows: a backend may send a booth or a date in a
/// form wardgate cannot read. The ward still serves whole and by page; reads that filter on a
/// missing fact are forwarded instead (`proxy`), never refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unindexed {
    pub booth_no: bool,
    pub modifieddate: bool,
}

impl Unindexed {
    fn of(booths: &[String], chunks: &[Chunk]) -> Unindexed {
        Unindexed {
            booth_no: booths.iter().any(|b| b == UNKNOWN_BOOTH),
            modifieddate: chunks.iter().any(|c| c.min_modified == UNKNOWN_STAMP),
        }
    }

    /// The first field a selection filters on that some rows lack.
    pub fn blocks(self, by_booth: bool, by_date: bool) -> Option<&'static str> {
        if by_booth && self.booth_no {
            Some("booth_no")
        } else if by_date && self.modifieddate {
            Some("modifieddate")
        } else {
            None
        }
    }

    pub fn any(self) -> bool {
        self.booth_no || self.modifieddate
    }
}

impl Snapshot {
    /// The filters this snapshot cannot answer.
    pub fn unindexed(&self) -> Unindexed {
        self.unindexed
    }

    pub fn rows(&self) -> usize {
        self.rows.count()
    }

    /// Bytes this snapshot holds in memory (what L1 accounts): its gzip, row facts, chunk
    /// bounds and booth names.
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Snapshot>()
            + self.gz_full.len()
            + self.rows.bytes()
            + self.chunks.iter().map(Chunk::bytes).sum::<usize>()
            + self.booths.iter().map(|b| b.len() + 24).sum::<usize>()
            + self.tag.len()
            + self.includes.len() * 8
            + self.ids.get().map_or(0, |i| i.bytes())
            + self.key.state.len()
            + self.key.assembly.len()
            + self.key.ward.len()
    }

    /// The newest `modifieddate` of its rows, the anchor of its delta tiers (`tiers`): a
    /// delta's window is measured back from the ward's last change, so tiers stay narrow
    /// whatever the clocks of phones and backend say. The build time for a ward of no rows.
    pub fn newest_change(&self) -> EpochMs {
        let newest = self.chunks.iter().map(|c| c.max_modified).max();
        newest
            .filter(|m| *m != UNKNOWN_STAMP)
            .map_or(self.built_at, EpochMs)
    }

    /// Size of the full ward as gzip, bytes.
    pub fn gzip_bytes(&self) -> usize {
        self.gz_full.len()
    }

    /// The full-ward answer as gzip: stored bytes, served as they are.
    pub fn full_gzip(&self) -> Bytes {
        self.gz_full.clone()
    }

    /// The full-ward answer as identity JSON, inflated as it is sent.
    pub fn full_identity(self: &Arc<Self>) -> IdentityBody {
        let n = self.rows() as u32;
        let parts = VecDeque::from([
            Part::Literal(Bytes::from_static(b"[")),
            Part::Rows(0, n),
            Part::Literal(Bytes::from_static(b"]")),
        ]);
        IdentityBody::new(self.clone(), parts)
    }

    pub fn lineage(&self) -> Lineage {
        self.lineage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records where this snapshot now stands in Redis (stored whole: its own tag, no patches).
    pub fn set_lineage(&self, l: Lineage) {
        *self.lineage.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }

    /// Records that the replica's rows as of `at` have this snapshot's fingerprint.
    pub fn vouch(&self, at: EpochMs) {
        self.vouched_at.fetch_max(at.0, Ordering::Relaxed);
    }

    /// When the change watch last vouched for this snapshot's rows.
    pub fn vouched_at(&self) -> Option<EpochMs> {
        match self.vouched_at.load(Ordering::Relaxed) {
            i64::MIN => None,
            at => Some(EpochMs(at)),
        }
    }

    /// The chunk holding row `row`.
    fn chunk_of(&self, row: u32) -> usize {
        self.chunks.partition_point(|c| c.end_row <= row)
    }
}
