//! The legacy backend's row format: a result-set row as Spring's `ColumnMapRowMapper` and Jackson write it.
//!
//! The backend reads `SELECT *` rows into ordered maps and lets Jackson serialise them, so the
//! JSON form of a row is decided by the result set's column metadata, not by a Rust struct:
//! keys in column order, integers as numbers, `TINYINT(1)` as a boolean (Connector/J's
//! `tinyInt1isBit`), `DECIMAL` text verbatim, `DATETIME` as epoch milliseconds, NULL as `null`.
//! [`RowWriter`] does exactly that from a row's columns, so replica-built snapshots carry the
//! bytes the backend would have sent. The sample backend has its own, independent writer: tests
//! that compare the two compare two implementations of the contract.

use mysql_async::consts::ColumnType;
use mysql_async::{Column, Row, Value};

use crate::time::EpochMs;

/// Why a row could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("the result set has no `{0}` column")]
    MissingColumn(&'static str),
    #[error("column `{column}`: {reason}")]
    BadValue { column: String, reason: String },
}

/// How Jackson writes a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Boolean,
    /// DECIMAL, FLOAT, DOUBLE: the server's text of the number.
    Number,
    DateTime,
    Text,
}

impl Kind {
    fn of(c: &Column) -> Kind {
        use ColumnType::*;
        match c.column_type() {
            MYSQL_TYPE_TINY if c.column_length() == 1 => Kind::Boolean,
            MYSQL_TYPE_BIT if c.column_length() == 1 => Kind::Boolean,
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => Kind::Integer,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => {
                Kind::Number
            }
            MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_DATE => Kind::DateTime,
            _ => Kind::Text,
        }
    }
}

/// What the snapshot builder needs to know of a row besides its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFacts {
    pub booth_no: String,
    pub modified: EpochMs,
}

/// Writes the rows of one result set; built once from its columns.
pub struct RowWriter {
    /// Per column: the bytes before its value (`{"id":` or `,"state":`) and its kind.
    columns: Vec<(Vec<u8>, Kind, String)>,
    booth: usize,
    modified: usize,
}

impl RowWriter {
    pub fn new(columns: &[Column]) -> Result<RowWriter, RowError> {
        let find = |name: &'static str| {
            columns
                .iter()
                .position(|c| c.name_ref().eq_ignore_ascii_case(name.as_bytes()))
                .ok_or(RowError::MissingColumn(name))
        };
        let booth = find("booth_no")?;
        let modified = find("modifieddate")?;
        let columns = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = String::from_utf8_lossy(c.name_ref()).into_owned();
                let mut key = vec![if i == 0 { b'{' } else { b',' }];
                escape_into(&mut key, &name);
                key.push(b':');
                (key, Kind::of(c), name)
            })
            .collect();
        Ok(RowWriter {
            columns,
            booth,
            modified,
        })
    }

    /// Appends the row's JSON object to `out` and returns its booth and modification time.
    pub fn write(&self, row: Row, out: &mut Vec<u8>) -> Result<RowFacts, RowError> {
        let values = row.unwrap_raw();
        if values.len() != self.columns.len() {
            return Err(RowError::MissingColumn("(row shorter than its columns)"));
        }
        let mut booth_no = None;
        let mut modified = None;
        for (i, (v, (key, kind, name))) in values.iter().zip(&self.columns).enumerate() {
            let v = v.as_ref().unwrap_or(&Value::NULL);
            out.extend_from_slice(key);
            let bad = |reason: &str| RowError::BadValue {
                column: name.clone(),
                reason: reason.to_string(),
            };
            let ms = write_value(out, *kind, v).map_err(bad)?;
            if i == self.booth {
                booth_no = Some(text(v).ok_or_else(|| bad("not text"))?);
            }
            if i == self.modified {
                modified = Some(ms.ok_or_else(|| bad("not a date and time"))?);
            }
        }
        out.push(b'}');
        match (booth_no, modified) {
            (Some(booth_no), Some(modified)) => Ok(RowFacts { booth_no, modified }),
            _ => Err(RowError::MissingColumn("booth_no/modifieddate")),
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        _ => None,
    }
}

