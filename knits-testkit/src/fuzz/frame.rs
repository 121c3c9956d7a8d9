//! Frames for the fuzzed cluster (built with smoltcp's `Repr::emit`), and the checks of what the
//! switch sends: valid checksums, and the TCP fields the harness follows.

use std::vec::Vec;

use knits_core::checksum::{self, Kind};
use knits_core::config::SprayPolicy;
use knits_core::table::FlowKey;
use knits_core::wire::control::{self, RequestRepr};
use knits_core::wire::tcp_options::{self};

use super::cluster::{config, host_mac, ip};
use crate::frames::{F_FIN, F_SYN};
use crate::frames::{Ipv4Frame, TcpFrame, arp};
use smoltcp::wire::{
    ArpOperation, EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet,
    TcpPacket,
};

/// The Ethernet and IPv4 headers of a frame from host `src` to `dst` (TTL 64).
fn l3(src: [u8; 4], dst: [u8; 4], dst_mac: EthernetAddress) -> Ipv4Frame {
    Ipv4Frame {
        src_mac: host_mac(src),
        dst_mac,
        src: ip(src),
        dst: ip(dst),
        ttl: 64,
    }
}

/// A bare TCP segment from host `src` to `dst`, sent to `dst_mac`.
pub fn tcp_spec(src: ([u8; 4], u16), dst: ([u8; 4], u16), dst_mac: EthernetAddress) -> TcpFrame {
    let mut t = TcpFrame::new((ip(src.0), src.1), (ip(dst.0), dst.1));
    t.src_mac = host_mac(src.0);
    t.dst_mac = dst_mac;
    t
}

/// A UDP datagram as an Ethernet frame with full checksums.
pub fn udp_frame(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    dst_mac: EthernetAddress,
    payload: &[u8],
) -> Vec<u8> {
    l3(src.0, dst.0, dst_mac).udp((src.1, dst.1), payload)
}

/// An IPv4 packet of another protocol (ICMP echo-like bytes) as an Ethernet frame.
pub fn other_frame(
    src: [u8; 4],
    dst: [u8; 4],
    dst_mac: EthernetAddress,
    payload: &[u8],
) -> Vec<u8> {
    l3(src, dst, dst_mac).other(IpProtocol::Icmp, payload)
}

/// An ARP request (or, with `reply`, an unsolicited reply) from host `src` about `target`.
pub fn arp_frame(src: [u8; 4], target: [u8; 4], dst_mac: EthernetAddress, reply: bool) -> Vec<u8> {
    let (op, target_mac) = if reply {
        (ArpOperation::Reply, dst_mac)
    } else {
        (ArpOperation::Request, EthernetAddress([0; 6]))
    };
    arp(
        op,
        (host_mac(src), ip(src)),
        dst_mac,
        (target_mac, ip(target)),
    )
}

/// A signed hand-off request in a UDP frame from `node` (1..=3) to its gateway's control port.
pub fn control_frame(node: u8, sport: u16, repr: &RequestRepr, key: &control::Key) -> Vec<u8> {
    let mut msg = [0u8; control::REQUEST_LEN];
    let _ = repr.emit(&mut msg, key);
    let c = config(SprayPolicy::RoundRobin, true);
    let n = node.clamp(1, 3) as usize;
    let gw = c.ports[n].gateway.octets();
    udp_frame(
        ([198, 19, n as u8, 2], sport),
        (gw, control::DEFAULT_PORT),
        c.ports[n].mac,
        &msg,
    )
}

pub(super) fn ones_eq(a: u16, b: u16) -> bool {
    a % 0xffff == b % 0xffff
}

