//! The timer behind `limits.header_read_timeout`: armed once a request's first bytes are in.
//!
//! hyper starts its head timer when it begins waiting for a request. On a keep-alive
//! connection that is right after the previous answer, so the wait *between* requests counted
//! against the head timeout (10 s) instead of `limits.idle_timeout` (60 s): a load balancer
//! pooling connections for a minute had them closed under it. And every request armed and
//! disarmed a timer in tokio's shared wheel (an allocation and a lock each time).
//!
//! Here hyper's timer is a `HeadTimer` per connection, whose sleeps arm a real timer only
//! once the connection has read bytes since the head wait began and the head is still not
//! complete. A head that arrives whole never touches the timer wheel; a head sent in pieces
//! (a slowloris) has `header_read_timeout` from its first piece; an idle connection is left
//! to `IdleIo`'s idle timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::idle::Reads;

/// One HTTP/1.1 connection's timer for hyper, which asks it for nothing but the head timer.
pub struct HeadTimer {
    reads: Reads,
    /// `limits.header_read_timeout`.
    timeout: Duration,
}

impl HeadTimer {
    pub fn new(reads: Reads, timeout: Duration) -> HeadTimer {
        HeadTimer { reads, timeout }
    }

    fn head(&self, timeout: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            reads: self.reads.clone(),
            reads_at_start: self.reads.seen(),
            timeout,
            armed: None,
        })
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, timeout: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.head(timeout)
    }

    /// hyper's deadline is "now + the head timeout"; the timeout counts from the head's first
    /// bytes instead.
    fn sleep_until(&self, _: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.head(self.timeout)
    }
}

/// A head timer: unarmed while the connection reads nothing.
struct HeadSleep {
    reads: Reads,
    reads_at_start: u64,
    timeout: Duration,
    armed: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Future for HeadSleep {
    type Output = ();

    /// hyper polls its head timer each time the head is still incomplete after a read
    /// attempt. While no bytes came in since the wait began, that is an idle connection:
    /// `Pending` without a wake-up is sound here, because the next bytes wake the connection
    /// (and hyper polls this again) and `IdleIo` ends a connection that stays silent.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            if self.reads.seen() == self.reads_at_start {
                return Poll::Pending;
            }
            self.armed = Some(Box::pin(tokio::time::sleep(self.timeout)));
        }
        match self.armed.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;
    use std::task::Waker;

    fn poll(s: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        s.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_runs_from_the_first_bytes_read_not_from_the_wait() {
        let reads = Reads::default();
        let timer = HeadTimer::new(reads.clone(), Duration::from_secs(10));
        let mut head = timer.sleep_until(Instant::now());
        // Idle: however long, the head timer does not run.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(poll(&mut head).is_pending());
        // Part of a head came in: from now, 10 s.
        reads.note();
        assert!(poll(&mut head).is_pending());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(poll(&mut head).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(poll(&mut head).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_before_the_wait_began_do_not_start_it() {
        let reads = Reads::default();
        reads.note();
        let timer = HeadTimer::new(reads.clone(), Duration::from_secs(1));
        let mut head = timer.sleep(Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(poll(&mut head).is_pending());
    }
}
