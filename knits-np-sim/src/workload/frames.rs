//! Frames the hosts send, built with smoltcp's `Repr::emit`.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress,
    IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

pub(super) fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

pub(super) fn eth_frame(
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EthernetProtocol,
    body_len: usize,
) -> Vec<u8> {
    let mut buf = vec![0u8; (14 + body_len).max(60)];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut eth);
    buf
}

pub(super) fn tcp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    repr: &TcpRepr,
) -> Vec<u8> {
    let tcp_len = repr.buffer_len();
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Ipv4, 20 + tcp_len);
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp_len,
        hop_limit: 64,
    };
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut ipp, &caps());
    let mut tcp = TcpPacket::new_unchecked(ipp.payload_mut());
    repr.emit(
        &mut tcp,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps(),
    );
    buf
}

pub(super) fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Ipv4, 20 + udp_len);
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut ipp, &caps());
    let mut udp = UdpPacket::new_unchecked(ipp.payload_mut());
    UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    }
    .emit(
        &mut udp,
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps(),
    );
    buf
}

pub(super) fn arp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    repr: ArpRepr,
) -> Vec<u8> {
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Arp, repr.buffer_len());
    let mut arp = ArpPacket::new_unchecked(&mut buf[14..14 + repr.buffer_len()]);
    repr.emit(&mut arp);
    buf
}
