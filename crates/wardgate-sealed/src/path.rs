//! Which way a sealed slice leaves: `sendfile`, a copy, or (`Auto`) the one measured cheaper.
//!
//! Neither way wins everywhere. On 2 cores each, 64 connections downloading the same ten
//! 470 KB wards: on Intel Xeon a full ward cost 60–67 µs of CPU copied and 128–143 µs by
//! `sendfile` (its per-page references contend across cores); on AMD EPYC 70 µs by `sendfile`
//! and 90–135 µs copied. Most of the difference is outside the send's own syscall (timed
//! alone, the two ways were within 20% of each other on AMD, the wrong way round as often as
//! not): copying half a megabyte through the caches slows the rest of the process's work. So
//! `Auto` measures what it costs the whole process: in trials (`TRIAL` each, one way, the
//! other, the other, the first: a drift in load cancels out) every sealed send goes one way,
//! and the process's CPU time per byte sent is counted; the cheaper way is then used until the
//! next trials, `BETWEEN_TRIALS` later.
//!
//! **Invariant:** outside trials, a write's choice costs at most three relaxed loads, and a
//! copying write does not look its slices up among the sealed regions; no clock is read on
//! the send path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How cached answers of at least `MIN_SEALED` bytes reach the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// Kept in ordinary memory and copied into the socket (nothing is sealed).
    Copy,
    /// Sealed and sent by `sendfile`.
    Sendfile,
    /// Sealed, and sent the way that costs this process less, measured in trials.
    Auto,
}

/// One trial: every sealed send goes one way for this long.
pub const TRIAL: Duration = Duration::from_millis(250);
/// How long a choice holds before it is tried again: trials take `4 * TRIAL` of every
/// `BETWEEN_TRIALS + 4 * TRIAL`, half of it the costlier way (1.6% of the time).
pub const BETWEEN_TRIALS: Duration = Duration::from_secs(30);
/// Bytes each way must have sent in each half of the trials for the choice to be revised: an
/// idle process's CPU time says nothing about sending.
const MIN_BYTES: u64 = 2 << 20;
/// The way in use is kept unless the other costs at least this much less, in both halves of
/// the trials (trials are noisy, and a build or a burst may land in one of them).
const HYSTERESIS: f64 = 0.95;

const COPY: u8 = 0;
const SENDFILE: u8 = 1;
const AUTO: u8 = 2;
const NO_TRIAL: u8 = 3;
/// The way set (`set_send_path`): `COPY`, `SENDFILE` or `AUTO`.
static SET: AtomicU8 = AtomicU8::new(SENDFILE);
/// The way every sealed send takes during a trial (`COPY` or `SENDFILE`), else `NO_TRIAL`.
static TRIAL_WAY: AtomicU8 = AtomicU8::new(NO_TRIAL);
/// The way outside trials when `AUTO`: `true` is `sendfile`. Copy until measured.
static CHOSEN: AtomicBool = AtomicBool::new(false);
/// What the last trials that could judge measured, the process's CPU ns per KiB sent:
/// copying, then `sendfile` (0 until then).
static MEASURED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// Sets how cached answers are sent, process-wide, before any is sealed: `Copy` seals none
/// (a budget of 0), the others up to `default_fd_budget`. `Auto` starts the trials (once).
pub fn set_send_path(path: SendPath) {
    let budget = match path {
        SendPath::Copy => 0,
        SendPath::Sendfile | SendPath::Auto => crate::region::default_fd_budget(),
    };
    crate::region::set_fd_budget(budget);
    match path {
        SendPath::Copy => SET.store(COPY, Ordering::Relaxed),
        SendPath::Sendfile => SET.store(SENDFILE, Ordering::Relaxed),
        SendPath::Auto => {
            static TRIALS: OnceLock<()> = OnceLock::new();
            SET.store(AUTO, Ordering::Relaxed);
            TRIALS.get_or_init(|| {
                let spawned = std::thread::Builder::new()
                    .name("wardgate-send-trials".into())
                    .spawn(run_trials);
                if let Err(e) = spawned {
                    // Without trials sealed answers keep being copied: correct, maybe costlier.
                    tracing::warn!(
                        error = %e,
                        "send-path trials not started; sealed answers are copied"
                    );
                }
            });
        }
    }
}

