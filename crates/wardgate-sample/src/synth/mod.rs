//! Deterministic synthetic rolls and master data: the same [`RollSpec`] always gives the same rows.

mod masters;
mod numbering;
mod voters;
mod words;

#[cfg(test)]
mod tests;

pub use masters::{master_data, parties, settings};
pub use numbering::{
    assembly_id, booth_id, booths_in_ward, first_booth_no, state_info, ward_booths, ward_first_id,
    ward_id, BoothPlan,
};
pub use voters::{decimal7, generate_assembly, generate_ward};

use crate::params::{valid_assembly, valid_state};

/// How serial numbers (`srno`) run through a ward's roll.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Serials {
    /// As on real electoral rolls: every booth (part) numbers its voters from 1, so the
    /// reference query's `ORDER BY srno + 0, id` interleaves a ward's booths row by row.
    #[default]
    PerBooth,
    /// One sequence through the ward, each booth a contiguous run of it: a shape real rolls
    /// do not have, kept to compare against.
    WardWide,
}

/// What to generate: one assembly's roll. `Default` is what the commands default to.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RollSpec {
    /// State name stored in every row.
    #[arg(long, default_value = "Karnataka")]
    pub state: String,
    /// Assembly constituency number.
    #[arg(long, default_value = "150")]
    pub assembly: String,
    /// Number of wards (1..=999).
    #[arg(long, default_value_t = 10)]
    pub wards: u32,
    /// Voters in each ward.
    #[arg(long, default_value_t = 1000)]
    pub voters_per_ward: u32,
    /// How serial numbers run: restarting in every booth as on real rolls, or ward-wide.
    #[arg(long, value_enum, default_value_t = Serials::PerBooth)]
    pub serials: Serials,
}

impl Default for RollSpec {
    fn default() -> Self {
        RollSpec::new("Karnataka", "150", 10, 1000)
    }
}

impl RollSpec {
    /// `wards` wards of `voters_per_ward` voters each, with per-booth serials.
    pub fn new(state: &str, assembly: &str, wards: u32, voters_per_ward: u32) -> Self {
        RollSpec {
            state: state.to_string(),
            assembly: assembly.to_string(),
            wards,
            voters_per_ward,
            serials: Serials::default(),
        }
    }

    pub fn with_serials(self, serials: Serials) -> Self {
        RollSpec { serials, ..self }
    }

    /// Checks what the ids and the contract's parameters need (see [`ID_STRIDE`]); the error
    /// names the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_state(&self.state) {
            return Err("--state: letters, spaces, '.', '-', at most 64 characters".into());
        }
        if !valid_assembly(&self.assembly) {
            return Err("--assembly: 1 to 6 digits".into());
        }
        // Ward ids are assembly_id * 1000 + ward: a 1000th ward would take another's id.
        if !(1..=999).contains(&self.wards) {
            return Err("--wards: 1..=999".into());
        }
        if self.voters_per_ward == 0 {
            return Err("--voters-per-ward: at least 1".into());
        }
        if i64::from(self.wards) * i64::from(self.voters_per_ward) >= ID_STRIDE {
            return Err(
                "--wards x --voters-per-ward must stay below 10,000,000 per assembly".into(),
            );
        }
        Ok(())
    }
}

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
