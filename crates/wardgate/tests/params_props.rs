//! Property tests of the parameter wall (`wardgate::params`, `wardgate::route`), black-box.
//!
//! The legacy backend concatenates the citizens parameters into SQL, so the property that matters is:
//! whatever wardgate *accepts* matches the contract's formats (`/work/shared/legacy-api.md`), and
//! the query it sends upstream is exactly the form-urlencoding of those values.

use std::collections::BTreeSet;

use http::Method;
use proptest::prelude::*;
use wardgate::config::CitizensConfig;
use wardgate::params::{CitizensQuery, Scope, WardKey};
use wardgate::route::{classify, MasterRoute, Route, CITIZENS_PATH};
// The contract's formats, written independently of the implementation (shared with fuzz/).
mod contract;
use contract::{is_digits, is_number, is_state, policies, upstream_bytes_ok};

fn pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn encode(pairs: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish()
}

/// The values a query stands for, in the order `to_upstream_query` writes them.
fn expected_upstream(q: &CitizensQuery) -> Vec<(String, String)> {
    let (state, assembly, ward) = match &q.scope {
        Scope::Ward(w) => (w.state.clone(), w.assembly.clone(), w.ward.clone()),
        Scope::Assembly(a) => (a.state.clone(), a.assembly.clone(), "-1".into()),
    };
    let mut out = vec![
        ("state".to_string(), state),
        ("assemblyNo".into(), assembly),
        ("wardNo".into(), ward),
        (
            "date".into(),
            q.since_ms.map_or("-1".into(), |d| d.to_string()),
        ),
        (
            "boothNos".into(),
            q.booths.as_ref().map_or("-1".into(), |b| {
                b.0.iter().cloned().collect::<Vec<_>>().join(",")
            }),
        ),
    ];
    if let Some(p) = q.page {
        out.push(("page".into(), p.page.to_string()));
        out.push(("size".into(), p.size.to_string()));
    }
    out
}

/// The security property, checked on every accepted query.
fn assert_within_contract(q: &CitizensQuery, policy: &CitizensConfig) -> Result<(), TestCaseError> {
    let (state, assembly) = match &q.scope {
        Scope::Ward(w) => {
            prop_assert!(is_number(&w.ward), "wardNo {:?}", w.ward);
            (&w.state, &w.assembly)
        }
        Scope::Assembly(a) => {
            prop_assert!(policy.allow_assembly_wide);
            (&a.state, &a.assembly)
        }
    };
    prop_assert!(is_state(state), "state {:?}", state);
    prop_assert!(is_digits(assembly, 1, 6), "assemblyNo {:?}", assembly);
    if let Some(b) = &q.booths {
        prop_assert!((1..=200).contains(&b.0.len()), "{} booths", b.0.len());
        for n in &b.0 {
            prop_assert!(is_number(n), "booth {:?}", n);
        }
    }
    if let Some(d) = q.since_ms {
        prop_assert!(d >= 0, "date {}", d);
    }
    match q.page {
        Some(p) => {
            prop_assert!(
                p.size >= 1 && p.size <= policy.max_page_size,
                "size {}",
                p.size
            );
            prop_assert!(p.offset() <= u64::from(u32::MAX));
        }
        None => prop_assert!(!policy.require_pagination),
    }
    let up = q.to_upstream_query();
    prop_assert!(upstream_bytes_ok(&up), "upstream query {:?}", up);
    let expected = expected_upstream(q);
    prop_assert_eq!(pairs(&up), expected.clone());
    prop_assert_eq!(up, encode(&expected));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies.

const PARAMS: [&str; 7] = [
    "state",
    "assemblyNo",
    "wardNo",
    "boothNos",
    "date",
    "page",
    "size",
];

/// Hostile or arbitrary parameter values: anything, printable ASCII, SQL fragments, numbers with
/// junk around them, unicode digits and letters.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,80}",
        "[0-9,;' ()=+\\-]{0,24}",
        "(-?[0-9]{1,20})",
        "[A-Za-z .\\-']{0,70}",
        "\\PC{0,20}",
        Just("Goa' OR '1'='1".to_string()),
        Just("1; DROP TABLE citizen; --".to_string()),
        Just("1) OR (1=1".to_string()),
        Just("-1 OR 1=1".to_string()),
        Just("Goa\u{0}".to_string()),
        Just("١٢٣".to_string()),
        Just("１２".to_string()),
        Just("Goa\u{2019}".to_string()),
        Just("\u{212A}arnataka".to_string()),
    ]
}

