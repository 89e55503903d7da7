//! Black-box tests of the limits a hostile client cannot escape (issue 18): device ids it makes
//! up, more keys than the limiter holds, and forwarding headers it writes itself. Each is
//! driven over HTTP the way an attacker would; and the limiter's memory per million keys.

mod support;

use std::time::Duration;

use cap::Cap;
use support::*;
use wardgate::config::{ClientIpHeader, Config, LimitClass, Quota};

// Counts the heap, for the memory per million keys (nextest runs each test in its own process).
#[global_allocator]
static ALLOC: Cap<std::alloc::System> = Cap::new(std::alloc::System, usize::MAX);

const PATH: &str = "/open/volunteer/parties";

/// The settings these tests are about, spelled out rather than taken from the defaults.
fn limits(c: &mut Config, quota: Quota) {
    c.rate_limit.master = quota;
    c.rate_limit.trusted_proxies = vec!["127.0.0.1/32".into()];
    c.rate_limit.key_header = Some("X-Device-Id".into());
    c.rate_limit.address_ceiling = 4.0;
    c.rate_limit.client_ip_header = ClientIpHeader::XForwardedFor;
}

/// `n` master-data reads from one address, each with headers from `headers(i)`; how many were
/// served (200) and the last refusal's body.
async fn burst(
    gate: &Gate,
    n: usize,
    headers: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> (usize, Option<serde_json::Value>) {
    let c = client();
    let (mut served, mut refused) = (0, None);
    for i in 0..n {
        let mut req = c.get(gate.url(PATH));
        for (k, v) in headers(i) {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        match r.status().as_u16() {
            200 => served += 1,
            429 => refused = Some(r.json().await.unwrap()),
            s => panic!("unexpected status {s}"),
        }
    }
    (served, refused)
}

/// A device id no other request uses.
fn random_device(i: usize) -> String {
    format!("{}-{i}", unique("dev"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_device_ids_from_one_address_are_held_to_its_ceiling() {
    let origin = Origin::builder().start().await;
    // A device may make 5 at once and 1/s; the address 4x that: 20 at once, 4/s.
    let quota = Quota {
        rate: 1.0,
        burst: 5,
    };
    let gate = Gate::builder(&origin.url())
        .config(|c| limits(c, quota))
        .start()
        .await;
    let from_one_address = |i: usize| {
        vec![
            ("x-forwarded-for", "203.0.113.10".to_string()),
            ("x-device-id", random_device(i)),
        ]
    };
    let (first, _) = burst(&gate, 100, from_one_address).await;
    assert!(
        (20..=30).contains(&first),
        "the first burst gets the address's ceiling (20 and a few refilled), got {first}"
    );
    let (second, refused) = burst(&gate, 100, from_one_address).await;
    assert!(
        second <= 10,
        "right after, new device ids buy nothing: {second} of 100 served"
    );
    let refused = refused.expect("refusals");
    assert_eq!(refused["limited_by"], "address_ceiling", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("address ceiling"),
        "{refused}"
    );

    // One device is held to its own quota first, and says so.
    let (served, refused) = burst(&gate, 10, |_| {
        vec![
            ("x-forwarded-for", "203.0.113.11".to_string()),
            ("x-device-id", "one-phone".to_string()),
        ]
    })
    .await;
    assert!((5..=6).contains(&served), "{served}");
    assert_eq!(refused.unwrap()["limited_by"], "device_quota");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_keys_than_the_cap_evict_the_idlest_and_never_reset_the_limits() {
    let origin = Origin::builder().start().await;
    // One request in 100 s: a key that made one keeps its state for the whole test.
    let quota = Quota {
        rate: 0.01,
        burst: 2,
    };
    let gate = Gate::builder(&origin.url())
        .config(|c| {
            limits(c, quota);
            c.rate_limit.max_keys = 1024;
        })
        .start()
        .await;
    let from = |ip: &'static str| move |_| vec![("x-forwarded-for", ip.to_string())];
    let (served, _) = burst(&gate, 3, from("198.51.100.7")).await;
    assert_eq!(served, 2, "the victim of the flood is limited");

    // Twice the cap of distinct addresses, one request each.
    let c = client();
    for i in 0..2048u32 {
        let ip = format!("100.64.{}.{}", i / 256, i % 256);
        let r = c
            .get(gate.url(PATH))
            .header("x-forwarded-for", ip)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "each new address has its budget");
    }
    // Past a sweep (every 5 s): the limiter's state was never thrown away.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let (served, _) = burst(&gate, 2, from("198.51.100.7")).await;
    assert_eq!(served, 0, "the limited client is still limited");
    let (served, _) = burst(&gate, 3, from("100.64.7.255")).await;
    assert_eq!(
        served, 1,
        "a flooding address still has only its own budget"
    );

    let evicted = gate.metric("wardgate_limiter_evictions_total").await;
    assert!(evicted >= 1024.0, "evictions are counted: {evicted}");
    let keys = gate.metric("wardgate_limiter_keys").await;
    assert!(keys > 0.0 && keys <= 4.0 * 1024.0, "keys held: {keys}");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forwarded_header_from_the_client_does_not_change_its_address() {
    let origin = Origin::builder().start().await;
    let quota = Quota {
        rate: 1.0,
        burst: 5,
    };
    // Without a device header the address's own quota binds (the installed apps today).
    let gate = Gate::builder(&origin.url())
        .config(|c| limits(c, quota))
        .start()
        .await;
    // The test client plays the load balancer (127.0.0.1, trusted), which sets only
    // X-Forwarded-For; the client behind it adds a Forwarded header of its choosing.
    let spoofing = |i: usize| {
        vec![
            ("x-forwarded-for", "203.0.113.20".to_string()),
            ("forwarded", format!("for=192.0.2.{}", i % 250 + 1)),
        ]
    };
    let (served, refused) = burst(&gate, 40, spoofing).await;
    assert!(
        (5..=7).contains(&served),
        "40 requests past a 5-request limit: {served} served"
    );
    assert_eq!(refused.unwrap()["limited_by"], "address_quota");
    let (served, _) = burst(&gate, 1, |_| {
        vec![("x-forwarded-for", "203.0.113.21".to_string())]
    })
    .await;
    assert_eq!(served, 1, "the address comes from X-Forwarded-For");
    gate.stop().await;
}

/// Not a behaviour test: measures the limiter's heap per million keys and prints it (run with
/// `--no-capture` to see it), and fails if it grows past a budget.
#[test]
fn memory_per_million_keys() {
    let metrics = wardgate::metrics::Metrics::new();
    let mut cfg = Config::default();
    cfg.rate_limit.max_keys = 4_000_000;
    cfg.rate_limit.max_devices_per_address = 1_000;
    let before = ALLOC.allocated();
    let limiter = wardgate::limit::Limiter::new(&cfg.rate_limit, &metrics);
    let addr = |i: u32| std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x6440_0000 + i));
    for i in 0..1_000_000u32 {
        let who = wardgate::limit::ClientIdentity::new(addr(i), None);
        assert!(limiter.check(LimitClass::Downloads, &who).is_ok());
    }
    let addresses = ALLOC.allocated() - before;
    // 1,000 addresses of 1,000 devices each: 1,001,000 keys.
    for i in 0..1_000_000u32 {
        let device = wardgate::limit::DeviceId::of(format!("phone-{i}").as_bytes());
        let who = wardgate::limit::ClientIdentity::new(addr(i % 1000), Some(device));
        assert!(limiter.check(LimitClass::Master, &who).is_ok());
    }
    let devices = ALLOC.allocated() - before - addresses;
    assert_eq!(limiter.keys(), 2_001_000);
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "limiter memory per million keys: {:.1} MB addresses only, {:.1} MB devices ({} and {} bytes a key)",
        mb(addresses),
        mb(devices),
        addresses / 1_000_000,
        devices / 1_001_000
    );
    assert!(addresses < 100_000_000 && devices < 100_000_000);
}
