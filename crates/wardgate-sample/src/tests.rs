//! End-to-end tests of the origin: HTTP routes over the memory store, and MariaDB vs memory byte equality.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;

use crate::memory::MemoryStore;
use crate::seed::{seed, seed_with, SeedArgs, SeedOptions};
use crate::server::{serve, OriginOptions};
use crate::store::{CitizenUpdate, Store};
use crate::synth::{RollSpec, Serials};
use crate::{mysql, synth};

const STATE: &str = "Karnataka";

async fn start(store: Store) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, store, OriginOptions::default()));
    (addr, task)
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let r = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().await.unwrap().to_vec())
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(format!("http://{addr}{path}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get_json(client: &reqwest::Client, addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(client, addr, path).await;
    assert_eq!(status, 200, "{path}");
    serde_json::from_slice(&body).unwrap()
}

fn citizens_path(ward: &str, booths: &str, date: i64, page: Option<(u64, u64)>) -> String {
    let mut p = format!("/open/volunteer/citizens?state={STATE}&assemblyNo=150&wardNo={ward}&date={date}&boothNos={booths}");
    if let Some((page, size)) = page {
        p.push_str(&format!("&page={page}&size={size}"));
    }
    p
}

/// Every route once over a 3 x 400 memory store, then the counters those requests left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_over_memory() {
    let store = Store::Memory(Arc::new(MemoryStore::generate(&RollSpec::new(
        STATE, "150", 3, 400,
    ))));
    let (addr, task) = start(store.clone()).await;
    let client = reqwest::Client::new();
    citizens_reads_and_writes(&client, addr).await;
    citizens_garbage(&client, addr).await;
    master_routes(&client, addr).await;
    csv_echo_and_login(&client, addr).await;

    // Counters: the stats route itself is not counted.
    let v = get_json(&client, addr, "/__origin/stats").await;
    assert_eq!(v["citizens_reads"], 5);
    assert_eq!(v["citizens_writes"], 1);
    assert!(v["full_reads"].as_u64() >= Some(1), "{v}");
    assert!(v["citizens_rows"].as_u64() >= Some(400), "{v}");
    assert!(
        v["citizens_bytes"].as_u64() > v["citizens_rows"].as_u64(),
        "{v}"
    );
    assert_eq!(v["master"], 8);
    assert_eq!(v["requests"], 22);
    let r = post(&client, addr, "/__origin/reset-stats", "").await;
    assert_eq!(r.status(), 200);
    let (_, body) = get(&client, addr, "/__origin/stats").await;
    assert_eq!(
        body,
        br#"{"requests":0,"citizens_reads":0,"citizens_writes":0,"citizens_rows":0,"citizens_bytes":0,"full_reads":0,"master":0,"preflights":0,"max_inflight":0,"recent":[]}"#
    );
    task.abort();
}

