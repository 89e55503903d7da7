//! Master data (states, constituencies, wards and booths, parties, settings) and its JSON answers.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateInfo {
    pub id: i64,
    pub name: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssemblyInfo {
    pub id: i64,
    pub state_id: i64,
    pub assembly_no: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WardInfo {
    pub id: i64,
    pub ward_no: String,
    pub name: String,
    pub booths: Vec<BoothInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoothInfo {
    pub id: i64,
    pub booth_no: String,
    pub name: String,
    pub first_srno: i64,
    pub last_srno: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartyInfo {
    pub id: i64,
    pub name: String,
    pub short_name: String,
    pub color: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
}

/// Everything the master routes answer from, as the memory store holds it. Lists are kept
/// sorted by id, the order the MySQL queries use, so both stores answer the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterData {
    pub states: Vec<StateInfo>,
    pub assemblies: Vec<(AssemblyInfo, Vec<WardInfo>)>,
    pub parties: Vec<PartyInfo>,
    pub settings: Vec<Setting>,
}

impl MasterData {
    /// Adds (or replaces) the rows of `other`, keeping id order.
    pub fn merge(&mut self, other: MasterData) {
        for s in other.states {
            self.states.retain(|x| x.id != s.id);
            self.states.push(s);
        }
        self.states.sort_by_key(|s| s.id);
        for (ac, wards) in other.assemblies {
            self.assemblies.retain(|(x, _)| x.id != ac.id);
            self.assemblies.push((ac, wards));
        }
        self.assemblies.sort_by_key(|(ac, _)| ac.id);
        if !other.parties.is_empty() {
            self.parties = other.parties;
        }
        if !other.settings.is_empty() {
            self.settings = other.settings;
        }
    }
}

/// Serializes a value that cannot fail to serialize (plain structs of strings and numbers);
/// falls back to an error object rather than panicking if that ever changes.
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v)
        .unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()).into_bytes())
}

/// `{"states":[...]}`
pub fn states_json(states: &[StateInfo]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        states: &'a [StateInfo],
    }
    to_json(&Out { states })
}

/// `{"stateId":N,"assemblyConstituencys":[...]}`
pub fn assemblies_json(state_id: i64, list: &[AssemblyInfo]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        state_id: i64,
        assembly_constituencys: &'a [AssemblyInfo],
    }
    to_json(&Out {
        state_id,
        assembly_constituencys: list,
    })
}

/// `{"assemblyConstituencyId":N,"assemblyNo":"150","name":"..","wards":[{..,"booths":[..]}]}`
pub fn wards_json(ac: &AssemblyInfo, wards: &[WardInfo]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        assembly_constituency_id: i64,
        state_id: i64,
        assembly_no: &'a str,
        name: &'a str,
        wards: &'a [WardInfo],
    }
    to_json(&Out {
        assembly_constituency_id: ac.id,
        state_id: ac.state_id,
        assembly_no: &ac.assembly_no,
        name: &ac.name,
        wards,
    })
}

/// `{"parties":[...]}`
pub fn parties_json(parties: &[PartyInfo]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        parties: &'a [PartyInfo],
    }
    to_json(&Out { parties })
}

/// `{"settings":{"key":"value",...}}`, keys sorted.
pub fn settings_json(settings: &[Setting]) -> Vec<u8> {
    let map: BTreeMap<&str, &str> = settings
        .iter()
        .map(|s| (s.key.as_str(), s.value.as_str()))
        .collect();
    #[derive(Serialize)]
    struct Out<'a> {
        settings: BTreeMap<&'a str, &'a str>,
    }
    to_json(&Out { settings: map })
}

/// Counts for the admin dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DashboardStats {
    pub total: u64,
    /// Rows whose `responded_status` is neither NULL nor empty.
    pub responded: u64,
    pub voted: u64,
    /// Row count per non-NULL `responded_status`, keys sorted.
    pub by_status: BTreeMap<String, u64>,
}

/// `{"state":..,"assemblyNo":..,"wardNo":..,"boothNo":..,"total":n,"responded":n,"voted":n,"byStatus":{..}}`
pub fn dashboard_json(
    state: &str,
    assembly_no: &str,
    ward_no: &str,
    booth_no: &str,
    stats: &DashboardStats,
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        state: &'a str,
        assembly_no: &'a str,
        ward_no: &'a str,
        booth_no: &'a str,
        #[serde(flatten)]
        stats: &'a DashboardStats,
    }
    to_json(&Out {
        state,
        assembly_no,
        ward_no,
        booth_no,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let s = settings_json(&[
            Setting {
                key: "b".into(),
                value: "2".into(),
            },
            Setting {
                key: "a".into(),
                value: "1".into(),
            },
        ]);
        assert_eq!(s, br#"{"settings":{"a":"1","b":"2"}}"#);
        let mut st = DashboardStats {
            total: 3,
            responded: 1,
            voted: 2,
            ..Default::default()
        };
        st.by_status.insert("Positive".into(), 1);
        assert_eq!(
            String::from_utf8(dashboard_json("Karnataka", "150", "-1", "-1", &st)).unwrap(),
            r#"{"state":"Karnataka","assemblyNo":"150","wardNo":"-1","boothNo":"-1","total":3,"responded":1,"voted":2,"byStatus":{"Positive":1}}"#
        );
    }
}
