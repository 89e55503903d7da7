//! Instants as the legacy API speaks them: milliseconds since the Unix epoch, UTC.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z: `modifieddate`, `date`, `built_at`, watermarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EpochMs(pub i64);

/// Days before the first of each month in a common year.
const DAYS_BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

impl EpochMs {
    pub fn now() -> EpochMs {
        EpochMs(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Milliseconds from this instant to now (negative if it lies ahead).
    pub fn age_ms(self) -> i64 {
        EpochMs::now().0.saturating_sub(self.0)
    }

    /// Whether this instant is at most `d` ago.
    pub fn within(self, d: std::time::Duration) -> bool {
        self.age_ms() <= i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// An instant from UTC calendar fields, as a `DATETIME` arrives in the binary protocol;
    /// `None` for a month or day out of range (such as MySQL's zero date).
    pub fn from_utc_parts(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<EpochMs> {
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return None;
        }
        let days = days_since_epoch(i64::from(y), usize::from(mo), i64::from(d));
        let secs = days * 86_400 + i64::from(h) * 3_600 + i64::from(mi) * 60 + i64::from(s);
        Some(EpochMs(secs * 1_000 + i64::from(us) / 1_000))
    }

    /// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]`, a `DATETIME` in the text protocol, as UTC.
    pub fn parse_sql_datetime(s: &str) -> Option<EpochMs> {
        let b = s.as_bytes();
        if b.len() < 19
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b' '
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u16>().ok();
        let frac = match s.get(19..) {
            Some("") => "",
            Some(f)
                if f.len() <= 7
                    && f.starts_with('.')
                    && f[1..].bytes().all(|c| c.is_ascii_digit()) =>
            {
                &f[1..]
            }
            _ => return None,
        };
        let us = format!("{frac:0<6}").parse::<u32>().ok()?;
        let small = |r| num(r).and_then(|v| u8::try_from(v).ok());
        Self::from_utc_parts(
            num(0..4)?,
            small(5..7)?,
            small(8..10)?,
            small(11..13)?,
            small(14..16)?,
            small(17..19)?,
            us,
        )
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_since_epoch(y: i64, month: usize, day: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    // Leap days in the years before `y`, counted from year 0.
    let leaps_before = |y: i64| {
        let p = y - 1;
        p.div_euclid(4) - p.div_euclid(100) + p.div_euclid(400) + 1
    };
    let year_days = (y - 1970) * 365 + leaps_before(y) - leaps_before(1970);
    let month_days = DAYS_BEFORE_MONTH[month - 1] + i64::from(month > 2 && leap(y));
    year_days + month_days + day - 1
}

impl fmt::Display for EpochMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fields_become_epoch_ms() {
        assert_eq!(
            EpochMs::from_utc_parts(1970, 1, 1, 0, 0, 0, 0),
            Some(EpochMs(0))
        );
        assert_eq!(
            EpochMs::from_utc_parts(2000, 3, 1, 0, 0, 0, 0),
            Some(EpochMs(951_868_800_000))
        );
        assert_eq!(
            EpochMs::from_utc_parts(1969, 12, 31, 23, 59, 59, 999_000),
            Some(EpochMs(-1))
        );
        assert_eq!(
            EpochMs::from_utc_parts(2024, 2, 29, 12, 0, 0, 0),
            Some(EpochMs(1_709_208_000_000))
        );
        assert_eq!(EpochMs::from_utc_parts(0, 0, 0, 0, 0, 0, 0), None);
    }

    #[test]
    fn sql_text_datetimes_parse() {
        assert_eq!(
            EpochMs::parse_sql_datetime("2024-04-24 23:06:40"),
            Some(EpochMs(1_714_000_000_000))
        );
        assert_eq!(
            EpochMs::parse_sql_datetime("2024-04-24 23:06:40.5"),
            Some(EpochMs(1_714_000_000_500))
        );
        assert_eq!(EpochMs::parse_sql_datetime("2024-04-24T23:06:40"), None);
        assert_eq!(
            EpochMs::parse_sql_datetime("2024-04-24 23:06:40.1234567"),
            None
        );
    }
}
