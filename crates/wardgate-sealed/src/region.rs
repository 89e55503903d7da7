//! Sealed regions: creating them, finding the one a slice lies in, and what they hold.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use rustix::fs::{MemfdFlags, SealFlags};

/// Answers smaller than this stay in ordinary memory: copying them costs less than a
/// `sendfile` and a file descriptor.
pub const MIN_SEALED: usize = 16 << 10;

/// One sealed region in the registry, under the address its mapping starts at.
struct Region {
    len: usize,
    fd: Arc<OwnedFd>,
}

/// Every sealed region alive, by start address: writes look their slices up here.
static REGIONS: RwLock<BTreeMap<usize, Region>> = RwLock::new(BTreeMap::new());
static OPEN: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static SENDFILE_BYTES: AtomicU64 = AtomicU64::new(0);
static BUDGET: OnceLock<AtomicUsize> = OnceLock::new();

fn budget() -> &'static AtomicUsize {
    BUDGET.get_or_init(|| AtomicUsize::new(default_fd_budget()))
}

/// The budget regions get unless told otherwise: half the soft `RLIMIT_NOFILE` now in force.
pub(crate) fn default_fd_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20);
    usize::try_from(soft / 2).unwrap_or(usize::MAX)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as servers do at start: the soft limit
/// is often 1,024 while the hard one allows far more) before the budget is first read, and
/// returns the budget then in force. Connections and sealed answers both need descriptors.
pub fn raise_fd_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        // A failure keeps the soft limit as it was; the budget follows whichever holds.
        let _ = setrlimit(Resource::Nofile, raised);
    }
    fd_budget()
}

/// The most regions (file descriptors) that may exist at once.
pub fn fd_budget() -> usize {
    budget().load(Ordering::Relaxed)
}

/// Sets the most regions that may exist at once (0 turns sealing off).
pub(crate) fn set_fd_budget(n: usize) {
    budget().store(n, Ordering::Relaxed);
}

/// What sealed regions hold now, and how many answers stayed in ordinary memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub regions: usize,
    /// Memory the regions take (whole pages).
    pub bytes: usize,
    /// Answers of at least `MIN_SEALED` bytes kept in ordinary memory (budget spent, or a
    /// failed `memfd_create`), since the start.
    pub refused: u64,
    /// Bytes sent from regions by `sendfile`, since the start.
    pub sendfile_bytes: u64,
}

pub fn stats() -> Stats {
    Stats {
        regions: OPEN.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        refused: REFUSED.load(Ordering::Relaxed),
        sendfile_bytes: SENDFILE_BYTES.load(Ordering::Relaxed),
    }
}

pub(crate) fn sent_by_sendfile(n: usize) {
    SENDFILE_BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// `data` in a buffer of its own, exactly sized: a sealed region, or ordinary memory when it is
/// small, the budget is spent or sealing fails.
pub fn seal(data: &[u8]) -> Bytes {
    if data.len() < MIN_SEALED {
        return Bytes::copy_from_slice(data);
    }
    sealed(data).unwrap_or_else(|| {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        Bytes::copy_from_slice(data)
    })
}

/// Memory a mapping of `len` bytes takes: whole pages.
fn paged(len: usize) -> usize {
    len.div_ceil(4096) * 4096
}

/// The owner of a sealed region's mapping: dropping the last `Bytes` of it removes the region.
struct Mapping {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let start = self.map.as_ptr() as usize;
        let mut regions = REGIONS.write().unwrap_or_else(|p| p.into_inner());
        regions.remove(&start);
        drop(regions);
        BYTES.fetch_sub(paged(self.map.len()), Ordering::Relaxed);
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of the budget's places, given back unless a region takes it.
struct Place;

impl Place {
    fn take(limit: usize) -> Option<Place> {
        OPEN.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < limit).then_some(n + 1)
        })
        .ok()
        .map(|_| Place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sealed(data: &[u8]) -> Option<Bytes> {
    let place = Place::take(fd_budget())?;
    let (file, map) = map_sealed(data).ok()?;
    std::mem::forget(place); // the mapping's Drop gives it back
    let start = map.as_ptr() as usize;
    let region = Region {
        len: map.len(),
        fd: Arc::new(OwnedFd::from(file)),
    };
    BYTES.fetch_add(paged(map.len()), Ordering::Relaxed);
    let mapping = Mapping { map };
    REGIONS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(start, region);
    Some(Bytes::from_owner(mapping))
}

/// A memfd holding `data`, sealed, and its read-only mapping.
fn map_sealed(data: &[u8]) -> io::Result<(File, memmap2::Mmap)> {
    let fd = rustix::fs::memfd_create(
        "wardgate-answer",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = File::from(fd);
    file.write_all(data)?;
    let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
    rustix::fs::fcntl_add_seals(&file, seals)?;
    #[allow(unsafe_code)]
    // SAFETY: memmap2 requires that the file not change while mapped. This memfd is sealed
    // against writes, shrinking and growing (and against removing the seals) before it is
    // mapped, and no one else holds it, so its bytes are fixed for the mapping's life.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    if map.len() != data.len() {
        return Err(io::Error::other("sealed file has an unexpected length"));
    }
    Ok((file, map))
}

/// The region `slice` lies in, as the file to send it from and its offset there.
pub(crate) fn locate(slice: &[u8]) -> Option<(Arc<OwnedFd>, u64)> {
    if slice.is_empty() || OPEN.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let addr = slice.as_ptr() as usize;
    let regions = REGIONS.read().ok()?;
    let (start, region) = regions.range(..=addr).next_back()?;
    let inside = addr + slice.len() <= start + region.len;
    inside.then(|| (region.fd.clone(), (addr - start) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>())
    }

    #[test]
    fn sealed_bytes_read_as_the_data_and_are_found_by_their_slices() {
        let original = data(100_000);
        let sealed = seal(&original);
        assert_eq!(sealed, original);
        let (_, off) = locate(&sealed[1000..2000]).expect("a slice of a sealed region");
        assert_eq!(off, 1000);
        let part = sealed.slice(5000..6000);
        assert_eq!(locate(&part).map(|(_, o)| o), Some(5000));
        // ordinary memory is not a region
        assert!(locate(&original[..]).is_none());
        let start = sealed.as_ptr() as usize;
        drop((sealed, part));
        assert!(!REGIONS.read().unwrap().contains_key(&start));
    }

    #[test]
    fn past_the_budget_no_place_is_given() {
        assert!(Place::take(0).is_none(), "a spent budget gives no place");
        assert!(Place::take(usize::MAX).is_some());
    }

    #[test]
    fn small_answers_stay_in_ordinary_memory() {
        let small = data(MIN_SEALED - 1);
        let copy = seal(&small);
        assert_eq!(copy, small);
        assert!(locate(&copy).is_none());
    }
}
