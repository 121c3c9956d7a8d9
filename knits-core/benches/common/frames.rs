//! Frames for the benchmarks and the instruction-count example (shared by `#[path]`).
#![allow(dead_code)]

use knits_core::switch::Sink;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, TcpTimestampRepr, UdpPacket, UdpRepr,
};

pub struct Discard;
impl Sink for Discard {
    fn emit(&mut self, _: u8, _: &[u8]) -> bool {
        true
    }
}

pub const CLIENT_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
pub const NODE_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 2]);

pub fn arp(src_mac: EthernetAddress, src: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    let mut b = vec![0u8; 42];
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut b[14..]));
    b
}

#[allow(clippy::too_many_arguments)]
pub fn tcp(
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    tcp_opts(
        dst_mac,
        src,
        dst,
        control,
        seq,
        ack,
        payload,
        Opts::default(),
    )
}

/// TCP options of a frame built by [`tcp_opts`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
    /// SACK-permitted (on a SYN).
    pub sack_perm: bool,
    /// One SACK block.
    pub sack: Option<(u32, u32)>,
}

/// [`tcp`] with timestamps and SACK.
#[allow(clippy::too_many_arguments)]
pub fn tcp_opts(
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
    o: Opts,
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: o.sack_perm,
        sack_ranges: [o.sack, None, None],
        timestamp: o.ts.map(|(v, e)| TcpTimestampRepr::new(v, e)),
        payload,
    };
    let (mut b, caps) = eth_ip(dst_mac, src.0, dst.0, IpProtocol::Tcp, repr.buffer_len());
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut b[34..]),
        &src.0.into(),
        &dst.0.into(),
        &caps,
    );
    b[6..12].copy_from_slice(&if src.0.octets()[1] == 18 {
        CLIENT_MAC.0
    } else {
        NODE_MAC.0
    });
    b
}

/// A UDP datagram in an Ethernet frame (checksums filled).
pub fn udp(
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload: &[u8],
) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    };
    let (mut b, caps) = eth_ip(dst_mac, src.0, dst.0, IpProtocol::Udp, 8 + payload.len());
    b[6..12].copy_from_slice(&NODE_MAC.0);
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut b[34..]),
        &src.0.into(),
        &dst.0.into(),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    b
}

/// Recomputes a TCP frame's IPv4 header and TCP checksums after an edit.
pub fn fix_checksums(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    TcpPacket::new_unchecked(&mut f[34..]).fill_checksum(&src.into(), &dst.into());
}

/// An Ethernet frame with an IPv4 header for a `len`-byte transport segment, the segment's
/// bytes still zero (the caller writes it and the source MAC).
fn eth_ip(
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    proto: IpProtocol,
    len: usize,
) -> (Vec<u8>, ChecksumCapabilities) {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: len,
        hop_limit: 64,
    };
    let mut b = vec![0u8; 14 + 20 + len];
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 9, 9]),
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[14..]), &caps);
    (b, caps)
}

/// An IPv4 packet of another protocol (ICMP, ...) in an Ethernet frame, its body `payload`
/// (IPv4 checksum filled; the body is taken as it is).
pub fn ipv4(
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    proto: IpProtocol,
    payload: &[u8],
) -> Vec<u8> {
    let (mut b, _) = eth_ip(dst_mac, src, dst, proto, payload.len());
    b[6..12].copy_from_slice(&NODE_MAC.0);
    b[34..].copy_from_slice(payload);
    b
}
