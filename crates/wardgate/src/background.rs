//! Build work runs below serving's CPU priority: in a cold storm, a hit's few microseconds
//! preempt the builds instead of queueing behind a hundred of them.
//!
//! **Invariant:** only build work (parsing a backend answer, compressing chunks) runs at the
//! lowered priority; the async workers that serve keep the process's own.

use std::cell::Cell;

use tokio::task::JoinHandle;

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

/// Starts `f` at once on a blocking thread lowered to build priority, off the async workers
/// (like `spawn_blocking`, it runs whether or not the handle is awaited yet: a replica build
/// streams rows to it before awaiting it).
pub fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    tokio::task::spawn_blocking(move || {
        lower_this_thread();
        f()
    })
}
