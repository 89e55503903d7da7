//! Deterministic synthetic voters and master data: the same arguments always give the same rows.

use crate::master::{AssemblyInfo, BoothInfo, MasterData, PartyInfo, Setting, StateInfo, WardInfo};
use crate::voter::Citizen;

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

/// Census codes and abbreviations of Indian states; the code is the state's id.
const STATES: &[(i64, &str, &str)] = &[
    (1, "Jammu and Kashmir", "JK"),
    (2, "Himachal Pradesh", "HP"),
    (3, "Punjab", "PB"),
    (4, "Chandigarh", "CH"),
    (5, "Uttarakhand", "UK"),
    (6, "Haryana", "HR"),
    (7, "Delhi", "DL"),
    (8, "Rajasthan", "RJ"),
    (9, "Uttar Pradesh", "UP"),
    (10, "Bihar", "BR"),
    (11, "Sikkim", "SK"),
    (12, "Arunachal Pradesh", "AR"),
    (13, "Nagaland", "NL"),
    (14, "Manipur", "MN"),
    (15, "Mizoram", "MZ"),
    (16, "Tripura", "TR"),
    (17, "Meghalaya", "ML"),
    (18, "Assam", "AS"),
    (19, "West Bengal", "WB"),
    (20, "Jharkhand", "JH"),
    (21, "Odisha", "OD"),
    (22, "Chhattisgarh", "CG"),
    (23, "Madhya Pradesh", "MP"),
    (24, "Gujarat", "GJ"),
    (27, "Maharashtra", "MH"),
    (28, "Andhra Pradesh", "AP"),
    (29, "Karnataka", "KA"),
    (30, "Goa", "GA"),
    (32, "Kerala", "KL"),
    (33, "Tamil Nadu", "TN"),
    (34, "Puducherry", "PY"),
    (36, "Telangana", "TS"),
];

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
fn assembly_num(assembly: &str) -> i64 {
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
fn booth_srno_range(k: u32, n: u32, voters: u32) -> (u32, u32) {
    let lo = (u64::from(voters) * u64::from(k) / u64::from(n)) as u32;
    let hi = (u64::from(voters) * u64::from(k + 1) / u64::from(n)) as u32;
    (lo + 1, hi)
}

const MALE_NAMES: &[&str] = &[
    "Ravi",
    "Suresh",
    "Ramesh",
    "Manjunath",
    "Prakash",
    "Mahesh",
    "Nagaraj",
    "Venkatesh",
    "Srinivas",
    "Raghavendra",
    "Anil",
    "Sunil",
    "Kiran",
    "Praveen",
    "Santosh",
    "Girish",
    "Harish",
    "Shivakumar",
    "Basavaraj",
    "Chandrashekar",
    "Lokesh",
    "Naveen",
    "Mohan",
    "Gopal",
    "Krishna",
    "Rajesh",
    "Vinay",
    "Arjun",
    "Rahul",
    "Abdul",
    "Mohammed",
    "Imran",
    "Joseph",
    "Thomas",
    "Sanjay",
    "Deepak",
    "Ashok",
    "Umesh",
    "Yogesh",
    "Siddharth",
    "Karthik",
    "Darshan",
    "Puneeth",
    "Yashwanth",
];
const FEMALE_NAMES: &[&str] = &[
    "Lakshmi",
    "Savitha",
    "Geetha",
    "Shobha",
    "Kavitha",
    "Sunitha",
    "Anitha",
    "Rekha",
    "Pushpa",
    "Manjula",
    "Shanthamma",
    "Gowramma",
    "Nagarathna",
    "Padma",
    "Sowmya",
    "Divya",
    "Pooja",
    "Shwetha",
    "Ramya",
    "Bhavya",
    "Deepa",
    "Asha",
    "Usha",
    "Meena",
    "Radha",
    "Sarojamma",
    "Fathima",
    "Ayesha",
    "Mary",
    "Priya",
    "Nandini",
    "Sahana",
    "Rashmi",
    "Chaitra",
    "Harini",
];
const FAMILY_NAMES: &[&str] = &[
    "Gowda",
    "Reddy",
    "Naik",
    "Shetty",
    "Rao",
    "Murthy",
    "Hegde",
    "Kumar",
    "Swamy",
    "Prasad",
    "Patil",
    "Nayak",
    "Bhat",
    "Kulkarni",
    "Iyengar",
    "Sharma",
    "Achar",
    "Shastri",
    "Pai",
    "Kamath",
    "Khan",
    "Pasha",
    "Sheriff",
    "D'Souza",
    "Fernandes",
    "Raju",
    "Setty",
    "Hosamani",
    "Kattimani",
    "Lingaiah",
    "Siddaiah",
    "Ramaiah",
    "Channappa",
    "Basappa",
    "Devaraj",
];
const AREAS: &[&str] = &[
    "Kempegowda Nagar",
    "Chowdeswari Layout",
    "Atturu",
    "Yelahanka Satellite Town",
    "Jakkur",
    "Thanisandra",
    "Byatarayanapura",
    "Kodigehalli",
    "Vidyaranyapura",
    "Dodda Bommasandra",
    "Kuvempu Nagar",
    "Shettihalli",
    "Mallasandra",
    "Bagalakunte",
    "T. Dasarahalli",
    "Jalahalli",
    "J.P. Park",
    "Sanjaya Nagar",
    "Ganga Nagar",
    "Hebbal",
    "Nagavara",
    "HBR Layout",
    "Horamavu",
    "Ramamurthy Nagar",
    "Banasavadi",
    "Kammanahalli",
    "Kacharakanahalli",
    "Kushal Nagar",
    "Kaval Byrasandra",
    "Manorayanapalya",
    "Gangenahalli",
    "Aramane Nagar",
    "Mattikere",
    "Yeshwanthpur",
    "Chokkasandra",
    "Peenya",
    "Malleshwaram",
    "Basavanagudi",
    "Jayanagar",
    "Banashankari",
];
const AREAS_KANNADA: &[&str] = &["ಬೆಂಗಳೂರು", "ಜಯನಗರ", "ಮಲ್ಲೇಶ್ವರಂ", "ಹೆಬ್ಬಾಳ"];
const HOUSE_NAMES: &[&str] = &["Sri Nilaya", "Gokula", "Sai Krupa", "Amma Nilaya"];
const ASSEMBLY_NAMES: &[&str] = &[
    "Yelahanka",
    "K.R. Pura",
    "Byatarayanapura",
    "Yeshvanthapura",
    "Rajarajeshwarinagar",
    "Dasarahalli",
    "Mahalakshmi Layout",
    "Malleshwaram",
    "Hebbal",
    "Pulakeshinagar",
    "Sarvagnanagar",
    "C.V. Raman Nagar",
    "Shivajinagar",
    "Shanti Nagar",
    "Gandhi Nagar",
    "Rajaji Nagar",
    "Govindraj Nagar",
    "Vijay Nagar",
    "Chamrajpet",
    "Chickpet",
    "Basavanagudi",
    "Padmanaba Nagar",
    "B.T.M. Layout",
    "Jayanagar",
    "Mahadevapura",
    "Bommanahalli",
    "Bangalore South",
    "Anekal",
];
const PARTIES: &[&str] = &["BJP", "INC", "JD(S)", "AAP", "BSP", "Others", "Undecided"];
const STATUSES: &[&str] = &[
    "Positive",
    "Negative",
    "Neutral",
    "Not Available",
    "Door Locked",
    "Shifted",
];
/// Centre of Bengaluru in units of 1e-7 degree, the scale of DECIMAL(10,7).
const CENTRE_LAT: i64 = 129_715_987;
const CENTRE_LON: i64 = 775_945_627;

/// A DECIMAL(10,7) value in units of 1e-7, formatted the way MySQL prints it.
pub fn decimal7(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let a = units.unsigned_abs();
    format!("{sign}{}.{:07}", a / 10_000_000, a % 10_000_000)
}

fn ward_name(assembly: &str, ward_no: u32) -> String {
    let shift = (seed_of(&[assembly, "wardnames"]) % AREAS.len() as u64) as usize;
    let i = (ward_no as usize + shift) % AREAS.len();
    let round = (ward_no as usize).saturating_sub(1) / AREAS.len();
    if round == 0 {
        AREAS[i].to_string()
    } else {
        format!("{} {}", AREAS[i], round + 1)
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
    let info = state_info(state);
    let ward = ward_no.to_string();
    let mut rng = SplitMix64::new(seed_of(&[state, assembly, &ward]));
    let n_booths = booths_in_ward(state, assembly, ward_no);
    let first_booth = first_booth_no(state, assembly, ward_no);
    // Each ward sits somewhere within ~10 km of the centre; its voters within ~500 m of it.
    let ward_lat = CENTRE_LAT + rng.below(1_800_000) as i64 - 900_000;
    let ward_lon = CENTRE_LON + rng.below(1_800_000) as i64 - 900_000;
    let area = ward_name(assembly, ward_no);
    let pin = 560_001 + rng.below(110);
    let epic_prefixes: Vec<String> = (0..3)
        .map(|_| {
            (0..3)
                .map(|_| (b'A' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut out = Vec::with_capacity(voters as usize);
    let mut booth_k = 0u32;
    let mut booth_end = booth_srno_range(0, n_booths, voters).1;
    for i in 0..voters {
        let srno = i + 1;
        while srno > booth_end && booth_k + 1 < n_booths {
            booth_k += 1;
            booth_end = booth_srno_range(booth_k, n_booths, voters).1;
        }
        let male = rng.chance(51);
        let first_name = if male {
            *rng.pick(MALE_NAMES)
        } else {
            *rng.pick(FEMALE_NAMES)
        };
        let family_name = if rng.chance(3) {
            None
        } else {
            Some(rng.pick(FAMILY_NAMES).to_string())
        };
        // min of two uniforms skews towards younger voters, as electoral rolls do.
        let age = 18 + rng.below(78).min(rng.below(78)) as i32;
        let voter_id = if rng.chance(30) {
            format!("{}/{}/{:06}", info.code, assembly, rng.below(1_000_000))
        } else {
            format!("{}{:07}", rng.pick(&epic_prefixes), rng.below(10_000_000))
        };
        let mobile = match rng.below(100) {
            0..=7 => None,
            8..=14 => Some(String::new()),
            _ => Some(format!(
                "{}{:09}",
                6 + rng.below(4),
                rng.below(1_000_000_000)
            )),
        };
        let house = 1 + rng.below(400);
        let cross = 1 + rng.below(18);
        let address = match rng.below(100) {
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
        };
        let (latitude, longitude) = if rng.chance(2) {
            (None, None)
        } else {
            (
                Some(decimal7(ward_lat + rng.below(100_000) as i64 - 50_000)),
                Some(decimal7(ward_lon + rng.below(100_000) as i64 - 50_000)),
            )
        };
        let party_preference = if rng.chance(55) {
            None
        } else {
            Some(rng.pick(PARTIES).to_string())
        };
        let responded_status = if rng.chance(50) {
            None
        } else {
            Some(rng.pick(STATUSES).to_string())
        };
        let voted = rng.chance(5);
        let modifieddate = FIXED_EPOCH_MS - 1 - rng.below(MODIFIED_SPREAD_MS as u64) as i64;
        out.push(Citizen {
            id: first_id + i64::from(i),
            state: state.to_string(),
            assembly_no: assembly.to_string(),
            ward_no: ward.clone(),
            booth_no: (first_booth + booth_k).to_string(),
            srno: srno.to_string(),
            voter_id,
            first_name: Some(first_name.to_string()),
            family_name,
            gender: Some(if male { "M" } else { "F" }.to_string()),
            age: Some(age),
            mobile,
            address,
            latitude,
            longitude,
            party_preference,
            responded_status,
            voted,
            modifieddate,
        });
    }
    out
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

/// The assembly's master rows (state, constituency, wards with booths) plus the fixed party
/// list and settings.
pub fn master_data(state: &str, assembly: &str, wards: u32, voters_per_ward: u32) -> MasterData {
    let st = state_info(state);
    let ac_id = assembly_id(state, assembly);
    let name_i = (assembly_num(assembly) as usize) % ASSEMBLY_NAMES.len();
    let ac = AssemblyInfo {
        id: ac_id,
        state_id: st.id,
        assembly_no: assembly.to_string(),
        name: ASSEMBLY_NAMES[name_i].to_string(),
    };
    let mut ward_infos = Vec::with_capacity(wards as usize);
    let mut booth_no = 1;
    for w in 1..=wards {
        let n = booths_in_ward(state, assembly, w);
        let area = ward_name(assembly, w);
        let booths = (0..n)
            .map(|k| {
                let (lo, hi) = booth_srno_range(k, n, voters_per_ward);
                let b = booth_no + k;
                BoothInfo {
                    id: booth_id(ac_id, b),
                    booth_no: b.to_string(),
                    name: format!("Govt. Higher Primary School, {area}, Room No. {}", k + 1),
                    first_srno: i64::from(lo),
                    last_srno: i64::from(hi),
                }
            })
            .collect();
        booth_no += n;
        ward_infos.push(WardInfo {
            id: ward_id(ac_id, w),
            ward_no: w.to_string(),
            name: area,
            booths,
        });
    }
    MasterData {
        states: vec![st],
        assemblies: vec![(ac, ward_infos)],
        parties: parties(),
        settings: settings(),
    }
}

pub fn parties() -> Vec<PartyInfo> {
    [
        ("Bharatiya Janata Party", "BJP", "#FF9933"),
        ("Indian National Congress", "INC", "#19AAED"),
        ("Janata Dal (Secular)", "JD(S)", "#006400"),
        ("Aam Aadmi Party", "AAP", "#0066A4"),
        ("Bahujan Samaj Party", "BSP", "#22409A"),
        ("Others", "Others", "#808080"),
        ("Undecided", "Undecided", "#C0C0C0"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, short, color))| PartyInfo {
        id: i as i64 + 1,
        name: (*name).to_string(),
        short_name: (*short).to_string(),
        color: (*color).to_string(),
    })
    .collect()
}

pub fn settings() -> Vec<Setting> {
    [
        ("electionDate", "2024-04-26"),
        ("forceUpdate", "false"),
        ("minAppVersion", "2.3.0"),
        ("pageSize", "1000"),
        (
            "respondedStatuses",
            "Positive,Negative,Neutral,Not Available,Door Locked,Shifted",
        ),
        ("supportPhone", "+91-80-2222-3333"),
        ("syncIntervalMinutes", "30"),
    ]
    .iter()
    .map(|(k, v)| Setting {
        key: (*k).to_string(),
        value: (*v).to_string(),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let a = generate_ward("Karnataka", "150", 3, 500, 1);
        let b = generate_ward("Karnataka", "150", 3, 500, 1);
        assert_eq!(a, b);
        let c = generate_ward("Karnataka", "150", 4, 500, 1);
        assert_ne!(a, c);
        // Ward content does not depend on how many wards the assembly has.
        let all = generate_assembly("Karnataka", "150", 4, 500);
        assert_eq!(
            &all[1000..1500],
            &generate_ward(
                "Karnataka",
                "150",
                3,
                500,
                ward_first_id("Karnataka", "150", 3, 500)
            )[..]
        );
        assert_eq!(
            master_data("Karnataka", "150", 4, 500),
            master_data("Karnataka", "150", 4, 500)
        );
    }

    #[test]
    fn plausible_rows() {
        let rows = generate_ward("Karnataka", "150", 2, 2000, 100);
        assert_eq!(rows.len(), 2000);
        let mut booths: Vec<u32> = Vec::new();
        let mut empty_or_null_mobile = 0;
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.id, 100 + i as i64);
            assert_eq!(r.srno, (i + 1).to_string());
            assert!((18..=95).contains(&r.age.unwrap()));
            assert!(matches!(r.gender.as_deref(), Some("M" | "F")));
            match r.mobile.as_deref() {
                None | Some("") => empty_or_null_mobile += 1,
                Some(m) => {
                    assert_eq!(m.len(), 10);
                    assert!(matches!(m.as_bytes()[0], b'6'..=b'9'));
                }
            }
            if let Some(lat) = &r.latitude {
                assert!(lat.starts_with("12.") || lat.starts_with("13."), "{lat}");
                assert_eq!(lat.split('.').nth(1).unwrap().len(), 7);
            }
            assert!(
                r.modifieddate < FIXED_EPOCH_MS
                    && r.modifieddate >= FIXED_EPOCH_MS - MODIFIED_SPREAD_MS
            );
            let b: u32 = r.booth_no.parse().unwrap();
            if booths.last() != Some(&b) {
                // Booths are contiguous in srno order and increase.
                assert!(!booths.contains(&b));
                booths.push(b);
            }
        }
        assert!((10..=12).contains(&booths.len()));
        assert_eq!(booths[0], first_booth_no("Karnataka", "150", 2));
        assert!(
            (150..=450).contains(&empty_or_null_mobile),
            "{empty_or_null_mobile}"
        );
        let md = master_data("Karnataka", "150", 2, 2000);
        let ward2 = &md.assemblies[0].1[1];
        assert_eq!(ward2.booths.len(), booths.len());
        assert_eq!(ward2.booths[0].booth_no, booths[0].to_string());
        assert_eq!(ward2.booths.last().unwrap().last_srno, 2000);
    }

    #[test]
    fn ids_stay_js_safe() {
        let id = ward_first_id("Some Unknown State", "999999", 999, 10_000);
        assert!(id < (1i64 << 53));
        assert_eq!(state_info("karnataka").id, 29);
        assert_eq!(decimal7(-5), "-0.0000005");
        assert_eq!(decimal7(129_715_987), "12.9715987");
    }
}
