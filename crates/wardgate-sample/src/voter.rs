//! The `citizen` row and its byte-exact JSON form, as the legacy backend's Jackson writes it.

use crate::datetime::format_iso_jackson;
use crate::numeric::{is_json_number, java_bigdecimal_text};

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

/// How `modifieddate` is written: epoch ms (Jackson with `WRITE_DATES_AS_TIMESTAMPS` on, as
/// the application configures it) or ISO-8601 text (Spring Boot 2.0's default, which turned it
/// off): `"2026-11-24T10:15:59.297+0000"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DateForm {
    #[default]
    #[value(name = "epoch")]
    EpochMs,
    #[value(name = "iso")]
    Iso,
}

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

impl Citizen {
    /// Appends the row as the backend's Jackson writes it: a compact JSON object, keys in
    /// schema order, DECIMAL text verbatim as a number, NULL as `null`, `modifieddate` as
    /// epoch ms.
    pub fn write_json(&self, out: &mut Vec<u8>, dates: DateForm) {
        out.extend_from_slice(b"{\"id\":");
        write_i64(out, self.id);
        write_text_fields(
            out,
            &[
                (b",\"state\":", Some(&self.state)),
                (b",\"assembly_no\":", Some(&self.assembly_no)),
                (b",\"ward_no\":", Some(&self.ward_no)),
                (b",\"booth_no\":", Some(&self.booth_no)),
                (b",\"srno\":", Some(&self.srno)),
                (b",\"voter_id\":", Some(&self.voter_id)),
                (b",\"first_name\":", self.first_name.as_deref()),
                (b",\"family_name\":", self.family_name.as_deref()),
                (b",\"gender\":", self.gender.as_deref()),
            ],
        );
        out.extend_from_slice(b",\"age\":");
        match self.age {
            Some(age) => write_i64(out, i64::from(age)),
            None => out.extend_from_slice(b"null"),
        }
        write_text_fields(
            out,
            &[
                (b",\"mobile\":", self.mobile.as_deref()),
                (b",\"address\":", self.address.as_deref()),
            ],
        );
        out.extend_from_slice(b",\"latitude\":");
        write_decimal(out, self.latitude.as_deref());
        out.extend_from_slice(b",\"longitude\":");
        write_decimal(out, self.longitude.as_deref());
        write_text_fields(
            out,
            &[
                (b",\"party_preference\":", self.party_preference.as_deref()),
                (b",\"responded_status\":", self.responded_status.as_deref()),
            ],
        );
        out.extend_from_slice(if self.voted {
            b",\"voted\":true"
        } else {
            b",\"voted\":false"
        });
        out.extend_from_slice(b",\"modifieddate\":");
        match dates {
            DateForm::EpochMs => write_i64(out, self.modifieddate),
            DateForm::Iso => {
                out.push(b'"');
                out.extend_from_slice(format_iso_jackson(self.modifieddate).as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
}

/// Writes `,"key":value` for each text column in turn (the key bytes include the comma).
fn write_text_fields(out: &mut Vec<u8>, fields: &[(&[u8], Option<&str>)]) {
    for (key, value) in fields {
        out.extend_from_slice(key);
        write_opt_str(out, *value);
    }
}

/// Writes `[row,row,...]`, the body of an unpaged citizens answer.
pub fn write_json_array(rows: &[Citizen], dates: DateForm, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        row.write_json(out, dates);
    }
    out.push(b']');
}

/// Writes the paged envelope as the backend's `HashMap` serialises it:
/// `{"size":N,"hasMore":b,"page":P,"citizens":[...]}`, where `hasMore` is `rows == size` (so
/// the last full page says `true`, and the app asks once more).
pub fn write_page_json(rows: &[Citizen], page: (u64, u64), dates: DateForm, out: &mut Vec<u8>) {
    let (page, size) = page;
    out.extend_from_slice(b"{\"size\":");
    out.extend_from_slice(size.to_string().as_bytes());
    out.extend_from_slice(if rows.len() as u64 == size {
        b",\"hasMore\":true,\"page\":"
    } else {
        b",\"hasMore\":false,\"page\":"
    });
    out.extend_from_slice(page.to_string().as_bytes());
    out.extend_from_slice(b",\"citizens\":");
    write_json_array(rows, dates, out);
    out.push(b'}');
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

/// A DECIMAL as Jackson writes the `BigDecimal` the JDBC driver reads it into (`0E-7` for a
/// zero of scale 7).
fn write_decimal(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) if is_json_number(s) => match java_bigdecimal_text(s) {
            Some(java) => out.extend_from_slice(java.as_bytes()),
            None => out.extend_from_slice(s.as_bytes()),
        },
        // Not reachable with MySQL's DECIMAL text; a string keeps the output valid JSON if a
        // hand-built row ever carries something else.
        Some(s) => write_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row with every kind of value the writer escapes or formats.
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
        sample().write_json(&mut out, DateForm::EpochMs);
        let mut iso = Vec::new();
        sample().write_json(&mut iso, DateForm::Iso);
        let v: serde_json::Value = serde_json::from_slice(&iso).unwrap();
        let d = v["modifieddate"].as_str().unwrap();
        assert!(
            d.len() == 28 && d.as_bytes()[10] == b'T' && d.ends_with("+0000"),
            "{d}"
        );
        let expected = concat!(
            r#"{"id":42,"state":"Karnataka","assembly_no":"150","ward_no":"7","booth_no":"71","srno":"12","#,
            r#""voter_id":"KA/150/000012","first_name":"Ravi","family_name":null,"gender":"M","age":34,"mobile":"","#,
            r#""address":"No. 5, \"Sri Nilaya\"\\ 4th Cross\n\tಬೆಂಗಳೂರು / \u0001\b\f\r","#,
            r#""latitude":12.9715987,"longitude":-1E-7,"party_preference":null,"responded_status":"Positive","#,
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
        c.write_json(&mut out, DateForm::EpochMs);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("{\"id\":-9223372036854775808,"));
        assert!(s.contains("\"first_name\":null,\"family_name\":null,\"gender\":null,\"age\":null,\"mobile\":null,\"address\":null,\"latitude\":null,\"longitude\":\"not-a-number\""));
        assert!(s.ends_with("\"voted\":true,\"modifieddate\":0}"));
        serde_json::from_str::<serde_json::Value>(&s).unwrap();
    }

    #[test]
    fn arrays_and_pages() {
        let mut out = Vec::new();
        write_json_array(&[], DateForm::EpochMs, &mut out);
        assert_eq!(out, b"[]");
        let rows = vec![sample(), sample()];
        let mut one = Vec::new();
        rows[0].write_json(&mut one, DateForm::EpochMs);
        let mut out = Vec::new();
        write_json_array(&rows, DateForm::EpochMs, &mut out);
        let one = String::from_utf8(one).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("[{one},{one}]"));
        let mut out = Vec::new();
        write_page_json(&rows[..1], (3, 1), DateForm::EpochMs, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{{\"size\":1,\"hasMore\":true,\"page\":3,\"citizens\":[{one}]}}")
        );
        let mut out = Vec::new();
        write_page_json(&rows[..1], (0, 2), DateForm::EpochMs, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("{\"size\":2,\"hasMore\":false,"));
    }
}
