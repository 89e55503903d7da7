//! Answering a selection from a snapshot: the reference query's filters and page over its rows
//! (`pick`), then the picked rows as slices of the stored buffers (`render_rows`).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::inflate::{IdentityBody, Part, RowReader};
use super::rows::RowTable;
use super::{Chunk, Snapshot, SnapshotError};
use crate::gzip::{Assembler, Check};
use crate::params::{BoothSet, Page};

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

/// The selection's filters, by chunk where a chunk's booths and date bounds decide them, else
/// by row.
struct Filter {
    /// Per booth index of the snapshot: wanted or not; `None` = every booth.
    booth_ok: Option<Vec<bool>>,
    since_ms: Option<i64>,
}

impl Filter {
    fn new(booths: &[String], sel: &Selection<'_>) -> Filter {
        Filter {
            booth_ok: sel
                .booths
                .map(|set| booths.iter().map(|b| set.0.contains(b)).collect()),
            since_ms: sel.since_ms,
        }
    }

    /// Whether any row of the chunk may match: one of its booths is wanted and its newest row
    /// is new enough.
    fn may_match(&self, ch: &Chunk) -> bool {
        self.booth_ok
            .as_ref()
            .is_none_or(|ok| ch.booths.iter().any(|b| ok[*b as usize]))
            && self.since_ms.is_none_or(|s| ch.max_modified > s)
    }

    /// Whether every row of a chunk matches.
    fn all_match(&self, ch: &Chunk) -> bool {
        self.booth_ok
            .as_ref()
            .is_none_or(|ok| ch.booths.iter().all(|b| ok[*b as usize]))
            && self.since_ms.is_none_or(|s| ch.min_modified > s)
    }

    fn row(&self, rows: &RowTable, i: u32) -> bool {
        let i = i as usize;
        self.booth_ok
            .as_ref()
            .is_none_or(|ok| ok[rows.booth(i) as usize])
            && self.since_ms.is_none_or(|s| rows.modified(i) > s)
    }
}

/// The page being filled while the chunks are walked in order: `LIMIT take OFFSET skip`.
struct Walk {
    /// Matching rows still to pass over.
    skip: u64,
    /// Matching rows still to take.
    take: u64,
    picked: Picked,
}

impl Walk {
    fn new(skip: u64, take: u64) -> Walk {
        Walk {
            skip,
            take,
            picked: Picked {
                runs: Vec::new(),
                count: 0,
                has_more: false,
            },
        }
    }

    /// Takes from a chunk whose every row matches; true once the page is known to be done.
    fn whole_chunk(&mut self, ci: usize, ch: &Chunk) -> bool {
        let n = u64::from(ch.end_row - ch.first_row);
        if self.skip >= n {
            self.skip -= n;
            return false;
        }
        if self.skip == 0 && self.take >= n {
            self.push(Piece::Chunk(ci), n);
            return false;
        }
        let first = ch.first_row + self.skip as u32;
        let end = (u64::from(first) + self.take).min(u64::from(ch.end_row)) as u32;
        self.push(Piece::Rows(first, end), u64::from(end - first));
        self.skip = 0;
        if self.take == 0 && end < ch.end_row {
            self.picked.has_more = true;
            return true;
        }
        false
    }