/// How a write goes now: sealed slices by `sendfile` or copied, and whether a trial counts
/// its bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Way {
    pub sendfile: bool,
    pub trial: bool,
}

/// The way for a write now.
pub(crate) fn way() -> Way {
    match SET.load(Ordering::Relaxed) {
        AUTO => match TRIAL_WAY.load(Ordering::Relaxed) {
            NO_TRIAL => Way {
                sendfile: CHOSEN.load(Ordering::Relaxed),
                trial: false,
            },
            way => Way {
                sendfile: way == SENDFILE,
                trial: true,
            },
        },
        set => Way {
            sendfile: set == SENDFILE,
            trial: false,
        },
    }
}

/// Counts bytes a write sent during a trial (every write of a plain-TCP connection: the
/// trial's cost is the process's CPU per byte it sent).
pub(crate) fn sent_in_trial(n: usize) {
    TRIAL_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// The way sealed answers go outside trials (`true`: `sendfile`).
pub fn chosen() -> bool {
    match SET.load(Ordering::Relaxed) {
        AUTO => CHOSEN.load(Ordering::Relaxed),
        set => set == SENDFILE,
    }
}

/// What the last trials that could judge measured, the process's CPU ns per KiB sent each
/// way: `[copying, sendfile]`, 0 until trials have judged (`SendPath::Auto` only).
pub fn last_trials() -> [u64; 2] {
    MEASURED.each_ref().map(|m| m.load(Ordering::Relaxed))
}

/// What one way cost over its trials: the process's CPU time, and the bytes it sent.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    cpu_ns: u64,
    bytes: u64,
}

