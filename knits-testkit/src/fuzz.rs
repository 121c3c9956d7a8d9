//! The check logic of the KNITS fuzz targets, shared with the corpus replay test.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, libFuzzer) call these functions, and
//! so does `knits-core/tests/fuzz_corpus.rs` (stable `cargo test`), which replays every file of
//! `fuzz/corpus/<target>/` through them. Inputs are decoded by a small fixed-layout reader
//! ([`Reader`]) rather than the `arbitrary` crate, so that the stable replay decodes a corpus file
//! exactly as the fuzzer did.
//!
//! Every `check_*` function takes the raw input bytes, never fails on any input by itself, and
//! panics (an `assert!`) when knits-core breaks an invariant. See docs/fuzzing.md.

use std::collections::HashMap;
use std::string::String;
use std::sync::atomic::{AtomicBool, Ordering};
use std::vec::Vec;

use knits_core::checksum::{self, Kind};
use knits_core::config::{Config, MAX_PORTS, PortId, PortRole, SprayPolicy};
use knits_core::counters::{DropReason, LocalKind};
use knits_core::meter::NoMeter;
use knits_core::splice::{Binding, Phase, SessionSlot};
use knits_core::switch::{FrameMeta, MAX_GENERATED, Storage, Switch, Verdict};
use knits_core::table::{
    self, Dir, FlowKey, FlowKind, FlowSlot, FlowTable, IndexSlot, TableFull, dirflag,
};
use knits_core::time::Instant;
use knits_core::wire::control::{
    self, Endpoint, Reply, ReplyCode, ReplyRepr, Request, RequestRepr,
};
use knits_core::wire::tcp_options::{self, OptionError, TcpOptions};

pub use crate::frames::{F_ACK, F_FIN, F_PSH, F_RST, F_SYN};
use crate::frames::{Ipv4Frame, TcpFrame, arp};
use crate::sink::VecSink;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress,
    IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

/// The control key of every fuzzed cluster (key id 1).
pub const KEY: control::Key = *b"knits-fuzz-key-1";
/// A key the switch does not hold.
const WRONG_KEY: control::Key = *b"not-the-fuzz-key";

/// Keeps TCP frames with a spoofed source address out of the switch (a back-end port whose
/// subnet does not hold the source, or the client port with a source in a back-end subnet).
///
/// Bug 1 (docs/fuzzing.md, now fixed): knits-core used to track such a SYN as a new flow, so one
/// node could put a second copy of another flow's key into the table and then receive another
/// node's packets for a client. The core now drops these frames (`src_spoofed`), so the guard is
/// off and the committed reproducers run as regression tests; turn it on only to bisect an old
/// build.
pub static SPOOF_GUARD: AtomicBool = AtomicBool::new(false);

/// True for an IPv4 TCP frame whose source address cannot come from `port`.
pub fn spoofed_tcp(c: &Config, port: PortId, f: &[u8]) -> bool {
    let Some(ipp) = f.get(14..).and_then(|b| Ipv4Packet::new_checked(b).ok()) else {
        return false;
    };
    if EthernetFrame::new_unchecked(f).ethertype() != EthernetProtocol::Ipv4
        || ipp.next_header() != IpProtocol::Tcp
    {
        return false;
    }
    let src = ipp.src_addr();
    match c.ports.get(port as usize) {
        Some(pc) if pc.role == PortRole::Backend => !pc.contains(src),
        Some(_) => c.route(src).is_some_and(|p| p != port),
        None => false,
    }
}

/// A check function: panics when knits-core breaks an invariant on this input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by corpus directory name, with their check function.
pub const TARGETS: &[(&str, Check)] = &[
    ("pipeline", check_pipeline),
    ("stateful", check_stateful),
    ("control", check_control),
    ("tcp_options", check_tcp_options),
    ("flow_table", check_flow_table),
    ("checksum", check_checksum),
];

// ------------------------------------------------------------------------------------------------
// Input decoding.

/// Reads fixed-width fields from fuzz input; past the end every read yields zeros.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        v
    }
    /// A big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// A big-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = self.pos.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

// ------------------------------------------------------------------------------------------------
// The cluster: Config::cluster(3, KEY), addresses of ARCHITECTURE.md.

/// Addresses the structured ops pick from (3 bits).
pub const ADDRS: [[u8; 4]; 8] = [
    [198, 18, 0, 2],  // 0 client
    [198, 18, 0, 3],  // 1 a second client
    [198, 18, 0, 10], // 2 the VIP
    [198, 19, 1, 2],  // 3 node 1
    [198, 19, 2, 2],  // 4 node 2
    [198, 19, 3, 2],  // 5 node 3
    [198, 19, 1, 1],  // 6 port 1's gateway
    [203, 0, 113, 5], // 7 nowhere
];
/// Ports the structured ops pick from (3 bits).
pub const PORTS: [u16; 8] = [80, 40000, 40001, 50000, 50001, 7100, 443, 0];

/// Address indices.
pub const A_CLIENT: u8 = 0;
/// The VIP.
pub const A_VIP: u8 = 2;
/// Node `n` (1..=3) is `A_N1 + n - 1`.
pub const A_N1: u8 = 3;
/// Port indices.
pub const P_80: u8 = 0;
/// The client's first source port.
pub const P_C1: u8 = 1;
/// A node's first source port for a new leg.
pub const P_L1: u8 = 3;

fn ip(a: [u8; 4]) -> Ipv4Address {
    Ipv4Address::from_octets(a)
}

/// A host's MAC, made from its address (unicast, locally administered).
pub fn host_mac(a: [u8; 4]) -> EthernetAddress {
    EthernetAddress([0x02, 0xf0, a[0], a[1], a[2], a[3]])
}

/// The fuzzed configuration.
pub fn config(policy: SprayPolicy, verify: bool) -> Config {
    let mut c = Config::cluster(3, KEY);
    c.policy = policy;
    c.verify_checksums = verify;
    c
}

/// The switch port a host with this address sits behind (the client port for unknown ones).
pub fn port_of(c: &Config, a: [u8; 4]) -> PortId {
    c.route(ip(a)).unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// Frame building (smoltcp Repr::emit) and checking.

/// The Ethernet and IPv4 headers of a frame from host `src` to `dst` (TTL 64).
fn l3(src: [u8; 4], dst: [u8; 4], dst_mac: EthernetAddress) -> Ipv4Frame {
    Ipv4Frame {
        src_mac: host_mac(src),
        dst_mac,
        src: ip(src),
        dst: ip(dst),
        ttl: 64,
    }
}

/// A bare TCP segment from host `src` to `dst`, sent to `dst_mac`.
pub fn tcp_spec(src: ([u8; 4], u16), dst: ([u8; 4], u16), dst_mac: EthernetAddress) -> TcpFrame {
    let mut t = TcpFrame::new((ip(src.0), src.1), (ip(dst.0), dst.1));
    t.src_mac = host_mac(src.0);
    t.dst_mac = dst_mac;
    t
}

/// A UDP datagram as an Ethernet frame with full checksums.
pub fn udp_frame(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    dst_mac: EthernetAddress,
    payload: &[u8],
) -> Vec<u8> {
    l3(src.0, dst.0, dst_mac).udp((src.1, dst.1), payload)
}

/// An IPv4 packet of another protocol (ICMP echo-like bytes) as an Ethernet frame.
pub fn other_frame(
    src: [u8; 4],
    dst: [u8; 4],
    dst_mac: EthernetAddress,
    payload: &[u8],
) -> Vec<u8> {
    l3(src, dst, dst_mac).other(IpProtocol::Icmp, payload)
}

/// An ARP request (or, with `reply`, an unsolicited reply) from host `src` about `target`.
pub fn arp_frame(src: [u8; 4], target: [u8; 4], dst_mac: EthernetAddress, reply: bool) -> Vec<u8> {
    let (op, target_mac) = if reply {
        (ArpOperation::Reply, dst_mac)
    } else {
        (ArpOperation::Request, EthernetAddress([0; 6]))
    };
    arp(
        op,
        (host_mac(src), ip(src)),
        dst_mac,
        (target_mac, ip(target)),
    )
}

/// A signed hand-off request in a UDP frame from `node` (1..=3) to its gateway's control port.
pub fn control_frame(node: u8, sport: u16, repr: &RequestRepr, key: &control::Key) -> Vec<u8> {
    let mut msg = [0u8; control::REQUEST_LEN];
    let _ = repr.emit(&mut msg, key);
    let c = config(SprayPolicy::RoundRobin, true);
    let n = node.clamp(1, 3) as usize;
    let gw = c.ports[n].gateway.octets();
    udp_frame(
        ([198, 19, n as u8, 2], sport),
        (gw, control::DEFAULT_PORT),
        c.ports[n].mac,
        &msg,
    )
}

fn ones_eq(a: u16, b: u16) -> bool {
    a % 0xffff == b % 0xffff
}

/// The TCP/UDP length and checksum kind the frame's transport checksum can be checked with:
/// `Some(true)` when IPv4 and transport checksums are right for `kind`, `Some(false)` when one
/// is wrong, `None` when the frame is not an unfragmented option-less IPv4 packet that fits.
pub fn frame_valid(f: &[u8], kind: Kind) -> Option<bool> {
    let eth = EthernetFrame::new_checked(f).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ipp = Ipv4Packet::new_checked(&f[14..]).ok()?;
    if ipp.version() != 4 || ipp.header_len() != 20 || ipp.more_frags() || ipp.frag_offset() != 0 {
        return None;
    }
    let total = ipp.total_len() as usize;
    let l4 = f.get(34..14 + total)?;
    let (s, d) = (ipp.src_addr(), ipp.dst_addr());
    let ip_ok = ipp.verify_checksum();
    let proto = ipp.next_header();
    let l4_ok = match proto {
        IpProtocol::Tcp | IpProtocol::Udp => {
            let at = if proto == IpProtocol::Tcp { 16 } else { 6 };
            if l4.len() < at + 2 {
                return None;
            }
            let field = u16::from_be_bytes([l4[at], l4[at + 1]]);
            match kind {
                Kind::Full if proto == IpProtocol::Udp && field == 0 => true,
                Kind::Full => {
                    let ph = checksum::pseudo_header_sum(
                        s.octets(),
                        d.octets(),
                        proto.into(),
                        l4.len() as u16,
                    );
                    checksum::fold(checksum::sum(l4, ph)) == 0xffff
                }
                Kind::Partial => ones_eq(
                    field,
                    checksum::fold(checksum::pseudo_header_sum(
                        s.octets(),
                        d.octets(),
                        proto.into(),
                        l4.len() as u16,
                    )),
                ),
            }
        }
        _ => true,
    };
    Some(ip_ok && l4_ok)
}

/// Writes a partial checksum (the folded pseudo-header sum, as a TAP with NEEDS_CSUM hands it
/// over) into a TCP or UDP frame.
pub fn make_partial(f: &mut [u8]) {
    let Ok(ipp) = Ipv4Packet::new_checked(&f[14..]) else {
        return;
    };
    let (s, d, proto, total) = (
        ipp.src_addr(),
        ipp.dst_addr(),
        ipp.next_header(),
        ipp.total_len() as usize,
    );
    let at = match proto {
        IpProtocol::Tcp => 34 + 16,
        IpProtocol::Udp => 34 + 6,
        _ => return,
    };
    let l4_len = total.saturating_sub(20) as u16;
    let p = checksum::fold(checksum::pseudo_header_sum(
        s.octets(),
        d.octets(),
        proto.into(),
        l4_len,
    ));
    if let Some(b) = f.get_mut(at..at + 2) {
        b.copy_from_slice(&p.to_be_bytes());
    }
}

/// A parsed TCP frame, enough for the model.
#[derive(Debug, Clone, Copy)]
struct TcpSeen {
    key: FlowKey,
    seq: u32,
    ack: Option<u32>,
    flags: u8,
    hdr_len: usize,
    len: u32,
    tsval: Option<u32>,
    sack_blocks: u8,
}

impl TcpSeen {
    fn end(&self) -> u32 {
        self.seq.wrapping_add(
            self.len + (self.flags & F_SYN != 0) as u32 + (self.flags & F_FIN != 0) as u32,
        )
    }
    /// The receiver's own view of the connection.
    fn receiver(&self) -> FlowKey {
        self.key.reversed()
    }
}

fn parse_tcp(f: &[u8]) -> Option<TcpSeen> {
    let ipp = Ipv4Packet::new_checked(f.get(14..)?).ok()?;
    if ipp.next_header() != IpProtocol::Tcp || ipp.header_len() != 20 {
        return None;
    }
    let l4 = f.get(34..14 + ipp.total_len() as usize)?;
    let t = TcpPacket::new_checked(l4).ok()?;
    let hdr_len = t.header_len() as usize;
    if hdr_len < 20 || hdr_len > l4.len() {
        return None;
    }
    let opts = tcp_options::parse(&l4[..hdr_len]).ok()?;
    let flags = (t.syn() as u8)
        | (t.ack() as u8) << 1
        | (t.fin() as u8) << 2
        | (t.rst() as u8) << 3
        | (t.psh() as u8) << 4;
    Some(TcpSeen {
        key: FlowKey {
            src: ipp.src_addr().octets(),
            dst: ipp.dst_addr().octets(),
            sport: t.src_port(),
            dport: t.dst_port(),
        },
        seq: t.seq_number().0 as u32,
        ack: t.ack().then_some(t.ack_number().0 as u32),
        flags,
        hdr_len,
        len: (l4.len() - hdr_len) as u32,
        tsval: opts.ts_at.map(|_| opts.tsval),
        sack_blocks: opts.sack_blocks,
    })
}

fn serial_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

// ------------------------------------------------------------------------------------------------
// The harness: a switch, a model of the hosts, and the invariants checked after every step.

/// What the model remembers of one host endpoint, keyed by the endpoint's own view of its
/// connection (local address and port as `src`).
#[derive(Debug, Clone, Copy, Default)]
struct Ep {
    isn: u32,
    snd_nxt: u32,
    /// The peer's ISN, once a SYN reached this endpoint.
    irs: Option<u32>,
    rcv_nxt: Option<u32>,
    ts_recent: u32,
    ts_off: u32,
    /// Highest acknowledgment delivered to this endpoint.
    max_ack_rcvd: Option<u32>,
    /// This endpoint sent a timestamp option since its connection's SYN (negotiated or not).
    sent_ts: bool,
}

/// Counts of what the switch said, to check its counters against.
#[derive(Debug)]
struct Tally {
    rx: [u64; MAX_PORTS],
    fwd: [u64; MAX_PORTS],
    gen_ok: [u64; MAX_PORTS],
    local: [u64; LocalKind::COUNT],
    drops: [u64; DropReason::COUNT],
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            rx: [0; MAX_PORTS],
            fwd: [0; MAX_PORTS],
            gen_ok: [0; MAX_PORTS],
            local: [0; LocalKind::COUNT],
            drops: [0; DropReason::COUNT],
        }
    }
}

