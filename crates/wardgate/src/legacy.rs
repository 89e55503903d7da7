//! The legacy backend's row format: a result-set row as Spring's `ColumnMapRowMapper` and Jackson write it.
//!
//! The backend reads `SELECT *` rows into ordered maps and lets Jackson serialise them, so the
//! JSON form of a row is decided by the result set's column metadata, not by a Rust struct:
//! keys in column order, integers as numbers, `TINYINT(1)` as a boolean (Connector/J's
//! `tinyInt1isBit`), `DECIMAL` as a `BigDecimal` (`0E-7`), `DATETIME` as epoch milliseconds,
//! NULL as `null`, each as the `[replica]` row format says where backends differ.
//! [`RowWriter`] does exactly that from a row's columns, so replica-built snapshots carry the
//! bytes the backend would have sent. The sample backend has its own, independent writer: tests
//! that compare the two compare two implementations of the contract.

use mysql_async::consts::ColumnType;
use mysql_async::{Column, Row, Value};
use serde::{Deserialize, Serialize};

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

/// How the backend writes `DATETIME`s: Jackson's `WRITE_DATES_AS_TIMESTAMPS` on (epoch ms),
/// or off (Spring Boot 2.0's default) as ISO-8601 in UTC, `+0000` (Jackson before 2.11) or
/// `+00:00` (2.11 and later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum DateStyle {
    #[default]
    EpochMs,
    Iso,
    IsoColon,
}

/// How the backend writes `TINYINT(1)` (`voted`): `true`/`false` (Connector/J's
/// `tinyInt1isBit`, its default) or `1`/`0` (`tinyInt1isBit=false`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum BoolStyle {
    #[default]
    TrueFalse,
    Numbers,
}

/// How the backend writes `DECIMAL`s: as Jackson writes a `BigDecimal` (`toString()`, so `0E-7`
/// for a zero of scale 7), or plain (`WRITE_BIGDECIMAL_AS_PLAIN`, the server's text).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum DecimalStyle {
    #[default]
    Jackson,
    Plain,
}

/// The value forms of rows written from the replica, to match what the backend writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowFormat {
    pub dates: DateStyle,
    pub booleans: BoolStyle,
    pub decimals: DecimalStyle,
}

/// What the snapshot builder needs to know of a row besides its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFacts {
    /// The `id` column, when it holds a non-negative integer.
    pub id: Option<u64>,
    pub booth_no: String,
    pub modified: EpochMs,
}

/// Writes the rows of one result set; built once from its columns.
pub struct RowWriter {
    /// Per column: the bytes before its value (`{"id":` or `,"state":`) and its kind.
    columns: Vec<(Vec<u8>, Kind, String)>,
    id: Option<usize>,
    booth: usize,
    modified: usize,
    format: RowFormat,
}

impl RowWriter {
    pub fn new(columns: &[Column], format: RowFormat) -> Result<RowWriter, RowError> {
        let find = |name: &'static str| {
            columns
                .iter()
                .position(|c| c.name_ref().eq_ignore_ascii_case(name.as_bytes()))
                .ok_or(RowError::MissingColumn(name))
        };
        let booth = find("booth_no")?;
        let modified = find("modifieddate")?;
        let id = find("id").ok();
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
            id,
            booth,
            modified,
            format,
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
        let mut id = None;
        for (i, (v, (key, kind, name))) in values.iter().zip(&self.columns).enumerate() {
            let v = v.as_ref().unwrap_or(&Value::NULL);
            if Some(i) == self.id {
                id = id_value(v);
            }
            out.extend_from_slice(key);
            let bad = |reason: &str| RowError::BadValue {
                column: name.clone(),
                reason: reason.to_string(),
            };
            let ms = write_value(out, *kind, v, self.format).map_err(bad)?;
            if i == self.booth {
                booth_no = Some(text(v).ok_or_else(|| bad("not text"))?);
            }
            if i == self.modified {
                modified = Some(ms.ok_or_else(|| bad("not a date and time"))?);
            }
        }
        out.push(b'}');
        match (booth_no, modified) {
            (Some(booth_no), Some(modified)) => Ok(RowFacts {
                id,
                booth_no,
                modified,
            }),
            _ => Err(RowError::MissingColumn("booth_no/modifieddate")),
        }
    }
}

