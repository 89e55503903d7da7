//! `runtime.sendfile`: cached answers sealed and sent by `sendfile`, byte for byte the answers
//! copied by default. A test binary of its own: the send path is process-wide (one server per
//! process in production), and `cargo test` runs a binary's tests as threads of one process.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_sendfile_on_a_hit_goes_by_sendfile_from_its_sealed_copy() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(10_000)
        .start()
        .await;
    let c = client();
    let json = fetch(&c, origin.citizens(&ward_query(1))).await;
    let gate = Gate::builder(&origin.url())
        .config(|c| c.runtime.sendfile = true)
        .start()
        .await;
    let get = || {
        c.get(gate.citizens(&ward_query(1)))
            .header("accept-encoding", "gzip")
            .send()
    };
    let wire = get().await.unwrap().bytes().await.unwrap();
    assert_eq!(gunzip(&wire), json);
    let sent_before = gate.metric("wardgate_sendfile_bytes").await;
    let hit = get().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), wire);
    let by_sendfile = gate.metric("wardgate_sendfile_bytes").await - sent_before;
    assert!(
        by_sendfile >= wire.len() as f64,
        "{by_sendfile} bytes by sendfile for a {}-byte hit",
        wire.len()
    );
    assert!(gate.metric("wardgate_sealed_answers").await >= 1.0);
    gate.stop().await;
}
