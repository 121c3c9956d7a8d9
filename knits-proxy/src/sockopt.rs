//! Socket facts and options the hand-off needs: unacknowledged output (SIOCOUTQ), the maximum
//! segment size (TCP_MAXSEG), connecting with a given MSS, a non-consuming liveness check, and
//! endpoints in the control protocol's IPv4 form.
//!
//! The only `unsafe` of the crate is the `ioctl` call here.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::Duration;

use knits_core::wire::control::Endpoint;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

/// Largest value Linux accepts for `setsockopt(TCP_MAXSEG)` (`MAX_TCP_WINDOW`).
pub const MAX_SETTABLE_MSS: u32 = 32767;
/// Smallest value Linux accepts for `setsockopt(TCP_MAXSEG)` (`TCP_MIN_MSS`).
pub const MIN_SETTABLE_MSS: u32 = 88;

/// Bytes written to `s` that the peer has not acknowledged yet, sent or not (SIOCOUTQ).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn unacked_bytes(s: &TcpStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int through the pointer, which points to `n`,
    // alive and writable for the duration of the call; the descriptor is owned by `s`.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(n).unwrap_or(0))
}

/// Bytes written to `s` that the peer has not acknowledged yet (not available off Linux).
#[cfg(not(target_os = "linux"))]
pub fn unacked_bytes(_s: &TcpStream) -> io::Result<u32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SIOCOUTQ is Linux only",
    ))
}

/// How long [`wait_acked`] re-checks at every turn of the scheduler before it falls back to
/// timers: a few round trips through the switch.
pub const ACK_SPIN: Duration = Duration::from_micros(500);

/// Waits until everything written to `s` is acknowledged, or `limit` passes (`Ok(false)`).
///
/// Linux has no readiness event for "everything acknowledged": an ACK wakes a writer only
/// after a write found the send buffer full, and `EPOLLOUT` means a third of the buffer is
/// free, not that it is empty (`SO_SNDLOWAT` cannot be set on Linux). The exact event is a
/// `SOF_TIMESTAMPING_TX_ACK` report on the error queue, but it must be asked for before the
/// bytes are written, so every response of every connection would pay an error-queue message
/// and a wake-up for the few that precede a hand-off. So this checks `SIOCOUTQ` at once (it is
/// 0 in the common case: the client's request carried the ACK of the previous response), then
/// at every turn of the scheduler for [`ACK_SPIN`] (`yield_now`: no timer, whose granularity
/// is a millisecond, stands between the ACK and the hand-off), then with timers.
///
/// The spin costs a core while it lasts, so it is only for the wait in front of a hand-off;
/// waits nobody is waiting for (a new leg's FIN) use [`wait_acked_lazily`].
pub async fn wait_acked(s: &TcpStream, limit: Duration) -> io::Result<bool> {
    wait_acked_spinning(s, limit, ACK_SPIN).await
}

/// [`wait_acked`] without the spin: timers only (1 ms, doubling to 5 ms).
pub async fn wait_acked_lazily(s: &TcpStream, limit: Duration) -> io::Result<bool> {
    wait_acked_spinning(s, limit, Duration::ZERO).await
}

async fn wait_acked_spinning(s: &TcpStream, limit: Duration, spin: Duration) -> io::Result<bool> {
    if unacked_bytes(s)? == 0 {
        return Ok(true);
    }
    let start = tokio::time::Instant::now();
    let deadline = start + limit;
    while start.elapsed() < spin.min(limit) {
        tokio::task::yield_now().await;
        if unacked_bytes(s)? == 0 {
            return Ok(true);
        }
    }
    let mut pause = Duration::from_millis(1);
    loop {
        if unacked_bytes(s)? == 0 {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// The connection's current maximum segment size (TCP_MAXSEG).
pub fn mss(s: &TcpStream) -> io::Result<u32> {
    SockRef::from(s).mss()
}

/// The MSS to set on a new leg so that it is not larger than the held connection's, within
/// the range the kernel accepts.
pub fn mss_for_new_leg(held_mss: u32) -> u32 {
    held_mss.clamp(MIN_SETTABLE_MSS, MAX_SETTABLE_MSS)
}

/// Connects to `addr` with `TCP_MAXSEG` set to `mss` before the SYN (so the SYN advertises it),
/// and `TCP_NODELAY`.
pub async fn connect_with_mss(
    addr: SocketAddr,
    mss: Option<u32>,
    limit: Duration,
) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(m) = mss {
        sock.set_mss(m)?;
    }
    sock.set_nodelay(true)?;
    sock.set_nonblocking(true)?;
    let ts = TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
    match tokio::time::timeout(limit, ts.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out"),
        )),
    }
}

