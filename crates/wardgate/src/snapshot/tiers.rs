//! Delta tiers: a delta's start rounded down to one of a few edges before its ward's newest
//! change, so that phones each sending their own `date` share a handful of answers per ward.
//!
//! **Invariant:** a tier's start is never after the delta's own start, so its answer holds
//! every row the delta asked for (a superset is safe: the app upserts by `id`).

use crate::time::EpochMs;

/// The narrowest tier: the minute before the ward's newest change, ms.
pub const FIRST_TIER_MS: i64 = 60_000;

/// The latest tier edge at or before `since`: `anchor - w`, where `w` runs 1, 2, 3, 4, 6, 8,
/// 12, 16, … minutes (powers of two and their halfway points). A tier is at most 1.5x the
/// window it stands for past the first few minutes, and a day of distinct client dates falls
/// into about twenty tiers, each compressed once per snapshot.
pub fn tier_start(since: i64, anchor: EpochMs) -> i64 {
    for k in 0.. {
        let Some(edge) = width(k).and_then(|w| anchor.0.checked_sub(w)) else {
            break;
        };
        if edge <= 0 {
            break;
        }
        if edge <= since {
            return edge;
        }
    }
    // Further back than any row: the whole ward (no row is stamped before the epoch).
    since.min(0)
}

/// The width of tier `k`: 1, 2, 3, 4, 6, 8, … minutes; `None` past what an i64 holds.
fn width(k: u32) -> Option<i64> {
    let (base, shift) = match k {
        0 => (1, 0),
        k if k % 2 == 1 => (1, k.div_ceil(2)),
        k => (3, k / 2 - 1),
    };
    if shift > 40 {
        return None;
    }
    (FIRST_TIER_MS * base).checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn edges_run_in_powers_of_two_and_their_halves() {
        let anchor = EpochMs(1_700_000_000_000);
        let edges: Vec<i64> = (0..40)
            .map(|m| anchor.0 - tier_start(anchor.0 - m * MIN, anchor))
            .collect();
        let mut seen: Vec<i64> = edges.iter().map(|w| w / MIN).collect();
        seen.dedup();
        assert_eq!(seen, [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]);
    }

    #[test]
    fn a_tier_never_starts_after_its_delta_and_is_at_most_half_again_as_wide() {
        let anchor = EpochMs(1_700_000_000_000);
        let mut tiers = std::collections::BTreeSet::new();
        // A day of distinct client dates, a few seconds apart, and some after the anchor.
        for i in -50..20_000i64 {
            let since = anchor.0 - i * 4_321;
            let t = tier_start(since, anchor);
            assert!(t <= since, "{t} after {since}");
            let (window, tier) = (anchor.0 - since, anchor.0 - t);
            if window > 4 * MIN {
                assert!(tier * 2 <= window * 3, "tier {tier} for window {window}");
            }
            tiers.insert(t);
        }
        assert!(tiers.len() <= 24, "{} tiers for a day", tiers.len());
    }

    #[test]
    fn dates_before_the_epoch_or_far_back_reach_the_whole_ward() {
        let anchor = EpochMs(1_700_000_000_000);
        assert_eq!(tier_start(0, anchor), 0);
        assert_eq!(tier_start(-5, anchor), -5);
        assert_eq!(tier_start(5, anchor), 0);
        assert_eq!(tier_start(anchor.0 + MIN, anchor), anchor.0 - MIN);
        assert_eq!(tier_start(i64::MIN, EpochMs(i64::MAX)), i64::MIN);
    }
}
