//! A build's pattern: one thread allocates its buffers, another frees them, the first
//! releases; the pages must leave the resident set, and what is still allocated must stay.

#[global_allocator]
static ALLOC: wardgate_alloc::Allocator = wardgate_alloc::Allocator;

const BLOCK: usize = 256 << 10;
const BLOCKS: usize = 256; // 64 MiB

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

#[test]
fn memory_freed_by_another_thread_leaves_the_resident_set_once_released() {
    let kept: Vec<u64> = (0..1_000_000).collect();
    let before = rss_bytes();
    let buffers: Vec<Vec<u8>> = (0..BLOCKS).map(|i| vec![i as u8 | 1; BLOCK]).collect();
    let holding = rss_bytes();
    assert!(
        holding >= before + BLOCKS * BLOCK * 3 / 4,
        "the buffers were not made resident: {before} -> {holding} bytes"
    );
    // Freed on another thread, as the compression pool frees a build's JSON.
    std::thread::spawn(move || drop(buffers))
        .join()
        .expect("the freeing thread");
    wardgate_alloc::release_freed();
    let after = rss_bytes();
    assert!(
        after < before + BLOCKS * BLOCK / 4,
        "released memory is still resident: {before} before, {holding} holding, {after} after"
    );
    assert_eq!(kept.iter().sum::<u64>(), 1_000_000 * 999_999 / 2);
}