    /// Mixed chunk: walks its rows, gathering consecutive matches into runs; true once the page
    /// is known to be done.
    fn mixed_chunk(&mut self, ch: &Chunk, rows: &RowTable, filter: &Filter) -> bool {
        let mut open: Option<(u32, u32)> = None;
        for i in ch.first_row..ch.end_row {
            if !filter.row(rows, i) {
                if let Some((a, b)) = open.take() {
                    self.picked.runs.push(Piece::Rows(a, b));
                }
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            if self.take == 0 {
                self.picked.has_more = true;
                break;
            }
            self.take -= 1;
            self.picked.count += 1;
            open = match open {
                Some((a, b)) if b == i => Some((a, i + 1)),
                Some((a, b)) => {
                    self.picked.runs.push(Piece::Rows(a, b));
                    Some((i, i + 1))
                }
                None => Some((i, i + 1)),
            };
        }
        if let Some((a, b)) = open {
            self.picked.runs.push(Piece::Rows(a, b));
        }
        self.picked.has_more
    }

    /// Adds a run of `n` rows to the page.
    fn push(&mut self, piece: Piece, n: u64) {
        self.picked.runs.push(piece);
        self.take -= n;
        self.picked.count += n as usize;
    }
}

impl Snapshot {
    /// Picks the rows of a selection: SQL semantics of the reference query (filters, then
    /// `LIMIT size OFFSET page*size` over the snapshot's `ORDER BY srno + 0, id` order).
    pub fn pick(&self, sel: &Selection<'_>) -> Picked {
        let (skip, take) = match sel.page {
            Some(p) => (p.offset(), u64::from(p.size)),
            None => (0, u64::MAX),
        };
        self.pick_window(sel, skip, take)
    }

    /// The rows of a selection's filters (its page aside): `take` of them, after passing over
    /// `skip`. A page of an assembly-wide read is such a window over each of its wards.
    pub fn pick_window(&self, sel: &Selection<'_>, skip: u64, take: u64) -> Picked {
        let filter = Filter::new(&self.booths, sel);
        let mut walk = Walk::new(skip, take);
        for (ci, ch) in self.chunks.iter().enumerate() {
            if !filter.may_match(ch) {
                continue;
            }
            let done = if walk.take == 0 {
                // The page is full: only whether any later row matches is left to learn.
                walk.picked.has_more =
                    (ch.first_row..ch.end_row).any(|i| filter.row(&self.rows, i));
                walk.picked.has_more
            } else if filter.all_match(ch) {
                walk.whole_chunk(ci, ch)
            } else {
                walk.mixed_chunk(ch, &self.rows, &filter)
            };
            if done {
                break;
            }
        }
        walk.picked
    }

    /// The picked rows as spans: runs of consecutive rows, or of consecutive whole chunks
    /// when `chunks` (gzip), each a single slice of the stored bytes.
    fn spans(&self, picked: &Picked, chunks: bool) -> Vec<Span> {
        let mut out: Vec<Span> = Vec::with_capacity(picked.runs.len());
        for run in &picked.runs {
            let next = match run {
                Piece::Chunk(ci) if chunks => Span::Chunks(*ci, *ci),
                Piece::Chunk(ci) => {
                    Span::Rows(self.chunks[*ci].first_row, self.chunks[*ci].end_row)
                }
                Piece::Rows(a, b) => Span::Rows(*a, *b),
            };
            match (out.last_mut(), next) {
                (Some(Span::Chunks(_, e)), Span::Chunks(n, _)) if n == *e + 1 => *e = n,
                (Some(Span::Rows(_, e)), Span::Rows(a, b)) if a == *e => *e = b,
                _ => out.push(next),
            }
        }
        out
    }

    /// Writes the picked rows into a gzip answer, separated by commas: whole chunks as their
    /// stored pieces, other rows inflated from their chunks and framed uncompressed. The
    /// caller frames the array.
    pub fn render_gzip(&self, picked: &Picked, out: &mut Assembler) -> Result<(), SnapshotError> {
        let comma = Check::of(b",");
        let mut reader = RowReader::default();
        for (i, span) in self.spans(picked, true).into_iter().enumerate() {
            if i > 0 {
                out.literal(b",");
            }
            match span {
                Span::Chunks(a, b) => {
                    let check = (a + 1..=b).fold(self.chunks[a].check, |c, i| {
                        c.then(comma).then(self.chunks[i].check)
                    });
                    let range = self.chunks[a].gz.start..self.chunks[b].gz.end;
                    out.piece(self.gz_full.slice(range), check);
                }
                Span::Rows(mut a, b) => {
                    while a < b {
                        let ci = self.chunk_of(a);
                        let end = b.min(self.chunks[ci].end_row);
                        out.literal_bytes(reader.rows(self, ci, a, end)?);
                        if end < b {
                            out.literal(b",");
                        }
                        a = end;
                    }
                }
            }
        }
        Ok(())
    }

