//! The shape probe: one ward as the backend wrote it against the same ward written from the replica (keys, value types, value forms).
//!
//! Values may differ (a row can change between the two reads); what may not is how they are
//! written: the keys and their order, and each value's form (number, decimal, scientific
//! decimal, boolean, ISO date, text). Rows are matched by `id`. Where a difference is a form a
//! `[replica]` setting switches, the mismatch names the setting.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Rows compared at most: forms are per column, a few hundred rows show every one.
const MAX_ROWS: usize = 500;

/// How a value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Null,
    Bool,
    Integer,
    Decimal,
    /// A decimal in scientific notation (`0E-7`), as `BigDecimal.toString()` writes tiny ones.
    Scientific,
    /// ISO-8601 date and time ending `+0000`, `+00:00` or `Z`.
    Iso(&'static str),
    Text,
    Other,
}

impl Form {
    fn of(raw: &str) -> Form {
        match raw.as_bytes().first() {
            Some(b'n') => Form::Null,
            Some(b't' | b'f') => Form::Bool,
            Some(b'"') => {
                let s: String = serde_json::from_str(raw).unwrap_or_default();
                let dated = s.len() >= 19 && s.as_bytes()[10] == b'T';
                match () {
                    _ if dated && s.ends_with("+0000") => Form::Iso("+0000"),
                    _ if dated && s.ends_with("+00:00") => Form::Iso("+00:00"),
                    _ if dated && s.ends_with('Z') => Form::Iso("Z"),
                    _ => Form::Text,
                }
            }
            Some(b'-' | b'0'..=b'9') if raw.contains(['e', 'E']) => Form::Scientific,
            Some(b'-' | b'0'..=b'9') if raw.contains('.') => Form::Decimal,
            Some(b'-' | b'0'..=b'9') => Form::Integer,
            _ => Form::Other,
        }
    }

    fn name(self) -> String {
        match self {
            Form::Null => "null".into(),
            Form::Bool => "a boolean".into(),
            Form::Integer => "an integer".into(),
            Form::Decimal => "a plain decimal".into(),
            Form::Scientific => "a decimal in scientific notation".into(),
            Form::Iso(z) => format!("an ISO-8601 date ending {z}"),
            Form::Text => "text".into(),
            Form::Other => "something else".into(),
        }
    }
}

/// The first difference between the backend's rows and the replica's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The column (row key) that differs.
    pub field: String,
    pub backend: String,
    pub replica: String,
    /// The `[replica]` setting that makes the replica's rows match, when one does.
    pub setting: Option<&'static str>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field `{}`: the backend writes {}, the replica's rows {}",
            self.field, self.backend, self.replica
        )?;
        match self.setting {
            Some(s) => write!(f, "; set `{s}` in [replica] to match"),
            None => write!(f, "; no [replica] setting makes them match"),
        }
    }
}

/// What a comparison found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Same keys and forms in every compared row.
    Same {
        rows: usize,
    },
    Differs(Mismatch),
    /// Nothing to compare (an empty ward, or no `id` in common): try another ward.
    Inconclusive(String),
}

/// A row's keys and raw values, in the order they were written.
struct OrderedRow<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for OrderedRow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedRow<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(OrderedRow(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The rows of a JSON array, each with its keys in order (non-objects skipped).
fn rows(body: &[u8]) -> Option<Vec<OrderedRow<'_>>> {
    let raw: Vec<&RawValue> = serde_json::from_slice(body).ok()?;
    Some(
        raw.iter()
            .filter_map(|r| serde_json::from_str(r.get()).ok())
            .collect(),
    )
}

fn id_of(row: &OrderedRow<'_>) -> Option<String> {
    row.0
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.get().to_string())
}

/// Compares the two full-ward answers (JSON arrays of rows).
pub fn compare(backend: &[u8], replica: &[u8]) -> Verdict {
    let (Some(theirs), Some(ours)) = (rows(backend), rows(replica)) else {
        return Verdict::Inconclusive("an answer is not a JSON array".into());
    };
    let by_id: std::collections::HashMap<String, &OrderedRow<'_>> =
        ours.iter().filter_map(|r| Some((id_of(r)?, r))).collect();
    let mut compared = 0;
    for b in theirs.iter().take(MAX_ROWS * 4) {
        let Some(r) = id_of(b).and_then(|id| by_id.get(&id)) else {
            continue;
        };
        if let Some(m) = compare_rows(b, r) {
            return Verdict::Differs(m);
        }
        compared += 1;
        if compared == MAX_ROWS {
            break;
        }
    }
    match compared {
        0 => Verdict::Inconclusive("no row in common (an empty ward?)".into()),
        rows => Verdict::Same { rows },
    }
}