/// A full ward, its pages, and a POST whose answer shows its own update (4 reads, 1 write).
async fn citizens_reads_and_writes(client: &reqwest::Client, addr: SocketAddr) {
    let (status, body) = get(client, addr, &citizens_path("2", "-1", -1, None)).await;
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.len(), 400);
    assert!(!body.contains(&b' ') || rows.iter().any(|r| r.to_string().contains(' ')));
    // Paged: the backend's envelope (no `count`), and pages concatenate to the full answer.
    let mut joined = Vec::new();
    for page in 0..3 {
        let path = citizens_path("2", "-1", -1, Some((page, 150)));
        let v = get_json(client, addr, &path).await;
        assert_eq!(v["hasMore"], page < 2);
        assert_eq!(
            v["citizens"].as_array().unwrap().len(),
            if page < 2 { 150 } else { 100 }
        );
        assert_eq!(v["page"], page);
        assert_eq!(v["size"], 150);
        assert!(v.get("count").is_none());
        joined.extend(v["citizens"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(joined, rows);

    // A POST with updates answers the read after applying them.
    let id = rows[10]["id"].as_i64().unwrap();
    let before = crate::now_ms();
    let path = citizens_path("2", "-1", before - 1, None);
    let body = format!(r#"[{{"id":{id},"voted":1,"responded_status":"Positive"}}]"#);
    let r = post(client, addr, &path, body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    let changed: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["id"], id);
    assert_eq!(changed[0]["voted"], true);
    assert!(changed[0]["modifieddate"].as_i64().unwrap() >= before);
}

/// Garbage is rejected with a JSON error and never counted as a read.
async fn citizens_garbage(client: &reqwest::Client, addr: SocketAddr) {
    for bad in [
        "/open/volunteer/citizens?state=Karnataka'&assemblyNo=150&wardNo=2&date=-1&boothNos=-1",
        "/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo=2&date=-1&boothNos=1;2",
        "/open/volunteer/citizens?state=Karnataka&assemblyNo=150&wardNo=2&date=-1",
    ] {
        let (status, body) = get(client, addr, bad).await;
        assert_eq!(status, 400, "{bad}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string());
    }
    let r = post(
        client,
        addr,
        &citizens_path("2", "-1", -1, None),
        "{not json",
    )
    .await;
    assert_eq!(r.status(), 400);
}

/// Master data and the dashboard (8 counted), and what unknown ids and paths answer.
async fn master_routes(client: &reqwest::Client, addr: SocketAddr) {
    let v = get_json(client, addr, "/open/volunteer/states").await;
    assert_eq!(v["states"][0]["id"], 29);
    let ac = synth::assembly_id(STATE, "150");
    let v = get_json(
        client,
        addr,
        &format!("/open/volunteer/wardsAndBooths/{ac}"),
    )
    .await;
    assert_eq!(v["wards"].as_array().unwrap().len(), 3);
    for (path, expected) in [
        ("/open/volunteer/wardsAndBooths/12345", 404),
        ("/open/volunteer/assemblyConstituencys/1", 404),
        ("/open/volunteer/assemblyConstituencys/29", 200),
        ("/open/volunteer/assemblyConstituencys/x", 400),
        ("/open/volunteer/parties", 200),
        ("/open/volunteer/applicationSettings/", 200),
    ] {
        assert_eq!(get(client, addr, path).await.0, expected, "{path}");
    }
    let path = "/api/dashboardStats?state=Karnataka&assemblyNo=150&wardNo=2";
    assert_eq!(get_json(client, addr, path).await["total"], 400);
    let (status, body) = get(client, addr, "/nope").await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&v["status"], &v["error"], &v["path"]),
        (&404.into(), &"Not Found".into(), &"/nope".into())
    );
    assert!(v["timestamp"].is_i64(), "epoch ms, as the rows' dates: {v}");
}

/// The pass-through routes: CSV export, echo and login.
async fn csv_echo_and_login(client: &reqwest::Client, addr: SocketAddr) {
    // CSV export: header plus one line per voter of the assembly.
    let path = "/open/getVotersDataCSV?state=Karnataka&assemblyNo=150";
    let (status, body) = get(client, addr, path).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(text.starts_with("id,state,assembly_no,"));
    assert_eq!(text.matches("\r\n").count(), 1 + 1200);

    // Echo streams big bodies back unchanged, with their Content-Type.
    let big: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let r = client
        .post(format!("http://{addr}/api/uploads/echo"))
        .header("content-type", "application/x-test")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-test");
    assert_eq!(r.bytes().await.unwrap().to_vec(), big);

    let login = r#"{"username":"9876543210","password":"secret"}"#;
    let r = post(client, addr, "/api/login", login).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["tokenType"], "Bearer");
}

/// Seeds a throwaway database and checks that MariaDB and the memory store give the same
/// bytes for the same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_and_memory_answer_the_same_bytes() {
    let base = wardgate_test_support::mysql_root_url();
    let admin_opts = mysql_async::Opts::from_url(&base).expect("a MariaDB URL");
    let mut admin = mysql_async::Conn::new(admin_opts)
        .await
        .unwrap_or_else(|e| panic!("no MariaDB at {base}: {e}"));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let db = format!("wg_test_{}_{nanos}", std::process::id());
    let url = format!("{base}/{db}");
    let outcome = tokio::spawn(compare_stores(url)).await;
    admin
        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn compare_stores(url: String) {
    let (pool, memory) = seed_both(&url).await;
    let my = Store::MySql(pool.clone());
    let mem = Store::Memory(memory.clone());
    let (ids, now) = apply_same_updates(&memory, &my, &mem).await;

    let (a_addr, a_task) = start(my).await;
    let (b_addr, b_task) = start(mem).await;
    let client = reqwest::Client::new();
    let paths = compared_paths(&memory, now);
    for path in &paths {
        assert_same_answer(&client, a_addr, b_addr, path).await;
    }
    // Sanity of a few answers' sizes, so "equal" is not "both empty".
    for (path, rows) in [(&paths[0], 700), (&paths[6], 2), (&paths[13], 50)] {
        let (_, body) = get(&client, a_addr, path).await;
        let v: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.len(), rows, "{path}");
    }

    // A real POST through MariaDB: the update is visible in the same answer.
    let body = format!(
        r#"[{{"id":{},"voted":false,"responded_status":null}}]"#,
        ids[1]
    );
    let r = post(&client, a_addr, &citizens_path("2", "-1", now, None), body).await;
    let v: Vec<serde_json::Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["id"], ids[1]);
    assert!(v[0]["responded_status"].is_null());

    a_task.abort();
    b_task.abort();
    pool.disconnect().await.unwrap();
}

