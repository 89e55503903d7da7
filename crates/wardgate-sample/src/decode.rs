//! Decoding `SELECT *` rows of `citizen`, from the text or the binary protocol, into [`Citizen`]s.

use std::fmt;

use mysql_async::{Row, Value};

use crate::datetime::{date_parts_to_ms, parse_datetime_text};
use crate::numeric::is_json_number;
use crate::voter::{Citizen, CITIZEN_COLUMNS};

/// Why a database row could not be decoded into a [`Citizen`].
#[derive(Debug, thiserror::Error)]
pub enum VoterError {
    #[error("column `{0}` missing from the result set")]
    MissingColumn(&'static str),
    #[error("column `{column}` has an unexpected value: {reason}")]
    BadValue {
        column: &'static str,
        reason: String,
    },
}

impl Citizen {
    /// Decodes a `SELECT *` row of `citizen`, finding columns by name. Accepts both the text
    /// protocol (every value as bytes) and the binary protocol (typed values).
    pub fn from_row(row: Row) -> Result<Citizen, VoterError> {
        let idx = column_indexes(&row)?;
        let mut values: Vec<Option<Value>> = row.unwrap_raw();
        let mut take = |i: usize| -> Result<Value, VoterError> {
            let name = CITIZEN_COLUMNS[i];
            values
                .get_mut(idx[i])
                .and_then(Option::take)
                .ok_or(VoterError::MissingColumn(name))
        };
        Ok(Citizen {
            id: value_i64("id", take(0)?)?,
            state: value_string("state", take(1)?)?,
            assembly_no: value_string("assembly_no", take(2)?)?,
            ward_no: value_string("ward_no", take(3)?)?,
            booth_no: value_string("booth_no", take(4)?)?,
            srno: value_string("srno", take(5)?)?,
            voter_id: value_string("voter_id", take(6)?)?,
            first_name: value_opt_string("first_name", take(7)?)?,
            family_name: value_opt_string("family_name", take(8)?)?,
            gender: value_opt_string("gender", take(9)?)?,
            age: value_opt_i32("age", take(10)?)?,
            mobile: value_opt_string("mobile", take(11)?)?,
            address: value_opt_string("address", take(12)?)?,
            latitude: value_opt_decimal("latitude", take(13)?)?,
            longitude: value_opt_decimal("longitude", take(14)?)?,
            party_preference: value_opt_string("party_preference", take(15)?)?,
            responded_status: value_opt_string("responded_status", take(16)?)?,
            voted: value_i64("voted", take(17)?)? != 0,
            modifieddate: value_epoch_ms("modifieddate", take(18)?)?,
        })
    }
}

/// Where each of [`CITIZEN_COLUMNS`] sits in the row's result set.
fn column_indexes(row: &Row) -> Result<[usize; CITIZEN_COLUMNS.len()], VoterError> {
    let columns = row.columns_ref();
    // Fast path: `SELECT *` yields schema order, so usually no search is needed.
    let in_order = columns.len() == CITIZEN_COLUMNS.len()
        && columns
            .iter()
            .zip(CITIZEN_COLUMNS)
            .all(|(c, name)| c.name_ref() == name.as_bytes());
    let mut idx = [usize::MAX; CITIZEN_COLUMNS.len()];
    for (i, name) in CITIZEN_COLUMNS.iter().enumerate() {
        idx[i] = if in_order {
            i
        } else {
            columns
                .iter()
                .position(|c| c.name_ref().eq_ignore_ascii_case(name.as_bytes()))
                .ok_or(VoterError::MissingColumn(name))?
        };
    }
    Ok(idx)
}

struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Bytes(b) => write!(f, "bytes {:?}", String::from_utf8_lossy(b)),
            other => write!(f, "{other:?}"),
        }
    }
}

fn bad_value(column: &'static str, reason: impl ToString) -> VoterError {
    VoterError::BadValue {
        column,
        reason: reason.to_string(),
    }
}

fn bad(column: &'static str, v: &Value) -> VoterError {
    bad_value(column, format!("cannot decode {}", Shown(v)))
}

fn value_i64(column: &'static str, v: Value) -> Result<i64, VoterError> {
    match v {
        Value::Int(i) => Ok(i),
        Value::UInt(u) => i64::try_from(u).map_err(|_| bad(column, &v)),
        Value::Bytes(ref b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(|| bad(column, &v)),
        ref other => Err(bad(column, other)),
    }
}

fn value_opt_i32(column: &'static str, v: Value) -> Result<Option<i32>, VoterError> {
    match v {
        Value::NULL => Ok(None),
        v => i32::try_from(value_i64(column, v)?)
            .map(Some)
            .map_err(|e| bad_value(column, e)),
    }
}

fn value_string(column: &'static str, v: Value) -> Result<String, VoterError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b).map_err(|e| bad_value(column, e)),
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        other => Err(bad(column, &other)),
    }
}

fn value_opt_string(column: &'static str, v: Value) -> Result<Option<String>, VoterError> {
    match v {
        Value::NULL => Ok(None),
        v => value_string(column, v).map(Some),
    }
}

fn value_opt_decimal(column: &'static str, v: Value) -> Result<Option<String>, VoterError> {
    match v {
        Value::NULL => Ok(None),
        Value::Bytes(b) => {
            let s = String::from_utf8(b).map_err(|e| bad_value(column, e))?;
            if is_json_number(&s) {
                Ok(Some(s))
            } else {
                Err(bad_value(column, format!("not a decimal: {s:?}")))
            }
        }
        other => Err(bad(column, &other)),
    }
}

fn value_epoch_ms(column: &'static str, v: Value) -> Result<i64, VoterError> {
    match v {
        Value::Date(y, mo, d, h, mi, s, us) => Ok(date_parts_to_ms(
            i64::from(y),
            u32::from(mo),
            u32::from(d),
            i64::from(h),
            i64::from(mi),
            i64::from(s),
            i64::from(us),
        )),
        Value::Bytes(ref b) => std::str::from_utf8(b)
            .ok()
            .and_then(parse_datetime_text)
            .ok_or_else(|| bad(column, &v)),
        ref other => Err(bad(column, other)),
    }
}
