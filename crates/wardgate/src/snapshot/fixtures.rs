//! Test fixtures shared by the snapshot unit tests: legacy-shaped wards, and rendering a
//! selection back to plain JSON.

use std::sync::Arc;

use bytes::Bytes;

use super::{Picked, Selection, Snapshot};
use crate::gzip::{self, Assembler};
use crate::params::WardKey;
use crate::time::EpochMs;

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

/// The selection as plain JSON, rendered as gzip (then inflated) or as identity.
pub(super) fn render(s: &Arc<Snapshot>, sel: &Selection<'_>, gz: bool) -> (Vec<u8>, Picked) {
    let picked = s.pick(sel);
    let body = if gz {
        let mut a = Assembler::gzip();
        a.literal(b"[");
        s.render_gzip(&picked, &mut a).unwrap();
        a.literal(b"]");
        let (parts, n) = a.finish();
        let body: Vec<u8> = parts.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(body.len(), n);
        gzip::gunzip(&body).unwrap()
    } else {
        let b = s.identity(&picked, Bytes::from_static(b"["), Bytes::from_static(b"]"));
        let n = b.len();
        let body = b.collect().unwrap();
        assert_eq!(body.len(), n, "Content-Length");
        body
    };
    (body, picked)
}

/// A snapshot of a legacy answer, shared as the cache shares it.
pub(super) fn snap(json: &[u8]) -> Arc<Snapshot> {
    Arc::new(Snapshot::from_legacy_json(key(), json, EpochMs(42)).unwrap())
}
