//! Closes connections that move no bytes for `limits.idle_timeout` (idle keep-alive, stalled
//! clients), so idle sockets cannot pile up against `max_connections`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many reads brought bytes in on one connection: its HTTP/1.1 head timer
/// (`accept::head_timer`) runs from the first of a head's.
#[derive(Clone, Default)]
pub struct Reads(Arc<AtomicU64>);

impl Reads {
    pub fn note(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn seen(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct IdleIo<T> {
    inner: T,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    /// When bytes last moved. Progress only records the time: the timer is re-armed lazily
    /// when it fires, so the hot path never touches the timer wheel.
    last: Instant,
    /// Counts reads that brought bytes, for the connection's head timer.
    reads: Reads,
}

impl<T> IdleIo<T> {
    pub fn new(inner: T, timeout: Duration) -> IdleIo<T> {
        IdleIo {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
            last: Instant::now(),
            reads: Reads::default(),
        }
    }

    /// The count of this connection's reads that brought bytes.
    pub fn reads(&self) -> Reads {
        self.reads.clone()
    }

    /// Progress records the time; waiting checks the deadline, re-arming it if there was
    /// progress since it was set, and failing once a whole timeout passed without any.
    fn track<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.last = Instant::now();
            return r;
        }
        loop {
            match self.deadline.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => {
                    let due = self.last + self.timeout;
                    if due <= Instant::now() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "connection idle timeout",
                        )));
                    }
                    self.deadline.as_mut().reset(due);
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.note();
        }
        self.track(cx, r)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
