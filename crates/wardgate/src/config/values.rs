//! The value types settings and flags are written in: durations, byte sizes, secrets, rate quotas.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `500ms`, `30s`, `5m`, `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("`{s}` is not a duration like 30s, 5m or 1d ({e})"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte size written like `512KiB`, `2MiB`, `4GiB`, or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size like 512KiB, 2MiB or 4GiB"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" | "k" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}` (use KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mul)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A value that must never be printed: URLs with passwords, tokens.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl Serialize for Secret {
    /// URLs keep scheme and host so an operator can tell which server is meant; the rest is masked.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let masked = match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
                let host = host.split('/').next().unwrap_or_default();
                format!("{scheme}://***@{host}/***")
            }
            None => "***".to_string(),
        };
        s.serialize_str(&masked)
    }
}

/// Route classes that have their own rate quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitClass {
    Downloads,
    Master,
    Writes,
    Passthrough,
}

impl LimitClass {
    pub const ALL: [LimitClass; 4] = [
        LimitClass::Downloads,
        LimitClass::Master,
        LimitClass::Writes,
        LimitClass::Passthrough,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Downloads => "downloads",
            LimitClass::Master => "master",
            LimitClass::Writes => "writes",
            LimitClass::Passthrough => "passthrough",
        }
    }
}

impl FromStr for LimitClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LimitClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown rate-limit class `{s}` (use downloads, master, writes or passthrough)"
                )
            })
    }
}

/// A per-key quota: sustained rate and burst.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Sustained requests per second per key.
    pub rate: f64,
    /// Requests a key may make at once above the sustained rate.
    pub burst: u32,
}

/// `--rate-limit CLASS=RATE/s[:BURST]`, e.g. `downloads=2/s:10`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitFlag {
    pub class: LimitClass,
    pub quota: Quota,
}

impl FromStr for RateLimitFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("`{s}` is not CLASS=RATE/s[:BURST], e.g. downloads=2/s:10");
        let (class, spec) = s.split_once('=').ok_or_else(usage)?;
        let class: LimitClass = class.trim().parse()?;
        let (rate, burst) = match spec.split_once(':') {
            Some((r, b)) => (r, Some(b)),
            None => (spec, None),
        };
        let rate: f64 = rate
            .trim()
            .strip_suffix("/s")
            .ok_or_else(usage)?
            .parse()
            .map_err(|_| usage())?;
        let burst: u32 = match burst {
            Some(b) => b.trim().parse().map_err(|_| usage())?,
            None => (rate.ceil() as u32).max(1),
        };
        Ok(RateLimitFlag {
            class,
            quota: Quota { rate, burst },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!("30s".parse::<Dur>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
        assert_eq!("1d".parse::<Dur>().unwrap().0, Duration::from_secs(86_400));
        assert!("5 parsecs".parse::<Dur>().is_err());
        assert_eq!("2MiB".parse::<ByteSize>().unwrap().0, 2 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("2 lakh".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
    }

    #[test]
    fn rate_limit_flag_parses() {
        let f: RateLimitFlag = "downloads=2/s:10".parse().unwrap();
        assert_eq!(f.class, LimitClass::Downloads);
        assert_eq!(
            f.quota,
            Quota {
                rate: 2.0,
                burst: 10
            }
        );
        let f: RateLimitFlag = "writes=0.5/s".parse().unwrap();
        assert_eq!(f.quota.burst, 1);
        assert!("uploads=2/s".parse::<RateLimitFlag>().is_err());
        assert!("downloads=2".parse::<RateLimitFlag>().is_err());
    }
}
