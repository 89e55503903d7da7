//! One build per key: concurrent misses join the build already running instead of starting one.
//!
//! **Invariant:** a build is a spawned task, never owned by a requester's future, so a client
//! that disconnects (its future dropped) only stops *waiting*; the build completes for everyone
//! else. The map entry is removed when the build ends, success, error or panic alike.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// What waiters receive: the value, or the build's error shared by all of them.
pub type Outcome<V, E> = Option<Result<V, Arc<E>>>;

/// Why a wait ended without a value.
#[derive(Debug)]
pub enum WaitError<E> {
    /// The build did not finish within the wait bound (it goes on).
    TimedOut,
    /// The build failed; every waiter sees the same error.
    Failed(Arc<E>),
    /// The build task died (panicked) without an answer.
    Aborted,
}

pub struct Coalescer<K, V, E> {
    inflight: Mutex<HashMap<K, watch::Receiver<Outcome<V, E>>>>,
}

impl<K, V, E> Default for Coalescer<K, V, E> {
    fn default() -> Self {
        Coalescer {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the map entry when the build task ends, however it ends.
struct Deregister<K: Hash + Eq, V, E> {
    owner: Arc<Coalescer<K, V, E>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V, E> Drop for Deregister<K, V, E> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            if let Ok(mut map) = self.owner.inflight.lock() {
                map.remove(&k);
            }
        }
    }
}

impl<K, V, E> Coalescer<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Joins the build for `key`, or starts `make()` as a new spawned build. Returns the
    /// receiver and whether this call started the build.
    pub fn join<F>(
        self: &Arc<Self>,
        key: &K,
        make: impl FnOnce() -> F,
    ) -> (watch::Receiver<Outcome<V, E>>, bool)
    where
        F: Future<Output = Result<V, E>> + Send + 'static,
    {
        let mut map = match self.inflight.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = map.get(key) {
            return (rx.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx.clone());
        drop(map);
        let build = make();
        let guard = Deregister {
            owner: self.clone(),
            key: Some(key.clone()),
        };
        crate::background::spawn_build(async move {
            let result = build.await.map_err(Arc::new);
            // Send before deregistering: a request arriving in between joins and sees the value.
            let _ = tx.send(Some(result));
            drop(guard);
        });
        (rx, true)
    }

    /// How many builds are running.
    pub fn running(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether a build for `key` is running.
    pub fn is_running(&self, key: &K) -> bool {
        self.inflight
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }
}

/// Waits for a build's outcome, at most `bound`.
pub async fn wait<V: Clone, E>(
    mut rx: watch::Receiver<Outcome<V, E>>,
    bound: Duration,
) -> Result<V, WaitError<E>> {
    match tokio::time::timeout(bound, rx.wait_for(Option::is_some)).await {
        Err(_) => Err(WaitError::TimedOut),
        Ok(Err(_)) => Err(WaitError::Aborted),
        Ok(Ok(v)) => match &*v {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(WaitError::Failed(e.clone())),
            None => Err(WaitError::Aborted),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_joins_share_one_build() {
        let c: Arc<Coalescer<u32, u32, String>> = Arc::default();
        let builds = Arc::new(AtomicUsize::new(0));
        let mut waits = Vec::new();
        for _ in 0..50 {
            let b = builds.clone();
            let (rx, _) = c.join(&7, || async move {
                b.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(42)
            });
            waits.push(tokio::spawn(wait(rx, Duration::from_secs(5))));
        }
        for w in waits {
            assert_eq!(w.await.unwrap().unwrap(), 42);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(!c.is_running(&7));
        assert_eq!(c.running(), 0, "the ended build is deregistered");
    }

    #[tokio::test]
    async fn the_build_survives_its_first_requester_going_away() {
        let c: Arc<Coalescer<u32, u32, String>> = Arc::default();
        let (rx, started) = c.join(&1, || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(5)
        });
        assert!(started);
        assert_eq!(c.running(), 1);
        // The first requester's client disconnects: its wait is dropped mid-way.
        let first = tokio::spawn(wait(rx, Duration::from_secs(5)));
        first.abort();
        let (rx2, started2) = c.join(&1, || async { Ok(999) });
        assert!(!started2, "joined the running build");
        assert_eq!(wait(rx2, Duration::from_secs(5)).await.unwrap(), 5);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_and_the_entry_is_removed() {
        let c: Arc<Coalescer<u32, u32, String>> = Arc::default();
        let (rx, _) = c.join(&1, || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err("backend down".to_string())
        });
        let (rx2, _) = c.join(&1, || async { Ok(1) });
        for rx in [rx, rx2] {
            match wait(rx, Duration::from_secs(5)).await {
                Err(WaitError::Failed(e)) => assert_eq!(*e, "backend down"),
                other => panic!("{other:?}"),
            }
        }
        assert!(!c.is_running(&1));
        let (rx, started) = c.join(&1, || async { Ok(3) });
        assert!(started, "a new build starts after the failed one");
        assert_eq!(wait(rx, Duration::from_secs(5)).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn waits_are_bounded_and_panics_do_not_wedge_the_key() {
        let c: Arc<Coalescer<u32, u32, String>> = Arc::default();
        let (rx, _) = c.join(&1, || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(1)
        });
        assert!(matches!(
            wait(rx, Duration::from_millis(20)).await,
            Err(WaitError::TimedOut)
        ));

        let (rx, _) = c.join(&2, || async {
            if true {
                panic!("build bug");
            }
            Ok(1)
        });
        assert!(matches!(
            wait(rx, Duration::from_secs(5)).await,
            Err(WaitError::Aborted)
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!c.is_running(&2));
    }
}
