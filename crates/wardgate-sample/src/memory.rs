//! In-memory store with the reference query's exact semantics, for demos and tests without MariaDB.

use std::collections::{HashMap, HashSet};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::master::{
    AssemblyInfo, DashboardStats, MasterData, PartyInfo, Setting, StateInfo, WardInfo,
};
use crate::numeric::mysql_numeric_prefix;
use crate::sql::CitizenFilter;
use crate::store::CitizenUpdate;
use crate::synth::{self, RollSpec};
use crate::voter::Citizen;

/// The comparison key of a VARCHAR under the server's default collation (utf8mb4_general_ci,
/// PAD SPACE): case-insensitive and blind to trailing spaces, so `state = 'karnataka '`
/// matches `Karnataka` here exactly as it does in MariaDB. Lower-casing approximates the
/// collation's folding for non-ASCII letters.
pub fn collation_key(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

type AssemblyKey = (String, String);
type WardKey = (String, String, String);

#[derive(Default)]
struct Inner {
    rows: Vec<Citizen>,
    /// `srno + 0` of each row, computed once: the sort key of the reference query.
    srno_num: Vec<f64>,
    by_id: HashMap<i64, usize>,
    /// Row indexes of each assembly, sorted by (`srno + 0`, id).
    by_assembly: HashMap<AssemblyKey, Vec<usize>>,
    /// Row indexes of each ward, sorted the same way.
    by_ward: HashMap<WardKey, Vec<usize>>,
    master: MasterData,
}

impl Inner {
    fn rebuild_indexes(&mut self) {
        self.srno_num = self
            .rows
            .iter()
            .map(|r| mysql_numeric_prefix(&r.srno))
            .collect();
        self.by_id = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i))
            .collect();
        self.by_assembly.clear();
        self.by_ward.clear();
        for (i, r) in self.rows.iter().enumerate() {
            let a = (collation_key(&r.state), collation_key(&r.assembly_no));
            let w = (a.0.clone(), a.1.clone(), collation_key(&r.ward_no));
            self.by_assembly.entry(a).or_default().push(i);
            self.by_ward.entry(w).or_default().push(i);
        }
        let (rows, nums) = (&self.rows, &self.srno_num);
        let order = |a: &usize, b: &usize| {
            nums[*a]
                .total_cmp(&nums[*b])
                .then(rows[*a].id.cmp(&rows[*b].id))
        };
        for list in self
            .by_assembly
            .values_mut()
            .chain(self.by_ward.values_mut())
        {
            list.sort_unstable_by(order);
        }
    }

    /// Indexes of the rows the filter selects, in query order, before LIMIT/OFFSET.
    fn select(&self, f: &CitizenFilter) -> Vec<usize> {
        let state = collation_key(f.state);
        let assembly = collation_key(f.assembly_no);
        let list = match f.ward_no {
            Some(w) => self.by_ward.get(&(state, assembly, collation_key(w))),
            None => self.by_assembly.get(&(state, assembly)),
        };
        let Some(list) = list else {
            return Vec::new();
        };
        let booths: Option<HashSet<String>> = f
            .booth_nos
            .map(|b| b.iter().map(|s| collation_key(s)).collect());
        list.iter()
            .copied()
            .filter(|&i| {
                let r = &self.rows[i];
                booths
                    .as_ref()
                    .is_none_or(|b| b.contains(&collation_key(&r.booth_no)))
                    && f.modified_after_ms
                        .is_none_or(|after| r.modifieddate > after)
            })
            .collect()
    }
}

