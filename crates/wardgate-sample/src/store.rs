//! The origin's data behind one interface: MariaDB (the real thing) or memory (no-dependency demo).

use std::sync::Arc;

use bytes::Bytes;
use mysql_async::Pool;
use tokio::sync::mpsc;

use crate::datetime::format_datetime_ms;
use crate::master::{AssemblyInfo, DashboardStats, PartyInfo, Setting, StateInfo, WardInfo};
use crate::memory::MemoryStore;
use crate::sql::CitizenFilter;
use crate::voter::{Citizen, CITIZEN_COLUMNS};
use crate::{mysql, OriginError};

/// Most updates one request may carry; an offline volunteer syncs hundreds, not millions.
pub const MAX_UPDATES_PER_REQUEST: usize = 20_000;

/// One element of the `updatedCitizens` body: the row id and the fields to set.
/// `Some(None)` sets a column to NULL; `None` leaves it alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CitizenUpdate {
    pub id: i64,
    pub responded_status: Option<Option<String>>,
    pub voted: Option<bool>,
    pub mobile: Option<Option<String>>,
    pub party_preference: Option<Option<String>>,
}

/// Parses the citizens POST body: empty, `[]`, or an array of objects with `id` and any of
/// `responded_status`, `voted` (bool, 0/1, or their strings), `mobile`, `party_preference`.
/// Other keys (clients send whole rows) are ignored. Values longer than their column are
/// rejected, as MariaDB's strict mode would reject them.
pub fn parse_updates(body: &[u8]) -> Result<Vec<CitizenUpdate>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let arr = v
        .as_array()
        .ok_or("body must be a JSON array of citizens")?;
    if arr.len() > MAX_UPDATES_PER_REQUEST {
        return Err(format!(
            "at most {MAX_UPDATES_PER_REQUEST} updated citizens per request"
        ));
    }
    arr.iter()
        .enumerate()
        .map(|(i, el)| parse_one(el).map_err(|e| format!("updatedCitizens[{i}]: {e}")))
        .collect()
}

fn parse_one(el: &serde_json::Value) -> Result<CitizenUpdate, String> {
    use serde_json::Value as J;
    let obj = el.as_object().ok_or("not an object")?;
    let id = match obj.get("id") {
        Some(J::Number(n)) => n.as_i64().ok_or("`id` is not an integer")?,
        Some(J::String(s)) => s.parse::<i64>().map_err(|_| "`id` is not an integer")?,
        _ => return Err("`id` missing".into()),
    };
    let text = |key: &str, max_chars: usize| -> Result<Option<Option<String>>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(J::Null) => Ok(Some(None)),
            Some(J::String(s)) if s.chars().count() <= max_chars => Ok(Some(Some(s.clone()))),
            Some(J::String(_)) => Err(format!("`{key}` longer than {max_chars} characters")),
            Some(_) => Err(format!("`{key}` must be a string or null")),
        }
    };
    let voted = match obj.get("voted") {
        // NULL cannot be stored in a NOT NULL column; treat it as "not sent".
        None | Some(J::Null) => None,
        Some(J::Bool(b)) => Some(*b),
        Some(J::Number(n)) if n.as_i64() == Some(0) => Some(false),
        Some(J::Number(n)) if n.as_i64() == Some(1) => Some(true),
        Some(J::String(s)) if s == "true" || s == "1" => Some(true),
        Some(J::String(s)) if s == "false" || s == "0" => Some(false),
        Some(_) => return Err("`voted` must be true/false or 0/1".into()),
    };
    Ok(CitizenUpdate {
        id,
        responded_status: text("responded_status", 32)?,
        voted,
        mobile: text("mobile", 15)?,
        party_preference: text("party_preference", 64)?,
    })
}

/// Where the origin's data lives.
#[derive(Clone)]
pub enum Store {
    MySql(Pool),
    Memory(Arc<MemoryStore>),
}

