//! Build work runs below serving's CPU priority: in a cold storm, a hit's few microseconds
//! preempt the builds instead of queueing behind a hundred of them.
//!
//! **Invariant:** only build work (parsing a backend answer, compressing chunks) runs at the
//! lowered priority; the async workers that serve keep the process's own, or rise above it
//! while cold work is in flight (`cold`).
//!
//! A build's I/O (Redis reads, the backend fetch) runs on the build runtime when the process
//! has one (`serve` starts it: `set_build_runtime`), so a storm's backend answers are read
//! beside the serving workers instead of in their queues.
//!
//! Builds and their jobs are cold work (`cold`): while any runs, the serving workers may take
//! the real-time class.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use tokio::sync::Semaphore;
use tokio::task::JoinError;

use crate::cold::ColdWork;

/// The runtime builds are spawned on; unset (tests, `warm`), the caller's.
static BUILD_RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Makes `handle` the runtime every later build is spawned on (once per process).
pub fn set_build_runtime(handle: tokio::runtime::Handle) {
    let _ = BUILD_RUNTIME.set(handle);
}

/// Spawns a build: on the build runtime if the process has one, else on the current one.
pub fn spawn_build<F>(build: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // The build's I/O buffers (the backend's answer, Redis replies) were allocated on this
    // runtime's threads and are freed by now: their pages go back to the system once every
    // build has ended (`Entered`). Cold from now: the serving workers take the real-time
    // class before the build is first polled.
    let cold = ColdWork::start();
    let build = async move {
        let _in_flight = BUILDS.enter();
        let _cold = cold;
        build.await
    };
    match BUILD_RUNTIME.get() {
        Some(rt) => rt.spawn(build),
        None => tokio::spawn(build),
    }
}

/// How far below serving build threads run (`nice` steps): at +10 a busy build thread gets
/// about a tenth of the CPU a serving thread gets when both want it, and all of it otherwise.
pub const BUILD_NICENESS: i32 = 10;

thread_local! {
    static LOWERED: Cell<bool> = const { Cell::new(false) };
}

/// Lowers the calling thread's priority once (Linux keeps a nice value per thread). A thread
/// may always lower its own priority; a failure only costs the preference.
pub fn lower_this_thread() {
    if LOWERED.with(|l| l.replace(true)) {
        return;
    }
    if let Err(e) = rustix::process::nice(BUILD_NICENESS) {
        tracing::debug!(error = %e, "could not lower a build thread's priority");
    }
}

/// Starts the compression pool (one thread per core) with its threads lowered. Idempotent:
/// a second server in the same process (tests) finds the pool started.
pub fn start_pool() {
    let _ = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("wardgate-build-{i}"))
        .start_handler(|_| lower_this_thread())
        .build_global();
}

/// How many build jobs may run at once, per core. A niced thread weighs a tenth of a serving
/// one, but weights add up: a hundred build threads of a cold storm, runnable together, would
/// outweigh the async workers ten to one and stall every hit behind them. A few per core keep
/// the cores busy (a replica build also waits on its rows) and the builds' total weight below
/// one serving thread's.
const JOBS_PER_CORE: usize = 2;

/// The build jobs' slots: `JOBS_PER_CORE` × the cores.
fn slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Semaphore::new(cores * JOBS_PER_CORE)
    })
}

/// Starts `f` at once on a blocking thread lowered to build priority, off the async workers,
/// as soon as a build slot is free (like `spawn_blocking`, it is started whether or not the
/// returned future is awaited yet: a replica build streams rows to it before awaiting it).
/// Jobs wait for a slot in the order they came, so in a storm the first builds finish first
/// and release their waiters, instead of all sharing the cores and finishing together.
pub fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, JoinError>> {
    run_in(slots(), f)
}

/// `run` for a build's job (parsing and chunking a ward): the memory it frees (the backend's
/// answer, the chunks' JSON, some of it freed by the pool into this thread's pages) goes back
/// to the system when the last job in flight ends (`Entered`), or as its thread ends. Not
/// for every job: a release returns every free page, and a job that runs often (a write's
/// patch) would fault its buffers in again each time.
pub fn run_build<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, JoinError>> {
    let cold = ColdWork::start();
    run_in(slots(), move || {
        let _in_flight = JOBS.enter();
        let _cold = cold;
        f()
    })
}

/// One kind of build work in flight (spawned builds, build jobs), and how many times it has
/// gone quiet (back to none).
struct InFlight {
    now: AtomicUsize,
    quiet: AtomicU64,
}

/// Spawned builds (`spawn_build`): their I/O, on the build runtime's workers.
static BUILDS: InFlight = InFlight::new();
/// Build jobs (`run_build`): parsing and chunking, on blocking threads.
static JOBS: InFlight = InFlight::new();

