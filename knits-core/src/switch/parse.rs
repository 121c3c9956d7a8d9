//! Stage 1, parse: fixed-offset views of a frame's headers, checked once.
//!
//! Every check the switch makes of a header's shape is here, each failure named by its
//! [`DropReason`]: what leaves this stage is a frame whose Ethernet, IPv4 and transport headers
//! are all present, option-less where the switch needs them to be, and (when asked) correctly
//! checksummed. The stages after it read at the constant offsets of [`field`] without further
//! checks. No state is read or written.

use smoltcp::wire::EthernetAddress;

use crate::checksum;
use crate::counters::DropReason;
use crate::seq::SeqNumber;
use crate::table::FlowKey;
use crate::wire::field::{self, ethernet, frame, ipv4, tcp, udp};
use crate::wire::tcp_options::{self, TcpOptions};

/// The network protocol of a frame addressed to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum L3 {
    Arp,
    Ipv4,
}

/// The Ethernet header: the frame must be for this port's MAC (or broadcast) and carry ARP or
/// IPv4.
#[inline]
pub(super) fn ethernet(f: &[u8], mac: EthernetAddress) -> Result<L3, DropReason> {
    let Some(h) = f.first_chunk::<{ ethernet::LEN }>() else {
        return Err(DropReason::EthTruncated);
    };
    let dst = [h[0], h[1], h[2], h[3], h[4], h[5]];
    if dst != mac.0 && dst != [0xff; 6] {
        return Err(DropReason::EthNotForUs);
    }
    match [h[12], h[13]] {
        ethernet::IPV4 => Ok(L3::Ipv4),
        ethernet::ARP => Ok(L3::Arp),
        _ => Err(DropReason::EthUnsupported),
    }
}

/// What the later stages need of an IPv4 header.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ip {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    pub ttl: u8,
    /// Bytes of the transport segment (the total length less the header; Ethernet padding
    /// past it is not part of the segment).
    pub l4_len: usize,
}

/// The IPv4 header of a frame the Ethernet stage accepted: complete, version 4, no options,
/// not a fragment, and (when `verify`) its checksum right.
#[inline]
pub(super) fn ipv4(f: &[u8], verify: bool) -> Result<Ip, DropReason> {
    let body = f.len().saturating_sub(frame::IP);
    let Some(h) = f
        .get(frame::IP..)
        .and_then(|b| b.first_chunk::<{ ipv4::LEN }>())
    else {
        return Err(DropReason::Ipv4Malformed);
    };
    let hl = (h[ipv4::VER_IHL] & 0x0f) as usize * 4;
    let total = be16(h, ipv4::LENGTH.start) as usize;
    // The common header in one test (version 4, no options, the datagram within the frame);
    // anything else is told apart by the checks after it.
    let plain = h[ipv4::VER_IHL] == ipv4::VER_IHL_PLAIN && total >= ipv4::LEN && total <= body;
    if !plain {
        if hl < ipv4::LEN || hl > body || hl > total || body < total || h[ipv4::VER_IHL] >> 4 != 4 {
            return Err(DropReason::Ipv4Malformed);
        }
        if hl != ipv4::LEN {
            return Err(DropReason::Ipv4Options);
        }
    }
    if be16(h, ipv4::FLG_OFF.start) & ipv4::FRAGMENT_MASK != 0 {
        return Err(DropReason::Ipv4Fragment);
    }
    if verify && !checksum::ipv4_header_ok(h) {
        return Err(DropReason::Ipv4BadChecksum);
    }
    Ok(Ip {
        src: [h[12], h[13], h[14], h[15]],
        dst: [h[16], h[17], h[18], h[19]],
        proto: h[ipv4::PROTOCOL],
        ttl: h[ipv4::TTL],
        l4_len: total - ipv4::LEN,
    })
}

/// A parsed TCP segment (values before any rewrite).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seg {
    pub key: FlowKey,
    pub seq: SeqNumber,
    pub ack: SeqNumber,
    /// The flag byte of the TCP header (`field::tcp::{SYN, ACK_FLAG, FIN, RST}` bits).
    pub flags: u8,
    pub len: u32,
    pub win: u16,
    pub opts: TcpOptions,
}

impl Seg {
    /// SYN is set.
    #[inline]
    pub const fn syn(&self) -> bool {
        self.flags & tcp::SYN != 0
    }
    /// ACK is set.
    #[inline]
    pub const fn ackf(&self) -> bool {
        self.flags & tcp::ACK_FLAG != 0
    }
    /// FIN is set.
    #[inline]
    pub const fn fin(&self) -> bool {
        self.flags & tcp::FIN != 0
    }
    /// RST is set.
    #[inline]
    pub const fn rst(&self) -> bool {
        self.flags & tcp::RST != 0
    }
    /// Sets or clears FIN (the segment as a translation leaves it).
    #[inline]
    pub fn set_fin(&mut self, fin: bool) {
        self.flags = if fin {
            self.flags | tcp::FIN
        } else {
            self.flags & !tcp::FIN
        };
    }
    /// Sequence space the segment occupies (data, SYN and FIN).
    #[inline]
    pub const fn seq_len(&self) -> u32 {
        self.len + self.syn() as u32 + self.fin() as u32
    }
    /// Neither SYN, FIN nor RST: an acknowledgment, with or without data.
    #[inline]
    pub const fn plain(&self) -> bool {
        self.flags & (tcp::SYN | tcp::FIN | tcp::RST) == 0
    }
}