/// Seeds assembly 150 (3 x 700, per-booth serials), then 151 (ward-wide), then 150 again into
/// MariaDB, and the same into a memory store.
async fn seed_both(url: &str) -> (mysql_async::Pool, Arc<MemoryStore>) {
    let args = SeedArgs {
        mysql_url: url.to_string(),
        state: STATE.into(),
        assembly: "150".into(),
        wards: 3,
        voters_per_ward: 700,
        // Not a divisor of 700: the last statement of each ward is a shorter one.
        batch: 300,
    };
    let report = seed(&args).await.unwrap();
    assert_eq!(report.rows, 2100);
    // A second assembly (with the other serial shape), then the first again: exercises the
    // DELETE (not TRUNCATE) path and idempotency.
    let other = SeedOptions {
        roll: RollSpec::new(STATE, "151", 1, 50).with_serials(Serials::WardWide),
        ..SeedOptions::from(&args)
    };
    seed_with(&other).await.unwrap();
    seed(&args).await.unwrap();

    let memory = MemoryStore::generate(&RollSpec::new(STATE, "150", 3, 700));
    memory.load_assembly(&other.roll);
    (mysql::pool(url).unwrap(), Arc::new(memory))
}

/// Applies the same updates to both stores with the same clock, so their answers stay
/// comparable; returns the first ids of ward 2 and that clock.
async fn apply_same_updates(memory: &MemoryStore, my: &Store, mem: &Store) -> (Vec<i64>, i64) {
    let ids: Vec<i64> = memory
        .read_citizens(&crate::sql::CitizenFilter {
            state: STATE,
            assembly_no: "150",
            ward_no: Some("2"),
            booth_nos: None,
            modified_after_ms: None,
            limit_offset: None,
        })
        .iter()
        .map(|c| c.id)
        .take(3)
        .collect();
    let updates = vec![
        CitizenUpdate {
            id: ids[0],
            responded_status: Some(Some("Positive".into())),
            voted: Some(true),
            mobile: Some(None),
            party_preference: Some(Some("INC".into())),
        },
        CitizenUpdate {
            id: ids[2],
            mobile: Some(Some("9876543210".into())),
            ..Default::default()
        },
    ];
    let now = synth::FIXED_EPOCH_MS + 12_345;
    assert_eq!(my.apply_updates(&updates, now).await.unwrap(), 2);
    assert_eq!(mem.apply_updates(&updates, now).await.unwrap(), 2);
    (ids, now)
}

