//! How the origin answers, as a Spring Boot 2.0 backend does: JSON with a charset, Spring's error attributes, CORS.

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD,
    CONTENT_TYPE, ORIGIN, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::server::OriginBody;
use crate::voter::DateForm;

/// Spring's `MediaType.APPLICATION_JSON_UTF8_VALUE`, what a `@RestController` of Spring Boot
/// 2.0 writes on every JSON answer.
pub const JSON: &str = "application/json;charset=UTF-8";

/// How the origin answers cross-origin requests, as a Spring `CorsConfiguration` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CorsMode {
    /// `allowedOrigins = "*"`, no credentials: `Access-Control-Allow-Origin: *`.
    #[default]
    Any,
    /// Origins echoed with `allowCredentials = true` (what a cookie- or token-carrying web
    /// client needs), and `Content-Disposition` exposed for the CSV export.
    Echo,
    /// No CORS configuration: browsers refuse every cross-origin answer.
    None,
}

/// An error answer whose body `finish` writes, once the request's path is known.
#[derive(Clone)]
pub(crate) struct ErrorMessage(pub String);

pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<OriginBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response<OriginBody> {
    full(status, JSON, body)
}

/// An error: its body is Spring Boot's default error attributes, written by `finish`.
pub(crate) fn error_json(status: StatusCode, msg: &str) -> Response<OriginBody> {
    let mut resp = json(status, Vec::new());
    resp.extensions_mut().insert(ErrorMessage(msg.to_string()));
    resp
}

/// Spring Boot's `DefaultErrorAttributes`: `timestamp` (a `java.util.Date`, so written in the
/// configured date form), `status`, `error` (the reason phrase), `message`, `path`.
pub(crate) fn error_body(
    status: StatusCode,
    message: &str,
    path: &str,
    dates: DateForm,
    now_ms: i64,
) -> Vec<u8> {
    let timestamp = match dates {
        DateForm::EpochMs => serde_json::json!(now_ms),
        DateForm::Iso => serde_json::json!(crate::datetime::format_iso_jackson(now_ms)),
    };
    serde_json::json!({
        "timestamp": timestamp,
        "status": status.as_u16(),
        "error": status.canonical_reason().unwrap_or(""),
        "message": message,
        "path": path,
    })
    .to_string()
    .into_bytes()
}

/// Whether a request is a CORS preflight (Spring's `CorsUtils.isPreFlightRequest`).
pub(crate) fn is_preflight(method: &Method, h: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && h.contains_key(ORIGIN)
        && h.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 200 with the allowed methods and headers, or Spring's 403
/// `Invalid CORS request` when the origin or method is not allowed.
pub(crate) fn preflight(mode: CorsMode, req: &HeaderMap) -> Response<OriginBody> {
    let method_ok = req
        .get(ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| matches!(m, "GET" | "HEAD" | "POST"));
    if mode == CorsMode::None || !method_ok {
        return full(
            StatusCode::FORBIDDEN,
            "text/plain",
            b"Invalid CORS request".to_vec(),
        );
    }
    let mut resp = full(StatusCode::OK, "text/plain", Vec::new());
    resp.headers_mut().remove(CONTENT_TYPE);
    let h = resp.headers_mut();
    h.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,HEAD,POST"),
    );
    if let Some(asked) = req.get(ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("1800"));
    add_cors(mode, req, h, true);
    resp
}

/// The headers Spring's `DefaultCorsProcessor` puts on an answer to a request with `Origin`.
pub(crate) fn add_cors(mode: CorsMode, req: &HeaderMap, h: &mut HeaderMap, preflight: bool) {
    let Some(origin) = req.get(ORIGIN) else {
        return;
    };
    h.append(
        VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    match mode {
        CorsMode::None => {}
        CorsMode::Any => {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        CorsMode::Echo => {
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            if !preflight {
                h.insert(
                    ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("Content-Disposition"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_springs() {
        let b = error_body(
            StatusCode::BAD_REQUEST,
            "bad wardNo",
            "/open/volunteer/citizens",
            DateForm::Iso,
            0,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000+0000");
        assert_eq!(v["status"], 400);
        assert_eq!(v["error"], "Bad Request");
        assert_eq!(v["message"], "bad wardNo");
        assert_eq!(v["path"], "/open/volunteer/citizens");
        let b = error_body(StatusCode::NOT_FOUND, "x", "/", DateForm::EpochMs, 5);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&b).unwrap()["timestamp"],
            5
        );
    }

    #[test]
    fn cors_follows_the_mode() {
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("http://app.example"));
        req.insert(
            ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert!(is_preflight(&Method::OPTIONS, &req));
        let any = preflight(CorsMode::Any, &req);
        assert_eq!(any.status(), 200);
        assert_eq!(any.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let echo = preflight(CorsMode::Echo, &req);
        assert_eq!(
            echo.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://app.example"
        );
        assert_eq!(echo.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(preflight(CorsMode::None, &req).status(), 403);
        let mut h = HeaderMap::new();
        add_cors(CorsMode::Any, &HeaderMap::new(), &mut h, false);
        assert!(h.is_empty(), "no Origin, no CORS headers");
    }
}
