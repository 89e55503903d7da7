//! What the cache holds: its keys, its entries, and what a write supersedes.

use std::sync::Arc;

use crate::blob::Blob;
use crate::params::{AssemblyKey, WardKey};
use crate::snapshot::Snapshot;
use crate::time::EpochMs;

/// What is cached: a ward's snapshot, or a blob keyed by path and normalized query.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Ward(WardKey),
    Blob(String),
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheKey::Ward(w) => write!(f, "ward:{w}"),
            CacheKey::Blob(b) => write!(f, "blob:{b}"),
        }
    }
}

/// What an acknowledged write supersedes: one ward, or (a whole-assembly write, whose rows'
/// wards are unknown) every ward of an assembly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WriteScope {
    Ward(WardKey),
    Assembly(AssemblyKey),
}

/// A cached value. Cloning is an `Arc` clone.
#[derive(Clone, Debug)]
pub enum Entry {
    Snapshot(Arc<Snapshot>),
    Blob(Arc<Blob>),
}

impl Entry {
    /// When the source was read for this copy (taken before reading, so never later).
    pub fn built_at(&self) -> EpochMs {
        match self {
            Entry::Snapshot(s) => s.built_at,
            Entry::Blob(b) => b.built_at,
        }
    }

    /// Every write acknowledged before this is in the copy (`Snapshot::seen_at`).
    pub fn seen_at(&self) -> EpochMs {
        match self {
            Entry::Snapshot(s) => s.seen_at,
            Entry::Blob(b) => b.built_at,
        }
    }

    /// Writes acknowledged after `seen_at` that the copy holds (`Snapshot::includes`).
    pub fn includes(&self) -> &[EpochMs] {
        match self {
            Entry::Snapshot(s) => &s.includes,
            Entry::Blob(_) => &[],
        }
    }

    /// When the change watch last found the copy's rows unchanged on the replica (`watch`).
    fn vouched_at(&self) -> Option<EpochMs> {
        match self {
            Entry::Snapshot(s) => s.vouched_at(),
            Entry::Blob(_) => None,
        }
    }

    /// Since when the copy's rows are known complete (the age a delta's overlap must cover,
    /// `overlap`): its own read or last patch (`seen_at`), or a later watch round.
    pub fn complete_since(&self) -> EpochMs {
        self.seen_at()
            .max(self.vouched_at().unwrap_or(EpochMs(i64::MIN)))
    }

    /// When the copy counts as read for max age: its build, or a later watch round (a patch
    /// does not count: it is not a read of the whole ward).
    pub fn fresh_since(&self) -> EpochMs {
        self.built_at()
            .max(self.vouched_at().unwrap_or(EpochMs(i64::MIN)))
    }

    pub fn weight(&self) -> usize {
        match self {
            Entry::Snapshot(s) => s.weight(),
            Entry::Blob(b) => b.weight(),
        }
    }
}

/// The kind of value a typed lookup expects; a key of one kind only ever holds its kind.
pub trait Kind: Sized {
    fn from_entry(e: Entry) -> Option<Self>;
}

impl Kind for Arc<Snapshot> {
    fn from_entry(e: Entry) -> Option<Self> {
        match e {
            Entry::Snapshot(s) => Some(s),
            Entry::Blob(_) => None,
        }
    }
}

impl Kind for Arc<Blob> {
    fn from_entry(e: Entry) -> Option<Self> {
        match e {
            Entry::Blob(b) => Some(b),
            Entry::Snapshot(_) => None,
        }
    }
}
