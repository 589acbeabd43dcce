//! A TCP stream that sends what one turn of the scheduler wrote as one segment, and holds back
//! HTTP/2 PING acknowledgements (see [`super`] for why).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::frames::FrameCursor;

/// How long an acknowledgement of etcd's ping may be held back: far below any ping timeout
/// (etcd's keepalive allows 20 s), and long enough that a busy connection sends a few a second
/// rather than one per request.
const ACK_HOLD: Duration = Duration::from_millis(50);

/// Buffered bytes beyond which a write sends first (a large request goes out in pieces).
const MAX_BUFFERED: usize = 64 * 1024;

/// A TCP stream whose writes are buffered until a flush, and whose flush first lets the
/// scheduler run the other ready tasks once (one yield), so that the frames several tasks queue
/// for one request leave in one segment. The yield schedules the connection task again at once,
/// and its next poll sends.
///
/// On a plain (not TLS) connection it also reads what it sends as HTTP/2 frames
/// ([`FrameCursor`]) and holds PING acknowledgements back: [`ACK_HOLD`] after the first, a
/// timer wakes the connection task, whose flush sends them behind the frames buffered then.
pub(super) struct Coalescing {
    stream: TcpStream,
    /// Written and not yet sent.
    buffered: Vec<u8>,
    /// Where `buffered` is read up to, as frames; `None` under TLS (or if the bytes were not
    /// HTTP/2 frames after all: then nothing is held back).
    frames: Option<FrameCursor>,
    /// PING acknowledgements taken out of `buffered`, held back.
    acks: Vec<u8>,
    /// When the held acknowledgements must go.
    acks_due: Option<Pin<Box<Sleep>>>,
    /// The last flush yielded: the next one sends.
    yielded: bool,
}

impl Coalescing {
    /// `plain`: the connection carries HTTP/2 as is (no TLS), so its frames can be read.
    pub(super) fn new(stream: TcpStream, plain: bool) -> Self {
        Coalescing {
            stream,
            buffered: Vec::with_capacity(1024),
            frames: plain.then(FrameCursor::default),
            acks: Vec::new(),
            acks_due: None,
            yielded: false,
        }
    }

    /// Takes the PING acknowledgements out of what was written since the last call.
    fn take_acks(&mut self) {
        if let Some(cursor) = &mut self.frames {
            if cursor.take_ping_acks(&mut self.buffered, &mut self.acks).is_err() {
                self.frames = None;
            }
        }
    }

    /// Sends every buffered byte.
    fn send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.take_acks();
        if self.frames.as_ref().is_some_and(|cursor| cursor.read < self.buffered.len()) {
            // A frame not written whole: from here on, bytes go as they are written.
            self.release_acks();
            self.frames = None;
        }
        while !self.buffered.is_empty() {
            let sent = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.buffered))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buffered.drain(..sent);
            if let Some(cursor) = &mut self.frames {
                cursor.read -= sent;
            }
        }
        self.yielded = false;
        Poll::Ready(Ok(()))
    }

    /// Makes room for more bytes if the buffer is full.
    fn room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buffered.len() >= MAX_BUFFERED {
            ready!(self.send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Puts the held acknowledgements back in line, between whole frames.
    fn release_acks(&mut self) {
        self.acks_due = None;
        if self.acks.is_empty() {
            return;
        }
        // Acknowledgements are only held while the frames are read, so `read` is known.
        let at = self.frames.as_ref().map_or(self.buffered.len(), |cursor| cursor.read);
        let held = self.acks.len();
        self.buffered.splice(at..at, self.acks.drain(..));
        if let Some(cursor) = &mut self.frames {
            cursor.read += held;
        }
    }
}

impl AsyncRead for Coalescing {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalescing {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.room(cx))?;
        this.buffered.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.room(cx))?;
        let mut written = 0;
        for slice in slices {
            this.buffered.extend_from_slice(slice);
            written += slice.len();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_acks();
        if !this.acks.is_empty() {
            // Polled, the timer wakes the connection task when it is up: its flush sends them.
            let due = this.acks_due.get_or_insert_with(|| Box::pin(tokio::time::sleep(ACK_HOLD)));
            if due.as_mut().poll(cx).is_ready() {
                this.release_acks();
            }
        }
        if this.buffered.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if !this.yielded {
            // Let the tasks woken with us queue their frames first; we are polled again next.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.take_acks();
        this.release_acks();
        ready!(this.send(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::connection::frames::PREFACE;

    const PING_ACK: [u8; 17] = [0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    const HEADERS: [u8; 14] = [0, 0, 5, 1, 4, 0, 0, 0, 1, b'h', b'p', b'a', b'c', b'k'];

    /// A connection (`plain`: HTTP/2 as is, not under TLS) to a loopback listener, and the
    /// listener's end.
    async fn pair(plain: bool) -> (Coalescing, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (ours, theirs) = tokio::join!(TcpStream::connect(address), listener.accept());
        (Coalescing::new(ours.expect("connect"), plain), theirs.expect("accept").0)
    }

    /// Reads exactly `n` bytes the other end sent, within a second.
    async fn received(theirs: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        tokio::time::timeout(Duration::from_secs(1), theirs.read_exact(&mut bytes))
            .await
            .expect("the bytes arrived within a second")
            .expect("read");
        bytes
    }

    #[tokio::test]
    async fn writes_arrive_in_order_once_flushed() {
        let (mut ours, mut theirs) = pair(true).await;
        ours.write_all(PREFACE).await.expect("write");
        ours.write_all(&HEADERS).await.expect("write");
        ours.flush().await.expect("flush");
        assert_eq!(received(&mut theirs, PREFACE.len() + HEADERS.len()).await, [PREFACE, &HEADERS].concat());
    }

    #[tokio::test]
    async fn a_ping_acknowledgement_is_held_back_then_sent_after_the_frames_written_meanwhile() {
        let (mut ours, mut theirs) = pair(true).await;
        ours.write_all(PREFACE).await.expect("write");
        ours.write_all(&PING_ACK).await.expect("write");
        ours.flush().await.expect("flush");
        assert_eq!(received(&mut theirs, PREFACE.len()).await, PREFACE, "the preface, without the acknowledgement");
        ours.write_all(&HEADERS).await.expect("write");
        ours.flush().await.expect("flush");
        assert_eq!(received(&mut theirs, HEADERS.len()).await, HEADERS, "a request does not wait for it");
        // Past the hold, the connection's next flush (the timer wakes its task) sends it.
        tokio::time::sleep(ACK_HOLD).await;
        ours.flush().await.expect("flush");
        assert_eq!(received(&mut theirs, PING_ACK.len()).await, PING_ACK);
    }

    #[tokio::test]
    async fn under_tls_nothing_is_read_or_held_back() {
        let (mut ours, mut theirs) = pair(false).await;
        let bytes = [PREFACE, &PING_ACK].concat();
        ours.write_all(&bytes).await.expect("write");
        ours.flush().await.expect("flush");
        assert_eq!(received(&mut theirs, bytes.len()).await, bytes);
    }

    #[tokio::test]
    async fn shutting_down_sends_the_held_acknowledgements() {
        let (mut ours, mut theirs) = pair(true).await;
        ours.write_all(&[PREFACE, &PING_ACK].concat()).await.expect("write");
        ours.flush().await.expect("flush");
        ours.shutdown().await.expect("shutdown");
        let mut all = Vec::new();
        theirs.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, [PREFACE, &PING_ACK].concat());
    }
}
