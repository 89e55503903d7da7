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
    fn json_number_grammar() {
        for ok in ["0", "-0", "12.9715987", "-0.0000001", "1e5", "1E+5", "10"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "NaN", "1 "] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
