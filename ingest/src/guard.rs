//! A connection as the HTTP library reads it, watched for request heads that take too
//! long or grow too large: such a client would otherwise hold its connection (and one of
//! `INGEST_MAX_CONNECTIONS`) for as long as it liked, with no handler yet to time it out.
//!
//! The guard follows the heads in the bytes it passes on: a head ends at its blank line,
//! and the next one starts once the handlers have answered every request seen so far
//! (what comes in between is a body, bounded by the handlers). A slow head ends the
//! connection without an answer, which the sender retries; a large one gets a 431 first
//! when nothing else was said on the connection. Ending is an end of input for the
//! library, so an answer already on its way is still written.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The bounds on a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
}

/// Why the guard ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    HeadTooSlow = 1,
    HeadTooLarge = 2,
}

/// What the handlers and the guard of one connection share.
#[derive(Debug, Default)]
pub struct Watch {
    answered: AtomicU64,
    verdict: AtomicU8,
}

impl Watch {
    /// A request on this connection was answered.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    /// Why the guard ended the connection, if it did.
    pub fn verdict(&self) -> Option<Verdict> {
        match self.verdict.load(Ordering::Acquire) {
            1 => Some(Verdict::HeadTooSlow),
            2 => Some(Verdict::HeadTooLarge),
            _ => None,
        }
    }
}

const TOO_LARGE: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A stream whose request heads are watched.
pub struct Guard<T> {
    io: T,
    watch: Arc<Watch>,
    limits: HeadLimits,
    /// Heads seen whole.
    heads: u64,
    /// Bytes of the head being read, and whether it has more than blank lines.
    head_bytes: usize,
    head_has_text: bool,
    /// The last three bytes read, to find the blank line that ends a head.
    last: [u8; 3],
    /// When the head being awaited must be in.
    timer: Option<Pin<Box<Sleep>>>,
    ended: bool,
}

impl<T> Guard<T> {
    /// A connection just accepted: its first head is due from now.
    pub fn new(io: T, limits: HeadLimits) -> Guard<T> {
        Guard {
            io,
            watch: Arc::default(),
            limits,
            heads: 0,
            head_bytes: 0,
            head_has_text: false,
            last: [0; 3],
            timer: Some(Box::pin(tokio::time::sleep(limits.timeout))),
            ended: false,
        }
    }

    pub fn watch(&self) -> Arc<Watch> {
        self.watch.clone()
    }

    /// Every head seen has been answered: the next bytes start a new one.
    fn awaiting_head(&self) -> bool {
        self.watch.answered.load(Ordering::Acquire) >= self.heads
    }

    /// Follows the head in `bytes`; a verdict when it has to end.
    fn observe(&mut self, bytes: &[u8]) -> Option<Verdict> {
        if bytes.is_empty() || !self.awaiting_head() {
            return None;
        }
        if self.timer.is_none() {
            self.timer = Some(Box::pin(tokio::time::sleep(self.limits.timeout)));
        }
        for &b in bytes {
            self.last = [self.last[1], self.last[2], b];
            self.head_bytes += 1;
            self.head_has_text |= b != b'\r' && b != b'\n';
            // A blank line ends a head (lines may end in CRLF or a bare LF, as the
            // library accepts); blank lines before a request line do not count.
            let blank = self.last[1..] == *b"\n\n" || self.last == *b"\n\r\n";
            if blank && self.head_has_text {
                self.heads += 1;
                self.head_bytes = 0;
                self.head_has_text = false;
                self.timer = None;
                return None;
            }
            if self.head_bytes > self.limits.max_bytes {
                return Some(Verdict::HeadTooLarge);
            }
        }
        None
    }

    /// Ends the connection: an end of input for the library.
    fn end(&mut self, verdict: Verdict, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        T: AsyncWrite + Unpin,
    {
        self.ended = true;
        self.watch.verdict.store(verdict as u8, Ordering::Release);
        let first = self.heads == 0 && self.watch.answered.load(Ordering::Acquire) == 0;
        if verdict == Verdict::HeadTooLarge && first {
            // Best effort: a client that does not read its answer gets none.
            let _ = Pin::new(&mut self.io).poll_write(cx, TOO_LARGE);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        if this.awaiting_head() {
            if let Some(timer) = &mut this.timer {
                if timer.as_mut().poll(cx).is_ready() {
                    return this.end(Verdict::HeadTooSlow, cx);
                }
            }
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            if let Some(verdict) = this.observe(&buf.filled()[before..]) {
                buf.set_filled(before);
                return this.end(verdict, cx);
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: HeadLimits = HeadLimits {
        timeout: Duration::from_millis(200),
        max_bytes: 64,
    };

    #[tokio::test]
    async fn a_head_that_arrives_in_time_passes_and_its_body_is_not_counted() {
        let (client, server) = tokio::io::duplex(4096);
        let mut guard = Guard::new(server, LIMITS);
        let (mut client, mut buf) = (client, vec![0; 4096]);
        client
            .write_all(b"POST /x HTTP/1.1\r\ncontent-length: 200\r\n\r\n")
            .await
            .unwrap();
        client.write_all(&[b'x'; 200]).await.unwrap();
        let mut read = 0;
        while read < 241 {
            read += guard.read(&mut buf).await.unwrap();
        }
        assert_eq!(guard.watch().verdict(), None);
        // The next head (after the answer) is watched again.
        guard.watch().answered();
        client.write_all(&[b'a'; 65]).await.unwrap();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 0, "ended");
        assert_eq!(guard.watch().verdict(), Some(Verdict::HeadTooLarge));
    }

    #[tokio::test]
    async fn a_head_over_the_limit_gets_a_431_and_the_end() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut guard = Guard::new(server, LIMITS);
        client.write_all(&[b'a'; 100]).await.unwrap();
        assert_eq!(guard.read(&mut [0; 4096]).await.unwrap(), 0);
        let mut answer = vec![0; TOO_LARGE.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, TOO_LARGE);
    }

    #[tokio::test]
    async fn a_slow_or_missing_head_ends_the_connection_without_an_answer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut guard = Guard::new(server, LIMITS);
        client.write_all(b"POST /x HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0; 4096];
        assert!(guard.read(&mut buf).await.unwrap() > 0);
        let started = std::time::Instant::now();
        assert_eq!(guard.read(&mut buf).await.unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(guard.watch().verdict(), Some(Verdict::HeadTooSlow));
        // Nothing was written back.
        drop(guard);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn blank_lines_before_a_head_do_not_end_it() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut guard = Guard::new(server, LIMITS);
        client.write_all(b"\r\n\r\n\n\nPOST /x").await.unwrap();
        assert!(guard.read(&mut [0; 4096]).await.unwrap() > 0);
        assert_eq!(guard.read(&mut [0; 4096]).await.unwrap(), 0);
        assert_eq!(guard.watch().verdict(), Some(Verdict::HeadTooSlow));
    }
}