/// Table and session contents, to check that a step changed nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    flows: Vec<(usize, FlowSlot)>,
    sessions: Vec<(usize, u32, Vec<Binding>, u8)>,
}

/// ISNs a new endpoint may start from (wrap-around ones included).
const ISNS: [u32; 16] = [
    1000,
    0,
    0xffff_ff00,
    0x7fff_fff0,
    0x8000_0000,
    0xffff_ffff,
    0x1234_5678,
    0x9abc_def0,
    77,
    0xdead_beef,
    0x4000_0000,
    0xc000_0000,
    0xffff_fff0,
    0x0000_ffff,
    0x0001_0000,
    0x5555_5555,
];
const WINDOWS: [u16; 8] = [64240, 0, 1, 512, 29200, 65535, 1000, 8];
const TTLS: [u8; 4] = [64, 1, 2, 255];

const DAY_MS: u64 = 86_400_000;

/// A switch over a 3-node cluster with a model of the hosts around it.
pub struct Harness {
    /// The switch under test.
    pub sw: Switch<'static>,
    now_us: i64,
    sink: VecSink,
    eps: HashMap<FlowKey, Ep>,
    /// (receiver, end in receiver's space) -> (sender, end in sender's space) of delivered data.
    pairs: HashMap<(FlowKey, u32), (FlowKey, u32)>,
    tally: Tally,
    ctl_counter: [u64; 4],
    drained: bool,
    /// Answers to the control requests sent, in order.
    pub replies: Vec<ReplyCode>,
    /// The last verdict of a `process` call.
    pub last: Option<Verdict>,
    /// Client bytes of each client port (40000, 40001) that its server has not consumed
    /// (requests sent by the macros since the last hand-off).
    unconsumed: [u16; 2],
}

/// Header byte of a stateful input: flow capacity, session capacity, sink behaviour, policy.
pub fn header_params(b: u8) -> (usize, usize, u32, SprayPolicy) {
    let flows = [8, 4, 16, 64][(b & 3) as usize];
    let sessions = [2, 1, 4, 8][((b >> 2) & 3) as usize];
    let refuse = if b & 0x10 != 0 { 3 } else { 0 };
    let policy = [
        SprayPolicy::RoundRobin,
        SprayPolicy::Weighted,
        SprayPolicy::Maglev,
        SprayPolicy::RoundRobin,
    ][((b >> 5) & 3) as usize];
    (flows, sessions, refuse, policy)
}

impl Harness {
    /// A fresh switch; `header` as in [`header_params`]; checksum verification off unless `verify`.
    pub fn new(header: u8, verify: bool) -> Self {
        let (flows, sessions, refuse, policy) = header_params(header);
        let storage = Storage {
            flows: vec![FlowSlot::default(); flows].into(),
            index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
            sessions: vec![SessionSlot::default(); sessions].into(),
        };
        let sw = match Switch::new(config(policy, verify), storage) {
            Ok(sw) => sw,
            Err(e) => panic!("the fuzz configuration is valid: {e}"),
        };
        Harness {
            sw,
            now_us: 1_000_000,
            sink: VecSink::refusing_every(refuse),
            eps: HashMap::new(),
            pairs: HashMap::new(),
            tally: Tally::default(),
            ctl_counter: [0; 4],
            drained: false,
            replies: Vec::new(),
            last: None,
            unconsumed: [0; 2],
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.now_us)
    }
    fn now_ms(&self) -> u32 {
        (self.now_us / 1000) as u32
    }

    fn snapshot(&self) -> Snapshot {
        let flows = self.sw.table().iter().map(|(i, f)| (i, *f)).collect();
        let sessions = (0..self.sw.session_capacity())
            .filter_map(|i| {
                self.sw
                    .session(i)
                    .map(|s| (i, s.anchor, s.bindings.iter().copied().collect(), s.hops))
            })
            .collect();
        Snapshot { flows, sessions }
    }

    /// One frame into the switch on `port`, then every check. `None` when the spoof guard kept
    /// the frame back (see [`SPOOF_GUARD`]).
    pub fn frame(&mut self, port: PortId, frame: &mut [u8], kind: Kind) -> Option<Verdict> {
        if SPOOF_GUARD.load(Ordering::Relaxed) && spoofed_tcp(self.sw.config(), port, frame) {
            return None;
        }
        let input = frame.to_vec();
        let valid_in = frame_valid(&input, kind);
        let before = self.snapshot();
        let now = self.now();
        let v = self.sw.process(
            port,
            now,
            frame,
            FrameMeta { csum: kind },
            &mut self.sink,
            &mut NoMeter,
        );
        self.last = Some(v);
        if let Some(c) = self.tally.rx.get_mut(port as usize) {
            *c += 1;
        }
        match v {
            Verdict::Forward(p) => {
                assert!(
                    (p as usize) < self.sw.config().ports.len(),
                    "forward to a port that does not exist: {p}"
                );
                self.tally.fwd[p as usize] += 1;
                self.check_forwarded(port, &input, frame, p, kind, valid_in);
            }
            Verdict::Local(k) => {
                self.tally.local[k.index()] += 1;
                if k == LocalKind::Arp {
                    assert_eq!(
                        before,
                        self.snapshot(),
                        "an ARP packet changed the flow table"
                    );
                }
            }
            Verdict::Drop(r) => {
                self.tally.drops[r.index()] += 1;
                if !matches!(
                    r,
                    DropReason::NeighborUnknown | DropReason::StaleLeg | DropReason::SinkFull
                ) {
                    assert_eq!(
                        before,
                        self.snapshot(),
                        "a frame dropped as {} changed state",
                        r.name()
                    );
                }
            }
        }
        let control_sent = matches!(v, Verdict::Local(LocalKind::Control));
        self.after_step(control_sent.then_some(&before));
        Some(v)
    }

    /// Checks one forwarded frame against its input and feeds it to the model.
    fn check_forwarded(
        &mut self,
        in_port: PortId,
        input: &[u8],
        out: &[u8],
        p: PortId,
        kind: Kind,
        valid_in: Option<bool>,
    ) {
        assert_eq!(input.len(), out.len(), "a forwarded frame changed length");
        let pc = self.sw.config().ports[p as usize];
        assert_eq!(
            EthernetFrame::new_unchecked(out).src_addr(),
            pc.mac,
            "forwarded with another port's MAC"
        );
        let (ii, oi) = (
            Ipv4Packet::new_unchecked(&input[14..]),
            Ipv4Packet::new_unchecked(&out[14..]),
        );
        assert_eq!(
            ii.hop_limit().wrapping_sub(1),
            oi.hop_limit(),
            "TTL not decremented by one"
        );
        assert_eq!(ii.total_len(), oi.total_len());
        assert_eq!(ii.next_header(), oi.next_header());
        assert_eq!(
            self.sw.config().route(oi.dst_addr()),
            Some(p),
            "forwarded to port {p} a packet for {} (from port {in_port})",
            oi.dst_addr()
        );
        if valid_in == Some(true) {
            assert_eq!(
                frame_valid(out, kind),
                Some(true),
                "a frame with valid checksums left with a bad one ({kind:?})"
            );
        }
        let total = 14 + ii.total_len() as usize;
        if ii.next_header() != IpProtocol::Tcp {
            // Routed unchanged but for TTL and checksum.
            assert_eq!(
                &input[34..total],
                &out[34..total],
                "a routed non-TCP payload changed"
            );
            return;
        }
        let (Some(si), Some(so)) = (parse_tcp(input), parse_tcp(out)) else {
            panic!("a forwarded TCP segment does not parse");
        };
        assert_eq!(si.hdr_len, so.hdr_len);
        assert_eq!(
            &input[34 + si.hdr_len..total],
            &out[34 + so.hdr_len..total],
            "TCP payload changed"
        );
        assert!(
            so.flags == si.flags || so.flags == si.flags & !F_FIN,
            "flags changed beyond clearing FIN"
        );
        if p == 0 {
            let c = self.sw.config();
            assert!(
                so.key.src == c.vip.octets() && c.service(so.key.sport).is_some(),
                "a segment to the client side not from the VIP: {:?}",
                so.key
            );
        }
        // There and back: an acknowledgment of data that crossed the switch maps back onto the
        // sender's own sequence space.
        if let Some(a) = si.ack
            && let Some(&(orig_sender, e)) = self.pairs.get(&(si.key, a))
        {
            let to = so.receiver();
            let prior = self.eps.get(&to).and_then(|x| x.max_ack_rcvd);
            if orig_sender == to && prior.is_none_or(|m| !serial_gt(m, e)) {
                assert_eq!(
                    so.ack,
                    Some(e),
                    "ack {a} from {:?} should reach {to:?} as {e}",
                    si.key
                );
            }
        }
        if so.flags & F_SYN == 0 {
            self.check_negotiated(Some(&si.key), &so, "a translated segment");
        }
        if so.len > 0 {
            if self.pairs.len() > 4096 {
                self.pairs.clear();
            }
            self.pairs
                .insert((so.receiver(), so.end()), (si.key, si.end()));
        }
        self.deliver(&so);
    }

    /// The connection a segment belongs to, by its key or (after NAT) its receiver's key.
    fn flow_of(&self, k: &FlowKey) -> Option<usize> {
        let mut probes = 0;
        let t = self.sw.table();
        t.lookup(k, &mut probes)
            .or_else(|| t.lookup(&k.reversed(), &mut probes))
            .map(|(fi, _)| fi)
    }

    /// A segment the switch made up, or translated from one connection onto another (`from`:
    /// the input's key), carries no option its receiver's connection did not negotiate: the
    /// switch removes timestamps and SACK blocks towards an end without them (docs/protocol.md
    /// "Options"). Segments forwarded within one connection (plain NAT, the old node's bytes
    /// on its leg) are the hosts' own business and are not checked.
    fn check_negotiated(&self, from: Option<&FlowKey>, s: &TcpSeen, what: &str) {
        let Some(fi) = self.flow_of(&s.key) else {
            return;
        };
        if from.is_some_and(|k| self.flow_of(k) == Some(fi) || self.flow_of(k).is_none()) {
            return;
        }
        let Some(f) = self.sw.table().get(fi) else {
            return;
        };
        // A made-up answer may echo the timestamp of a receiver that sends them itself on a
        // connection without them (its own fault; RFC 7323 3.2 has it ignore ours).
        let echoes = from.is_none()
            && self
                .eps
                .get(&s.receiver())
                .is_some_and(|e| e.sent_ts && !f.ts_enabled());
        assert!(
            s.tsval.is_none() || f.ts_enabled() || echoes,
            "{what} {:?} carries a timestamp on a connection without them",
            s.key
        );
        assert!(
            s.sack_blocks == 0 || f.sack_enabled(),
            "{what} {:?} carries SACK blocks on a connection without SACK",
            s.key
        );
    }

    /// A frame reaches the host it is addressed to: update the model.
    fn deliver(&mut self, s: &TcpSeen) {
        let ep = self
            .eps
            .entry(s.receiver())
            .or_insert_with(|| new_ep(&s.receiver(), 0));
        if s.flags & F_RST != 0 {
            return;
        }
        let end = s.end();
        if s.flags & F_SYN != 0 {
            // A new connection (maybe on a tuple used before, RFC 6191): its sequence numbers
            // start here. (`max_ack_rcvd` stays: it only makes the there-and-back check skip.)
            ep.irs = Some(s.seq);
            ep.rcv_nxt = Some(end);
        }
        ep.rcv_nxt = Some(match ep.rcv_nxt {
            Some(r) if !serial_gt(end, r) => r,
            _ => end,
        });
        if let Some(v) = s.tsval {
            ep.ts_recent = v;
        }
        if let Some(a) = s.ack {
            ep.max_ack_rcvd = Some(match ep.max_ack_rcvd {
                Some(m) if !serial_gt(a, m) => m,
                _ => a,
            });
        }
    }