/// A booth number: 1..9 digits, leading zeros included (cheaper than a regex strategy).
fn booth_number() -> impl Strategy<Value = String> {
    (0u32..1_000_000_000, 0usize..=9).prop_map(|(n, width)| format!("{n:0width$}"))
}

#[derive(Debug, Clone)]
struct Valid {
    state: String,
    assembly: String,
    ward: Option<String>, // None = wardNo=-1
    booths: Option<Vec<String>>,
    date: Option<i64>,
    page: Option<(u32, u32)>,
}

fn valid_set(max_page_size: u32) -> impl Strategy<Value = Valid> {
    (
        "[A-Za-z .\\-]{1,64}",
        "[0-9]{1,6}",
        prop::option::weighted(0.9, "[0-9]{1,9}"),
        prop::option::of(prop::collection::vec(booth_number(), 1..=200)),
        prop::option::of(0i64..=9_999_999_999_999_999),
        prop::option::of(
            (1..=max_page_size).prop_flat_map(|size| (0..=(u32::MAX / size), Just(size))),
        ),
    )
        .prop_map(|(state, assembly, ward, booths, date, page)| Valid {
            state,
            assembly,
            ward,
            booths,
            date,
            page,
        })
}

impl Valid {
    fn to_pairs(&self) -> Vec<(String, String)> {
        let mut p = vec![
            ("state".to_string(), self.state.clone()),
            ("assemblyNo".into(), self.assembly.clone()),
            ("wardNo".into(), self.ward.clone().unwrap_or("-1".into())),
            (
                "boothNos".into(),
                self.booths.as_ref().map_or("-1".into(), |b| b.join(",")),
            ),
            (
                "date".into(),
                self.date.map_or("-1".into(), |d| d.to_string()),
            ),
        ];
        if let Some((page, size)) = self.page {
            p.push(("page".into(), page.to_string()));
            p.push(("size".into(), size.to_string()));
        }
        p
    }
}

