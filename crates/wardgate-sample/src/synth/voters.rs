//! Synthetic voters: one ward's rows, or a whole assembly's, from one seeded stream per ward.

use super::numbering::{
    booth_srno_range, booths_in_ward, first_booth_no, state_info, ward_first_id, ward_name,
};
use super::words::{
    AREAS_KANNADA, FAMILY_NAMES, FEMALE_NAMES, HOUSE_NAMES, MALE_NAMES, PARTIES, STATUSES,
};
use super::{seed_of, SplitMix64, FIXED_EPOCH_MS, MODIFIED_SPREAD_MS};
use crate::voter::Citizen;

/// Centre of Bengaluru in units of 1e-7 degree, the scale of DECIMAL(10,7).
const CENTRE_LAT: i64 = 129_715_987;
const CENTRE_LON: i64 = 775_945_627;

/// A DECIMAL(10,7) value in units of 1e-7, formatted the way MySQL prints it.
pub fn decimal7(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let a = units.unsigned_abs();
    format!("{sign}{}.{:07}", a / 10_000_000, a % 10_000_000)
}

/// What the voters of one ward share: where the ward is and how its EPIC numbers begin.
struct WardPlace {
    state_code: String,
    assembly: String,
    area: String,
    pin: u64,
    lat: i64,
    lon: i64,
    epic_prefixes: Vec<String>,
}

impl WardPlace {
    fn draw(rng: &mut SplitMix64, state: &str, assembly: &str, ward_no: u32) -> Self {
        // Each ward sits somewhere within ~10 km of the centre; its voters within ~500 m of it.
        let lat = CENTRE_LAT + rng.below(1_800_000) as i64 - 900_000;
        let lon = CENTRE_LON + rng.below(1_800_000) as i64 - 900_000;
        let pin = 560_001 + rng.below(110);
        let epic_prefixes = (0..3)
            .map(|_| {
                (0..3)
                    .map(|_| (b'A' + rng.below(26) as u8) as char)
                    .collect()
            })
            .collect();
        WardPlace {
            state_code: state_info(state).code,
            assembly: assembly.to_string(),
            area: ward_name(assembly, ward_no),
            pin,
            lat,
            lon,
            epic_prefixes,
        }
    }
}

/// The voters of one ward, ordered by srno (1..=voters), ids `first_id..`.
pub fn generate_ward(
    state: &str,
    assembly: &str,
    ward_no: u32,
    voters: u32,
    first_id: i64,
) -> Vec<Citizen> {
    let ward = ward_no.to_string();
    let mut rng = SplitMix64::new(seed_of(&[state, assembly, &ward]));
    let n_booths = booths_in_ward(state, assembly, ward_no);
    let first_booth = first_booth_no(state, assembly, ward_no);
    let place = WardPlace::draw(&mut rng, state, assembly, ward_no);
    let mut out = Vec::with_capacity(voters as usize);
    let mut booth_k = 0u32;
    let mut booth_end = booth_srno_range(0, n_booths, voters).1;
    for i in 0..voters {
        let srno = i + 1;
        while srno > booth_end && booth_k + 1 < n_booths {
            booth_k += 1;
            booth_end = booth_srno_range(booth_k, n_booths, voters).1;
        }
        let mut c = voter(&mut rng, &place);
        c.id = first_id + i64::from(i);
        c.state = state.to_string();
        c.assembly_no = assembly.to_string();
        c.ward_no.clone_from(&ward);
        c.booth_no = (first_booth + booth_k).to_string();
        c.srno = srno.to_string();
        out.push(c);
    }
    out
}

/// One voter's own columns, drawn in a fixed order from the ward's stream; the caller fills in
/// where the row sits (id, state, assembly, ward, booth, srno).
fn voter(rng: &mut SplitMix64, place: &WardPlace) -> Citizen {
    let male = rng.chance(51);
    let first_name = if male {
        *rng.pick(MALE_NAMES)
    } else {
        *rng.pick(FEMALE_NAMES)
    };
    let family_name = rng.maybe(3, FAMILY_NAMES);
    // min of two uniforms skews towards younger voters, as electoral rolls do.
    let age = 18 + rng.below(78).min(rng.below(78)) as i32;
    let voter_id = if rng.chance(30) {
        format!(
            "{}/{}/{:06}",
            place.state_code,
            place.assembly,
            rng.below(1_000_000)
        )
    } else {
        format!(
            "{}{:07}",
            rng.pick(&place.epic_prefixes),
            rng.below(10_000_000)
        )
    };
    let mobile = mobile(rng);
    let address = address(rng, place);
    let (latitude, longitude) = position(rng, place);
    Citizen {
        id: 0,
        state: String::new(),
        assembly_no: String::new(),
        ward_no: String::new(),
        booth_no: String::new(),
        srno: String::new(),
        voter_id,
        first_name: Some(first_name.to_string()),
        family_name,
        gender: Some(if male { "M" } else { "F" }.to_string()),
        age: Some(age),
        mobile,
        address,
        latitude,
        longitude,
        party_preference: rng.maybe(55, PARTIES),
        responded_status: rng.maybe(50, STATUSES),
        voted: rng.chance(5),
        modifieddate: FIXED_EPOCH_MS - 1 - rng.below(MODIFIED_SPREAD_MS as u64) as i64,
    }
}

/// NULL, empty (a volunteer cleared it) or a ten-digit Indian mobile number.
fn mobile(rng: &mut SplitMix64) -> Option<String> {
    match rng.below(100) {
        0..=7 => None,
        8..=14 => Some(String::new()),
        _ => Some(format!(
            "{}{:09}",
            6 + rng.below(4),
            rng.below(1_000_000_000)
        )),
    }
}

/// A street address in the ward's area; a few with quotes or in Kannada script, a few NULL.
fn address(rng: &mut SplitMix64, place: &WardPlace) -> Option<String> {
    let (area, pin) = (&place.area, place.pin);
    let house = 1 + rng.below(400);
    let cross = 1 + rng.below(18);
    match rng.below(100) {
        0..=1 => None,
        2..=3 => Some(format!(
            "No. {house}, \"{}\", {cross} Cross, {area}, Bengaluru - {pin}",
            rng.pick(HOUSE_NAMES)
        )),
        4 => Some(format!(
            "#{house}, {cross} Cross, {}, {pin}",
            rng.pick(AREAS_KANNADA)
        )),
        _ => Some(format!(
            "#{house}, {cross} Cross, {area}, Bengaluru - {pin}"
        )),
    }
}

/// Latitude and longitude near the ward's centre, or both NULL (not geocoded).
fn position(rng: &mut SplitMix64, place: &WardPlace) -> (Option<String>, Option<String>) {
    if rng.chance(2) {
        return (None, None);
    }
    (
        Some(decimal7(place.lat + rng.below(100_000) as i64 - 50_000)),
        Some(decimal7(place.lon + rng.below(100_000) as i64 - 50_000)),
    )
}

/// All voters of an assembly of `wards` wards, ward after ward, with the ids the seed uses.
pub fn generate_assembly(
    state: &str,
    assembly: &str,
    wards: u32,
    voters_per_ward: u32,
) -> Vec<Citizen> {
    let mut all = Vec::with_capacity(wards as usize * voters_per_ward as usize);
    for w in 1..=wards {
        let first = ward_first_id(state, assembly, w, voters_per_ward);
        all.extend(generate_ward(state, assembly, w, voters_per_ward, first));
    }
    all
}
