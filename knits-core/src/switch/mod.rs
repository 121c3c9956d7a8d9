//! The per-packet pipeline: parse, classify, lookup, decide, rewrite, verdict.
//!
//! [`Switch::process`] takes one frame, the port it came in on and the time; it rewrites the
//! frame in place and returns a [`Verdict`]. Frames the switch makes up (ARP, control replies,
//! the faked FIN/ACKs of paper IV.B) go to a caller-provided [`Sink`]. [`Switch::poll`] runs
//! the timers with a bounded amount of work. See docs/architecture.md for the design and
//! docs/protocol.md for the hand-off.

use managed::ManagedSlice;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, UdpPacket,
};

use crate::checksum::{self, Kind};
use crate::config::{Config, ConfigError, MAX_BACKENDS, PortId, PortRole};
use crate::counters::{Counters, DropReason, FlowEvent, Generated, LocalKind};
use crate::meter::{Meter, Step};
use crate::seq::SeqNumber;
use crate::splice::{self, Binding, Event, Phase, Replay, ReplayState, SessionSlot, Teardown};
use crate::spray::Spray;
use crate::table::{
    self, Dir, FlowKey, FlowKind, FlowSlot, FlowTable, IndexSlot, TcpState, dirflag,
};
use crate::time::Instant;
use crate::wire::control::{self, ReplyCode, ReplyRepr, RequestRepr};
use crate::wire::tcp_options::{self, TcpOptions};

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const TCP_AT: usize = ETH_LEN + IP_LEN;
/// Largest frame the switch generates.
pub const MAX_GENERATED: usize = 128;
/// Neighbor cache: sets of [`NEIGHBOR_WAYS`] entries, least recently learned replaced first.
const NEIGHBOR_SETS: usize = 64;
const NEIGHBOR_WAYS: usize = 4;
/// Faked FINs are resent this often until acknowledged.
const FIN_RETRY_MS: u32 = 200;
const FIN_TRIES: u8 = 8;
/// A stale binding whose old node has not closed both legs this long after its teardown began
/// is retired anyway (its node is gone or never closes the leg it opened), so that one broken
/// node cannot hold a connection's history full.
const FORCE_RETIRE_MS: u32 = 10_000;
/// Slots a full table examines for a TIME-WAIT entry to recycle before it refuses a connection.
const RECLAIM_SCAN: usize = 64;

/// How the frame's transport checksum is to be kept (see [`checksum::Kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FrameMeta {
    /// Full checksum, or a partial (pseudo-header only) one from a TAP with `NEEDS_CSUM`.
    pub csum: Kind,
}

impl FrameMeta {
    /// A frame with complete checksums.
    pub const FULL: FrameMeta = FrameMeta { csum: Kind::Full };
}

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Send the (rewritten) frame out of this port.
    Forward(PortId),
    /// The switch handled it itself; any reply went to the sink.
    Local(LocalKind),
    /// Dropped, for this reason (already counted).
    Drop(DropReason),
}

/// Receives frames the switch generates. Returns false when it has no room (counted as
/// [`DropReason::SinkFull`]).
pub trait Sink {
    /// Queue `frame` for transmission on `port`.
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool;
}

/// Caller-owned storage for a switch.
#[derive(Debug)]
pub struct Storage<'a> {
    /// Flow records (one per tracked TCP connection or leg).
    pub flows: ManagedSlice<'a, FlowSlot>,
    /// Hash index, [`Storage::index_len_for`] slots.
    pub index: ManagedSlice<'a, IndexSlot>,
    /// Splice sessions (handed-off client connections).
    pub sessions: ManagedSlice<'a, SessionSlot>,
}

impl Storage<'_> {
    /// Index slots needed for `flows` flow slots.
    pub const fn index_len_for(flows: usize) -> usize {
        table::index_len_for(flows)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Neighbor {
    ip: [u8; 4],
    mac: [u8; 6],
    valid: bool,
    /// When it was last learned (a counter), for replacement.
    stamp: u32,
}

#[inline]
fn neighbor_set(ip: [u8; 4]) -> usize {
    (u32::from_be_bytes(ip).wrapping_mul(0x9e37_79b1) >> 26) as usize % NEIGHBOR_SETS
}

/// A parsed TCP segment (values before any rewrite).
#[derive(Debug, Clone, Copy)]
struct Seg {
    key: FlowKey,
    seq: SeqNumber,
    ack: SeqNumber,
    syn: bool,
    ackf: bool,
    fin: bool,
    rst: bool,
    len: u32,
    win: u16,
    opts: TcpOptions,
}

impl Seg {
    /// Sequence space the segment occupies (data, SYN and FIN).
    fn seq_len(&self) -> u32 {
        self.len + self.syn as u32 + self.fin as u32
    }
}

/// One frame on its way through the pipeline: its bytes, how its checksum arrived, where the
/// frames the switch generates go, and what records the work. Passed down as one argument.
struct Pkt<'p, S: ?Sized, M: ?Sized> {
    frame: &'p mut [u8],
    meta: FrameMeta,
    sink: &'p mut S,
    meter: &'p mut M,
}

/// In-place header edits with RFC 1624 checksum maintenance.
///
/// The headers are held as fixed-size arrays split off the frame once, in [`Rw::new`]: every
/// field access below is at a constant offset into an array of known length, so none of them
/// carries a bounds check, and the no_std link check (`nostd-check --features panic-free`) can
/// prove that no rewrite panics.
struct Rw<'f> {
    /// The IPv4 header (the parser refuses options, so it is exactly 20 bytes).
    ip: &'f mut [u8; IP_LEN],
    /// The fixed part of the TCP header.
    th: &'f mut [u8; TCP_HDR],
    /// TCP options and payload: offset `at` from the TCP header is `rest[at - TCP_HDR]`.
    rest: &'f mut [u8],
    kind: Kind,
    ip_c: u16,
    tcp_c: u16,
    bytes: u32,
    words: u32,
}

/// Length of the fixed TCP header.
const TCP_HDR: usize = 20;

/// Most frames [`Switch::process_burst`] takes at once.
pub const BURST: usize = 32;

/// The 4-tuple of an Ethernet/IPv4/TCP frame without IP options, read at fixed offsets and not
/// checked (a hint for [`Switch::process_burst`]'s first pass: a wrong one only costs a useless
/// read; `process` checks everything).
#[inline]
fn tcp_key_hint(f: &[u8]) -> Option<FlowKey> {
    let h = f.first_chunk::<{ TCP_AT + 4 }>()?;
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || h[23] != 6 {
        return None;
    }
    Some(FlowKey {
        src: [h[26], h[27], h[28], h[29]],
        dst: [h[30], h[31], h[32], h[33]],
        sport: u16::from_be_bytes([h[34], h[35]]),
        dport: u16::from_be_bytes([h[36], h[37]]),
    })
}

