//! Patching a snapshot with the rows a write's cheap read brought back: each replaces its row by
//! `id`, in place, and only the chunks holding them are compressed again.
//!
//! **Invariant:** a patch never adds, drops or moves a row. A row the snapshot lacks, or one
//! whose `srno` (its place in the reference order) changed, refuses the patch, and the ward is
//! read whole instead: the reference order is the backend's, and wardgate does not guess it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::build::whole_check;
use super::build::{booth_of, stamp_of, Fact};
use super::fingerprint::{Fingerprint, Summing};
use super::inflate::inflate_piece;
use super::{next_id, Chunk, RowTable, Snapshot, SnapshotError, Unindexed};
use crate::gzip::{self, Check};
use crate::time::{EpochMs, UtcOffset};

/// A citizen's `id`: a JSON number, or a string of digits (the backend's Jackson may write
/// either; apps send either).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowId(pub u64);

impl<'de> Deserialize<'de> for RowId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RowId, D::Error> {
        d.deserialize_any(RowIdVisitor)
    }
}

/// Reads an id as it comes, a number or a string, without buffering it first (as an untagged
/// enum would).
struct RowIdVisitor;

impl serde::de::Visitor<'_> for RowIdVisitor {
    type Value = RowId;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a non-negative integer, or a string of its digits")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RowId, E> {
        Ok(RowId(n))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RowId, E> {
        u64::try_from(n)
            .map(RowId)
            .map_err(|_| E::custom("not a non-negative integer"))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RowId, E> {
        let digits = !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| s.parse().ok())
            .flatten()
            .map(RowId)
            .ok_or_else(|| E::custom("not a non-negative integer"))
    }
}

/// The facts of a row a patch needs: its id and place, plus what the filters index.
#[derive(Deserialize)]
struct PatchFacts<'a> {
    id: Option<RowId>,
    #[serde(borrow, default)]
    srno: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    booth_no: Fact,
    #[serde(default)]
    modifieddate: Fact,
}

/// One row of a cheap read, ready to replace its snapshot row.
#[derive(Debug)]
pub struct PatchRow {
    pub id: RowId,
    json: Box<[u8]>,
    srno: Option<Box<str>>,
    booth: String,
    pub modified: i64,
}

/// Why a patch cannot apply: the ward is then read whole (`wardgate_write_patches_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The cheap read's answer is not an array of rows with ids.
    Unreadable,
    /// It holds a row the snapshot does not (a new voter): its place is the backend's to say.
    NewRow,
    /// A row's `srno` changed, so its place in the reference order may have.
    Moved,
    /// A row of the write did not come back newer than the snapshot held it: the backend
    /// may have read a replica that had not applied the write yet.
    NotSeen,
    /// The snapshot's rows lack a usable `modifieddate`: no cheap read can be formed.
    Undated,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Unreadable => "unreadable",
            Refused::NewRow => "new_row",
            Refused::Moved => "moved",
            Refused::NotSeen => "not_seen",
            Refused::Undated => "undated",
        }
    }
}

/// Parses a cheap read's answer (a legacy JSON array) into rows to patch with.
pub fn patch_rows(body: &[u8], local: UtcOffset) -> Result<Vec<PatchRow>, Refused> {
    let rows: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|_| Refused::Unreadable)?;
    let mut booth_buf = String::new();
    rows.iter()
        .map(|raw| {
            let f: PatchFacts<'_> =
                serde_json::from_str(raw.get()).map_err(|_| Refused::Unreadable)?;
            Ok(PatchRow {
                id: f.id.ok_or(Refused::Unreadable)?,
                json: raw.get().as_bytes().into(),
                srno: f.srno.map(|s| s.get().into()),
                booth: booth_of(&f.booth_no, &mut booth_buf).to_string(),
                modified: stamp_of(&f.modifieddate, local),
            })
        })
        .collect()
}

/// Each row's id, sorted, with its row index: how a patch finds its rows.
#[derive(Debug)]
pub(super) struct IdIndex {
    ids: Box<[(u64, u32)]>,
}

impl IdIndex {
    fn row_of(&self, id: RowId) -> Option<u32> {
        self.ids
            .binary_search_by_key(&id.0, |e| e.0)
            .ok()
            .map(|i| self.ids[i].1)
    }

    pub(super) fn bytes(&self) -> usize {
        self.ids.len() * std::mem::size_of::<(u64, u32)>()
    }

