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

/// `redis_url`, `redis_ca`, `redis_cluster`: URLs the Redis client accepts (several only for a
/// Cluster's seed nodes), all of one scheme; certificates always verified; a CA only with
/// `rediss://`, and a readable PEM bundle.
pub(super) fn validate_redis(
    url: Option<&Secret>,
    ca: Option<&Path>,
    cluster: bool,
) -> Result<(), ConfigError> {
    let Some(url) = url else {
        if ca.is_some() || cluster {
            return Err(invalid(
                "redis_url",
                "redis_ca and redis_cluster need a redis_url",
            ));
        }
        return Ok(());
    };
    let urls: Vec<&str> = url.expose().split(',').map(str::trim).collect();
    if urls.len() > 1 && !cluster {
        return Err(invalid(
            "redis_url",
            "several URLs name a Redis Cluster's seed nodes: set redis_cluster = true",
        ));
    }
    for u in &urls {
        redis::Client::open(*u)
            .map_err(|e| invalid("redis_url", format!("not a Redis URL: {e}")))?;
        if u.contains('#') {
            return Err(invalid(
                "redis_url",
                "a URL fragment (such as #insecure) is not accepted: Redis certificates are always verified",
            ));
        }
    }
    let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
    if tls != 0 && tls != urls.len() {
        return Err(invalid("redis_url", "mixes redis:// and rediss:// nodes"));
    }
    if let Some(ca) = ca {
        if tls == 0 {
            return Err(invalid("redis_ca", "needs a rediss:// redis_url (TLS)"));
        }
        crate::tls::read_ca_bundle(ca).map_err(|e| invalid("redis_ca", e))?;
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