fn base_pairs() -> Vec<(String, String)> {
    [
        ("state", "Karnataka"),
        ("assemblyNo", "150"),
        ("wardNo", "7"),
        ("boothNos", "1,2"),
        ("date", "1700000000000"),
        ("page", "0"),
        ("size", "5"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Any value for any parameter (encoded, or spliced in raw): what is accepted is in the
    /// contract's formats, and the hostile value itself only gets through if it is valid.
    #[test]
    fn accepted_values_are_within_the_contract(
        which in 0..PARAMS.len(),
        value in hostile_value(),
        raw in any::<bool>(),
    ) {
        let name = PARAMS[which];
        let mut p = base_pairs();
        p.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.clone();
        let query = if raw {
            p.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
        } else {
            encode(&p)
        };
        for policy in policies() {
            if let Ok(q) = CitizensQuery::parse(&query, &policy) {
                assert_within_contract(&q, &policy)?;
                if !raw {
                    let ok = match name {
                        "state" => is_state(&value),
                        "assemblyNo" => is_digits(&value, 1, 6),
                        "wardNo" => is_number(&value) || value == "-1",
                        "boothNos" => value == "-1"
                            || value.split(',').all(is_number),
                        "date" => value == "-1" || is_digits(&value, 1, 19),
                        _ => is_digits(&value, 1, 10),
                    };
                    prop_assert!(ok, "{}={:?} accepted", name, value);
                }
            }
        }
    }

    /// (a) The same for `WardKey::parse` (admin API, `warm`).
    #[test]
    fn ward_keys_are_within_the_contract(
        state in hostile_value(),
        assembly in hostile_value(),
        ward in hostile_value(),
    ) {
        if let Ok(k) = WardKey::parse(&state, &assembly, &ward) {
            prop_assert!(is_state(&k.state) && k.state == state.to_ascii_lowercase());
            prop_assert!(is_digits(&k.assembly, 1, 6) && k.assembly == assembly);
            prop_assert!(is_number(&k.ward) && k.ward == ward);
        }
    }

    /// (b) Valid parameter sets are accepted, to the same values, and re-encoded faithfully.
    #[test]
    fn valid_sets_are_accepted_and_round_trip(v in valid_set(1000), shuffle in any::<bool>()) {
        let mut p = v.to_pairs();
        if shuffle {
            p.reverse();
        }
        let policy = CitizensConfig {
            allow_assembly_wide: true,
            ..CitizensConfig::default()
        };
        // Whole-assembly reads are valid paginated or not, as the backend's rule has them.
        let res = CitizensQuery::parse(&encode(&p), &policy);
        let q = res.map_err(|e| TestCaseError::fail(format!("{p:?} refused: {e}")))?;
        assert_within_contract(&q, &policy)?;
        match (&q.scope, &v.ward) {
            (Scope::Ward(w), Some(ward)) => {
                prop_assert_eq!(&w.state, &v.state.to_ascii_lowercase());
                prop_assert_eq!(&w.assembly, &v.assembly);
                prop_assert_eq!(&w.ward, ward);
            }
            (Scope::Assembly(a), None) => {
                prop_assert_eq!(&a.state, &v.state.to_ascii_lowercase());
                prop_assert_eq!(&a.assembly, &v.assembly);
            }
            (s, w) => prop_assert!(false, "scope {:?} for wardNo {:?}", s, w),
        }
        let booths: Option<BTreeSet<String>> = v.booths.clone().map(|b| b.into_iter().collect());
        prop_assert_eq!(q.booths.clone().map(|b| b.0), booths);
        prop_assert_eq!(q.since_ms, v.date);
        prop_assert_eq!(q.page.map(|p| (p.page, p.size)), v.page);

        let up = q.to_upstream_query();
        let back = pairs(&up);
        let get = |n: &str| back.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        prop_assert_eq!(get("state"), Some(v.state.to_ascii_lowercase()));
        prop_assert_eq!(get("assemblyNo"), Some(v.assembly.clone()));
        prop_assert_eq!(get("wardNo"), Some(v.ward.clone().unwrap_or("-1".into())));
        // And the upstream query is itself a valid query, standing for the same read.
        prop_assert_eq!(CitizensQuery::parse(&up, &policy).unwrap(), q);
    }

    /// (c) Arbitrary query strings never panic, under any policy; accepted ones are in-contract.
    #[test]
    fn arbitrary_queries_never_panic(
        query in prop_oneof![
            any::<String>(),
            "[ -~]{0,200}",
            "((state|assemblyNo|wardNo|boothNos|date|page|size|_|%[0-9A-Fa-f]{2})=[ -~]{0,12}&?){0,10}",
        ],
    ) {
        for policy in policies() {
            if let Ok(q) = CitizensQuery::parse(&query, &policy) {
                assert_within_contract(&q, &policy)?;
            }
        }
        for m in [Method::GET, Method::POST, Method::HEAD] {
            let _ = classify(&m, CITIZENS_PATH, Some(&query));
            let _ = classify(&m, "/api/dashboardStats", Some(&query));
        }
    }

    /// (d) More than 200 booths are refused, even when they repeat.
    #[test]
    fn more_than_200_booths_are_refused(
        booths in prop::collection::vec(0u32..1000, 201..=400),
    ) {
        let list = booths.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let query = format!("state=Goa&assemblyNo=1&wardNo=2&boothNos={list}");
        for policy in policies() {
            let e = CitizensQuery::parse(&query, &policy).unwrap_err();
            prop_assert!(e.param == "boothNos" || e.param == "page", "{e}");
        }
        let e = CitizensQuery::parse(&query, &CitizensConfig::default()).unwrap_err();
        prop_assert_eq!(e.param, "boothNos");
    }

    /// (e) A master-data route is never accepted with an id that is not all digits.
    #[test]
    fn master_ids_are_digits(
        prefix in prop::sample::select(vec![
            "/open/volunteer/assemblyConstituencys/",
            "/open/volunteer/wardsAndBooths/",
        ]),
        id in prop_oneof![hostile_value(), "[0-9]{0,12}", "[0-9]{1,4}[^0-9][ -~]{0,6}"],
        method in prop::sample::select(vec![Method::GET, Method::POST, Method::HEAD, Method::PUT]),
        query in prop::option::of("[ -~]{0,20}"),
    ) {
        let path = format!("{prefix}{id}");
        match classify(&method, &path, query.as_deref()) {
            Ok(Route::Master(kind, key)) => {
                prop_assert!(method == Method::GET || method == Method::HEAD);
                prop_assert!(matches!(
                    kind,
                    MasterRoute::AssemblyConstituencies | MasterRoute::WardsAndBooths
                ));
                prop_assert!(is_number(&id), "id {:?} accepted", id);
                prop_assert_eq!(key, path);
            }
            Ok(Route::Citizens) | Ok(Route::Preflight(_)) => prop_assert!(false, "{} misclassified", path),
            Ok(Route::NotAllowed) => prop_assert!(method != Method::GET && method != Method::HEAD),
            // Only a path whose backend view leaves the guarded prefix (`../`) may pass.
            Ok(Route::Passthrough) => prop_assert!(
                !wardgate::route::backend_view(&path).starts_with(prefix),
                "{} {} passed through", method, path
            ),
            Err(e) => prop_assert!(e.param == "id" || e.param == "path", "{:?}", e),
        }
    }

    /// (e) `/api/dashboardStats`: the cache key (what is fetched upstream) is in-contract.
    #[test]
    fn dashboard_key_is_within_the_contract(
        pairs_in in prop::collection::vec(
            (prop::sample::select(vec!["state", "assemblyNo", "wardNo", "boothNo", "x"]),
             hostile_value()),
            0..6,
        ),
    ) {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs_in.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        if let Ok(Route::Master(MasterRoute::DashboardStats, key)) =
            classify(&Method::GET, "/api/dashboardStats", Some(&query))
        {
            let q = key.strip_prefix("/api/dashboardStats?").unwrap();
            prop_assert!(upstream_bytes_ok(q), "key {:?}", key);
            for (k, v) in pairs(q) {
                if k == "state" {
                    prop_assert!(is_state(&v), "state {:?}", v);
                } else {
                    prop_assert!(v == "-1" || is_number(&v), "{}={:?}", k, v);
                }
            }
        }
    }
}

/// Requests the legacy Spring Boot 2.0 backend would route to a guarded handler (HEAD, alias
/// spellings of the path) are validated or refused, never passed through with their raw query.
/// See fuzz/README.md, finding F1.
#[test]
fn guarded_endpoints_cannot_be_reached_through_aliases() {
    let sqli = "state=Goa'%20OR%201=1--&assemblyNo=1&wardNo=1";
    let cases: &[(Method, &str)] = &[
        (Method::HEAD, CITIZENS_PATH),
        (Method::GET, "/open/volunteer/citizens/"),
        (Method::POST, "/open/volunteer/citizens;jsessionid=x"),
        (Method::GET, "//open/volunteer/citizens"),
        (Method::GET, "/open/volunteer/./citizens"),
        (Method::GET, "/open/volunteer/%63itizens"),
        (Method::GET, "/open/volunteer/citizens.json"),
        (Method::HEAD, "/api/dashboardStats"),
        (Method::GET, "/api/dashboardStats/"),
        (
            Method::GET,
            "//open/volunteer/wardsAndBooths/1'%20OR%20'1'='1",
        ),
        (Method::HEAD, "/open/volunteer/assemblyConstituencys/1'"),
    ];
    let mut leaks = Vec::new();
    for (m, path) in cases {
        if let Ok(Route::Passthrough) = classify(m, path, Some(sqli)) {
            leaks.push(format!("{m} {path}?{sqli}"));
        }
    }
    assert!(
        leaks.is_empty(),
        "pass through unvalidated:\n{}",
        leaks.join("\n")
    );
}
