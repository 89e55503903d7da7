//! Budgets the fleet shares through Redis: rate-limit tokens, leased by each instance in small
//! batches (GCRA in Redis), and the distinct wards each client reads in a day (admitted up to its budget).
//!
//! **Invariant:** one Redis call per lease or per ward new to a client, never one per request
//! once leased; every call is bounded by `FLEET_TIMEOUT`, and a caller that gets `None`
//! falls back to its own instance's budget (Redis is never a reason to refuse or to wait long).

use std::time::Duration;

use super::l2::L2;

/// Bound on one fleet-budget call: past it the instance decides alone.
pub const FLEET_TIMEOUT: Duration = Duration::from_millis(50);

/// Takes up to `ARGV[3]` tokens of the GCRA bucket at `KEYS[1]`: emission interval `ARGV[1]`
/// µs, burst `ARGV[2]` tokens. The clock is Redis's own (`TIME`), so instances whose clocks
/// differ share one schedule. Returns the tokens granted and, when none, the µs until one is.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = burst - math.ceil((tat - now) / interval)
local n = math.min(want, room)
if n <= 0 then
  return {0, tat - now - (burst - 1) * interval}
end
tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {n, 0}
"#;

/// Admits the wards `ARGV[3..]` to the set `KEYS[1]` (kept `ARGV[1]` ms) if, with those it
/// holds already, they number at most `ARGV[2]`: returns {1 admitted | 0 refused, wards held}.
/// A ward already held is always admitted again; refused wards are not added.
const ADMIT_WARDS: &str = r#"
local new = {}
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then table.insert(new, ARGV[i]) end
end
local held = redis.call('SCARD', KEYS[1])
if #new == 0 then return {1, held} end
if held + #new > tonumber(ARGV[2]) then return {0, held} end
for _, w in ipairs(new) do redis.call('SADD', KEYS[1], w) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, held + #new}
"#;

/// What Redis granted of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This many tokens, to spend here.
    Granted(u32),
    /// None due: the next is in this long.
    Refused(Duration),
}

impl L2 {
    /// Leases up to `want` tokens of the fleet-wide bucket `bucket` (`interval` between
    /// tokens, `burst` at most at once). `None` when Redis did not answer in time.
    pub async fn lease(
        &self,
        bucket: &str,
        interval: Duration,
        burst: u32,
        want: u32,
    ) -> Option<Lease> {
        let mut c = self.conn()?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEASE)
            .arg(1)
            .arg(self.fleet_key("rl", bucket))
            .arg(interval.as_micros().max(1) as u64)
            .arg(burst.max(1))
            .arg(want.max(1));
        let r: Result<Result<(i64, i64), _>, _> =
            tokio::time::timeout(FLEET_TIMEOUT, cmd.query_async(&mut c)).await;
        match r {
            Ok(Ok((n, _))) if n > 0 => Some(Lease::Granted(n as u32)),
            Ok(Ok((_, wait))) => Some(Lease::Refused(Duration::from_micros(wait.max(1) as u64))),
            Ok(Err(e)) => {
                self.failed("EVAL lease", e);
                None
            }
            Err(_) => None,
        }
    }

    /// Admits `wards` to what `client` reads on `day` if its distinct wards stay within
    /// `budget`, fleet-wide: (admitted, wards it holds). `None` when Redis did not answer in
    /// time.
    pub async fn admit_wards(
        &self,
        client: &str,
        day: i64,
        budget: u32,
        wards: &[String],
    ) -> Option<(bool, u64)> {
        let mut c = self.conn()?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(ADMIT_WARDS)
            .arg(1)
            .arg(self.fleet_key("wards", &format!("{day}:{client}")))
            .arg(2 * 86_400_000u64)
            .arg(budget);
        for w in wards {
            cmd.arg(w);
        }
        let r: Result<Result<(i64, u64), _>, _> =
            tokio::time::timeout(FLEET_TIMEOUT, cmd.query_async(&mut c)).await;
        match r {
            Ok(Ok((admitted, held))) => Some((admitted == 1, held)),
            Ok(Err(e)) => {
                self.failed("EVAL admit wards", e);
                None
            }
            Err(_) => None,
        }
    }
}
