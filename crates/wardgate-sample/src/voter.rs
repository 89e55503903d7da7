//! The `citizen` row: its schema, its byte-exact JSON form as the legacy backend writes it, and the reference read query.

use std::fmt;

use mysql_async::{Row, Value};

/// Column names of `citizen` in schema order; `SELECT *` returns them in this order and the
/// backend's JSON objects list them in this order too.
pub const CITIZEN_COLUMNS: &[&str] = &[
    "id",
    "state",
    "assembly_no",
    "ward_no",
    "booth_no",
    "srno",
    "voter_id",
    "first_name",
    "family_name",
    "gender",
    "age",
    "mobile",
    "address",
    "latitude",
    "longitude",
    "party_preference",
    "responded_status",
    "voted",
    "modifieddate",
];

/// DDL of the reference schema: the contract's `citizen` table (same columns and indexes)
/// and the sample origin's small master tables. Each statement is idempotent.
pub const SCHEMA_SQL: &[&str] = &[
    // utf8mb4 is stated explicitly because names and addresses may be in Kannada script and a
    // server default of latin1 would reject them; columns and keys are exactly the contract's.
    "CREATE TABLE IF NOT EXISTS citizen (
  id               BIGINT PRIMARY KEY AUTO_INCREMENT,
  state            VARCHAR(64)  NOT NULL,
  assembly_no      VARCHAR(16)  NOT NULL,
  ward_no          VARCHAR(16)  NOT NULL,
  booth_no         VARCHAR(16)  NOT NULL,
  srno             VARCHAR(16)  NOT NULL,
  voter_id         VARCHAR(32)  NOT NULL,
  first_name       VARCHAR(100),
  family_name      VARCHAR(100),
  gender           CHAR(1),
  age              INT,
  mobile           VARCHAR(15),
  address          VARCHAR(255),
  latitude         DECIMAL(10,7),
  longitude        DECIMAL(10,7),
  party_preference VARCHAR(64),
  responded_status VARCHAR(32),
  voted            TINYINT(1)   NOT NULL DEFAULT 0,
  modifieddate     DATETIME(3)  NOT NULL,
  KEY idx_citizen_download (state, assembly_no, ward_no, modifieddate),
  KEY idx_citizen_booth    (state, assembly_no, booth_no, modifieddate)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS state (
  id   BIGINT PRIMARY KEY,
  name VARCHAR(64) NOT NULL,
  code VARCHAR(8)  NOT NULL,
  UNIQUE KEY uk_state_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS assembly_constituency (
  id          BIGINT PRIMARY KEY,
  state_id    BIGINT       NOT NULL,
  assembly_no VARCHAR(16)  NOT NULL,
  name        VARCHAR(100) NOT NULL,
  UNIQUE KEY uk_ac_state_no (state_id, assembly_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS ward (
  id                       BIGINT PRIMARY KEY,
  assembly_constituency_id BIGINT       NOT NULL,
  ward_no                  VARCHAR(16)  NOT NULL,
  name                     VARCHAR(100) NOT NULL,
  UNIQUE KEY uk_ward_ac_no (assembly_constituency_id, ward_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS booth (
  id         BIGINT PRIMARY KEY,
  ward_id    BIGINT       NOT NULL,
  booth_no   VARCHAR(16)  NOT NULL,
  name       VARCHAR(255) NOT NULL,
  first_srno INT          NOT NULL,
  last_srno  INT          NOT NULL,
  KEY idx_booth_ward (ward_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS party (
  id         BIGINT PRIMARY KEY,
  name       VARCHAR(100) NOT NULL,
  short_name VARCHAR(16)  NOT NULL,
  color      VARCHAR(16)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS application_settings (
  setting_key   VARCHAR(64)  PRIMARY KEY,
  setting_value VARCHAR(255) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Statement every origin connection runs (after connect and after each pool reset) so that
/// `NOW(3)` and any implicit conversion agree with the epoch-ms values the code computes.
pub const SESSION_SETUP_SQL: &str = "SET time_zone = '+00:00'";

/// One `citizen` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citizen {
    pub id: i64,
    pub state: String,
    pub assembly_no: String,
    pub ward_no: String,
    pub booth_no: String,
    pub srno: String,
    pub voter_id: String,
    pub first_name: Option<String>,
    pub family_name: Option<String>,
    pub gender: Option<String>,
    pub age: Option<i32>,
    pub mobile: Option<String>,
    pub address: Option<String>,
    /// DECIMAL(10,7) text exactly as MySQL returns it, e.g. `"12.9715987"`.
    pub latitude: Option<String>,
    pub longitude: Option<String>,
    pub party_preference: Option<String>,
    pub responded_status: Option<String>,
    pub voted: bool,
    /// Epoch milliseconds, UTC.
    pub modifieddate: i64,
}

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
    /// Appends the row as the backend's Jackson writes it: a compact JSON object, keys in
    /// schema order, DECIMAL text verbatim as a number, NULL as `null`, `modifieddate` as
    /// epoch ms.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        write_i64(out, self.id);
        out.extend_from_slice(b",\"state\":");
        write_json_str(out, &self.state);
        out.extend_from_slice(b",\"assembly_no\":");
        write_json_str(out, &self.assembly_no);
        out.extend_from_slice(b",\"ward_no\":");
        write_json_str(out, &self.ward_no);
        out.extend_from_slice(b",\"booth_no\":");
        write_json_str(out, &self.booth_no);
        out.extend_from_slice(b",\"srno\":");
        write_json_str(out, &self.srno);
        out.extend_from_slice(b",\"voter_id\":");
        write_json_str(out, &self.voter_id);
        out.extend_from_slice(b",\"first_name\":");
        write_opt_str(out, self.first_name.as_deref());
        out.extend_from_slice(b",\"family_name\":");
        write_opt_str(out, self.family_name.as_deref());
        out.extend_from_slice(b",\"gender\":");
        write_opt_str(out, self.gender.as_deref());
        out.extend_from_slice(b",\"age\":");
        match self.age {
            Some(age) => write_i64(out, i64::from(age)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"mobile\":");
        write_opt_str(out, self.mobile.as_deref());
        out.extend_from_slice(b",\"address\":");
        write_opt_str(out, self.address.as_deref());
        out.extend_from_slice(b",\"latitude\":");
        write_decimal(out, self.latitude.as_deref());
        out.extend_from_slice(b",\"longitude\":");
        write_decimal(out, self.longitude.as_deref());
        out.extend_from_slice(b",\"party_preference\":");
        write_opt_str(out, self.party_preference.as_deref());
        out.extend_from_slice(b",\"responded_status\":");
        write_opt_str(out, self.responded_status.as_deref());
        out.extend_from_slice(if self.voted {
            b",\"voted\":true"
        } else {
            b",\"voted\":false"
        });
        out.extend_from_slice(b",\"modifieddate\":");
        write_i64(out, self.modifieddate);
        out.push(b'}');
    }

    /// Decodes a `SELECT *` row of `citizen`, finding columns by name. Accepts both the text
    /// protocol (every value as bytes) and the binary protocol (typed values).
    pub fn from_row(row: Row) -> Result<Citizen, VoterError> {
        let mut idx = [usize::MAX; CITIZEN_COLUMNS.len()];
        {
            let columns = row.columns_ref();
            // Fast path: `SELECT *` yields schema order, so usually no search is needed.
            let in_order = columns.len() == CITIZEN_COLUMNS.len()
                && columns
                    .iter()
                    .zip(CITIZEN_COLUMNS)
                    .all(|(c, name)| c.name_ref() == name.as_bytes());
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
        }
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
            age: match take(10)? {
                Value::NULL => None,
                v => {
                    Some(
                        i32::try_from(value_i64("age", v)?).map_err(|e| VoterError::BadValue {
                            column: "age",
                            reason: e.to_string(),
                        })?,
                    )
                }
            },
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

/// Writes `[row,row,...]`, the body of an unpaged citizens answer.
pub fn write_json_array(rows: &[Citizen], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        row.write_json(out);
    }
    out.push(b']');
}

/// Writes the paged envelope `{"citizens":[...],"page":P,"size":N,"hasMore":b,"count":n}`.
pub fn write_page_json(rows: &[Citizen], page: u64, size: u64, has_more: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"citizens\":");
    write_json_array(rows, out);
    out.extend_from_slice(b",\"page\":");
    out.extend_from_slice(page.to_string().as_bytes());
    out.extend_from_slice(b",\"size\":");
    out.extend_from_slice(size.to_string().as_bytes());
    out.extend_from_slice(if has_more {
        b",\"hasMore\":true,\"count\":"
    } else {
        b",\"hasMore\":false,\"count\":"
    });
    out.extend_from_slice(rows.len().to_string().as_bytes());
    out.push(b'}');
}

/// The read filter of the contract, already validated by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CitizenFilter<'a> {
    pub state: &'a str,
    pub assembly_no: &'a str,
    /// `None` = `wardNo=-1` (all wards).
    pub ward_no: Option<&'a str>,
    /// `None` = `boothNos=-1` (all booths).
    pub booth_nos: Option<&'a [String]>,
    /// `None` = `date=-1` (full download).
    pub modified_after_ms: Option<i64>,
    /// `(limit, offset)`.
    pub limit_offset: Option<(u64, u64)>,
}

/// The WHERE clause of a filter's row set (state, assembly, ward, booths), without date or
/// limit: shared by the reference query and the origin's dashboard counts.
pub fn scope_where(f: &CitizenFilter<'_>, sql: &mut String, params: &mut Vec<Value>) {
    sql.push_str(" WHERE state = ? AND assembly_no = ?");
    params.push(f.state.into());
    params.push(f.assembly_no.into());
    if let Some(ward) = f.ward_no {
        sql.push_str(" AND ward_no = ?");
        params.push(ward.into());
    }
    if let Some(booths) = f.booth_nos {
        if booths.is_empty() {
            // `IN ()` is a syntax error; an empty set matches nothing, which this says.
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(" AND booth_no IN (");
            for (i, b) in booths.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
                params.push(b.as_str().into());
            }
            sql.push(')');
        }
    }
}

/// The contract's reference query, parameterised: SQL text plus its parameters in order.
pub fn citizen_query(f: &CitizenFilter) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT * FROM citizen");
    let mut params: Vec<Value> = Vec::new();
    scope_where(f, &mut sql, &mut params);
    if let Some(after) = f.modified_after_ms {
        sql.push_str(" AND modifieddate > ?");
        params.push(datetime_value(after));
    }
    sql.push_str(" ORDER BY srno + 0, id");
    if let Some((limit, offset)) = f.limit_offset {
        sql.push_str(" LIMIT ? OFFSET ?");
        params.push(Value::UInt(limit));
        params.push(Value::UInt(offset));
    }
    (sql, params)
}

/// Smallest and largest instants a DATETIME(3) can hold, in epoch ms: bounds that parameters
/// are clamped to, because a value outside them would be an error instead of a comparison.
pub const DATETIME_MIN_MS: i64 = -30_610_224_000_000; // 1000-01-01 00:00:00.000
pub const DATETIME_MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31 23:59:59.999

/// Epoch ms (UTC) as a DATETIME parameter, clamped to the DATETIME range so that comparisons
/// keep their meaning for absurd inputs (nothing is later than the maximum).
pub fn datetime_value(ms: i64) -> Value {
    let ms = ms.clamp(DATETIME_MIN_MS, DATETIME_MAX_MS);
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    // The clamp keeps every field within its type, so these conversions cannot truncate.
    Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (secs / 3600) as u8,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
        ((rem % 1000) * 1000) as u32,
    )
}

/// Epoch ms (UTC) as `YYYY-MM-DD HH:MM:SS.mmm`, the DATETIME(3) text form.
pub fn format_datetime_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rem % 1000
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// MySQL's `str + 0`: the string's longest numeric prefix as a DOUBLE (leading whitespace
/// skipped, optional sign, digits, fraction, exponent), 0 when there is none. The memory
/// store sorts by this so that its order is the reference query's `ORDER BY srno + 0`.
pub fn mysql_numeric_prefix(s: &str) -> f64 {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
        i += 1;
    }
    let start = i;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut mantissa_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        let frac_start = i + 1;
        let mut j = frac_start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if mantissa_digits > 0 || j > frac_start {
            mantissa_digits += j - frac_start;
            i = j;
        }
    }
    if mantissa_digits == 0 {
        return 0.0;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    s[start..i].parse::<f64>().unwrap_or(0.0)
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    // itoa by hand: this runs for every number of every row, and `to_string` allocates.
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    loop {
        pos -= 1;
        buf[pos] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[pos..]);
}

fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes a JSON string the way Jackson's default escaping does: `"` and `\` escaped,
/// control characters as `\b \t \n \f \r` or `\u00XX` (uppercase hex), everything else,
/// `/` and non-ASCII included, as raw UTF-8.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

fn write_decimal(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) if is_json_number(s) => out.extend_from_slice(s.as_bytes()),
        // Not reachable with MySQL's DECIMAL text; a string keeps the output valid JSON if a
        // hand-built row ever carries something else.
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Whether `s` matches the JSON number grammar.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
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

fn bad(column: &'static str, v: &Value) -> VoterError {
    VoterError::BadValue {
        column,
        reason: format!("cannot decode {}", Shown(v)),
    }
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

fn value_string(column: &'static str, v: Value) -> Result<String, VoterError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b).map_err(|e| VoterError::BadValue {
            column,
            reason: e.to_string(),
        }),
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
            let s = String::from_utf8(b).map_err(|e| VoterError::BadValue {
                column,
                reason: e.to_string(),
            })?;
            if is_json_number(&s) {
                Ok(Some(s))
            } else {
                Err(VoterError::BadValue {
                    column,
                    reason: format!("not a decimal: {s:?}"),
                })
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

fn date_parts_to_ms(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, us: i64) -> i64 {
    (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + us / 1000
}

/// Parses `YYYY-MM-DD HH:MM:SS[.f{1,6}]`, the text protocol's DATETIME form, as UTC.
pub fn parse_datetime_text(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut tp = hms.splitn(3, ':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let sec: i64 = tp.next()?.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut us: i64 = 0;
    for c in frac.bytes().chain(std::iter::repeat(b'0')).take(6) {
        us = us * 10 + i64::from(c - b'0');
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(date_parts_to_ms(y, mo, d, h, mi, sec, us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Citizen {
        Citizen {
            id: 42,
            state: "Karnataka".into(),
            assembly_no: "150".into(),
            ward_no: "7".into(),
            booth_no: "71".into(),
            srno: "12".into(),
            voter_id: "KA/150/000012".into(),
            first_name: Some("Ravi".into()),
            family_name: None,
            gender: Some("M".into()),
            age: Some(34),
            mobile: Some(String::new()),
            address: Some("No. 5, \"Sri Nilaya\"\\ 4th Cross\n\tಬೆಂಗಳೂರು / \u{1}\u{8}\u{c}\r".into()),
            latitude: Some("12.9715987".into()),
            longitude: Some("-0.0000001".into()),
            party_preference: None,
            responded_status: Some("Positive".into()),
            voted: false,
            modifieddate: 1_714_000_000_123,
        }
    }

    #[test]
    fn json_is_byte_exact() {
        let mut out = Vec::new();
        sample().write_json(&mut out);
        let expected = concat!(
            r#"{"id":42,"state":"Karnataka","assembly_no":"150","ward_no":"7","booth_no":"71","srno":"12","#,
            r#""voter_id":"KA/150/000012","first_name":"Ravi","family_name":null,"gender":"M","age":34,"mobile":"","#,
            r#""address":"No. 5, \"Sri Nilaya\"\\ 4th Cross\n\tಬೆಂಗಳೂರು / \u0001\b\f\r","#,
            r#""latitude":12.9715987,"longitude":-0.0000001,"party_preference":null,"responded_status":"Positive","#,
            r#""voted":false,"modifieddate":1714000000123}"#
        );
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        // And it is valid JSON whose values read back as written.
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["address"], sample().address.unwrap().as_str());
        assert_eq!(v["latitude"].to_string(), "12.9715987");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), CITIZEN_COLUMNS.len());
    }

    #[test]
    fn json_nulls_and_extremes() {
        let mut c = sample();
        c.id = i64::MIN;
        c.first_name = None;
        c.gender = None;
        c.age = None;
        c.mobile = None;
        c.address = None;
        c.latitude = None;
        c.longitude = Some("not-a-number".into());
        c.voted = true;
        c.modifieddate = 0;
        let mut out = Vec::new();
        c.write_json(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("{\"id\":-9223372036854775808,"));
        assert!(s.contains("\"first_name\":null,\"family_name\":null,\"gender\":null,\"age\":null,\"mobile\":null,\"address\":null,\"latitude\":null,\"longitude\":\"not-a-number\""));
        assert!(s.ends_with("\"voted\":true,\"modifieddate\":0}"));
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
    }

    #[test]
    fn arrays_and_pages() {
        let mut out = Vec::new();
        write_json_array(&[], &mut out);
        assert_eq!(out, b"[]");
        let rows = vec![sample(), sample()];
        let mut one = Vec::new();
        rows[0].write_json(&mut one);
        let mut out = Vec::new();
        write_json_array(&rows, &mut out);
        let one = String::from_utf8(one).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("[{one},{one}]"));
        let mut out = Vec::new();
        write_page_json(&rows[..1], 3, 1, true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{{\"citizens\":[{one}],\"page\":3,\"size\":1,\"hasMore\":true,\"count\":1}}")
        );
    }

    #[test]
    fn query_text_is_the_reference() {
        let booths = vec!["3".to_string(), "4".to_string()];
        let f = CitizenFilter {
            state: "Karnataka",
            assembly_no: "150",
            ward_no: Some("7"),
            booth_nos: Some(&booths),
            modified_after_ms: Some(1_714_000_000_123),
            limit_offset: Some((1000, 2000)),
        };
        let (sql, params) = citizen_query(&f);
        assert_eq!(
            sql,
            "SELECT * FROM citizen WHERE state = ? AND assembly_no = ? AND ward_no = ? AND booth_no IN (?,?) AND modifieddate > ? ORDER BY srno + 0, id LIMIT ? OFFSET ?"
        );
        assert_eq!(params.len(), 8);
        assert_eq!(params[5], Value::Date(2024, 4, 24, 23, 6, 40, 123_000));
        let f = CitizenFilter {
            ward_no: None,
            booth_nos: None,
            modified_after_ms: None,
            limit_offset: None,
            ..f
        };
        let (sql, params) = citizen_query(&f);
        assert_eq!(
            sql,
            "SELECT * FROM citizen WHERE state = ? AND assembly_no = ? ORDER BY srno + 0, id"
        );
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn datetime_round_trips() {
        for ms in [
            0,
            1,
            999,
            1_714_089_599_999,
            951_782_400_000, // 2000-02-29
            DATETIME_MAX_MS,
            DATETIME_MIN_MS,
            -1,
        ] {
            let text = format_datetime_ms(ms);
            assert_eq!(parse_datetime_text(&text), Some(ms), "{text}");
            if let Value::Date(y, mo, d, h, mi, s, us) = datetime_value(ms) {
                let back = date_parts_to_ms(
                    y.into(),
                    mo.into(),
                    d.into(),
                    h.into(),
                    mi.into(),
                    s.into(),
                    us.into(),
                );
                assert_eq!(back, ms);
            } else {
                panic!("not a date");
            }
        }
        assert_eq!(
            format_datetime_ms(951_782_400_000),
            "2000-02-29 00:00:00.000"
        );
        assert_eq!(
            datetime_value(i64::MAX),
            Value::Date(9999, 12, 31, 23, 59, 59, 999_000)
        );
        assert_eq!(
            parse_datetime_text("2024-04-26 01:02:03"),
            Some(1_714_093_323_000)
        );
        assert_eq!(
            parse_datetime_text("2024-04-26 01:02:03.5"),
            Some(1_714_093_323_500)
        );
        assert_eq!(parse_datetime_text("garbage"), None);
    }

    #[test]
    fn numeric_prefix_like_mysql() {
        assert_eq!(mysql_numeric_prefix("12"), 12.0);
        assert_eq!(mysql_numeric_prefix("  007"), 7.0);
        assert_eq!(mysql_numeric_prefix("12a"), 12.0);
        assert_eq!(mysql_numeric_prefix("abc"), 0.0);
        assert_eq!(mysql_numeric_prefix(""), 0.0);
        assert_eq!(mysql_numeric_prefix("-3.5x"), -3.5);
        assert_eq!(mysql_numeric_prefix("1e3"), 1000.0);
        assert_eq!(mysql_numeric_prefix("1e"), 1.0);
        assert_eq!(mysql_numeric_prefix(".5"), 0.5);
        assert_eq!(mysql_numeric_prefix("."), 0.0);
        let mut v = vec!["10", "9", "100", "1", "2a", "x"];
        v.sort_by(|a, b| mysql_numeric_prefix(a).total_cmp(&mysql_numeric_prefix(b)));
        assert_eq!(v, ["x", "1", "2a", "9", "10", "100"]);
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "12.9715987", "-0.0000001", "1e5", "1E+5", "10"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "NaN", "1 "] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
