//! Zero-copy relaying between two TCP sockets: `splice(2)` from the source socket into a pipe
//! and from the pipe into the destination socket, as HAProxy does. The bytes stay in kernel
//! pages; user space only counts them. A body is moved in rounds of at most the pipe's capacity,
//! two system calls per round (plus the `EAGAIN` that tells a socket is empty or full).
//!
//! The pipe is empty between rounds that return normally, so a relay that ends without error
//! leaves it clean for the next one ([`PipePool`]). A relay that fails may leave bytes in it:
//! such a pipe is closed, never reused (its bytes belong to a response that was cut).
//!
//! Readiness: a non-blocking `splice` from a socket into an *empty* pipe returns `EAGAIN` only
//! when the socket has nothing to read, and one from a non-empty pipe into a socket only when
//! the socket's send buffer is full, so tokio's readiness of each socket is cleared exactly when
//! that socket would block ([`tokio::net::TcpStream::try_io`]).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Capacity asked for each pipe (`F_SETPIPE_SZ`); the kernel's default (64 KiB) stays when the
/// request is refused.
pub const PIPE_SIZE: usize = 256 * 1024;

/// How long a relay waits for more of the source's bytes before it acknowledges what it read
/// at once (`TCP_QUICKACK`) instead of leaving the ACK to the delayed-ACK timer. tokio's timer
/// rounds it up to its millisecond.
pub const ACK_GRACE: Duration = Duration::from_micros(500);

/// A pipe used as the kernel buffer of a relay, with the bytes it holds.
#[derive(Debug)]
pub struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
    held: usize,
}

/// Why a relay stopped.
#[derive(Debug)]
pub enum SpliceError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The source closed before the announced length.
    Truncated,
    /// The source sent nothing for the idle time.
    TimedOut,
}

impl Pipe {
    /// A non-blocking pipe of [`PIPE_SIZE`] (or the kernel's default).
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which has room for two.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created by pipe2 and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ takes an int argument; the descriptor is valid.
        let got =
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let cap = if got > 0 { got as usize } else { 64 * 1024 };
        Ok(Pipe { r, w, cap, held: 0 })
    }

    /// Pipes are Linux only here.
    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Pipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice is Linux only",
        ))
    }

    /// Bytes in the pipe now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The pipe's capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

#[cfg(target_os = "linux")]
fn splice_raw(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets mean "the current position" (required for sockets and pipes); both
    // descriptors are valid for the duration of the call (borrowed from their owners).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(target_os = "linux"))]
fn splice_raw(_from: RawFd, _to: RawFd, _len: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "splice is Linux only",
    ))
}

