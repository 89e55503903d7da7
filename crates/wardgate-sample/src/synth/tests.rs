//! Tests of the synthetic data: determinism, roll shapes, plausible values, id ranges.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::voter::Citizen;

fn roll(wards: u32, voters: u32) -> RollSpec {
    RollSpec::new("Karnataka", "150", wards, voters)
}

/// Voters per booth, in the order the booths first appear.
fn booth_counts(rows: &[Citizen]) -> Vec<(String, u32)> {
    let mut counts: Vec<(String, u32)> = Vec::new();
    for r in rows {
        match counts.last_mut() {
            Some((b, n)) if *b == r.booth_no => *n += 1,
            _ => counts.push((r.booth_no.clone(), 1)),
        }
    }
    counts
}

#[test]
fn deterministic() {
    let a = generate_ward(&roll(4, 500), 3);
    assert_eq!(a, generate_ward(&roll(4, 500), 3));
    assert_ne!(a, generate_ward(&roll(4, 500), 4));
    // Ward content does not depend on how many wards the assembly has.
    let all = generate_assembly(&roll(4, 500));
    assert_eq!(&all[1000..1500], &generate_ward(&roll(9, 500), 3)[..]);
    assert_eq!(master_data(&roll(4, 500)), master_data(&roll(4, 500)));
}

#[test]
fn per_booth_serials_restart_in_every_booth() {
    let spec = roll(2, 2000);
    assert_eq!(spec.serials, Serials::PerBooth);
    let rows = generate_ward(&spec, 2);
    assert_eq!(rows.len(), 2000);
    let first_id = ward_first_id("Karnataka", "150", 2, 2000);
    let mut srno_in_booth: BTreeMap<&str, u32> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.id, first_id + i as i64);
        let n = srno_in_booth.entry(&r.booth_no).or_default();
        *n += 1;
        assert_eq!(r.srno, n.to_string(), "row {i}");
    }
    // Booths are contiguous in roll order, numbered from the ward's first booth, unequal.
    let counts = booth_counts(&rows);
    assert_eq!(counts.len(), srno_in_booth.len());
    assert!((10..=12).contains(&counts.len()));
    assert_eq!(
        counts[0].0,
        first_booth_no("Karnataka", "150", 2).to_string()
    );
    let sizes: Vec<u32> = counts.iter().map(|c| c.1).collect();
    let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(max * 10 > min * 13, "booth sizes too even: {sizes:?}");
    // The reference order interleaves the booths: its first rows are every booth's srno 1.
    let mut by_query = rows.clone();
    by_query.sort_by_key(|r| (r.srno.parse::<u32>().unwrap(), r.id));
    let heads: BTreeSet<&str> = by_query[..counts.len()]
        .iter()
        .map(|r| r.booth_no.as_str())
        .collect();
    assert_eq!(heads.len(), counts.len());
    // Master data agrees with the rows.
    let md = master_data(&spec);
    let booths = &md.assemblies[0].1[1].booths;
    let listed: Vec<(String, u32)> = booths
        .iter()
        .map(|b| (b.booth_no.clone(), b.last_srno as u32))
        .collect();
    assert_eq!(listed, counts);
    assert!(booths.iter().all(|b| b.first_srno == 1));
}

#[test]
fn ward_wide_serials_differ_only_in_srno() {
    let per_booth = generate_ward(&roll(3, 1500), 3);
    let spec = roll(3, 1500).with_serials(Serials::WardWide);
    let ward_wide = generate_ward(&spec, 3);
    assert_eq!(per_booth.len(), ward_wide.len());
    for (i, (a, b)) in per_booth.iter().zip(&ward_wide).enumerate() {
        assert_eq!(b.srno, (i + 1).to_string());
        let b_as_per_booth = Citizen {
            srno: a.srno.clone(),
            ..b.clone()
        };
        assert_eq!(a, &b_as_per_booth);
    }
    // Each booth is a contiguous srno range, and master data says which.
    let booths = &master_data(&spec).assemblies[0].1[2].booths;
    let mut next = 1;
    for (b, (no, n)) in booths.iter().zip(booth_counts(&ward_wide)) {
        assert_eq!((b.booth_no.as_str(), b.first_srno), (no.as_str(), next));
        next += i64::from(n);
        assert_eq!(b.last_srno, next - 1);
    }
    assert_eq!(next, 1501);
}

