//! `GET /`: the status page, one self-contained HTML file served under a strict CSP.
//!
//! The page holds no data and needs no token: its script asks `/admin/status` with the
//! operator's token. The CSP allows exactly the page's one inline script and one inline style,
//! by their SHA-256 (computed once from the file itself, so an edit cannot leave a stale hash),
//! and connections to this listener only.

use std::sync::OnceLock;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::Response;

use crate::body::Body;

/// The page (`status.html`, beside this file).
pub const PAGE: &str = include_str!("status.html");

/// `default-src 'none'` denies everything not named; `form-action`, `base-uri` and
/// `frame-ancestors` are not covered by it, so they are closed by name (the token form is
/// handled by the script, and the page is never framed: no clickjacking of the purge-free but
/// token-holding page).
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
            sha256(inline(PAGE, "script").unwrap_or_default()),
            sha256(inline(PAGE, "style").unwrap_or_default()),
        )
    })
}

/// The text of the first `<tag>…</tag>` element of `html` (the tag written without attributes).
fn inline<'a>(html: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = html.find(&open)? + open.len();
    let len = html[start..].find(&format!("</{tag}>"))?;
    Some(&html[start..start + len])
}

/// A CSP hash source, `sha256-` and the base64 of the digest.
fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

/// The page with its CSP. It is not cached: after an upgrade the page and the JSON it reads
/// come from the same version.
pub fn page() -> Response<Body> {
    let mut r = super::uncached(PAGE, "text/html; charset=utf-8");
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The token may arrive in the URL: no page this one links to learns it.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp()),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_allows_exactly_the_inline_script_and_style() {
        let script = inline(PAGE, "script").expect("one inline script");
        let style = inline(PAGE, "style").expect("one inline style");
        assert!(script.contains("/admin/status"));
        assert!(csp().contains(&format!("script-src '{}'", sha256(script))));
        assert!(csp().contains(&format!("style-src '{}'", sha256(style))));
        // Known digest: the hashing is what browsers compute.
        assert_eq!(
            sha256(""),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn the_page_needs_nothing_the_csp_refuses() {
        assert_eq!(PAGE.matches("<script").count(), 1, "one script, inline");
        assert_eq!(PAGE.matches("<style").count(), 1, "one style, inline");
        for refused in [
            " style=\"",
            " onclick=",
            " onload=",
            " onsubmit=",
            "src=\"http",
            "href=\"http",
            "url(http",
            "javascript:",
        ] {
            assert!(
                !PAGE.contains(refused),
                "the page has {refused}, which the CSP blocks"
            );
        }
        assert!(
            PAGE.contains("name=\"viewport\""),
            "the page sizes itself to a phone"
        );
    }
}
