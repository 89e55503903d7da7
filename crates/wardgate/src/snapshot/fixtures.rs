//! Test fixtures shared by the snapshot unit tests: legacy-shaped wards, and rendering a
//! selection back to plain JSON.

use super::{Picked, Selection, Snapshot};
use crate::gzip::{self, Assembler};
use crate::params::WardKey;

/// Rows shaped like the legacy ones: booth changes every 37 rows, scattered modifieddates.
pub(super) fn ward_json(n: usize) -> Vec<u8> {
    ward_json_with(n, |i| 1 + i / 37)
}

/// Rows as a real roll orders them: serial numbers restart in each of 7 booths, so the
/// reference order interleaves the booths row by row.
pub(super) fn interleaved_ward_json(n: usize) -> Vec<u8> {
    ward_json_with(n, |i| 1 + i % 7)
}

fn ward_json_with(n: usize, booth_of: fn(usize) -> usize) -> Vec<u8> {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"id":{},"booth_no":"{}","srno":"{}","first_name":"Name{}","modifieddate":{}}}"#,
                1000 + i,
                booth_of(i),
                i + 1,
                i,
                1_700_000_000_000i64 + ((i * 7919) % 1000) as i64 * 1000
            )
        })
        .collect();
    format!("[{}]", rows.join(",")).into_bytes()
}

pub(super) fn key() -> WardKey {
    WardKey::parse("Karnataka", "150", "3").unwrap()
}

pub(super) fn rows_of(json: &[u8]) -> Vec<serde_json::Value> {
    serde_json::from_slice(json).unwrap()
}

pub(super) fn render(s: &Snapshot, sel: &Selection<'_>, gz: bool) -> (Vec<u8>, Picked) {
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