/// Moves everything in `pipe` to `dst`, waiting for room as needed.
async fn drain(pipe: &mut Pipe, dst: &TcpStream) -> io::Result<u64> {
    let mut moved = 0u64;
    while pipe.held > 0 {
        let r = pipe.r.as_raw_fd();
        let want = pipe.held;
        match dst.try_io(Interest::WRITABLE, || splice_raw(r, dst.as_raw_fd(), want)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                pipe.held -= n;
                moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Relays `len` bytes (`None`: until `src` closes) from `src` to `dst` through `pipe`. `idle`
/// bounds each wait for `src`. Returns the bytes written to `dst`; on error, how many were
/// written before is lost with the connection (the caller closes it). The pipe is empty when
/// this returns `Ok`.
pub async fn relay(
    src: &TcpStream,
    dst: &TcpStream,
    pipe: &mut Pipe,
    len: Option<u64>,
    idle: Duration,
    written: &mut u64,
) -> Result<(), SpliceError> {
    let mut left = len;
    loop {
        *written += drain(pipe, dst).await.map_err(SpliceError::Write)?;
        let want = match left {
            Some(0) => return Ok(()),
            Some(n) => n.min(pipe.cap as u64) as usize,
            None => pipe.cap,
        };
        let w = pipe.w.as_raw_fd();
        match src.try_io(Interest::READABLE, || splice_raw(src.as_raw_fd(), w, want)) {
            Ok(0) => {
                return match left {
                    None => Ok(()),
                    Some(_) => Err(SpliceError::Truncated),
                };
            }
            Ok(n) => {
                pipe.held += n;
                if let Some(l) = &mut left {
                    *l -= n as u64;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // `src` is empty. The sender may be holding its last, partial segment until
                // what it sent is acknowledged (Nagle), and our ACK may be delayed by 40 ms or
                // more: if nothing arrives within `ACK_GRACE`, acknowledge at once
                // (`sockopt::quickack`) and wait on. Acknowledging at every empty read instead
                // cost 6-13 µs at the median (an extra packet each time the proxy outruns
                // the server; docs/benchmarks.md, issue 13).
                match tokio::time::timeout(ACK_GRACE, src.readable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(SpliceError::Read(e)),
                    Err(_) => {
                        let _ = crate::sockopt::quickack(src);
                        match tokio::time::timeout(idle, src.readable()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Err(SpliceError::Read(e)),
                            Err(_) => return Err(SpliceError::TimedOut),
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpliceError::Read(e)),
        }
    }
}

/// Idle pipes, so that a relay does not pay `pipe2` and `F_SETPIPE_SZ` (and two closes) per
/// response. Only empty pipes come back.
#[derive(Debug, Default)]
pub struct PipePool {
    idle: Mutex<Vec<Pipe>>,
    max: usize,
}

impl PipePool {
    /// A pool keeping at most `max` idle pipes.
    pub fn new(max: usize) -> Self {
        PipePool {
            idle: Mutex::new(Vec::new()),
            max,
        }
    }

    /// An idle pipe, or a new one.
    pub fn take(&self) -> io::Result<Pipe> {
        let p = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match p {
            Some(p) => Ok(p),
            None => Pipe::new(),
        }
    }

    /// Gives a pipe back: kept when empty and the pool has room, else closed.
    pub fn put(&self, p: Pipe) {
        if p.held != 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max {
            idle.push(p);
        }
    }

    /// Idle pipes held now (each is two descriptors).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn relays_exactly_the_length_and_leaves_the_rest() {
        let (mut a, src) = pair().await;
        let (dst, mut b) = pair().await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
        let d2 = data.clone();
        let w = tokio::spawn(async move {
            a.write_all(&d2).await.unwrap();
            a.write_all(b"NEXT").await.unwrap();
            a
        });
        let r = tokio::spawn(async move {
            let mut got = vec![0u8; 1_000_000];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        let mut pipe = Pipe::new().unwrap();
        let mut n = 0;
        relay(
            &src,
            &dst,
            &mut pipe,
            Some(1_000_000),
            Duration::from_secs(5),
            &mut n,
        )
        .await
        .unwrap();
        assert_eq!(n, 1_000_000);
        assert_eq!(pipe.held(), 0);
        assert_eq!(r.await.unwrap(), data);
        let _a = w.await.unwrap();
        let mut rest = [0u8; 4];
        let mut src = src;
        src.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"NEXT");
    }

    #[tokio::test]
    async fn a_short_source_is_truncated_and_until_close_ends_cleanly() {
        let (mut a, src) = pair().await;
        let (dst, mut b) = pair().await;
        a.write_all(&[1u8; 1000]).await.unwrap();
        drop(a);
        let mut pipe = Pipe::new().unwrap();
        let mut n = 0;
        let e = relay(
            &src,
            &dst,
            &mut pipe,
            Some(5000),
            Duration::from_secs(5),
            &mut n,
        )
        .await;
        assert!(matches!(e, Err(SpliceError::Truncated)), "{e:?}");
        assert_eq!(n, 1000);
        let mut got = [0u8; 1000];
        b.read_exact(&mut got).await.unwrap();

        let (mut a, src) = pair().await;
        a.write_all(&[2u8; 3000]).await.unwrap();
        drop(a);
        let mut n = 0;
        relay(&src, &dst, &mut pipe, None, Duration::from_secs(5), &mut n)
            .await
            .unwrap();
        assert_eq!(n, 3000);
    }
}
