//! The shipped Grafana dashboard (`k8s/monitoring/grafana/wardgate.json`) queries only what
//! wardgate exports: every metric its expressions name is a family of a live `/metrics`, and
//! every label they match on is one that family carries, after the traffic of an election day
//! (hits, misses, a write, refusals, a bad request).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::*;

/// Labels the scrape adds (not wardgate's) and the histogram's own.
const TARGET_LABELS: &[&str] = &["track", "pod", "instance", "job", "le"];

/// A live `/metrics`: family name -> labels seen on its samples.
fn families(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut fams: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            fams.entry(name.to_string()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let (name, labels) = match line.split_once('{') {
                Some((n, l)) => (n, l.split_once('}').map(|(l, _)| l).unwrap_or_default()),
                None => (line.split(' ').next().unwrap_or_default(), ""),
            };
            let fam = family_of(name, &fams);
            let set = fams.entry(fam).or_default();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                if let Some((k, _)) = pair.split_once('=') {
                    set.insert(k.trim().to_string());
                }
            }
        }
    }
    fams
}

/// The family a sample or query name belongs to: itself, or without the suffix a counter's
/// or a histogram's samples carry.
fn family_of(name: &str, fams: &BTreeMap<String, BTreeSet<String>>) -> String {
    for suffix in ["_total", "_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if fams.contains_key(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Every `wardgate_*` name in `expr` with the label names matched on it.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("wardgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let mut labels = Vec::new();
        let after = &tail[end..];
        if let Some(body) = after.strip_prefix('{') {
            let body = body.split('}').next().unwrap_or_default();
            for m in body.split(',') {
                let key: String = m
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() {
                    labels.push(key);
                }
            }
        }
        out.push((name.to_string(), labels));
        rest = &tail[end..];
    }
    out
}

/// What the dashboard asks that `/metrics` does not have, one line each.
fn unknown(dashboard: &Value, metrics: &str) -> Vec<String> {
    let fams = families(metrics);
    let mut problems = Vec::new();
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    for p in &panels {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            let expr = t["expr"].as_str().unwrap_or_default();
            for (name, labels) in selectors(expr) {
                let fam = family_of(&name, &fams);
                let Some(have) = fams.get(&fam) else {
                    problems.push(format!("{}: no metric {name}", p["title"]));
                    continue;
                };
                for l in labels
                    .iter()
                    .filter(|l| !TARGET_LABELS.contains(&l.as_str()))
                {
                    if !have.contains(l) {
                        problems.push(format!("{}: {name} has no label {l}", p["title"]));
                    }
                }
            }
        }
    }
    problems
}

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../k8s/monitoring/grafana/wardgate.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_metrics_and_labels_wardgate_exports() {
    let origin = Origin::builder().wards(2).voters_per_ward(50).start().await;
    let gate = Gate::builder(&origin.url())
        .redis()
        .config(|c| {
            no_rate_limits(c);
            c.rate_limit.downloads.rate = 1.0;
            c.rate_limit.downloads.burst = 4;
        })
        .start()
        .await;
    let c = client();
    // A 400, a miss, hits, a 429, a write.
    let bad = c.get(gate.citizens("state=Karnataka&assemblyNo=x")).send();
    assert_eq!(bad.await.unwrap().status(), 400);
    for _ in 0..6 {
        c.get(gate.citizens(&ward_query(1))).send().await.unwrap();
    }
    let rows: Value =
        serde_json::from_slice(&fetch(&c, origin.citizens(&ward_query(2))).await).unwrap();
    let id = &rows[0]["id"];
    assert!(!id.is_null(), "{rows}");
    let w = c
        .post(gate.citizens(&ward_query(2)))
        .body(format!(r#"[{{"id":{id},"voted":true}}]"#))
        .send()
        .await
        .unwrap();
    assert!(w.status().is_success(), "{}", w.status());
    let metrics = gate.metrics().await;
    assert!(
        metrics.contains("wardgate_rate_limited_total{"),
        "no 429 seen"
    );

    let d = dashboard();
    let exprs = selectors(&d.to_string());
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let problems = unknown(&d, &metrics);
    assert!(problems.is_empty(), "{problems:#?}");
    gate.stop().await;
}

#[test]
fn the_check_finds_a_metric_or_a_label_wardgate_does_not_export() {
    let metrics = "# TYPE wardgate_requests counter\n\
                   wardgate_requests_total{route_class=\"citizens\",cache=\"HIT\"} 1\n";
    let panel =
        |expr: &str| serde_json::json!({"panels": [{"title": "p", "targets": [{"expr": expr}]}]});
    let ok = r#"sum by (track) (rate(wardgate_requests_total{track=~"$track", cache="HIT"}[5m]))"#;
    assert!(unknown(&panel(ok), metrics).is_empty());
    let no_metric = r#"sum(rate(wardgate_request_total[5m]))"#;
    assert_eq!(unknown(&panel(no_metric), metrics).len(), 1);
    let no_label = r#"sum(rate(wardgate_requests_total{outcome="ok"}[5m]))"#;
    assert_eq!(unknown(&panel(no_label), metrics).len(), 1);
}