    /// Checks generated frames and the switch's invariants after a step.
    fn after_step(&mut self, control_before: Option<&Snapshot>) {
        let frames = core::mem::take(&mut self.sink.frames);
        let nports = self.sw.config().ports.len();
        let mut reply_code = None;
        for (p, f) in &frames {
            assert!((*p as usize) < nports, "generated frame for port {p}");
            assert!(
                f.len() <= MAX_GENERATED,
                "generated frame of {} bytes",
                f.len()
            );
            self.tally.gen_ok[*p as usize] += 1;
            let eth = EthernetFrame::new_checked(&f[..]).expect("generated frame parses");
            assert_eq!(eth.src_addr(), self.sw.config().ports[*p as usize].mac);
            if eth.ethertype() == EthernetProtocol::Arp {
                let pkt = ArpPacket::new_checked(&f[14..]).expect("generated ARP parses");
                assert!(ArpRepr::parse(&pkt).is_ok(), "generated ARP parses");
                continue;
            }
            assert_eq!(
                frame_valid(f, Kind::Full),
                Some(true),
                "generated frame with a bad checksum: {f:02x?}"
            );
            let ipp = Ipv4Packet::new_unchecked(&f[14..]);
            assert_eq!(
                self.sw.config().route(ipp.dst_addr()),
                Some(*p),
                "generated frame for the wrong port"
            );
            if ipp.next_header() == IpProtocol::Udp {
                let u = UdpPacket::new_unchecked(&f[34..]);
                let r = Reply::new_checked(u.payload()).expect("control reply parses");
                assert!(r.verify(&KEY), "control reply does not verify");
                reply_code = Some(r.code());
            } else if let Some(s) = parse_tcp(f) {
                if s.flags & F_SYN == 0 {
                    self.check_negotiated(None, &s, "a generated segment");
                }
                self.deliver(&s);
            }
        }
        if let Some(before) = control_before
            && let Some(code) = reply_code
        {
            self.replies.push(code);
            if code != ReplyCode::Accepted {
                assert_eq!(
                    *before,
                    self.snapshot(),
                    "a refused hand-off ({}) changed state",
                    code.name()
                );
            }
        }
        self.check_invariants();
    }

    /// Table, sessions and counters.
    pub fn check_invariants(&self) {
        let sw = &self.sw;
        let t = sw.table();
        assert_eq!(
            sw.counters().drops[DropReason::Internal.index()],
            0,
            "the switch's own state contradicted itself (drop reason `internal`)"
        );
        assert!(sw.flow_count() <= sw.flow_capacity());
        assert_eq!(t.iter().count(), sw.flow_count());
        assert_eq!(sw.flows_by_state().iter().sum::<usize>(), sw.flow_count());
        assert!(sw.session_count() <= sw.session_capacity());
        let sessions: Vec<(usize, &SessionSlot)> = (0..sw.session_capacity())
            .filter_map(|i| sw.session(i).map(|s| (i, s)))
            .collect();
        assert_eq!(sessions.len(), sw.session_count(), "session count");
        let mut probes = 0;
        for (i, f) in t.iter() {
            assert_ne!(f.kind, FlowKind::Free);
            assert_eq!(
                t.lookup(&f.keys[0], &mut probes),
                Some((i, Dir::Orig)),
                "flow {i} orig key {:?}",
                f.keys[0]
            );
            assert_eq!(
                t.lookup(&f.keys[1], &mut probes),
                Some((i, Dir::Reply)),
                "flow {i} reply key {:?}",
                f.keys[1]
            );
            if let Some(s) = f.session() {
                assert!(
                    sw.session(s).is_some(),
                    "flow {i} links to a free session {s}"
                );
            }
        }
        for (s, sess) in sessions {
            let a = sess.anchor as usize;
            let anchor = t
                .get(a)
                .unwrap_or_else(|| panic!("session {s}: anchor {a} is not in use"));
            assert_eq!(
                anchor.kind,
                FlowKind::Nat,
                "session {s}: anchor is not a NAT flow"
            );
            assert_eq!(
                anchor.session(),
                Some(s),
                "session {s}: anchor does not link back"
            );
            let n = sess.bindings.len();
            assert!(n >= 1, "session {s} without bindings");
            for (k, b) in sess.bindings.iter().enumerate() {
                let leg = t
                    .get(b.leg as usize)
                    .unwrap_or_else(|| panic!("session {s} binding {k}: leg {} free", b.leg));
                assert_eq!(
                    leg.session(),
                    Some(s),
                    "session {s} binding {k}: leg does not link back"
                );
                if k + 1 < n {
                    assert!(
                        matches!(b.phase, Phase::Stale | Phase::Retired),
                        "session {s}: old binding {k} is {:?}",
                        b.phase
                    );
                } else {
                    assert!(
                        matches!(b.phase, Phase::Live | Phase::Pending),
                        "session {s}: current binding is {:?}",
                        b.phase
                    );
                }
            }
        }
        // Counters against what the switch said.
        let c = sw.counters();
        let tl = &self.tally;
        assert_eq!(c.rx_frames, tl.rx, "rx counters");
        assert_eq!(c.local, tl.local, "local counters");
        for p in 0..MAX_PORTS {
            assert_eq!(
                c.tx_frames[p],
                tl.fwd[p] + tl.gen_ok[p],
                "tx counter of port {p}"
            );
        }
        assert_eq!(
            c.generated.iter().sum::<u64>(),
            tl.gen_ok.iter().sum::<u64>(),
            "generated counters"
        );
        for r in DropReason::ALL {
            let (got, said) = (c.drops[r.index()], tl.drops[r.index()]);
            match r {
                DropReason::SinkFull => {
                    assert_eq!(got, said + self.sink.refused, "sink_full drops")
                }
                DropReason::NeighborUnknown => assert!(got >= said, "neighbor_unknown drops"),
                _ => assert_eq!(got, said, "{} drops", r.name()),
            }
        }
        assert_eq!(
            c.handoffs.iter().sum::<u64>(),
            tl.local[LocalKind::Control.index()],
            "hand-off replies"
        );
        let inserted = c.sprayed.iter().sum::<u64>() + c.tracked_routed;
        assert!(
            sw.flow_count() as u64 + c.closed + c.expired <= inserted,
            "more flows removed than inserted"
        );
        assert!(
            c.handoffs_completed + c.handoffs_rolled_back
                <= c.handoffs[ReplyCode::Accepted.index()],
            "more hand-offs ended than accepted"
        );
    }

    /// Advances the clock and runs the timers.
    /// The table keeps milliseconds modulo 2^32 and compares deadlines less than 24 days away
    /// (see `table::deadline_passed`), so a long wait polls at least once a day, as any caller
    /// that polls regularly does.
    pub fn tick(&mut self, ms: u64, budget: usize) {
        let mut left = ms;
        loop {
            let step = left.min(DAY_MS);
            left -= step;
            self.now_us = self
                .now_us
                .saturating_add((step as i64).saturating_mul(1000));
            let now = self.now();
            let _ = self.sw.poll(now, budget, &mut self.sink);
            self.after_step(None);
            if left == 0 {
                break;
            }
        }
    }

    /// Runs the timers for hours of idle time: every entry must be gone by then (RFC 5382
    /// established timeout, TIME-WAIT, binding retirement).
    pub fn drain(&mut self) {
        for _ in 0..400 {
            if self.sw.flow_count() == 0 && self.sw.session_count() == 0 {
                break;
            }
            self.tick(
                60_000,
                self.sw.flow_capacity().max(self.sw.session_capacity()),
            );
        }
        assert_eq!(self.sw.session_count(), 0, "sessions left after hours idle");
        assert_eq!(
            self.sw.flow_count(),
            0,
            "flows left after hours idle: {:?}",
            self.snapshot().flows
        );
    }

