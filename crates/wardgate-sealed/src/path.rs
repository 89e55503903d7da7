//! Which way a sealed slice leaves: `sendfile`, a copy, or (`Auto`) the one measured cheaper.
//!
//! Neither way wins everywhere. On 2 cores each, 64 connections downloading the same ten
//! 470 KB wards: on one Intel Xeon a full ward cost 60–67 µs of CPU copied and 128–143 µs by
//! `sendfile` (its per-page references contend across cores); on AMD EPYC 95 µs by `sendfile`
//! and 124 µs copied, on another Xeon 32 µs and 49 µs; 47 KB pages cost the same either way
//! on both of the latter. Most of the difference is outside the send's own syscall (timed
//! alone, the two ways were within 20% of each other on AMD, the wrong way round as often as
//! not): copying half a megabyte through the caches slows the rest of the process's work. So
//! `Auto` measures what it costs the whole process: in trials (`TRIAL` each, one way, the
//! other, the other, the first: a drift in load cancels out) every send of one size
//! (`SendSize`) goes one way, and the process's CPU time per byte sent is counted; the cheaper
//! way is then used for that size until its next trials, `BETWEEN_TRIALS` later.
//!
//! Sizes are judged apart because the ways tie on small sends and part on large ones: judged
//! together while only pages were being downloaded, a tie kept whichever way was in use, and
//! whole wards then went the costlier way for 30 s (24% more CPU each on AMD EPYC).
//!
//! **Invariant:** outside trials, a write's choice costs at most three relaxed loads and the
//! sum of its slices' lengths, and a copying write does not look its slices up among the
//! sealed regions; no clock is read on the send path.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How cached answers of at least `MIN_SEALED` bytes reach the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// Kept in ordinary memory and copied into the socket (nothing is sealed).
    Copy,
    /// Sealed and sent by `sendfile`.
    Sendfile,
    /// Sealed, and sent the way that costs this process less, measured in trials (per
    /// `SendSize`).
    Auto,
}

/// The sizes of write that `Auto` judges apart: a page's answer (tens of KiB) and a whole
/// ward's (hundreds). A write is sized, not its answer: what a socket did not take of a large
/// answer at once goes in a write of its own, sized anew (a cost per byte is judged the same
/// either way; what differs with size is how much one send moves through the caches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendSize {
    /// A write of less than `LARGE_SEND` bytes.
    Small = 0,
    /// A write of `LARGE_SEND` bytes or more.
    Large = 1,
}

/// Writes of this many bytes or more (head and body together) are `SendSize::Large`.
pub const LARGE_SEND: usize = 256 << 10;

impl SendSize {
    pub const ALL: [SendSize; 2] = [SendSize::Small, SendSize::Large];

    /// The size of a write of `len` bytes.
    pub fn of(len: usize) -> SendSize {
        if len >= LARGE_SEND {
            SendSize::Large
        } else {
            SendSize::Small
        }
    }

    /// Its label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SendSize::Small => "small",
            SendSize::Large => "large",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One trial: every sealed send of the size on trial goes one way for this long.
pub const TRIAL: Duration = Duration::from_millis(250);
/// How long a size's choice holds before it is tried again: its trials take `4 * TRIAL` of
/// every `BETWEEN_TRIALS + 4 * TRIAL`, half of it the costlier way (1.6% of the time).
pub const BETWEEN_TRIALS: Duration = Duration::from_secs(30);
/// Bytes the size on trial must have sent each way in each half of the trials for its choice
/// to be revised: an idle process's CPU time says nothing about sending.
const MIN_BYTES: u64 = 2 << 20;
/// The way in use is kept unless the other costs at least this much less, in both halves of
/// the trials (trials are noisy, and a build or a burst may land in one of them).
const HYSTERESIS: f64 = 0.95;

const COPY: u8 = 0;
const SENDFILE: u8 = 1;
const AUTO: u8 = 2;
/// `TRIAL_NOW` outside trials; during one it holds `size << 1 | way`.
const NO_TRIAL: u8 = u8::MAX;
/// The way set (`set_send_path`): `COPY`, `SENDFILE` or `AUTO`.
static SET: AtomicU8 = AtomicU8::new(SENDFILE);
/// The trial running, if any: the size on trial and the way its sends take.
static TRIAL_NOW: AtomicU8 = AtomicU8::new(NO_TRIAL);
/// Per size, the way outside its trials when `AUTO`: `true` is `sendfile`. Copy until measured.
static CHOSEN: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
/// Per size, what its last trials that could judge measured, the process's CPU ns per KiB
/// sent: copying, then `sendfile` (0 until then).
static MEASURED: [[AtomicU64; 2]; 2] = [const { [const { AtomicU64::new(0) }; 2] }; 2];

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

/// How a write goes now: sealed slices by `sendfile` or copied, and what a trial counts of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Way {
    pub sendfile: bool,
    pub counted: Counted,
}

