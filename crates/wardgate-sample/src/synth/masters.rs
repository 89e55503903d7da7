//! The synthetic assembly's master rows, plus the fixed party list and application settings.

use super::numbering::{
    assembly_id, assembly_num, booth_id, state_info, ward_booths, ward_id, ward_name,
};
use super::words::ASSEMBLY_NAMES;
use super::RollSpec;
use crate::master::{AssemblyInfo, BoothInfo, MasterData, PartyInfo, Setting, WardInfo};

/// The assembly's master rows (state, constituency, wards with booths) plus the fixed party
/// list and settings.
pub fn master_data(spec: &RollSpec) -> MasterData {
    let st = state_info(&spec.state);
    let ac_id = assembly_id(&spec.state, &spec.assembly);
    let name_i = (assembly_num(&spec.assembly) as usize) % ASSEMBLY_NAMES.len();
    let ac = AssemblyInfo {
        id: ac_id,
        state_id: st.id,
        assembly_no: spec.assembly.clone(),
        name: ASSEMBLY_NAMES[name_i].to_string(),
    };
    let ward_infos = (1..=spec.wards)
        .map(|w| {
            let area = ward_name(&spec.assembly, w);
            let booths = ward_booths(spec, w)
                .iter()
                .map(|b| BoothInfo {
                    id: booth_id(ac_id, b.booth_no),
                    booth_no: b.booth_no.to_string(),
                    name: format!(
                        "Govt. Higher Primary School, {area}, Room No. {}",
                        b.index + 1
                    ),
                    first_srno: i64::from(b.first_srno),
                    last_srno: i64::from(b.last_srno()),
                })
                .collect();
            WardInfo {
                id: ward_id(ac_id, w),
                ward_no: w.to_string(),
                name: area,
                booths,
            }
        })
        .collect();
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
