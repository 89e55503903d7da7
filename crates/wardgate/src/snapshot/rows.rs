//! The per-row facts a snapshot keeps in memory, each column packed to the narrowest width that
//! holds it: a 10,000-row ward's facts cost 5-7 bytes a row against ~47 bytes of gzip.

/// Unsigned values stored one, two or four bytes each: the narrowest width that holds the
/// largest of them.
#[derive(Debug)]
enum Packed {
    U8(Box<[u8]>),
    U16(Box<[u16]>),
    U32(Box<[u32]>),
}

impl Packed {
    fn new(values: &[u32]) -> Packed {
        let max = values.iter().copied().max().unwrap_or(0);
        if max <= u32::from(u8::MAX) {
            Packed::U8(values.iter().map(|v| *v as u8).collect())
        } else if max <= u32::from(u16::MAX) {
            Packed::U16(values.iter().map(|v| *v as u16).collect())
        } else {
            Packed::U32(values.into())
        }
    }

    /// Bytes one value takes when `max` is the largest.
    fn width(max: u64) -> usize {
        match max {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 4,
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            Packed::U8(v) => u32::from(v[i]),
            Packed::U16(v) => u32::from(v[i]),
            Packed::U32(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Packed::U8(v) => v.len(),
            Packed::U16(v) => v.len(),
            Packed::U32(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Packed::U8(v) => v.len(),
            Packed::U16(v) => v.len() * 2,
            Packed::U32(v) => v.len() * 4,
        }
    }
}

/// Each row's `modifieddate` (epoch ms), in whichever form is smaller: offsets from the oldest
/// (when they span less than 2^32 ms, ~49 days), or ranks into the sorted distinct values (a
/// roll loaded in bulk has few).
#[derive(Debug)]
enum Stamps {
    Offset { base: i64, off: Packed },
    Ranked { table: Box<[i64]>, rank: Packed },
}

impl Stamps {
    fn new(modified: &[i64]) -> Stamps {
        let mut table = modified.to_vec();
        table.sort_unstable();
        table.dedup();
        let (min, max) = match (table.first(), table.last()) {
            (Some(a), Some(b)) => (*a, *b),
            _ => (0, 0),
        };
        let span = max.abs_diff(min);
        let ranked_cost = table.len() * 8 + Packed::width(table.len() as u64) * modified.len();
        let offset_cost = Packed::width(span) * modified.len();
        if span <= u64::from(u32::MAX) && offset_cost <= ranked_cost {
            let off: Vec<u32> = modified.iter().map(|m| m.abs_diff(min) as u32).collect();
            return Stamps::Offset {
                base: min,
                off: Packed::new(&off),
            };
        }
        let rank: Vec<u32> = modified
            .iter()
            .map(|m| table.partition_point(|t| t < m) as u32)
            .collect();
        Stamps::Ranked {
            table: table.into_boxed_slice(),
            rank: Packed::new(&rank),
        }
    }

    fn get(&self, i: usize) -> i64 {
        match self {
            Stamps::Offset { base, off } => base + i64::from(off.get(i)),
            Stamps::Ranked { table, rank } => table[rank.get(i) as usize],
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Stamps::Offset { off, .. } => off.bytes(),
            Stamps::Ranked { table, rank } => table.len() * 8 + rank.bytes(),
        }
    }
}

/// Per row, in reference order: the length of its JSON, its booth (an index into the
/// snapshot's booth names) and its `modifieddate`.
#[derive(Debug)]
pub(super) struct RowTable {
    lens: Packed,
    booths: Packed,
    stamps: Stamps,
}

impl RowTable {
    /// The table of rows whose facts are given column by column (all of one length).
    pub(super) fn new(lens: &[u32], booths: &[u32], modified: &[i64]) -> RowTable {
        debug_assert!(lens.len() == booths.len() && booths.len() == modified.len());
        RowTable {
            lens: Packed::new(lens),
            booths: Packed::new(booths),
            stamps: Stamps::new(modified),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.lens.len()
    }

    /// Bytes of row `i`'s JSON.
    pub(super) fn json_len(&self, i: usize) -> u32 {
        self.lens.get(i)
    }

    /// Booth index of row `i`.
    pub(super) fn booth(&self, i: usize) -> u16 {
        self.booths.get(i) as u16
    }

    /// `modifieddate` of row `i`, epoch ms.
    pub(super) fn modified(&self, i: usize) -> i64 {
        self.stamps.get(i)
    }

    /// Bytes of JSON of rows `first..end`, the commas between them included.
    pub(super) fn span_len(&self, first: u32, end: u32) -> usize {
        let n = (end - first) as usize;
        let json: usize = (first..end)
            .map(|i| self.json_len(i as usize) as usize)
            .sum();
        json + n.saturating_sub(1)
    }

    /// Bytes the table holds.
    pub(super) fn bytes(&self) -> usize {
        self.lens.bytes() + self.booths.bytes() + self.stamps.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_narrowest_width_and_read_back() {
        let lens = [420, 380, 70_000];
        let booths = [0, 3, 2];
        // Spread over four weeks: offsets from the oldest, four bytes each.
        let modified = [1_714_000_000_123, 1_711_000_000_000, 1_714_089_599_999];
        let t = RowTable::new(&lens, &booths, &modified);
        for i in 0..3 {
            assert_eq!(t.json_len(i), lens[i]);
            assert_eq!(u32::from(t.booth(i)), booths[i]);
            assert_eq!(t.modified(i), modified[i]);
        }
        assert!(matches!(t.stamps, Stamps::Offset { .. }));
        assert_eq!(t.bytes(), 3 * 4 + 3 + 3 * 4);
        assert_eq!(t.span_len(0, 2), 420 + 380 + 1);

        // Loaded in bulk: a few distinct dates years apart, ranks of one byte each.
        let modified: Vec<i64> = (0..1000).map(|i| [0, 1 << 40, 1 << 50][i % 3]).collect();
        let t = RowTable::new(&[1; 1000], &[0; 1000], &modified);
        assert!(matches!(t.stamps, Stamps::Ranked { .. }));
        assert_eq!(t.bytes(), 1000 + 1000 + 3 * 8 + 1000);
        assert!((0..1000).all(|i| t.modified(i) == modified[i]));

        // Far apart and all distinct: ranks still hold them exactly.
        let modified: Vec<i64> = (0..300).map(|i| -(1i64 << 60) + i * (1 << 52)).collect();
        let t = RowTable::new(&[1; 300], &[0; 300], &modified);
        assert!((0..300).all(|i| t.modified(i) == modified[i]));
    }
}