/// What the trial running counts of a write's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// No trial is running.
    Not,
    /// A trial of another size: counted in the bytes the process sent.
    Beside,
    /// A trial of this write's size: counted also as the size's own.
    OnTrial,
}

/// The way for a write of `len` bytes now.
pub(crate) fn way(len: usize) -> Way {
    decide(
        SET.load(Ordering::Relaxed),
        || TRIAL_NOW.load(Ordering::Relaxed),
        len,
    )
}

/// `way`, given the way set and (read only under `AUTO`) the trial running.
fn decide(set: u8, trial_now: impl FnOnce() -> u8, len: usize) -> Way {
    if set != AUTO {
        return Way {
            sendfile: set == SENDFILE,
            counted: Counted::Not,
        };
    }
    let size = SendSize::of(len);
    let chosen = || CHOSEN[size.index()].load(Ordering::Relaxed);
    match trial_now() {
        NO_TRIAL => Way {
            sendfile: chosen(),
            counted: Counted::Not,
        },
        t if usize::from(t >> 1) == size.index() => Way {
            sendfile: t & 1 == SENDFILE,
            counted: Counted::OnTrial,
        },
        _ => Way {
            sendfile: chosen(),
            counted: Counted::Beside,
        },
    }
}

/// Counts bytes a write sent during a trial (every write of a plain-TCP connection: the
/// trial's cost is the process's CPU per byte it sent; the size on trial must send enough).
pub(crate) fn sent_in_trial(n: usize, counted: Counted) {
    if counted == Counted::OnTrial {
        TRIED_BYTES.fetch_add(n as u64, Ordering::Relaxed);
    }
    SENT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// The way sends of `size` go outside trials (`true`: `sendfile`).
pub fn chosen(size: SendSize) -> bool {
    match SET.load(Ordering::Relaxed) {
        AUTO => CHOSEN[size.index()].load(Ordering::Relaxed),
        set => set == SENDFILE,
    }
}

/// What the last trials of `size` that could judge measured, the process's CPU ns per KiB
/// sent each way: `[copying, sendfile]`, 0 until they have judged (`SendPath::Auto` only).
pub fn last_trials(size: SendSize) -> [u64; 2] {
    MEASURED[size.index()]
        .each_ref()
        .map(|m| m.load(Ordering::Relaxed))
}

/// What one way cost over its trials: the process's CPU time, the bytes it sent, and how many
/// of them were sends of the size on trial.
#[derive(Clone, Copy, Debug, Default)]
struct Cost {
    cpu_ns: u64,
    bytes: u64,
    tried: u64,
}

impl Cost {
    fn ns_per_kib(&self) -> f64 {
        self.cpu_ns as f64 * 1024.0 / self.bytes.max(1) as f64
    }

    fn plus(self, other: Cost) -> Cost {
        Cost {
            cpu_ns: self.cpu_ns + other.cpu_ns,
            bytes: self.bytes + other.bytes,
            tried: self.tried + other.tried,
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
static SENT_BYTES: AtomicU64 = AtomicU64::new(0);
/// Of those, bytes of the size then on trial.
static TRIED_BYTES: AtomicU64 = AtomicU64::new(0);

/// The trials' thread: the size whose trials are due first is tried, then its choice is
/// made and held `BETWEEN_TRIALS`; while a size sends too little to judge, its trials simply
/// go on (the other's, when due, between them); while the way is set to one of the two,
/// they wait.
fn run_trials() {
    let mut first = [SENDFILE; 2];
    let mut due = [Instant::now(); 2];
    loop {
        if SET.load(Ordering::Relaxed) != AUTO {
            std::thread::sleep(TRIAL);
            continue;
        }
        let size = SendSize::ALL[usize::from(due[1] < due[0])];
        let i = size.index();
        std::thread::sleep(due[i].saturating_duration_since(Instant::now()));
        let halves = try_both(size, first[i]);
        let judged = revise(size, &halves);
        due[i] = Instant::now() + if judged { BETWEEN_TRIALS } else { TRIAL };
        first[i] = other_than(first[i]);
    }
}

/// The way that is not `way` (`COPY` for `SENDFILE`, and back).
fn other_than(way: u8) -> u8 {
    SENDFILE + COPY - way
}

/// Four trials of `size` (`TRIAL` each, the ways in A-B-B-A order, A = `first`: two halves,
/// each trying both ways), and what each cost.
fn try_both(size: SendSize, first: u8) -> Halves {
    let other = other_than(first);
    let mut halves = Halves::default();
    for (i, way) in [first, other, other, first].into_iter().enumerate() {
        TRIAL_NOW.store((size as u8) << 1 | way, Ordering::Relaxed);
        let cpu = process_cpu_ns();
        let sent = SENT_BYTES.load(Ordering::Relaxed);
        let tried = TRIED_BYTES.load(Ordering::Relaxed);
        std::thread::sleep(TRIAL);
        halves[i / 2][usize::from(way)] = Cost {
            cpu_ns: process_cpu_ns().saturating_sub(cpu),
            bytes: SENT_BYTES.load(Ordering::Relaxed).saturating_sub(sent),
            tried: TRIED_BYTES.load(Ordering::Relaxed).saturating_sub(tried),
        };
    }
    TRIAL_NOW.store(NO_TRIAL, Ordering::Relaxed);
    halves
}

/// Revises the way of `size` from its trials just run; whether they measured enough to.
fn revise(size: SendSize, halves: &Halves) -> bool {
    let was = CHOSEN[size.index()].load(Ordering::Relaxed);
    let Some(now) = choose(was, halves) else {
        return false;
    };
    // Reported over all four trials.
    let [copy_ns, sendfile_ns] = [COPY, SENDFILE].map(|w| {
        let w = usize::from(w);
        halves[0][w].plus(halves[1][w]).ns_per_kib().round()
    });
    let measured = &MEASURED[size.index()];
    measured[0].store(copy_ns as u64, Ordering::Relaxed);
    measured[1].store(sendfile_ns as u64, Ordering::Relaxed);
    let label = size.as_str();
    tracing::debug!(
        size = label,
        copy_ns,
        sendfile_ns,
        "send-path trials (CPU ns per KiB sent)"
    );
    if now != was {
        CHOSEN[size.index()].store(now, Ordering::Relaxed);
        tracing::info!(
            size = label,
            copy_cpu_ns_per_kib = copy_ns,
            sendfile_cpu_ns_per_kib = sendfile_ns,
            "sealed answers now sent by {} ({label} sends)",
            if now { "sendfile" } else { "copying" }
        );
    }
    true
}

/// The way to use after trials measured `halves`, `was` in use before (`true`: `sendfile`):
/// the other way only if it cost less by the margin in both halves; `None` when the size on
/// trial sent too little one way in a half to judge.
fn choose(was: bool, halves: &Halves) -> Option<bool> {
    if halves.iter().flatten().any(|c| c.tried < MIN_BYTES) {
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

    /// `cpu_ms` for `mib` sent, all of it by sends of the size on trial.
    fn c(cpu_ms: u64, mib: u64) -> Cost {
        Cost {
            cpu_ns: cpu_ms * 1_000_000,
            bytes: mib << 20,
            tried: mib << 20,
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

    #[test]
    fn other_sizes_sending_do_not_make_a_trial_judge() {
        // Megabytes sent beside the trial (the other size), almost none by the size on trial.
        let beside = Cost {
            tried: 1 << 10,
            ..c(300, 1000)
        };
        assert_eq!(choose(false, &alike(beside, c(100, 1000))), None);
    }

    #[test]
    fn a_write_is_sized_by_all_its_slices() {
        assert_eq!(SendSize::of(47 << 10), SendSize::Small);
        assert_eq!(SendSize::of(LARGE_SEND - 1), SendSize::Small);
        assert_eq!(SendSize::of(LARGE_SEND), SendSize::Large);
        assert_eq!(SendSize::of(470 << 10), SendSize::Large);
    }

    #[test]
    fn a_trial_of_one_size_leaves_the_other_on_its_chosen_way() {
        // Nothing has been chosen in this test process: both sizes copy outside trials.
        let (small, large) = (47 << 10, 470 << 10);
        let trial = |size: SendSize, way: u8| move || (size as u8) << 1 | way;
        let on_trial = |sendfile| Way {
            sendfile,
            counted: Counted::OnTrial,
        };
        let beside = Way {
            sendfile: false,
            counted: Counted::Beside,
        };
        let large_by_sendfile = trial(SendSize::Large, SENDFILE);
        assert_eq!(decide(AUTO, large_by_sendfile, large), on_trial(true));
        assert_eq!(decide(AUTO, large_by_sendfile, small), beside);
        let small_by_copy = trial(SendSize::Small, COPY);
        assert_eq!(decide(AUTO, small_by_copy, small), on_trial(false));
        assert_eq!(decide(AUTO, small_by_copy, large), beside);
        let none = || NO_TRIAL;
        let copied = Way {
            sendfile: false,
            counted: Counted::Not,
        };
        assert_eq!(decide(AUTO, none, large), copied);
    }

    #[test]
    fn a_way_set_outright_ignores_trials() {
        let trial = || (SendSize::Large as u8) << 1 | COPY;
        let not = |sendfile| Way {
            sendfile,
            counted: Counted::Not,
        };
        assert_eq!(decide(SENDFILE, trial, 470 << 10), not(true));
        assert_eq!(decide(COPY, trial, 470 << 10), not(false));
    }
}
