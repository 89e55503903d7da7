//! The proxy's allocator, and the one call that hands memory a finished build freed back to
//! the system.
//!
//! mimalloc returns freed pages to the system only once they have been free for a while,
//! and only when a later call of the allocator on some thread gets round to it. A
//! build job frees tens of MiB (the backend's answer, the chunks' JSON) on threads that then
//! sit idle: without a nudge those pages stay resident, and an instance that built its wards
//! holds twice what it serves (`bench/MEMORY.md`).
//!
//! **Invariant:** this is the only crate of the proxy that calls the allocator's own API.

#![deny(unsafe_op_in_unsafe_fn)]

/// The global allocator the product binary installs.
pub use mimalloc::MiMalloc as Allocator;

/// Returns to the system, now, the pages the calling thread's heap and the shared arenas
/// hold free, including blocks other threads freed into this thread's pages. Costs a walk
/// of this thread's pages and a few `madvise` calls (each interrupting the process's other
/// cores to flush their TLBs): for when builds are over, not for a request.
pub fn release_freed() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread at any time;
    // it only reorganises the allocator's own free lists, never memory still allocated.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
