//! Synthetic voters: one ward's rows, or a whole assembly's, from one seeded stream per ward.

use super::numbering::{state_info, ward_booths, ward_first_id, ward_name, BoothPlan};
use super::words::{
    AREAS_KANNADA, FAMILY_NAMES, FEMALE_NAMES, FEMALE_NAMES_KANNADA, HOUSE_NAMES, INITIALS,
    MALE_NAMES, MALE_NAMES_KANNADA, PARTIES, STATUSES,
};
use super::{seed_of, RollSpec, SplitMix64, FIXED_EPOCH_MS, MODIFIED_SPREAD_MS};
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
    fn draw(rng: &mut SplitMix64, spec: &RollSpec, ward_no: u32) -> Self {
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
            state_code: state_info(&spec.state).code,
            assembly: spec.assembly.clone(),
            area: ward_name(&spec.assembly, ward_no),
            pin,
            lat,
            lon,
            epic_prefixes,
        }
    }
}

/// Where the next household of a booth lives: booths cover streets of their own, and house
/// numbers climb along a street as the enumerator walks it.
struct Street {
    cross: u64,
    house: u64,
}

impl Street {
    fn of_booth(booth: &BoothPlan) -> Self {
        Street {
            cross: 1 + 3 * u64::from(booth.index),
            house: 0,
        }
    }

    fn next_house(&mut self, rng: &mut SplitMix64) -> (u64, u64) {
        self.house += 1 + rng.below(4);
        if self.house > 90 {
            self.cross += 1;
            self.house = 1 + rng.below(3);
        }
        (self.house, self.cross)
    }
}

/// What the members of one household share.
struct Household {
    members: u32,
    family_name: Option<String>,
    address: Option<String>,
    position: (Option<String>, Option<String>),
    mobile: Option<String>,
}

impl Household {
    fn draw(rng: &mut SplitMix64, place: &WardPlace, street: &mut Street) -> Self {
        let members = match rng.below(100) {
            0..=14 => 1,
            15..=39 => 2,
            40..=64 => 3,
            65..=84 => 4,
            85..=94 => 5,
            _ => 6,
        };
        let (house, cross) = street.next_house(rng);
        Household {
            members,
            family_name: rng.maybe(3, FAMILY_NAMES),
            address: address(rng, place, house, cross),
            position: position(rng, place),
            mobile: mobile(rng),
        }
    }
}

/// The voters of one ward as a roll lists them, with ids in that order from [`ward_first_id`]:
/// booth by booth, and within a booth household by household (members share a house number,
/// address and position, mostly a family name, often a mobile). The serial shape changes
/// only `srno`: the rows are otherwise the same.
pub fn generate_ward(spec: &RollSpec, ward_no: u32) -> Vec<Citizen> {
    let ward = ward_no.to_string();
    let mut rng = SplitMix64::new(seed_of(&[&spec.state, &spec.assembly, &ward]));
    let place = WardPlace::draw(&mut rng, spec, ward_no);
    let mut out = Vec::with_capacity(spec.voters_per_ward as usize);
    let mut next_id = ward_first_id(&spec.state, &spec.assembly, ward_no, spec.voters_per_ward);
    for booth in ward_booths(spec, ward_no) {
        let booth_no = booth.booth_no.to_string();
        let mut street = Street::of_booth(&booth);
        let mut listed = 0;
        while listed < booth.voters {
            let home = Household::draw(&mut rng, &place, &mut street);
            // A household the booth's count cuts short is simply a smaller one.
            for _ in 0..home.members.min(booth.voters - listed) {
                let mut c = member(&mut rng, &place, &home);
                c.id = next_id;
                c.state.clone_from(&spec.state);
                c.assembly_no.clone_from(&spec.assembly);
                c.ward_no.clone_from(&ward);
                c.booth_no.clone_from(&booth_no);
                c.srno = (booth.first_srno + listed).to_string();
                out.push(c);
                next_id += 1;
                listed += 1;
            }
        }
    }
    out
}

