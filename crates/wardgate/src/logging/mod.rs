//! Logs on stderr in batches written by a thread of their own: a stalled log pipe drops lines (counted), it never stalls a request.
//!
//! Every request writes an access-log line. Written on the async workers, a log pipe that
//! stops draining (a stuck collector, a full disk behind it) would stop every request with
//! it; handed line by line to a writer thread, each line would cost a wake-up and a write.
//! So lines are appended to a bounded in-memory batch (`log.buffer_lines`) that the writer
//! thread takes every `FLUSH_EVERY` and writes at once, as nginx's `access_log … buffer=`
//! does; past the bound, lines are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod access;
pub use access::{access, AccessLine};

/// How often the writer thread writes what has been logged: the most a line waits.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The batch of the process's logging, once started.
static BATCH: OnceLock<Arc<Batch>> = OnceLock::new();

/// The format of the process's log lines, once started.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Lines logged and not yet written, and how many were dropped.
struct Batch {
    pending: Mutex<Pending>,
    /// Wakes the writer early, to write the last lines at exit.
    closing: Condvar,
    limit_lines: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: usize,
    closed: bool,
}

impl Batch {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while appending leaves at worst a partial line: keep logging.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one formatted line (tracing writes each event in one call), or counts it
    /// dropped when the batch holds its bound.
    fn append(&self, line: &[u8]) {
        let mut p = self.lock();
        if p.lines >= self.limit_lines {
            drop(p);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.bytes.extend_from_slice(line);
        p.lines += 1;
    }

    /// The writer thread: every `FLUSH_EVERY`, takes the batch and writes it to `out`.
    fn write_out(&self, mut out: impl Write) {
        let mut spare = Vec::new();
        loop {
            let closed = {
                let p = self.lock();
                let (mut p, _) = self
                    .closing
                    .wait_timeout_while(p, FLUSH_EVERY, |p| !p.closed)
                    .unwrap_or_else(|e| e.into_inner());
                std::mem::swap(&mut p.bytes, &mut spare);
                p.lines = 0;
                p.closed
            };
            // Written outside the lock: a stalled pipe blocks this thread only.
            if !spare.is_empty() {
                let _ = out.write_all(&spare).and_then(|()| out.flush());
                spare.clear();
            }
            if closed {
                return;
            }
        }
    }
}

/// What tracing writes each event to: the shared batch.
#[derive(Clone)]
struct ToBatch(Arc<Batch>);

impl Write for ToBatch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ToBatch {
    type Writer = ToBatch;

    fn make_writer(&'a self) -> ToBatch {
        self.clone()
    }
}

/// How long exit waits for the writer to write the last lines: a stalled pipe must not keep
/// the process from stopping.
const LAST_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Keeps the writer thread running; dropping it writes the lines still batched (waiting at
/// most `LAST_WRITE_WAIT`). Holds the receiver the writer thread signals when it ends.
pub struct LogGuard(Option<mpsc::Receiver<()>>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(b) = BATCH.get() {
            b.lock().closed = true;
            b.closing.notify_all();
        }
        if let Some(ended) = self.0.take() {
            let _ = ended.recv_timeout(LAST_WRITE_WAIT);
        }
    }
}

/// Starts logging to stderr in `format`, filtered by `RUST_LOG` (default `info`), with at most
/// `buffer_lines` lines batched for the writer.
pub fn init(format: LogFormat, buffer_lines: u32) -> LogGuard {
    let batch = Arc::new(Batch {
        pending: Mutex::new(Pending::default()),
        closing: Condvar::new(),
        limit_lines: buffer_lines as usize,
        dropped: AtomicU64::new(0),
    });
    if BATCH.set(batch.clone()).is_err() {
        return LogGuard(None); // logging already runs in this process
    }
    let _ = FORMAT.set(format);
    let (ended, writer_ended) = mpsc::channel();
    let writer = {
        let batch = batch.clone();
        std::thread::Builder::new()
            .name("wardgate-log".into())
            .spawn(move || {
                batch.write_out(std::io::stderr());
                let _ = ended.send(());
            })
            .ok()
            .map(|_| writer_ended)
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(ToBatch(batch));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
    LogGuard(writer)
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    BATCH.get().map_or(0, |b| b.dropped.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_bound_are_dropped_and_counted_and_the_rest_written_in_order() {
        let batch = Arc::new(Batch {
            pending: Mutex::new(Pending::default()),
            closing: Condvar::new(),
            limit_lines: 3,
            dropped: AtomicU64::new(0),
        });
        for i in 0..5 {
            ToBatch(batch.clone())
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(batch.dropped.load(Ordering::Relaxed), 2);
        batch.lock().closed = true;
        let mut out = Vec::new();
        batch.write_out(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "line 0\nline 1\nline 2\n");
    }
}