fn compare_rows(backend: &OrderedRow<'_>, replica: &OrderedRow<'_>) -> Option<Mismatch> {
    for i in 0..backend.0.len().max(replica.0.len()) {
        let (b, r) = (backend.0.get(i), replica.0.get(i));
        let (bk, rk) = (b.map(|(k, _)| k.as_str()), r.map(|(k, _)| k.as_str()));
        if bk != rk {
            let field = bk.or(rk).unwrap_or_default().to_string();
            let at = |k: Option<&str>| k.map_or("nothing".into(), |k| format!("`{k}`"));
            return Some(Mismatch {
                field,
                backend: format!("{} as key {}", at(bk), i + 1),
                replica: format!("{} there", at(rk)),
                setting: None,
            });
        }
        let (Some((k, bv)), Some((_, rv))) = (b, r) else {
            continue;
        };
        let (bf, rf) = (Form::of(bv.get()), Form::of(rv.get()));
        // A null says nothing of the column's form (the value may have changed in between).
        if bf == rf || bf == Form::Null || rf == Form::Null {
            continue;
        }
        return Some(Mismatch {
            field: k.clone(),
            backend: bf.name(),
            replica: rf.name(),
            setting: setting_for(bf, rf),
        });
    }
    None
}

/// The setting that turns the replica's form `_r` into the backend's `b`.
fn setting_for(b: Form, r: Form) -> Option<&'static str> {
    match (b, r) {
        (Form::Iso("+0000"), Form::Integer | Form::Iso(_)) => Some("dates = \"iso\""),
        (Form::Iso("+00:00"), Form::Integer | Form::Iso(_)) => Some("dates = \"iso_colon\""),
        (Form::Integer, Form::Iso(_)) => Some("dates = \"epoch_ms\""),
        (Form::Integer, Form::Bool) => Some("booleans = \"numbers\""),
        (Form::Bool, Form::Integer) => Some("booleans = \"true_false\""),
        (Form::Scientific, Form::Decimal) => Some("decimals = \"jackson\""),
        (Form::Decimal, Form::Scientific) => Some("decimals = \"plain\""),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKEND: &str = r#"[{"id":1,"lat":0E-7,"voted":true,"modifieddate":"2026-11-24T10:15:59.297+0000","name":null},{"id":2,"lat":12.5,"voted":false,"modifieddate":"2026-11-24T10:15:59.297+0000","name":"A"}]"#;

    #[test]
    fn same_forms_match_whatever_the_values() {
        let ours = r#"[{"id":2,"lat":77.1,"voted":true,"modifieddate":"2026-11-25T00:00:00.000+0000","name":"B"},{"id":1,"lat":0E-7,"voted":false,"modifieddate":"2026-11-24T10:15:59.297+0000","name":"x"}]"#;
        assert_eq!(
            compare(BACKEND.as_bytes(), ours.as_bytes()),
            Verdict::Same { rows: 2 }
        );
    }

    #[test]
    fn a_known_difference_names_its_setting() {
        for (ours, field, setting) in [
            (
                r#"[{"id":1,"lat":0E-7,"voted":true,"modifieddate":1764000000000,"name":null}]"#,
                "modifieddate",
                Some("dates = \"iso\""),
            ),
            (
                r#"[{"id":1,"lat":0E-7,"voted":1,"modifieddate":"2026-11-24T10:15:59.297+0000","name":null}]"#,
                "voted",
                Some("booleans = \"true_false\""),
            ),
            (
                r#"[{"id":1,"lat":0.0000000,"voted":true,"modifieddate":"2026-11-24T10:15:59.297+0000","name":null}]"#,
                "lat",
                Some("decimals = \"jackson\""),
            ),
            (
                r#"[{"id":1,"lat":0E-7,"modifieddate":"2026-11-24T10:15:59.297+0000","voted":true,"name":null}]"#,
                "voted",
                None,
            ),
            (
                r#"[{"id":1,"lat":"0","voted":true,"modifieddate":"2026-11-24T10:15:59.297+0000","name":null}]"#,
                "lat",
                None,
            ),
        ] {
            match compare(BACKEND.as_bytes(), ours.as_bytes()) {
                Verdict::Differs(m) => {
                    assert_eq!(m.field, field, "{ours}");
                    assert_eq!(m.setting, setting, "{ours}: {m}");
                }
                other => panic!("{ours}: {other:?}"),
            }
        }
    }

    #[test]
    fn nothing_in_common_is_inconclusive() {
        assert!(matches!(compare(b"[]", b"[]"), Verdict::Inconclusive(_)));
        let other = r#"[{"id":9,"lat":0E-7}]"#;
        assert!(matches!(
            compare(BACKEND.as_bytes(), other.as_bytes()),
            Verdict::Inconclusive(_)
        ));
    }
}