    /// Applies one decoded op.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Tick { mode, amount } => {
                let budget = if mode >> 2 == 0 {
                    self.sw.flow_capacity()
                } else {
                    (mode >> 2) as usize
                };
                match mode & 3 {
                    0 => self.tick(*amount as u64, budget),
                    1 => self.tick(*amount as u64 * 1000, budget),
                    2 if !self.drained => {
                        self.drained = true;
                        self.drain();
                    }
                    _ => self.tick(*amount as u64 * 60_000, budget),
                }
            }
            Op::Raw {
                port,
                partial,
                frame,
            } => {
                let mut f = frame.clone();
                let kind = if *partial { Kind::Partial } else { Kind::Full };
                self.frame(*port % 6, &mut f, kind);
            }
            Op::Arp { host, target, mode } => {
                let src = ADDRS[(*host & 7) as usize];
                let port = port_of(self.sw.config(), src);
                let dst_mac = if mode & 2 != 0 {
                    self.sw.config().ports[port as usize].mac
                } else {
                    EthernetAddress::BROADCAST
                };
                let mut f = arp_frame(src, ADDRS[(*target & 7) as usize], dst_mac, mode & 1 != 0);
                self.frame(port, &mut f, Kind::Full);
            }
            Op::Seg(s) => self.seg(s),
            Op::Control(c) => self.control(c),
            Op::Macro { kind, arg, arg2 } => self.run_macro(Macro::of(*kind), *arg, *arg2),
        }
    }

    fn seg(&mut self, s: &SegOp) {
        let src = (
            ADDRS[(s.src & 7) as usize],
            PORTS[((s.src >> 3) & 7) as usize],
        );
        let dst = (
            ADDRS[(s.dst & 7) as usize],
            PORTS[((s.dst >> 3) & 7) as usize],
        );
        let key = FlowKey {
            src: src.0,
            dst: dst.0,
            sport: src.1,
            dport: dst.1,
        };
        let isn = ISNS[(s.seq_mode >> 4) as usize];
        let ep = *self.eps.entry(key).or_insert_with(|| new_ep(&key, isn));
        let seq = match s.seq_mode & 3 {
            0 => ep.snd_nxt,
            1 => ep.snd_nxt.wrapping_add(s.seq_delta as i32 as u32),
            2 => ep.isn.wrapping_add(s.seq_delta as i32 as u32),
            _ => (s.seq_delta as u16 as u32).wrapping_mul(0x10001),
        };
        let rcv = ep.rcv_nxt.unwrap_or(0);
        let ack = match s.ack_mode & 3 {
            0 => rcv,
            1 => rcv.wrapping_add(s.ack_delta as i32 as u32),
            2 => 0,
            _ => (s.ack_delta as u16 as u32).wrapping_mul(0x10001),
        };
        let config = self.sw.config();
        let mut port = port_of(config, src.0);
        if s.flags & 0x80 != 0 {
            port = (port + 1) % config.ports.len() as u8;
        }
        let mut t = tcp_spec(src, dst, config.ports[port as usize].mac);
        t.seq = seq;
        t.ack = (s.flags & F_ACK != 0).then_some(ack);
        t.flags = s.flags & (F_SYN | F_FIN | F_RST | F_PSH);
        t.win = WINDOWS[((s.ack_mode >> 2) & 7) as usize];
        t.ttl = TTLS[((s.seq_mode >> 2) & 3) as usize];
        if s.opts & 1 != 0 {
            t.mss = Some(if s.opts & 0x40 != 0 {
                s.extra as u16 * 8
            } else {
                1460
            });
        }
        if s.opts & 2 != 0 {
            t.ws = Some(s.extra & 15);
        }
        t.sack_perm = s.opts & 4 != 0;
        if s.opts & 8 != 0 {
            t.ts = Some((self.now_ms().wrapping_add(ep.ts_off), ep.ts_recent));
        }
        for b in 0..((s.opts >> 4) & 3) as usize {
            let l = rcv
                .wrapping_add(100 * (b as u32 + 1))
                .wrapping_add(s.extra as u32);
            t.sack[b] = Some((l, l.wrapping_add(50)));
        }
        t.payload = (0..s.len as u32)
            .map(|i| seq.wrapping_add(i) as u8)
            .collect();
        // SACK blocks only on a segment with an ACK that is not a SYN offering SACK.
        if t.sack_perm || t.ack.is_none() {
            t.sack = [None; 3];
        }
        let mut f = t.build();
        let kind = if s.flags & 0x20 != 0 {
            make_partial(&mut f);
            Kind::Partial
        } else {
            Kind::Full
        };
        if s.flags & 0x40 != 0 {
            f[34 + 16] ^= 0x5a;
        }
        let end = seq.wrapping_add(
            s.len as u32 + (t.flags & F_SYN != 0) as u32 + (t.flags & F_FIN != 0) as u32,
        );
        if let Some(e) = self.eps.get_mut(&key)
            && t.flags & F_RST == 0
        {
            if t.flags & F_SYN != 0 {
                // A (new) connection starts here: the anchors count from this ISN.
                e.isn = seq;
                e.snd_nxt = end;
                e.sent_ts = false;
            } else if serial_gt(end, e.snd_nxt) {
                e.snd_nxt = end;
            }
            e.sent_ts |= t.ts.is_some();
        }
        if t.flags & F_SYN != 0 && t.flags & F_RST == 0 && t.ack.is_none() {
            // Data of an older connection from this endpoint says nothing about the new one
            // (seen from either end, translated or not).
            let touches = |k: &FlowKey| {
                (k.src == key.src && k.sport == key.sport)
                    || (k.dst == key.src && k.dport == key.sport)
            };
            self.pairs
                .retain(|(to, _), (from, _)| !touches(to) && !touches(from));
        }
        self.frame(port, &mut f, kind);
    }

    // --------------------------------------------------------------------------------------
    // Macros (see [`Macro`]).

    /// The client port index and the key of its connection to the VIP.
    fn client_of(arg: u8) -> (At, FlowKey) {
        let c: At = (A_CLIENT, P_C1 + (arg & 1));
        let k = FlowKey {
            src: ADDRS[A_CLIENT as usize],
            dst: ADDRS[A_VIP as usize],
            sport: PORTS[c.1 as usize],
            dport: PORTS[P_80 as usize],
        };
        (c, k)
    }

    /// The client's connection (its anchor flow), if tracked.
    fn anchor_of(&self, client: &FlowKey) -> Option<FlowSlot> {
        let mut probes = 0;
        let (fi, _) = self.sw.table().lookup(client, &mut probes)?;
        self.sw.table().get(fi).copied()
    }

    /// The connection that currently serves the client, as its server sees it (source: the
    /// server): the client connection itself, or the newest binding's leg.
    fn server_view(&self, client: &FlowKey) -> Option<(FlowKey, FlowSlot)> {
        let a = self.anchor_of(client)?;
        let Some(s) = a.session() else {
            return Some((a.keys[1], a));
        };
        let b = self.sw.session(s)?.bindings.last()?;
        let leg = self.sw.table().get(b.leg as usize)?;
        Some((leg.keys[1], *leg))
    }

    /// A segment from `src` to `dst` (alphabet codes), sequence numbers from the model (or
    /// `delta` past the sender's next), with SYN options `opts`.
    fn mseg(&mut self, src: u8, dst: u8, flags: u8, len: u8, opts: u8, delta: Option<i16>) {
        self.apply(&Op::Seg(SegOp {
            src,
            dst,
            flags,
            seq_mode: delta.is_some() as u8,
            seq_delta: delta.unwrap_or(0),
            len,
            opts,
            extra: 7,
            ..SegOp::default()
        }));
    }

    fn run_macro(&mut self, m: Macro, arg: u8, arg2: u8) {
        let (c, ck) = Self::client_of(arg);
        let ci = (arg & 1) as usize;
        let vip = at(VIP);
        let variant = |bits: u8| [SYN_OPTS, SYN_OPTS & !8, SYN_OPTS & !4, 0][(bits & 3) as usize];
        let ts_of = |f: &FlowSlot| if f.ts_enabled() { 8 } else { 0 };
        match m {
            Macro::Reconnect => {
                let old_dup = arg & 8 != 0;
                let mut opts = variant(arg >> 1);
                if old_dup {
                    opts &= !8;
                }
                let delta = if old_dup { -3000 } else { 3000 };
                self.mseg(at(c), vip, F_SYN, 0, opts, Some(delta));
                self.unconsumed[ci] = 0;
                if let Some(Verdict::Forward(p)) = self.last
                    && (1..=3).contains(&p)
                {
                    self.mseg(at(node(p)), at(c), F_SYN | F_ACK, 0, opts, Some(1000));
                    self.mseg(at(c), vip, F_ACK, 0, opts & 8, None);
                }
            }
            Macro::Request => {
                let Some((h, held)) = self.server_view(&ck) else {
                    return;
                };
                let cts = self.anchor_of(&ck).map_or(0, |a| ts_of(&a));
                let len = 1 + arg2 % 64;
                let fin = if arg & 0x40 != 0 { F_FIN } else { 0 };
                self.mseg(at(c), vip, F_ACK | F_PSH | fin, len, cts, None);
                self.unconsumed[ci] = self.unconsumed[ci].saturating_add(len as u16);
                if let (Some(hs), Some(hd)) = (at_of(h.src, h.sport), at_of(h.dst, h.dport)) {
                    self.mseg(hs, hd, F_ACK, 0, ts_of(&held), None);
                }
            }
            Macro::Close => {
                let Some((h, held)) = self.server_view(&ck) else {
                    return;
                };
                let (Some(hs), Some(hd)) = (at_of(h.src, h.sport), at_of(h.dst, h.dport)) else {
                    return;
                };
                let (sts, cts) = (ts_of(&held), self.anchor_of(&ck).map_or(0, |a| ts_of(&a)));
                if arg & 0x40 != 0 {
                    self.mseg(at(c), vip, F_ACK | F_FIN, 0, cts, None);
                    self.mseg(hs, hd, F_ACK | F_FIN, 0, sts, None);
                    self.mseg(at(c), vip, F_ACK, 0, cts, None);
                } else {
                    self.mseg(hs, hd, F_ACK | F_FIN, 0, sts, None);
                    self.mseg(at(c), vip, F_ACK | F_FIN, 0, cts, None);
                    self.mseg(hs, hd, F_ACK, 0, sts, None);
                }
            }
            Macro::Handoff => self.handoff_macro(c, ck, ci, arg, arg2),
        }
    }

    fn handoff_macro(&mut self, c: At, ck: FlowKey, ci: usize, arg: u8, arg2: u8) {
        let Some((h, held)) = self.server_view(&ck) else {
            return;
        };
        let Some(anchor) = self.anchor_of(&ck) else {
            return;
        };
        let (Some(hs), Some(hd)) = (at_of(h.src, h.sport), at_of(h.dst, h.dport)) else {
            return;
        };
        let Some(n) = node_index(h.src) else {
            return;
        };
        let b = 1 + (n + (arg >> 1) % 2) % 3;
        let lport = P_L1 + ((arg >> 3) & 1);
        let (la, nb) = (at((A_N1 + n - 1, lport)), at(node(b)));
        let opts = [SYN_OPTS, SYN_OPTS & !8, SYN_OPTS & !4, 0][((arg >> 4) & 3) as usize];
        let lts = opts & 8;
        let cts = if anchor.ts_enabled() { 8 } else { 0 };
        let hts = if held.ts_enabled() { 8 } else { 0 };
        // The client half-closed: its FIN reached the server with its last request.
        let half = anchor.dirs[Dir::Orig.index()].has(dirflag::FIN);
        if !half {
            let len = 8 + arg2 % 48;
            self.mseg(at(c), at(VIP), F_ACK | F_PSH, len, cts, None);
            self.unconsumed[ci] = self.unconsumed[ci].saturating_add(len as u16);
            self.mseg(hs, hd, F_ACK, 0, hts, None);
        }
        let unconsumed = self.unconsumed[ci];
        // The new leg (a new connection on the tuple if the port was used before).
        self.mseg(la, nb, F_SYN, 0, opts, Some(1000));
        self.mseg(nb, la, F_SYN | F_ACK, 0, opts, Some(1000));
        self.mseg(la, nb, F_ACK, 0, lts, None);
        let before = self.sw.counters().handoffs;
        self.apply(&Op::Control(CtlOp {
            node: n - 1,
            mode: 0,
            held: hd,
            held_local: P_80,
            new_port: lport,
            target: nb,
            // What the node received but did not consume: the requests (and the client's FIN,
            // which the model counts as received).
            consumed_adj: (unconsumed + half as u16).min(i16::MAX as u16) as i16,
            sent_adj: 0,
            sport: 0,
        }));
        let after = self.sw.counters().handoffs;
        if after[ReplyCode::Accepted.index()] == before[ReplyCode::Accepted.index()] {
            // Refused: the proxy resets the leg.
            self.mseg(la, nb, F_ACK | F_RST, 0, 0, None);
            return;
        }
        if arg & 0x40 != 0 {
            return;
        }
        let fin = if half { F_FIN } else { 0 };
        self.mseg(
            la,
            nb,
            F_ACK | F_PSH | fin,
            unconsumed.min(255) as u8,
            lts,
            None,
        );
        self.unconsumed[ci] = 0;
        let sack = if arg2 & 0x80 != 0 { 1 << 4 } else { 0 };
        self.mseg(nb, la, F_ACK, 0, lts | sack, None);
        self.mseg(nb, la, F_ACK | F_PSH, 20 + arg2 % 64, lts, None);
        self.mseg(at(c), at(VIP), F_ACK, 0, cts, None);
        // The old node closes: its FIN on the leg (a half-closed client's is out already), the
        // faked FIN on the held connection acknowledged, its own FIN there, then its RST on
        // the leg.
        if !half {
            self.mseg(la, nb, F_ACK | F_FIN, 0, lts, None);
        }
        self.apply(&Op::Tick {
            mode: 0,
            amount: 50,
        });
        self.mseg(hs, hd, F_ACK, 0, hts, None);
        self.mseg(hs, hd, F_ACK | F_FIN, 0, hts, None);
        if arg & 0x80 == 0 {
            self.mseg(la, nb, F_ACK | F_RST, 0, 0, None);
        }
        self.apply(&Op::Tick {
            mode: 0,
            amount: 300,
        });
    }

    fn control(&mut self, c: &CtlOp) {
        let node = 1 + c.node % 3;
        let node_addr = [198, 19, node, 2];
        let peer = (
            ADDRS[(c.held & 7) as usize],
            PORTS[((c.held >> 3) & 7) as usize],
        );
        let held_local_port = PORTS[(c.held_local & 7) as usize];
        let held = FlowKey {
            src: node_addr,
            dst: peer.0,
            sport: held_local_port,
            dport: peer.1,
        };
        let ep = self.eps.get(&held).copied().unwrap_or_default();
        let rcvd = match (ep.irs, ep.rcv_nxt) {
            (Some(irs), Some(r)) => r.wrapping_sub(irs).wrapping_sub(1) as i64,
            _ => 0,
        };
        let consumed = (rcvd - c.consumed_adj as i64) as u64;
        let sent =
            (ep.snd_nxt.wrapping_sub(ep.isn).wrapping_sub(1) as i64 + c.sent_adj as i64) as u64;
        let slot = node as usize;
        let counter = match (c.mode >> 4) & 3 {
            0 => {
                self.ctl_counter[slot] += 1;
                self.ctl_counter[slot]
            }
            1 => self.ctl_counter[slot],
            2 => 0,
            _ => self.ctl_counter[slot].wrapping_sub(70),
        };
        let repr = RequestRepr {
            key_id: if (c.mode >> 2) & 3 == 2 { 9 } else { 1 },
            counter,
            held_peer: Endpoint::new(peer.0, peer.1),
            held_local: Endpoint::new(node_addr, held_local_port),
            new_local: Endpoint::new(node_addr, PORTS[(c.new_port & 7) as usize]),
            new_remote: Endpoint::new(
                ADDRS[(c.target & 7) as usize],
                PORTS[((c.target >> 3) & 7) as usize],
            ),
            consumed,
            sent,
        };
        let key = if (c.mode >> 2) & 3 == 1 {
            WRONG_KEY
        } else {
            KEY
        };
        let mut f = control_frame(node, 40100 + (c.sport % 4) as u16, &repr, &key);
        if (c.mode >> 2) & 3 == 3 {
            let n = f.len();
            f[n - 1] ^= 1;
            let gw = Ipv4Address::new(f[30], f[31], f[32], f[33]);
            let mut u = UdpPacket::new_unchecked(&mut f[34..]);
            u.fill_checksum(&IpAddress::Ipv4(ip(node_addr)), &IpAddress::Ipv4(gw));
        }
        let mut port = node;
        if c.mode & 0x40 != 0 {
            port = 1 + node % 3;
        }
        self.frame(port, &mut f, Kind::Full);
    }
}

/// The alphabet code (address index, port index << 3) of an endpoint, if it has one.
fn at_of(addr: [u8; 4], port: u16) -> Option<u8> {
    let a = ADDRS.iter().position(|x| *x == addr)?;
    let p = PORTS.iter().position(|x| *x == port)?;
    Some(at((a as u8, p as u8)))
}

/// Node 1..=3 of a node address.
fn node_index(addr: [u8; 4]) -> Option<u8> {
    (1..=3).find(|&n| ADDRS[(A_N1 + n - 1) as usize] == addr)
}

fn new_ep(key: &FlowKey, isn: u32) -> Ep {
    let h = key.src[3] as u32 * 7919 + key.sport as u32 * 31 + key.dport as u32;
    Ep {
        isn,
        snd_nxt: isn,
        ts_off: h.wrapping_mul(2654435761),
        ..Ep::default()
    }
}

// ------------------------------------------------------------------------------------------------
// Ops of the stateful target.

/// A TCP segment op: endpoints from the alphabets, sequence numbers relative to the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegOp {
    /// Source: address index (bits 0-2), port index (bits 3-5).
    pub src: u8,
    /// Destination, like `src`.
    pub dst: u8,
    /// SYN 1, ACK 2, FIN 4, RST 8, PSH 16, partial checksum 32, corrupt checksum 64, wrong port 128.
    pub flags: u8,
    /// Bits 0-1: seq = next, next + delta, ISN + delta, raw; bits 2-3: TTL; bits 4-7: ISN choice.
    pub seq_mode: u8,
    /// Sequence delta.
    pub seq_delta: i16,
    /// Bits 0-1: ack = rcv next, + delta, 0, raw; bits 2-4: window.
    pub ack_mode: u8,
    /// Acknowledgment delta.
    pub ack_delta: i16,
    /// Payload bytes.
    pub len: u8,
    /// Options: MSS 1, WS 2, SACK-permitted 4, TS 8, SACK blocks (bits 4-5), odd MSS 64.
    pub opts: u8,
    /// Window-scale shift, MSS / 8, SACK edge offset.
    pub extra: u8,
}

