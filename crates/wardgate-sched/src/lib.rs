//! A thread's scheduling class: the kernel's real-time class, or the normal one.
//!
//! Why a real-time class at all: on a busy machine the normal class lets a running task finish
//! its slice (a few ms, up to the next timer tick) before a thread that just woke gets the
//! core, whatever their niceness. A serving thread woken by a hit then waits behind a build's
//! compression or another process's burst; a thread in `SCHED_FIFO` takes the core at once.
//!
//! **Invariant:** this is the only crate of the proxy that changes a thread's scheduling class.

#![deny(unsafe_op_in_unsafe_fn)]

use std::io;

/// The real-time priority asked for: the lowest, above every thread of the normal class and
/// below any real-time thread the machine's own services run.
const FIFO_PRIORITY: libc::c_int = 1;

/// A thread's scheduling class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `SCHED_OTHER`, the kernel's fair class, at the thread's niceness.
    Normal,
    /// `SCHED_FIFO` at priority 1: runs as soon as it is runnable, until it blocks.
    Realtime,
}

/// A thread of this process, as the kernel numbers it (`gettid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tid(libc::pid_t);

impl Tid {
    /// The calling thread.
    pub fn this_thread() -> Tid {
        // SAFETY: `gettid` takes nothing and cannot fail.
        Tid(unsafe { libc::gettid() })
    }
}

/// Puts thread `tid` of this process in `class`. Threads it starts afterwards begin in the
/// normal class (`SCHED_RESET_ON_FORK`), so a blocking pool grown from it does not inherit the
/// real-time one. Entering the real-time class needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of
/// 1 or more (an error of kind `PermissionDenied` otherwise); leaving it needs nothing.
pub fn set_thread(tid: Tid, class: Class) -> io::Result<()> {
    let (policy, priority) = match class {
        Class::Normal => (libc::SCHED_OTHER, 0),
        Class::Realtime => (libc::SCHED_FIFO, FIFO_PRIORITY),
    };
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is a valid `sched_param` that outlives the call, which only reads it;
    // `tid` names a thread.
    let rc = unsafe { libc::sched_setscheduler(tid.0, policy | libc::SCHED_RESET_ON_FORK, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Thread `tid`'s class as the kernel has it (`Normal` for any policy but `SCHED_FIFO`).
pub fn of_thread(tid: Tid) -> Class {
    // SAFETY: no arguments but a thread id; reads the scheduler's policy.
    let policy = unsafe { libc::sched_getscheduler(tid.0) };
    if policy >= 0 && policy & !libc::SCHED_RESET_ON_FORK == libc::SCHED_FIFO {
        Class::Realtime
    } else {
        Class::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_thread() -> Class {
        of_thread(Tid::this_thread())
    }

    fn set_this_thread(class: Class) -> io::Result<()> {
        set_thread(Tid::this_thread(), class)
    }

    /// Where the real-time class is allowed (root, CAP_SYS_NICE), a thread enters it, its
    /// children start outside it, and it leaves it, and another thread's class is set by its
    /// id; where not, entering is refused as such.
    #[test]
    fn a_thread_enters_and_leaves_the_realtime_class_and_its_children_start_normal() {
        std::thread::spawn(|| match set_this_thread(Class::Realtime) {
            Ok(()) => {
                assert_eq!(this_thread(), Class::Realtime);
                let child = std::thread::spawn(this_thread).join().unwrap();
                assert_eq!(child, Class::Normal, "SCHED_RESET_ON_FORK");
                set_this_thread(Class::Normal).unwrap();
                assert_eq!(this_thread(), Class::Normal);
                let (tx, rx) = std::sync::mpsc::channel();
                let (done, wait) = std::sync::mpsc::channel::<()>();
                let other = std::thread::spawn(move || {
                    tx.send(Tid::this_thread()).unwrap();
                    wait.recv().unwrap();
                    this_thread()
                });
                let tid = rx.recv().unwrap();
                set_thread(tid, Class::Realtime).unwrap();
                assert_eq!(of_thread(tid), Class::Realtime);
                done.send(()).unwrap();
                assert_eq!(other.join().unwrap(), Class::Realtime);
            }
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
                assert_eq!(this_thread(), Class::Normal);
            }
        })
        .join()
        .unwrap();
    }
}
