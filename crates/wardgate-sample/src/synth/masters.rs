//! The synthetic assembly's master rows, plus the fixed party list and application settings.

use super::numbering::{
    assembly_id, assembly_num, booth_id, booth_srno_range, booths_in_ward, state_info, ward_id,
    ward_name,
};
use super::words::ASSEMBLY_NAMES;
use crate::master::{AssemblyInfo, BoothInfo, MasterData, PartyInfo, Setting, WardInfo};

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
