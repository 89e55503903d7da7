//! Fuzz target over wardgate's parameter wall: `params::CitizensQuery::parse`, `params::WardKey::parse`
//! and `route::classify`.
//!
//! Input layout (so seeds are readable text files):
//!
//! ```text
//! <method byte><path>\n<query>
//! ```
//!
//! * method byte: `G` GET, `P` POST, `H` HEAD, `D` DELETE, `U` PUT, `O` OPTIONS, anything else is
//!   mapped onto that list by value;
//! * path: bytes up to the first `\n` (if there is no `\n`, the path is the citizens path and the
//!   whole rest is the query);
//! * query: everything after the `\n`.
//!
//! Every *accepted* input is checked against the contract (`/work/shared/legacy-api.md`): every
//! value must match its format, and the query sent upstream must be exactly the form-urlencoding of
//! those values, built only from bytes that encoding can produce for them.
//!
//! Set `WARDGATE_FUZZ_ALIASES=1` to also assert that no request that the legacy Spring backend
//! would route to a guarded endpoint is classified as pass-through (see fuzz/README.md: this
//! currently fails).
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use wardgate::config::CitizensConfig;
use wardgate::params::{CitizensQuery, Scope, WardKey};
use wardgate::route::{self, MasterRoute, Route, CITIZENS_PATH};
// The contract's formats, written independently of src/params.rs (shared with the property tests).
#[path = "../../crates/wardgate/tests/contract/mod.rs"]
mod contract;
use contract::{is_digits, is_number, is_state, upstream_bytes_ok};

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::HEAD,
    Method::DELETE,
    Method::PUT,
    Method::OPTIONS,
];

fn method_of(b: u8) -> Method {
    match b {
        b'G' => Method::GET,
        b'P' => Method::POST,
        b'H' => Method::HEAD,
        b'D' => Method::DELETE,
        b'U' => Method::PUT,
        b'O' => Method::OPTIONS,
        other => METHODS[usize::from(other) % METHODS.len()].clone(),
    }
}

fn policies() -> &'static [CitizensConfig] {
    static P: OnceLock<Vec<CitizensConfig>> = OnceLock::new();
    P.get_or_init(contract::policies)
}

