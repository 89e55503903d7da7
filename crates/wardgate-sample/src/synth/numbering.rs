//! Numbering of the synthetic assembly: state codes, ids, booth numbers and ward names.

use super::words::{AREAS, STATES};
use super::{seed_of, SplitMix64, ID_STRIDE};
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

/// Srno range (1-based, inclusive) of booth `k` of `n` in a ward of `voters` voters; booths
/// split the ward's srno sequence into contiguous, nearly equal runs.
pub(super) fn booth_srno_range(k: u32, n: u32, voters: u32) -> (u32, u32) {
    let lo = (u64::from(voters) * u64::from(k) / u64::from(n)) as u32;
    let hi = (u64::from(voters) * u64::from(k + 1) / u64::from(n)) as u32;
    (lo + 1, hi)
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
