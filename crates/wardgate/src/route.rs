//! Classifies a request by method and path: the first decision of every request's life.

use std::borrow::Cow;
use std::fmt::Write as _;

use http::Method;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use crate::config::{LimitClass, MasterMaxAge};
use crate::params::ParamError;

pub const CITIZENS_PATH: &str = "/open/volunteer/citizens";

/// The kind of traffic a request is, for limits, metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Voter-list reads (`/open/volunteer/citizens` without changes).
    Citizens,
    /// Sync POSTs carrying changes.
    Write,
    /// Cached read-only master data.
    Master,
    /// Everything else, forwarded untouched.
    Passthrough,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Citizens => "citizens",
            RouteClass::Write => "write",
            RouteClass::Master => "master",
            RouteClass::Passthrough => "passthrough",
        }
    }

    /// The guarded route a class answers for (CORS headers are kept per guarded route).
    pub fn guarded(self) -> Option<Guarded> {
        match self {
            RouteClass::Citizens | RouteClass::Write => Some(Guarded::Citizens),
            RouteClass::Master => Some(Guarded::Master),
            RouteClass::Passthrough => None,
        }
    }

    pub fn limit_class(self) -> LimitClass {
        match self {
            RouteClass::Citizens => LimitClass::Downloads,
            RouteClass::Write => LimitClass::Writes,
            RouteClass::Master => LimitClass::Master,
            RouteClass::Passthrough => LimitClass::Passthrough,
        }
    }
}

impl EncodeLabelValue for RouteClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The cached master-data routes of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MasterRoute {
    States,
    AssemblyConstituencies,
    WardsAndBooths,
    Parties,
    ApplicationSettings,
    DashboardStats,
}

impl MasterRoute {
    pub fn max_age(self, ages: &MasterMaxAge) -> std::time::Duration {
        match self {
            MasterRoute::States => ages.states.0,
            MasterRoute::AssemblyConstituencies => ages.assembly_constituencies.0,
            MasterRoute::WardsAndBooths => ages.wards_and_booths.0,
            MasterRoute::Parties => ages.parties.0,
            MasterRoute::ApplicationSettings => ages.application_settings.0,
            MasterRoute::DashboardStats => ages.dashboard_stats.0,
        }
    }
}

/// The guarded routes, as CORS sees them: the voter list (reads and writes share its path and
/// its controller) and master data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Guarded {
    Citizens,
    Master,
}

