//! A warm's progress: a bar on a terminal, else a log line every 5 s, each with rows/s and an
//! ETA, published in Redis for the status page of every instance; then the report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::WarmReport;
use crate::cache::l2::L2;
use crate::cache::warm_progress::WarmProgress;
use crate::params::WardKey;
use crate::time::EpochMs;

/// Between two log lines and two records in Redis.
const EVERY: Duration = Duration::from_secs(5);

/// What the warm has done so far, shared with the ticker.
struct Counts {
    start: Instant,
    started: EpochMs,
    total: u64,
    done: AtomicU64,
    failed: AtomicU64,
    rows: AtomicU64,
    source: &'static str,
    until: EpochMs,
}

impl Counts {
    /// Whether there is progress to publish: a ward built or found fresh. A warm refused
    /// before its first copy (Redis too small, rows shaped unlike the backend's) stores
    /// nothing, its progress included.
    fn stored_any(&self) -> bool {
        self.done.load(Ordering::Relaxed) > self.failed.load(Ordering::Relaxed)
    }

    fn snapshot(&self, finished: bool) -> WarmProgress {
        let (done, rows) = (
            self.done.load(Ordering::Relaxed),
            self.rows.load(Ordering::Relaxed),
        );
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        // Wards left at the pace of those done so far (fresh ones skipped included).
        let eta_seconds = (done > 0)
            .then(|| ((self.total - done.min(self.total)) as f64 * secs / done as f64) as u64);
        WarmProgress {
            started: self.started,
            updated: EpochMs::now(),
            source: self.source.to_string(),
            total: self.total,
            done,
            failed: self.failed.load(Ordering::Relaxed),
            rows,
            rows_per_sec: (rows as f64 / secs) as u64,
            eta_seconds,
            stored_until: self.until,
            finished,
        }
    }
}

/// Progress of a run.
pub(super) struct Progress {
    counts: Arc<Counts>,
    bar: Option<indicatif::ProgressBar>,
    l2: Arc<L2>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// `total` wards read from `source`, stored in `l2` until `until`.
    pub(super) fn start(
        total: usize,
        l2: Arc<L2>,
        source: &'static str,
        until: EpochMs,
    ) -> Progress {
        let counts = Arc::new(Counts {
            start: Instant::now(),
            started: EpochMs::now(),
            total: total as u64,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            source,
            until,
        });
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} wards  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let ticker = tokio::spawn(tick(counts.clone(), l2.clone()));
        Progress {
            counts,
            bar,
            l2,
            ticker,
        }
    }

    pub(super) fn ward_done(&self, r: &Result<Option<usize>, String>) {
        let c = &self.counts;
        match r {
            Ok(Some(n)) => {
                c.rows.fetch_add(*n as u64, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(_) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.done.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            let p = c.snapshot(false);
            b.set_message(format!("{} rows, {} rows/s", p.rows, p.rows_per_sec));
            b.inc(1);
        }
    }

    pub(super) async fn finish(
        self,
        results: Vec<(WardKey, Result<Option<usize>, String>)>,
    ) -> WarmReport {
        self.ticker.abort();
        if let Some(b) = &self.bar {
            b.finish();
        }
        if self.counts.stored_any() {
            self.l2.publish_warm(&self.counts.snapshot(true)).await;
        }
        let mut report = WarmReport {
            elapsed: self.counts.start.elapsed(),
            rows: self.counts.rows.load(Ordering::Relaxed),
            ..WarmReport::default()
        };
        for (w, r) in results {
            match r {
                Ok(Some(_)) => report.built += 1,
                Ok(None) => report.skipped += 1,
                Err(e) => report.failed.push((w, e)),
            }
        }
        report
    }
}

/// Every `EVERY`: a log line (without a bar) and the record in Redis.
async fn tick(counts: Arc<Counts>, l2: Arc<L2>) {
    let mut t = tokio::time::interval(EVERY);
    loop {
        t.tick().await;
        let p = counts.snapshot(false);
        if !std::io::stderr().is_terminal() {
            tracing::info!(
                done = p.done,
                total = p.total,
                rows = p.rows,
                rows_per_sec = p.rows_per_sec,
                eta_seconds = p.eta_seconds,
                "warming"
            );
        }
        if counts.stored_any() {
            l2.publish_warm(&p).await;
        }
    }
}