/// The TCP segment of an IPv4 frame: a header that fits, a legal flag combination, options
/// that parse, and (when `verify`) a right checksum. Written into `seg`, the caller's record,
/// which starts as `Seg::default()` (so the record is not moved between stages).
#[inline]
pub(super) fn tcp(f: &[u8], ip: &Ip, verify: bool, seg: &mut Seg) -> Result<(), DropReason> {
    let Some(s) = f.get(frame::L4..frame::L4 + ip.l4_len) else {
        return Err(DropReason::TcpMalformed);
    };
    let Some(th) = s.first_chunk::<{ tcp::LEN }>() else {
        return Err(DropReason::TcpMalformed);
    };
    let hdr_len = (th[tcp::FLAGS.start] >> 4) as usize * 4;
    if hdr_len < tcp::LEN || hdr_len > s.len() {
        return Err(DropReason::TcpMalformed);
    }
    let flags = th[tcp::FLAGS.start + 1];
    // An acknowledgment without SYN, FIN or RST (most segments) is legal as it stands.
    let control = flags & (tcp::SYN | tcp::ACK_FLAG | tcp::FIN | tcp::RST);
    if control != tcp::ACK_FLAG {
        let (syn, ackf) = (flags & tcp::SYN != 0, flags & tcp::ACK_FLAG != 0);
        let (fin, rst) = (flags & tcp::FIN != 0, flags & tcp::RST != 0);
        if (syn && (fin || rst)) || (!syn && !ackf && !rst) || (fin && !ackf) {
            return Err(DropReason::TcpBadFlags);
        }
    }
    if verify && !checksum::transport_ok(ip.src, ip.dst, ipv4::PROTO_TCP, s) {
        return Err(DropReason::TcpBadChecksum);
    }
    // Field by field: the caller's record starts as `Seg::default()`, options included.
    seg.key = FlowKey {
        src: ip.src,
        dst: ip.dst,
        sport: be16(th, tcp::SRC_PORT.start),
        dport: be16(th, tcp::DST_PORT.start),
    };
    seg.seq = SeqNumber(be32(th, tcp::SEQ.start));
    seg.ack = SeqNumber(be32(th, tcp::ACK.start));
    seg.flags = control;
    seg.len = (s.len() - hdr_len) as u32;
    seg.win = be16(th, tcp::WINDOW.start);
    if hdr_len > tcp::LEN {
        let Some(hdr) = s.get(..hdr_len) else {
            return Err(DropReason::TcpMalformed);
        };
        if tcp_options::parse_into(hdr, &mut seg.opts).is_err() {
            return Err(DropReason::TcpBadOption);
        }
    }
    Ok(())
}

/// A UDP datagram's ports and checksum field, and the whole datagram.
pub(super) struct Udp<'f> {
    pub sport: u16,
    pub dport: u16,
    pub checksum: u16,
    pub datagram: &'f [u8],
}

/// The UDP datagram of an IPv4 frame; its length field must equal the IPv4 payload length.
#[inline]
pub(super) fn udp<'f>(f: &'f [u8], ip: &Ip) -> Result<Udp<'f>, DropReason> {
    let Some(d) = f.get(frame::L4..frame::L4 + ip.l4_len) else {
        return Err(DropReason::UdpMalformed);
    };
    let Some(h) = d.first_chunk::<{ udp::LEN }>() else {
        return Err(DropReason::UdpMalformed);
    };
    if be16(h, udp::LENGTH.start) as usize != d.len() {
        return Err(DropReason::UdpMalformed);
    }
    Ok(Udp {
        sport: be16(h, udp::SRC_PORT.start),
        dport: be16(h, udp::DST_PORT.start),
        checksum: be16(h, udp::CHECKSUM.start),
        datagram: d,
    })
}

/// The 4-tuple of an Ethernet/IPv4/TCP frame without IP options, read at fixed offsets and not
/// checked (a hint for [`super::Switch::process_burst`]'s first pass: a wrong one only costs a
/// useless read; `process` checks everything).
#[inline]
pub(super) fn tcp_key_hint(f: &[u8]) -> Option<FlowKey> {
    let h = f.first_chunk::<{ frame::L4 + 4 }>()?;
    let ip = frame::IP;
    if [h[12], h[13]] != ethernet::IPV4
        || h[ip + ipv4::VER_IHL] != ipv4::VER_IHL_PLAIN
        || h[ip + ipv4::PROTOCOL] != ipv4::PROTO_TCP
    {
        return None;
    }
    let a = |r: field::Field| {
        let s = ip + r.start;
        [h[s], h[s + 1], h[s + 2], h[s + 3]]
    };
    Some(FlowKey {
        src: a(ipv4::SRC),
        dst: a(ipv4::DST),
        sport: be16(h, frame::L4 + tcp::SRC_PORT.start),
        dport: be16(h, frame::L4 + tcp::DST_PORT.start),
    })
}

#[inline]
fn be16<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    match (h.get(at), h.get(at + 1)) {
        (Some(&a), Some(&b)) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
fn be32<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    (be16(h, at) as u32) << 16 | be16(h, at + 2) as u32
}
