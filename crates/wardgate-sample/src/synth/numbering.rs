//! Numbering of the synthetic assembly: state codes, ids, booth numbers and ward names.

use super::words::{AREAS, STATES};
use super::{seed_of, RollSpec, Serials, SplitMix64, ID_STRIDE};
use crate::master::StateInfo;

/// The state's id (census code; 40..99 from a hash for names not in the table) and its
/// two-letter code.
pub fn state_info(state: &str) -> StateInfo {
    if let Some((id, _, code)) = STATES
        .iter()
        .find(|(_, name, _)| name.eq_ignore_ascii_case(state.trim_end()))
    {
        return StateInfo {
            id: *id,
            name: state.to_string(),
            code: (*code).to_string(),
        };
    }
    let id = 40 + (seed_of(&[&state.to_lowercase()]) % 60) as i64;
    let mut code: String = state
        .chars()
        .filter(char::is_ascii_alphabetic)
        .take(2)
        .collect::<String>()
        .to_ascii_uppercase();
    if code.len() < 2 {
        code = "XX".into();
    }
    StateInfo {
        id,
        name: state.to_string(),
        code,
    }
}

/// `assembly` as a number; callers validate it as 1..6 digits.
pub(super) fn assembly_num(assembly: &str) -> i64 {
    assembly.parse::<i64>().unwrap_or(0)
}

/// Id of the assembly constituency: state id * 1e6 + assembly number.
pub fn assembly_id(state: &str, assembly: &str) -> i64 {
    state_info(state).id * 1_000_000 + assembly_num(assembly)
}

pub fn ward_id(assembly_id: i64, ward_no: u32) -> i64 {
    assembly_id * 1000 + i64::from(ward_no)
}

pub fn booth_id(assembly_id: i64, booth_no: u32) -> i64 {
    assembly_id * 10_000 + i64::from(booth_no)
}

/// Id of the first citizen of `ward_no` when every ward has `voters_per_ward` voters.
pub fn ward_first_id(state: &str, assembly: &str, ward_no: u32, voters_per_ward: u32) -> i64 {
    assembly_id(state, assembly) * ID_STRIDE
        + i64::from(ward_no.saturating_sub(1)) * i64::from(voters_per_ward)
        + 1
}

/// 10 to 12 booths per ward, fixed by (state, assembly, ward).
pub fn booths_in_ward(state: &str, assembly: &str, ward_no: u32) -> u32 {
    let w = ward_no.to_string();
    10 + (SplitMix64::new(seed_of(&[state, assembly, &w, "booths"])).next_u64() % 3) as u32
}

/// Booth numbers run through the assembly (as polling-station numbers do): ward `w` starts
/// after all booths of wards `1..w`.
pub fn first_booth_no(state: &str, assembly: &str, ward_no: u32) -> u32 {
    1 + (1..ward_no)
        .map(|w| booths_in_ward(state, assembly, w))
        .sum::<u32>()
}

/// One booth (part) of a ward as the generator lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoothPlan {
    pub booth_no: u32,
    /// Position of the booth within its ward (0-based).
    pub index: u32,
    pub voters: u32,
    /// Serial number of the booth's first voter: 1 with per-booth serials, else where the
    /// booth's run of the ward-wide sequence starts.
    pub first_srno: u32,
}

impl BoothPlan {
    /// Serial number of the booth's last voter (`first_srno - 1` for an empty booth).
    pub fn last_srno(&self) -> u32 {
        self.first_srno + self.voters - 1
    }
}

/// The ward's booths in order, with their sizes and first serial numbers.
pub fn ward_booths(spec: &RollSpec, ward_no: u32) -> Vec<BoothPlan> {
    let first_booth = first_booth_no(&spec.state, &spec.assembly, ward_no);
    let mut next_srno = 1;
    booth_sizes(spec, ward_no)
        .into_iter()
        .zip(0..)
        .map(|(voters, index)| {
            let first_srno = match spec.serials {
                Serials::PerBooth => 1,
                Serials::WardWide => next_srno,
            };
            next_srno += voters;
            BoothPlan {
                booth_no: first_booth + index,
                index,
                voters,
                first_srno,
            }
        })
        .collect()
}

/// How many of the ward's voters each booth holds: unequal, as real parts are (weights
/// 40..=160, so one booth may hold up to four times another), summing to `voters_per_ward`.
/// Drawn from a stream of their own so that the rows' stream does not depend on them.
fn booth_sizes(spec: &RollSpec, ward_no: u32) -> Vec<u32> {
    let (state, assembly) = (spec.state.as_str(), spec.assembly.as_str());
    let w = ward_no.to_string();
    let mut rng = SplitMix64::new(seed_of(&[state, assembly, &w, "booth-sizes"]));
    let weights: Vec<u64> = (0..booths_in_ward(state, assembly, ward_no))
        .map(|_| 40 + rng.below(121))
        .collect();
    let total: u64 = weights.iter().sum();
    let voters = u64::from(spec.voters_per_ward);
    let mut sizes: Vec<u64> = weights.iter().map(|w| voters * w / total).collect();
    // Largest remainder: the voters the floors left over go one each to the booths whose
    // exact share lost the most, ties to the earlier booth.
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&k| (std::cmp::Reverse(voters * weights[k] % total), k));
    let short = voters - sizes.iter().sum::<u64>();
    for &k in order.iter().take(short as usize) {
        sizes[k] += 1;
    }
    // Each share is at most `voters`, a u32.
    sizes.into_iter().map(|s| s as u32).collect()
}

pub(super) fn ward_name(assembly: &str, ward_no: u32) -> String {
    let shift = (seed_of(&[assembly, "wardnames"]) % AREAS.len() as u64) as usize;
    let i = (ward_no as usize + shift) % AREAS.len();
    let round = (ward_no as usize).saturating_sub(1) / AREAS.len();
    if round == 0 {
        AREAS[i].to_string()
    } else {
        format!("{} {}", AREAS[i], round + 1)
    }
}
