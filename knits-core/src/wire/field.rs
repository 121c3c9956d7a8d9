//! Header field offsets, in one place (smoltcp keeps its own in a private `field` module per
//! wire type; the switch reads and rewrites at fixed offsets, so it names them here).
//!
//! Offsets are from the start of their own header; [`frame`] gives where each header starts in
//! an Ethernet frame carrying IPv4 without options (the only IPv4 the switch forwards: the
//! parser drops options as `ipv4_options`).

/// Byte range of a field.
pub type Field = core::ops::Range<usize>;

/// Ethernet II.
pub mod ethernet {
    use super::Field;
    /// Destination MAC address.
    pub const DST: Field = 0..6;
    /// Source MAC address.
    pub const SRC: Field = 6..12;
    /// EtherType.
    pub const ETHERTYPE: Field = 12..14;
    /// Header length.
    pub const LEN: usize = 14;
    /// EtherType of IPv4.
    pub const IPV4: [u8; 2] = [0x08, 0x00];
    /// EtherType of ARP.
    pub const ARP: [u8; 2] = [0x08, 0x06];
}

/// IPv4 (RFC 791).
pub mod ipv4 {
    use super::Field;
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    /// Total length.
    pub const LENGTH: Field = 2..4;
    /// Flags and fragment offset.
    pub const FLG_OFF: Field = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol (TTL and protocol share the 16-bit word at [`TTL`] for the checksum).
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Field = 10..12;
    /// Source address.
    pub const SRC: Field = 12..16;
    /// Destination address.
    pub const DST: Field = 16..20;
    /// Header length without options.
    pub const LEN: usize = 20;
    /// More-fragments flag and fragment-offset bits of [`FLG_OFF`].
    pub const FRAGMENT_MASK: u16 = 0x3fff;
    /// The version-and-length byte of an option-less IPv4 header.
    pub const VER_IHL_PLAIN: u8 = 0x45;
    /// Protocol numbers.
    pub const PROTO_TCP: u8 = 6;
    /// UDP.
    pub const PROTO_UDP: u8 = 17;
}

/// TCP (RFC 9293).
pub mod tcp {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Sequence number.
    pub const SEQ: Field = 4..8;
    /// Acknowledgment number.
    pub const ACK: Field = 8..12;
    /// Data offset (high nibble), reserved bits and flags: one 16-bit word for the checksum.
    pub const FLAGS: Field = 12..14;
    /// Window.
    pub const WINDOW: Field = 14..16;
    /// Checksum.
    pub const CHECKSUM: Field = 16..18;
    /// Length of the fixed header; options start here.
    pub const LEN: usize = 20;
    /// Flag bits of the second byte of [`FLAGS`].
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK_FLAG: u8 = 0x10;
}

/// UDP (RFC 768).
pub mod udp {
    use super::Field;
    /// Source port.
    pub const SRC_PORT: Field = 0..2;
    /// Destination port.
    pub const DST_PORT: Field = 2..4;
    /// Length (header and payload).
    pub const LENGTH: Field = 4..6;
    /// Checksum (0: none).
    pub const CHECKSUM: Field = 6..8;
    /// Header length.
    pub const LEN: usize = 8;
}

/// Where each header starts in an Ethernet frame carrying option-less IPv4.
pub mod frame {
    /// The IPv4 header.
    pub const IP: usize = super::ethernet::LEN;
    /// The transport header.
    pub const L4: usize = IP + super::ipv4::LEN;
    /// Ethernet, IPv4 and the fixed TCP header: the bytes every TCP frame has.
    pub const TCP_HEADERS: usize = L4 + super::tcp::LEN;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets agree with smoltcp's views of the same bytes.
    #[test]
    fn offsets_agree_with_smoltcp() {
        use smoltcp::wire::{Ipv4Packet, TcpPacket};
        let mut ip = [0u8; 20];
        ip[ipv4::VER_IHL] = ipv4::VER_IHL_PLAIN;
        ip[ipv4::TTL] = 64;
        ip[ipv4::PROTOCOL] = ipv4::PROTO_TCP;
        ip[ipv4::SRC].copy_from_slice(&[1, 2, 3, 4]);
        ip[ipv4::DST].copy_from_slice(&[5, 6, 7, 8]);
        ip[ipv4::LENGTH].copy_from_slice(&40u16.to_be_bytes());
        let p = Ipv4Packet::new_unchecked(&ip[..]);
        assert_eq!(p.src_addr().octets(), [1, 2, 3, 4]);
        assert_eq!(p.dst_addr().octets(), [5, 6, 7, 8]);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.total_len(), 40);
        assert_eq!(p.header_len() as usize, ipv4::LEN);
        let mut t = [0u8; 20];
        t[tcp::SRC_PORT].copy_from_slice(&80u16.to_be_bytes());
        t[tcp::DST_PORT].copy_from_slice(&9u16.to_be_bytes());
        t[tcp::SEQ].copy_from_slice(&7u32.to_be_bytes());
        t[tcp::ACK].copy_from_slice(&11u32.to_be_bytes());
        t[tcp::FLAGS.start] = 5 << 4;
        t[tcp::FLAGS.start + 1] = tcp::SYN | tcp::ACK_FLAG;
        t[tcp::WINDOW].copy_from_slice(&1000u16.to_be_bytes());
        let s = TcpPacket::new_unchecked(&t[..]);
        assert_eq!((s.src_port(), s.dst_port()), (80, 9));
        assert_eq!((s.seq_number().0, s.ack_number().0), (7, 11));
        assert!(s.syn() && s.ack() && !s.fin() && !s.rst());
        assert_eq!(s.header_len() as usize, tcp::LEN);
        assert_eq!(s.window_len(), 1000);
    }
}