impl InFlight {
    const fn new() -> InFlight {
        InFlight {
            now: AtomicUsize::new(0),
            quiet: AtomicU64::new(0),
        }
    }

    fn enter(&'static self) -> Entered {
        self.now.fetch_add(1, Ordering::AcqRel);
        Entered(self)
    }

    /// Releases this thread's freed memory if this kind of work went quiet since the thread
    /// last did and is quiet still; whether it did.
    fn release_if_quiet(&self) -> bool {
        let quiet = self.quiet.load(Ordering::Acquire);
        let due = RELEASED_FOR.with(|r| r.replace(quiet)) != quiet
            && self.now.load(Ordering::Acquire) == 0;
        if due {
            wardgate_alloc::release_freed();
        }
        due
    }
}

/// One build (or job) in flight. The last of its kind to end hands back, on its thread, what
/// the builds freed.
///
/// Why not every build: a release returns every free page of the process (a `madvise` per
/// range, and a TLB shootdown interrupting the serving threads on the other cores), and the
/// next build faults its buffers in again. In a cold storm, a release per build cost about
/// a tenth of wardgate's CPU and stretched the storm's p99 by as much; once the builds are
/// over, one release per thread gets the same memory back.
struct Entered(&'static InFlight);

impl Drop for Entered {
    fn drop(&mut self) {
        if self.0.now.fetch_sub(1, Ordering::AcqRel) == 1 {
            wardgate_alloc::release_freed();
            self.0.quiet.fetch_add(1, Ordering::AcqRel);
        }
    }
}

thread_local! {
    /// The last time the spawned builds went quiet that this thread released for.
    static RELEASED_FOR: Cell<u64> = const { Cell::new(0) };
}

/// For the build runtime's workers as they park: hands back what this thread's heap holds
/// freed if the builds have gone quiet since it last did (an atomic load otherwise). The
/// last build to end releases its own thread's heap only, and a build's I/O buffers were
/// freed on whichever worker ran it.
pub fn release_when_quiet() {
    BUILDS.release_if_quiet();
}

/// How long an idle blocking thread of the build runtime lives: it then hands back what its
/// heap holds freed, as it ends (jobs that ended while others ran did not release).
pub const JOB_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

fn run_in<T: Send + 'static>(
    slots: &'static Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl Future<Output = Result<T, JoinError>> {
    let job = tokio::spawn(async move {
        // The semaphore is never closed; without a slot the job still runs.
        let _slot = slots.acquire().await.ok();
        tokio::task::spawn_blocking(move || {
            lower_this_thread();
            f()
        })
        .await
    });
    async move { job.await? }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn only_the_last_build_in_flight_to_end_releases_and_each_parked_thread_follows_once() {
        let kind: &'static InFlight = Box::leak(Box::new(InFlight::new()));
        let (first, second) = (kind.enter(), kind.enter());
        drop(first);
        assert_eq!(
            kind.quiet.load(Ordering::SeqCst),
            0,
            "another build still runs"
        );
        assert!(!kind.release_if_quiet(), "nothing went quiet yet");
        drop(second);
        assert_eq!(
            kind.quiet.load(Ordering::SeqCst),
            1,
            "the last one out released"
        );
        // A thread that parks afterwards releases once, then not again until the next quiet.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (done, first_two) = std::sync::mpsc::channel::<()>();
        let parked = std::thread::spawn(move || {
            let once = kind.release_if_quiet();
            let again = kind.release_if_quiet();
            done.send(()).unwrap();
            wait.recv().unwrap();
            (once, again, kind.release_if_quiet())
        });
        first_two.recv().unwrap();
        drop(kind.enter()); // another quiet, on this thread
        go.send(()).unwrap();
        assert_eq!(parked.join().unwrap(), (true, false, true));
        // Not while a build runs, even after a quiet.
        let running = kind.enter();
        let parked = std::thread::spawn(move || kind.release_if_quiet());
        assert!(!parked.join().unwrap());
        drop(running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_beyond_the_slots_wait_and_start_in_the_order_they_came() {
        let slots: &'static Semaphore = Box::leak(Box::new(Semaphore::new(2)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        let mut jobs = Vec::new();
        for i in 0..6 {
            let (running, most, started) = (running.clone(), most.clone(), started.clone());
            jobs.push(run_in(slots, move || {
                started.lock().unwrap().push(i);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 10
            }));
            // Each job asks for its slot before the next is made.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut answers = Vec::new();
        for j in jobs {
            answers.push(j.await.unwrap());
        }
        assert_eq!(answers, vec![0, 10, 20, 30, 40, 50]);
        assert_eq!(most.load(Ordering::SeqCst), 2, "at most two jobs at once");
        let order = started.lock().unwrap().clone();
        assert_eq!(
            &order[2..],
            &[2, 3, 4, 5],
            "waiting jobs start in order: {order:?}"
        );
    }
}