fn raw_values(query: &str, name: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------

fn check_citizens(query: &str, policy: &CitizensConfig) {
    let Ok(q) = CitizensQuery::parse(query, policy) else {
        return;
    };

    // 1. Every accepted value matches the contract.
    let (state, assembly, ward) = match &q.scope {
        Scope::Ward(w) => {
            assert!(is_number(&w.ward), "wardNo {:?} accepted", w.ward);
            (&w.state, &w.assembly, w.ward.as_str())
        }
        Scope::Assembly(a) => {
            assert!(policy.allow_assembly_wide, "assembly-wide without the flag");
            (&a.state, &a.assembly, "-1")
        }
    };
    assert!(is_state(state), "state {state:?} accepted");
    assert!(
        is_digits(assembly, 1, 6),
        "assemblyNo {assembly:?} accepted"
    );
    if let Some(b) = &q.booths {
        assert!(
            (1..=200).contains(&b.0.len()),
            "{} booths accepted",
            b.0.len()
        );
        for n in &b.0 {
            assert!(is_number(n), "booth {n:?} accepted");
        }
    }
    if let Some(d) = q.since_ms {
        assert!(d >= 0, "date {d} accepted");
    }
    match q.page {
        Some(p) => {
            assert!(
                p.size >= 1 && p.size <= policy.max_page_size,
                "size {} accepted (max {})",
                p.size,
                policy.max_page_size
            );
            assert!(p.offset() <= u64::from(u32::MAX), "offset {}", p.offset());
        }
        None => assert!(!policy.require_pagination, "unpaginated read accepted"),
    }

    // 2. Accepted values are the client's values, not something else (differential check).
    let raw_state = raw_values(query, "state");
    assert_eq!(raw_state.len(), 1, "state given {} times", raw_state.len());
    assert_eq!(&raw_state[0], state);
    assert_eq!(
        &raw_values(query, "assemblyNo"),
        std::slice::from_ref(assembly)
    );
    let raw_ward = raw_values(query, "wardNo");
    assert!(raw_ward.len() <= 1);
    if let Scope::Ward(_) = q.scope {
        assert_eq!(raw_ward, [ward.to_string()]);
    }
    let raw_booths = raw_values(query, "boothNos");
    assert!(raw_booths.len() <= 1);
    match &q.booths {
        Some(b) => {
            let given: BTreeSet<String> = raw_booths[0].split(',').map(str::to_string).collect();
            assert_eq!(given, b.0);
        }
        None => assert!(raw_booths.is_empty() || raw_booths[0] == "-1"),
    }

    // 3. The upstream query is exactly the form-urlencoding of those values.
    let date = q.since_ms.map_or("-1".to_string(), |d| d.to_string());
    let booths = q.booths.as_ref().map_or("-1".to_string(), |b| {
        b.0.iter().cloned().collect::<Vec<_>>().join(",")
    });
    let mut expected: Vec<(String, String)> = vec![
        ("state".into(), state.clone()),
        ("assemblyNo".into(), assembly.clone()),
        ("wardNo".into(), ward.to_string()),
        ("date".into(), date),
        ("boothNos".into(), booths),
    ];
    if let Some(p) = q.page {
        expected.push(("page".into(), p.page.to_string()));
        expected.push(("size".into(), p.size.to_string()));
    }
    let up = q.to_upstream_query();
    let back: Vec<(String, String)> = form_urlencoded::parse(up.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(back, expected, "upstream query {up:?} does not round-trip");
    let reencoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(expected.iter())
        .finish();
    assert_eq!(up, reencoded);
    assert!(
        upstream_bytes_ok(&up),
        "upstream query {up:?} has bad bytes"
    );

    // 4. The upstream query is itself accepted, to the same value (idempotence).
    let again = CitizensQuery::parse(&up, policy).expect("upstream query re-parses");
    assert_eq!(again, q);
}

fn check_ward_key(query: &str) {
    let get = |n: &str| raw_values(query, n).into_iter().next().unwrap_or_default();
    let (s, a, w) = (get("state"), get("assemblyNo"), get("wardNo"));
    if let Ok(k) = WardKey::parse(&s, &a, &w) {
        assert!(is_state(&k.state) && k.state == s);
        assert!(is_digits(&k.assembly, 1, 6) && k.assembly == a);
        assert!(is_number(&k.ward) && k.ward == w);
    }
}

const ID_PREFIXES: [(&str, MasterRoute); 2] = [
    (
        "/open/volunteer/assemblyConstituencys/",
        MasterRoute::AssemblyConstituencies,
    ),
    (
        "/open/volunteer/wardsAndBooths/",
        MasterRoute::WardsAndBooths,
    ),
];

/// Paths the backend treats specially (the guarded ones), without ids.
const GUARDED_FIXED: [&str; 5] = [
    CITIZENS_PATH,
    "/open/volunteer/states",
    "/open/volunteer/parties",
    "/open/volunteer/applicationSettings",
    "/api/dashboardStats",
];

fn check_route(method: &Method, path: &str, query: Option<&str>) {
    let Ok(route) = route::classify(method, path, query) else {
        return;
    };
    match route {
        Route::Citizens => {
            assert_eq!(path, CITIZENS_PATH);
            assert!(*method == Method::GET || *method == Method::HEAD || *method == Method::POST);
        }
        // Refused (405) or forwarded without any query: nothing reaches the backend's SQL.
        Route::NotAllowed | Route::Preflight(_) => {}
        Route::Master(kind, key) => {
            assert!(*method == Method::GET || *method == Method::HEAD, "master route for {method}");
            match kind {
                MasterRoute::AssemblyConstituencies | MasterRoute::WardsAndBooths => {
                    let (prefix, _) = ID_PREFIXES.iter().find(|(_, k)| *k == kind).unwrap();
                    assert_eq!(key, path);
                    let id = path.strip_prefix(prefix).expect("prefix");
                    assert!(is_number(id), "master-data id {id:?} accepted");
                }
                MasterRoute::States => assert_eq!(key, "/open/volunteer/states"),
                MasterRoute::Parties => assert_eq!(key, "/open/volunteer/parties"),
                MasterRoute::ApplicationSettings => {
                    assert_eq!(key, "/open/volunteer/applicationSettings")
                }
                MasterRoute::DashboardStats => {
                    assert_eq!(path, "/api/dashboardStats");
                    let q = key
                        .strip_prefix("/api/dashboardStats?")
                        .expect("dashboard key");
                    assert!(upstream_bytes_ok(q), "dashboard key {key:?} has bad bytes");
                    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                    let tail = ["assemblyNo", "wardNo", "boothNo"];
                    assert!(
                        names == tail || names == ["state", "assemblyNo", "wardNo", "boothNo"],
                        "dashboard key {key:?}"
                    );
                    for (k, v) in &pairs {
                        if k == "state" {
                            assert!(is_state(v), "dashboard state {v:?}");
                        } else {
                            assert!(v == "-1" || is_number(v), "dashboard {k}={v:?}");
                        }
                    }
                    let reencoded = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs.iter())
                        .finish();
                    assert_eq!(q, reencoded);
                }
            }
        }
        Route::Passthrough => {
            // The exact guarded paths never pass through on GET.
            if *method == Method::GET {
                assert!(!GUARDED_FIXED.contains(&path), "GET {path} passed through");
                for (prefix, _) in ID_PREFIXES {
                    assert!(!path.starts_with(prefix), "GET {path} passed through");
                }
            }
            if *method == Method::POST {
                assert_ne!(path, CITIZENS_PATH);
            }
            // Since F1 was fixed, no spelling of a guarded route passes through: always checked.
            check_no_alias(method, path);
        }
    }
}

/// How Spring MVC 5.0 (Spring Boot 2.0.x) maps a request path onto a handler, approximately:
/// percent-decoded, `;` path parameters removed, `//`, `.` and `..` resolved, trailing `/` matched,
/// `.ext` suffix matched. HEAD is served by GET handlers.
fn spring_normalize(path: &str) -> String {
    let decoded: Vec<u8> = percent_decode(path.as_bytes());
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segs: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        match seg.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            seg => segs.push(seg.to_string()),
        }
    }
    if let Some(last) = segs.last_mut() {
        if let Some(dot) = last.rfind('.') {
            if dot > 0 {
                last.truncate(dot);
            }
        }
    }
    format!("/{}", segs.join("/"))
}

fn percent_decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn check_no_alias(method: &Method, path: &str) {
    let reaches_handler =
        *method == Method::GET || *method == Method::HEAD || *method == Method::POST;
    if !reaches_handler {
        return;
    }
    let n = spring_normalize(path);
    let guarded = GUARDED_FIXED.contains(&n.as_str())
        || ID_PREFIXES.iter().any(|(p, _)| {
            n.strip_prefix(p.trim_end_matches('/'))
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        });
    // POST reaches only the citizens handler among the guarded ones.
    if *method == Method::POST && n != CITIZENS_PATH {
        return;
    }
    assert!(
        !guarded,
        "{method} {path:?} passes through unvalidated but the backend routes it as {n:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = method_of(m);
    let (path, query) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&rest[..i]).into_owned(),
            String::from_utf8_lossy(&rest[i + 1..]).into_owned(),
        ),
        None => (
            CITIZENS_PATH.to_string(),
            String::from_utf8_lossy(rest).into_owned(),
        ),
    };

    for policy in policies() {
        check_citizens(&query, policy);
    }
    check_ward_key(&query);
    check_route(&method, &path, Some(&query));
    if query.is_empty() {
        check_route(&method, &path, None);
    }
});