/// One voter's own columns, drawn in a fixed order from the ward's stream; the caller fills in
/// where the row sits (id, state, assembly, ward, booth, srno).
fn member(rng: &mut SplitMix64, place: &WardPlace, home: &Household) -> Citizen {
    let gender = gender(rng);
    let first_name = first_name(rng, gender);
    // Most members carry the household's name; some (married in, or listed by their own
    // father's name) another one.
    let family_name = if rng.chance(85) {
        home.family_name.clone()
    } else {
        rng.maybe(3, FAMILY_NAMES)
    };
    let age = age(rng);
    let voter_id = voter_id(rng, place);
    let mobile = if home.mobile.is_some() && rng.chance(40) {
        home.mobile.clone()
    } else {
        mobile(rng)
    };
    Citizen {
        id: 0,
        state: String::new(),
        assembly_no: String::new(),
        ward_no: String::new(),
        booth_no: String::new(),
        srno: String::new(),
        voter_id,
        first_name,
        family_name,
        gender: Some(gender.to_string()),
        age,
        mobile,
        address: home.address.clone(),
        latitude: home.position.0.clone(),
        longitude: home.position.1.clone(),
        party_preference: rng.maybe(55, PARTIES),
        responded_status: rng.maybe(50, STATUSES),
        voted: rng.chance(5),
        modifieddate: FIXED_EPOCH_MS - 1 - rng.below(MODIFIED_SPREAD_MS as u64) as i64,
    }
}

/// `M`, `F`, or (about one in a thousand, as on real rolls) `T` for third gender.
fn gender(rng: &mut SplitMix64) -> &'static str {
    match rng.below(1000) {
        0 => "T",
        1..=509 => "M",
        _ => "F",
    }
}

/// A first name as the roll spells it: mostly plain, some with an initial, some in Kannada
/// script, a very few missing.
fn first_name(rng: &mut SplitMix64, gender: &str) -> Option<String> {
    let male = gender == "M";
    let name = match rng.below(1000) {
        0..=1 => return None,
        2..=31 => rng.pick(if male {
            MALE_NAMES_KANNADA
        } else {
            FEMALE_NAMES_KANNADA
        }),
        _ => rng.pick(if male { MALE_NAMES } else { FEMALE_NAMES }),
    };
    if rng.chance(8) {
        Some(format!("{}. {name}", rng.pick(INITIALS)))
    } else {
        Some((*name).to_string())
    }
}

/// 18 and over, skewed young as rolls are (min of two uniforms); a few rows lack it.
fn age(rng: &mut SplitMix64) -> Option<i32> {
    if rng.below(1000) < 3 {
        return None;
    }
    Some(18 + rng.below(80).min(rng.below(80)) as i32)
}

/// An EPIC number (three letters of the assembly's series, seven digits), or the older
/// `KA/150/123456` form that some voters still hold.
fn voter_id(rng: &mut SplitMix64, place: &WardPlace) -> String {
    if rng.chance(30) {
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
    }
}

/// NULL, empty (a volunteer cleared it), or an Indian mobile number as people write it:
/// mostly ten digits, some with `+91`, a few spaced (`+91 98450 12345`, the column's 15).
fn mobile(rng: &mut SplitMix64) -> Option<String> {
    let kind = rng.below(100);
    let lead = 6 + rng.below(4);
    let rest = rng.below(1_000_000_000);
    match kind {
        0..=7 => None,
        8..=14 => Some(String::new()),
        15..=17 => Some(format!("+91{lead}{rest:09}")),
        18 => Some(format!(
            "+91 {lead}{:04} {:05}",
            rest / 100_000,
            rest % 100_000
        )),
        _ => Some(format!("{lead}{rest:09}")),
    }
}

/// "1st", "2nd", "3rd", "4th", ..., "11th", ..., "21st".
fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A household's address in the ward's area; a few with quotes or in Kannada script, a few
/// with a sub-number, a few NULL.
fn address(rng: &mut SplitMix64, place: &WardPlace, house: u64, cross: u64) -> Option<String> {
    let (area, pin, cross) = (&place.area, place.pin, ordinal(cross));
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
        5..=14 => Some(format!(
            "{house}/{}, {cross} Main, {area}, Bengaluru - {pin}",
            1 + rng.below(4)
        )),
        _ => Some(format!(
            "#{house}, {cross} Cross, {area}, Bengaluru - {pin}"
        )),
    }
}

/// A household's latitude and longitude near the ward's centre; both NULL where it was never
/// geocoded, both zero where a geocoder failed and wrote 0,0 anyway.
fn position(rng: &mut SplitMix64, place: &WardPlace) -> (Option<String>, Option<String>) {
    match rng.below(200) {
        0..=3 => (None, None),
        4 => (Some(decimal7(0)), Some(decimal7(0))),
        _ => (
            Some(decimal7(place.lat + rng.below(100_000) as i64 - 50_000)),
            Some(decimal7(place.lon + rng.below(100_000) as i64 - 50_000)),
        ),
    }
}

/// All voters of the assembly, ward after ward, with the ids the seed uses.
pub fn generate_assembly(spec: &RollSpec) -> Vec<Citizen> {
    let mut all = Vec::with_capacity(spec.wards as usize * spec.voters_per_ward as usize);
    for w in 1..=spec.wards {
        all.extend(generate_ward(spec, w));
    }
    all
}
