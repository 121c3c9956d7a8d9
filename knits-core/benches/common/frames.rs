//! Frames for the benchmarks and the instruction-count example (shared by `#[path]`).
#![allow(dead_code)]

use knits_core::switch::Sink;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
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
    let repr = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut b = vec![0u8; 14 + 20 + repr.buffer_len()];
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 9, 9]),
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[14..]), &caps);
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
