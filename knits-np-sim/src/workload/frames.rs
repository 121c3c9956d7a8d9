//! The hosts' frames: the test kit's builders (smoltcp's `Repr::emit`), padded with zeros to
//! Ethernet's 60-byte minimum as a sending NIC would.

use knits_testkit::frames::{Ipv4Frame, arp};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{ArpRepr, EthernetAddress, IpProtocol, Ipv4Address, TcpPacket, TcpRepr};

/// Ethernet's minimum frame, FCS excluded.
const MIN_FRAME: usize = 60;

fn padded(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

/// Ethernet and IPv4 headers with the TTL every host here sends with.
pub(super) fn l3(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
) -> Ipv4Frame {
    Ipv4Frame {
        src_mac,
        dst_mac,
        src,
        dst,
        ttl: 64,
    }
}

/// A TCP segment, checksums filled.
pub(super) fn tcp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    repr: &TcpRepr,
) -> Vec<u8> {
    let mut f = l3(src_mac, dst_mac, src, dst).header(IpProtocol::Tcp, repr.buffer_len(), 0);
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut f[34..]),
        &src.into(),
        &dst.into(),
        &ChecksumCapabilities::default(),
    );
    padded(f)
}

/// A UDP datagram, checksums filled.
pub(super) fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload: &[u8],
) -> Vec<u8> {
    padded(l3(src_mac, dst_mac, src.0, dst.0).udp((src.1, dst.1), payload))
}

/// An ICMP packet whose 26-byte message is `message` as it is.
pub(super) fn icmp_frame(l3: Ipv4Frame, message: &[u8; 26]) -> Vec<u8> {
    padded(l3.other(IpProtocol::Icmp, message))
}

/// An ARP packet to `dst_mac`.
pub(super) fn arp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    repr: ArpRepr,
) -> Vec<u8> {
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    } = repr
    else {
        unreachable!("smoltcp's ArpRepr has one variant")
    };
    debug_assert_eq!(src_mac, source_hardware_addr);
    padded(arp(
        operation,
        (src_mac, source_protocol_addr),
        dst_mac,
        (target_hardware_addr, target_protocol_addr),
    ))
}
