//! Tests of the synthetic data: determinism, plausible values, id ranges.

use super::*;

#[test]
fn deterministic() {
    let a = generate_ward("Karnataka", "150", 3, 500, 1);
    let b = generate_ward("Karnataka", "150", 3, 500, 1);
    assert_eq!(a, b);
    let c = generate_ward("Karnataka", "150", 4, 500, 1);
    assert_ne!(a, c);
    // Ward content does not depend on how many wards the assembly has.
    let all = generate_assembly("Karnataka", "150", 4, 500);
    assert_eq!(
        &all[1000..1500],
        &generate_ward(
            "Karnataka",
            "150",
            3,
            500,
            ward_first_id("Karnataka", "150", 3, 500)
        )[..]
    );
    assert_eq!(
        master_data("Karnataka", "150", 4, 500),
        master_data("Karnataka", "150", 4, 500)
    );
}

#[test]
fn plausible_rows() {
    let rows = generate_ward("Karnataka", "150", 2, 2000, 100);
    assert_eq!(rows.len(), 2000);
    let mut booths: Vec<u32> = Vec::new();
    let mut empty_or_null_mobile = 0;
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.id, 100 + i as i64);
        assert_eq!(r.srno, (i + 1).to_string());
        assert!((18..=95).contains(&r.age.unwrap()));
        assert!(matches!(r.gender.as_deref(), Some("M" | "F")));
        match r.mobile.as_deref() {
            None | Some("") => empty_or_null_mobile += 1,
            Some(m) => {
                assert_eq!(m.len(), 10);
                assert!(matches!(m.as_bytes()[0], b'6'..=b'9'));
            }
        }
        if let Some(lat) = &r.latitude {
            assert!(lat.starts_with("12.") || lat.starts_with("13."), "{lat}");
            assert_eq!(lat.split('.').nth(1).unwrap().len(), 7);
        }
        assert!(
            r.modifieddate < FIXED_EPOCH_MS
                && r.modifieddate >= FIXED_EPOCH_MS - MODIFIED_SPREAD_MS
        );
        let b: u32 = r.booth_no.parse().unwrap();
        if booths.last() != Some(&b) {
            // Booths are contiguous in srno order and increase.
            assert!(!booths.contains(&b));
            booths.push(b);
        }
    }
    assert!((10..=12).contains(&booths.len()));
    assert_eq!(booths[0], first_booth_no("Karnataka", "150", 2));
    assert!(
        (150..=450).contains(&empty_or_null_mobile),
        "{empty_or_null_mobile}"
    );
    let md = master_data("Karnataka", "150", 2, 2000);
    let ward2 = &md.assemblies[0].1[1];
    assert_eq!(ward2.booths.len(), booths.len());
    assert_eq!(ward2.booths[0].booth_no, booths[0].to_string());
    assert_eq!(ward2.booths.last().unwrap().last_srno, 2000);
}

#[test]
fn ids_stay_js_safe() {
    let id = ward_first_id("Some Unknown State", "999999", 999, 10_000);
    assert!(id < (1i64 << 53));
    assert_eq!(state_info("karnataka").id, 29);
    assert_eq!(decimal7(-5), "-0.0000005");
    assert_eq!(decimal7(129_715_987), "12.9715987");
}