impl<'f> Rw<'f> {
    /// `None` when the frame is shorter than Ethernet + IPv4 + TCP headers, which the parser
    /// has already ruled out for every frame that reaches a rewrite.
    fn new(f: &'f mut [u8], kind: Kind) -> Option<Self> {
        let (_, l3) = f.split_at_mut_checked(ETH_LEN)?;
        let (ip, l4) = l3.split_first_chunk_mut::<IP_LEN>()?;
        let (th, rest) = l4.split_first_chunk_mut::<TCP_HDR>()?;
        let ip_c = u16::from_be_bytes([ip[10], ip[11]]);
        let tcp_c = u16::from_be_bytes([th[16], th[17]]);
        Some(Rw {
            ip,
            th,
            rest,
            kind,
            ip_c,
            tcp_c,
            bytes: 0,
            words: 0,
        })
    }
    fn src(&mut self, a: Ipv4Address) {
        let mut ip = Ipv4Packet::new_unchecked(&mut self.ip[..]);
        let old = ip.src_addr();
        if old != a {
            ip.set_src_addr(a);
            self.addr_changed(old, a);
        }
    }
    fn dst(&mut self, a: Ipv4Address) {
        let mut ip = Ipv4Packet::new_unchecked(&mut self.ip[..]);
        let old = ip.dst_addr();
        if old != a {
            ip.set_dst_addr(a);
            self.addr_changed(old, a);
        }
    }
    fn addr_changed(&mut self, old: Ipv4Address, new: Ipv4Address) {
        let (o, n) = (u32::from(old), u32::from(new));
        self.ip_c = checksum::update32(self.ip_c, o, n);
        self.tcp_c = checksum::pseudo_update32(self.kind, self.tcp_c, o, n);
        self.bytes += 4;
        self.words += 4;
    }
    /// A 16-bit field of the fixed TCP header at byte offset `at`.
    fn tcp16(&mut self, at: usize, v: u16) {
        let Some(f) = self.th.get_mut(at..at + 2) else {
            return;
        };
        let old = u16::from_be_bytes([f[0], f[1]]);
        if old != v {
            f.copy_from_slice(&v.to_be_bytes());
            self.tcp_c = checksum::segment_update16(self.kind, self.tcp_c, old, v);
            self.bytes += 2;
            self.words += 1;
        }
    }
    /// A 32-bit field of the fixed TCP header at byte offset `at`.
    fn tcp32(&mut self, at: usize, v: u32) {
        let Some(f) = self.th.get_mut(at..at + 4) else {
            return;
        };
        let old = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        if old != v {
            f.copy_from_slice(&v.to_be_bytes());
            self.tcp_c = checksum::segment_update32(self.kind, self.tcp_c, old, v);
            self.bytes += 4;
            self.words += 2;
        }
    }
    fn sport(&mut self, p: u16) {
        self.tcp16(0, p);
    }
    fn dport(&mut self, p: u16) {
        self.tcp16(2, p);
    }
    fn seq(&mut self, v: SeqNumber) {
        self.tcp32(4, v.0);
    }
    fn ack(&mut self, v: SeqNumber) {
        self.tcp32(8, v.0);
    }
    fn win(&mut self, w: u16) {
        self.tcp16(14, w);
    }
    /// Clears FIN in the flags word (offset 12: data offset, reserved bits and flags).
    fn clear_fin(&mut self) {
        let old = u16::from_be_bytes([self.th[12], self.th[13]]);
        let new = old & !0x0001;
        if old != new {
            self.th[13] &= !0x01;
            self.tcp_c = checksum::segment_update16(self.kind, self.tcp_c, old, new);
        }
    }
    /// A 32-bit option field at offset `at` from the TCP header (options start at 20, an even
    /// offset, so the checksum parity of `at` is the same in `rest`).
    fn opt32(&mut self, at: usize, v: u32) {
        let Some(at) = at.checked_sub(TCP_HDR) else {
            return;
        };
        self.tcp_c = tcp_options::write_u32(self.rest, at, v, self.kind, self.tcp_c);
        self.bytes += 4;
        self.words += 3;
    }
    /// One option byte at offset `at` from the TCP header (an option kind or length).
    fn opt8(&mut self, at: usize, v: u8) {
        let Some(b) = at.checked_sub(TCP_HDR).and_then(|i| self.rest.get_mut(i)) else {
            return;
        };
        let old = *b;
        if old != v {
            *b = v;
            // A byte at an even offset is the high half of its 16-bit word.
            let word = |x: u8| {
                if at.is_multiple_of(2) {
                    (x as u16) << 8
                } else {
                    x as u16
                }
            };
            self.tcp_c = checksum::segment_update16(self.kind, self.tcp_c, word(old), word(v));
            self.bytes += 1;
            self.words += 1;
        }
    }
    /// The 32-bit option field at offset `at` from the TCP header (0 if out of range).
    fn opt32_get(&self, at: usize) -> u32 {
        at.checked_sub(TCP_HDR)
            .map_or(0, |at| tcp_options::read_u32(self.rest, at))
    }
    fn ttl_dec(&mut self) {
        // TTL and protocol share the IPv4 header's 16-bit word at offset 8.
        let (ttl, proto) = (self.ip[8], self.ip[9]);
        self.ip[8] = ttl.wrapping_sub(1);
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl.wrapping_sub(1), proto]);
        self.ip_c = checksum::update16(self.ip_c, old, new);
        self.bytes += 1;
        self.words += 1;
    }
    fn finish<M: Meter + ?Sized>(self, meter: &mut M) {
        self.ip[10..12].copy_from_slice(&self.ip_c.to_be_bytes());
        self.th[16..18].copy_from_slice(&self.tcp_c.to_be_bytes());
        meter.bytes_rewritten(self.bytes + 4);
        meter.checksum_words(self.words);
    }
}

/// Rescales a window field from one shift to another, rounding down (never advertising more
/// than the receiver offered) and saturating at 65535.
#[inline]
pub const fn rescale_window(win: u16, from: u8, to: u8) -> u16 {
    if from == to {
        return win;
    }
    let bytes = (win as u64) << from;
    let v = bytes >> to;
    if v > 0xffff { 0xffff } else { v as u16 }
}

/// The addressing part of a flow record.
struct Keys {
    keys: [FlowKey; 2],
    ports: [PortId; 2],
}

/// Where a routed or NATed packet leaves.
struct Out {
    port: PortId,
    next_hop: Ipv4Address,
}

/// A KNITS edge switch.
#[derive(Debug)]
pub struct Switch<'a> {
    config: Config,
    table: FlowTable<'a>,
    sessions: ManagedSlice<'a, SessionSlot>,
    sessions_used: usize,
    session_cursor: usize,
    spray: Spray,
    neighbors: [[Neighbor; NEIGHBOR_WAYS]; NEIGHBOR_SETS],
    neighbor_clock: u32,
    /// When `poll` last asked for unresolved back-ends' MACs (ms, wrapping), if ever.
    last_probe_ms: Option<u32>,
    /// Ports whose link is up (all at start); see [`Switch::set_port_up`].
    port_up: [bool; crate::config::MAX_PORTS],
    replay: [ReplayState; MAX_BACKENDS],
    counters: Counters,
    /// The cluster's own addresses, as (network, mask) pairs: the VIP, every gateway and every
    /// back-end subnet. The client side may not claim any of them (ingress filtering), and the
    /// check runs on every client packet, so the masks are computed once, here.
    cluster_nets: heapless::Vec<(u32, u32), { 2 * crate::config::MAX_PORTS + 1 }>,
    /// Where the next search for a TIME-WAIT flow to recycle starts (flow slot).
    reclaim_flow: usize,
    /// Where the next search for a TIME-WAIT session to recycle starts (session slot).
    reclaim_session: usize,
}

/// What a SYN on a tuple the table already holds means (docs/protocol.md "Closed connections").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// The tuple's connection is not closed: the SYN belongs to it (a retransmission).
    Open,
    /// The connection is closed and the SYN acceptable: a new connection on the same tuple.
    Reopen,
    /// The connection is closed but the SYN is an old duplicate (RFC 6191).
    Refuse,
}

