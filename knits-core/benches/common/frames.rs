//! Frames for the instruction-count example (`examples/per_packet.rs` includes this file by
//! `#[path]`): the test kit's shorthands under the names the example uses.
#![allow(unused_imports)]

pub use knits_testkit::frames::{
    CLIENT_MAC, NODE_MAC, Opts, arp_request as arp, fix_checksums, tcp, tcp_opts, udp,
};
pub use knits_testkit::sink::Discard;

/// An IPv4 packet of another protocol (ICMP, ...) from a node, its body `payload` as it is
/// (IPv4 checksum filled, TTL 64).
pub fn ipv4(
    dst_mac: smoltcp::wire::EthernetAddress,
    src: smoltcp::wire::Ipv4Address,
    dst: smoltcp::wire::Ipv4Address,
    proto: smoltcp::wire::IpProtocol,
    payload: &[u8],
) -> Vec<u8> {
    knits_testkit::frames::Ipv4Frame {
        src_mac: NODE_MAC,
        dst_mac,
        src,
        dst,
        ttl: 64,
    }
    .other(proto, payload)
}
