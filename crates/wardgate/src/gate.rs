//! The gate every backend request passes: a cap on concurrent requests and on the queue before it.
//!
//! A [`Permit`] can only be had from [`Gate::enter`]; the functions that reach the backend (the
//! upstream's and the replica's) take one as an argument, so a request that skipped the gate
//! does not compile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Proof that a request holds one of the gate's slots; the slot frees when it is dropped.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
}

/// The gate is full and so is its queue: the caller answers 503 + `Retry-After`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the backend is at its concurrency limit")]
pub struct Shed;

/// Bounds concurrent backend requests and the queue in front of them.
pub struct Gate {
    permits: Arc<Semaphore>,
    size: AtomicUsize,
    queued: AtomicUsize,
}

impl Gate {
    pub fn new(n: usize) -> Gate {
        Gate {
            permits: Arc::new(Semaphore::new(n)),
            size: AtomicUsize::new(n),
            queued: AtomicUsize::new(0),
        }
    }

    /// Follows a reloaded cap: adds permits, or retires free ones (busy ones retire as they end).
    pub fn resize(&self, n: usize) {
        let old = self.size.swap(n, Ordering::SeqCst);
        if n > old {
            self.permits.add_permits(n - old);
        } else if n < old {
            self.permits.forget_permits(old - n);
        }
    }

    /// A slot now, or after waiting in a queue of at most `max_queued` others.
    pub async fn enter(&self, max_queued: usize) -> Result<Permit, Shed> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(Permit { _slot: p });
        }
        if self.queued.fetch_add(1, Ordering::SeqCst) >= max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Shed);
        }
        let p = self.permits.clone().acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        p.map(|p| Permit { _slot: p }).map_err(|_| Shed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_gate_sheds_beyond_its_queue() {
        let g = Arc::new(Gate::new(1));
        let held = g.enter(0).await.unwrap();
        assert!(g.enter(0).await.is_err());
        let g2 = g.clone();
        let waiter = tokio::spawn(async move { g2.enter(1).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(g.enter(1).await.is_err(), "queue of 1 is full");
        drop(held);
        assert!(waiter.await.unwrap().is_ok());
    }
}
