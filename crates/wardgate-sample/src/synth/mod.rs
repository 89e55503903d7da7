//! Deterministic synthetic rolls and master data: the same arguments always give the same rows.

mod masters;
mod numbering;
mod voters;
mod words;

#[cfg(test)]
mod tests;

pub use masters::{master_data, parties, settings};
pub use numbering::{
    assembly_id, booth_id, booths_in_ward, first_booth_no, state_info, ward_first_id, ward_id,
};
pub use voters::{decimal7, generate_assembly, generate_ward};

/// The instant the synthetic data is "as of": 2024-04-26 00:00:00 UTC (a Karnataka polling
/// day). Fixed so that every generated `modifieddate` is reproducible.
pub const FIXED_EPOCH_MS: i64 = 1_714_089_600_000;
/// `modifieddate`s are spread over the four weeks before [`FIXED_EPOCH_MS`].
pub const MODIFIED_SPREAD_MS: i64 = 28 * 86_400_000;
/// Citizens of one assembly get ids `assembly_id * ID_STRIDE + 1 ..`; ward * voters must stay
/// below it so that assemblies never collide, and ids stay below 2^53 so JavaScript clients
/// read them exactly.
pub const ID_STRIDE: i64 = 10_000_000;

/// splitmix64: tiny, fast, and good enough for synthetic data; no `rand` dependency needed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// NULL with probability `null_percent`/100, else one of `items`.
    pub fn maybe(&mut self, null_percent: u64, items: &[&str]) -> Option<String> {
        if self.chance(null_percent) {
            None
        } else {
            Some(self.pick(items).to_string())
        }
    }
}

/// FNV-1a over the parts with a separator, the seed of every per-ward stream.
pub fn seed_of(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
