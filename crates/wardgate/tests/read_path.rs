//! Black-box tests of the read path over HTTP, against the real Redis and MariaDB.

mod support;

use std::time::Duration;

use support::*;
use wardgate::time::{EpochMs, UtcOffset};

/// Each query's answer through wardgate, identity and gzip, equals the origin's bytes.
async fn assert_same_answers(
    c: &reqwest::Client,
    origin: &Origin,
    gate: &Gate,
    queries: &[String],
) {
    for gz in [false, true] {
        for query in queries {
            let want = fetch(c, origin.citizens(query)).await;
            let mut req = c.get(gate.citizens(query));
            if gz {
                req = req.header("accept-encoding", "gzip");
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{query}");
            let body = r.bytes().await.unwrap();
            let got = if gz { gunzip(&body) } else { body.to_vec() };
            assert_eq!(got, want, "{query} gzip={gz}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_equal_the_origin_on_10000_row_wards_of_both_roll_shapes() {
    use wardgate_sample::Serials;
    // Both roll shapes, and a backend that writes dates as Spring Boot 2.0 does by default.
    for (serials, iso) in [
        (Serials::PerBooth, false),
        (Serials::WardWide, false),
        (Serials::PerBooth, true),
    ] {
        let mut origin = Origin::builder()
            .wards(1)
            .voters_per_ward(10_000)
            .serials(serials);
        if iso {
            origin = origin.iso_dates();
        }
        let origin = origin.start().await;
        let gate = Gate::builder(&origin.url()).start().await;
        let c = client();
        let q = ward_query(1);
        let all = fetch(&c, origin.citizens(&q)).await;
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&all).unwrap();
        assert_eq!(
            rows[0]["modifieddate"].is_string(),
            iso,
            "the origin's date form"
        );
        let booth = |i: usize| rows[i]["booth_no"].as_str().unwrap().to_string();
        let (b1, b2) = (booth(0), booth(rows.len() - 1));
        let mut dates: Vec<i64> = rows
            .iter()
            .map(|r| match &r["modifieddate"] {
                serde_json::Value::String(t) => {
                    assert!(iso, "{t}");
                    EpochMs::parse_legacy(t, UtcOffset(0)).unwrap().0
                }
                n => n.as_i64().unwrap(),
            })
            .collect();
        dates.sort();
        let base = format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1");
        let mut queries = vec![
            q.clone(),
            format!("{base}&date=-1&boothNos={b1}"),
            format!("{base}&date=-1&boothNos={b2},{b1}"),
        ];
        for (size, pages) in [(1000, 0..=10), (700, 0..=14)] {
            for page in pages {
                queries.push(format!("{q}&page={page}&size={size}"));
            }
        }
        assert_same_answers(&c, &origin, &gate, &queries).await;
        // Deltas: the origin's rows for the window wardgate widens the date to.
        for (date, booths) in [
            (dates[dates.len() / 2], "-1".to_string()),
            (dates[dates.len() / 4], b1),
        ] {
            let dq = |d: i64| format!("{base}&date={d}&boothNos={booths}");
            let since = tiered(date, *dates.last().unwrap());
            let want = fetch(&c, origin.citizens(&dq(since))).await;
            for gz in [false, true] {
                let mut req = c.get(gate.citizens(&dq(date)));
                if gz {
                    req = req.header("accept-encoding", "gzip");
                }
                let body = req.send().await.unwrap().bytes().await.unwrap();
                let got = if gz { gunzip(&body) } else { body.to_vec() };
                assert_eq!(got, want, "delta from {date}, booths {booths}, gzip={gz}");
            }
        }
        gate.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_equal_the_origin_for_wards_booths_pages_and_deltas() {
    let origin = Origin::builder()
        .mysql()
        .wards(2)
        .voters_per_ward(1234)
        .start()
        .await;
    let gate = Gate::builder(&origin.url()).redis().start().await;
    let c = client();
    let q = ward_query(1);

    // Full ward: first MISS, then HIT, identity and gzip equal to the origin's bytes.
    let want = fetch(&c, origin.citizens(&q)).await;
    let r = c.get(gate.citizens(&q)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(
        r.headers()["x-snapshot-time"]
            .to_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    let etag = r.headers()["etag"].clone();
    assert_eq!(r.bytes().await.unwrap(), want);
    let r = get_gzip(&c, gate.citizens(&q)).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(gunzip(&r.bytes().await.unwrap()), want);
    // POST with an empty body and with [] is the same read.
    for body in ["", "[]"] {
        let r = c.post(gate.citizens(&q)).body(body).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap(), want);
    }
    // If-None-Match → 304.
    let r = c
        .get(gate.citizens(&q))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    // Booth subsets, deltas and every page, gzip and identity, equal the origin's answers.
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&want).unwrap();
    let b1 = rows[0]["booth_no"].as_str().unwrap().to_string();
    let b2 = rows[rows.len() - 1]["booth_no"]
        .as_str()
        .unwrap()
        .to_string();
    let mut queries = vec![
        format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date=-1&boothNos={b1}"),
        format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date=-1&boothNos={b2},{b1}"),
    ];
    for size in [1000, 250, 333] {
        for page in 0..=(1234 / size) {
            queries.push(format!("{q}&page={page}&size={size}"));
        }
    }
    queries.push(format!(
        "state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date=-1&boothNos={b1}&page=0&size=100"
    ));
    assert_same_answers(&c, &origin, &gate, &queries).await;

    // A delta: wardgate widens the window by the overlap and moves it back to its tier, so it
    // returns a superset of the origin's rows for the same date, and exactly the origin's rows
    // for that widened date, in identity and in gzip (compressed once, then kept).
    let mut dates: Vec<i64> = rows
        .iter()
        .map(|r| r["modifieddate"].as_i64().unwrap())
        .collect();
    dates.sort();
    let date = dates[dates.len() * 3 / 4];
    let dq = |d: i64| format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date={d}&boothNos=-1");
    let since = tiered(date, newest_change(&rows));
    let got = fetch(&c, gate.citizens(&dq(date))).await;
    let want = fetch(&c, origin.citizens(&dq(since))).await;
    assert_eq!(got, want);
    for _ in 0..2 {
        let r = get_gzip(&c, gate.citizens(&dq(date))).await;
        let gz = r.bytes().await.unwrap();
        assert_eq!(gunzip(&gz), want);
        assert!(
            gz.len() * 3 < want.len(),
            "the delta is compressed: {} of {}",
            gz.len(),
            want.len()
        );
    }
    let got_rows: Vec<serde_json::Value> = serde_json::from_slice(&got).unwrap();
    assert!(got_rows
        .iter()
        .all(|r| r["modifieddate"].as_i64().unwrap() > since));
    assert!(
        got_rows.len()
            >= rows
                .iter()
                .filter(|r| r["modifieddate"].as_i64().unwrap() > date)
                .count()
    );

    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

/// Phones each send their own `date`: wardgate answers them from a few tiers per ward, each
/// compressed once, and every answer still holds every row changed after its phone's `date`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deltas_with_distinct_dates_share_tiers_and_hold_every_changed_row() {
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(3_000)
        .start()
        .await;
    let gate = Gate::builder(&origin.url()).start().await;
    let c = client();
    let rows: Vec<serde_json::Value> = fetch_json(&c, origin.citizens(&ward_query(1))).await;
    let stamp = |r: &serde_json::Value| r["modifieddate"].as_i64().unwrap();
    let (oldest, newest) = (
        rows.iter().map(stamp).min().unwrap(),
        rows.iter().map(stamp).max().unwrap(),
    );
    let dq = |d: i64| format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1&date={d}&boothNos=-1");
    // Twenty phones asking for the same new delta at once: made once, the others wait for it.
    let compressions = || gate.metric("wardgate_request_compressions_total");
    let before = compressions().await;
    let same = (0..20).map(|_| {
        let url = gate.citizens(&dq((oldest + newest) / 2));
        let c = c.clone();
        tokio::spawn(async move { get_gzip(&c, url).await.status() })
    });
    for r in same.collect::<Vec<_>>() {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert!(compressions().await - before <= 1.0, "one delta made once");
    let before = compressions().await;
    let span = newest + 3_600_000 - oldest;
    let mut windows = std::collections::BTreeSet::new();
    for i in 0..300 {
        let date = oldest + span / 300 * i + 7 * i;
        let r = get_gzip(&c, gate.citizens(&dq(date))).await;
        assert_eq!(r.status(), 200);
        let since = tiered(date, newest);
        windows.insert(since);
        let got: Vec<serde_json::Value> =
            serde_json::from_slice(&gunzip(&r.bytes().await.unwrap())).unwrap();
        let ids: std::collections::HashSet<i64> =
            got.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        let missing = rows
            .iter()
            .filter(|r| stamp(r) > date && !ids.contains(&r["id"].as_i64().unwrap()))
            .count();
        assert_eq!(
            missing, 0,
            "rows changed after {date} missing from its delta"
        );
        assert!(got.iter().all(|r| stamp(r) > since), "only the tier's rows");
    }
    let made = compressions().await - before;
    assert!(
        made <= windows.len() as f64 && windows.len() <= 40,
        "{made} compressions for {} tiers of 300 distinct dates",
        windows.len()
    );
    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_parameters_get_400_and_never_reach_the_backend() {
    let origin = Origin::builder().start().await;
    let gate = Gate::builder(&origin.url()).start().await;
    let c = client();
    let base = format!("state={STATE}&assemblyNo={ASSEMBLY}");
    let cases = [
        (
            "state=Karnataka'%20OR%20'1'='1&assemblyNo=150&wardNo=1".to_string(),
            "state",
        ),
        (
            "state=Karnataka&assemblyNo=150;DROP%20TABLE%20citizen&wardNo=1".to_string(),
            "assemblyNo",
        ),
        (format!("{base}&wardNo=1%20OR%201=1"), "wardNo"),
        (
            format!("{base}&wardNo=1&boothNos=1,2)%20OR%20(1=1"),
            "boothNos",
        ),
        (format!("{base}&wardNo=1&date=1%20OR%201=1"), "date"),
        (format!("{base}&wardNo=1&page=0&size=-5"), "size"),
        (format!("{base}&wardNo=1&page=abc&size=5"), "page"),
        (format!("{base}&wardNo=-2"), "wardNo"),
        (format!("{base}&wardNo=-1&date=-2"), "date"),
        ("assemblyNo=150&wardNo=1".to_string(), "state"),
        (
            format!("{base}&wardNo=1&boothNos={}", vec!["1"; 201].join(",")),
            "boothNos",
        ),
    ];
    for (q, param) in &cases {
        for post in [false, true] {
            let req = if post {
                c.post(gate.citizens(q)).body("[]")
            } else {
                c.get(gate.citizens(q))
            };
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 400, "{q}");
            assert_eq!(
                r.headers()["content-type"],
                "application/json;charset=UTF-8"
            );
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["param"], *param, "{q}: {body}");
            // Spring Boot's error attributes, as a client of the backend parses them.
            assert!(body["message"].as_str().is_some_and(|e| !e.is_empty()));
            assert_eq!(body["status"], 400, "{body}");
            assert_eq!(body["error"], "Bad Request", "{body}");
            assert_eq!(body["path"], "/open/volunteer/citizens", "{body}");
            assert!(body["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with("+0000")));
        }
    }
    // A write with a malformed body is refused too, and not forwarded.
    for body in ["{\"id\":1}", "[1,2,3]", "[{\"voted\":true}]", "not json"] {
        let r = c
            .post(gate.citizens(&ward_query(1)))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["param"],
            "body"
        );
    }
    // Master-data ids are validated as well.
    let r = c
        .get(gate.url("/open/volunteer/wardsAndBooths/1%20OR%201=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(origin.requests().await, 0, "nothing reached the backend");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_storm_for_one_ward_makes_one_upstream_build() {
    // A slow backend keeps the first build running while the other requests arrive.
    let origin = Origin::builder()
        .wards(2)
        .voters_per_ward(3000)
        .latency(Duration::from_millis(300))
        .start()
        .await;
    let gate = Gate::builder(&origin.url()).redis().start().await;
    let c = client();
    let url = gate.citizens(&ward_query(2));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = c.get(url);
            if i % 2 == 0 {
                req = req.header("accept-encoding", "gzip");
            }
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers()["x-cache"].to_str().unwrap().to_string(),
            )
        }));
    }
    let mut misses = 0;
    for t in tasks {
        let (status, cache) = t.await.unwrap();
        assert_eq!(status, 200);
        misses += usize::from(cache == "MISS");
    }
    assert!(misses >= 1);
    assert_eq!(
        origin.citizens_reads().await,
        1,
        "one upstream build for 200 concurrent misses"
    );
    let prefix = gate.prefix.clone();
    gate.stop().await;
    redis_cleanup(&prefix).await;
}

/// The client that started a cold build hangs up: the build is not its future, so the
/// requests that joined it are answered as soon as it ends, from one backend read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_first_requester_that_hangs_up_does_not_delay_the_other_waiters() {
    // Long enough that a second backend read (>= 2x this) is told apart from a slow build.
    let latency = Duration::from_millis(1500);
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(2000)
        .latency(latency)
        .start()
        .await;
    let gate = Gate::builder(&origin.url()).start().await;
    let url = gate.citizens(&ward_query(1));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let first = impatient.get(url.clone()).send().await;
    assert!(
        first.is_err(),
        "the first requester gave up before the answer"
    );
    let c = client();
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move {
                let r = c.get(url).send().await.unwrap();
                (
                    r.status().as_u16(),
                    r.bytes().await.unwrap().len(),
                    start.elapsed(),
                )
            })
        })
        .collect();
    for w in waiters {
        let (status, len, at) = w.await.unwrap();
        assert_eq!(status, 200);
        assert!(len > 100_000, "{len} bytes");
        // Answered when the one build ended, not after a second backend read.
        assert!(at < latency * 2 - latency / 10, "answered after {at:?}");
    }
    assert_eq!(origin.citizens_reads().await, 1);
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_serves_from_redis_without_the_upstream() {
    let origin = Origin::builder().start().await;
    let first = Gate::builder(&origin.url()).redis().start().await;
    let c = client();
    let q = ward_query(3);
    let want = fetch(&c, first.citizens(&q)).await;
    let reads = origin.citizens_reads().await;
    assert_eq!(reads, 1);
    // The second instance's upstream is unreachable: whatever it serves came from Redis.
    let second = Gate::builder("http://127.0.0.1:9")
        .redis()
        .redis_prefix(&first.prefix)
        .start()
        .await;
    let r = c.get(second.citizens(&q)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-cache"],
        "MISS",
        "first read on this instance: from L2"
    );
    assert_eq!(r.bytes().await.unwrap(), want);
    let r = get_gzip(&c, second.citizens(&q)).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(gunzip(&r.bytes().await.unwrap()), want);
    assert_eq!(
        origin.citizens_reads().await,
        reads,
        "the upstream was not asked again"
    );
    // The first instance's build stored the copy (a phase of its own); the second built nothing.
    let stores = "wardgate_build_phase_seconds_count{phase=\"store\"}";
    assert_eq!(first.metric(stores).await, 1.0);
    assert_eq!(second.metric(stores).await, 0.0);
    let prefix = first.prefix.clone();
    first.stop().await;
    second.stop().await;
    redis_cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_data_is_cached_with_validators() {
    let origin = Origin::builder().start().await;
    let gate = Gate::builder(&origin.url()).start().await;
    let c = client();
    let want = fetch(&c, format!("{}/open/volunteer/states", origin.url())).await;
    let r = c
        .get(gate.url("/open/volunteer/states"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    let etag = r.headers()["etag"].clone();
    assert_eq!(r.bytes().await.unwrap(), want);
    let r = get_gzip(&c, gate.url("/open/volunteer/states")).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(gunzip(&r.bytes().await.unwrap()), want);
    let r = c
        .get(gate.url("/open/volunteer/states"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // dashboardStats: parameters normalized into one cache key.
    let a = c
        .get(gate.url(&format!(
            "/api/dashboardStats?state={STATE}&assemblyNo={ASSEMBLY}&wardNo=1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    let b = c
        .get(gate.url(&format!(
            "/api/dashboardStats?wardNo=1&assemblyNo={ASSEMBLY}&state={STATE}&boothNo=-1"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(b.headers()["x-cache"], "HIT");
    let stats = origin.stats().await;
    // One direct fetch by this test, one build of /states, one of dashboardStats.
    assert_eq!(stats["master"], 3, "{stats}");
    gate.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_is_forwarded_and_the_next_read_includes_it() {
    let origin = Origin::builder()
        .mysql()
        .wards(1)
        .voters_per_ward(500)
        .start()
        .await;
    let first = Gate::builder(&origin.url()).redis().start().await;
    let second = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&first.prefix)
        .start()
        .await;
    let c = client();
    let q = ward_query(1);
    let rows: Vec<serde_json::Value> = fetch_json(&c, first.citizens(&q)).await;
    let _ = fetch(&c, second.citizens(&q)).await; // cached on both
    let id = rows[7]["id"].as_i64().unwrap();
    origin.reset_stats().await;
    let body = format!("[{{\"id\":{id},\"responded_status\":\"Visited\",\"voted\":true,\"mobile\":\"9876500000\"}}]");
    let r = c
        .post(first.citizens(&q))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "PATCHED");
    let answered: Vec<serde_json::Value> = r.json().await.unwrap();
    for rows in [
        answered,
        fetch_json(&c, first.citizens(&q)).await,
        fetch_json(&c, second.citizens(&q)).await,
    ] {
        let row = rows.iter().find(|r| r["id"].as_i64() == Some(id)).unwrap();
        assert_eq!(row["voted"], true);
        assert_eq!(row["responded_status"], "Visited");
        assert_eq!(row["mobile"], "9876500000");
    }
    // The second instance took the patched copy from Redis: no whole-ward read anywhere.
    let stats = origin.stats().await;
    assert_eq!(stats["full_reads"], 0, "{stats}");
    let prefix = first.prefix.clone();
    first.stop().await;
    second.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assembly_wide_writes_supersede_every_ward_and_cached_assembly_pages() {
    let origin = Origin::builder()
        .mysql()
        .wards(3)
        .voters_per_ward(300)
        .start()
        .await;
    let wide = |c: &mut wardgate::config::Config| c.citizens.allow_assembly_wide = true;
    let first = Gate::builder(&origin.url())
        .redis()
        .config(wide)
        .start()
        .await;
    let second = Gate::builder(&origin.url())
        .redis()
        .redis_prefix(&first.prefix)
        .config(wide)
        .start()
        .await;
    let c = client();
    let all = format!("state={STATE}&assemblyNo={ASSEMBLY}&wardNo=-1&date=-1&boothNos=-1");

    // Whole-assembly reads hold the origin's rows (in ward order, tests/dropin.rs checks the
    // rest); a page is its window of them.
    let whole: Vec<serde_json::Value> = fetch_json(&c, first.citizens(&all)).await;
    let want: Vec<serde_json::Value> = fetch_json(&c, origin.citizens(&all)).await;
    assert_eq!(whole.len(), want.len());
    let page: serde_json::Value =
        fetch_json(&c, first.citizens(&format!("{all}&page=1&size=200"))).await;
    assert_eq!(page["citizens"].as_array().unwrap()[..], whole[200..400]);

    // Both instances hold ward 2; a write sent assembly-wide (wardNo=-1) changes a row of it.
    let ward2: Vec<serde_json::Value> = fetch_json(&c, first.citizens(&ward_query(2))).await;
    let _ = fetch(&c, second.citizens(&ward_query(2))).await;
    let id = ward2[3]["id"].as_i64().unwrap();
    let r = c
        .post(first.citizens(&format!("{all}&page=0&size=1")))
        .body(format!(
            "[{{\"id\":{id},\"party_preference\":\"Assembly-wide\"}}]"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    for gate in [&first, &second] {
        let rows: Vec<serde_json::Value> = fetch_json(&c, gate.citizens(&ward_query(2))).await;
        let row = rows.iter().find(|r| r["id"].as_i64() == Some(id)).unwrap();
        assert_eq!(row["party_preference"], "Assembly-wide");
    }
    // A whole-assembly page cached on the first instance is superseded by a write to one of
    // its rows through the second instance (a ward-scoped sync).
    let first_page = format!("{all}&page=0&size=100");
    let rows: serde_json::Value = fetch_json(&c, first.citizens(&first_page)).await;
    let row = &rows["citizens"][5];
    let (id, ward) = (
        row["id"].as_i64().unwrap(),
        row["ward_no"].as_str().unwrap().to_string(),
    );
    let cached = c.get(first.citizens(&first_page)).send().await.unwrap();
    assert_eq!(cached.headers()["x-cache"], "HIT");
    let _ = cached.bytes().await;
    let r = c
        .post(second.citizens(&format!(
            "state={STATE}&assemblyNo={ASSEMBLY}&wardNo={ward}&date=-1&boothNos=-1"
        )))
        .body(format!(
            "[{{\"id\":{id},\"responded_status\":\"Page-superseded\"}}]"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let rows: serde_json::Value = fetch_json(&c, first.citizens(&first_page)).await;
        let found = rows["citizens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"].as_i64() == Some(id))
            .cloned()
            .unwrap();
        if found["responded_status"] == "Page-superseded" {
            break;
        }
        // Delivered by pub/sub from the other instance: allow its few milliseconds.
        assert!(
            std::time::Instant::now() < deadline,
            "the cached assembly page was served after the write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let prefix = first.prefix.clone();
    first.stop().await;
    second.stop().await;
    redis_cleanup(&prefix).await;
    origin.cleanup().await;
}

/// Bytes of one whole-stream `gzip -6` of `data` (Debian's `gzip`, an essential package): the
/// yardstick for wire bytes.
fn gzip6(data: &[u8]) -> usize {
    use std::io::Write;
    let mut child = std::process::Command::new("gzip")
        .args(["-6", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_booth_ward_costs_the_wire_what_one_gzip_stream_does_and_hits_repeat_it() {
    // Serial numbers restart in every booth (the sample's default, as on real rolls), so the
    // reference order interleaves the ward's booths row by row.
    let origin = Origin::builder()
        .wards(1)
        .voters_per_ward(10_000)
        .start()
        .await;
    let c = client();
    let json = fetch(&c, origin.citizens(&ward_query(1))).await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
    assert_eq!(rows.len(), 10_000);
    assert_ne!(
        rows[0]["booth_no"], rows[1]["booth_no"],
        "booths interleave"
    );
    let yardstick = gzip6(&json);
    let gate = Gate::builder(&origin.url()).start().await;
    let get = || get_gzip(&c, gate.citizens(&ward_query(1)));
    let wire = get().await.bytes().await.unwrap();
    assert_eq!(gunzip(&wire), json);
    assert!(
        wire.len() * 100 <= yardstick * 103,
        "full ward: {} bytes on the wire, one gzip -6 stream {yardstick}",
        wire.len()
    );
    // The same bytes again, whichever way they are sent (`runtime.sendfile`, tests/sendfile.rs).
    let hit = get().await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(hit.bytes().await.unwrap(), wire);
    gate.stop().await;
}
