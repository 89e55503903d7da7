//! The browser harness runs scripts in a real Chromium, and that Chromium enforces CORS.

use std::time::{Duration, Instant};

use wardgate_test_support::PageOrigin;

/// A run's budget, Chromium's start included; a run takes about a second.
const WITHIN: Duration = Duration::from_secs(20);

fn run(origin: &PageOrigin, script: &str) -> String {
    let started = Instant::now();
    let report = origin.run(script, WITHIN);
    eprintln!(
        "{} ran in {:?}: {report}",
        origin.origin(),
        started.elapsed()
    );
    report
}

#[test]
fn a_script_reports_its_value() {
    let page = PageOrigin::start("127.0.0.1");
    assert_eq!(run(&page, "await report({ ok: 1 + 1 });"), r#"{"ok":2}"#);
}

#[test]
fn a_thrown_exception_and_a_syntax_error_are_reported() {
    let page = PageOrigin::start("localhost");
    assert_eq!(
        run(&page, "throw new Error('boom');"),
        r#"{"thrown":"Error: boom"}"#
    );
    let report = run(&page, "await report(1 +);");
    assert!(report.starts_with(r#"{"thrown":"SyntaxError"#), "{report}");
}

#[test]
fn a_cross_origin_fetch_reads_only_what_cors_headers_allow() {
    let page = PageOrigin::start("127.0.0.1");
    let other = PageOrigin::start("localhost");
    other.route("/closed", &[], "secret");
    other.route("/open", &[("Access-Control-Allow-Origin", "*")], "shared");
    // Allowed only if `origin()` is exactly the `Origin` the browser sends.
    let origin = page.origin();
    other.route(
        "/mine",
        &[("Access-Control-Allow-Origin", &origin)],
        "yours",
    );
    other.route(
        "/theirs",
        &[("Access-Control-Allow-Origin", "http://127.0.0.1:1")],
        "no",
    );
    let fetch = |path: &str| {
        let script = format!(
            "const r = await fetch('{}{path}');\n\
             await report({{ status: r.status, body: await r.text() }});",
            other.origin()
        );
        run(&page, &script)
    };
    let failed = r#"{"thrown":"TypeError: Failed to fetch"}"#;

    assert_eq!(fetch("/closed"), failed);
    assert_eq!(other.hits("/closed"), 1, "the browser sent the request");
    assert_eq!(fetch("/open"), r#"{"status":200,"body":"shared"}"#);
    assert_eq!(fetch("/mine"), r#"{"status":200,"body":"yours"}"#);
    assert_eq!(fetch("/theirs"), failed);
    assert_eq!(other.hits("/theirs"), 1);
}

#[test]
fn a_page_that_reports_nothing_panics_in_time_with_what_it_did() {
    let page = PageOrigin::start("127.0.0.1");
    let started = Instant::now();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        page.run(
            "console.log('waiting for nothing');\nawait new Promise(() => {});",
            // Long enough for Chromium to start and load the page while the other tests'
            // Chromiums start too (two cores): the message must show what the page did.
            Duration::from_secs(20),
        )
    }))
    .expect_err("a page that reports nothing makes run panic");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let message = panicked
        .downcast_ref::<String>()
        .expect("run panics with a formatted message");
    assert!(
        message.contains("reported nothing: not within 20s"),
        "{message}"
    );
    assert!(message.contains("GET /page/0.js"), "{message}");
    assert!(message.contains("waiting for nothing"), "{message}");
}
