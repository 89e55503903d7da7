//! Answers held in sealed memory files, sent by the kernel straight from them (Linux).
//!
//! A cached answer is sent thousands of times a second. Sent from ordinary memory, every send
//! copies it into the socket (`copy_from_iter`: about a sixth of a page hit's CPU, most of a
//! full ward's); nginx avoids the copy with `sendfile` from the page cache. [`seal`] puts an
//! answer in a memfd, seals it against any change and maps it read-only: the answer stays an
//! ordinary `Bytes` for every reader (slicing, inflating, Redis), and [`SendfileStream`]
//! recognises its slices in a write and hands them to `sendfile`, which sends the file's pages
//! without copying them.
//!
//! Which costs less, `sendfile` or a copy, depends on the machine and the answer's size:
//! [`set_send_path`] picks one, or [`SendPath::Auto`] measures both in turn and uses the
//! cheaper, for small and large sends apart (`path`).
//!
//! **Invariant:** a sealed region's bytes never change while it exists: its memfd carries
//! `F_SEAL_WRITE`, `F_SEAL_SHRINK`, `F_SEAL_GROW` and `F_SEAL_SEAL` before it is mapped, and no
//! one else holds the file. This makes the one `unsafe` mapping sound, and lets the kernel keep
//! sending its pages after `sendfile` returns.
//!
//! **Invariant:** a region costs one file descriptor; at most [`fd_budget`] regions exist at
//! once (half the soft `RLIMIT_NOFILE` by default). Past it, and on any failure, `seal` returns
//! the answer in ordinary memory: sent with a copy, never refused.

#![deny(unsafe_code)]

mod path;
mod region;
mod stream;

pub use path::{
    chosen, last_trials, set_send_path, SendPath, SendSize, BETWEEN_TRIALS, LARGE_SEND, TRIAL,
};
pub use region::{fd_budget, raise_fd_limit, seal, stats, Stats, MIN_SEALED};
pub use stream::SendfileStream;
