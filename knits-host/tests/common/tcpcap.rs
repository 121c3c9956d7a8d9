//! TCP segments read back from a knits-host pcapng capture (one interface per switch port,
//! "in" = given to the core, "out" = emitted by it), parsed with smoltcp's wire types, and the
//! connections as each port sees them: every endpoint's ISN, window-scale option and highest
//! sequence number sent.

#![allow(dead_code)]

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;

use knits_host::pcap::{Capture, Direction};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpOption, TcpPacket,
};

/// An IPv4 address and TCP port.
pub type Ep = (Ipv4Addr, u16);

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One TCP segment of the capture.
#[derive(Debug, Clone)]
pub struct Seg {
    /// Index of the record in the capture.
    pub rec: usize,
    /// Switch port (interface id).
    pub port: u32,
    pub dir: Direction,
    pub ts_us: u64,
    pub ip_id: u16,
    pub ip_len: u16,
    pub src: Ep,
    pub dst: Ep,
    pub seq: u32,
    pub ack: u32,
    /// FIN, SYN, RST, PSH, ACK, URG bits (byte 13 of the header, without ECE/CWR).
    pub flags: u8,
    pub win: u16,
    pub tcp_hdr_len: u8,
    /// Window-scale option (SYNs).
    pub ws: Option<u8>,
    /// SACK blocks in option order (left, right).
    pub sack: Vec<(u32, u32)>,
    /// A SACK option with more blocks than smoltcp reports (4 blocks, no timestamps).
    pub sack_truncated: bool,
    pub tsval: Option<u32>,
    pub payload_len: u32,
    /// Hash of the payload bytes (to find the same segment on another port).
    pub payload_hash: u64,
    /// Index of the connection this segment belongs to, as its port sees it ([`Tracks::views`]).
    pub view: Option<usize>,
}

impl Seg {
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Sequence space the segment occupies (SYN and FIN count one each).
    pub fn seq_len(&self) -> u32 {
        self.payload_len + self.has(SYN) as u32 + self.has(FIN) as u32
    }

    /// "a:p > b:p [flags] seq ack win len sack" for failure messages.
    pub fn describe(&self) -> String {
        let mut f = String::new();
        for (bit, c) in [(SYN, 'S'), (FIN, 'F'), (RST, 'R'), (PSH, 'P'), (ACK, '.')] {
            if self.has(bit) {
                f.push(c);
            }
        }
        format!(
            "#{} port {} {:?} {}:{} > {}:{} [{f}] seq {} ack {} win {} len {} id {} sack {:?}",
            self.rec,
            self.port,
            self.dir,
            self.src.0,
            self.src.1,
            self.dst.0,
            self.dst.1,
            self.seq,
            self.ack,
            self.win,
            self.payload_len,
            self.ip_id,
            self.sack
        )
    }
}

/// Parses one Ethernet/IPv4/TCP frame; `None` for anything else or a malformed frame.
pub fn parse(rec: usize, port: u32, dir: Direction, ts_us: u64, frame: &[u8]) -> Option<Seg> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let mut seg = Seg {
        rec,
        port,
        dir,
        ts_us,
        ip_id: ip.ident(),
        ip_len: ip.total_len(),
        src: (ip.src_addr(), tcp.src_port()),
        dst: (ip.dst_addr(), tcp.dst_port()),
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack_number().0 as u32,
        flags: tcp.as_ref()[13] & 0x3f,
        win: tcp.window_len(),
        tcp_hdr_len: tcp.header_len(),
        ws: None,
        sack: Vec::new(),
        sack_truncated: false,
        tsval: None,
        payload_len: tcp.payload().len() as u32,
        payload_hash: {
            let mut h = DefaultHasher::new();
            tcp.payload().hash(&mut h);
            h.finish()
        },
        view: None,
    };
    let mut opts = tcp.options();
    while !opts.is_empty() {
        let Ok((rest, opt)) = TcpOption::parse(opts) else {
            break;
        };
        let used = opts.len() - rest.len();
        match opt {
            TcpOption::EndOfList => break,
            TcpOption::WindowScale(s) => seg.ws = Some(s),
            TcpOption::SackRange(r) => {
                seg.sack.extend(r.iter().flatten().copied());
                seg.sack_truncated = used > 2 + 8 * seg.sack.len();
            }
            TcpOption::TimeStamp { tsval, .. } => seg.tsval = Some(tsval),
            _ => {}
        }
        opts = rest;
    }
    Some(seg)
}

/// Serial-number comparison (RFC 1982 for 32 bits): `a` before `b`.
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

pub fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

/// RFC 2883 section 4: the first SACK block reports a duplicate (D-SACK) when it lies below the
/// cumulative acknowledgment, or inside the second block.
pub fn first_block_is_dsack(ack: u32, sack: &[(u32, u32)]) -> bool {
    let Some(&(l0, r0)) = sack.first() else {
        return false;
    };
    if seq_lt(l0, ack) {
        return true;
    }
    match sack.get(1) {
        Some(&(l1, r1)) => seq_le(l1, l0) && seq_le(r0, r1),
        None => false,
    }
}

