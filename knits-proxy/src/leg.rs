//! Opening a new leg (c2) for a hand-off: the connect with the held connection's MSS and, with
//! a sharded switch, from a source port in the held connection's shard. Used by the hand-off
//! ([`crate::handoff`]) and by the pre-connected pool ([`crate::pool`]), which depend on this
//! module and not on each other.
//!
//! # A sharded switch (`--shards N`)
//!
//! knits-host can run N shared-nothing shards; a TCP connection belongs to the shard
//! `knits_core::spray::shard_of(e)` of its *ephemeral endpoint* e: the client's address and port
//! for a connection to the VIP, the initiating node's address and port for a connection between
//! nodes (the endpoint with the higher port), and for a hand-off request the held connection's
//! peer. A spliced connection must live in one shard, so c2 must land in c1's shard.
//! c1's shard is that of c1's peer endpoint: the client for a connection sprayed here, or the
//! previous node's c2 source for a connection handed to us (its ephemeral side). c2's shard is
//! that of its local endpoint (we initiate it, from a port above the peer's). So the invariant
//! is `shard_of(c2 local) == shard_of(c1 peer)`, the same for every hop: [`ShardBind`] picks
//! such a source port ([`connect_leg`]), and the pool keeps legs per shard.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use knits_core::spray::shard_of;
use knits_core::wire::control::Endpoint;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::sockopt;

/// Source ports searched for a new leg in a given shard (Linux's default ephemeral range).
pub const SHARD_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;
/// Source ports a new leg tries (bind or connect finds them in use) before giving up.
pub const SHARD_PORT_TRIES: usize = 64;

/// Where a new leg must land in a sharded switch: bound to `local` with a source port whose
/// `shard_of(local, port, shards) == shard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardBind {
    /// The node's own address (c1's local address).
    pub local: Ipv4Addr,
    /// The shard the leg must belong to.
    pub shard: u32,
    /// Shards of the switch.
    pub shards: u32,
}

impl ShardBind {
    /// For the new leg of a held connection with peer `held_peer` and local end `held_local`:
    /// `None` without shards (the kernel picks the port), else c1's peer's shard.
    pub fn for_held(held_peer: Endpoint, held_local: Endpoint, shards: u32) -> Option<ShardBind> {
        (shards > 1).then(|| ShardBind {
            local: Ipv4Addr::from(held_local.addr),
            shard: shard_of(held_peer.addr, held_peer.port, shards),
            shards,
        })
    }

    /// True when a leg from `port` to a peer on `peer_port` lands in this shard: the switch
    /// steers a connection between nodes by the endpoint with the higher port.
    pub fn accepts(&self, port: u16, peer_port: u16) -> bool {
        port > peer_port && shard_of(self.local.octets(), port, self.shards) == self.shard
    }

    /// The next candidate source port (a process-wide cursor over [`SHARD_PORTS`], so that
    /// consecutive legs do not retry the same ports).
    fn next_port(&self, peer_port: u16) -> Option<u16> {
        static CURSOR: AtomicU32 = AtomicU32::new(0);
        static START: OnceLock<u32> = OnceLock::new();
        let start = *START.get_or_init(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            std::process::id().wrapping_mul(2_654_435_761) ^ t
        });
        let lo = u32::from(*SHARD_PORTS.start());
        let len = u32::from(*SHARD_PORTS.end()) - lo + 1;
        for _ in 0..len {
            let i = start.wrapping_add(CURSOR.fetch_add(1, Relaxed)) % len;
            let port = (lo + i) as u16;
            if self.accepts(port, peer_port) {
                return Some(port);
            }
        }
        None
    }
}

/// Connects a new leg to `peer` with `mss` (see [`sockopt::connect_with_mss`]); with `bind`,
/// from a source port in the bind's shard (trying up to [`SHARD_PORT_TRIES`] ports that are
/// free to bind and to connect from).
pub async fn connect_leg(
    peer: SocketAddr,
    mss: Option<u32>,
    bind: Option<ShardBind>,
    limit: Duration,
) -> io::Result<TcpStream> {
    let (Some(b), SocketAddr::V4(_)) = (bind, peer) else {
        return sockopt::connect_with_mss(peer, mss, limit).await;
    };
    let mut last = None;
    for _ in 0..SHARD_PORT_TRIES {
        let Some(port) = b.next_port(peer.port()) else {
            break;
        };
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if let Some(m) = mss {
            sock.set_mss(m)?;
        }
        sock.set_nodelay(true)?;
        sock.set_nonblocking(true)?;
        // No SO_REUSEADDR: a port with any socket on it (TIME-WAIT included) is skipped.
        match sock.bind(&SocketAddr::from((b.local, port)).into()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        }
        let ts = TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
        match tokio::time::timeout(limit, ts.connect(peer)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(e);
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {peer} timed out"),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("no free source port in shard {} of {}", b.shard, b.shards),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn the_new_leg_goes_to_the_held_peers_shard() {
        let client = Endpoint::new([198, 18, 0, 2], 40000);
        let me = Endpoint::new([198, 19, 1, 2], 80);
        assert_eq!(ShardBind::for_held(client, me, 1), None);
        for shards in 2..=4 {
            let b = ShardBind::for_held(client, me, shards).unwrap();
            assert_eq!(b.shard, shard_of(client.addr, client.port, shards));
            assert_eq!(b.local, Ipv4Addr::new(198, 19, 1, 2));
            let p = b.next_port(80).unwrap();
            assert!(SHARD_PORTS.contains(&p));
            assert_eq!(shard_of(me.addr, p, shards), b.shard);
            // A port at or below the peer's would make the peer's endpoint the steering key.
            assert!(!b.accepts(80, 80));
        }
    }

    #[tokio::test]
    async fn legs_connect_from_a_port_in_the_shard() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = l.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let mut v = Vec::new();
            for _ in 0..6 {
                v.push(l.accept().await.unwrap().0);
            }
            v
        });
        let mut legs = Vec::new();
        for shards in [2u32, 4] {
            for shard in 0..shards {
                let b = ShardBind {
                    local: Ipv4Addr::LOCALHOST,
                    shard,
                    shards,
                };
                let s = connect_leg(peer, Some(1000), Some(b), Duration::from_secs(5))
                    .await
                    .unwrap();
                let a = s.local_addr().unwrap();
                assert_eq!(shard_of([127, 0, 0, 1], a.port(), shards), shard, "{a}");
                assert!(sockopt::mss(&s).unwrap() <= 1000);
                legs.push(s);
            }
        }
        assert_eq!(accept.await.unwrap().len(), 6);
    }
}