/// Asks the kernel to acknowledge what arrives on `s` at once instead of delaying the ACK
/// (`TCP_QUICKACK`), and sends an ACK that is already pending.
///
/// Linux does not keep the option: the connection drops back into delayed-ACK ("ping-pong")
/// mode as soon as it sends data soon after receiving, and setting it sends the pending ACK
/// only when the receive queue is empty. So the splice relay sets it when it has read
/// everything the source sent and nothing more came for [`crate::splice::ACK_GRACE`]
/// ([`crate::splice::relay`]): a web server
/// that sends a response's last, partial segment under Nagle's rule (nginx with
/// `tcp_nopush on` leaves `TCP_NODELAY` off) holds it until everything before it is
/// acknowledged, and on loopback, where one segment carries 64 KiB, a delayed ACK holds it
/// for 40 ms or more (docs/benchmarks.md "The 40 ms stalls").
pub fn quickack(s: &TcpStream) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        SockRef::from(s).set_quickack(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = s;
        Ok(())
    }
}

/// Closes a connection with an RST instead of a FIN (SO_LINGER 0), so this node keeps no
/// TIME-WAIT for it. Used for new legs only: after a hand-off, once the switch has
/// acknowledged everything (FIN included) this node sent on the leg, and for a leg that was
/// refused or never used. The switch absorbs the RST of a hand-off leg (docs/protocol.md
/// "Retiring the old node") and drops a refused leg's entry at once.
pub fn reset_close(s: TcpStream) {
    // A zero linger never blocks: close sends the RST and returns at once.
    let _ = SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// True when an idle connection is still usable: open, nothing unexpected received.
pub fn idle_alive(s: &TcpStream) -> bool {
    let mut b = [MaybeUninit::<u8>::uninit(); 1];
    match SockRef::from(s).peek(&mut b) {
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        Ok(_) => false, // 0: the peer closed; 1: it sent something nobody asked for.
    }
}

/// A socket address as a control-protocol endpoint (IPv4, or IPv4-mapped IPv6).
pub fn endpoint(a: SocketAddr) -> Option<Endpoint> {
    match a {
        SocketAddr::V4(v4) => Some(Endpoint::new(v4.ip().octets(), v4.port())),
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map(|ip| Endpoint::new(ip.octets(), v6.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn mss_is_set_before_connect_and_output_drains() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = connect_with_mss(addr, Some(1000), Duration::from_secs(5))
            .await
            .unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        // The accepting side's MSS follows what the SYN advertised.
        assert!(mss(&s).unwrap() <= 1000, "{}", mss(&s).unwrap());
        assert!(mss(&c).unwrap() <= 1000);
        s.write_all(&[7u8; 10_000]).await.unwrap();
        // The client's kernel acknowledges without the application reading.
        assert!(wait_acked(&s, Duration::from_secs(5)).await.unwrap());
        assert_eq!(unacked_bytes(&s).unwrap(), 0);
        c.readable().await.unwrap();
        assert!(
            !idle_alive(&c),
            "unread data means the idle connection is not clean"
        );
        drop(s);
        drop(l);
    }

    #[tokio::test]
    async fn closed_peer_is_not_alive() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = connect_with_mss(l.local_addr().unwrap(), None, Duration::from_secs(5))
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert!(idle_alive(&c));
        drop(s);
        // Wait until the FIN arrived (readable), without timing assertions.
        c.readable().await.unwrap();
        assert!(!idle_alive(&c));
    }

    #[test]
    fn endpoints_are_ipv4_only() {
        assert_eq!(
            endpoint("198.19.1.2:80".parse().unwrap()),
            Some(Endpoint::new([198, 19, 1, 2], 80))
        );
        assert_eq!(
            endpoint("[::ffff:198.19.1.2]:80".parse().unwrap()),
            Some(Endpoint::new([198, 19, 1, 2], 80))
        );
        assert_eq!(endpoint("[::1]:80".parse().unwrap()), None);
        assert_eq!(mss_for_new_leg(65483), MAX_SETTABLE_MSS);
        assert_eq!(mss_for_new_leg(1448), 1448);
    }
}
