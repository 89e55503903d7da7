//! Pass-through streams: a 50 MB body goes both ways without being buffered. A test binary of
//! its own, because it measures the memory of its process: other tests building wards in the
//! same process would move the figure.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pass_through_streams_a_50mb_body_both_ways() {
    use futures_util::StreamExt;
    let origin = Origin::builder().wards(1).voters_per_ward(10).start().await;
    let gate = Gate::builder(&origin.url()).start().await;
    const MB: usize = 1 << 20;
    let chunks = futures_util::stream::iter(
        (0..50).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; MB]))),
    );
    let rss_before = rss_kib();
    let r = client()
        .post(gate.url("/api/uploads/echo"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "PASS");
    let mut stream = r.bytes_stream();
    let mut total = 0usize;
    let mut peak = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for (j, b) in chunk.iter().enumerate() {
            assert_eq!(*b, (((total + j) / MB) % 251) as u8);
        }
        total += chunk.len();
        peak = peak.max(rss_kib().saturating_sub(rss_before));
    }
    assert_eq!(total, 50 * MB);
    // Client, proxy and origin share this process: buffering the body anywhere would add 50+ MB.
    assert!(
        peak < 30 * 1024,
        "memory grew by {peak} KiB while streaming 50 MB"
    );
    gate.stop().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
