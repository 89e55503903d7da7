//! A TCP stream whose writes send sealed slices with `sendfile` and everything else as usual.

use std::io::{self, IoSlice};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::path;
use crate::region::locate;

/// A plain TCP connection that sends sealed answers without copying them, where that costs
/// less (`path`).
///
/// A write of slices (HTTP/1.1 head, then body) is taken in order: the ordinary slices before
/// the first sealed one go out with `MSG_MORE` (so the head shares a segment with the body),
/// then the sealed slice goes with `sendfile`; where copying is the way, slices are written
/// as by any stream. Each call reports how much it sent, as any write does; the caller writes
/// the rest again.
pub struct SendfileStream {
    tcp: TcpStream,
}

impl SendfileStream {
    pub fn new(tcp: TcpStream) -> SendfileStream {
        SendfileStream { tcp }
    }

    /// Runs a non-blocking send once the socket is writable, until it does not block.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        mut send: impl FnMut() -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_io(Interest::WRITABLE, &mut send) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &OwnedFd,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, || {
            let mut at = offset;
            let n = rustix::fs::sendfile(&self.tcp, file, Some(&mut at), len)?;
            crate::region::sent_by_sendfile(n);
            Ok(n)
        })
    }

    fn poll_send_more(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_send(cx, || {
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            let mut control = SendAncillaryBuffer::default();
            Ok(rustix::net::sendmsg(&self.tcp, bufs, &mut control, flags)?)
        })
    }

    /// One write: when sending by `sendfile`, ordinary slices up to the first sealed one, then
    /// that one by `sendfile`; else every slice copied, as any stream writes them.
    fn poll_write_way(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
        sendfile: bool,
    ) -> Poll<io::Result<usize>> {
        let sealed = if sendfile {
            bufs.iter()
                .enumerate()
                .find_map(|(i, b)| locate(b).map(|(fd, off)| (i, fd, off)))
        } else {
            None
        };
        match sealed {
            None => Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs),
            Some((0, fd, off)) => self.poll_sendfile(cx, &fd, off, bufs[0].len()),
            Some((first, ..)) => self.poll_send_more(cx, &bufs[..first]),
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let way = path::way(bufs.iter().map(|b| b.len()).sum());
        let sent = ready!(self.as_mut().poll_write_way(cx, bufs, way.sendfile))?;
        if way.counted != path::Counted::Not {
            path::sent_in_trial(sent, way.counted);
        }
        Poll::Ready(Ok(sent))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn head_ordinary_and_sealed_slices_arrive_in_order_and_whole() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let sealed = crate::seal(&body);
        assert!(locate(&sealed).is_some(), "the body is sealed");
        let reader = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // read slowly at first, so the sender meets a full socket buffer
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = SendfileStream::new(tcp);
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let tail = b"--end".to_vec();
        let slices: Vec<&[u8]> = vec![&head, &sealed[10..], &tail, &sealed[..10]];
        let before = crate::stats().sendfile_bytes;
        let mut sent = 0;
        let total: usize = slices.iter().map(|s| s.len()).sum();
        while sent < total {
            let mut skip = sent;
            let mut io = Vec::new();
            for s in &slices {
                if skip >= s.len() {
                    skip -= s.len();
                    continue;
                }
                io.push(IoSlice::new(&s[skip..]));
                skip = 0;
            }
            sent += s.write_vectored(&io).await.unwrap();
        }
        s.shutdown().await.unwrap();
        drop(s);
        let got = reader.await.unwrap();
        let mut want = head.clone();
        want.extend_from_slice(&body[10..]);
        want.extend_from_slice(&tail);
        want.extend_from_slice(&body[..10]);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
        let by_sendfile = crate::stats().sendfile_bytes - before;
        assert!(
            by_sendfile >= body.len() as u64,
            "{by_sendfile} bytes sent by sendfile"
        );
    }
}
