//! L1 accounts what its snapshots hold: the heap bytes that cached wards keep alive, counted
//! by the allocator, match the bytes L1 reports, for wards built from rows and loaded from
//! their Redis encoding alike. Its own test binary, so nothing else allocates meanwhile.
//! A ward's full answer lives in a sealed memory file (`wardgate_sealed`), outside the heap:
//! what wards hold is the heap's bytes plus the sealed regions' pages.

use std::alloc::System;
use std::sync::Arc;

use bytes::Bytes;
use cap::Cap;
use wardgate::cache::l1::L1;
use wardgate::cache::{CacheKey, Entry};
use wardgate::params::WardKey;
use wardgate::snapshot::Snapshot;
use wardgate::time::EpochMs;
use wardgate_sample::synth::{generate_ward, RollSpec};
use wardgate_sample::voter::{write_json_array, DateForm};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const WARDS: u32 = 6;
const ROWS: u32 = 10_000;

/// A ward's full answer as the backend sends it: rows in `ORDER BY srno + 0, id` order, which
/// on a roll numbered per booth interleaves the booths.
fn ward_answer(spec: &RollSpec, ward: u32) -> Vec<u8> {
    let mut rows = generate_ward(spec, ward);
    rows.sort_by_key(|c| (c.srno.parse::<u64>().unwrap_or(0), c.id));
    let mut out = Vec::new();
    write_json_array(&rows, DateForm::EpochMs, &mut out);
    out
}

fn key(ward: u32) -> WardKey {
    WardKey::parse("Karnataka", "150", &ward.to_string()).unwrap()
}

/// The heap's bytes and the sealed regions' pages.
fn held_now() -> usize {
    ALLOC.allocated() + wardgate_sealed::stats().bytes
}

/// Fills an L1 with what `make` returns for each ward, dropping everything else it made, and
/// returns the heap bytes left held, what L1 accounts, and the wards' gzip bytes.
fn held_by(make: impl Fn(u32) -> Snapshot) -> (usize, usize, usize) {
    let l1 = L1::default();
    let before = held_now();
    let mut gzip = 0;
    for w in 1..=WARDS {
        let s = Arc::new(make(w));
        gzip += s.gzip_bytes();
        l1.insert(CacheKey::Ward(key(w)), Entry::Snapshot(s), usize::MAX);
    }
    let held = held_now() - before;
    let accounted = l1.usage().0;
    drop(l1);
    (held, accounted, gzip)
}

#[test]
fn l1_accounts_the_bytes_its_wards_hold() {
    let spec = RollSpec::new("Karnataka", "150", WARDS, ROWS);
    let answers: Vec<Vec<u8>> = (1..=WARDS).map(|w| ward_answer(&spec, w)).collect();
    let built =
        |w: u32| Snapshot::from_legacy_json(key(w), &answers[w as usize - 1], EpochMs(1)).unwrap();
    let encoded: Vec<Bytes> = (1..=WARDS)
        .map(|w| Bytes::from(built(w).encode()))
        .collect();
    let loaded = |w: u32| Snapshot::decode(encoded[w as usize - 1].clone()).unwrap();

    for (how, (held, accounted, gzip)) in [("built", held_by(built)), ("loaded", held_by(loaded))] {
        let off = held as f64 / accounted as f64 - 1.0;
        eprintln!("{how}: held {held} B, accounted {accounted} B, gzip {gzip} B");
        assert!(
            off.abs() < 0.02,
            "{how}: L1 accounts {accounted} B but its wards hold {held} B ({:+.1}%)",
            off * 100.0
        );
        // The engine's memory goal: a cached ward costs at most 1.2x its gzip bytes.
        assert!(
            held as f64 <= 1.2 * gzip as f64,
            "{how}: {held} B held for {gzip} B of gzip ({:.3}x)",
            held as f64 / gzip as f64
        );
    }
}
