//! wardgate: an edge read-cache and sync proxy for the SmartNeta voter-outreach backend.
//!
//! See ARCHITECTURE.md for the bird's-eye view and `proxy` for the life of a request. Modules
//! are layers, listed here from the bottom up: each uses only the layers below it (kept by
//! `tests/tidy.rs`).
#![forbid(unsafe_code)]

// Foundation: configuration, wire formats, I/O helpers.
pub mod background;
pub mod body;
pub mod cold;
pub mod config;
pub mod gate;
pub mod gzip;
pub mod idle;
pub mod legacy;
pub mod logging;
pub mod request_id;
pub mod time;
pub mod tls;
// Vocabulary: what requests and cached answers are.
pub mod blob;
pub mod metrics;
pub mod params;
pub mod route;
pub mod snapshot;
// Sources: the backend, over HTTP and through the read replica.
pub mod replica;
pub mod upstream;
// The cache.
pub mod cache;
// Serving a request.
pub mod assembly;
pub mod budget;
pub mod cors;
pub mod limit;
pub mod proxy;
pub mod respond;
pub mod shared;
// The process: listeners, admin, commands.
pub mod accept;
pub mod admin;
pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod purge;
pub mod server;
pub mod warm;