impl Cost {
    fn ns_per_kib(&self) -> f64 {
        self.cpu_ns as f64 * 1024.0 / self.bytes.max(1) as f64
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            cpu_ns: self.cpu_ns + other.cpu_ns,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// What each way cost in each half of the trials (A-B, then B-A): `[half][way]`, the ways
/// indexed `COPY` and `SENDFILE`.
type Halves = [[Cost; 2]; 2];

/// The process's CPU time (all threads, user and system), ns; 0 where the clock cannot be
/// read (then every trial measures nothing, and the way stays as it is).
fn process_cpu_ns() -> u64 {
    cpu_time::ProcessTime::try_now()
        .map(|t| u64::try_from(t.as_duration().as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Bytes plain-TCP connections sent during trials, so far.
static TRIAL_BYTES: AtomicU64 = AtomicU64::new(0);

/// The trials' thread: four trials (`TRIAL` each, the ways in A-B-B-A order, A alternating:
/// two halves, each trying both ways), then the choice, held `BETWEEN_TRIALS` once it could
/// be made (while little is sent, trials simply go on; while the way is set to one of the
/// two, they wait).
fn run_trials() {
    let mut first = SENDFILE;
    loop {
        if SET.load(Ordering::Relaxed) != AUTO {
            std::thread::sleep(TRIAL);
            continue;
        }
        let other = SENDFILE + COPY - first;
        let mut halves = Halves::default();
        for (i, way) in [first, other, other, first].into_iter().enumerate() {
            TRIAL_WAY.store(way, Ordering::Relaxed);
            let (cpu, bytes) = (process_cpu_ns(), TRIAL_BYTES.load(Ordering::Relaxed));
            std::thread::sleep(TRIAL);
            halves[i / 2][usize::from(way)] = Cost {
                cpu_ns: process_cpu_ns().saturating_sub(cpu),
                bytes: TRIAL_BYTES.load(Ordering::Relaxed).saturating_sub(bytes),
            };
        }
        TRIAL_WAY.store(NO_TRIAL, Ordering::Relaxed);
        if revise(&halves) {
            std::thread::sleep(BETWEEN_TRIALS);
        }
        first = other;
    }
}

/// Revises the way from the trials just run; whether they measured enough to.
fn revise(halves: &Halves) -> bool {
    let was = CHOSEN.load(Ordering::Relaxed);
    let Some(now) = choose(was, halves) else {
        return false;
    };
    // Reported over all four trials.
    let [copy_ns, sendfile_ns] = [COPY, SENDFILE].map(|w| {
        let w = usize::from(w);
        halves[0][w].plus(halves[1][w]).ns_per_kib().round()
    });
    MEASURED[0].store(copy_ns as u64, Ordering::Relaxed);
    MEASURED[1].store(sendfile_ns as u64, Ordering::Relaxed);
    tracing::debug!(
        copy_ns,
        sendfile_ns,
        "send-path trials (CPU ns per KiB sent)"
    );
    if now != was {
        CHOSEN.store(now, Ordering::Relaxed);
        tracing::info!(
            copy_cpu_ns_per_kib = copy_ns,
            sendfile_cpu_ns_per_kib = sendfile_ns,
            "sealed answers now sent by {}",
            if now { "sendfile" } else { "copying" }
        );
    }
    true
}

/// The way to use after trials measured `halves`, `was` in use before (`true`: `sendfile`):
/// the other way only if it cost less by the margin in both halves; `None` when a way sent
/// too little in a half to judge.
fn choose(was: bool, halves: &Halves) -> Option<bool> {
    if halves.iter().flatten().any(|c| c.bytes < MIN_BYTES) {
        return None;
    }
    let (kept, other) = if was {
        (usize::from(SENDFILE), usize::from(COPY))
    } else {
        (usize::from(COPY), usize::from(SENDFILE))
    };
    let cheaper = |h: &[Cost; 2]| h[other].ns_per_kib() < h[kept].ns_per_kib() * HYSTERESIS;
    Some(if halves.iter().all(cheaper) {
        !was
    } else {
        was
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cpu_ms: u64, mib: u64) -> Cost {
        Cost {
            cpu_ns: cpu_ms * 1_000_000,
            bytes: mib << 20,
        }
    }

    /// Both halves measuring `copy` and `sendfile` alike.
    fn alike(copy: Cost, sendfile: Cost) -> Halves {
        [[copy, sendfile], [copy, sendfile]]
    }

    #[test]
    fn the_cheaper_way_per_byte_is_chosen() {
        // sendfile: 300 ms for 2,000 MiB; copy: 300 ms for 1,000 MiB
        let h = alike(c(300, 1000), c(300, 2000));
        assert_eq!(choose(false, &h), Some(true));
        let h = alike(c(300, 2000), c(300, 1000));
        assert_eq!(choose(true, &h), Some(false));
    }

    #[test]
    fn a_near_tie_keeps_the_way_in_use() {
        assert_eq!(
            choose(false, &alike(c(100, 1000), c(97, 1000))),
            Some(false)
        );
        assert_eq!(choose(true, &alike(c(97, 1000), c(100, 1000))), Some(true));
    }

    #[test]
    fn halves_that_disagree_keep_the_way_in_use() {
        // The second half's copying trial had a build beside it: copying looks dear there only.
        let h = [[c(100, 1000), c(100, 1000)], [c(300, 1000), c(100, 1000)]];
        assert_eq!(choose(false, &h), Some(false));
        let h = [[c(300, 1000), c(100, 1000)], [c(300, 1000), c(100, 1000)]];
        assert_eq!(choose(false, &h), Some(true));
    }

    #[test]
    fn too_little_sent_changes_nothing() {
        assert_eq!(choose(false, &alike(c(300, 1000), c(1, 1))), None);
        assert_eq!(choose(true, &alike(c(1, 0), c(300, 1000))), None);
        let h = [[c(300, 1000), c(300, 1000)], [c(300, 1), c(300, 1000)]];
        assert_eq!(choose(true, &h), None);
    }
}
