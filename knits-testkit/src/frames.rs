//! Test frames, built with smoltcp's `Repr::emit` (full checksums unless a caller edits them
//! afterwards and calls [`fix_checksums`]).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber, TcpTimestampRepr, UdpPacket, UdpRepr,
};

/// SYN bit of [`TcpFrame::flags`].
pub const F_SYN: u8 = 1;
/// ACK bit, in the fuzz ops' flag bytes (a [`TcpFrame`] sets ACK when it has an `ack`).
pub const F_ACK: u8 = 2;
/// FIN bit of [`TcpFrame::flags`].
pub const F_FIN: u8 = 4;
/// RST bit of [`TcpFrame::flags`].
pub const F_RST: u8 = 8;
/// PSH bit of [`TcpFrame::flags`].
pub const F_PSH: u8 = 16;

/// The [`TcpFrame::flags`] of smoltcp's one-control `TcpControl`.
pub fn flags_of(control: TcpControl) -> u8 {
    match control {
        TcpControl::Syn => F_SYN,
        TcpControl::Fin => F_FIN,
        TcpControl::Rst => F_RST,
        TcpControl::Psh => F_PSH,
        TcpControl::None => 0,
    }
}

/// The Ethernet and IPv4 headers of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Frame {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Source address.
    pub src: Ipv4Address,
    /// Destination address.
    pub dst: Ipv4Address,
    /// IPv4 TTL.
    pub ttl: u8,
}

impl Ipv4Frame {
    /// A frame with both headers written (IPv4 checksum filled) for an `l4_len`-byte
    /// `proto` payload, whose bytes are all `fill` (0xa5 shows a field a builder forgot).
    pub fn header(&self, proto: IpProtocol, l4_len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; 14 + 20 + l4_len];
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
        Ipv4Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header: proto,
            payload_len: l4_len,
            hop_limit: self.ttl,
        }
        .emit(
            &mut Ipv4Packet::new_unchecked(&mut f[14..]),
            &ChecksumCapabilities::default(),
        );
        f
    }

    /// A UDP datagram from port `ports.0` to `ports.1`, checksum filled.
    pub fn udp(&self, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
        let mut f = self.header(IpProtocol::Udp, 8 + payload.len(), 0);
        UdpRepr {
            src_port: ports.0,
            dst_port: ports.1,
        }
        .emit(
            &mut UdpPacket::new_unchecked(&mut f[34..]),
            &self.src.into(),
            &self.dst.into(),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
        f
    }

    /// A packet of another protocol whose payload is `payload` as it is.
    pub fn other(&self, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let mut f = self.header(proto, payload.len(), 0);
        f[34..].copy_from_slice(payload);
        f
    }
}

/// A TCP segment to build; every field is the wire's, nothing is derived but the checksums,
/// the ACK flag (set when `ack` is some) and the header length.
#[derive(Debug, Clone)]
pub struct TcpFrame {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Source address and port.
    pub src: (Ipv4Address, u16),
    /// Destination address and port.
    pub dst: (Ipv4Address, u16),
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (sets ACK).
    pub ack: Option<u32>,
    /// SYN, FIN, RST, PSH as [`F_SYN`], [`F_FIN`], [`F_RST`], [`F_PSH`]; any combination.
    pub flags: u8,
    /// Window field.
    pub win: u16,
    /// MSS option.
    pub mss: Option<u16>,
    /// Window-scale option.
    pub ws: Option<u8>,
    /// SACK-permitted option.
    pub sack_perm: bool,
    /// Timestamp option (TSval, TSecr).
    pub ts: Option<(u32, u32)>,
    /// SACK blocks (the last ones are left out if the options would pass 40 bytes).
    pub sack: [Option<(u32, u32)>; 3],
    /// Payload.
    pub payload: Vec<u8>,
    /// IPv4 TTL.
    pub ttl: u8,
}

impl TcpFrame {
    /// A bare segment (no flags, no options, window 64240, TTL 64, MACs zero).
    pub fn new(src: (Ipv4Address, u16), dst: (Ipv4Address, u16)) -> Self {
        TcpFrame {
            src_mac: EthernetAddress([0; 6]),
            dst_mac: EthernetAddress([0; 6]),
            src,
            dst,
            seq: 0,
            ack: None,
            flags: 0,
            win: 64240,
            mss: None,
            ws: None,
            sack_perm: false,
            ts: None,
            sack: [None; 3],
            payload: Vec::new(),
            ttl: 64,
        }
    }