/// A hand-off request op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtlOp {
    /// Node 1 + n % 3.
    pub node: u8,
    /// Bits 2-3: key good, wrong, unknown id, bad tag; 4-5: counter fresh, repeat, 0, old;
    /// 6: sent from another node's port.
    pub mode: u8,
    /// Held connection's peer: address index, port index << 3.
    pub held: u8,
    /// Held connection's local port index.
    pub held_local: u8,
    /// New leg's local port index.
    pub new_port: u8,
    /// New leg's remote: address index, port index << 3.
    pub target: u8,
    /// Client bytes received but not consumed.
    pub consumed_adj: i16,
    /// Added to the bytes sent.
    pub sent_adj: i16,
    /// UDP source port choice.
    pub sport: u8,
}

/// One step of the stateful target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Advance the clock and poll: mode bits 0-1 = ms, s, drain, min; bits 2-7 = budget.
    Tick {
        /// Unit and budget.
        mode: u8,
        /// Amount.
        amount: u16,
    },
    /// Arbitrary bytes on a port.
    Raw {
        /// Port (mod 6, so some do not exist).
        port: u8,
        /// Partial checksum.
        partial: bool,
        /// The frame.
        frame: Vec<u8>,
    },
    /// ARP from a host about an address (mode 1: reply, 2: unicast to the switch).
    Arp {
        /// Host address index.
        host: u8,
        /// Target address index.
        target: u8,
        /// Mode bits.
        mode: u8,
    },
    /// A TCP segment.
    Seg(SegOp),
    /// A hand-off request.
    Control(CtlOp),
    /// A compound step of a real client or proxy, built from the ops above on the model and the
    /// switch's state (see [`Macro`]): a whole hand-off, a reconnect on the same tuple, a
    /// request (maybe half-closing), a close.
    Macro {
        /// Which macro (mod 4, see [`Macro`]).
        kind: u8,
        /// Its flags.
        arg: u8,
        /// Sizes.
        arg2: u8,
    },
}

/// The macros of [`Op::Macro`], by `kind % 4`. Bit 0 of `arg` picks the client port (40000 or
/// 40001) in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Macro {
    /// A whole hand-off of the client's connection by its current server (from the switch's
    /// table) to one of the two other nodes (`arg` bits 1-2), over a new leg from port 50000
    /// or 50001 (bit 3) with all options, no timestamps, no SACK or none (bits 4-5): the
    /// client's request (`arg2` sizes it; none if the client has half-closed, whose FIN then
    /// goes on behind the forwarded bytes), the leg's handshake, the request, the forwarded
    /// bytes, the target's ACK (with a SACK block if `arg2` bit 7) and response, the old node's
    /// close: its FIN on the leg, its ACK of the faked FIN and its own FIN on the held
    /// connection, then its RST on the leg (none if `arg` bit 7: an old proxy, retired by
    /// time-out). With `arg` bit 6 it stops once the request is accepted (a hand-off in flight).
    Handoff,
    /// A new connection on the client's tuple (RFC 6191 reuse): SYN (options as in
    /// `Handoff`, `arg` bits 1-2) after the old connection's sequence numbers, or, with `arg`
    /// bit 3, an old duplicate before them (no timestamp); the handshake with the node it was
    /// sprayed to.
    Reconnect,
    /// A client request of `arg2 % 64 + 1` bytes, with the client's FIN behind it if `arg` bit
    /// 6 (a half-closed client); its server acknowledges.
    Request,
    /// The connection closes, the server first (`Connection: close`) or, with `arg` bit 6,
    /// the client.
    Close,
}

impl Macro {
    /// The macro of a `kind` byte.
    pub fn of(kind: u8) -> Macro {
        [
            Macro::Handoff,
            Macro::Reconnect,
            Macro::Request,
            Macro::Close,
        ][(kind % 4) as usize]
    }
}

impl Op {
    /// Decodes one op; `None` at the end of the input.
    pub fn decode(r: &mut Reader) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        let tag = r.u8();
        // Tags 15, 31, ... (an odd tag's 16s bit set as well): macros. Other tags keep their
        // meaning of before, so older corpus files decode as they did.
        if tag % 16 == 15 {
            return Some(Op::Macro {
                kind: r.u8(),
                arg: r.u8(),
                arg2: r.u8(),
            });
        }
        Some(match tag % 8 {
            0 => Op::Tick {
                mode: r.u8(),
                amount: r.u16(),
            },
            1 => {
                let port = r.u8();
                let len = r.u8();
                Op::Raw {
                    port: port & 0x7f,
                    partial: port & 0x80 != 0,
                    frame: r.bytes(len as usize).to_vec(),
                }
            }
            2 => Op::Arp {
                host: r.u8(),
                target: r.u8(),
                mode: r.u8(),
            },
            6 => Op::Control(CtlOp {
                node: r.u8(),
                mode: r.u8(),
                held: r.u8(),
                held_local: r.u8(),
                new_port: r.u8(),
                target: r.u8(),
                consumed_adj: r.u16() as i16,
                sent_adj: r.u16() as i16,
                sport: r.u8(),
            }),
            _ => Op::Seg(SegOp {
                src: r.u8(),
                dst: r.u8(),
                flags: r.u8(),
                seq_mode: r.u8(),
                seq_delta: r.u16() as i16,
                ack_mode: r.u8(),
                ack_delta: r.u16() as i16,
                len: r.u8(),
                opts: r.u8(),
                extra: r.u8(),
            }),
        })
    }

    /// Encodes the op so that [`Op::decode`] reads it back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Tick { mode, amount } => {
                out.extend_from_slice(&[0, *mode]);
                out.extend_from_slice(&amount.to_be_bytes());
            }
            Op::Raw {
                port,
                partial,
                frame,
            } => {
                let n = frame.len().min(255);
                out.extend_from_slice(&[1, (port & 0x7f) | (*partial as u8) << 7, n as u8]);
                out.extend_from_slice(&frame[..n]);
            }
            Op::Arp { host, target, mode } => out.extend_from_slice(&[2, *host, *target, *mode]),
            Op::Seg(s) => {
                out.extend_from_slice(&[3, s.src, s.dst, s.flags, s.seq_mode]);
                out.extend_from_slice(&s.seq_delta.to_be_bytes());
                out.push(s.ack_mode);
                out.extend_from_slice(&s.ack_delta.to_be_bytes());
                out.extend_from_slice(&[s.len, s.opts, s.extra]);
            }
            Op::Macro { kind, arg, arg2 } => out.extend_from_slice(&[15, *kind, *arg, *arg2]),
            Op::Control(c) => {
                out.extend_from_slice(&[
                    6,
                    c.node,
                    c.mode,
                    c.held,
                    c.held_local,
                    c.new_port,
                    c.target,
                ]);
                out.extend_from_slice(&c.consumed_adj.to_be_bytes());
                out.extend_from_slice(&c.sent_adj.to_be_bytes());
                out.push(c.sport);
            }
        }
    }
}

/// The ops of a stateful input, one line each (for bug reports).
pub fn describe_stateful(data: &[u8]) -> Vec<String> {
    let mut r = Reader::new(data);
    let mut out = vec![format!("header {:?}", header_params(r.u8()))];
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        out.push(format!("{op:?}"));
    }
    out
}

/// Most ops one stateful input runs.
pub const MAX_OPS: usize = 256;

/// Stateful target: a header byte (see [`header_params`]), then ops until the input ends; the
/// invariants are checked after every op.
pub fn check_stateful(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut h = Harness::new(r.u8(), false);
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        h.apply(&op);
    }
}

// ------------------------------------------------------------------------------------------------
// Scripted scenarios: seeds for the stateful target, and warm switches for the pipeline target.

/// Runs ops on a harness and records their encoding.
pub struct Script {
    /// The harness the ops ran on.
    pub h: Harness,
    /// Header byte and encoded ops: a stateful-target input.
    pub bytes: Vec<u8>,
}

/// An endpoint of the alphabets: (address index, port index).
pub type At = (u8, u8);

fn at(a: At) -> u8 {
    (a.0 & 7) | (a.1 & 7) << 3
}

/// The client's connection endpoint.
pub const CLIENT: At = (A_CLIENT, P_C1);
/// The VIP service.
pub const VIP: At = (A_VIP, P_80);

/// Node `n`'s service endpoint.
pub const fn node(n: u8) -> At {
    (A_N1 + n - 1, P_80)
}

impl Script {
    /// A script on a fresh harness with this header byte.
    pub fn new(header: u8) -> Self {
        Self::with_verify(header, false)
    }

    /// Like [`Script::new`], with checksum verification on or off.
    pub fn with_verify(header: u8, verify: bool) -> Self {
        Script {
            h: Harness::new(header, verify),
            bytes: vec![header],
        }
    }

    /// Runs and records an op.
    pub fn op(&mut self, op: Op) -> Option<Verdict> {
        op.encode(&mut self.bytes);
        self.h.last = None;
        self.h.apply(&op);
        self.h.last
    }

    /// A segment from `src` to `dst` with these flags and `len` bytes, seq and ack from the model,
    /// and SYN options as [`SegOp::opts`] (WS shift 7, MSS 1460).
    pub fn seg_with(&mut self, src: At, dst: At, flags: u8, len: u8, opts: u8) -> Option<Verdict> {
        self.op(Op::Seg(SegOp {
            src: at(src),
            dst: at(dst),
            flags,
            len,
            opts,
            extra: 7,
            ..SegOp::default()
        }))
    }

    /// ARP requests for the gateway from every node and for the VIP from the client.
    pub fn arps(&mut self) {
        for n in 0..3 {
            self.op(Op::Arp {
                host: A_N1 + n,
                target: 6,
                mode: 0,
            });
        }
        self.op(Op::Arp {
            host: A_CLIENT,
            target: A_VIP,
            mode: 0,
        });
    }

    /// Runs and records a macro op.
    pub fn mac(&mut self, m: Macro, arg: u8, arg2: u8) {
        self.op(Op::Macro {
            kind: m as u8,
            arg,
            arg2,
        });
    }

    /// The client connection `c` closes plainly (client first) with node `n`.
    pub fn close_plain(&mut self, c: At, n: u8) {
        self.seg_with(c, VIP, F_ACK | F_FIN, 0, 0);
        self.seg_with(node(n), c, F_ACK | F_FIN, 0, 0);
        self.seg_with(c, VIP, F_ACK, 0, 0);
    }

    /// The node (1..=3) the last forwarded frame went to.
    pub fn last_node(&self) -> Option<u8> {
        match self.h.last {
            Some(Verdict::Forward(p)) if p >= 1 => Some(p),
            _ => None,
        }
    }

    /// Client connection `c` (client endpoint) through the handshake; returns the node it was
    /// sprayed to.
    pub fn connect(&mut self, c: At, opts: u8) -> u8 {
        self.seg_with(c, VIP, F_SYN, 0, opts);
        let n = self.last_node().unwrap_or(1);
        self.seg_with(node(n), c, F_SYN | F_ACK, 0, opts);
        self.seg_with(c, VIP, F_ACK, 0, opts & 8);
        n
    }

    /// Node `a` opens the leg `(a, P_L1)` to node `b`'s service.
    pub fn open_leg(&mut self, a: u8, b: u8, opts: u8) {
        let la = (A_N1 + a - 1, P_L1);
        self.seg_with(la, node(b), F_SYN, 0, opts);
        self.seg_with(node(b), la, F_SYN | F_ACK, 0, opts);
        self.seg_with(la, node(b), F_ACK, 0, opts & 8);
    }

    /// Node `a` asks to hand the client connection over to its leg to node `b`, `unconsumed`
    /// client bytes still to forward.
    pub fn handoff(&mut self, a: u8, b: u8, unconsumed: i16) -> Option<ReplyCode> {
        let before = self.h.sw.counters().handoffs;
        self.op(Op::Control(CtlOp {
            node: a - 1,
            mode: 0,
            held: at(CLIENT),
            held_local: P_80,
            new_port: P_L1,
            target: at(node(b)),
            consumed_adj: unconsumed,
            sent_adj: 0,
            sport: 0,
        }));
        // From the counters: the sink may have refused the reply.
        let after = self.h.sw.counters().handoffs;
        (0..ReplyCode::COUNT)
            .find(|&i| after[i] != before[i])
            .map(|i| ReplyCode::ALL[i])
    }
}

/// How far [`handoff_script`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Client connection established with data both ways, nothing handed off.
    Established,
    /// The hand-off request was accepted (binding pending).
    Accepted,
    /// The target answered: the hand-off holds, the old node is being retired.
    Confirmed,
    /// The old node's legs are closed.
    Retired,
    /// The client connection is closed.
    Closed,
}