impl Store {
    /// The reference read query.
    pub async fn read_citizens(&self, f: &CitizenFilter<'_>) -> Result<Vec<Citizen>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::read_citizens(pool, f).await,
            Store::Memory(m) => Ok(m.read_citizens(f)),
        }
    }

    /// Applies all updates in one transaction with `modifieddate = now_ms`; returns the
    /// number of rows matched.
    pub async fn apply_updates(
        &self,
        updates: &[CitizenUpdate],
        now_ms: i64,
    ) -> Result<u64, OriginError> {
        if updates.is_empty() {
            return Ok(0);
        }
        match self {
            Store::MySql(pool) => mysql::apply_updates(pool, updates, now_ms).await,
            Store::Memory(m) => Ok(m.apply_updates(updates, now_ms)),
        }
    }

    /// Counts over the rows the filter selects (its LIMIT and date are ignored by callers).
    pub async fn dashboard(&self, f: &CitizenFilter<'_>) -> Result<DashboardStats, OriginError> {
        match self {
            Store::MySql(pool) => mysql::dashboard(pool, f).await,
            Store::Memory(m) => Ok(m.dashboard(f)),
        }
    }

    pub async fn states(&self) -> Result<Vec<StateInfo>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::states(pool).await,
            Store::Memory(m) => Ok(m.states()),
        }
    }

    /// `None` when no state has this id.
    pub async fn assemblies(
        &self,
        state_id: i64,
    ) -> Result<Option<Vec<AssemblyInfo>>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::assemblies(pool, state_id).await,
            Store::Memory(m) => Ok(m.assemblies(state_id)),
        }
    }

    /// `None` when no constituency has this id.
    pub async fn wards_and_booths(
        &self,
        assembly_id: i64,
    ) -> Result<Option<(AssemblyInfo, Vec<WardInfo>)>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::wards_and_booths(pool, assembly_id).await,
            Store::Memory(m) => Ok(m.wards_and_booths(assembly_id)),
        }
    }

    pub async fn parties(&self) -> Result<Vec<PartyInfo>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::parties(pool).await,
            Store::Memory(m) => Ok(m.parties()),
        }
    }

    pub async fn settings(&self) -> Result<Vec<Setting>, OriginError> {
        match self {
            Store::MySql(pool) => mysql::settings(pool).await,
            Store::Memory(m) => Ok(m.settings()),
        }
    }

    /// Streams the assembly as CSV (header line, then the reference query's rows) through a
    /// small bounded channel, so a big export is never held in memory and a slow client slows
    /// the database read instead of growing a buffer. Dropping the receiver stops the export.
    pub fn stream_csv(
        &self,
        state: String,
        assembly_no: String,
    ) -> mpsc::Receiver<Result<Bytes, OriginError>> {
        let (tx, rx) = mpsc::channel(4);
        let store = self.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            write_csv_header(&mut head);
            if tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            let result = match store {
                Store::MySql(pool) => mysql::stream_csv(&pool, &state, &assembly_no, &tx).await,
                Store::Memory(m) => {
                    let f = CitizenFilter {
                        state: &state,
                        assembly_no: &assembly_no,
                        ward_no: None,
                        booth_nos: None,
                        modified_after_ms: None,
                        limit_offset: None,
                    };
                    let rows = m.read_citizens(&f);
                    for chunk in rows.chunks(CSV_ROWS_PER_CHUNK) {
                        let mut buf = Vec::with_capacity(chunk.len() * 256);
                        for c in chunk {
                            write_csv_row(c, &mut buf);
                        }
                        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "CSV export failed midway");
                // The receiver may already be gone; then nobody needs to hear about it.
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }
}

/// Rows per CSV body chunk: ~64 KB, big enough to amortise per-chunk costs.
pub const CSV_ROWS_PER_CHUNK: usize = 256;

pub fn write_csv_header(out: &mut Vec<u8>) {
    out.extend_from_slice(CITIZEN_COLUMNS.join(",").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One RFC 4180 CSV record: NULL as an empty field, text quoted when it holds `,` `"` or a
/// line break, `voted` as 1/0, `modifieddate` as DATETIME(3) text in UTC.
pub fn write_csv_row(c: &Citizen, out: &mut Vec<u8>) {
    fn field(out: &mut Vec<u8>, s: &str) {
        if s.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(s.as_bytes());
        }
    }
    fn opt(out: &mut Vec<u8>, s: Option<&str>) {
        out.push(b',');
        if let Some(s) = s {
            field(out, s);
        }
    }
    out.extend_from_slice(c.id.to_string().as_bytes());
    for s in [
        &c.state,
        &c.assembly_no,
        &c.ward_no,
        &c.booth_no,
        &c.srno,
        &c.voter_id,
    ] {
        out.push(b',');
        field(out, s);
    }
    opt(out, c.first_name.as_deref());
    opt(out, c.family_name.as_deref());
    opt(out, c.gender.as_deref());
    opt(out, c.age.map(|a| a.to_string()).as_deref());
    opt(out, c.mobile.as_deref());
    opt(out, c.address.as_deref());
    opt(out, c.latitude.as_deref());
    opt(out, c.longitude.as_deref());
    opt(out, c.party_preference.as_deref());
    opt(out, c.responded_status.as_deref());
    out.extend_from_slice(if c.voted { b",1," } else { b",0," });
    out.extend_from_slice(format_datetime_ms(c.modifieddate).as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_update_bodies() {
        assert_eq!(parse_updates(b""), Ok(vec![]));
        assert_eq!(parse_updates(b" \n"), Ok(vec![]));
        assert_eq!(parse_updates(b"[]"), Ok(vec![]));
        let u = parse_updates(
            br#"[{"id":5,"voted":1,"mobile":null,"first_name":"ignored"},{"id":"6","responded_status":"Positive","voted":false,"party_preference":"INC"}]"#,
        )
        .unwrap();
        assert_eq!(
            u,
            vec![
                CitizenUpdate {
                    id: 5,
                    voted: Some(true),
                    mobile: Some(None),
                    ..Default::default()
                },
                CitizenUpdate {
                    id: 6,
                    responded_status: Some(Some("Positive".into())),
                    voted: Some(false),
                    party_preference: Some(Some("INC".into())),
                    ..Default::default()
                }
            ]
        );
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"[{}]",
            b"[{\"id\":1.5}]",
            b"[{\"id\":1,\"voted\":2}]",
            b"[{\"id\":1,\"mobile\":\"1234567890123456\"}]",
            b"[{\"id\":1,\"mobile\":5}]",
            b"not json",
        ] {
            assert!(
                parse_updates(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn csv_quoting() {
        let roll = crate::synth::RollSpec::new("Karnataka", "150", 1, 1);
        let mut c = crate::synth::generate_ward(&roll, 1).remove(0);
        c.id = 7;
        c.address = Some("No. 5, \"Sri Nilaya\"".into());
        c.mobile = None;
        c.voted = true;
        let mut out = Vec::new();
        write_csv_row(&c, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("7,Karnataka,150,1,"), "{s}");
        assert!(s.contains(",\"No. 5, \"\"Sri Nilaya\"\"\","), "{s}");
        assert!(
            s.ends_with(&format!(",1,{}\r\n", format_datetime_ms(c.modifieddate))),
            "{s}"
        );
    }
}