/// The TCP/UDP length and checksum kind the frame's transport checksum can be checked with:
/// `Some(true)` when IPv4 and transport checksums are right for `kind`, `Some(false)` when one
/// is wrong, `None` when the frame is not an unfragmented option-less IPv4 packet that fits.
pub fn frame_valid(f: &[u8], kind: Kind) -> Option<bool> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ipp = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ipp.version() != 4 || ipp.header_len() != 20 || ipp.more_frags() || ipp.frag_offset() != 0 {
        return None;
    }
    let total = ipp.total_len() as usize;
    let l4 = f.get(34..14 + total)?;
    let (s, d) = (ipp.src_addr(), ipp.dst_addr());
    let ip_ok = ipp.verify_checksum();
    let proto = ipp.next_header();
    let l4_ok = match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let at = if proto == IpProtocol::Tcp { 16 } else { 6 };
            if l4.len() < at + 2 {
                return None;
            }
            let field = u16::from_be_bytes([l4[at], l4[at + 1]]);
            match kind {
                Kind::Full if proto == IpProtocol::Udp && field == 0 => true,
                Kind::Full => {
                    let ph = checksum::pseudo_header_sum(
                        s.octets(),
                        d.octets(),
                        proto.into(),
                        l4.len() as u16,
                    );
                    checksum::fold(checksum::sum(l4, ph)) == 0xffff
                }
                Kind::Partial => ones_eq(
                    field,
                    checksum::fold(checksum::pseudo_header_sum(
                        s.octets(),
                        d.octets(),
                        proto.into(),
                        l4.len() as u16,
                    )),
                ),
            }
        }
        _ => true,
    };
    Some(ip_ok && l4_ok)
}

/// Writes a partial checksum (the folded pseudo-header sum, as a TAP with NEEDS_CSUM hands it
/// over) into a TCP or UDP frame.
pub fn make_partial(f: &mut [u8]) {
    let Ok(ipp) = Ipv4Packet::new_checked(&f[14..]) else {
        return;
    };
    let (s, d, proto, total) = (
        ipp.src_addr(),
        ipp.dst_addr(),
        ipp.next_header(),
        ipp.total_len() as usize,
    );
    let at = match proto {
        IpProtocol::Tcp => 34 + 16,
        IpProtocol::Udp => 34 + 6,
        _ => return,
    };
    let l4_len = total.saturating_sub(20) as u16;
    let p = checksum::fold(checksum::pseudo_header_sum(
        s.octets(),
        d.octets(),
        proto.into(),
        l4_len,
    ));
    if let Some(b) = f.get_mut(at..at + 2) {
        b.copy_from_slice(&p.to_be_bytes());
    }
}

/// A parsed TCP frame, enough for the model.
#[derive(Debug, Clone, Copy)]
pub(super) struct TcpSeen {
    pub(super) key: FlowKey,
    pub(super) seq: u32,
    pub(super) ack: Option<u32>,
    pub(super) flags: u8,
    pub(super) hdr_len: usize,
    pub(super) len: u32,
    pub(super) tsval: Option<u32>,
    pub(super) sack_blocks: u8,
}

impl TcpSeen {
    pub(super) fn end(&self) -> u32 {
        self.seq.wrapping_add(
            self.len + (self.flags & F_SYN != 0) as u32 + (self.flags & F_FIN != 0) as u32,
        )
    }
    /// The receiver's own view of the connection.
    pub(super) fn receiver(&self) -> FlowKey {
        self.key.reversed()
    }
}

pub(super) fn parse_tcp(f: &[u8]) -> Option<TcpSeen> {
    let ipp = Ipv4Packet::new_checked(f.get(14..)?).ok()?;
    if ipp.next_header() != IpProtocol::Tcp || ipp.header_len() != 20 {
        return None;
    }
    let l4 = f.get(34..14 + ipp.total_len() as usize)?;
    let t = TcpPacket::new_checked(l4).ok()?;
    let hdr_len = t.header_len() as usize;
    if hdr_len < 20 || hdr_len > l4.len() {
        return None;
    }
    let opts = tcp_options::parse(&l4[..hdr_len]).ok()?;
    let flags = (t.syn() as u8)
        | (t.ack() as u8) << 1
        | (t.fin() as u8) << 2
        | (t.rst() as u8) << 3
        | (t.psh() as u8) << 4;
    Some(TcpSeen {
        key: FlowKey {
            src: ipp.src_addr().octets(),
            dst: ipp.dst_addr().octets(),
            sport: t.src_port(),
            dport: t.dst_port(),
        },
        seq: t.seq_number().0 as u32,
        ack: t.ack().then_some(t.ack_number().0 as u32),
        flags,
        hdr_len,
        len: (l4.len() - hdr_len) as u32,
        tsval: opts.ts_at.map(|_| opts.tsval),
        sack_blocks: opts.sack_blocks,
    })
}

pub(super) fn serial_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
