//! A connection with its read buffer and the byte counts a hand-off needs: how much of the
//! incoming stream was read and consumed, how much was sent. Also the body pump that streams a
//! framed body from one connection to a writer without holding it whole.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::framing::{BodyFraming, ChunkError, ChunkedDecoder, HeadError};

/// Bytes asked of the kernel per read.
pub const READ_CHUNK: usize = 64 * 1024;

/// A byte stream with a read buffer and counters.
///
/// Stream positions count from the first byte this process read on the connection:
/// [`Conn::consumed`] is the position of the first buffered byte, [`Conn::sent`] the number of
/// bytes written.
#[derive(Debug)]
pub struct Conn<S> {
    io: S,
    buf: BytesMut,
    received: u64,
    sent: u64,
    read_size: usize,
}

/// The outcome of waiting for a message head.
#[derive(Debug)]
pub enum ReadHead<T> {
    /// A complete head (still in the buffer: consume `head_len` when done with it).
    Head(T),
    /// The peer closed before sending any byte of a new message.
    Closed,
    /// The peer closed in the middle of a head.
    Truncated,
    /// The head cannot be used.
    Bad(HeadError),
    /// No complete head within the time allowed.
    TimedOut,
}

/// Why a body could not be copied.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The source closed before the body ended.
    Truncated,
    /// The source sent a malformed chunked body.
    Chunk(ChunkError),
    /// The source sent nothing for the idle time.
    TimedOut,
}

impl core::fmt::Display for CopyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CopyError::Read(e) => write!(f, "read: {e}"),
            CopyError::Write(e) => write!(f, "write: {e}"),
            CopyError::Truncated => write!(f, "peer closed inside a body"),
            CopyError::Chunk(e) => write!(f, "chunked body: {e}"),
            CopyError::TimedOut => write!(f, "body stalled"),
        }
    }
}

impl std::error::Error for CopyError {}