    /// The Ethernet frame, with full checksums.
    pub fn build(&self) -> Vec<u8> {
        let f = self.flags;
        let control = if f & F_SYN != 0 {
            TcpControl::Syn
        } else if f & F_RST != 0 {
            TcpControl::Rst
        } else if f & F_FIN != 0 {
            TcpControl::Fin
        } else if f & F_PSH != 0 {
            TcpControl::Psh
        } else {
            TcpControl::None
        };
        let mut tcp = TcpRepr {
            src_port: self.src.1,
            dst_port: self.dst.1,
            control,
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.win,
            window_scale: self.ws,
            max_seg_size: self.mss,
            sack_permitted: self.sack_perm,
            sack_ranges: self.sack,
            timestamp: self.ts.map(|(v, e)| TcpTimestampRepr::new(v, e)),
            payload: &self.payload,
        };
        // At most 40 option bytes: drop SACK blocks until the header fits.
        for n in (0..3).rev() {
            if tcp.header_len() > 60 {
                tcp.sack_ranges[n] = None;
            }
        }
        let (src, dst) = (self.src.0.into(), self.dst.0.into());
        let mut b = self.ipv4().header(IpProtocol::Tcp, tcp.buffer_len(), 0);
        let mut p = TcpPacket::new_unchecked(&mut b[34..]);
        tcp.emit(&mut p, &src, &dst, &ChecksumCapabilities::default());
        // Flags smoltcp's one-control Repr cannot say (SYN+FIN, FIN+RST, ...).
        p.set_syn(f & F_SYN != 0);
        p.set_fin(f & F_FIN != 0);
        p.set_rst(f & F_RST != 0);
        p.set_psh(f & F_PSH != 0);
        p.fill_checksum(&src, &dst);
        b
    }

    /// The frame's Ethernet and IPv4 headers.
    pub fn ipv4(&self) -> Ipv4Frame {
        Ipv4Frame {
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            src: self.src.0,
            dst: self.dst.0,
            ttl: self.ttl,
        }
    }
}

/// An ARP packet: `src` (MAC, address) tells or asks `target` (MAC, address), sent to `dst_mac`.
pub fn arp(
    operation: ArpOperation,
    src: (EthernetAddress, Ipv4Address),
    dst_mac: EthernetAddress,
    target: (EthernetAddress, Ipv4Address),
) -> Vec<u8> {
    let mut b = vec![0u8; 42];
    EthernetRepr {
        src_addr: src.0,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: src.0,
        source_protocol_addr: src.1,
        target_hardware_addr: target.0,
        target_protocol_addr: target.1,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut b[14..]));
    b
}

/// A broadcast ARP request from (`src_mac`, `src`) for `target`.
pub fn arp_request(src_mac: EthernetAddress, src: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    arp(
        ArpOperation::Request,
        (src_mac, src),
        EthernetAddress::BROADCAST,
        (EthernetAddress([0; 6]), target),
    )
}

/// Recomputes a TCP frame's IPv4 header and TCP checksums after an edit.
pub fn fix_checksums(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    TcpPacket::new_unchecked(&mut f[34..]).fill_checksum(&src.into(), &dst.into());
}

// ------------------------------------------------------------------------------------------------
// Shorthands of the two-sided cluster (clients in 198.18/16, nodes in 198.19/16), for the
// benchmarks, the burst test and the instruction-count example.

/// The source MAC of a shorthand frame from a client (198.18/16).
pub const CLIENT_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
/// The source MAC of a shorthand frame from anywhere else (a node).
pub const NODE_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 2]);

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

/// A TCP segment to `dst_mac` (window 64000, no options), from [`CLIENT_MAC`] when `src` is a
/// client's address, else from [`NODE_MAC`].
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
    let o = Opts::default();
    tcp_opts(dst_mac, src, dst, control, seq, ack, payload, o)
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
    let mut t = TcpFrame::new(src, dst);
    t.src_mac = if src.0.octets()[1] == 18 {
        CLIENT_MAC
    } else {
        NODE_MAC
    };
    t.dst_mac = dst_mac;
    (t.flags, t.seq, t.ack) = (flags_of(control), seq, ack);
    t.win = 64000;
    t.sack_perm = o.sack_perm;
    t.sack = [o.sack, None, None];
    t.ts = o.ts;
    t.payload = payload.to_vec();
    t.build()
}

/// A UDP datagram from [`NODE_MAC`] to `dst_mac`.
pub fn udp(
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload: &[u8],
) -> Vec<u8> {
    let l3 = Ipv4Frame {
        src_mac: NODE_MAC,
        dst_mac,
        src: src.0,
        dst: dst.0,
        ttl: 64,
    };
    l3.udp((src.1, dst.1), payload)
}

/// An IPv4 packet of another protocol (ICMP, ...) from a node, its body `payload` as it is
/// (IPv4 checksum filled, TTL 64).
pub fn ipv4(
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    proto: smoltcp::wire::IpProtocol,
    payload: &[u8],
) -> Vec<u8> {
    Ipv4Frame {
        src_mac: NODE_MAC,
        dst_mac,
        src,
        dst,
        ttl: 64,
    }
    .other(proto, payload)
}
