//! A ward's fingerprint: an order-independent summary of its rows' `(id, modifieddate)` pairs,
//! computed alike over a snapshot's rows and, by the replica, over the table
//! (`replica::FINGERPRINT_SQL`), so that a changed ward is told from an unchanged one with one
//! grouped query per assembly.
//!
//! Why no change can slip by: the delta protocol itself only carries a change that moves a row's
//! `modifieddate`, so every change the apps could see moves some pair. The row count catches a
//! row added or removed. A single moved stamp, *m* to *m′*, moves `sum_ms` by *m′ − m ≠ 0*.
//! Two moved stamps could cancel in `sum_ms` only if Δa = −Δb, and then `sum_id_ms` moves by
//! (a − b)·Δa ≠ 0 because their ids differ. So any change of one or two rows is certain to be
//! seen — unlike `MAX(modifieddate)` and `COUNT(*)`, which miss an update stamped at or below
//! the current maximum (skewed backend clocks, or the same millisecond). More rows at once would
//! have to cancel in both exact sums and in the XOR of 32-bit CRCs together.

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub rows: u64,
    /// Sum of `modifieddate`s, epoch ms.
    pub sum_ms: i128,
    /// Sum of `id × modifieddate`.
    pub sum_id_ms: i128,
    /// XOR of CRC-32 of `"{id}/{modifieddate}"` (the replica computes the same text).
    pub xor_crc: u32,
}

impl Fingerprint {
    pub fn add(&mut self, id: u64, ms: i64) {
        use std::io::Write;
        let mut text = [0u8; 48];
        let n = {
            let mut w = &mut text[..];
            let _ = write!(w, "{id}/{ms}");
            48 - w.len()
        };
        self.rows += 1;
        self.sum_ms += i128::from(ms);
        self.sum_id_ms += i128::from(id) * i128::from(ms);
        self.xor_crc ^= crc32fast::hash(&text[..n]);
    }
}

/// Accumulates a fingerprint row by row; gives none if any row lacks an id or a date.
#[derive(Debug, Default)]
pub(super) struct Summing {
    sum: Fingerprint,
    broken: bool,
}

impl Summing {
    pub(super) fn add(&mut self, id: Option<u64>, ms: i64) {
        match id {
            Some(id) if ms != super::UNKNOWN_STAMP => self.sum.add(id, ms),
            _ => self.broken = true,
        }
    }

    pub(super) fn finish(self) -> Option<Fingerprint> {
        (!self.broken).then_some(self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_under_the_maximum_and_a_swap_are_seen() {
        let of = |rows: &[(u64, i64)]| {
            let mut f = Fingerprint::default();
            rows.iter().for_each(|(id, ms)| f.add(*id, *ms));
            f
        };
        let base = of(&[(1, 100), (2, 300), (3, 200)]);
        assert_eq!(
            base,
            of(&[(3, 200), (1, 100), (2, 300)]),
            "order does not matter"
        );
        // Same count, same maximum: an update stamped below the newest row.
        assert_ne!(base, of(&[(1, 150), (2, 300), (3, 200)]));
        // Two stamps moving by opposite amounts: the sum alone would not see it.
        assert_ne!(base, of(&[(1, 150), (2, 300), (3, 150)]));
        assert_ne!(base, of(&[(1, 100), (2, 300)]));
        let mut s = Summing::default();
        s.add(None, 5);
        assert_eq!(s.finish(), None);
    }
}
