//! The reference SQL: the schema's DDL, the session setup, and the contract's read query.

use mysql_async::Value;

use crate::datetime::datetime_value;

/// `CREATE TABLE IF NOT EXISTS name (columns)` with the engine and character set of every
/// table here. utf8mb4 is stated explicitly because names and addresses may be in Kannada
/// script and a server default of latin1 would reject them.
macro_rules! table {
    ($name:literal, $columns:literal) => {
        concat!(
            "CREATE TABLE IF NOT EXISTS ",
            $name,
            " (",
            $columns,
            "\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    };
}

/// DDL of the reference schema: the contract's `citizen` table (same columns and indexes)
/// and the sample origin's small master tables. Each statement is idempotent.
pub const SCHEMA_SQL: &[&str] = &[
    // Columns and keys exactly the contract's.
    table!(
        "citizen",
        "
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
  KEY idx_citizen_booth    (state, assembly_no, booth_no, modifieddate)"
    ),
    table!(
        "state",
        "
  id   BIGINT PRIMARY KEY,
  name VARCHAR(64) NOT NULL,
  code VARCHAR(8)  NOT NULL,
  UNIQUE KEY uk_state_name (name)"
    ),
    table!(
        "assembly_constituency",
        "
  id          BIGINT PRIMARY KEY,
  state_id    BIGINT       NOT NULL,
  assembly_no VARCHAR(16)  NOT NULL,
  name        VARCHAR(100) NOT NULL,
  UNIQUE KEY uk_ac_state_no (state_id, assembly_no)"
    ),
    table!(
        "ward",
        "
  id                       BIGINT PRIMARY KEY,
  assembly_constituency_id BIGINT       NOT NULL,
  ward_no                  VARCHAR(16)  NOT NULL,
  name                     VARCHAR(100) NOT NULL,
  UNIQUE KEY uk_ward_ac_no (assembly_constituency_id, ward_no)"
    ),
    table!(
        "booth",
        "
  id         BIGINT PRIMARY KEY,
  ward_id    BIGINT       NOT NULL,
  booth_no   VARCHAR(16)  NOT NULL,
  name       VARCHAR(255) NOT NULL,
  first_srno INT          NOT NULL,
  last_srno  INT          NOT NULL,
  KEY idx_booth_ward (ward_id)"
    ),
    table!(
        "party",
        "
  id         BIGINT PRIMARY KEY,
  name       VARCHAR(100) NOT NULL,
  short_name VARCHAR(16)  NOT NULL,
  color      VARCHAR(16)  NOT NULL"
    ),
    table!(
        "application_settings",
        "
  setting_key   VARCHAR(64)  PRIMARY KEY,
  setting_value VARCHAR(255) NOT NULL"
    ),
];

/// Statement every origin connection runs (after connect and after each pool reset) so that
/// `NOW(3)` and any implicit conversion agree with the epoch-ms values the code computes.
pub const SESSION_SETUP_SQL: &str = "SET time_zone = '+00:00'";

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
