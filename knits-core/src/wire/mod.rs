//! Packet formats.
//!
//! Ethernet, ARP, IPv4, TCP and UDP are smoltcp's views (`Packet<T: AsRef<[u8]>>` over the
//! frame's bytes, `new_checked` for untrusted input, typed setters for in-place edits). This
//! module adds what smoltcp does not have: a bounded TCP option walker that can rewrite SACK
//! edges and timestamps in place ([`tcp_options`]), and the hand-off control messages
//! ([`control`]).

pub mod control;
pub mod field;
pub mod tcp_options;

pub use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol,
    Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};
