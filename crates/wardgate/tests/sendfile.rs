//! `runtime.sendfile`: cached answers sent by `sendfile` from sealed copies (`on`), copied
//! (`off`), or each way in turn and then the cheaper (`auto`), byte for byte the same answer
//! every way. A test binary of its own, and one test walking the three settings in turn: the
//! send path is process-wide (one server per process in production), and `cargo test` runs a
//! binary's tests as threads of one process.

mod support;

use std::time::Instant;

use support::*;
use wardgate::config::SendfileMode;

/// What `auto`'s last judging trials of large sends (a whole ward's answer) measured copying
/// (0 until they have judged).
const COPY_COST: &str = "wardgate_send_trial_cpu_ns_per_kib{size=\"large\",way=\"copy\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_send_path_sends_the_same_bytes_the_way_it_names() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(10_000)
        .start()
        .await;
    let c = client();
    let json = fetch(&c, origin.citizens(&ward_query(1))).await;
    let mut wire = None;
    for mode in [SendfileMode::On, SendfileMode::Off, SendfileMode::Auto] {
        let gate = Gate::builder(&origin.url())
            .config(|c| {
                no_rate_limits(c);
                c.runtime.sendfile = mode;
            })
            .start()
            .await;
        let get = || async {
            let r = get_gzip(&c, gate.citizens(&ward_query(1))).await;
            let status = r.headers()["x-cache"].to_str().unwrap().to_string();
            (status, r.bytes().await.unwrap())
        };
        let (_, first) = get().await;
        assert_eq!(gunzip(&first), json, "{mode:?}");
        let wire = wire.get_or_insert(first);
        let before = gate.metric("wardgate_sendfile_bytes").await;
        // `auto`: until its trials (each way twice) have judged. A round in which a trial sent
        // too little (the gate's start, a busy machine) judges nothing and another follows.
        let until = Instant::now() + 20 * wardgate_sealed::TRIAL;
        let mut hits = 0;
        let mut judged = mode != SendfileMode::Auto;
        while hits < 3 || (!judged && Instant::now() < until) {
            let (status, body) = get().await;
            assert_eq!(status, "HIT", "{mode:?}");
            assert_eq!(&body, wire, "{mode:?}: a hit differs from the first answer");
            hits += 1;
            if !judged && hits % 50 == 0 {
                let cost = gate.metric(COPY_COST).await;
                judged = cost > 0.0;
            }
        }
        let by_sendfile = gate.metric("wardgate_sendfile_bytes").await - before;
        let all = (hits * wire.len()) as f64;
        match mode {
            SendfileMode::On => {
                assert!(
                    by_sendfile >= all,
                    "on: {by_sendfile} of {all} bytes by sendfile"
                );
                assert!(gate.metric("wardgate_sealed_answers").await >= 1.0);
            }
            SendfileMode::Off => {
                assert_eq!(by_sendfile, 0.0, "off: nothing by sendfile");
                assert_eq!(gate.metric("wardgate_sealed_answers").await, 0.0);
            }
            SendfileMode::Auto => {
                // Both ways were tried: some hits went by sendfile, not all of them.
                assert!(
                    by_sendfile > 0.0 && by_sendfile < all,
                    "auto: {by_sendfile} of {all} bytes by sendfile"
                );
                let m = gate.metrics().await;
                for size in ["small", "large"] {
                    let chosen = format!("\nwardgate_sendfile_chosen{{size=\"{size}\"}} ");
                    assert!(m.contains(&chosen), "{m}");
                }
                // The large sends' trials judged (both ways sent megabytes of whole wards), and
                // say what they measured; the small sends' (none were sent) judged nothing.
                for way in ["copy", "sendfile"] {
                    let cost = |size| {
                        format!(
                            "wardgate_send_trial_cpu_ns_per_kib{{size=\"{size}\",way=\"{way}\"}}"
                        )
                    };
                    let large = gate.metric(&cost("large")).await;
                    assert!(large > 0.0, "{way}: {large} ns/KiB\n{m}");
                    assert!(!m.contains(&cost("small")), "small sends judged\n{m}");
                }
            }
        }
        gate.stop().await;
    }
}
