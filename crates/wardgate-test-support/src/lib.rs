//! Test support for wardgate: the real servers and binaries its tests talk to.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

/// The `wardgate-sample` binary of this build profile, next to the test binary's `deps/`
/// folder; built first when a test was started without it (`cargo test -p wardgate`).
pub fn sample_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let bin = profile_dir.join("wardgate-sample");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.args([
            "build",
            "--quiet",
            "-p",
            "wardgate-sample",
            "--bin",
            "wardgate-sample",
        ]);
        if release {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building wardgate-sample failed");
    }
    bin
}
