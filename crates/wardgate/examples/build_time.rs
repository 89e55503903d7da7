//! How long one cold ward build takes (parse + chunk + compress), on a generated 10,000-row
//! ward as the backend writes it: `bench/build-time.sh` runs it in release mode.
//!
//! `cargo run --release -p wardgate --example build_time [ROWS] [RUNS]`

use std::time::Instant;

use wardgate::params::WardKey;
use wardgate::snapshot::Snapshot;
use wardgate::time::{EpochMs, UtcOffset};
use wardgate_sample::synth::generate_ward;
use wardgate_sample::voter::{write_json_array, DateForm};
use wardgate_sample::RollSpec;

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(21);
    let spec = RollSpec::new("Karnataka", "150", 1, rows);
    let mut body = Vec::new();
    write_json_array(&generate_ward(&spec, 1), DateForm::EpochMs, &mut body);
    let key = WardKey {
        state: "karnataka".into(),
        assembly: "150".into(),
        ward: "1".into(),
    };
    let mut times = Vec::with_capacity(runs);
    let mut gz = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let snap = Snapshot::from_backend_json(key.clone(), &body, EpochMs::now(), UtcOffset(0))
            .expect("the generated ward builds");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        gz = snap.gzip_bytes();
    }
    times.sort_by(f64::total_cmp);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{{\"rows\":{rows},\"json_bytes\":{},\"gzip_bytes\":{gz},\"runs\":{runs},\"cores\":{cores},\"median_ms\":{:.2},\"min_ms\":{:.2},\"max_ms\":{:.2}}}",
        body.len(),
        times[runs / 2],
        times[0],
        times[runs - 1]
    );
}
