//! What a write costs the backend: its cheap read patches the ward's snapshot, so a write-sync
//! costs the rows it changed, never a whole-ward read, and the client still gets the answer the
//! backend would have given it.

mod support;

use serde_json::Value;
use support::*;

const ROWS: u32 = 2_000;

/// The rows of a citizens answer, legacy array or page object.
fn rows_of(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice::<Value>(body).unwrap() {
        Value::Array(rows) => rows,
        Value::Object(mut page) => match page.remove("citizens") {
            Some(Value::Array(rows)) => rows,
            other => panic!("a page without citizens: {other:?}"),
        },
        other => panic!("not a citizens answer: {other}"),
    }
}

async fn post(c: &reqwest::Client, url: String, body: String) -> (String, Vec<Value>) {
    let r = c.post(url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    (cache, rows_of(&r.bytes().await.unwrap()))
}

fn marked(rows: &[Value], id: &Value) -> bool {
    rows.iter().any(|r| r["id"] == *id && r["voted"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_write_syncs_cost_the_backend_their_rows_and_no_whole_ward() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(ROWS)
        .start()
        .await;
    let prefix = unique("writes");
    let gate = Gate::builder(&origin.url())
        .redis_prefix(&prefix)
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let q = ward_query(1);
    let ward = rows_of(&fetch(&c, gate.citizens(&q)).await);
    assert_eq!(ward.len(), ROWS as usize);
    origin.reset_stats().await;

    // As installed apps sync: the full-ward query, one changed row each.
    let mut last = Vec::new();
    for i in 0..20 {
        let id = &ward[i * 97]["id"];
        let (cache, rows) = post(
            &c,
            gate.citizens(&q),
            format!(r#"[{{"id":{id},"voted":true}}]"#),
        )
        .await;
        assert_eq!(cache, "PATCHED", "write {i}");
        assert_eq!(
            rows.len(),
            ROWS as usize,
            "the whole ward, as the backend answers it"
        );
        assert!(
            (0..=i).all(|j| marked(&rows, &ward[j * 97]["id"])),
            "write {i} and those before"
        );
        last = rows;
    }
    let s = origin.stats().await;
    let rows = s["citizens_rows"].as_u64().unwrap();
    eprintln!(
        "20 write-syncs: backend answered {rows} rows, {} bytes, {} full reads",
        s["citizens_bytes"], s["full_reads"]
    );
    assert_eq!(s["citizens_writes"], 20);
    assert_eq!(s["full_reads"], 0, "no whole-ward read: {s}");
    assert!(
        rows <= 20 * u64::from(ROWS) / 10,
        "at most 10% of a ward per write: {rows} rows"
    );
    assert_eq!(
        gate.metric("wardgate_write_patches_total{outcome=\"patched\"}")
            .await,
        20.0
    );

    // What the client got is what the backend holds now, row for row and in its order.
    let truth = rows_of(&fetch(&c, origin.citizens(&q)).await);
    assert_eq!(last, truth);
    gate.stop().await;
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paginated_sync_resending_its_changes_costs_each_page_its_rows() {
    let origin = Origin::builder()
        .wards(2)
        .voters_per_ward(ROWS)
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let ward = rows_of(&fetch(&c, gate.citizens(&ward_query(2))).await);
    origin.reset_stats().await;

    // The paginated app re-sends its pending changes with every page until the sync ends.
    let ids: Vec<&Value> = [5usize, 1_500, 1_999]
        .iter()
        .map(|i| &ward[*i]["id"])
        .collect();
    let body = serde_json::to_string(
        &ids.iter()
            .map(|id| serde_json::json!({"id": id, "voted": true}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let page = |p: u32| format!("{}&page={p}&size=1000", ward_query(2));
    let mut got = Vec::new();
    for p in 0..3 {
        let (cache, rows) = post(&c, gate.citizens(&page(p)), body.clone()).await;
        assert_eq!(cache, "PATCHED");
        got.push(rows);
    }
    assert_eq!(
        got.iter().map(Vec::len).collect::<Vec<_>>(),
        [1000, 1000, 0]
    );
    assert!(marked(&got[0], ids[0]) && marked(&got[1], ids[1]) && marked(&got[1], ids[2]));
    let s = origin.stats().await;
    let rows = s["citizens_rows"].as_u64().unwrap();
    eprintln!(
        "3-page sync: backend answered {rows} rows, {} full reads",
        s["full_reads"]
    );
    assert_eq!(s["full_reads"], 0, "{s}");
    assert!(rows <= 3 * u64::from(ROWS) / 10, "{rows} rows for 3 pages");

    // The patched snapshot is the backend's ward, page for page.
    for p in 0..3 {
        let ours = rows_of(&fetch(&c, gate.citizens(&page(p))).await);
        let theirs = rows_of(&fetch(&c, origin.citizens(&page(p))).await);
        assert_eq!(ours, theirs, "page {p}");
    }
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_to_a_ward_not_held_costs_one_whole_read_and_is_answered() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(600)
        .start()
        .await;
    let gate = Gate::builder(&origin.url())
        .config(no_rate_limits)
        .start()
        .await;
    let c = client();
    let ward = rows_of(&fetch(&c, origin.citizens(&ward_query(1))).await);
    origin.reset_stats().await;
    let id = &ward[42]["id"];
    let r = c
        .post(gate.citizens(&ward_query(1)))
        .body(format!(r#"[{{"id":{id},"voted":true}}]"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS", "built after the write");
    assert!(marked(&rows_of(&r.bytes().await.unwrap()), id));
    let s = origin.stats().await;
    assert_eq!(
        (s["citizens_writes"].as_u64(), s["full_reads"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instance_catches_up_on_a_write_from_the_patch_log_not_the_whole_ward() {
    let redis = RedisServer::start();
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(ROWS)
        .start()
        .await;
    let prefix = unique("patchlog");
    let gate = |p: &str| {
        Gate::builder(&origin.url())
            .redis_url(&redis.url())
            .redis_prefix(p)
            .config(no_rate_limits)
    };
    let (first, second) = (gate(&prefix).start().await, gate(&prefix).start().await);
    let c = client();
    let q = ward_query(1);
    let ward = rows_of(&fetch(&c, first.citizens(&q)).await);
    let whole = fetch(&c, second.citizens(&q)).await.len() as u64; // held by both
    origin.reset_stats().await;
    let before = redis_out(&redis.url()).await;
    for i in 0..5 {
        let id = &ward[i * 300]["id"];
        let (cache, _) = post(
            &c,
            first.citizens(&q),
            format!(r#"[{{"id":{id},"voted":true}}]"#),
        )
        .await;
        assert_eq!(cache, "PATCHED");
        // The second instance hears of the write and serves it at once.
        let t = std::time::Instant::now();
        loop {
            let rows = rows_of(&fetch(&c, second.citizens(&q)).await);
            if marked(&rows, id) {
                break;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "write {i} never reached the second instance"
            );
        }
    }
    let sent = redis_out(&redis.url()).await - before;
    eprintln!("5 writes: Redis sent {sent} bytes (the ward is {whole} bytes of JSON)");
    // A ward's copy is about a sixth of its JSON: five of them would be near `whole`.
    assert!(sent < whole / 4, "{sent} bytes: the log, not 5 wards");
    // Writes that alternate between the instances: each patches the copy the other's write
    // superseded, caught up from the log first.
    for i in 5..9 {
        let id = &ward[i * 200]["id"];
        let gate = if i % 2 == 0 { &first } else { &second };
        let body = format!(r#"[{{"id":{id},"voted":true}}]"#);
        let (cache, rows) = post(&c, gate.citizens(&q), body).await;
        assert_eq!(cache, "PATCHED", "write {i}");
        let written = (0..5).map(|j| j * 300).chain((5..=i).map(|j| j * 200));
        assert!(
            written.into_iter().all(|j| marked(&rows, &ward[j]["id"])),
            "write {i}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the watermark's pub/sub
    }
    assert_eq!(origin.stats().await["full_reads"], 0);
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cheap_read_that_does_not_show_the_write_is_not_trusted() {
    // A backend that answers the write's cheap read from a replica behind the write: the row
    // comes back as it was. wardgate must not patch with it, but read the ward whole.
    let row = |stamp: u64, voted: bool| {
        format!(r#"{{"id":7,"booth_no":"1","srno":"1","voted":{voted},"modifieddate":{stamp}}}"#)
    };
    let (ward, stale, fresh) = (
        format!(
            "[{},{}]",
            row(1_000, false),
            r#"{"id":8,"booth_no":"1","srno":"2","voted":false,"modifieddate":900}"#
        ),
        format!("[{}]", row(1_000, false)),
        format!(
            "[{},{}]",
            row(2_000, true),
            r#"{"id":8,"booth_no":"1","srno":"2","voted":false,"modifieddate":900}"#
        ),
    );
    let (url, served) = canned_backend(move |n| {
        let body = match n {
            0 => ward.clone(),  // the first read
            1 => stale.clone(), // the write, and its cheap read from a lagging replica
            _ => fresh.clone(), // the whole read that follows
        };
        ("200 OK", "application/json;charset=UTF-8", body)
    })
    .await;
    let gate = Gate::builder(&url).config(no_rate_limits).start().await;
    let c = client();
    let q = ward_query(1);
    assert_eq!(rows_of(&fetch(&c, gate.citizens(&q)).await).len(), 2);
    let (cache, rows) = post(&c, gate.citizens(&q), r#"[{"id":7,"voted":true}]"#.into()).await;
    assert_eq!(cache, "MISS", "read whole after the write");
    assert!(marked(&rows, &Value::from(7)));
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(
        gate.metric("wardgate_write_patches_total{outcome=\"not_seen\"}")
            .await,
        1.0
    );
    gate.stop().await;
}