/// One endpoint of a connection as one port sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    /// From its SYN (or SYN-ACK).
    pub isn: Option<u32>,
    /// `Some(ws)` once its SYN was seen: the window-scale option it carried, if any.
    pub ws: Option<Option<u8>>,
    /// Highest sequence number it sent (one past its last byte / FIN), as an offset from `isn`;
    /// known for the endpoint behind the port only (its segments are "in").
    pub hi_off: u32,
    pub sent: bool,
    /// It sent the connection's first SYN (the one without ACK): the connection's client end.
    pub initiator: bool,
}

/// One TCP connection as one port sees it: `local` sits behind the port (its segments come in
/// on it), `remote` is the address it talks to.
#[derive(Debug, Clone)]
pub struct View {
    pub port: u32,
    pub local: Ep,
    pub remote: Ep,
    pub l: Side,
    pub r: Side,
}

impl View {
    fn side(&self, ep: Ep) -> &Side {
        if ep == self.local { &self.l } else { &self.r }
    }

    /// The shift that applies to window fields `ep` sends on this connection (RFC 7323 2.2:
    /// scaling is on only when both SYNs carried the option; the shift is capped at 14). `None`
    /// when a SYN of the connection was not seen.
    pub fn shift_of(&self, ep: Ep) -> Option<u8> {
        let (Some(a), Some(b)) = (self.l.ws, self.r.ws) else {
            return None;
        };
        let mine = if ep == self.local { a } else { b };
        Some(match (a, b) {
            (Some(_), Some(_)) => mine.unwrap_or(0).min(14),
            _ => 0,
        })
    }

    /// The ISN of `ep`.
    pub fn isn_of(&self, ep: Ep) -> Option<u32> {
        self.side(ep).isn
    }

    /// The endpoint that opened the connection.
    pub fn initiator(&self) -> Option<Ep> {
        if self.l.initiator {
            Some(self.local)
        } else if self.r.initiator {
            Some(self.remote)
        } else {
            None
        }
    }

    /// The local endpoint's highest sequence number sent (absolute), if it sent its SYN.
    pub fn local_hi(&self) -> Option<u32> {
        self.l.isn.map(|i| i.wrapping_add(self.l.hi_off))
    }
}

/// Every TCP segment of a capture and the connections per port.
#[derive(Debug, Default)]
pub struct Tracks {
    pub segs: Vec<Seg>,
    pub views: Vec<View>,
    /// Records that are not TCP/IPv4 (ARP, UDP control messages).
    pub other: usize,
    /// Indices into `segs` of SYN-ACKs that arrived on a connection that already had another
    /// ISN for their sender.
    pub stray_syns: Vec<usize>,
}

/// Which end of the segment sits behind its port: the sender for "in", the receiver for "out".
fn local_remote(s: &Seg) -> (Ep, Ep) {
    match s.dir {
        Direction::In => (s.src, s.dst),
        Direction::Out => (s.dst, s.src),
    }
}

/// Parses the capture and assigns every segment to a connection view (per port and 4-tuple; a
/// SYN with a new ISN starts a new view, so a reused port pair is a new connection).
pub fn tracks(cap: &Capture) -> Tracks {
    let mut t = Tracks::default();
    let mut current: HashMap<(u32, Ep, Ep), usize> = HashMap::new();
    for (i, r) in cap.records.iter().enumerate() {
        let Some(dir) = r.dir else {
            t.other += 1;
            continue;
        };
        let Some(mut s) = parse(i, r.interface, dir, r.ts_us, &r.data) else {
            t.other += 1;
            continue;
        };
        let (local, remote) = local_remote(&s);
        let key = (s.port, local, remote);
        let from_local = s.src == local;
        // Only an opening SYN (no ACK) with a new ISN starts a new connection on a port pair. A
        // SYN-ACK whose ISN differs from the one the connection already has is a stray (e.g. a
        // new leg's SYN-ACK retransmission translated onto the client's connection): recorded,
        // and it changes nothing.
        let known_isn = current.get(&key).and_then(|&v| {
            let view = &t.views[v];
            if from_local { view.l.isn } else { view.r.isn }
        });
        let fresh_syn = s.has(SYN) && !s.has(ACK) && known_isn.is_some_and(|isn| isn != s.seq);
        if s.has(SYN) && s.has(ACK) && known_isn.is_some_and(|isn| isn != s.seq) {
            t.stray_syns.push(t.segs.len());
        }
        if fresh_syn || !current.contains_key(&key) {
            current.insert(key, t.views.len());
            t.views.push(View {
                port: s.port,
                local,
                remote,
                l: Side::default(),
                r: Side::default(),
            });
        }
        let v = current[&key];
        s.view = Some(v);
        let view = &mut t.views[v];
        let side = if from_local { &mut view.l } else { &mut view.r };
        if s.has(SYN) && side.isn.is_none() {
            side.isn = Some(s.seq);
            side.ws = Some(s.ws);
            side.initiator = !s.has(ACK);
        }
        if let Some(isn) = side.isn {
            let end = s.seq.wrapping_add(s.seq_len()).wrapping_sub(isn);
            if (end as i32) >= 0 && (!side.sent || end > side.hi_off) {
                side.hi_off = end;
                side.sent = true;
            }
        }
        t.segs.push(s);
    }
    t
}
