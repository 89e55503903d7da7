//! Number grammars: MySQL's `str + 0` (the sort key of `srno`) and JSON's (DECIMAL text as a number).

/// MySQL's `str + 0`: the string's longest numeric prefix as a DOUBLE (leading whitespace
/// skipped, optional sign, digits, fraction, exponent), 0 when there is none. The memory
/// store sorts by this so that its order is the reference query's `ORDER BY srno + 0`.
pub fn mysql_numeric_prefix(s: &str) -> f64 {
    let b = s.as_bytes();
    let start = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .count();
    let int_start = skip_one_of(b, start, b"+-");
    let mut i = digits_end(b, int_start);
    let mut mantissa_digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        let frac_end = digits_end(b, i + 1);
        // A lone "." is no number, but "1." and ".5" are.
        if mantissa_digits > 0 || frac_end > i + 1 {
            mantissa_digits += frac_end - (i + 1);
            i = frac_end;
        }
    }
    if mantissa_digits == 0 {
        return 0.0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        // An exponent without digits ("1e") is not part of the prefix.
        let exp_start = skip_one_of(b, i + 1, b"+-");
        let exp_end = digits_end(b, exp_start);
        if exp_end > exp_start {
            i = exp_end;
        }
    }
    s[start..i].parse::<f64>().unwrap_or(0.0)
}

/// Whether `s` matches the JSON number grammar.
pub fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let int_start = skip_one_of(b, 0, b"-");
    let mut i = match b.get(int_start) {
        Some(b'0') => int_start + 1,
        Some(b'1'..=b'9') => digits_end(b, int_start),
        _ => return false,
    };
    if b.get(i) == Some(&b'.') {
        match some_digits_end(b, i + 1) {
            Some(end) => i = end,
            None => return false,
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        match some_digits_end(b, skip_one_of(b, i + 1, b"+-")) {
            Some(end) => i = end,
            None => return false,
        }
    }
    i == b.len()
}

/// A DECIMAL's text as Jackson writes the `java.math.BigDecimal` Connector/J reads it into:
/// `BigDecimal.toString()`, which switches to scientific notation when the adjusted exponent
/// is below -6 (`0.0000000` → `0E-7`, `-0.0000001` → `-1E-7`). `None` if `s` is not plain
/// decimal text.
pub fn java_bigdecimal_text(s: &str) -> Option<String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unscaled: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let coeff = if unscaled.is_empty() { "0" } else { &unscaled };
    let adjusted = coeff.len() as i64 - 1 - frac.len() as i64;
    if frac.is_empty() || adjusted >= -6 {
        return Some(s.to_string());
    }
    let sign = if neg && coeff != "0" { "-" } else { "" };
    let mantissa = match coeff.len() {
        1 => coeff.to_string(),
        _ => format!("{}.{}", &coeff[..1], &coeff[1..]),
    };
    Some(format!("{sign}{mantissa}E{adjusted}"))
}

/// End of the run of ASCII digits that starts at `i` (`i` itself when there is none).
fn digits_end(b: &[u8], i: usize) -> usize {
    i + b.get(i..).map_or(0, |rest| {
        rest.iter().take_while(|c| c.is_ascii_digit()).count()
    })
}

/// Like [`digits_end`], but `None` unless at least one digit is there.
fn some_digits_end(b: &[u8], i: usize) -> Option<usize> {
    Some(digits_end(b, i)).filter(|&end| end > i)
}

/// Past `b[i]` when it is one of `set` (an optional sign), else `i`.
fn skip_one_of(b: &[u8], i: usize, set: &[u8]) -> usize {
    i + usize::from(b.get(i).is_some_and(|c| set.contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn decimals_as_java_writes_a_bigdecimal() {
        for (text, java) in [
            ("0.0000000", "0E-7"),
            ("-0.0000001", "-1E-7"),
            ("0.0000010", "0.0000010"),
            ("0.0000001", "1E-7"),
            ("0.0000012", "0.0000012"),
            ("12.9715987", "12.9715987"),
            ("-77.5000000", "-77.5000000"),
            ("0.00000012", "1.2E-7"),
            ("150", "150"),
        ] {
            assert_eq!(java_bigdecimal_text(text).as_deref(), Some(java), "{text}");
        }
        assert_eq!(java_bigdecimal_text("1e5"), None);
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