#[test]
fn tiny_wards_still_sum_up() {
    for voters in [1, 5, 11, 13] {
        let rows = generate_ward(&roll(1, voters), 1);
        assert_eq!(rows.len(), voters as usize);
        let booths = &master_data(&roll(1, voters)).assemblies[0].1[0].booths;
        let total: i64 = booths.iter().map(|b| b.last_srno - b.first_srno + 1).sum();
        assert_eq!(total, i64::from(voters));
    }
}

/// Shares of rows with a property, in percent.
fn share(rows: &[Citizen], f: impl Fn(&Citizen) -> bool) -> f64 {
    rows.iter().filter(|r| f(r)).count() as f64 * 100.0 / rows.len() as f64
}

#[test]
fn plausible_values_and_nulls() {
    let rows = generate_assembly(&roll(3, 4000));
    for r in &rows {
        assert!(r.age.is_none_or(|a| (18..=97).contains(&a)));
        assert!(matches!(r.gender.as_deref(), Some("M" | "F" | "T")));
        if let Some(m) = r.mobile.as_deref().filter(|m| !m.is_empty()) {
            let digits: String = m.chars().filter(char::is_ascii_digit).collect();
            assert!(m.len() <= 15, "{m}");
            assert!(digits.len() == 10 || digits.starts_with("91"), "{m}");
        }
        if let Some(lat) = &r.latitude {
            assert!(lat.starts_with("12.") || lat.starts_with("13.") || lat == "0.0000000");
            assert_eq!(lat.split('.').nth(1).unwrap().len(), 7);
        }
        assert_eq!(r.latitude.is_none(), r.longitude.is_none());
        assert!(r.modifieddate < FIXED_EPOCH_MS);
        assert!(r.modifieddate >= FIXED_EPOCH_MS - MODIFIED_SPREAD_MS);
    }
    let within =
        |p: f64, lo: f64, hi: f64| assert!((lo..=hi).contains(&p), "{p} not in {lo}..{hi}");
    within(share(&rows, |r| r.mobile.is_none()), 4.0, 12.0);
    within(share(&rows, |r| r.mobile.as_deref() == Some("")), 3.0, 11.0);
    within(
        share(&rows, |r| {
            r.mobile.as_deref().is_some_and(|m| m.starts_with("+91"))
        }),
        1.0,
        7.0,
    );
    within(share(&rows, |r| r.address.is_none()), 0.5, 4.0);
    within(share(&rows, |r| r.latitude.is_none()), 0.5, 4.0);
    within(share(&rows, |r| r.age.is_none()), 0.05, 1.0);
    within(share(&rows, |r| r.first_name.is_none()), 0.01, 0.6);
    within(share(&rows, |r| r.family_name.is_none()), 1.0, 7.0);
    within(
        share(&rows, |r| {
            !r.first_name.as_deref().unwrap_or("a").is_ascii()
        }),
        1.5,
        6.0,
    );
    within(share(&rows, |r| r.party_preference.is_none()), 45.0, 65.0);
    within(share(&rows, |r| r.voted), 2.0, 8.0);
    // Households: neighbours on the roll often share an address.
    let shared = rows
        .windows(2)
        .filter(|w| w[0].address.is_some() && w[0].address == w[1].address)
        .count();
    within(shared as f64 * 100.0 / rows.len() as f64, 50.0, 80.0);
}

#[test]
fn rolls_validate_their_ranges() {
    assert!(RollSpec::default().validate().is_ok());
    assert_eq!(RollSpec::default().serials, Serials::PerBooth);
    for bad in [
        RollSpec::new("K1", "150", 1, 1),
        RollSpec::new("Karnataka", "1500000", 1, 1),
        RollSpec::new("Karnataka", "150", 0, 1),
        RollSpec::new("Karnataka", "150", 1000, 1),
        RollSpec::new("Karnataka", "150", 1, 0),
        RollSpec::new("Karnataka", "150", 999, 20_000),
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn ids_stay_js_safe() {
    let id = ward_first_id("Some Unknown State", "999999", 999, 10_000);
    assert!(id < (1i64 << 53));
    assert_eq!(state_info("karnataka").id, 29);
    assert_eq!(decimal7(-5), "-0.0000005");
    assert_eq!(decimal7(129_715_987), "12.9715987");
}