/// Citizens and master data held in memory behind a lock; all operations are short and
/// synchronous.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding one synthetic assembly, the same rows `seed` loads into MariaDB.
    pub fn generate(spec: &RollSpec) -> Self {
        let store = Self::new();
        store.load_assembly(spec);
        store
    }

    /// Replaces the given assembly's citizens and master rows with freshly generated ones,
    /// like `seed` does in MariaDB.
    pub fn load_assembly(&self, spec: &RollSpec) {
        let rows = synth::generate_assembly(spec);
        let master = synth::master_data(spec);
        let mut g = self.write();
        let key = (collation_key(&spec.state), collation_key(&spec.assembly));
        g.rows
            .retain(|r| (collation_key(&r.state), collation_key(&r.assembly_no)) != key);
        g.rows.extend(rows);
        g.master.merge(master);
        g.rebuild_indexes();
    }

    /// A store of exactly these rows (ids must be unique) and master data: for tests that
    /// need hand-made edge cases.
    #[cfg(test)]
    pub fn from_rows(rows: Vec<Citizen>, master: MasterData) -> Self {
        let mut inner = Inner {
            rows,
            master,
            ..Inner::default()
        };
        inner.rebuild_indexes();
        MemoryStore {
            inner: RwLock::new(inner),
        }
    }

    // A panic while holding the lock cannot leave the data half-updated in a way that matters
    // more than stopping the demo would, so a poisoned lock is simply used.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reference query: filters, `ORDER BY srno + 0, id`, LIMIT/OFFSET.
    pub fn read_citizens(&self, f: &CitizenFilter) -> Vec<Citizen> {
        let g = self.read();
        let sel = g.select(f);
        let (limit, offset) = f.limit_offset.unwrap_or((u64::MAX, 0));
        sel.into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|i| g.rows[i].clone())
            .collect()
    }

    /// Applies the updates atomically (one lock, like one transaction); unknown ids are
    /// ignored as an `UPDATE ... WHERE id = ?` would. Returns the number of rows matched.
    pub fn apply_updates(&self, updates: &[CitizenUpdate], now_ms: i64) -> u64 {
        let mut g = self.write();
        let mut matched = 0;
        for u in updates {
            let Some(&i) = g.by_id.get(&u.id) else {
                continue;
            };
            let r = &mut g.rows[i];
            if let Some(v) = &u.responded_status {
                r.responded_status.clone_from(v);
            }
            if let Some(v) = u.voted {
                r.voted = v;
            }
            if let Some(v) = &u.mobile {
                r.mobile.clone_from(v);
            }
            if let Some(v) = &u.party_preference {
                r.party_preference.clone_from(v);
            }
            r.modifieddate = now_ms;
            matched += 1;
        }
        matched
    }

    pub fn dashboard(&self, f: &CitizenFilter) -> DashboardStats {
        let g = self.read();
        let mut st = DashboardStats::default();
        for i in g.select(f) {
            let r = &g.rows[i];
            st.total += 1;
            st.voted += u64::from(r.voted);
            if let Some(s) = &r.responded_status {
                *st.by_status.entry(s.clone()).or_default() += 1;
                if !s.is_empty() {
                    st.responded += 1;
                }
            }
        }
        st
    }

    pub fn states(&self) -> Vec<StateInfo> {
        self.read().master.states.clone()
    }

    /// `None` when the state id is unknown.
    pub fn assemblies(&self, state_id: i64) -> Option<Vec<AssemblyInfo>> {
        let g = self.read();
        g.master.states.iter().find(|s| s.id == state_id)?;
        Some(
            g.master
                .assemblies
                .iter()
                .filter(|(ac, _)| ac.state_id == state_id)
                .map(|(ac, _)| ac.clone())
                .collect(),
        )
    }

    /// `None` when the constituency id is unknown.
    pub fn wards_and_booths(&self, assembly_id: i64) -> Option<(AssemblyInfo, Vec<WardInfo>)> {
        self.read()
            .master
            .assemblies
            .iter()
            .find(|(ac, _)| ac.id == assembly_id)
            .cloned()
    }

    pub fn parties(&self) -> Vec<PartyInfo> {
        self.read().master.parties.clone()
    }

    pub fn settings(&self) -> Vec<Setting> {
        self.read().master.settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, ward: &str, booth: &str, srno: &str, modified: i64) -> Citizen {
        Citizen {
            id,
            state: "Karnataka".into(),
            assembly_no: "150".into(),
            ward_no: ward.into(),
            booth_no: booth.into(),
            srno: srno.into(),
            voter_id: format!("V{id}"),
            first_name: None,
            family_name: None,
            gender: None,
            age: None,
            mobile: None,
            address: None,
            latitude: None,
            longitude: None,
            party_preference: None,
            responded_status: None,
            voted: false,
            modifieddate: modified,
        }
    }

    fn ids(v: &[Citizen]) -> Vec<i64> {
        v.iter().map(|c| c.id).collect()
    }

    fn filter<'a>(ward: Option<&'a str>, booths: Option<&'a [String]>) -> CitizenFilter<'a> {
        CitizenFilter {
            state: "Karnataka",
            assembly_no: "150",
            ward_no: ward,
            booth_nos: booths,
            modified_after_ms: None,
            limit_offset: None,
        }
    }

    #[test]
    fn sql_semantics() {
        let store = MemoryStore::from_rows(
            vec![
                row(1, "1", "1", "10", 100),
                row(2, "1", "1", "9", 200),
                row(3, "1", "2", "100", 300),
                row(4, "1", "2", "9", 50),
                row(5, "2", "3", "1", 400),
                row(6, "2", "3", "x", 500),
                row(7, "10", "4", "2", 600),
            ],
            MasterData::default(),
        );
        // srno + 0 orders numerically, ties by id; "x" + 0 is 0.
        assert_eq!(
            ids(&store.read_citizens(&filter(Some("1"), None))),
            [2, 4, 1, 3]
        );
        assert_eq!(
            ids(&store.read_citizens(&filter(None, None))),
            [6, 5, 7, 2, 4, 1, 3]
        );
        // String equality, not numeric: ward "01" is not ward "1"; case and trailing spaces
        // do not matter under the default collation.
        assert!(store.read_citizens(&filter(Some("01"), None)).is_empty());
        let f = CitizenFilter {
            state: "KARNATAKA ",
            ..filter(Some("1"), None)
        };
        assert_eq!(ids(&store.read_citizens(&f)).len(), 4);
        let booths = vec!["2".to_string(), "3".to_string()];
        assert_eq!(
            ids(&store.read_citizens(&filter(None, Some(&booths)))),
            [6, 5, 4, 3]
        );
        let f = CitizenFilter {
            modified_after_ms: Some(200),
            ..filter(None, None)
        };
        assert_eq!(ids(&store.read_citizens(&f)), [6, 5, 7, 3]);
        let f = CitizenFilter {
            limit_offset: Some((2, 1)),
            ..filter(None, None)
        };
        assert_eq!(ids(&store.read_citizens(&f)), [5, 7]);
        let f = CitizenFilter {
            limit_offset: Some((5, 100)),
            ..filter(None, None)
        };
        assert!(store.read_citizens(&f).is_empty());
        let f = CitizenFilter {
            assembly_no: "151",
            ..filter(None, None)
        };
        assert!(store.read_citizens(&f).is_empty());
    }

    #[test]
    fn updates_and_dashboard() {
        let store = MemoryStore::generate(&RollSpec::new("Karnataka", "150", 2, 300));
        assert_eq!(store.len(), 600);
        let all = store.read_citizens(&filter(Some("1"), None));
        let target = all[5].id;
        let n = store.apply_updates(
            &[
                CitizenUpdate {
                    id: target,
                    responded_status: Some(Some("Positive".into())),
                    voted: Some(true),
                    mobile: None,
                    party_preference: Some(None),
                },
                CitizenUpdate {
                    id: -1,
                    ..Default::default()
                },
            ],
            synth::FIXED_EPOCH_MS + 5,
        );
        assert_eq!(n, 1);
        let f = CitizenFilter {
            modified_after_ms: Some(synth::FIXED_EPOCH_MS),
            ..filter(None, None)
        };
        let changed = store.read_citizens(&f);
        assert_eq!(changed.len(), 1);
        let c = &changed[0];
        assert_eq!(c.responded_status.as_deref(), Some("Positive"));
        assert!(c.voted);
        assert_eq!(c.party_preference, None);
        assert_eq!(c.mobile, all[5].mobile);
        let st = store.dashboard(&filter(None, None));
        assert_eq!(st.total, 600);
        assert_eq!(st.by_status.values().sum::<u64>(), st.responded);
        assert!(st.voted > 0);
        assert_eq!(store.states()[0].id, 29);
        assert_eq!(store.assemblies(29).map(|v| v.len()), Some(1));
        assert_eq!(store.assemblies(1), None);
        let ac = synth::assembly_id("Karnataka", "150");
        assert_eq!(store.wards_and_booths(ac).map(|(_, w)| w.len()), Some(2));
        // Reloading is idempotent and forgets the update.
        store.load_assembly(&RollSpec::new("Karnataka", "150", 2, 300));
        assert_eq!(store.read_citizens(&filter(Some("1"), None)), all);
    }
}
