//! The backend settings: the legacy upstream (URL, CA), Redis (L2) and the MySQL read replica.
//!
//! They are top-level keys of the file, not a section, so each is checked by a function here.

use std::path::Path;

use super::{invalid, require_file, ConfigError, Secret};

/// `upstream`: an `http://` or `https://` URL naming a host.
pub(super) fn validate_upstream(upstream: &str) -> Result<(), ConfigError> {
    let up: http::Uri = upstream
        .parse()
        .map_err(|e| invalid("upstream", format!("`{upstream}` is not a URL: {e}")))?;
    match up.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(invalid(
                "upstream",
                "must start with http:// or https://, e.g. http://backend:8585",
            ))
        }
    }
    if up.host().is_none() {
        return Err(invalid("upstream", "names no host"));
    }
    Ok(())
}

/// `upstream_ca`: a readable PEM file, when set.
pub(super) fn validate_upstream_ca(ca: Option<&Path>) -> Result<(), ConfigError> {
    ca.map_or(Ok(()), |ca| require_file("upstream_ca", ca))
}

/// `redis_url`: a URL the Redis client accepts, when set.
pub(super) fn validate_redis_url(url: Option<&Secret>) -> Result<(), ConfigError> {
    if let Some(url) = url {
        redis::Client::open(url.expose())
            .map_err(|e| invalid("redis_url", format!("not a Redis URL: {e}")))?;
    }
    Ok(())
}

/// `redis_prefix`: non-empty, without white space (it starts every Redis key) and without
/// braces (a ward's keys carry the ward as their Redis Cluster hash tag, and a brace in the
/// prefix would make the prefix the tag, putting every ward in one slot).
pub(super) fn validate_redis_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
        return Err(invalid(
            "redis_prefix",
            "must be non-empty, without spaces or braces",
        ));
    }
    Ok(())
}

/// `mysql_url`: a URL the MySQL client accepts, when set.
pub(super) fn validate_mysql_url(url: Option<&Secret>) -> Result<(), ConfigError> {
    if let Some(url) = url {
        mysql_async::Opts::from_url(url.expose())
            .map_err(|e| invalid("mysql_url", format!("not a MySQL URL: {e}")))?;
    }
    Ok(())
}