/// Options for the scripted connections: TS and SACK-permitted, WS, MSS.
pub const SYN_OPTS: u8 = 1 | 2 | 4 | 8;

/// The hand-off of ARCHITECTURE.md, run on a fresh switch up to `stage`. `opts` are the SYN
/// options of every connection (see [`SegOp::opts`]).
pub fn handoff_script(header: u8, opts: u8, stage: Stage) -> Script {
    handoff_on(Script::new(header), opts, stage)
}

/// [`handoff_script`] on a given script.
pub fn handoff_on(mut s: Script, opts: u8, stage: Stage) -> Script {
    s.arps();
    let a = s.connect(CLIENT, opts);
    let b = a % 3 + 1;
    let na = node(a);
    let ts = opts & 8;
    // Two pipelined requests of 40 bytes; A serves the first with 100 bytes.
    s.seg_with(CLIENT, VIP, F_ACK | F_PSH, 80, ts);
    s.seg_with(na, CLIENT, F_ACK | F_PSH, 100, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    if stage == Stage::Established {
        return s;
    }
    s.open_leg(a, b, opts);
    let code = s.handoff(a, b, 40);
    assert_eq!(
        code,
        Some(ReplyCode::Accepted),
        "the scripted hand-off is accepted"
    );
    if stage == Stage::Accepted {
        return s;
    }
    // A forwards the second request on the leg; B acknowledges and answers.
    let la = (A_N1 + a - 1, P_L1);
    s.seg_with(la, node(b), F_ACK | F_PSH, 40, ts);
    s.seg_with(node(b), la, F_ACK, 0, ts);
    s.seg_with(node(b), la, F_ACK | F_PSH, 120, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    if stage == Stage::Confirmed {
        return s;
    }
    // A closes its side of the leg; the switch fakes the client's FIN to A on c1.
    s.seg_with(la, node(b), F_ACK | F_FIN, 0, ts);
    s.op(Op::Tick {
        mode: 0,
        amount: 300,
    });
    s.seg_with(na, CLIENT, F_ACK, 0, ts);
    s.seg_with(na, CLIENT, F_ACK | F_FIN, 0, ts);
    s.op(Op::Tick {
        mode: 0,
        amount: 300,
    });
    if stage == Stage::Retired {
        return s;
    }
    s.seg_with(CLIENT, VIP, F_ACK | F_FIN, 0, ts);
    s.seg_with(node(b), la, F_ACK | F_FIN, 0, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    s.op(Op::Tick {
        mode: 1,
        amount: 130,
    });
    s
}

/// Scenarios of the behaviour of real clients and proxies (tuple reuse, long hand-off chains,
/// clients without timestamps or SACK, half-closed clients, full tables), built from macros.
/// They are stateful seeds (`seed-<name>`); `knits-core/tests/fuzz_corpus.rs` asserts that
/// each reaches what it is named after.
pub fn macro_scenarios() -> Vec<(&'static str, Script)> {
    let drain = Op::Tick { mode: 2, amount: 0 };
    let mut out = Vec::new();
    {
        // Handed off, closed by the server, the port reused at once, handed off again.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0, 10);
        s.mac(Macro::Close, 0, 0);
        s.mac(Macro::Reconnect, 0, 0);
        s.mac(Macro::Handoff, 2, 20);
        s.mac(Macro::Request, 0, 5);
        s.mac(Macro::Close, 0x40, 0);
        s.op(drain.clone());
        out.push(("reuse-after-handoff", s));
    }
    {
        // An old duplicate SYN (before the closed connection's sequence numbers, no
        // timestamp) on the closed tuple: refused, the TIME-WAIT entry stays.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !8);
        s.mac(Macro::Request, 0, 30);
        s.mac(Macro::Close, 0, 0);
        s.mac(Macro::Reconnect, 8 | 2, 0);
        s.op(drain.clone());
        out.push(("reuse-old-duplicate", s));
    }
    {
        // Twenty hand-offs of one connection, every node to every other, both leg ports.
        let mut s = Script::new(2);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        for i in 0..20u8 {
            s.mac(Macro::Handoff, ((i % 2) << 1) | ((i / 2 % 2) << 3), i);
        }
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("handoff-chain", s));
    }
    {
        // A client without timestamps to legs with them (and without): stripped towards it.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !8);
        s.mac(Macro::Handoff, 0, 0x80 | 9);
        s.mac(Macro::Handoff, 0x10 | 2, 3);
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("client-without-timestamps", s));
    }
    {
        // A client without SACK; the target's ACK carries a SACK block: stripped towards it.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !4);
        s.mac(Macro::Handoff, 0, 0x80 | 17);
        s.mac(Macro::Handoff, 0x20 | 2, 0x80);
        s.mac(Macro::Close, 0x40, 0);
        s.op(drain.clone());
        out.push(("client-without-sack", s));
    }
    {
        // A client with timestamps cannot go to a leg without them: refused, the leg reset.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0x10, 4);
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("options-incompatible", s));
    }
    {
        // A half-closed client: request and FIN, then the hand-off carries the FIN on.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Request, 0x40, 20);
        s.mac(Macro::Handoff, 0, 6);
        s.op(drain.clone());
        out.push(("client-half-close", s));
    }
    {
        // A hand-off left in flight, more client data, a second hand-off asked meanwhile.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0x40, 5);
        s.mac(Macro::Request, 0, 7);
        s.mac(Macro::Handoff, 0x08 | 2, 9);
        s.op(drain.clone());
        out.push(("handoff-in-flight", s));
    }
    {
        // A table of four flows full of connections in TIME-WAIT: a new one recycles one.
        let mut s = Script::new(1 | 4);
        s.arps();
        s.op(Op::Arp {
            host: 1,
            target: A_VIP,
            mode: 0,
        });
        for p in 1..5u8 {
            let c: At = (1, p);
            let n = s.connect(c, SYN_OPTS);
            s.close_plain(c, n);
        }
        s.connect(CLIENT, SYN_OPTS);
        s.op(drain);
        out.push(("table-full-recycle", s));
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Pipeline target: one frame on any port of a fresh or warm switch.

/// Pipeline target. Byte 0: bits 0-1 warm state (fresh, established, hand-off accepted, hand-off
/// confirmed), bit 2 partial checksum, bit 3 verify checksums, bits 4-7 seconds to wait first.
/// Byte 1: the port. The rest: the frame.
pub fn check_pipeline(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let port = r.u8();
    let mut frame = r.rest().to_vec();
    let mut h = match sel & 3 {
        0 => Harness::new(0, sel & 8 != 0),
        n => {
            let stage = [
                Stage::Established,
                Stage::Established,
                Stage::Accepted,
                Stage::Confirmed,
            ][n as usize];
            handoff_on(Script::with_verify(0, sel & 8 != 0), SYN_OPTS, stage).h
        }
    };
    if sel >> 4 != 0 {
        h.tick((sel >> 4) as u64 * 1000, h.sw.flow_capacity());
    }
    let kind = if sel & 4 != 0 {
        Kind::Partial
    } else {
        Kind::Full
    };
    h.frame(port, &mut frame, kind);
}

// ------------------------------------------------------------------------------------------------
// Control target: the request and reply decoders and the verifier, and requests into a switch.

/// Control target. Byte 0: bit 0 = sign the message with the cluster key first; bits 1-2 = the
/// node (1..=3) that sends it; bit 3 = also send it to a switch with an established connection
/// (bit 4: after a hand-off was accepted). The rest: the message bytes.
pub fn check_control(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let mut msg = r.rest().to_vec();
    if mode & 1 != 0 && msg.len() >= control::REQUEST_LEN {
        let t = control::tag(&KEY, &msg[..56]);
        msg[56..64].copy_from_slice(&t);
    }
    // Request decoder.
    match Request::new_checked(&msg[..]) {
        Ok(req) => {
            assert!(msg.len() >= control::REQUEST_LEN);
            let repr = RequestRepr::parse(&req);
            let want = control::tag(&KEY, &msg[..56]);
            assert_eq!(
                req.verify(&KEY),
                want[..] == msg[56..64],
                "verify disagrees with the tag"
            );
            assert_eq!(req.tag()[..], msg[56..64]);
            let mut buf = [0u8; control::REQUEST_LEN];
            assert_eq!(repr.emit(&mut buf, &KEY), Some(control::REQUEST_LEN));
            for i in 0..56 {
                if !(5..8).contains(&i) {
                    assert_eq!(buf[i], msg[i], "re-emitted request differs at byte {i}");
                }
            }
            let again = Request::new_checked(&buf[..]).expect("an emitted request parses");
            assert!(again.verify(&KEY));
            assert_eq!(RequestRepr::parse(&again), repr);
            if msg[5..8] == [0, 0, 0] {
                assert_eq!(
                    req.verify(&KEY),
                    buf[..] == msg[..64],
                    "a verified request is its own re-emission"
                );
            }
        }
        Err(e) => {
            let ok_header = msg.len() >= 4
                && msg[..2] == control::MAGIC
                && msg[2] == control::VERSION
                && msg[3] == control::TYPE_REQUEST;
            assert!(
                !(ok_header && msg.len() >= control::REQUEST_LEN),
                "a good request refused: {e:?}"
            );
        }
    }
    // Reply decoder.
    if let Ok(rep) = Reply::new_checked(&msg[..]) {
        let repr = ReplyRepr::parse(&rep);
        let mut buf = [0u8; control::REPLY_LEN];
        assert_eq!(repr.emit(&mut buf, &KEY), Some(control::REPLY_LEN));
        let again = Reply::new_checked(&buf[..]).expect("an emitted reply parses");
        assert!(again.verify(&KEY));
        assert_eq!(ReplyRepr::parse(&again), repr);
        let want = control::tag(&KEY, &msg[..24]);
        assert_eq!(rep.verify(&KEY), want[..] == msg[24..32]);
    }
    for n in 0..msg.len().min(control::REQUEST_LEN) {
        assert!(
            Request::new_checked(&msg[..n]).is_err(),
            "a {n}-byte request parsed"
        );
    }
    // Into a switch.
    if mode & 8 != 0 {
        let node = 1 + (mode >> 1) % 3;
        let stage = if mode & 16 != 0 {
            Stage::Accepted
        } else {
            Stage::Established
        };
        let mut s = handoff_script(0, SYN_OPTS, stage);
        let c = s.h.sw.config().clone();
        let n = node as usize;
        let mut f = udp_frame(
            ([198, 19, node, 2], 40100),
            (c.ports[n].gateway.octets(), control::DEFAULT_PORT),
            c.ports[n].mac,
            &msg,
        );
        let v = s.h.frame(node, &mut f, Kind::Full);
        assert!(
            matches!(
                v,
                None | Some(
                    Verdict::Local(LocalKind::Control)
                        | Verdict::Drop(DropReason::ControlMalformed)
                )
            ),
            "a control message gave {v:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// TCP option walker and rewriter.

/// An independent, plain reading of RFC 9293 3.1 option rules: the reference for the walker.
fn reference_walk(h: &[u8]) -> Result<TcpOptions, OptionError> {
    let mut o = TcpOptions::default();
    let end = h.len().min(60);
    let mut i = 20;
    loop {
        if i >= end {
            break;
        }
        let k = h[i];
        if k == 0 {
            break;
        }
        if k == 1 {
            i += 1;
            continue;
        }
        if i + 1 >= end {
            return Err(OptionError::Overrun);
        }
        let len = h[i + 1] as usize;
        if len < 2 {
            return Err(OptionError::BadLength);
        }
        if i + len > end {
            return Err(OptionError::Overrun);
        }
        let body = &h[i + 2..i + len];
        let fixed = match k {
            2 => Some(4),
            3 => Some(3),
            4 => Some(2),
            8 => Some(10),
            _ => None,
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(OptionError::WrongFixedLength);
        }
        match k {
            2 => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            3 => o.wscale = Some(body[0]),
            4 => o.sack_perm = true,
            5 => {
                if len < 10 || !(len - 2).is_multiple_of(8) {
                    return Err(OptionError::WrongFixedLength);
                }
                o.sack_at = (i + 2) as u8;
                o.sack_blocks = ((len - 2) / 8) as u8;
            }
            8 => {
                o.ts_at = Some((i + 2) as u8);
                o.tsval = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                o.tsecr = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            }
            _ => {}
        }
        i += len;
    }
    o.walked = (i.min(end) - 20.min(i)) as u8;
    Ok(o)
}

fn tcp_full_checksum(seg: &[u8]) -> u16 {
    let ph = checksum::pseudo_header_sum([198, 18, 0, 2], [198, 18, 0, 10], 6, seg.len() as u16);
    let mut s = seg.to_vec();
    s[16] = 0;
    s[17] = 0;
    !checksum::fold(checksum::sum(&s, ph))
}

/// TCP options target. Byte 0: options length (mod 41). Then the options bytes, then payload
/// length (byte) and new 32-bit values for every rewritable field.
pub fn check_tcp_options(data: &[u8]) {
    let mut r = Reader::new(data);
    let olen = (r.u8() % 41) as usize;
    let opts = r.bytes(olen).to_vec();
    let plen = r.u8() as usize % 64;
    let mut seg = vec![0u8; 20];
    seg[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
    seg.extend_from_slice(&opts);
    let hlen = seg.len();
    seg[12] = (hlen.div_ceil(4) as u8) << 4;
    seg.extend((0..plen).map(|i| i as u8 ^ 0xa5));
    let header = &seg[..hlen];
    let got = tcp_options::parse(header);
    assert_eq!(
        got,
        reference_walk(header),
        "walker and reference disagree on {opts:02x?}"
    );
    // Bytes past the header never matter.
    assert_eq!(got, tcp_options::parse(&seg[..hlen]));
    let Ok(o) = got else { return };
    assert!(o.walked as usize <= 40 && o.walked as usize <= hlen - 20);
    if let Some(a) = o.ts_at {
        assert!(a as usize + 8 <= hlen);
        assert_eq!(tcp_options::read_u32(header, a as usize), o.tsval);
        assert_eq!(tcp_options::read_u32(header, a as usize + 4), o.tsecr);
    }
    assert!(o.sack_blocks as usize <= tcp_options::MAX_SACK_BLOCKS);
    assert!(o.sack_at as usize + 8 * o.sack_blocks as usize <= hlen);
    for n in 0..o.sack_blocks as usize {
        let at = o.sack_at as usize + 8 * n;
        assert_eq!(
            o.sack_block(header, n),
            Some((
                tcp_options::read_u32(header, at),
                tcp_options::read_u32(header, at + 4)
            ))
        );
    }
    assert_eq!(o.sack_block(header, o.sack_blocks as usize), None);
    // Rewrite every field; a full checksum follows, a partial one stays.
    let mut fields = Vec::new();
    if let Some(a) = o.ts_at {
        fields.extend([a as usize, a as usize + 4]);
    }
    for n in 0..o.sack_blocks as usize {
        let at = o.sack_at as usize + 8 * n;
        fields.extend([at, at + 4]);
    }
    let mut full = seg.clone();
    let c = tcp_full_checksum(&full);
    full[16..18].copy_from_slice(&c.to_be_bytes());
    let mut csum = c;
    let partial_in = 0x1234;
    for at in fields {
        let v = r.u32();
        let before = full.clone();
        csum = tcp_options::write_u32(&mut full, at, v, Kind::Full, csum);
        assert_eq!(tcp_options::read_u32(&full, at), v);
        for (i, (x, y)) in before.iter().zip(&full).enumerate() {
            if !(at..at + 4).contains(&i) {
                assert_eq!(x, y, "write_u32 at {at} touched byte {i}");
            }
        }
        assert_eq!(
            tcp_options::write_u32(&mut full.clone(), at, v, Kind::Partial, partial_in),
            partial_in
        );
        let mut f2 = full.clone();
        f2[16..18].copy_from_slice(&csum.to_be_bytes());
        let want = tcp_full_checksum(&f2);
        assert!(
            csum == want || ones_eq(csum, want) && all_zero_but_csum(&f2),
            "write_u32 at {at}: {csum:04x} != {want:04x}"
        );
        full[16..18].copy_from_slice(&csum.to_be_bytes());
    }
    // Out of range writes change nothing.
    let n = full.len();
    assert_eq!(
        tcp_options::write_u32(&mut full, n - 3, 7, Kind::Full, 0xbeef),
        0xbeef
    );
    assert_eq!(tcp_options::read_u32(&full, n - 3), 0);
}

fn all_zero_but_csum(seg: &[u8]) -> bool {
    seg.iter()
        .enumerate()
        .all(|(i, b)| i == 16 || i == 17 || *b == 0)
}

// ------------------------------------------------------------------------------------------------
// Flow table against a model.

fn table_key(x: u8) -> FlowKey {
    FlowKey {
        src: [10, 0, 0, x & 7],
        dst: [10, 0, 1, (x >> 3) & 7],
        sport: 1000 + x as u16,
        dport: 80,
    }
}

/// The model of a [`FlowTable`]: slots, a LIFO free list, the sweep cursor.
struct TableModel {
    slots: Vec<Option<(FlowKey, FlowKey, u32)>>,
    free: Vec<usize>,
    cursor: usize,
}

/// Flow table target. Byte 0: capacity 1 + b % 12 and index size (bit 7: twice the minimum);
/// then 3-byte ops: insert(kind, key a, key b), remove(slot), sweep(now, budget), lookup storm.
pub fn check_flow_table(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let cap = 1 + (sel % 12) as usize;
    let ilen = table::index_len_for(cap) << (sel >> 7);
    // Sizes the constructor must refuse.
    let short = table::index_len_for(cap) / 2;
    let bad = FlowTable::new(
        vec![FlowSlot::default(); cap].into(),
        vec![IndexSlot::default(); short].into(),
        [1; 16],
    );
    assert!(
        bad.is_err(),
        "an index of {short} slots for {cap} flows was accepted"
    );
    let mut t = FlowTable::new(
        vec![FlowSlot::default(); cap].into(),
        vec![IndexSlot::default(); ilen].into(),
        [sel; 16],
    )
    .expect("valid sizes are accepted");
    let mut m = TableModel {
        slots: vec![None; cap],
        free: (0..cap).rev().collect(),
        cursor: 0,
    };
    let mut now = 0u32;
    let mut ops = 0;
    while !r.is_empty() && ops < 512 {
        ops += 1;
        let (op, a, b) = (r.u8(), r.u8(), r.u8());
        now = now.wrapping_add((op >> 3) as u32 * 97);
        match op % 4 {
            0 | 1 => {
                let (ka, kb) = if op % 4 == 0 {
                    (table_key(a), table_key(b))
                } else {
                    (table_key(a), table_key(a).reversed())
                };
                let present =
                    |k: &FlowKey| m.slots.iter().flatten().any(|(x, y, _)| x == k || y == k);
                if ka == kb || present(&ka) || present(&kb) {
                    continue; // the table does not promise anything for duplicate keys
                }
                let kind = if op & 4 != 0 {
                    FlowKind::Nat
                } else {
                    FlowKind::Routed
                };
                match t.insert(kind, ka, kb, now) {
                    Ok(i) => {
                        assert_eq!(
                            m.free.pop(),
                            Some(i),
                            "insert took slot {i}, not the model's"
                        );
                        m.slots[i] = Some((ka, kb, now));
                    }
                    Err(TableFull) => assert!(m.free.is_empty(), "table full with free slots"),
                }
            }
            2 => {
                let i = a as usize % (cap + 1);
                t.remove(i);
                if let Some(s) = m.slots.get_mut(i)
                    && s.take().is_some()
                {
                    m.free.push(i);
                }
            }
            _ => {
                let budget = b as usize % (cap + 3);
                let timeout = a as u32 * 50;
                let mut got = Vec::new();
                let n = t.sweep(
                    now,
                    budget,
                    |f| f.last_ms.wrapping_add(timeout),
                    |i| got.push(i),
                );
                assert_eq!(n, budget.min(cap));
                let mut want = Vec::new();
                for _ in 0..budget.min(cap) {
                    let i = m.cursor;
                    m.cursor = (i + 1) % cap;
                    if let Some((_, _, last)) = m.slots[i]
                        && table::deadline_passed(last.wrapping_add(timeout), now)
                    {
                        want.push(i);
                    }
                }
                assert_eq!(got, want, "sweep");
            }
        }
        // Everything the model knows, and nothing else.
        assert_eq!(t.len(), m.slots.iter().flatten().count());
        assert_eq!(t.is_empty(), m.slots.iter().all(Option::is_none));
        assert_eq!(t.capacity(), cap);
        let mut probes = 0;
        for x in 0..64u8 {
            for k in [table_key(x), table_key(x).reversed()] {
                let want = m.slots.iter().enumerate().find_map(|(i, s)| match s {
                    Some((ka, _, _)) if *ka == k => Some((i, Dir::Orig)),
                    Some((_, kb, _)) if *kb == k => Some((i, Dir::Reply)),
                    _ => None,
                });
                assert_eq!(t.lookup(&k, &mut probes), want, "lookup {k:?}");
                assert!(
                    probes >= 1 && probes as usize <= ilen + 1,
                    "{probes} probes"
                );
            }
        }
        for (i, s) in m.slots.iter().enumerate() {
            let f = t.get(i);
            assert_eq!(f.map(|f| (f.keys[0], f.keys[1], f.last_ms)), *s, "slot {i}");
        }
        assert_eq!(
            t.iter().map(|(i, _)| i).collect::<Vec<_>>(),
            (0..cap)
                .filter(|&i| m.slots[i].is_some())
                .collect::<Vec<_>>()
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Incremental against full checksums.

fn naive_sum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            (*b as u64) << 8
        } else {
            *b as u64
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checksum target. Byte 0: edit count; bytes 1..: a buffer whose first word is the checksum
/// field (at most 256 bytes, given by byte 1), then edits of (offset, width, value).
pub fn check_checksum(data: &[u8]) {
    let mut r = Reader::new(data);
    let edits = r.u8() % 16;
    let blen = r.u8() as usize;
    let mut buf = r.bytes(blen).to_vec();
    // The plain sum against a naive one, and split sums.
    assert_eq!(
        checksum::fold(checksum::sum(&buf, 0)),
        naive_sum(&buf),
        "sum"
    );
    let cut = (buf.len() / 2) & !1;
    let split = checksum::sum(&buf[cut..], checksum::sum(&buf[..cut], 0));
    assert!(ones_eq(checksum::fold(split), naive_sum(&buf)), "split sum");
    assert_eq!(
        checksum::checksum(&buf),
        !checksum::fold(checksum::sum(&buf, 0))
    );
    if buf.len() % 2 == 1 {
        buf.push(0);
    }
    if buf.len() < 8 {
        return;
    }
    buf[0] = 0;
    buf[1] = 0;
    let full = |b: &[u8]| -> u16 {
        let mut c = b.to_vec();
        c[0] = 0;
        c[1] = 0;
        checksum::checksum(&c)
    };
    let mut hc = full(&buf);
    // A pseudo-header too: a partial sum kept across address edits.
    let mut src = [r.u8(), r.u8(), r.u8(), r.u8()];
    let dst = [r.u8(), r.u8(), r.u8(), r.u8()];
    let len = buf.len() as u16;
    let mut partial = checksum::fold(checksum::pseudo_header_sum(src, dst, 6, len));
    for _ in 0..edits {
        let (off, width, v) = (r.u8() as usize, r.u8(), r.u32());
        match width % 4 {
            0 => {
                let i = 2 + 2 * (off % ((buf.len() - 2) / 2));
                let old = u16::from_be_bytes([buf[i], buf[i + 1]]);
                buf[i..i + 2].copy_from_slice(&(v as u16).to_be_bytes());
                hc = checksum::update16(hc, old, v as u16);
                let p =
                    checksum::update16_partial(checksum::update16_partial(partial, 0, old), old, 0);
                assert!(ones_eq(p, partial), "a partial update and its inverse");
                assert_eq!(
                    checksum::segment_update16(Kind::Partial, hc, old, v as u16),
                    hc
                );
            }
            1 => {
                let i = 2 + 2 * (off % ((buf.len() - 4) / 2));
                let old = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                buf[i..i + 4].copy_from_slice(&v.to_be_bytes());
                hc = checksum::update32(hc, old, v);
                assert_eq!(
                    checksum::segment_update32(Kind::Full, 0x1234, old, old),
                    checksum::update32(0x1234, old, old)
                );
            }
            2 => {
                // Any alignment, through the option rewriter.
                let i = 2 + off % (buf.len() - 5);
                buf[0..2].copy_from_slice(&hc.to_be_bytes());
                hc = tcp_options::write_u32(&mut buf, i, v, Kind::Full, hc);
            }
            _ => {
                // Address edit: full checksum over a pseudo-header and the partial sum.
                let old = u32::from_be_bytes(src);
                let ph_old = checksum::pseudo_header_sum(src, dst, 6, len);
                src = v.to_be_bytes();
                let ph_new = checksum::pseudo_header_sum(src, dst, 6, len);
                let mut c = buf.clone();
                c[0] = 0;
                c[1] = 0;
                let before = !checksum::fold(checksum::sum(&c, ph_old));
                let after = checksum::pseudo_update32(Kind::Full, before, old, v);
                let want = !checksum::fold(checksum::sum(&c, ph_new));
                assert_eq!(after, want, "pseudo-header address update");
                partial = checksum::pseudo_update32(Kind::Partial, partial, old, v);
                assert!(
                    ones_eq(partial, checksum::fold(ph_new)),
                    "partial address update"
                );
            }
        }
        let want = full(&buf);
        let zero = buf[2..].iter().all(|b| *b == 0);
        assert!(
            hc == want || zero && ones_eq(hc, want),
            "incremental {hc:04x} != full {want:04x}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Seeds.

/// The committed seed corpus: (target, file name, bytes). Small and well formed, built with
/// smoltcp's `Repr::emit` for the cluster of `Config::cluster(3, KEY)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let c = config(SprayPolicy::RoundRobin, true);
    let mac0 = c.ports[0].mac;
    let client = (ADDRS[0], 40000);
    let vip = ([198, 18, 0, 10], 80);
    // Pipeline: frames on each port, fresh and warm.
    let syn = {
        let mut t = tcp_spec(client, vip, mac0);
        t.flags = F_SYN;
        t.seq = 1000;
        t.mss = Some(1460);
        t.ws = Some(7);
        t.sack_perm = true;
        t.ts = Some((1, 0));
        t.build()
    };
    let mut pipe = |name: &str, sel: u8, port: u8, f: &[u8]| {
        let mut v = vec![sel, port];
        v.extend_from_slice(f);
        out.push(("pipeline", String::from(name), v));
    };
    pipe("client-syn", 0, 0, &syn);
    pipe("client-syn-partial", 4, 0, &syn);
    pipe("client-syn-verify", 8, 0, &syn);
    let seg = |flags: u8, seq: u32, ack: u32, len: usize| {
        let mut t = tcp_spec(client, vip, mac0);
        t.flags = flags;
        t.seq = seq;
        t.ack = Some(ack);
        t.ts = Some((5, 5));
        t.payload = vec![b'G'; len];
        t.build()
    };
    pipe("client-ack", 1, 0, &seg(0, 1001, 1, 0));
    pipe("client-data", 1, 0, &seg(F_PSH, 1001, 1, 40));
    pipe("client-fin", 1, 0, &seg(F_FIN, 1001, 1, 0));
    pipe("client-rst", 1, 0, &seg(F_RST, 1001, 1, 0));
    pipe("client-data-spliced", 2, 0, &seg(F_PSH, 1081, 1, 40));
    pipe("client-ack-confirmed", 3, 0, &seg(0, 1081, 1, 0));
    for p in 0..4u8 {
        let (src, gw) = if p == 0 {
            (ADDRS[0], [198, 18, 0, 1])
        } else {
            ([198, 19, p, 2], [198, 19, p, 1])
        };
        pipe(
            &format!("arp-gw-port{p}"),
            0,
            p,
            &arp_frame(src, gw, EthernetAddress::BROADCAST, false),
        );
    }
    pipe(
        "arp-vip",
        0,
        0,
        &arp_frame(ADDRS[0], vip.0, EthernetAddress::BROADCAST, false),
    );
    pipe(
        "arp-reply",
        0,
        1,
        &arp_frame([198, 19, 1, 2], [198, 19, 1, 1], c.ports[1].mac, true),
    );
    let req = RequestRepr {
        key_id: 1,
        counter: 1,
        held_peer: Endpoint::new(ADDRS[0], 40000),
        held_local: Endpoint::new([198, 19, 1, 2], 80),
        new_local: Endpoint::new([198, 19, 1, 2], 50000),
        new_remote: Endpoint::new([198, 19, 2, 2], 80),
        consumed: 40,
        sent: 100,
    };
    let ctl = control_frame(1, 40100, &req, &KEY);
    pipe("control-request", 0, 1, &ctl);
    pipe("control-request-warm", 1, 1, &ctl);
    pipe("control-request-client-port", 0, 0, &ctl);
    let n2n = udp_frame(
        ([198, 19, 1, 2], 5353),
        ([198, 19, 2, 2], 5353),
        c.ports[1].mac,
        b"node to node",
    );
    pipe("udp-node-to-node", 1, 1, &n2n);
    pipe(
        "icmp-node-to-node",
        1,
        1,
        &other_frame(
            [198, 19, 1, 2],
            [198, 19, 3, 2],
            c.ports[1].mac,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        ),
    );
    let mut leg = tcp_spec(
        ([198, 19, 1, 2], 50000),
        ([198, 19, 2, 2], 80),
        c.ports[1].mac,
    );
    leg.flags = F_SYN;
    leg.seq = 7;
    leg.mss = Some(1460);
    pipe("node-syn-to-node", 1, 1, &leg.build());
    let mut reply = tcp_spec(([198, 19, 1, 2], 80), client, c.ports[1].mac);
    reply.seq = 1;
    reply.ack = Some(1001);
    reply.payload = vec![b'H'; 100];
    reply.flags = F_PSH;
    pipe("node-reply-data", 1, 1, &reply.build());
    pipe("node-reply-data-partial", 1 | 4, 1, &reply.build());
    // Known bug 1: node 2 claims the client's address towards node 1 (the core drops it: src_spoofed).
    let spoof = {
        let mut t = tcp_spec(client, ([198, 19, 1, 2], 80), c.ports[2].mac);
        t.flags = F_SYN;
        t.seq = 9;
        t.build()
    };
    pipe("known-bug1-spoofed-syn", 1, 2, &spoof);
    let mut ipv6 = syn.clone();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    pipe("ipv6-ethertype", 0, 0, &ipv6);
    pipe("truncated", 0, 0, &syn[..30]);

    // Stateful: scripted scenarios.
    let mut st = |name: &str, s: Script| out.push(("stateful", String::from(name), s.bytes));
    st("handoff-closed", handoff_script(0, SYN_OPTS, Stage::Closed));
    st(
        "handoff-closed-no-options",
        handoff_script(0, 0, Stage::Closed),
    );
    st(
        "handoff-closed-ts-only",
        handoff_script(0, 8, Stage::Closed),
    );
    st(
        "handoff-retired",
        handoff_script(2, SYN_OPTS, Stage::Retired),
    );
    st(
        "handoff-accepted",
        handoff_script(0, SYN_OPTS, Stage::Accepted),
    );
    st(
        "handoff-confirmed-sink-full",
        handoff_script(0x10, SYN_OPTS, Stage::Confirmed),
    );
    st(
        "handoff-weighted",
        handoff_script(0x20, SYN_OPTS, Stage::Closed),
    );
    st(
        "handoff-maglev",
        handoff_script(0x40, SYN_OPTS, Stage::Closed),
    );
    {
        // Accepted, then the target never answers: rolled back after the time-out.
        let mut s = handoff_script(0, SYN_OPTS, Stage::Accepted);
        s.op(Op::Tick { mode: 1, amount: 6 });
        s.op(Op::Tick { mode: 2, amount: 0 });
        st("handoff-rollback-drain", s);
    }
    {
        // Two hand-offs in a row: A -> B -> C.
        let mut s = handoff_script(2, SYN_OPTS, Stage::Confirmed);
        s.op(Op::Seg(SegOp {
            src: at(CLIENT),
            dst: at(VIP),
            flags: F_ACK | F_PSH,
            len: 30,
            opts: 8,
            ..SegOp::default()
        }));
        st("handoff-then-more-data", s);
    }
    {
        let mut s = handoff_script(0, SYN_OPTS, Stage::Established);
        s.op(Op::Control(CtlOp {
            node: 0,
            mode: 4,
            held: at(CLIENT),
            target: at(node(2)),
            new_port: P_L1,
            ..CtlOp::default()
        }));
        s.op(Op::Control(CtlOp {
            node: 0,
            mode: 0x10,
            held: at(CLIENT),
            target: at(node(2)),
            new_port: P_L1,
            ..CtlOp::default()
        }));
        st("control-bad-mac-and-repeat", s);
    }
    {
        let mut s = Script::new(1);
        s.arps();
        for p in 0..6u8 {
            s.seg_with((A_CLIENT + (p & 1), 1 + (p % 4)), VIP, F_SYN, 0, 0);
        }
        s.op(Op::Tick {
            mode: 1,
            amount: 31,
        });
        st("syn-flood-table-full", s);
    }
    {
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.seg_with(CLIENT, VIP, F_ACK | F_RST, 0, 0);
        s.op(Op::Tick { mode: 2, amount: 0 });
        st("connect-reset-drain", s);
    }
    {
        let mut s = Script::new(0);
        s.arps();
        s.open_leg(1, 2, SYN_OPTS);
        s.seg_with((A_N1, P_L1), node(2), F_ACK | F_PSH, 20, 8);
        s.op(Op::Raw {
            port: 1,
            partial: false,
            frame: n2n.clone(),
        });
        st("routed-between-nodes", s);
    }

    {
        // Known bug 1, the leak: node 2 keeps a spoofed flow alive past the client's connection
        // and then receives node 1's segments for the client (the core drops it: src_spoofed).
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, 0);
        s.op(Op::Raw {
            port: 2,
            partial: false,
            frame: spoof.clone(),
        });
        s.seg_with(CLIENT, VIP, F_ACK | F_RST, 0, 0);
        for _ in 0..7 {
            s.op(Op::Tick {
                mode: 1,
                amount: 20,
            });
            s.op(Op::Raw {
                port: 2,
                partial: false,
                frame: spoof.clone(),
            });
        }
        s.seg_with(node(1), CLIENT, F_ACK | F_PSH, 6, 0);
        st("known-bug1-spoofed-syn", s);
    }
    for (name, s) in macro_scenarios() {
        out.push(("stateful", String::from(name), s.bytes));
    }
    // Control: requests and replies.
    let mut msg = [0u8; control::REQUEST_LEN];
    let _ = req.emit(&mut msg, &KEY);
    let mut ctl = |name: &str, mode: u8, m: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(m);
        out.push(("control", String::from(name), v));
    };
    ctl("request", 0, &msg);
    ctl("request-resign", 1, &msg);
    ctl("request-to-switch", 8 | 1, &msg);
    ctl("request-to-switch-accepted", 16 | 8 | 1, &msg);
    ctl("request-to-switch-node2", 8 | 2 | 1, &msg);
    let mut bad = msg;
    bad[40] ^= 1;
    ctl("request-bad-tag", 8, &bad);
    let mut rep = [0u8; control::REPLY_LEN];
    let _ = ReplyRepr {
        code: ReplyCode::Accepted,
        key_id: 1,
        counter: 1,
        hops: 1,
    }
    .emit(&mut rep, &KEY);
    ctl("reply", 0, &rep);
    let _ = ReplyRepr {
        code: ReplyCode::Unknown,
        key_id: 3,
        counter: u64::MAX,
        hops: 255,
    }
    .emit(&mut rep, &KEY);
    ctl("reply-unknown-code", 0, &rep);
    ctl("truncated", 0, &msg[..20]);

    // TCP options.
    let mut topt = |name: &str, o: &[u8], values: &[u32]| {
        let mut v = vec![o.len() as u8];
        v.extend_from_slice(o);
        v.push(16);
        for x in values {
            v.extend_from_slice(&x.to_be_bytes());
        }
        out.push(("tcp_options", String::from(name), v));
    };
    topt(
        "linux-syn",
        &[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        &[9, 10],
    );
    topt(
        "ts-aligned",
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        &[0xffff_ffff, 0],
    );
    topt(
        "ts-odd",
        &[1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0],
        &[0x8000_0000, 0x7fff_ffff],
    );
    topt(
        "smoltcp-syn",
        &[
            2, 4, 5, 0xb4, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        ],
        &[3, 4],
    );
    let mut sack = vec![1, 1, 5, 34];
    for i in 0..32u8 {
        sack.push(i);
    }
    topt("sack-4-blocks", &sack, &[1, 2, 3, 4, 5, 6, 7, 8]);
    topt(
        "sack-1-block-ts",
        &[
            1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0,
        ],
        &[1, 2, 3, 4],
    );
    topt("bad-length", &[2, 0, 0, 0], &[]);
    topt("overrun", &[1, 1, 1, 8], &[]);
    topt("wrong-fixed", &[3, 4, 0, 0], &[]);
    topt("eol", &[0, 99, 99, 99], &[]);
    topt("unknown-kind", &[99, 4, 0, 0, 3, 3, 2, 0], &[]);

    // Flow table.
    let mut ft = |name: &str, v: Vec<u8>| out.push(("flow_table", String::from(name), v));
    ft(
        "fill-remove-sweep",
        vec![
            3, 1, 1, 0, 1, 2, 0, 1, 3, 0, 1, 4, 0, 1, 5, 0, 2, 1, 0, 1, 6, 0, 0x1b, 0, 5, 3, 0, 9,
        ],
    );
    ft(
        "distinct-keys",
        vec![7, 0, 1, 2, 4, 3, 4, 0, 9, 40, 2, 0, 0, 0, 9, 40, 0xfb, 2, 7],
    );
    ft("one-slot", vec![0, 1, 1, 0, 1, 2, 0, 2, 0, 0, 1, 2, 0]);
    ft(
        "big-index",
        vec![
            0x8b, 1, 10, 0, 1, 11, 0, 1, 12, 0, 3, 0, 20, 2, 1, 0, 3, 200, 20,
        ],
    );

    // Checksums.
    let mut ck = |name: &str, v: Vec<u8>| out.push(("checksum", String::from(name), v));
    let hdr: Vec<u8> = syn[34..].to_vec();
    let mut v = vec![6, hdr.len() as u8];
    v.extend_from_slice(&hdr);
    v.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 10]);
    for (off, w, val) in [
        (2u8, 0u8, 0x1234u32),
        (4, 1, 0xdead_beef),
        (7, 2, 0xffff_ffff),
        (0, 3, 0xc613_0102),
        (9, 2, 0),
        (3, 0, 0),
    ] {
        v.extend_from_slice(&[off, w]);
        v.extend_from_slice(&val.to_be_bytes());
    }
    ck("tcp-header-edits", v);
    ck(
        "rfc1071-example",
        vec![0, 8, 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
    );
    let mut z = vec![2, 12];
    z.extend_from_slice(&[0; 12]);
    z.extend_from_slice(&[0; 8]);
    z.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    ck("all-zero", z);
    ck(
        "odd-length",
        vec![
            3, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 4, 2, 0, 0, 0, 1, 3, 1, 0, 0,
            0, 1, 3, 3, 1, 2, 3, 4,
        ],
    );
    out
}