    /// The fingerprint of rows stamped `modified`, if every row has a readable id and date.
    fn fingerprint(&self, modified: &[i64]) -> Option<Fingerprint> {
        if self.ids.len() != modified.len() {
            return None;
        }
        let mut sum = Summing::default();
        for (id, row) in self.ids.iter() {
            sum.add(Some(*id), modified[*row as usize]);
        }
        sum.finish()
    }
}

/// What a patch changes in one chunk: row index (within the ward) to its new row.
type ChunkEdits<'a> = BTreeMap<u32, &'a PatchRow>;

/// A chunk compressed again, and its check; `None` when no byte of it changed.
type Piece = Option<(Vec<u8>, Check)>;

impl Snapshot {
    /// The `modifieddate` this snapshot holds for row `id`, if it holds the row.
    pub fn modified_of(&self, id: RowId) -> Result<Option<i64>, SnapshotError> {
        let index = self.id_index()?;
        Ok(index.row_of(id).map(|r| self.rows.modified(r as usize)))
    }

    /// The id index, read out of the chunks on first use (a snapshot that is never written to
    /// never pays for it) and handed on to every patch of it.
    fn id_index(&self) -> Result<&Arc<IdIndex>, SnapshotError> {
        if let Some(i) = self.ids.get() {
            return Ok(i);
        }
        let mut ids = Vec::with_capacity(self.rows());
        for c in &self.chunks {
            let raw = self.chunk_json(c)?;
            for (row, json) in c.row_spans(&self.rows, &raw) {
                #[derive(Deserialize)]
                struct IdOnly {
                    id: Option<RowId>,
                }
                if let Ok(IdOnly { id: Some(id) }) = serde_json::from_slice(json) {
                    ids.push((id.0, row));
                }
            }
        }
        ids.sort_unstable();
        let index = Arc::new(IdIndex {
            ids: ids.into_boxed_slice(),
        });
        Ok(self.ids.get_or_init(|| index))
    }

    fn chunk_json(&self, c: &Chunk) -> Result<Vec<u8>, SnapshotError> {
        inflate_piece(
            &self.gz_full[c.gz.clone()],
            self.rows.span_len(c.first_row, c.end_row),
        )
    }

    /// This snapshot with `rows` in place of theirs: the same build time (a patch is not a
    /// read of the whole ward), `seen_at` and `includes` as the caller vouches. A row only
    /// replaces a version stamped no later than itself, so a patch that arrives after a newer
    /// one cannot take a row back. Compresses only the chunks that change.
    pub fn patch(
        &self,
        rows: &[PatchRow],
        seen_at: EpochMs,
        includes: Box<[EpochMs]>,
    ) -> Result<Result<Snapshot, Refused>, SnapshotError> {
        let index = self.id_index()?.clone();
        let mut edits: BTreeMap<usize, ChunkEdits<'_>> = BTreeMap::new();
        for row in rows {
            let Some(r) = index.row_of(row.id) else {
                return Ok(Err(Refused::NewRow));
            };
            if row.modified >= self.rows.modified(r as usize) {
                edits.entry(self.chunk_of(r)).or_default().insert(r, row);
            }
        }
        let mut facts = Facts::of(self);
        let mut pieces: Vec<Piece> = vec![None; self.chunks.len()];
        for (ci, chunk_edits) in &edits {
            match self.recompress(*ci, chunk_edits, &mut facts)? {
                Ok(piece) => pieces[*ci] = piece,
                Err(refused) => return Ok(Err(refused)),
            }
        }
        Ok(Ok(self.relaid(pieces, facts, index, seen_at, includes)))
    }

    /// Chunk `ci` with its edits applied, compressed; `None` when no byte of it changes.
    fn recompress(
        &self,
        ci: usize,
        edits: &ChunkEdits<'_>,
        facts: &mut Facts,
    ) -> Result<Result<Piece, Refused>, SnapshotError> {
        let c = &self.chunks[ci];
        let raw = self.chunk_json(c)?;
        let mut json = Vec::with_capacity(raw.len() + 1024);
        let mut changed = false;
        for (row, old) in c.row_spans(&self.rows, &raw) {
            if row > c.first_row {
                json.push(b',');
            }
            match edits.get(&row) {
                Some(new) if *new.json != *old => {
                    if srno(old).as_deref() != new.srno.as_deref() {
                        return Ok(Err(Refused::Moved));
                    }
                    json.extend_from_slice(&new.json);
                    facts.set(row as usize, new)?;
                    changed = true;
                }
                _ => json.extend_from_slice(old),
            }
        }
        if !changed {
            return Ok(Ok(None));
        }
        let mut piece = Vec::with_capacity(json.len() / 5 + 64);
        gzip::deflate_piece(&mut gzip::compressor(), &json, &mut piece);
        Ok(Ok(Some((piece, Check::of(&json)))))
    }

