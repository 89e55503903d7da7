//! The two binaries' command sets: nothing in the product binary writes to a database, and the
//! sample backend's `seed` never takes the proxy's replica URL from the environment.

mod support;

use std::process::Command;

use support::*;

#[test]
fn the_product_binary_has_no_database_writing_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_wardgate"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check-config", "warm", "demo"] {
        assert!(help.contains(cmd), "{cmd} missing from:\n{help}");
    }
    for cmd in ["seed", "sample-origin"] {
        assert!(!help.contains(cmd), "{cmd} listed in:\n{help}");
        let r = Command::new(env!("CARGO_BIN_EXE_wardgate"))
            .arg(cmd)
            .output()
            .unwrap();
        assert_eq!(r.status.code(), Some(2), "`wardgate {cmd}` is refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_takes_its_database_from_its_own_variable_only() {
    let db = unique("wg_cmd_seed");
    let url = format!("{}/{db}", mysql_root_url());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(wardgate_test_support::sample_bin())
            .args(["seed", "--wards", "2", "--voters-per-ward", "30"])
            // What an ops box holds for `wardgate warm`: the replica. Nothing listens on port 1,
            // so a seed that took it would fail instead of succeeding below.
            .env("WARDGATE_MYSQL_URL", "mysql://root@127.0.0.1:1/replica")
            .env("WARDGATE_SAMPLE_MYSQL_URL", &url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("seeded 60 rows"));
    drop_database(&db).await;
}