/// Writes one value as its column kind asks; returns the instant for date-and-time values.
fn write_value(out: &mut Vec<u8>, kind: Kind, v: &Value) -> Result<Option<EpochMs>, &'static str> {
    match (kind, v) {
        (_, Value::NULL) => out.extend_from_slice(b"null"),
        (Kind::Integer, Value::Int(i)) => out.extend_from_slice(i.to_string().as_bytes()),
        (Kind::Integer, Value::UInt(u)) => out.extend_from_slice(u.to_string().as_bytes()),
        (Kind::Integer, Value::Bytes(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| "not UTF-8")?;
            s.parse::<i64>().map_err(|_| "not an integer")?;
            out.extend_from_slice(s.as_bytes());
        }
        (Kind::Boolean, v) => {
            let on = match v {
                Value::Int(i) => *i != 0,
                Value::UInt(u) => *u != 0,
                Value::Bytes(b) if b.as_slice() == b"0" || b.as_slice() == [0] => false,
                Value::Bytes(b) if !b.is_empty() => true,
                _ => return Err("not a boolean"),
            };
            out.extend_from_slice(if on { b"true" } else { b"false" });
        }
        (Kind::Number, Value::Bytes(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| "not UTF-8")?;
            if serde_json::from_str::<serde_json::Number>(s).is_err() {
                return Err("not a number");
            }
            out.extend_from_slice(b);
        }
        (Kind::Number, Value::Double(d)) => out.extend_from_slice(d.to_string().as_bytes()),
        (Kind::Number, Value::Float(f)) => out.extend_from_slice(f.to_string().as_bytes()),
        (Kind::DateTime, v) => {
            let ms = match v {
                Value::Date(y, mo, d, h, mi, s, us) => {
                    EpochMs::from_utc_parts(*y, *mo, *d, *h, *mi, *s, *us)
                }
                Value::Bytes(b) => std::str::from_utf8(b)
                    .ok()
                    .and_then(EpochMs::parse_sql_datetime),
                _ => None,
            }
            .ok_or("not a date and time")?;
            out.extend_from_slice(ms.0.to_string().as_bytes());
            return Ok(Some(ms));
        }
        (Kind::Text, Value::Bytes(b)) => {
            escape_into(out, std::str::from_utf8(b).map_err(|_| "not UTF-8")?)
        }
        (Kind::Text, Value::Int(i)) => escape_into(out, &i.to_string()),
        (Kind::Text, Value::UInt(u)) => escape_into(out, &u.to_string()),
        _ => return Err("a value of an unexpected type"),
    }
    Ok(None)
}

/// A JSON string as Jackson's default escaping writes it: `"` and `\` escaped, control
/// characters as their short escapes or `\u00XX` (uppercase hex); `/` and non-ASCII as raw UTF-8.
pub fn escape_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04X}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_jackson_does() {
        let mut out = Vec::new();
        escape_into(&mut out, "a\"b\\c/d\n\t\u{1}\u{1f}ಬೆ");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c/d\\n\\t\\u0001\\u001Fಬೆ\""
        );
    }

    #[test]
    fn values_follow_their_column_kind() {
        let mut out = Vec::new();
        write_value(&mut out, Kind::Boolean, &Value::Int(1)).unwrap();
        out.push(b' ');
        write_value(
            &mut out,
            Kind::Number,
            &Value::Bytes(b"-0.0000001".to_vec()),
        )
        .unwrap();
        out.push(b' ');
        write_value(&mut out, Kind::Text, &Value::NULL).unwrap();
        out.push(b' ');
        let ms = write_value(
            &mut out,
            Kind::DateTime,
            &Value::Bytes(b"2024-04-24 23:06:40.123".to_vec()),
        )
        .unwrap();
        assert_eq!(ms, Some(EpochMs(1_714_000_000_123)));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "true -0.0000001 null 1714000000123"
        );
        let mut out = Vec::new();
        assert!(write_value(&mut out, Kind::Number, &Value::Bytes(b"1; DROP".to_vec())).is_err());
        assert!(write_value(&mut out, Kind::Integer, &Value::Bytes(b"x".to_vec())).is_err());
    }
}