    /// The patched snapshot: new pieces where chunks changed, the old bytes elsewhere.
    fn relaid(
        &self,
        pieces: Vec<Piece>,
        facts: Facts,
        ids: Arc<IdIndex>,
        seen_at: EpochMs,
        includes: Box<[EpochMs]>,
    ) -> Snapshot {
        let rows = RowTable::new(&facts.lens, &facts.booths, &facts.modified);
        let mut gz = Vec::with_capacity(self.gz_full.len() + 4096);
        gz.extend_from_slice(&gzip::GZIP_HEADER);
        gzip::put_stored(&mut gz, b"[");
        let mut chunks = Vec::with_capacity(self.chunks.len());
        for (i, (old, new)) in self.chunks.iter().zip(pieces).enumerate() {
            if i > 0 {
                gzip::put_stored(&mut gz, b",");
            }
            let at = gz.len();
            let check = match new {
                Some((piece, check)) => {
                    gz.extend_from_slice(&piece);
                    check
                }
                None => {
                    gz.extend_from_slice(&self.gz_full[old.gz.clone()]);
                    old.check
                }
            };
            let range = at..gz.len();
            chunks.push(Chunk::new(&rows, old.first_row, old.end_row, range, check));
        }
        gzip::put_stored(&mut gz, b"]");
        let whole = whole_check(chunks.iter().map(|c| c.check));
        gzip::put_trailer(&mut gz, whole);
        let fingerprint = ids.fingerprint(&facts.modified);
        let ids_cell = std::sync::OnceLock::new();
        let _ = ids_cell.set(ids);
        let lineage = self.lineage();
        Snapshot {
            lineage: std::sync::Mutex::new(super::Lineage {
                root: lineage.root,
                patches: lineage.patches + 1,
            }),
            unindexed: Unindexed::of(&facts.booth_names, &chunks),
            tag: format!("{:08x}{:x}{:x}", whole.crc, whole.len, self.built_at.0),
            id: next_id(),
            key: self.key.clone(),
            built_at: self.built_at,
            seen_at,
            includes,
            fingerprint,
            vouched_at: std::sync::atomic::AtomicI64::new(i64::MIN),
            gz_full: wardgate_sealed::seal(&gz),
            rows,
            booths: facts.booth_names,
            chunks,
            ids: ids_cell,
        }
    }
}

impl Chunk {
    /// Each row of this chunk with its JSON, given the chunk's inflated bytes.
    fn row_spans<'a>(
        &self,
        rows: &'a RowTable,
        raw: &'a [u8],
    ) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        let first = self.first_row;
        let mut at = 0usize;
        (self.first_row..self.end_row).map_while(move |r| {
            if r > first {
                at += 1; // the comma
            }
            let len = rows.json_len(r as usize) as usize;
            let json = raw.get(at..at + len)?;
            at += len;
            Some((r, json))
        })
    }
}

/// The `srno` of a row's JSON, as written (its place in the reference order).
fn srno(row: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Srno<'a> {
        #[serde(borrow, default)]
        srno: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_slice::<Srno<'_>>(row)
        .ok()
        .and_then(|s| s.srno.map(|r| r.get().to_owned()))
}

/// The row facts of a snapshot being patched, column by column.
struct Facts {
    lens: Vec<u32>,
    booths: Vec<u32>,
    modified: Vec<i64>,
    booth_names: Vec<String>,
}

impl Facts {
    fn of(s: &Snapshot) -> Facts {
        let n = s.rows();
        Facts {
            lens: (0..n).map(|i| s.rows.json_len(i)).collect(),
            booths: (0..n).map(|i| u32::from(s.rows.booth(i))).collect(),
            modified: (0..n).map(|i| s.rows.modified(i)).collect(),
            booth_names: s.booths.clone(),
        }
    }