impl<S> Conn<S> {
    /// Wraps a stream whose first byte has not been read yet.
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            received: 0,
            sent: 0,
            read_size: READ_CHUNK,
        }
    }

    /// Reads at most `n` bytes per system call from now on. A connection whose bodies are
    /// spliced reads small, so that little of a body passes through the buffer.
    pub fn set_read_size(&mut self, n: usize) {
        self.read_size = n.max(1);
    }

    /// Counts `n` bytes written to the stream around [`Conn`] (spliced).
    pub fn note_sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably (writes through it are not counted).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Bytes read but not consumed yet, in stream order.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Marks the first `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.buf.advance(n.min(self.buf.len()));
    }

    /// Puts bytes consumed earlier back in front of the buffer, as if they had never been
    /// consumed (a hand-off that was rolled back gives its forwarded bytes back). `data` must
    /// be exactly the bytes consumed last, so that stream positions stay right.
    pub fn unconsume(&mut self, data: &[u8]) {
        let mut b = BytesMut::with_capacity(data.len() + self.buf.len() + READ_CHUNK);
        b.extend_from_slice(data);
        b.extend_from_slice(&self.buf);
        self.buf = b;
    }

    /// Stream position of the first unconsumed byte: bytes consumed since the start.
    pub fn consumed(&self) -> u64 {
        self.received.saturating_sub(self.buf.len() as u64)
    }

    /// Bytes read from the stream since the start.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes written to the stream since the start.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Splits into the stream and the unconsumed bytes.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.fill_at_most(self.read_size).await
    }

    /// Reads at most `max` more bytes into the buffer; `Ok(0)` at end of stream.
    pub async fn fill_at_most(&mut self, max: usize) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = if self.buf.capacity() - self.buf.len() <= max {
            self.io.read_buf(&mut self.buf).await?
        } else {
            let mut lim = (&mut self.buf).limit(max);
            self.io.read_buf(&mut lim).await?
        };
        self.received += n as u64;
        Ok(n)
    }

    /// [`Conn::fill_at_most`] with a time limit (`ErrorKind::TimedOut` when it passes).
    pub async fn fill_at_most_within(&mut self, max: usize, limit: Duration) -> io::Result<usize> {
        match tokio::time::timeout(limit, self.fill_at_most(max)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        }
    }

    /// [`Conn::fill`] with a time limit (`ErrorKind::TimedOut` when it passes).
    pub async fn fill_within(&mut self, limit: Duration) -> io::Result<usize> {
        match tokio::time::timeout(limit, self.fill()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        }
    }

    /// Waits for a complete head, parsed by `parse`, reading as needed. `idle` bounds the wait
    /// for each read.
    pub async fn read_head<T>(
        &mut self,
        idle: Duration,
        mut parse: impl FnMut(&[u8]) -> Result<Option<T>, HeadError>,
    ) -> io::Result<ReadHead<T>> {
        loop {
            if !self.buf.is_empty() {
                match parse(&self.buf) {
                    Ok(Some(h)) => return Ok(ReadHead::Head(h)),
                    Ok(None) => {}
                    Err(e) => return Ok(ReadHead::Bad(e)),
                }
            }
            match self.fill_within(idle).await {
                Ok(0) if self.buf.is_empty() => return Ok(ReadHead::Closed),
                Ok(0) => return Ok(ReadHead::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(ReadHead::TimedOut),
                Err(e) => return Err(e),
            }
        }
    }

    /// The next piece of a body, taken out of the buffer (reading as needed): framing bytes
    /// included unless `dechunk`. `Ok(None)` once the body is complete. Pieces may be empty
    /// (a chunk-size line when dechunking).
    pub async fn body_piece(
        &mut self,
        cursor: &mut BodyCursor,
        dechunk: bool,
        idle: Duration,
    ) -> Result<Option<BytesMut>, CopyError> {
        match cursor {
            BodyCursor::Done => Ok(None),
            BodyCursor::Length(left) => {
                if self.buf.is_empty() {
                    self.more(idle).await?;
                }
                let n = (self.buf.len() as u64).min(*left) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *cursor = BodyCursor::Done;
                }
                Ok(Some(self.buf.split_to(n)))
            }
            BodyCursor::Chunked(dec) => {
                if self.buf.is_empty() {
                    self.more(idle).await?;
                }
                let step = dec.step(&self.buf).map_err(CopyError::Chunk)?;
                let mut piece = self.buf.split_to(step.consumed);
                if dechunk {
                    piece = piece.split_off(step.data.start);
                    piece.truncate(step.data.len());
                }
                if step.done {
                    *cursor = BodyCursor::Done;
                }
                Ok(Some(piece))
            }
            BodyCursor::UntilClose => {
                if self.buf.is_empty() {
                    match self.fill_within(idle).await {
                        Ok(0) => {
                            *cursor = BodyCursor::Done;
                            return Ok(None);
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return Err(CopyError::TimedOut);
                        }
                        Err(e) => return Err(CopyError::Read(e)),
                    }
                }
                let n = self.buf.len();
                Ok(Some(self.buf.split_to(n)))
            }
        }
    }

    /// Streams a body framed as `framing` from this connection to `dst`, consuming it here.
    /// With `dechunk`, a chunked body is written without its coding (data only).
    /// Returns the bytes written to `dst`.
    pub async fn copy_body<W: AsyncWrite + Unpin>(
        &mut self,
        framing: BodyFraming,
        dst: &mut W,
        dechunk: bool,
        idle: Duration,
    ) -> Result<u64, CopyError> {
        let mut cursor = BodyCursor::new(framing);
        let mut written = 0u64;
        while let Some(piece) = self.body_piece(&mut cursor, dechunk, idle).await? {
            if !piece.is_empty() {
                dst.write_all(&piece).await.map_err(CopyError::Write)?;
                written += piece.len() as u64;
            }
        }
        dst.flush().await.map_err(CopyError::Write)?;
        Ok(written)
    }

    async fn more(&mut self, idle: Duration) -> Result<(), CopyError> {
        match self.fill_within(idle).await {
            Ok(0) => Err(CopyError::Truncated),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(CopyError::TimedOut),
            Err(e) => Err(CopyError::Read(e)),
        }
    }
}

/// Where a body being read stands.
#[derive(Debug, Clone)]
pub enum BodyCursor {
    /// This many bytes are left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(ChunkedDecoder),
    /// Until the peer closes.
    UntilClose,
    /// The body is complete.
    Done,
}

impl BodyCursor {
    /// A cursor at the start of a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyCursor::Done,
            BodyFraming::Length(n) => BodyCursor::Length(n),
            BodyFraming::Chunked => BodyCursor::Chunked(ChunkedDecoder::new()),
            BodyFraming::UntilClose => BodyCursor::UntilClose,
        }
    }
}

impl<S: AsyncWrite + Unpin> Conn<S> {
    /// Writes all of `data`, counting it as sent.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        AsyncWriteExt::write_all(self, data).await
    }

    /// Writes all of `a` then all of `b` with as few (vectored) writes as the stream takes,
    /// counting them as sent: a response head and the body bytes read with it go out in one
    /// system call.
    pub async fn write_all_two(&mut self, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
        while !a.is_empty() {
            let n = self
                .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if n < a.len() {
                a = &a[n..];
            } else {
                b = &b[n - a.len()..];
                a = &[];
            }
        }
        if !b.is_empty() {
            self.write_all(b).await?;
        }
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            this.sent += *n as u64;
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.sent += *n as u64;
        }
        r
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
    use crate::framing::{Limits, parse_request};

    #[tokio::test]
    async fn counts_and_copies_a_chunked_body_split_anywhere() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for cut in 1..body.len() {
            let (mut a, b) = tokio::io::duplex(64);
            let data = body.to_vec();
            let w = tokio::spawn(async move {
                for piece in data.chunks(cut) {
                    a.write_all(piece).await.unwrap();
                }
                a
            });
            let mut c = Conn::new(b);
            let mut out = Vec::new();
            let n = c
                .copy_body(BodyFraming::Chunked, &mut out, true, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(out, b"Wikipedia");
            assert_eq!(n, 9);
            assert_eq!(c.consumed(), body.len() as u64 - 4);
            let _a = w.await.unwrap();
        }
    }

    #[tokio::test]
    async fn read_head_reports_close_and_truncation() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"GET / HT").await.unwrap();
        drop(a);
        let mut c = Conn::new(b);
        let lim = Limits::default();
        let r = c
            .read_head(Duration::from_secs(5), |b| parse_request(b, &lim))
            .await
            .unwrap();
        assert!(matches!(r, ReadHead::Truncated));

        let (a, b) = tokio::io::duplex(64);
        drop(a);
        let mut c = Conn::new(b);
        let r = c
            .read_head(Duration::from_secs(5), |b| parse_request(b, &lim))
            .await
            .unwrap();
        assert!(matches!(r, ReadHead::Closed));
    }

    #[tokio::test]
    async fn sent_counts_every_written_byte() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut c = Conn::new(a);
        c.write_all(b"hello").await.unwrap();
        c.write_all(b" world").await.unwrap();
        assert_eq!(c.sent(), 11);
        let mut got = [0u8; 11];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
    }
}
