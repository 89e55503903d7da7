//! Cold work in flight, and the serving workers' scheduling class, which follows it.
//!
//! Cold work is what a cold morning brings besides hits: ward builds (the backend's answers
//! parsed and compressed) and first reads waiting on Redis for their client's ward budget.
//! While any is in flight the serving workers may run in the kernel's real-time class
//! (`runtime.realtime_while_cold`), and in the normal class otherwise.
//!
//! Why: in a cold storm the cores are busy (the first requests' intake, the builds), and on
//! a shared machine other processes are too. The normal class lets a busy thread finish its
//! slice before a woken serving worker runs, whatever their niceness: hits beside a storm
//! waited 5–18 ms for a core (dev harness, 2 cores, `perf sched`). A worker in the real-time
//! class runs as soon as a hit wakes it. Not always: where clients share the cores (a load
//! generator on the same box), preempting them at every request cost a quarter to a third of
//! the page hits, and with nothing cold in flight there is nothing of ours to give way to.
//!
//! **Invariant:** the serving workers are in the real-time class only while cold work is in
//! flight (up to their next park or wake after it ends), and only if the setting is on.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use wardgate_sched::{Class, Tid};

/// `runtime.realtime_while_cold`; set once, at start.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// The kernel refused the real-time class (no `CAP_SYS_NICE`, no `RLIMIT_RTPRIO`): not asked
/// again.
static REFUSED: AtomicBool = AtomicBool::new(false);
/// Times the serving workers entered the real-time class.
static ENTERED: AtomicU64 = AtomicU64::new(0);
/// Cold work in flight.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Whether the serving workers were last put in the real-time class.
static REALTIME: AtomicBool = AtomicBool::new(false);
/// The serving workers, as they first parked or woke. Held while their class changes.
static WORKERS: Mutex<Vec<Tid>> = Mutex::new(Vec::new());

thread_local! {
    static IS_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Lets the serving workers take the real-time class while cold work is in flight.
pub fn realtime_while_cold() {
    ENABLED.store(true, Ordering::Release);
}

/// One piece of cold work, in flight until dropped. Its start puts the serving workers in
/// the real-time class at once (the worker starting it may be busy a while before it next
/// parks, and the others may be parked); its end leaves them to go back as they next park or
/// wake.
pub struct ColdWork(());

impl ColdWork {
    pub fn start() -> ColdWork {
        IN_FLIGHT.fetch_add(1, Ordering::AcqRel);
        follow();
        ColdWork(())
    }
}

impl Drop for ColdWork {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// For the serving runtime's workers as they park and wake: the first call names the thread
/// a serving worker, and each puts the workers in the class the cold work in flight calls
/// for (a few atomic loads when it already is theirs).
pub fn follow_cold_work() {
    if !IS_WORKER.with(|w| w.replace(true)) {
        let tid = Tid::this_thread();
        workers().push(tid);
        // A worker that joins the set late starts in the set's class.
        if REALTIME.load(Ordering::Acquire) {
            set_all(std::slice::from_ref(&tid), Class::Realtime);
        }
    }
    follow();
}

/// The real-time class's entries since the start, and whether the kernel refused it.
pub fn realtime_entries() -> (u64, bool) {
    (
        ENTERED.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Acquire),
    )
}

fn follow() {
    let want = || IN_FLIGHT.load(Ordering::Acquire) > 0 && !REFUSED.load(Ordering::Acquire);
    if !ENABLED.load(Ordering::Acquire) || REALTIME.load(Ordering::Acquire) == want() {
        return;
    }
    // Changes are serialised, and decided again under the lock: the last one to take it sets
    // the class for what is in flight then.
    let workers = workers();
    let want = want();
    if REALTIME.load(Ordering::Acquire) == want {
        return;
    }
    let class = if want { Class::Realtime } else { Class::Normal };
    if set_all(&workers, class) && want {
        ENTERED.fetch_add(1, Ordering::Relaxed);
    }
    REALTIME.store(want && !REFUSED.load(Ordering::Acquire), Ordering::Release);
}

/// Puts `workers` in `class`; false if the kernel refused it (then all are put back).
fn set_all(workers: &[Tid], class: Class) -> bool {
    for &tid in workers {
        if let Err(e) = wardgate_sched::set_thread(tid, class) {
            if class == Class::Realtime && !REFUSED.swap(true, Ordering::AcqRel) {
                tracing::warn!(error = %e, "serving workers stay in the normal class during cold work: the real-time class needs CAP_SYS_NICE or an RLIMIT_RTPRIO of 1 or more");
            }
            for &tid in workers {
                let _ = wardgate_sched::set_thread(tid, Class::Normal);
            }
            return false;
        }
    }
    true
}

fn workers() -> MutexGuard<'static, Vec<Tid>> {
    // A list of thread ids: a panic elsewhere cannot leave it half-written.
    WORKERS.lock().unwrap_or_else(|p| p.into_inner())
}
