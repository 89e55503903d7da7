//! Rows read back out of the stored chunks: a snapshot keeps only gzip, so identity answers and
//! loose rows are inflated from their chunks, each chunk at most once per reader, and identity
//! answers are streamed chunk by chunk so that no ward is ever held whole as identity JSON.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress};

use super::{Snapshot, SnapshotError};

/// Inflates one stored chunk (a raw-deflate piece ending in a full flush) that must hold
/// exactly `raw_len` bytes.
pub(super) fn inflate_piece(piece: &[u8], raw_len: usize) -> Result<Vec<u8>, SnapshotError> {
    let mut d = Decompress::new(false);
    // One byte of room past the expected length, so that a piece holding more is caught.
    let mut out = Vec::with_capacity(raw_len + 1);
    loop {
        let at = d.total_in() as usize;
        let before = out.len();
        d.decompress_vec(&piece[at..], &mut out, FlushDecompress::Sync)
            .map_err(|_| SnapshotError::Corrupt("chunk deflate"))?;
        let progressed = d.total_in() as usize > at || out.len() > before;
        if !progressed || d.total_in() as usize == piece.len() || out.len() > raw_len {
            break;
        }
    }
    if out.len() != raw_len {
        return Err(SnapshotError::Corrupt("chunk length"));
    }
    Ok(out)
}

/// The chunk last inflated, with where each of its rows starts in it.
struct Open {
    chunk: usize,
    raw: Bytes,
    /// Offset of each row of the chunk in `raw`.
    starts: Vec<u32>,
}

/// Reads rows' JSON from a snapshot, keeping the chunk it last inflated: a booth's rows picked
/// one by one from an interleaved chunk inflate it once.
#[derive(Default)]
pub(super) struct RowReader {
    open: Option<Open>,
}

impl RowReader {
    /// Rows `first..end`, all in chunk `ci`, with the commas between them: a slice of the
    /// inflated chunk.
    pub(super) fn rows(
        &mut self,
        snap: &Snapshot,
        ci: usize,
        first: u32,
        end: u32,
    ) -> Result<Bytes, SnapshotError> {
        let open = match self.open.take() {
            Some(o) if o.chunk == ci => o,
            _ => Self::inflate(snap, ci)?,
        };
        let ch = &snap.chunks[ci];
        let a = open.starts[(first - ch.first_row) as usize] as usize;
        let b = a + snap.rows.span_len(first, end);
        let out = open.raw.slice(a..b);
        self.open = Some(open);
        Ok(out)
    }

    fn inflate(snap: &Snapshot, ci: usize) -> Result<Open, SnapshotError> {
        let ch = &snap.chunks[ci];
        let raw = inflate_piece(&snap.gz_full[ch.gz.clone()], ch.check.len as usize)?;
        let mut starts = Vec::with_capacity((ch.end_row - ch.first_row) as usize);
        let mut at = 0u32;
        for i in ch.first_row..ch.end_row {
            starts.push(at);
            at += snap.rows.json_len(i as usize) + 1;
        }
        Ok(Open {
            chunk: ci,
            raw: Bytes::from(raw),
            starts,
        })
    }
}

/// A part of an identity answer: framing bytes, or a run of consecutive rows.
#[derive(Debug)]
pub(super) enum Part {
    Literal(Bytes),
    Rows(u32, u32),
}

/// An identity answer written as it is sent: literal parts as they are, rows inflated one
/// chunk at a time (about 0.2 ms of work per 500-row chunk).
pub struct IdentityBody {
    snap: Arc<Snapshot>,
    parts: VecDeque<Part>,
    reader: RowReader,
    len: usize,
}

impl IdentityBody {
    pub(super) fn new(snap: Arc<Snapshot>, parts: VecDeque<Part>) -> IdentityBody {
        let len = parts
            .iter()
            .map(|p| match p {
                Part::Literal(b) => b.len(),
                Part::Rows(a, b) => snap.rows.span_len(*a, *b),
            })
            .sum();
        IdentityBody {
            snap,
            parts,
            reader: RowReader::default(),
            len,
        }
    }

    /// Bytes the whole answer holds (its `Content-Length`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole answer in one buffer (for compressing a derived answer once).
    pub fn collect(self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity(self.len);
        for part in self {
            out.extend_from_slice(&part?);
        }
        Ok(out)
    }
}

impl Iterator for IdentityBody {
    type Item = Result<Bytes, SnapshotError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.parts.pop_front()? {
                Part::Literal(b) if b.is_empty() => continue,
                Part::Literal(b) => return Some(Ok(b)),
                Part::Rows(a, b) if a >= b => continue,
                Part::Rows(a, b) => {
                    // The rows of `a`'s chunk now; the rest, after a comma, next time.
                    let ci = self.snap.chunk_of(a);
                    let end = b.min(self.snap.chunks[ci].end_row);
                    if end < b {
                        self.parts.push_front(Part::Rows(end, b));
                        self.parts
                            .push_front(Part::Literal(Bytes::from_static(b",")));
                    }
                    return Some(self.reader.rows(&self.snap, ci, a, end));
                }
            }
        }
    }
}