    /// The picked rows as an identity answer between `head` and `tail`, inflated as it is sent.
    pub fn identity(self: &Arc<Self>, picked: &Picked, head: Bytes, tail: Bytes) -> IdentityBody {
        let mut parts = VecDeque::with_capacity(picked.runs.len() * 2 + 2);
        parts.push_back(Part::Literal(head));
        for (i, span) in self.spans(picked, false).into_iter().enumerate() {
            if i > 0 {
                parts.push_back(Part::Literal(Bytes::from_static(b",")));
            }
            if let Span::Rows(a, b) = span {
                parts.push_back(Part::Rows(a, b));
            }
        }
        parts.push_back(Part::Literal(tail));
        IdentityBody::new(self.clone(), parts)
    }

    /// Bytes of picked rows that do not lie in whole chunks (they would be sent uncompressed).
    pub fn loose_bytes(&self, picked: &Picked) -> usize {
        picked
            .runs
            .iter()
            .map(|r| match r {
                Piece::Chunk(_) => 0,
                Piece::Rows(a, b) => self.rows.span_len(*a, *b),
            })
            .sum()
    }
}

/// A run of picked rows as `render_gzip` and `identity` write it: chunks `a..=b`, or rows
/// `a..b`.
#[derive(Clone, Copy)]
enum Span {
    Chunks(usize, usize),
    Rows(u32, u32),
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::snapshot::fixtures::{interleaved_ward_json, render, rows_of, snap, ward_json};
    use crate::snapshot::CHUNK_ROWS;

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

    #[test]
    fn full_ward_is_byte_identical_in_both_encodings() {
        let json = ward_json(1234);
        let s = snap(&json);
        assert_eq!(s.rows(), 1234);
        for gz in [false, true] {
            let (body, picked) = render(&s, &Selection::default(), gz);
            assert_eq!(body, json, "gzip={gz}");
            assert!(picked.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
        }
    }

    #[test]
    fn every_selection_matches_the_reference() {
        every_selection_matches_the_reference_on(&ward_json(1000));
        every_selection_matches_the_reference_on(&interleaved_ward_json(1000));
    }

    fn every_selection_matches_the_reference_on(json: &[u8]) {
        let json = json.to_vec();
        let all = rows_of(&json);
        let s = snap(&json);
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
    fn chunks_are_runs_of_rows_whatever_the_booths() {
        for json in [ward_json(1000), interleaved_ward_json(1000)] {
            let s = snap(&json);
            assert_eq!(
                s.chunks.len(),
                1000 / CHUNK_ROWS,
                "booth changes end no chunk"
            );
            let p = s.pick(&Selection {
                page: Some(Page {
                    page: 1,
                    size: CHUNK_ROWS as u32,
                }),
                ..Default::default()
            });
            assert!(p.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
        }
        // Every booth wanted: whole chunks still, though each chunk holds many booths.
        let s = snap(&interleaved_ward_json(1000));
        let all = BoothSet((1..=7).map(|b| b.to_string()).collect());
        let p = s.pick(&Selection {
            booths: Some(&all),
            ..Default::default()
        });
        assert_eq!(p.count, 1000);
        assert!(p.runs.iter().all(|r| matches!(r, Piece::Chunk(_))));
        // One booth of seven: its rows, one in seven, picked from within the chunks.
        let four = BoothSet(BTreeSet::from(["4".to_string()]));
        let p = s.pick(&Selection {
            booths: Some(&four),
            ..Default::default()
        });
        assert_eq!(p.count, (0..1000).filter(|i| i % 7 == 3).count());
        assert!(p.runs.iter().all(|r| matches!(r, Piece::Rows(..))));
    }
}
