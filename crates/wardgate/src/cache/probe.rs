//! Whether replica-built rows can be served: one ward built both ways, shapes compared, now and then.
//!
//! **Invariant:** a ward is built from the replica only while the last comparison, made with
//! the row format in force, found the replica's rows shaped as the backend's. Until then, and
//! after a mismatch, wards are built from the backend, so no phone gets rows in a shape the
//! backend would not send.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::build::BuildError;
use crate::gate::Permit;
use crate::legacy::RowFormat;
use crate::metrics::{Metrics, OutcomeNameLabels};
use crate::params::{CitizensQuery, Scope, WardKey};
use crate::replica::shape::{self, Verdict};
use crate::replica::Replica;
use crate::route::CITIZENS_PATH;
use crate::time::EpochMs;
use crate::upstream::Upstream;

/// What the last comparison found, and with which row format.
#[derive(Clone, Debug)]
struct Checked {
    format: RowFormat,
    at: Instant,
    verdict: Verdict,
}

/// The shape probe's state, shared by every build of the process.
#[derive(Default)]
pub struct Trust {
    last: Mutex<Option<Checked>>,
    /// A comparison is running: one at a time.
    probing: AtomicBool,
}

impl Trust {
    fn last(&self) -> Option<Checked> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether wards may be built from the replica with `format`.
    pub fn replica_ok(&self, format: RowFormat) -> bool {
        self.last()
            .is_some_and(|c| c.format == format && matches!(c.verdict, Verdict::Same { .. }))
    }

    /// Claims the next comparison when one is due (none with this format yet, or the last is
    /// older than `every`) and none is running. The caller must `record` or `release`.
    pub fn claim(&self, format: RowFormat, every: Duration) -> bool {
        let due = self
            .last()
            .is_none_or(|c| c.format != format || c.at.elapsed() >= every);
        due && !self.probing.swap(true, Ordering::SeqCst)
    }

    /// Gives up a claimed comparison that could not run.
    pub fn release(&self) {
        self.probing.store(false, Ordering::SeqCst);
    }

    /// Records a comparison's result (an inconclusive one leaves the last result in force).
    pub fn record(&self, format: RowFormat, verdict: Verdict, metrics: &Metrics) {
        let outcome = match &verdict {
            Verdict::Same { rows } => {
                tracing::info!(
                    rows,
                    "replica rows are shaped as the backend's: building wards from the replica"
                );
                "same"
            }
            Verdict::Differs(m) => {
                tracing::error!(field = %m.field, setting = m.setting, "replica rows differ from the backend's, building wards from the backend: {m}");
                "differs"
            }
            Verdict::Inconclusive(why) => {
                tracing::warn!("replica shape probe inconclusive: {why}");
                "inconclusive"
            }
        };
        let labels = OutcomeNameLabels { outcome };
        metrics.replica_probes.get_or_create(&labels).inc();
        if !matches!(verdict, Verdict::Inconclusive(_)) {
            let checked = Checked {
                format,
                at: Instant::now(),
                verdict,
            };
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(checked);
        }
        metrics
            .replica_trusted
            .set(i64::from(self.replica_ok(format)));
        self.release();
    }

    /// Trusts replica rows in `format` without a comparison here (`warm` compared already).
    pub fn assume(&self, format: RowFormat) {
        let checked = Checked {
            format,
            at: Instant::now(),
            verdict: Verdict::Same { rows: 0 },
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(checked);
    }

    /// For `/readyz`: what the last comparison found.
    pub fn describe(&self) -> String {
        match self.last() {
            None => "not compared with the backend yet: wards are built from the backend".into(),
            Some(c) => match c.verdict {
                Verdict::Same { rows } => format!(
                    "shaped as the backend's ({rows} rows compared {}s ago)",
                    c.at.elapsed().as_secs()
                ),
                Verdict::Differs(m) => {
                    format!("differs from the backend, wards built from it: {m}")
                }
                Verdict::Inconclusive(why) => why,
            },
        }
    }
}

/// The backend's path for a ward's full read.
pub fn ward_path(w: &WardKey) -> String {
    let q = CitizensQuery {
        scope: Scope::Ward(w.clone()),
        booths: None,
        since_ms: None,
        page: None,
    };
    format!("{CITIZENS_PATH}?{}", q.to_upstream_query())
}

/// A backend slot: the probe's reads hold one like every build.
async fn permit(upstream: &Upstream, max_queued: usize) -> Result<Permit, BuildError> {
    upstream
        .gate()
        .enter(max_queued)
        .await
        .map_err(|_| BuildError::Shed)
}

/// Builds `w` from the replica and compares it with `backend`, the backend's answer for it.
pub async fn against_replica(
    upstream: &Upstream,
    replica: &Replica,
    w: &WardKey,
    backend: &[u8],
    format: RowFormat,
    max_queued: usize,
) -> Result<Verdict, BuildError> {
    let permit = permit(upstream, max_queued).await?;
    let snap = Arc::new(
        replica
            .build_ward(w, EpochMs::now(), format, &permit)
            .await?,
    );
    drop(permit);
    let ours = tokio::task::spawn_blocking(move || snap.full_identity().collect())
        .await
        .map_err(|e| BuildError::Task(e.to_string()))??;
    Ok(shape::compare(backend, &ours))
}

/// Reads `w` from the backend and from the replica and compares them (`check-config --probe`,
/// `warm`, and a configured `replica.probe_ward`).
pub async fn compare_ward(
    upstream: &Upstream,
    replica: &Replica,
    w: &WardKey,
    format: RowFormat,
    max_queued: usize,
) -> Result<Verdict, BuildError> {
    let permit = permit(upstream, max_queued).await?;
    let backend = upstream.fetch(&ward_path(w), permit).await?.ok()?.body;
    against_replica(upstream, replica, w, &backend, format, max_queued).await
}