impl Guarded {
    /// A path of the route, for a preflight wardgate sends itself.
    pub fn probe_path(self) -> &'static str {
        match self {
            Guarded::Citizens => CITIZENS_PATH,
            Guarded::Master => "/open/volunteer/states",
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/open/volunteer/citizens` (GET, or POST that may carry changes).
    Citizens,
    /// A cached master-data route and its cache key (path + normalized query).
    Master(MasterRoute, String),
    /// A CORS preflight (`OPTIONS`) on a guarded route: forwarded without its query.
    Preflight(Guarded),
    /// A guarded route with a method it does not serve: 405, never forwarded.
    NotAllowed,
    /// Anything else.
    Passthrough,
}

/// The routes whose parameters reach the backend's SQL: never forwarded unvalidated.
fn guarded(view: &str) -> bool {
    matches!(
        view,
        CITIZENS_PATH
            | "/open/volunteer/states"
            | "/open/volunteer/parties"
            | "/open/volunteer/applicationSettings"
            | "/api/dashboardStats"
    ) || view.starts_with("/open/volunteer/assemblyConstituencys/")
        || view.starts_with("/open/volunteer/wardsAndBooths/")
}

/// The path as the backend's router (Spring MVC 5.0) matches it: percent-decoded once, `;params`
/// dropped, empty and `.` segments removed, `..` resolved, a trailing `/` and a `.ext` suffix on
/// the last segment ignored. Any spelling that differs from this view is an alias.
pub fn backend_view(path: &str) -> Cow<'_, str> {
    // Fast path, taken by every well-formed request: nothing to decode, drop or resolve.
    if is_plain(path) || path == "/" {
        return Cow::Borrowed(path);
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg.split(';').next().unwrap_or("") {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    if let Some(last) = segs.last_mut() {
        if let Some((stem, _)) = last.split_once('.') {
            *last = stem;
        }
    }
    Cow::Owned(format!("/{}", segs.join("/")))
}

/// A path the backend's router takes as it is, checked in one pass (every request asks): it
/// starts with `/`, holds no `%` or `;`, no empty or dot-led segment, and its last segment is
/// not empty and has no `.`.
fn is_plain(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    let (mut prev, mut last) = (0u8, 0);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b';' => return false,
            b'/' | b'.' if prev == b'/' => return false,
            b'/' => last = i + 1,
            _ => {}
        }
        prev = c;
    }
    let last = &b[last..];
    !last.is_empty() && !last.contains(&b'.')
}

/// Decides the route. Master-data paths that carry ids or filters are validated here, because
/// those values, too, end up in the backend's SQL.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Result<Route, ParamError> {
    let view = backend_view(path);
    if !guarded(&view) {
        return Ok(Route::Passthrough);
    }
    // A guarded route reached by another spelling (`/citizens/`, `//open/…`, `%63itizens`,
    // `;jsessionid`, `.json`) would reach the same handler with an unvalidated query.
    if view != path {
        return Err(ParamError {
            param: "path",
            message: format!("use the canonical path {view}"),
        });
    }
    // HEAD runs the GET handler on the backend: it is a read like GET.
    let read = *method == Method::GET || *method == Method::HEAD;
    if path == CITIZENS_PATH {
        return Ok(if read || *method == Method::POST {
            Route::Citizens
        } else if *method == Method::OPTIONS {
            Route::Preflight(Guarded::Citizens)
        } else {
            Route::NotAllowed
        });
    }
    if *method == Method::OPTIONS {
        return Ok(Route::Preflight(Guarded::Master));
    }
    if !read {
        return Ok(Route::NotAllowed);
    }
    let id = |prefix: &str| -> Option<Result<&str, ParamError>> {
        let rest = path.strip_prefix(prefix)?;
        Some(
            if !rest.is_empty() && rest.len() <= 9 && rest.bytes().all(|b| b.is_ascii_digit()) {
                Ok(rest)
            } else {
                Err(ParamError {
                    param: "id",
                    message: "the path must end in a numeric id".into(),
                })
            },
        )
    };
    let route = match path {
        "/open/volunteer/states" => MasterRoute::States,
        "/open/volunteer/parties" => MasterRoute::Parties,
        "/open/volunteer/applicationSettings" => MasterRoute::ApplicationSettings,
        "/api/dashboardStats" => {
            let key = format!("{path}?{}", dashboard_query(query.unwrap_or(""))?);
            return Ok(Route::Master(MasterRoute::DashboardStats, key));
        }
        _ => {
            if let Some(r) = id("/open/volunteer/assemblyConstituencys/") {
                r?;
                MasterRoute::AssemblyConstituencies
            } else if let Some(r) = id("/open/volunteer/wardsAndBooths/") {
                r?;
                MasterRoute::WardsAndBooths
            } else {
                return Ok(Route::NotAllowed);
            }
        }
    };
    // These routes take no query: dropping it keeps one cache entry per route.
    Ok(Route::Master(route, path.to_string()))
}

/// Validates and normalizes `/api/dashboardStats?state&assemblyNo&wardNo&boothNo`.
fn dashboard_query(query: &str) -> Result<String, ParamError> {
    let mut state = None;
    let mut assembly = None;
    let mut ward = None;
    let mut booth = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "state" => &mut state,
            "assemblyNo" => &mut assembly,
            "wardNo" => &mut ward,
            "boothNo" => &mut booth,
            _ => continue,
        };
        *slot = Some(v.into_owned());
    }
    let num_or_all = |param: &'static str, v: Option<String>| -> Result<String, ParamError> {
        match v.as_deref() {
            None | Some("-1") | Some("") => Ok("-1".into()),
            Some(s) if s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(s.into()),
            Some(_) => Err(ParamError {
                param,
                message: "must be -1 or decimal digits".into(),
            }),
        }
    };
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = state.filter(|s| !s.is_empty()) {
        let key = crate::params::WardKey::parse(&s, "1", "1")?;
        out.append_pair("state", &key.state);
    }
    out.append_pair("assemblyNo", &num_or_all("assemblyNo", assembly)?);
    out.append_pair("wardNo", &num_or_all("wardNo", ward)?);
    out.append_pair("boothNo", &num_or_all("boothNo", booth)?);
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified() {
        let get = Method::GET;
        assert_eq!(
            classify(&get, CITIZENS_PATH, None).unwrap(),
            Route::Citizens
        );
        assert_eq!(
            classify(&Method::POST, CITIZENS_PATH, None).unwrap(),
            Route::Citizens
        );
        assert!(matches!(
            classify(&get, "/open/volunteer/wardsAndBooths/12", None).unwrap(),
            Route::Master(MasterRoute::WardsAndBooths, _)
        ));
        assert!(classify(&get, "/open/volunteer/wardsAndBooths/12'", None).is_err());
        assert_eq!(
            classify(&get, "/open/getVotersDataCSV", None).unwrap(),
            Route::Passthrough
        );
        assert_eq!(
            classify(&Method::POST, "/open/volunteer/states", None).unwrap(),
            Route::NotAllowed
        );
        assert_eq!(
            classify(&Method::HEAD, CITIZENS_PATH, None).unwrap(),
            Route::Citizens
        );
        assert_eq!(
            classify(&Method::DELETE, CITIZENS_PATH, None).unwrap(),
            Route::NotAllowed
        );
        assert_eq!(
            classify(&Method::OPTIONS, "/api/dashboardStats", Some("state=x'")).unwrap(),
            Route::Preflight(Guarded::Master)
        );
        for alias in [
            "/open/volunteer/citizens/",
            "//open/volunteer/citizens",
            "/open/volunteer/./citizens",
            "/open/volunteer/%63itizens",
            "/open/volunteer/citizens;jsessionid=1",
            "/open/volunteer/citizens.json",
            "/open/x/../volunteer/citizens",
        ] {
            assert_eq!(
                classify(&get, alias, None).unwrap_err().param,
                "path",
                "{alias}"
            );
        }
    }

    #[test]
    fn dashboard_query_is_validated_and_normalized() {
        let Route::Master(_, a) = classify(
            &Method::GET,
            "/api/dashboardStats",
            Some("wardNo=3&state=Goa&assemblyNo=1"),
        )
        .unwrap() else {
            panic!()
        };
        let Route::Master(_, b) = classify(
            &Method::GET,
            "/api/dashboardStats",
            Some("state=Goa&assemblyNo=1&wardNo=3&boothNo=-1"),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(a, b);
        let e = classify(
            &Method::GET,
            "/api/dashboardStats",
            Some("state=Goa&assemblyNo=1 OR 1=1"),
        )
        .unwrap_err();
        assert_eq!(e.param, "assemblyNo");
        let e = classify(&Method::GET, "/api/dashboardStats", Some("state=Go'a")).unwrap_err();
        assert_eq!(e.param, "state");
    }
}
