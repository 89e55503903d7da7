//! How the replica is reached: the pool's options (its bound, UTC sessions, TLS with the CA
//! bundle of `replica.ca_file`), and what its errors say to an operator.

use mysql_async::{DriverError, Error, IoError, Opts, OptsBuilder, Pool, SslOpts};

use super::ReplicaError;
use crate::config::{ReplicaConfig, ReplicaTls};

/// A pool of at most `max_connections` connections to the replica at `url` (its own
/// `pool_max` parameter, if the URL has one, is overridden): each instance of a fleet holds
/// this many, so the replica sees `max_connections` × instances, not 100 × instances.
pub(super) fn pool(
    url: &str,
    cfg: &ReplicaConfig,
    max_connections: usize,
) -> Result<Pool, ReplicaError> {
    let opts = Opts::from_url(url).map_err(Error::from)?;
    let max = max_connections.max(1);
    let constraints = mysql_async::PoolConstraints::new(0, max).unwrap_or_default();
    let pool = mysql_async::PoolOpts::default().with_constraints(constraints);
    let ssl = ssl_opts(&opts, cfg)?;
    let mut opts = OptsBuilder::from_opts(opts)
        .pool_opts(pool)
        .setup(vec!["SET time_zone = '+00:00'"]);
    if let Some(ssl) = ssl {
        // mysql_async otherwise moves a connection to the server's Unix socket when that path
        // exists here, leaving TLS behind: with TLS required, the transport is the one asked for.
        opts = opts.ssl_opts(ssl).prefer_socket(false);
    }
    Ok(Pool::new(opts))
}

/// The TLS options with `tls = "required"`: the URL's own (`verify_identity`, `verify_ca`)
/// when it has any, with `ca_file`'s certificates as the only roots when set.
/// With `tls = "off"` the URL decides; `Config::validate` refuses a URL that asks for TLS then.
fn ssl_opts(opts: &Opts, cfg: &ReplicaConfig) -> Result<Option<SslOpts>, ReplicaError> {
    if cfg.tls == ReplicaTls::Off {
        return Ok(opts.ssl_opts().cloned());
    }
    let mut ssl = opts.ssl_opts().cloned().unwrap_or_default();
    if let Some(ca) = &cfg.ca_file {
        let certs = crate::tls::read_ca_bundle(ca)
            .map_err(|e| ReplicaError::Setup(format!("replica.ca_file: {e}")))?;
        // Passed as DER, parsed here by rustls-pki-types: mysql_async reads no file itself.
        let roots = certs.into_iter().map(|c| c.to_vec().into()).collect();
        ssl = ssl.with_root_certs(roots).with_disable_built_in_roots(true);
    }
    Ok(Some(ssl))
}

/// What to do about `e`, when wardgate knows, given whether TLS was used: appended to its
/// message.
pub(super) fn hint(e: &Error, tls: bool) -> &'static str {
    match e {
        // MySQL's ER_SECURE_TRANSPORT_REQUIRED.
        Error::Server(s) if s.code == 3159 => {
            " (the replica requires TLS: set replica.tls = \"required\")"
        }
        // ER_ACCESS_DENIED_ERROR: MariaDB refuses a connection without TLS so when it
        // requires secure transport, naming no other cause.
        Error::Server(s) if s.code == 1045 && !tls => {
            " (a MariaDB that requires TLS refuses a plain connection so: if this replica does, set replica.tls = \"required\")"
        }
        Error::Driver(DriverError::NoClientSslFlagFromServer) => {
            " (the replica offers no TLS: enable TLS on the server)"
        }
        e if is_tls(e) => {
            " (is replica.ca_file the CA that signed the replica's certificate, and does the certificate name the host of mysql_url?)"
        }
        _ => "",
    }
}

/// Whether `e` is a TLS failure: mysql_async's own, or rustls's from the handshake, which
/// tokio-rustls hands over inside an I/O error.
fn is_tls(e: &Error) -> bool {
    match e {
        Error::Io(IoError::Tls(_)) => true,
        Error::Io(IoError::Io(io)) => io
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>()),
        _ => false,
    }
}

/// The kind of a replica error, for `wardgate_replica_errors_total`.
pub(super) fn kind(e: &ReplicaError) -> &'static str {
    match e {
        ReplicaError::Timeout { .. } => "timeout",
        ReplicaError::MySql { error, .. } => match error {
            e if is_tls(e) => "tls",
            Error::Io(_) => "io",
            Error::Server(_) => "server",
            _ => "driver",
        },
        _ => "other",
    }
}
