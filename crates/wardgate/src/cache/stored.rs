//! What Redis holds of wards, read without their copies: build time, size and TTL.
//!
//! For the status page's coverage (`admin::coverage`): three O(1) commands per ward (`GETRANGE`
//! of the header, `STRLEN`, `PTTL`), pipelined in batches, instead of the ~0.6 MB `GET` of each
//! copy that serving does.

use std::time::Duration;

use redis::Value;

use super::l2::{L2, OP_TIMEOUT};
use crate::params::WardKey;
use crate::snapshot::{self, FORMAT_VERSION};
use crate::time::EpochMs;

/// Wards asked about in one pipeline: a few hundred small answers, far from Redis's limits.
const BATCH: usize = 256;

/// A ward's copy in Redis, as its key and header tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    /// When the copy's rows were read from the source.
    pub built_at: EpochMs,
    /// Bytes the copy takes in Redis (its value).
    pub bytes: u64,
    /// How long Redis keeps it still (its TTL); `None` for a key without one.
    pub expires_in: Option<Duration>,
}

impl L2 {
    /// Per ward (in order), the copy Redis holds in this version's format, `None` where it
    /// holds none (or one it cannot read); `None` as a whole when Redis failed.
    pub async fn stored(&self, wards: &[WardKey]) -> Option<Vec<Option<Stored>>> {
        let c = self.conn()?;
        let mut out = Vec::with_capacity(wards.len());
        for batch in wards.chunks(BATCH) {
            let mut cmds = Vec::with_capacity(batch.len() * 3);
            for w in batch {
                let key = self.ward_key(w, FORMAT_VERSION);
                let mut head = redis::cmd("GETRANGE");
                head.arg(&key).arg(0).arg(snapshot::HEAD_BYTES - 1);
                let mut len = redis::cmd("STRLEN");
                len.arg(&key);
                let mut ttl = redis::cmd("PTTL");
                ttl.arg(&key);
                cmds.extend([head, len, ttl]);
            }
            let answers: Vec<Value> = match tokio::time::timeout(OP_TIMEOUT * 4, c.each(cmds)).await
            {
                Ok(Ok(v)) if v.len() == batch.len() * 3 => v,
                Ok(Err(e)) => {
                    self.failed("GETRANGE/STRLEN/PTTL", e);
                    return None;
                }
                Ok(Ok(_)) => return None,
                Err(_) => {
                    self.failed("GETRANGE/STRLEN/PTTL", "timed out");
                    return None;
                }
            };
            out.extend(answers.chunks(3).map(stored_of));
        }
        Some(out)
    }
}

/// One ward's three answers: header bytes, length, TTL in ms (-2: no key, -1: no TTL).
fn stored_of(answers: &[Value]) -> Option<Stored> {
    let [head, len, ttl] = answers else {
        return None;
    };
    let head: Vec<u8> = redis::from_redis_value(head).ok()?;
    let built_at = snapshot::built_at_of(&head)?;
    let bytes: u64 = redis::from_redis_value(len).ok()?;
    let ttl: i64 = redis::from_redis_value(ttl).ok()?;
    if ttl == -2 {
        return None; // expired between the commands
    }
    Some(Stored {
        built_at,
        bytes,
        expires_in: u64::try_from(ttl).ok().map(Duration::from_millis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_a_copy_or_none() {
        let mut head = b"WGSN".to_vec();
        head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&1_700_000_000_000i64.to_le_bytes());
        let got = stored_of(&[
            Value::BulkString(head.clone()),
            Value::Int(600_000),
            Value::Int(90_000),
        ]);
        assert_eq!(
            got,
            Some(Stored {
                built_at: EpochMs(1_700_000_000_000),
                bytes: 600_000,
                expires_in: Some(Duration::from_millis(90_000)),
            })
        );
        let no_ttl = stored_of(&[Value::BulkString(head), Value::Int(9), Value::Int(-1)]);
        assert_eq!(no_ttl.map(|s| s.expires_in), Some(None));
        // An absent key: GETRANGE answers "", STRLEN 0, PTTL -2.
        let absent = [Value::BulkString(vec![]), Value::Int(0), Value::Int(-2)];
        assert_eq!(stored_of(&absent), None);
        let other = [
            Value::BulkString(b"garbage-bytes!".to_vec()),
            Value::Int(14),
            Value::Int(5),
        ];
        assert_eq!(stored_of(&other), None);
    }
}
