//! Instants as the legacy API speaks them: milliseconds since the Unix epoch, UTC.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z: `modifieddate`, `date`, `built_at`, watermarks.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
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

/// A fixed offset from UTC in minutes east (`+05:30` is 330): the zone in which a backend
/// writes datetimes that carry none. India keeps one offset all year, so a fixed one suffices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset(pub i32);

impl UtcOffset {
    /// `Z`, `±HH:MM`, `±HHMM` or `±HH`.
    pub fn parse(s: &str) -> Option<UtcOffset> {
        if s == "Z" {
            return Some(UtcOffset(0));
        }
        let sign = match s.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (hh, mm) = match s.len() {
            3 => (&s[1..3], "00"),
            5 => (&s[1..3], &s[3..5]),
            6 if s.as_bytes()[3] == b':' => (&s[1..3], &s[4..6]),
            _ => return None,
        };
        let num = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| t.parse::<i32>().ok())
                .flatten()
        };
        let (h, m) = (num(hh)?, num(mm)?);
        (h <= 23 && m <= 59).then_some(UtcOffset(sign * (h * 60 + m)))
    }
}

impl EpochMs {
    /// A date as a Spring/Jackson/JDBC backend writes it in a row: epoch ms (as text), or
    /// ISO-8601 / SQL text, `YYYY-MM-DD` then `T` or a space, `HH:MM:SS`, any fraction, then `Z`,
    /// `±HH:MM`, `±HHMM`, `±HH` or nothing (then read in `local`). Sub-millisecond digits are
    /// dropped, as Java's `Date` has none.
    pub fn parse_legacy(s: &str, local: UtcOffset) -> Option<EpochMs> {
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().ok().map(EpochMs);
        }
        let b = s.as_bytes();
        let shape_ok = b.len() >= 19
            && b[4] == b'-'
            && b[7] == b'-'
            && (b[10] == b'T' || b[10] == b' ')
            && b[13] == b':'
            && b[16] == b':';
        if !shape_ok {
            return None;
        }
        let mut rest = &s[19..];
        let mut ms = 0u32;
        if let Some(f) = rest.strip_prefix('.') {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            ms = format!("{:0<3}", &f[..n.min(3)]).parse().ok()?;
            rest = &f[n..];
        }
        let zone = if rest.is_empty() {
            local
        } else {
            UtcOffset::parse(rest)?
        };
        let mut text = s[..19].to_string();
        text.replace_range(10..11, " ");
        let naive = EpochMs::parse_sql_datetime(&text)?;
        Some(EpochMs(
            naive.0 + i64::from(ms) - i64::from(zone.0) * 60_000,
        ))
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

impl EpochMs {
    /// The instant as Jackson writes a `java.util.Date` with `WRITE_DATES_AS_TIMESTAMPS` off
    /// (Spring Boot 2.0's default): `2026-11-24T10:15:59.297+0000`, in UTC.
    pub fn to_jackson_iso(self) -> String {
        let days = self.0.div_euclid(86_400_000);
        let ms = self.0.rem_euclid(86_400_000);
        let (y, mo, d) = civil_from_days(days);
        format!(
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1_000 % 60,
            ms % 1_000
        )
    }
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for EpochMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jackson_iso_round_trips() {
        for ms in [0, 1_764_152_159_297, 951_782_400_000, 4_102_444_799_999, -1] {
            let s = EpochMs(ms).to_jackson_iso();
            assert_eq!(
                EpochMs::parse_legacy(&s, UtcOffset(0)),
                Some(EpochMs(ms)),
                "{s}"
            );
        }
        assert_eq!(
            EpochMs(1_764_152_159_297).to_jackson_iso(),
            "2025-11-26T10:15:59.297+0000"
        );
    }

    #[test]
    fn backend_dates_parse_in_every_form_a_spring_backend_writes() {
        let want = EpochMs(1_764_152_159_297); // 2025-11-26T10:15:59.297Z
        let ist = UtcOffset(330);
        for form in [
            "1764152159297",
            "2025-11-26T10:15:59.297+0000",
            "2025-11-26T10:15:59.297+00:00",
            "2025-11-26T10:15:59.297Z",
            "2025-11-26T15:45:59.297+05:30",
            "2025-11-26T15:45:59.297+0530",
            "2025-11-26T10:15:59.297123Z",
            "2025-11-26 15:45:59.297",
            "2025-11-26T15:45:59.297",
        ] {
            assert_eq!(EpochMs::parse_legacy(form, ist), Some(want), "{form}");
        }
        assert_eq!(
            EpochMs::parse_legacy("2025-11-26T10:15:59Z", ist),
            Some(EpochMs(want.0 - 297))
        );
        assert_eq!(
            EpochMs::parse_legacy("2025-11-26T10:15:59.2-01", ist),
            Some(EpochMs(want.0 - 97 + 3_600_000))
        );
        for bad in [
            "",
            "-",
            "2025-11-26",
            "2025-11-26T10:15:59.",
            "2025-11-26T10:15:59+5",
            "2025-13-26T10:15:59Z",
            "2025-11-26T10:15:59+24:00",
            "yesterday",
        ] {
            assert_eq!(EpochMs::parse_legacy(bad, ist), None, "{bad}");
        }
        assert_eq!(UtcOffset::parse("-03:30"), Some(UtcOffset(-210)));
    }

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
