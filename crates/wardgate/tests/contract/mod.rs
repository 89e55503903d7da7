//! The contract's parameter formats, written independently of src/params.rs: the oracle both
//! the property tests (tests/params_props.rs) and the fuzz target (fuzz/) check wardgate against.
#![allow(dead_code)]

/// `state`: 1 to 64 ASCII letters, spaces, `.` and `-`.
pub fn is_state(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b' ' || b == b'.' || b == b'-')
}

pub fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// `wardNo`, booth numbers and master-data ids: digits; the schema column is VARCHAR(16).
pub fn is_number(s: &str) -> bool {
    is_digits(s, 1, 16)
}

/// Bytes that `form_urlencoded` can produce when encoding the contract's values: letters and
/// digits, `.` and `-` (as is), space (as `+`), `,` (as `%2C`), plus the `=` and `&`
/// separators. No `'`, `;`, `%27`, NUL or raw space.
pub fn upstream_bytes_ok(q: &str) -> bool {
    let b = q.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'+' | b'=' | b'&' => i += 1,
            b'%' if b.get(i + 1..i + 3) == Some(b"2C".as_slice()) => i += 3,
            _ => return false,
        }
    }
    true
}

/// The parameter policies every property and fuzz case is checked under: the defaults, each
/// switch, and page caps at their extremes.
pub fn policies() -> Vec<wardgate::config::CitizensConfig> {
    use wardgate::config::CitizensConfig;
    let d = CitizensConfig::default();
    vec![
        d.clone(),
        CitizensConfig {
            require_pagination: true,
            ..d.clone()
        },
        CitizensConfig {
            allow_assembly_wide: false,
            ..d.clone()
        },
        CitizensConfig {
            require_pagination: true,
            allow_assembly_wide: true,
            max_page_size: 7,
            ..d.clone()
        },
        CitizensConfig {
            max_page_size: 1,
            ..d.clone()
        },
        CitizensConfig {
            max_page_size: 100_000,
            ..d
        },
    ]
}
