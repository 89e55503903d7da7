//! Budgets the fleet shares through Redis: rate-limit tokens spent, charged to one GCRA
//! schedule per bucket in batches, and the distinct wards each client reads in a day (admitted up to its budget).
//!
//! **Invariant:** one Redis call per batch of buckets or per ward new to a client, never one
//! per request; every call is bounded by `FLEET_TIMEOUT`, and a caller that gets `None`
//! falls back to its own instance's budget (Redis is never a reason to refuse or to wait long).

use std::time::Duration;

use super::l2::L2;

/// Bound on one fleet-budget call a request waits for: past it the instance decides alone.
pub const FLEET_TIMEOUT: Duration = Duration::from_millis(50);

/// Bound on one batch of charges, which no request waits for beyond `FLEET_TIMEOUT`: a batch
/// carries every client an instance served since the last, thousands at election-day rates.
pub const CHARGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Charges the tokens spent of each GCRA bucket `KEYS[i]`: emission interval `ARGV[3i-2]` ns
/// (the schedule is kept in µs, fractions included), burst `ARGV[3i-1]` tokens, tokens spent
/// `ARGV[3i]`. Spent tokens are always charged (they were served); the answer per bucket is
/// how long, in µs, until its next token is due (0: one is due now). The clock is Redis's own
/// (`TIME`), so instances whose clocks differ share one schedule.
const CHARGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2]) / 1000
  local burst = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + tonumber(ARGV[3 * i]) * interval
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
  local wait = tat + interval - now - burst * interval
  if wait > 0 then out[i] = math.ceil(wait) else out[i] = 0 end
end
return out
"#;

/// Buckets charged in one script call on a single node.
const CHARGE_BATCH: usize = 512;

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

/// Tokens an instance spent of one fleet-wide bucket, to charge to its schedule.
#[derive(Clone, Copy)]
pub struct Spent<'a> {
    /// The bucket's name (under the `rl` kind of the fleet's keys).
    pub bucket: &'a (dyn std::fmt::Display + Sync),
    /// Time between two tokens: 1 / rate.
    pub interval: Duration,
    /// Tokens the bucket holds at most.
    pub burst: u32,
    pub tokens: u32,
}

impl L2 {
    /// Charges every bucket of `spent` and answers, in order, how long until each has a token
    /// due (zero: due now). `None` when Redis did not answer in time; then all, part or none
    /// may have been charged.
    pub async fn charge(&self, spent: &[Spent<'_>]) -> Option<Vec<Duration>> {
        let c = self.conn()?;
        // A script may only touch keys of one slot on a Cluster: there, one call per bucket
        // (concurrently); on a node, one call per batch.
        let per_call = if c.is_cluster() { 1 } else { CHARGE_BATCH };
        let cmds = spent
            .chunks(per_call)
            .map(|chunk| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(CHARGE).arg(chunk.len());
                for s in chunk {
                    cmd.arg(self.fleet_key("rl", s.bucket));
                }
                for s in chunk {
                    let interval_ns = s.interval.as_nanos().clamp(1, u128::from(u64::MAX)) as u64;
                    cmd.arg(interval_ns).arg(s.burst).arg(s.tokens);
                }
                cmd
            })
            .collect();
        let r: Result<Result<Vec<Vec<i64>>, _>, _> =
            tokio::time::timeout(CHARGE_TIMEOUT, c.each(cmds)).await;
        match r {
            Ok(Ok(waits)) => Some(
                waits
                    .into_iter()
                    .flatten()
                    .map(|us| Duration::from_micros(us.max(0) as u64))
                    .collect(),
            ),
            Ok(Err(e)) => {
                self.failed("EVAL charge", e);
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
            .arg(self.fleet_key("wards", format!("{day}:{client}")))
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
