//! Logs on stderr, written by a thread of their own: a stalled log pipe drops lines (counted), it never stalls a request.
//!
//! Every request writes an access-log line. Written on the async workers, a log pipe that
//! stops draining (a stuck collector, a full disk behind it) would stop every request with
//! it; through `tracing_appender`'s non-blocking writer, lines wait in a bounded queue
//! (`log.buffer_lines`) and, past it, are dropped and counted.

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The dropped-line counter of the process's writer.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread running; dropping it flushes the lines still queued.
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

/// Starts logging to stderr in `format`, filtered by `RUST_LOG` (default `info`), with at most
/// `buffer_lines` lines queued for the writer.
pub fn init(format: LogFormat, buffer_lines: u32) -> LogGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(buffer_lines as usize)
        .thread_name("wardgate-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    LogGuard(guard)
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}
