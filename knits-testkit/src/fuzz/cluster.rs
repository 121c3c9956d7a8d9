//! The fuzzed cluster: `Config::cluster(3, KEY)` with the addresses of ARCHITECTURE.md, and the
//! guard that kept spoofed sources out of old builds.

use std::sync::atomic::AtomicBool;

use knits_core::config::{Config, PortId, PortRole, SprayPolicy};
use knits_core::wire::control::{self};

use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet,
};

/// The control key of every fuzzed cluster (key id 1).
pub const KEY: control::Key = *b"knits-fuzz-key-1";
/// A key the switch does not hold.
pub(super) const WRONG_KEY: control::Key = *b"not-the-fuzz-key";

/// Keeps TCP frames with a spoofed source address out of the switch (a back-end port whose
/// subnet does not hold the source, or the client port with a source in a back-end subnet).
///
/// Bug 1 (docs/fuzzing.md, now fixed): knits-core used to track such a SYN as a new flow, so one
/// node could put a second copy of another flow's key into the table and then receive another
/// node's packets for a client. The core now drops these frames (`src_spoofed`), so the guard is
/// off and the committed reproducers run as regression tests; turn it on only to bisect an old
/// build.
pub static SPOOF_GUARD: AtomicBool = AtomicBool::new(false);

/// True for an IPv4 TCP frame whose source address cannot come from `port`.
pub fn spoofed_tcp(c: &Config, port: PortId, f: &[u8]) -> bool {
    let Some(ipp) = f.get(14..).and_then(|b| Ipv4Packet::new_checked(b).ok()) else {
        return false;
    };
    if EthernetFrame::new_unchecked(f).ethertype() != EthernetProtocol::Ipv4
        || ipp.next_header() != IpProtocol::Tcp
    {
        return false;
    }
    let src = ipp.src_addr();
    match c.ports.get(port as usize) {
        Some(pc) if pc.role == PortRole::Backend => !pc.contains(src),
        Some(_) => c.route(src).is_some_and(|p| p != port),
        None => false,
    }
}

/// Addresses the structured ops pick from (3 bits).
pub const ADDRS: [[u8; 4]; 8] = [
    [198, 18, 0, 2],  // 0 client
    [198, 18, 0, 3],  // 1 a second client
    [198, 18, 0, 10], // 2 the VIP
    [198, 19, 1, 2],  // 3 node 1
    [198, 19, 2, 2],  // 4 node 2
    [198, 19, 3, 2],  // 5 node 3
    [198, 19, 1, 1],  // 6 port 1's gateway
    [203, 0, 113, 5], // 7 nowhere
];
/// Ports the structured ops pick from (3 bits).
pub const PORTS: [u16; 8] = [80, 40000, 40001, 50000, 50001, 7100, 443, 0];

/// Address indices.
pub const A_CLIENT: u8 = 0;
/// The VIP.
pub const A_VIP: u8 = 2;
/// Node `n` (1..=3) is `A_N1 + n - 1`.
pub const A_N1: u8 = 3;
/// Port indices.
pub const P_80: u8 = 0;
/// The client's first source port.
pub const P_C1: u8 = 1;
/// A node's first source port for a new leg.
pub const P_L1: u8 = 3;

pub(super) fn ip(a: [u8; 4]) -> Ipv4Address {
    Ipv4Address::from_octets(a)
}

/// A host's MAC, made from its address (unicast, locally administered).
pub fn host_mac(a: [u8; 4]) -> EthernetAddress {
    EthernetAddress([0x02, 0xf0, a[0], a[1], a[2], a[3]])
}

/// The fuzzed configuration.
pub fn config(policy: SprayPolicy, verify: bool) -> Config {
    let mut c = Config::cluster(3, KEY);
    c.policy = policy;
    c.verify_checksums = verify;
    c
}

/// The switch port a host with this address sits behind (the client port for unknown ones).
pub fn port_of(c: &Config, a: [u8; 4]) -> PortId {
    c.route(ip(a)).unwrap_or(0)
}
