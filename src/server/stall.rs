//! ① A client that stops reading is dropped: a write that cannot make progress for the
//! write-stall timeout fails, which closes the connection, drops the response body and so the
//! upstream request behind it. Without this, a stalled reader would pin a stream, its upstream
//! connection and its concurrency permit for as long as the upstream keeps the stream open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::{Instant, Sleep};

use super::coarse_timer::Reads;

pub(crate) struct StallGuard<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write is pending.
    timer: Option<Pin<Box<Sleep>>>,
    /// The reads that completed, for the connection's header-read timer.
    reads: Option<Arc<Reads>>,
}

impl<T> StallGuard<T> {
    pub(crate) fn new(inner: T, timeout: Duration) -> StallGuard<T> {
        StallGuard {
            inner,
            timeout,
            timer: None,
            reads: None,
        }
    }

    /// Counts its completed reads in `reads`.
    pub(crate) fn counting(mut self, reads: Arc<Reads>) -> StallGuard<T> {
        self.reads = Some(reads);
        self
    }

    /// After a write returned `Pending`: fails once the stall has lasted the timeout.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        ))
    }

    fn guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl<T: Read + Unpin> Read for StallGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(reads)) = (&polled, &this.reads) {
            reads.one();
        }
        polled
    }
}

impl<T: Write + Unpin> Write for StallGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use std::future::poll_fn;

    #[tokio::test]
    async fn a_write_that_stalls_past_the_timeout_fails() {
        // A duplex pipe with a 64-byte buffer nobody reads.
        let (a, _b) = tokio::io::duplex(64);
        let mut g = StallGuard::new(TokioIo::new(a), Duration::from_millis(200));
        let data = [0u8; 64];
        let n = poll_fn(|cx| Pin::new(&mut g).poll_write(cx, &data))
            .await
            .unwrap();
        assert_eq!(n, 64);
        let started = std::time::Instant::now();
        let e = poll_fn(|cx| Pin::new(&mut g).poll_write(cx, &data))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_dropped() {
        use tokio::io::AsyncReadExt;
        let (a, mut b) = tokio::io::duplex(64);
        let mut g = StallGuard::new(TokioIo::new(a), Duration::from_millis(200));
        tokio::spawn(async move {
            let mut buf = [0u8; 32];
            // Reads 32 bytes every 100ms: slower than the writer, never stalled for 200ms.
            while b.read(&mut buf).await.is_ok_and(|n| n > 0) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let data = [0u8; 32];
        for _ in 0..12 {
            poll_fn(|cx| Pin::new(&mut g).poll_write(cx, &data))
                .await
                .unwrap();
        }
    }
}