/// An `id` column's value as a non-negative integer.
fn id_value(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::UInt(n) => Some(*n),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
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

/// Writes one value as its column kind and the row format ask; returns the instant for
/// date-and-time values.
fn write_value(
    out: &mut Vec<u8>,
    kind: Kind,
    v: &Value,
    format: RowFormat,
) -> Result<Option<EpochMs>, &'static str> {
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
            out.extend_from_slice(match (format.booleans, on) {
                (BoolStyle::TrueFalse, true) => b"true",
                (BoolStyle::TrueFalse, false) => b"false",
                (BoolStyle::Numbers, true) => b"1",
                (BoolStyle::Numbers, false) => b"0",
            });
        }
        (Kind::Number, Value::Bytes(b)) => {
            let s = std::str::from_utf8(b).map_err(|_| "not UTF-8")?;
            if serde_json::from_str::<serde_json::Number>(s).is_err() {
                return Err("not a number");
            }
            match format.decimals {
                DecimalStyle::Jackson => write_bigdecimal(out, s),
                DecimalStyle::Plain => out.extend_from_slice(b),
            }
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
            match format.dates {
                DateStyle::EpochMs => out.extend_from_slice(ms.0.to_string().as_bytes()),
                DateStyle::Iso => escape_into(out, &ms.to_jackson_iso()),
                DateStyle::IsoColon => {
                    let iso = ms.to_jackson_iso();
                    escape_into(out, &format!("{}+00:00", &iso[..iso.len() - 5]));
                }
            }
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

/// A DECIMAL's text as `BigDecimal.toString()` writes it: unchanged unless the exponent of its
/// leading digit is below -6, then scientific (`0.0000000` is `0E-7`, `0.00000012` is
/// `1.2E-7`). The server's text of a DECIMAL is always plain with its scale's digits.
fn write_bigdecimal(out: &mut Vec<u8>, text: &str) {
    let (sign, body) = text.strip_prefix('-').map_or(("", text), |b| ("-", b));
    let Some((int, frac)) = body.split_once('.') else {
        out.extend_from_slice(text.as_bytes());
        return;
    };
    let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let first = all.iter().position(|&d| d != b'0');
    // The exponent of the leading significant digit (of the last digit, for a zero).
    let exponent = match first {
        Some(i) => int.len() as i64 - 1 - i as i64,
        None => -(frac.len() as i64),
    };
    if exponent >= -6 {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    match first {
        None => out.extend_from_slice(format!("0E{exponent}").as_bytes()),
        Some(i) => {
            let digits = &all[i..];
            out.extend_from_slice(sign.as_bytes());
            out.push(digits[0]);
            if digits.len() > 1 {
                out.push(b'.');
                out.extend_from_slice(&digits[1..]);
            }
            out.extend_from_slice(format!("E{exponent}").as_bytes());
        }
    }
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
        let row = |format: RowFormat| {
            let mut out = Vec::new();
            write_value(&mut out, Kind::Boolean, &Value::Int(1), format).unwrap();
            for d in ["-0.0000001", "0.0000000", "12.9715987", "0.0000012"] {
                out.push(b' ');
                let v = Value::Bytes(d.as_bytes().to_vec());
                write_value(&mut out, Kind::Number, &v, format).unwrap();
            }
            out.push(b' ');
            write_value(&mut out, Kind::Text, &Value::NULL, format).unwrap();
            out.push(b' ');
            let v = Value::Bytes(b"2024-04-24 23:06:40.123".to_vec());
            let ms = write_value(&mut out, Kind::DateTime, &v, format).unwrap();
            assert_eq!(ms, Some(EpochMs(1_714_000_000_123)));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            row(RowFormat::default()),
            "true -1E-7 0E-7 12.9715987 0.0000012 null 1714000000123"
        );
        let other = RowFormat {
            dates: DateStyle::IsoColon,
            booleans: BoolStyle::Numbers,
            decimals: DecimalStyle::Plain,
        };
        assert_eq!(
            row(other),
            "1 -0.0000001 0.0000000 12.9715987 0.0000012 null \"2024-04-24T23:06:40.123+00:00\""
        );
        let mut out = Vec::new();
        let f = RowFormat::default();
        assert!(write_value(
            &mut out,
            Kind::Number,
            &Value::Bytes(b"1; DROP".to_vec()),
            f
        )
        .is_err());
        assert!(write_value(&mut out, Kind::Integer, &Value::Bytes(b"x".to_vec()), f).is_err());
    }
}