/// Fields of a TCP segment the switch generates.
#[derive(Debug, Clone, Copy)]
struct GenTcp {
    src: FlowKey,
    seq: SeqNumber,
    ack: SeqNumber,
    fin: bool,
    rst: bool,
    win: u16,
    ts: Option<(u32, u32)>,
}

impl<'a> Switch<'a> {
    /// A switch over caller storage. Checks the configuration (the error says what to fix).
    pub fn new(config: Config, storage: Storage<'a>) -> Result<Self, ConfigError> {
        config.validate()?;
        if storage.sessions.is_empty() {
            return Err(ConfigError::SessionStorage);
        }
        let table = FlowTable::new(storage.flows, storage.index, config.hash_seed)
            .map_err(|_| ConfigError::Storage)?;
        let mut sessions = storage.sessions;
        for s in sessions.iter_mut() {
            *s = SessionSlot::default();
        }
        let spray = Spray::new(config.policy, &config.backends, config.hash_seed);
        let mut cluster_nets = heapless::Vec::new();
        let _ = cluster_nets.push((u32::from(config.vip), u32::MAX));
        for p in config.ports.iter() {
            let _ = cluster_nets.push((u32::from(p.gateway), u32::MAX));
            if p.role == PortRole::Backend {
                let mask = match p.prefix_len.min(32) {
                    0 => 0,
                    l => u32::MAX << (32 - l as u32),
                };
                let _ = cluster_nets.push((u32::from(p.gateway) & mask, mask));
            }
        }
        Ok(Switch {
            config,
            table,
            sessions,
            sessions_used: 0,
            session_cursor: 0,
            spray,
            neighbors: [[Neighbor::default(); NEIGHBOR_WAYS]; NEIGHBOR_SETS],
            neighbor_clock: 0,
            last_probe_ms: None,
            port_up: [true; crate::config::MAX_PORTS],
            replay: [ReplayState::default(); MAX_BACKENDS],
            counters: Counters::default(),
            cluster_nets,
            reclaim_flow: 0,
            reclaim_session: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// All counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Flows in the table.
    pub fn flow_count(&self) -> usize {
        self.table.len()
    }
    /// Flow capacity.
    pub fn flow_capacity(&self) -> usize {
        self.table.capacity()
    }
    /// Splice sessions in use.
    pub fn session_count(&self) -> usize {
        self.sessions_used
    }
    /// Splice session capacity.
    pub fn session_capacity(&self) -> usize {
        self.sessions.len()
    }
    /// The flow table (read only), for inspection and tests.
    pub fn table(&self) -> &FlowTable<'a> {
        &self.table
    }
    /// A splice session (read only), for inspection and tests.
    pub fn session(&self, i: usize) -> Option<&SessionSlot> {
        self.sessions.get(i).filter(|s| s.in_use)
    }
    /// Counts of flows per TCP state, in the order of [`TcpState`]'s variants.
    pub fn flows_by_state(&self) -> [usize; 6] {
        let mut n = [0; 6];
        for (_, f) in self.table.iter() {
            n[f.state as usize] += 1;
        }
        n
    }

    // ----------------------------------------------------------------------------------------
    // Entry points.

    /// Processes one frame received on `port` at `now`.
    pub fn process<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        meta: FrameMeta,
        sink: &mut S,
        meter: &mut M,
    ) -> Verdict {
        if let Some(c) = self.counters.rx_frames.get_mut(port as usize) {
            *c += 1;
        }
        let mut p = Pkt {
            frame,
            meta,
            sink,
            meter,
        };
        let v = self.process_inner(port, now, &mut p);
        let meter = p.meter;
        meter.step(Step::Verdict);
        meter.counter();
        match v {
            Verdict::Forward(p) => {
                if let Some(c) = self.counters.tx_frames.get_mut(p as usize) {
                    *c += 1;
                }
            }
            Verdict::Local(k) => {
                if let Some(c) = self.counters.local.get_mut(k.index()) {
                    *c += 1;
                }
            }
            Verdict::Drop(r) => {
                if let Some(c) = self.counters.drops.get_mut(r.index()) {
                    *c += 1;
                }
            }
        }
        v
    }

    /// Processes up to [`BURST`] frames received on `port` at `now`, in order, with the same
    /// outcome as calling [`Switch::process`] for each (frames rewritten, generated frames,
    /// counters, verdicts); `verdicts[i]` is frame `i`'s. First it reads, for every TCP frame,
    /// the index and flow slots its lookup will need, so that the cache misses of independent
    /// lookups overlap (DPDK's bulk lookup does the same) instead of one waiting for another;
    /// then it processes the frames one by one. Returns how many frames were processed: the
    /// fewest of `frames`, `metas`, `verdicts` and [`BURST`].
    #[allow(clippy::too_many_arguments)] // `process`'s arguments, per frame where they vary
    pub fn process_burst<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        frames: &mut [&mut [u8]],
        metas: &[FrameMeta],
        verdicts: &mut [Verdict],
        sink: &mut S,
        meter: &mut M,
    ) -> usize {
        let n = frames.len().min(metas.len()).min(verdicts.len()).min(BURST);
        let mut acc = 0u32;
        for f in frames.iter().take(n) {
            if let Some(key) = tcp_key_hint(f) {
                acc ^= self.table.touch(&key);
            }
        }
        core::hint::black_box(acc);
        for ((f, m), v) in frames
            .iter_mut()
            .zip(metas)
            .zip(verdicts.iter_mut())
            .take(n)
        {
            *v = self.process(port, now, f, *m, sink, meter);
        }
        n
    }