    fn set(&mut self, i: usize, row: &PatchRow) -> Result<(), SnapshotError> {
        let booth = match self.booth_names.iter().position(|b| *b == row.booth) {
            Some(b) => b,
            None => {
                self.booth_names.push(row.booth.clone());
                self.booth_names.len() - 1
            }
        };
        if booth > usize::from(u16::MAX) {
            return Err(SnapshotError::TooManyBooths);
        }
        self.lens[i] = u32::try_from(row.json.len()).map_err(|_| SnapshotError::BadRow {
            index: i,
            field: "length (over 4 GiB)",
        })?;
        self.booths[i] = booth as u32;
        self.modified[i] = row.modified;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::snapshot::fixtures::{render, rows_of, snap, ward_json};
    use crate::snapshot::Selection;

    /// Row `i` of `ward_json` with `voted` set and a new stamp (and, optionally, a new srno).
    fn changed(json: &[u8], i: usize, stamp: i64, srno: Option<&str>) -> serde_json::Value {
        let mut row = rows_of(json)[i].clone();
        row["voted"] = true.into();
        row["modifieddate"] = stamp.into();
        if let Some(s) = srno {
            row["srno"] = s.into();
        }
        row
    }

    fn rows(values: &[serde_json::Value]) -> Vec<PatchRow> {
        patch_rows(&serde_json::to_vec(values).unwrap(), UtcOffset(0)).unwrap()
    }

    #[test]
    fn ids_are_numbers_or_strings_of_digits_and_nothing_else() {
        let id = |json: &str| serde_json::from_str::<RowId>(json).ok();
        assert_eq!(id("1005"), Some(RowId(1005)));
        assert_eq!(id("\"1005\""), Some(RowId(1005)));
        assert_eq!(id("\"\\u0031\\u0032\""), Some(RowId(12)), "escaped digits");
        assert_eq!(id("18446744073709551615"), Some(RowId(u64::MAX)));
        for bad in [
            "-1",
            "1.5",
            "\"\"",
            "\"-1\"",
            "\" 7\"",
            "\"12345678901234567890\"",
            "null",
            "true",
            "[1]",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_patch_replaces_rows_in_place_and_recompresses_only_their_chunks() {
        let json = ward_json(1_600); // 4 chunks
        let s = snap(&json);
        let new = [
            changed(&json, 3, 1_800_000_000_000, None),
            changed(&json, 1_201, 1_800_000_000_001, None),
        ];
        let p = s
            .patch(&rows(&new), EpochMs(50), Box::new([EpochMs(60)]))
            .unwrap()
            .unwrap();
        let mut want = rows_of(&json);
        want[3] = new[0].clone();
        want[1_201] = new[1].clone();
        let got: Vec<serde_json::Value> =
            rows_of(&render(&Arc::new(p), &Selection::default(), true).0);
        assert_eq!(got, want);
        let p = s
            .patch(&rows(&new), EpochMs(50), Box::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.built_at, p.seen_at),
            (s.built_at, EpochMs(50)),
            "a patch keeps the build time"
        );
        assert_eq!(p.newest_change(), EpochMs(1_800_000_000_001));
        let same =
            |i: usize| s.gz_full[s.chunks[i].gz.clone()] == p.gz_full[p.chunks[i].gz.clone()];
        assert_eq!(
            (0..4).map(same).collect::<Vec<_>>(),
            [false, true, false, true]
        );
        // Decoded from Redis, the patched copy serves the same rows and keeps its stamps.
        let back = Snapshot::decode(bytes::Bytes::from(p.encode())).unwrap();
        assert_eq!(back.seen_at, EpochMs(50));
        assert_eq!(
            rows_of(&render(&Arc::new(back), &Selection::default(), false).0),
            want
        );
    }

    #[test]
    fn a_patch_refuses_what_it_cannot_place_and_never_takes_a_row_back() {
        let json = ward_json(700);
        let s = snap(&json);
        let mut stranger = changed(&json, 0, 1_800_000_000_000, None);
        stranger["id"] = 99_999.into();
        let refused =
            |v: &[serde_json::Value]| s.patch(&rows(v), EpochMs(1), Box::default()).unwrap().err();
        assert_eq!(refused(&[stranger]), Some(Refused::NewRow));
        assert_eq!(
            refused(&[changed(&json, 5, 1_800_000_000_000, Some("77"))]),
            Some(Refused::Moved)
        );
        // A version stamped before the one held is not applied.
        let older = changed(&json, 5, 1_000, None);
        let p = s
            .patch(&rows(&[older]), EpochMs(1), Box::default())
            .unwrap()
            .unwrap();
        assert_eq!(render(&Arc::new(p), &Selection::default(), true).0, json);
        assert_eq!(
            s.modified_of(RowId(1_005)).unwrap(),
            Some(s.rows.modified(5))
        );
        assert_eq!(s.modified_of(RowId(5)).unwrap(), None);
        assert_eq!(
            patch_rows(b"{}", UtcOffset(0)).err(),
            Some(Refused::Unreadable)
        );
        assert_eq!(
            patch_rows(br#"[{"voted":true}]"#, UtcOffset(0)).err(),
            Some(Refused::Unreadable)
        );
    }
}