/// The requests both stores must answer alike: every filter shape, pages, master data, CSV.
fn compared_paths(memory: &MemoryStore, now: i64) -> Vec<String> {
    let ac = synth::assembly_id(STATE, "150");
    let ward2_booths = memory.wards_and_booths(ac).unwrap().1[1]
        .booths
        .iter()
        .map(|b| b.booth_no.clone())
        .collect::<Vec<_>>();
    let booth_subset = format!("{},{}", ward2_booths[1], ward2_booths[3]);
    let week_ago = synth::FIXED_EPOCH_MS - 7 * 86_400_000;
    vec![
        citizens_path("2", "-1", -1, None),
        citizens_path("-1", "-1", -1, None),
        citizens_path("-1", &booth_subset, -1, None),
        citizens_path("2", &booth_subset, -1, None),
        citizens_path("-1", "-1", synth::FIXED_EPOCH_MS - 3 * 86_400_000, None),
        citizens_path("-1", "-1", synth::FIXED_EPOCH_MS, None),
        citizens_path("2", "-1", now - 1, None),
        citizens_path("2", "-1", now, None),
        citizens_path("-1", "-1", -1, Some((1, 300))),
        citizens_path("-1", "-1", -1, Some((6, 300))),
        citizens_path("-1", "-1", -1, Some((7, 300))),
        citizens_path("3", "-1", week_ago, Some((0, 100))),
        citizens_path("9", "-1", -1, None),
        "/open/volunteer/citizens?state=karnataka&assemblyNo=151&wardNo=1&date=-1&boothNos=-1"
            .into(),
        "/open/volunteer/states".into(),
        "/open/volunteer/assemblyConstituencys/29".into(),
        "/open/volunteer/assemblyConstituencys/30".into(),
        format!("/open/volunteer/wardsAndBooths/{ac}"),
        "/open/volunteer/parties".into(),
        "/open/volunteer/applicationSettings".into(),
        "/api/dashboardStats?state=Karnataka&assemblyNo=150".into(),
        format!(
            "/api/dashboardStats?state=Karnataka&assemblyNo=150&wardNo=2&boothNo={}",
            ward2_booths[0]
        ),
        "/open/getVotersDataCSV?state=Karnataka&assemblyNo=150".into(),
    ]
}

/// The same status and bytes from both origins; on a difference, shows where.
async fn assert_same_answer(client: &reqwest::Client, a: SocketAddr, b: SocketAddr, path: &str) {
    let (sa, a) = get(client, a, path).await;
    let (sb, b) = get(client, b, path).await;
    assert_eq!(sa, sb, "{path}");
    // Errors carry the time they were made (Spring's `timestamp`): the rest must be equal.
    let untimed = |body: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        v.as_object_mut().map(|o| o.remove("timestamp"));
        v
    };
    if (400..500).contains(&sa) {
        assert_eq!(untimed(&a), untimed(&b), "{path}");
    } else if a != b {
        let pos = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        let lo = pos.saturating_sub(200);
        panic!(
            "{path}: bytes differ at {pos}\nmysql:  {}\nmemory: {}",
            String::from_utf8_lossy(&a[lo..(pos + 200).min(a.len())]),
            String::from_utf8_lossy(&b[lo..(pos + 200).min(b.len())])
        );
    }
    // State 30 (Goa) was never seeded: both must say 404, everything else 200.
    let expected = if path.ends_with("/30") { 404 } else { 200 };
    assert_eq!(sa, expected, "{path}: {}", String::from_utf8_lossy(&a));
}
