//! The `[cors]` section: the `Access-Control-*` headers browsers need on wardgate's own answers.

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Dur};

/// Where the CORS headers of cached answers, wardgate's errors and preflights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CorsMode {
    /// The backend's own, learned from its answers and preflights per route class and
    /// `Origin` (the default: a DNS switch needs no new setting).
    Learned,
    /// The origins and headers below; wardgate answers preflights itself.
    Configured,
    /// None added: answers relayed from the backend keep the backend's.
    Off,
}

/// CORS parity with the backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// `learned`, `configured` or `off`.
    pub mode: CorsMode,
    /// With `configured`: the origins allowed, exactly as browsers send them
    /// (`http://localhost`, `ionic://localhost`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    /// With `configured`: `Access-Control-Allow-Credentials: true`, the origin echoed (never
    /// with `*`, which browsers refuse with credentials).
    pub allow_credentials: bool,
    /// With `configured`: response headers scripts may read (`Access-Control-Expose-Headers`).
    pub expose_headers: Vec<String>,
    /// With `configured`: request headers a preflight may ask for.
    pub allow_headers: Vec<String>,
    /// With `configured`: how long browsers keep a preflight's answer (whole seconds).
    pub max_age: Dur,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            mode: CorsMode::Learned,
            allowed_origins: Vec::new(),
            allow_credentials: false,
            expose_headers: Vec::new(),
            allow_headers: ["authorization", "content-type", "x-device-id"]
                .map(String::from)
                .to_vec(),
            max_age: Dur(std::time::Duration::from_secs(1800)),
        }
    }
}

impl CorsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let header_ok = |s: &String| {
            !s.is_empty() && http::HeaderValue::from_str(s).is_ok() && !s.contains(['\r', '\n'])
        };
        if self.mode == CorsMode::Configured && self.allowed_origins.is_empty() {
            return Err(invalid(
                "cors.allowed_origins",
                "must name at least one origin (or \"*\") with mode = \"configured\"",
            ));
        }
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            return Err(invalid(
                "cors.allow_credentials",
                "cannot be true with allowed_origins = [\"*\"]: browsers refuse that answer; list the origins",
            ));
        }
        for (setting, list) in [
            ("cors.allowed_origins", &self.allowed_origins),
            ("cors.expose_headers", &self.expose_headers),
            ("cors.allow_headers", &self.allow_headers),
        ] {
            if let Some(bad) = list.iter().find(|s| !header_ok(s)) {
                return Err(invalid(setting, format!("{bad:?} is not a header value")));
            }
        }
        Ok(())
    }
}