    fn process_inner<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        p.meter.step(Step::Parse);
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Ok(eth) = EthernetFrame::new_checked(&*p.frame) else {
            return Verdict::Drop(DropReason::EthTruncated);
        };
        p.meter.bytes_read(ETH_LEN as u32);
        let dst_mac = eth.dst_addr();
        if dst_mac != pc.mac && !dst_mac.is_broadcast() {
            return Verdict::Drop(DropReason::EthNotForUs);
        }
        let src_mac = eth.src_addr();
        match eth.ethertype() {
            EthernetProtocol::Arp => self.arp(port, p.frame, p.sink, p.meter),
            EthernetProtocol::Ipv4 => self.ipv4(port, now, src_mac, p),
            _ => Verdict::Drop(DropReason::EthUnsupported),
        }
    }

    /// Runs timers: expiry of flows, hand-off time-outs, resent faked FINs and binding
    /// retirement. Examines at most `budget` flow slots and `budget` sessions; returns the work
    /// done.
    pub fn poll<S: Sink + ?Sized>(&mut self, now: Instant, budget: usize, sink: &mut S) -> usize {
        let now_ms = table::millis(now);
        let mut work = 0;
        // Resolve back-ends before traffic needs them (a SYN to an unresolved node is dropped
        // and the client waits for its retransmission), once a second at most.
        if self
            .last_probe_ms
            .is_none_or(|t| now_ms.wrapping_sub(t) >= 1000)
        {
            self.last_probe_ms = Some(now_ms);
            for i in 0..self.config.backends.len() {
                let b = self.config.backends[i];
                let up = self.port_up.get(b.port as usize).copied().unwrap_or(false);
                if up && self.neighbor(b.addr.octets()).is_none() {
                    self.arp_request(b.port, b.addr, sink);
                    work += 1;
                }
            }
        }
        // Sessions first: they own their flows.
        let n = self.sessions.len();
        for _ in 0..budget.min(n) {
            let i = self.session_cursor;
            self.session_cursor = if i + 1 >= n { 0 } else { i + 1 };
            work += 1;
            if self.sessions.get(i).is_some_and(|s| s.in_use) {
                self.session_timers(i, now_ms, sink);
            }
        }
        // Flows, in chunks so the expired list stays on the stack.
        let mut left = budget;
        while left > 0 {
            let chunk = left.min(32);
            left -= chunk;
            let mut expired: heapless::Vec<usize, 32> = heapless::Vec::new();
            let t = self.config.timeouts;
            work += self.table.sweep(
                now_ms,
                chunk,
                |f| {
                    let d = match f.state {
                        TcpState::SynSent | TcpState::SynReceived => t.syn,
                        TcpState::Established => t.established,
                        TcpState::TimeWait if f.kind == FlowKind::Routed && f.link == 0 => {
                            t.routed_time_wait
                        }
                        TcpState::TimeWait => t.time_wait,
                        _ => t.transitory,
                    };
                    f.last_ms.wrapping_add(d.total_millis() as u32)
                },
                |i| {
                    let _ = expired.push(i);
                },
            );
            for i in expired {
                self.expire_flow(i);
            }
        }
        work
    }

    fn expire_flow(&mut self, i: usize) {
        let Some(f) = self.table.get(i) else { return };
        let state = f.state;
        match f.session() {
            Some(s) => {
                let anchor = self.sessions.get(s).map(|s| s.anchor as usize);
                if anchor == Some(i) {
                    self.end_session(s);
                } else if let Some(f) = self.table.get_mut(i) {
                    // Legs live as long as their session; refresh so the sweep moves on.
                    f.last_ms = f.last_ms.wrapping_add(1000);
                }
            }
            None => {
                if state == TcpState::TimeWait {
                    self.counters.closed += 1;
                } else {
                    self.counters.expired += 1;
                }
                self.table.remove(i);
            }
        }
    }

    fn end_session(&mut self, s: usize) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        let anchor = sess.anchor as usize;
        let mut legs: heapless::Vec<usize, { splice::MAX_BINDINGS }> = heapless::Vec::new();
        for b in sess.bindings.iter() {
            let _ = legs.push(b.leg as usize);
        }
        *sess = SessionSlot::default();
        self.sessions_used = self.sessions_used.saturating_sub(1);
        for l in legs {
            if l != anchor {
                self.table.remove(l);
            }
        }
        let closed = self
            .table
            .get(anchor)
            .is_some_and(|f| f.state == TcpState::TimeWait);
        if closed {
            self.counters.closed += 1;
        } else {
            self.counters.expired += 1;
        }
        self.table.remove(anchor);
    }

    fn event(&mut self, e: FlowEvent) {
        if let Some(c) = self.counters.events.get_mut(e.index()) {
            *c += 1;
        }
    }

    /// Removes a flow that is closed, with the splice session it anchors or belongs to; old
    /// nodes still being retired in that session are reset (nothing will retire them now).
    fn remove_closed<S: Sink + ?Sized>(&mut self, fi: usize, sink: &mut S) {
        match self.table.get(fi).and_then(|f| f.session()) {
            Some(s) => {
                self.reset_retiring(s, sink);
                self.end_session(s);
            }
            None => {
                self.counters.closed += 1;
                self.table.remove(fi);
            }
        }
    }

    /// A full flow table recycles a connection in TIME-WAIT (RFC 7857 3.2: a NAT that needs
    /// the room may reuse a mapping in TIME-WAIT). Examines at most [`RECLAIM_SCAN`] slots
    /// from where the last search stopped; a client connection goes with its session, a leg
    /// only with its session's client connection. False when none was found.
    fn reclaim_flow<S: Sink + ?Sized>(&mut self, sink: &mut S) -> bool {
        let n = self.table.capacity();
        for _ in 0..RECLAIM_SCAN.min(n) {
            let i = self.reclaim_flow;
            self.reclaim_flow = if i + 1 >= n { 0 } else { i + 1 };
            let Some(f) = self.table.get(i) else { continue };
            if f.state != TcpState::TimeWait {
                continue;
            }
            let ok = match f.session() {
                None => true,
                Some(s) => self.anchor_of(s) == Some(i),
            };
            if ok {
                self.remove_closed(i, sink);
                self.event(FlowEvent::TimeWaitRecycled);
                return true;
            }
        }
        false
    }

    /// A full session table recycles the session of a client connection in TIME-WAIT (see
    /// [`Switch::reclaim_flow`]). False when none of [`RECLAIM_SCAN`] sessions examined was.
    pub(super) fn reclaim_session<S: Sink + ?Sized>(&mut self, sink: &mut S) -> bool {
        let n = self.sessions.len();
        for _ in 0..RECLAIM_SCAN.min(n) {
            let i = self.reclaim_session;
            self.reclaim_session = if i + 1 >= n { 0 } else { i + 1 };
            let Some(anchor) = self.sessions.get(i).filter(|x| x.in_use).map(|x| x.anchor) else {
                continue;
            };
            if self
                .table
                .get(anchor as usize)
                .is_some_and(|f| f.state == TcpState::TimeWait)
            {
                self.reset_retiring(i, sink);
                self.end_session(i);
                self.event(FlowEvent::TimeWaitRecycled);
                return true;
            }
        }
        false
    }

    /// Whether a SYN (without ACK) from the originating side of a tracked tuple opens a new
    /// connection (docs/protocol.md "Closed connections").
    ///
    /// The tuple must be closed: the flow (for a leg of a splice session, the session's client
    /// connection) is in TIME-WAIT. The SYN must then not be an old duplicate, by the rule
    /// Linux's own TIME-WAIT applies (`tcp_timewait_state_process`, RFC 6191): not rejected by
    /// PAWS, and either its sequence lies after everything the old connection sent or its
    /// timestamp is newer. (On a node-to-node leg PAWS is not applied: the TSvals the switch
    /// saw there include the client's, translated.) A reopened client connection is sprayed
    /// afresh, a leg's session ends with it; late segments of the old connection find no entry
    /// (or the new one's window) and go nowhere.
    fn reuse(&self, f: &FlowSlot, seg: &Seg) -> Reuse {
        let closed = match f.session() {
            None => f.state == TcpState::TimeWait,
            Some(s) => self
                .anchor_of(s)
                .and_then(|a| self.table.get(a))
                .is_some_and(|c| c.state == TcpState::TimeWait),
        };
        if !closed {
            return Reuse::Open;
        }
        let old = &f.dirs[Dir::Orig.index()];
        let ts = seg.opts.ts_at.is_some() && old.has(dirflag::TS) && old.ts_in != 0;
        let ts_age = seg.opts.tsval.wrapping_sub(old.ts_in) as i32;
        // On a leg the highest TSval seen may be the client's, translated, and run ahead of
        // the node's own clock: PAWS would refuse the node's real new SYN there.
        let paws_reject = ts && ts_age < 0 && f.kind == FlowKind::Nat;
        let newer = seg.seq.gt(old.nxt) || (ts && ts_age > 0);
        if !paws_reject && newer {
            Reuse::Reopen
        } else {
            Reuse::Refuse
        }
    }

    // ----------------------------------------------------------------------------------------
    // ARP and neighbors.

    /// Learns a neighbor from an ARP packet (never from IP sources: a flood of spoofed sources
    /// would evict the real hosts). Replaces the least recently learned way of the set.
    fn learn(&mut self, ip: [u8; 4], mac: [u8; 6]) {
        if mac[0] & 1 != 0 || ip == [0; 4] {
            return;
        }
        self.neighbor_clock = self.neighbor_clock.wrapping_add(1);
        let stamp = self.neighbor_clock;
        let Some(set) = self.neighbors.get_mut(neighbor_set(ip)) else {
            return;
        };
        let mut victim = 0;
        for (i, n) in set.iter().enumerate() {
            if n.valid && n.ip == ip {
                victim = i;
                break;
            }
            let v = &set[victim];
            if !n.valid || (v.valid && stamp.wrapping_sub(n.stamp) > stamp.wrapping_sub(v.stamp)) {
                victim = i;
            }
        }
        if let Some(n) = set.get_mut(victim) {
            *n = Neighbor {
                ip,
                mac,
                valid: true,
                stamp,
            };
        }
    }

    fn neighbor(&self, ip: [u8; 4]) -> Option<EthernetAddress> {
        let set = self.neighbors.get(neighbor_set(ip))?;
        set.iter()
            .find(|n| n.valid && n.ip == ip)
            .map(|n| EthernetAddress(n.mac))
    }

    fn owns(&self, port: PortId, ip: Ipv4Address) -> bool {
        let Some(pc) = self.config.ports.get(port as usize) else {
            return false;
        };
        ip == pc.gateway || (pc.role == PortRole::Client && ip == self.config.vip)
    }

    fn arp<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        frame: &mut [u8],
        sink: &mut S,
        meter: &mut M,
    ) -> Verdict {
        meter.step(Step::Classify);
        let Some(body) = frame.get(ETH_LEN..) else {
            return Verdict::Drop(DropReason::ArpMalformed);
        };
        let Ok(pkt) = ArpPacket::new_checked(body) else {
            return Verdict::Drop(DropReason::ArpMalformed);
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&pkt)
        else {
            return Verdict::Drop(DropReason::ArpMalformed);
        };
        meter.bytes_read(28);
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if pc.contains(source_protocol_addr) {
            self.learn(source_protocol_addr.octets(), source_hardware_addr.0);
        }
        if operation != ArpOperation::Request {
            return Verdict::Local(LocalKind::Arp);
        }
        if !self.owns(port, target_protocol_addr) {
            return Verdict::Drop(DropReason::ArpNotForUs);
        }
        let mut buf = [0u8; 42];
        let eth = EthernetRepr {
            src_addr: pc.mac,
            dst_addr: source_hardware_addr,
            ethertype: EthernetProtocol::Arp,
        };
        eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let rep = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: pc.mac,
            source_protocol_addr: target_protocol_addr,
            target_hardware_addr: source_hardware_addr,
            target_protocol_addr: source_protocol_addr,
        };
        rep.emit(&mut ArpPacket::new_unchecked(&mut buf[ETH_LEN..]));
        self.generate(port, &buf, Generated::ArpReply, sink, meter);
        Verdict::Local(LocalKind::Arp)
    }

    fn arp_request<S: Sink + ?Sized>(&mut self, port: PortId, target: Ipv4Address, sink: &mut S) {
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return;
        };
        let mut buf = [0u8; 42];
        let eth = EthernetRepr {
            src_addr: pc.mac,
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EthernetProtocol::Arp,
        };
        eth.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let req = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: pc.mac,
            source_protocol_addr: pc.gateway,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        req.emit(&mut ArpPacket::new_unchecked(&mut buf[ETH_LEN..]));
        self.generate(
            port,
            &buf,
            Generated::ArpRequest,
            sink,
            &mut crate::meter::NoMeter,
        );
    }

    fn generate<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        frame: &[u8],
        what: Generated,
        sink: &mut S,
        meter: &mut M,
    ) {
        meter.generated(frame.len() as u32);
        if sink.emit(port, frame) {
            self.counters.generated[what.index()] += 1;
            if let Some(c) = self.counters.tx_frames.get_mut(port as usize) {
                *c += 1;
            }
        } else {
            self.counters.drops[DropReason::SinkFull.index()] += 1;
        }
    }

    /// Sets the Ethernet addresses for `out`; false when the next hop is unknown (an ARP
    /// request is sent).
    fn set_macs<S: Sink + ?Sized>(&mut self, frame: &mut [u8], out: &Out, sink: &mut S) -> bool {
        let Some(pc) = self.config.ports.get(out.port as usize).copied() else {
            return false;
        };
        let Some(mac) = self.neighbor(out.next_hop.octets()) else {
            self.arp_request(out.port, out.next_hop, sink);
            return false;
        };
        // Destination then source: the first 12 bytes (the parser has checked the length).
        let Some(hdr) = frame.first_chunk_mut::<12>() else {
            return false;
        };
        hdr[..6].copy_from_slice(mac.as_bytes());
        hdr[6..].copy_from_slice(pc.mac.as_bytes());
        true
    }

    // ----------------------------------------------------------------------------------------
    // IPv4.

    fn ipv4<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        src_mac: EthernetAddress,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let Some(body) = p.frame.get(ETH_LEN..) else {
            return Verdict::Drop(DropReason::Ipv4Malformed);
        };
        let Ok(ip) = Ipv4Packet::new_checked(body) else {
            return Verdict::Drop(DropReason::Ipv4Malformed);
        };
        if ip.version() != 4 {
            return Verdict::Drop(DropReason::Ipv4Malformed);
        }
        if ip.header_len() as usize != IP_LEN {
            return Verdict::Drop(DropReason::Ipv4Options);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Verdict::Drop(DropReason::Ipv4Fragment);
        }
        p.meter.bytes_read(IP_LEN as u32);
        if self.config.verify_checksums {
            p.meter.checksum_words(10);
            if !checksum::ipv4_header_ok(&body[..IP_LEN]) {
                return Verdict::Drop(DropReason::Ipv4BadChecksum);
            }
        }
        // The protocol byte is read from the checked header directly: smoltcp's accessor is
        // not inlined here and would keep a bounds check (and a panic) the length check above
        // already rules out.
        let proto = IpProtocol::from(body.get(9).copied().unwrap_or_default());
        let (src, dst, ttl) = (ip.src_addr(), ip.dst_addr(), ip.hop_limit());
        let total = ip.total_len() as usize;
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if !self.source_allowed(&pc, src) {
            return Verdict::Drop(DropReason::SrcSpoofed);
        }
        let _ = src_mac;
        let l4_len = total - IP_LEN;
        match proto {
            IpProtocol::Tcp => {
                if ttl <= 1 {
                    return Verdict::Drop(DropReason::TtlExpired);
                }
                self.tcp(port, now, src, dst, l4_len, p)
            }
            IpProtocol::Udp => self.udp(port, now, src, dst, ttl, l4_len, p),
            _ => {
                p.meter.step(Step::Classify);
                // Other protocols (ICMP) are routed between back-end nodes only.
                let Some(out) = self.route_between_nodes(port, dst) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                if ttl <= 1 {
                    return Verdict::Drop(DropReason::TtlExpired);
                }
                self.forward_plain(p.frame, out, p.sink, p.meter)
            }
        }
    }

    /// Ingress filtering (RFC 2827 style): a back-end port carries only its own subnet's
    /// addresses (not the gateway's); the client side may carry any address but the cluster's
    /// own (back-end subnets, gateways, the VIP). Without it a node could claim a client's
    /// address and have another node's traffic for that client steered to itself.
    fn source_allowed(&self, pc: &crate::config::PortConfig, src: Ipv4Address) -> bool {
        match pc.role {
            PortRole::Backend => pc.contains(src) && src != pc.gateway,
            PortRole::Client => {
                let a = u32::from(src);
                !self.cluster_nets.iter().any(|&(net, mask)| a & mask == net)
            }
        }
    }

    /// Spray, skipping back-ends behind a port that is down (the policy's pick if it is up,
    /// else the next back-end that is).
    fn pick_backend(&mut self, client: [u8; 4], port: u16) -> Option<usize> {
        let first = self.spray.pick(&self.config.backends, client, port)?;
        let n = self.config.backends.len();
        (0..n).map(|i| (first + i) % n).find(|&i| {
            let b = &self.config.backends[i];
            b.weight > 0 && self.port_up.get(b.port as usize).copied().unwrap_or(false)
        })
    }

    /// Tells the switch that a port's link went down or came back. Going down, every client
    /// connection whose current server sits behind the port gets an RST at the client's own
    /// receive point (so the client learns within one round trip instead of its own time-out),
    /// its entries go, and spraying skips the port's back-ends until it is up again. Not a
    /// per-packet operation: it walks the whole table. Returns the connections reset.
    pub fn set_port_up<S: Sink + ?Sized>(&mut self, port: PortId, up: bool, sink: &mut S) -> usize {
        let Some(p) = self.port_up.get_mut(port as usize) else {
            return 0;
        };
        *p = up;
        if up {
            return 0;
        }
        let mut reset = 0;
        for fi in 0..self.table.capacity() {
            let Some(f) = self.table.get(fi).copied() else {
                continue;
            };
            // The port serving this flow now: the current binding's server for a spliced client
            // connection, else the back-end port of a NAT flow; routed legs end with their session.
            let serving = match (f.kind, f.session()) {
                (FlowKind::Nat, None) => Some(f.ports[1]),
                (FlowKind::Nat, Some(s)) => self
                    .sessions
                    .get(s)
                    .and_then(|x| x.current())
                    .map(|b| b.server_port),
                (FlowKind::Routed, None) if f.ports.contains(&port) => {
                    self.table.remove(fi);
                    continue;
                }
                _ => None,
            };
            if serving != Some(port) {
                continue;
            }
            // A hand-off to this port that the target has not confirmed is undone instead: the
            // old node still holds everything and serves the client itself.
            if let Some(s) = f.session()
                && self
                    .sessions
                    .get(s)
                    .and_then(|x| x.current())
                    .is_some_and(|b| b.phase == Phase::Pending)
            {
                self.rollback(s, sink);
                continue;
            }
            let (o, r) = (f.dirs[0], f.dirs[1]);
            if r.has(dirflag::SYN) {
                let vip = f.keys[0];
                let g = GenTcp {
                    src: FlowKey {
                        src: vip.dst,
                        dst: vip.src,
                        sport: vip.dport,
                        dport: vip.sport,
                    },
                    seq: if o.has(dirflag::ACKED) { o.ack } else { r.nxt },
                    ack: o.nxt,
                    fin: false,
                    rst: true,
                    win: 0,
                    ts: None,
                };
                self.gen_tcp(f.ports[0], g, Generated::PortDownReset, sink);
                reset += 1;
            }
            match f.session() {
                Some(s) => self.end_session(s),
                None => self.table.remove(fi),
            }
        }
        reset
    }

    /// A back-end to back-end route: the destination is a node on another back-end port.
    fn route_between_nodes(&self, in_port: PortId, dst: Ipv4Address) -> Option<Out> {
        let pin = self.config.ports.get(in_port as usize)?;
        if pin.role != PortRole::Backend {
            return None;
        }
        let p = self.config.route(dst)?;
        let pc = self.config.ports.get(p as usize)?;
        if pc.role != PortRole::Backend || p == in_port || dst == pc.gateway {
            return None;
        }
        Some(Out {
            port: p,
            next_hop: dst,
        })
    }

    /// Forwards a non-TCP IPv4 packet unchanged but for TTL and MACs.
    fn forward_plain<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        frame: &mut [u8],
        out: Out,
        sink: &mut S,
        meter: &mut M,
    ) -> Verdict {
        meter.step(Step::Rewrite);
        let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETH_LEN..]);
        let ttl = ip.hop_limit();
        let proto: u8 = ip.next_header().into();
        ip.set_hop_limit(ttl - 1);
        let c = checksum::update16(
            ip.checksum(),
            u16::from_be_bytes([ttl, proto]),
            u16::from_be_bytes([ttl - 1, proto]),
        );
        ip.set_checksum(c);
        meter.bytes_rewritten(3);
        meter.checksum_words(1);
        if !self.set_macs(frame, &out, sink) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    // ----------------------------------------------------------------------------------------
    // UDP: control messages to the switch, or routed between nodes.

    #[allow(clippy::too_many_arguments)]
    fn udp<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        src: Ipv4Address,
        dst: Ipv4Address,
        ttl: u8,
        l4_len: usize,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        p.meter.step(Step::Classify);
        let Some(seg) = p.frame.get(TCP_AT..TCP_AT + l4_len) else {
            return Verdict::Drop(DropReason::UdpMalformed);
        };
        let Ok(udp) = UdpPacket::new_checked(seg) else {
            return Verdict::Drop(DropReason::UdpMalformed);
        };
        if udp.len() as usize != l4_len {
            return Verdict::Drop(DropReason::UdpMalformed);
        }
        p.meter.bytes_read(8);
        // A control message from the client side is refused whichever of the switch's
        // gateway addresses it names (docs/protocol.md, acceptance rule 1).
        if udp.dst_port() == self.config.control_port
            && self.config.ports.get(port as usize).map(|c| c.role) == Some(PortRole::Client)
            && self.config.ports.iter().any(|c| c.gateway == dst)
        {
            return Verdict::Drop(DropReason::ControlWrongPort);
        }
        if self.owns(port, dst) {
            let is_control = udp.dst_port() == self.config.control_port;
            let Some(pc) = self.config.ports.get(port as usize) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            if !is_control || dst != pc.gateway {
                return Verdict::Drop(DropReason::VipNotServed);
            }
            if pc.role != PortRole::Backend {
                return Verdict::Drop(DropReason::ControlWrongPort);
            }
            if self.config.verify_checksums && p.meta.csum == Kind::Full && udp.checksum() != 0 {
                p.meter.checksum_words(l4_len as u32 / 2 + 6);
                if !checksum::transport_ok(src.octets(), dst.octets(), 17, seg) {
                    return Verdict::Drop(DropReason::UdpBadChecksum);
                }
            }
            let sport = udp.src_port();
            let mut payload = [0u8; control::REQUEST_LEN];
            // The UDP length field equals the segment's length (checked above), so the
            // payload is everything after the 8-byte header.
            let Some(body) = seg.get(8..).filter(|b| b.len() == control::REQUEST_LEN) else {
                return Verdict::Drop(DropReason::ControlMalformed);
            };
            payload.copy_from_slice(body);
            return self.control(
                port,
                table::millis(now),
                src,
                sport,
                &payload,
                p.sink,
                p.meter,
            );
        }
        let Some(out) = self.route_between_nodes(port, dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        self.forward_plain(p.frame, out, p.sink, p.meter)
    }

    // ----------------------------------------------------------------------------------------
    // TCP.

    fn tcp<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        src: Ipv4Address,
        dst: Ipv4Address,
        l4_len: usize,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let Some(segb) = p.frame.get(TCP_AT..TCP_AT + l4_len) else {
            return Verdict::Drop(DropReason::TcpMalformed);
        };
        let Ok(tcp) = TcpPacket::new_checked(segb) else {
            return Verdict::Drop(DropReason::TcpMalformed);
        };
        let hdr_len = tcp.header_len() as usize;
        if hdr_len < 20 || hdr_len > l4_len {
            return Verdict::Drop(DropReason::TcpMalformed);
        }
        let (syn, ackf, fin, rst) = (tcp.syn(), tcp.ack(), tcp.fin(), tcp.rst());
        if (syn && (fin || rst)) || (!syn && !ackf && !rst) || (fin && !ackf) {
            return Verdict::Drop(DropReason::TcpBadFlags);
        }
        let Some(hdr) = segb.get(..hdr_len) else {
            return Verdict::Drop(DropReason::TcpMalformed);
        };
        let Ok(opts) = tcp_options::parse(hdr) else {
            return Verdict::Drop(DropReason::TcpBadOption);
        };
        p.meter.bytes_read(hdr_len as u32);
        p.meter.option_bytes(opts.walked as u32);
        if self.config.verify_checksums && p.meta.csum == Kind::Full {
            p.meter.checksum_words(l4_len as u32 / 2 + 6);
            if !checksum::transport_ok(src.octets(), dst.octets(), 6, segb) {
                return Verdict::Drop(DropReason::TcpBadChecksum);
            }
        }
        let seg = Seg {
            key: FlowKey {
                src: src.octets(),
                dst: dst.octets(),
                sport: tcp.src_port(),
                dport: tcp.dst_port(),
            },
            seq: tcp.seq_number().into(),
            ack: tcp.ack_number().into(),
            syn,
            ackf,
            fin,
            rst,
            len: (l4_len - hdr_len) as u32,
            win: tcp.window_len(),
            opts,
        };
        p.meter.step(Step::Classify);
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if pc.role == PortRole::Client
            && (dst != self.config.vip || !self.config.vip_ports.contains(&seg.key.dport))
        {
            return Verdict::Drop(if dst == self.config.vip {
                DropReason::VipNotServed
            } else {
                DropReason::NoRoute
            });
        }
        p.meter.step(Step::Lookup);
        let mut probes = 0;
        let found = self.table.lookup(&seg.key, &mut probes);
        p.meter.table_probe(probes);
        p.meter.step(Step::Decide);
        let now_ms = table::millis(now);
        let Some((fi, dir)) = found else {
            // A FIN between two nodes on a connection the switch no longer holds: a retired
            // hand-off leg whose old node resends its FIN because the answer was lost.
            if seg.fin
                && !seg.syn
                && !seg.rst
                && self
                    .route_between_nodes(port, Ipv4Address::from_octets(seg.key.dst))
                    .is_some()
            {
                // No entry is left to say whether the connection had timestamps: a node puts one
                // on its FIN only if it negotiated them.
                self.answer_late_fin(port, &seg, true, p.sink);
                return Verdict::Local(LocalKind::TeardownAbsorbed);
            }
            return self.new_flow(port, pc.role, now_ms, &seg, p);
        };
        p.meter.table_entry(1);
        // The checks read the flow in place (no copy of the record): what is decided here is
        // carried out below, once the borrow has ended.
        let (reuse, verdict, session, kind, aborted) = {
            let Some(flow) = self.table.get(fi) else {
                return Verdict::Drop(DropReason::UnknownFlow);
            };
            let me = flow.dirs[dir.index()];
            if flow.ports[dir.index()] != port && me.has(dirflag::SYN) {
                return Verdict::Drop(DropReason::WrongPort);
            }
            let reuse = if seg.syn && !seg.ackf && dir == Dir::Orig {
                self.reuse(flow, &seg)
            } else {
                Reuse::Open
            };
            // An old node's RST on the leg it opened is checked against its own sequence
            // numbers (`on_old_node_packet`): the target's acknowledgments there also cover the
            // client's bytes, which follow the old node's in the same space.
            let old_node_rst = seg.rst
                && dir == Dir::Orig
                && flow.kind == FlowKind::Routed
                && flow.session().is_some();
            let verdict = if old_node_rst || reuse != Reuse::Open {
                None
            } else {
                self.validate(flow, dir, &seg)
            };
            (
                reuse,
                verdict,
                flow.session(),
                flow.kind,
                me.has(dirflag::ABORTED),
            )
        };
        match reuse {
            Reuse::Open => {}
            Reuse::Refuse => return Verdict::Drop(DropReason::ReuseRefused),
            Reuse::Reopen => {
                self.remove_closed(fi, p.sink);
                self.event(FlowEvent::Reopened);
                return self.new_flow(port, pc.role, now_ms, &seg, p);
            }
        }
        if let Some(r) = verdict {
            return Verdict::Drop(r);
        }
        if session.is_none() && aborted {
            self.track(fi, dir, port, now_ms, &seg);
            if !seg.rst {
                self.answer_aborted(port, &seg, p.sink);
            }
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        match (session, kind) {
            (None, FlowKind::Nat) => self.nat_plain(fi, dir, port, now_ms, &seg, p),
            (None, _) => self.routed_plain(fi, dir, port, now_ms, &seg, p),
            (Some(s), _) => self.spliced(s, fi, dir, now_ms, &seg, p),
        }
    }

    /// RFC 5961 and window sanity for a segment of a known flow: a RST must be in the window
    /// (only an exact match changes state, see `track`), data far outside it is dropped.
    fn validate(&self, f: &FlowSlot, dir: Dir, seg: &Seg) -> Option<DropReason> {
        let rcv = &f.dirs[dir.other().index()];
        if !rcv.has(dirflag::ACKED) || seg.syn {
            return None;
        }
        let wnd = ((rcv.win as u32) << f.shift(dir.other())).max(65535);
        let lo = rcv.ack;
        if seg.rst {
            if seg.seq.ge(lo) && seg.seq.lt(lo.add(wnd.saturating_add(1))) {
                return None;
            }
            return Some(DropReason::OutOfWindow);
        }
        if seg.len > 0 {
            // Generous: the receiver may have advertised more since; only far-off data goes.
            let slack = wnd.saturating_mul(4).min(1 << 30);
            let end = seg.seq.add(seg.len);
            if end.le(lo.sub(slack)) || seg.seq.ge(lo.add(slack)) {
                return Some(DropReason::OutOfWindow);
            }
        }
        None
    }

    /// Updates a flow direction from a segment, in that direction's own sequence space, and
    /// moves the connection state.
    fn track(&mut self, fi: usize, dir: Dir, port: PortId, now_ms: u32, seg: &Seg) {
        let Some(f) = self.table.get_mut(fi) else {
            return;
        };
        // The sender's direction and the other one, by destructuring (no slice indexing).
        let [o, r] = &mut f.dirs;
        let (me, other) = match dir {
            Dir::Orig => (o, r),
            Dir::Reply => (r, o),
        };
        // A retransmitted SYN or SYN-ACK is no sign of life: a node answering a spoofed SYN would
        // otherwise keep the half-open entry alive for as long as it retries.
        if !(seg.syn && me.has(dirflag::SYN)) {
            f.last_ms = now_ms;
        }
        if seg.syn && !me.has(dirflag::SYN) {
            me.isn = seg.seq;
            me.nxt = seg.seq.add(1);
            me.flags |= dirflag::SYN;
            me.mss = seg.opts.mss.unwrap_or(0);
            if let Some(w) = seg.opts.wscale {
                me.wscale = w.min(14);
                me.flags |= dirflag::WSCALE;
            }
            if seg.opts.sack_perm {
                me.flags |= dirflag::SACK_PERM;
            }
            if seg.opts.ts_at.is_some() {
                me.flags |= dirflag::TS;
            }
            if let Some(p) = f.ports.get_mut(dir.index()) {
                *p = port;
            }
        }
        let end = seg.seq.add(seg.seq_len());
        if me.has(dirflag::SYN) && end.gt(me.nxt) {
            me.nxt = end;
        }
        if seg.ackf && (!me.has(dirflag::ACKED) || seg.ack.gt(me.ack)) {
            me.ack = seg.ack;
            me.flags |= dirflag::ACKED;
        }
        if seg.opts.ts_at.is_some()
            && (seg.opts.tsval.wrapping_sub(me.ts_in) as i32 > 0 || me.ts_in == 0)
        {
            me.ts_in = seg.opts.tsval;
        }
        me.win = seg.win;
        if seg.fin && !me.has(dirflag::FIN) {
            me.flags |= dirflag::FIN;
        }
        // The other direction's FIN is acknowledged once this ack passes it.
        if other.has(dirflag::FIN) && me.has(dirflag::ACKED) && me.ack.ge(other.nxt) {
            other.flags |= dirflag::FIN_ACKED;
        }
        let exact_rst = seg.rst && (!other.has(dirflag::ACKED) || seg.seq == other.ack);
        let both_syn = me.has(dirflag::SYN) && other.has(dirflag::SYN);
        let fins = me.has(dirflag::FIN) as u8 + other.has(dirflag::FIN) as u8;
        let fins_acked = me.has(dirflag::FIN_ACKED) && other.has(dirflag::FIN_ACKED);
        let new_state = if exact_rst || fins_acked {
            TcpState::TimeWait
        } else if fins == 2 {
            TcpState::Closing
        } else if fins == 1 {
            TcpState::FinWait
        } else if both_syn
            && (f.state == TcpState::SynReceived || f.state == TcpState::Established)
            && (seg.len > 0 || (dir == Dir::Orig && seg.ackf))
        {
            TcpState::Established
        } else if both_syn && f.state == TcpState::SynSent {
            TcpState::SynReceived
        } else {
            f.state
        };
        if f.state != TcpState::TimeWait {
            if new_state != f.state {
                knits_trace!("flow {} {} -> {}", fi, f.state.name(), new_state.name());
            }
            f.state = new_state;
        }
    }

    // ----------------------------------------------------------------------------------------
    // New flows: spray a SYN to the VIP, or track a SYN between nodes.

    fn new_flow<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        role: PortRole,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        if !seg.syn || seg.ackf {
            return Verdict::Drop(DropReason::UnknownFlow);
        }
        match role {
            PortRole::Client => {
                let Some(bi) = self.pick_backend(seg.key.src, seg.key.sport) else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                let be = self.config.backends[bi];
                let orig = seg.key;
                let reply = FlowKey {
                    src: be.addr.octets(),
                    dst: seg.key.src,
                    sport: seg.key.dport,
                    dport: seg.key.sport,
                };
                let mut probes = 0;
                if self.table.lookup(&reply, &mut probes).is_some() {
                    return Verdict::Drop(DropReason::FlowConflict);
                }
                let Some(fi) = self.insert_or_reclaim(FlowKind::Nat, orig, reply, now_ms, p.sink)
                else {
                    return Verdict::Drop(DropReason::TableFull);
                };
                p.meter.table_entry(1);
                if let Some(c) = self.counters.sprayed.get_mut(bi) {
                    *c += 1;
                }
                if let Some(f) = self.table.get_mut(fi) {
                    f.backend = bi as u8;
                    f.ports = [port, be.port];
                }
                self.nat_plain(fi, Dir::Orig, port, now_ms, seg, p)
            }
            PortRole::Backend => {
                let dst = Ipv4Address::from_octets(seg.key.dst);
                let Some(out) = self.route_between_nodes(port, dst) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let mut probes = 0;
                if self
                    .table
                    .lookup(&seg.key.reversed(), &mut probes)
                    .is_some()
                {
                    return Verdict::Drop(DropReason::FlowConflict);
                }
                let Some(fi) = self.insert_or_reclaim(
                    FlowKind::Routed,
                    seg.key,
                    seg.key.reversed(),
                    now_ms,
                    p.sink,
                ) else {
                    return Verdict::Drop(DropReason::TableFull);
                };
                p.meter.table_entry(1);
                self.counters.tracked_routed += 1;
                if let Some(f) = self.table.get_mut(fi) {
                    f.ports = [port, out.port];
                }
                self.routed_plain(fi, Dir::Orig, port, now_ms, seg, p)
            }
        }
    }

    /// Inserts a flow; a full table first recycles one in TIME-WAIT (bounded search).
    fn insert_or_reclaim<S: Sink + ?Sized>(
        &mut self,
        kind: FlowKind,
        orig: FlowKey,
        reply: FlowKey,
        now_ms: u32,
        sink: &mut S,
    ) -> Option<usize> {
        match self.table.insert(kind, orig, reply, now_ms) {
            Ok(fi) => Some(fi),
            Err(_) if self.reclaim_flow(sink) => self.table.insert(kind, orig, reply, now_ms).ok(),
            Err(_) => None,
        }
    }

    /// A NAT flow that was never handed off: DNAT towards the node, SNAT back to the VIP.
    fn nat_plain<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        fi: usize,
        dir: Dir,
        port: PortId,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        self.track(fi, dir, port, now_ms, seg);
        // Only the keys and ports are needed here: no copy of the whole record.
        let Some((keys, ports)) = self.table.get(fi).map(|f| (f.keys, f.ports)) else {
            return Verdict::Drop(DropReason::UnknownFlow);
        };
        let f = Keys { keys, ports };
        p.meter.step(Step::Rewrite);
        let Some(mut rw) = Rw::new(p.frame, p.meta.csum) else {
            return Verdict::Drop(DropReason::Internal);
        };
        let out = match dir {
            Dir::Orig => {
                let be = Ipv4Address::from_octets(f.keys[1].src);
                rw.dst(be);
                Out {
                    port: f.ports[1],
                    next_hop: be,
                }
            }
            Dir::Reply => {
                rw.src(Ipv4Address::from_octets(f.keys[0].dst));
                Out {
                    port: f.ports[0],
                    next_hop: Ipv4Address::from_octets(f.keys[0].src),
                }
            }
        };
        rw.ttl_dec();
        rw.finish(p.meter);
        if !self.set_macs(p.frame, &out, p.sink) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    /// A connection between two nodes that is not a hand-off leg: routed unchanged.
    fn routed_plain<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        fi: usize,
        dir: Dir,
        port: PortId,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        self.track(fi, dir, port, now_ms, seg);
        let Some(f) = self.table.get(fi).copied() else {
            return Verdict::Drop(DropReason::UnknownFlow);
        };
        let out_port = f.ports[dir.other().index()];
        p.meter.step(Step::Rewrite);
        let Some(mut rw) = Rw::new(p.frame, p.meta.csum) else {
            return Verdict::Drop(DropReason::Internal);
        };
        rw.ttl_dec();
        rw.finish(p.meter);
        let out = Out {
            port: out_port,
            next_hop: Ipv4Address::from_octets(seg.key.dst),
        };
        // A reset connection between two nodes outside any session goes at once: nothing of
        // it is translated, the RST is passed on, and a late segment of it is dropped as
        // unknown (the nodes' own stacks would only reset it again). A refused hand-off's
        // new leg, closed by the proxy with an RST, so costs the table nothing lasting.
        if seg.rst && f.state == TcpState::TimeWait && f.link == 0 {
            self.counters.closed += 1;
            self.event(FlowEvent::RoutedReset);
            self.table.remove(fi);
        }
        if !self.set_macs(p.frame, &out, p.sink) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }
}

mod handoff;
