//! Epoch milliseconds (UTC) to and from DATETIME(3) values and text, without a date library.

use mysql_async::Value;

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

/// Epoch ms (UTC) as Jackson 2.9 writes a `Date` when `WRITE_DATES_AS_TIMESTAMPS` is off,
/// Spring Boot 2.0's default: `YYYY-MM-DDTHH:MM:SS.mmm+0000`.
pub fn format_iso_jackson(ms: i64) -> String {
    let mut s = format_datetime_ms(ms);
    s.replace_range(10..11, "T");
    s.push_str("+0000");
    s
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

pub(crate) fn date_parts_to_ms(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64, us: i64) -> i64 {
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
}
