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
    EthernetRepr, Ipv4Address, Ipv4Packet,
};

use crate::checksum::{self, Kind};
use crate::config::{Config, ConfigError, MAX_BACKENDS, PortId, PortRole};
use crate::counters::{Counters, DropReason, FlowEvent, Generated, LocalKind};
use crate::meter::{Meter, Step};
use crate::seq::SeqNumber;
use crate::splice::{
    self, Binding, Event, Phase, Replay, ReplayState, SessionSlot, Teardown, TeardownEvent,
};
use crate::spray::Spray;
use crate::table::{
    self, Dir, FlowKey, FlowKind, FlowSlot, FlowTable, Hashed, IndexSlot, TcpState, dirflag,
};
use crate::time::Instant;
use crate::wire::control::{self, ReplyCode, ReplyRepr, RequestRepr};
use crate::wire::field::{self, ethernet, ipv4};

mod accept;
mod classify;
mod handoff;
mod neighbors;
mod parse;
mod rewrite;
mod track;

use neighbors::Neighbors;
use parse::{L3, Seg};
use rewrite::Rw;
use track::Reuse;

const ETH_LEN: usize = ethernet::LEN;
/// An Ethernet/IPv4 ARP packet (RFC 826): the only kind the parser accepts.
const ARP_IPV4_LEN: usize = 28;
const IP_LEN: usize = ipv4::LEN;
const TCP_AT: usize = field::frame::L4;
/// Largest frame the switch generates.
pub const MAX_GENERATED: usize = 128;
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

/// One frame on its way through the pipeline: its bytes, how its checksum arrived, where the
/// frames the switch generates go, and what records the work. Passed down as one argument.
struct Pkt<'p, S: ?Sized, M: ?Sized> {
    frame: &'p mut [u8],
    meta: FrameMeta,
    sink: &'p mut S,
    meter: &'p mut M,
}

/// The sink of one frame's processing, telling the meter of every frame the switch generates
/// on the way (faked ACKs and FINs, resets, ARP requests): a generated frame costs the engine
/// that made it, and the simulator charges it there.
struct Metered<'x, S: ?Sized, M: ?Sized> {
    sink: &'x mut S,
    meter: &'x mut M,
}

impl<S: Sink + ?Sized, M: Meter + ?Sized> Sink for Metered<'_, S, M> {
    #[inline]
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.meter.generated(frame.len() as u32);
        self.sink.emit(port, frame)
    }
}

/// `p`'s sink, metered (a macro, so that `p.frame` can be borrowed beside it).
macro_rules! metered {
    ($p:expr) => {
        &mut Metered {
            sink: &mut *$p.sink,
            meter: &mut *$p.meter,
        }
    };
}
pub(super) use metered;

/// Most frames [`Switch::process_burst`] takes at once.
pub const BURST: usize = 32;

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
    /// The first free session slot + 1 (0 = none); free slots chain through `next_free`.
    session_free: u32,
    spray: Spray,
    neighbors: Neighbors,
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
        let n = sessions.len();
        for (i, s) in sessions.iter_mut().enumerate() {
            *s = SessionSlot {
                next_free: if i + 1 < n { i as u32 + 2 } else { 0 },
                ..SessionSlot::default()
            };
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
            session_free: 1,
            spray,
            neighbors: Neighbors::default(),
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
            acc ^= self.prefetch(f);
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

    /// The first pass of [`Switch::process_burst`] for one frame, for callers that keep their
    /// own loop (to send each frame's output before the next is processed): reads the index
    /// and flow slots a TCP frame's lookup will need and returns a value made from them, which
    /// the caller passes to [`core::hint::black_box`] once for the batch. Changes nothing.
    #[inline]
    pub fn prefetch(&self, frame: &[u8]) -> u32 {
        parse::tcp_key_hint(frame).map_or(0, |key| self.table.touch(&key))
    }

    /// Stage 1 for every frame: the Ethernet header decides between ARP and IPv4.
    fn process_inner<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        p.meter.step(Step::Parse);
        let Some(pc) = self.config.ports.get(port as usize) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let l3 = match parse::ethernet(p.frame, pc.mac) {
            Ok(l3) => l3,
            Err(r) => return Verdict::Drop(r),
        };
        p.meter.bytes_read(ethernet::LEN as u32);
        match l3 {
            L3::Arp => self.arp(port, p.frame, p.sink, p.meter),
            L3::Ipv4 => self.ipv4(port, now, p),
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
                if up && self.neighbors.get(b.addr.octets()).is_none() {
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
        self.free_session(s);
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

    /// Clears session slot `s` and puts it on the free list.
    pub(super) fn free_session(&mut self, s: usize) {
        let head = self.session_free;
        // Only a slot in use: a free one is on the list already (twice would hand it out twice).
        let Some(sess) = self.sessions.get_mut(s).filter(|x| x.in_use) else {
            return;
        };
        self.sessions_used = self.sessions_used.saturating_sub(1);
        *sess = SessionSlot {
            next_free: head,
            ..SessionSlot::default()
        };
        self.session_free = s as u32 + 1;
    }

    /// Takes a free session slot off the free list (marked in use by the caller).
    pub(super) fn take_free_session(&mut self) -> Option<usize> {
        let s = self.session_free.checked_sub(1)? as usize;
        let next = self.sessions.get(s).filter(|x| !x.in_use)?.next_free;
        self.session_free = next;
        Some(s)
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

    // ----------------------------------------------------------------------------------------
    // ARP and neighbors.

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
        meter.bytes_read(ARP_IPV4_LEN as u32);
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if pc.contains(source_protocol_addr) {
            self.neighbors
                .learn(source_protocol_addr.octets(), source_hardware_addr.0);
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
    #[inline]
    fn set_macs<S: Sink + ?Sized>(&mut self, frame: &mut [u8], out: &Out, sink: &mut S) -> bool {
        let Some(my_mac) = self.config.ports.get(out.port as usize).map(|pc| pc.mac) else {
            return false;
        };
        let Some(mac) = self.neighbors.get(out.next_hop.octets()) else {
            self.arp_request(out.port, out.next_hop, sink);
            return false;
        };
        // Destination then source: the first 12 bytes (the parser has checked the length).
        let Some(hdr) = frame.first_chunk_mut::<12>() else {
            return false;
        };
        hdr[..6].copy_from_slice(mac.as_bytes());
        hdr[6..].copy_from_slice(my_mac.as_bytes());
        true
    }

    // ----------------------------------------------------------------------------------------
    // IPv4.

    fn ipv4<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let verify = self.config.verify_checksums;
        let ip = match parse::ipv4(p.frame, verify) {
            Ok(ip) => ip,
            Err(r) => return Verdict::Drop(r),
        };
        p.meter.bytes_read(ipv4::LEN as u32);
        if verify {
            p.meter.checksum_words(ipv4::LEN as u32 / 2);
        }
        if ip.proto == ipv4::PROTO_TCP {
            // TCP classifies after the lookup: a known flow's packet needs no classification.
            if ip.ttl <= 1 {
                return Verdict::Drop(DropReason::TtlExpired);
            }
            return self.tcp(port, now, &ip, p);
        }
        p.meter.step(Step::Classify);
        let Some(pc) = self.config.ports.get(port as usize) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if !self.source_allowed(pc, ip.src) {
            return Verdict::Drop(DropReason::SrcSpoofed);
        }
        if ip.proto == ipv4::PROTO_UDP {
            return self.udp(port, now, &ip, p);
        }
        // Other protocols (ICMP) are routed between back-end nodes only.
        let Some(out) = self.route_between_nodes(port, Ipv4Address::from_octets(ip.dst)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if ip.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        self.forward_plain(p.frame, out, p.sink, p.meter)
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
        if !self.set_macs(frame, &out, &mut Metered { sink, meter }) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    // ----------------------------------------------------------------------------------------
    // UDP: control messages to the switch, or routed between nodes.

    fn udp<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        ip: &parse::Ip,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let udp = match parse::udp(p.frame, ip) {
            Ok(u) => u,
            Err(r) => return Verdict::Drop(r),
        };
        p.meter.bytes_read(field::udp::LEN as u32);
        let dst = Ipv4Address::from_octets(ip.dst);
        let is_control = udp.dport == self.config.control_port;
        // A control message from the client side is refused whichever of the switch's
        // gateway addresses it names (docs/protocol.md, acceptance rule 1).
        if is_control
            && self.config.ports.get(port as usize).map(|c| c.role) == Some(PortRole::Client)
            && self.config.ports.iter().any(|c| c.gateway == dst)
        {
            return Verdict::Drop(DropReason::ControlWrongPort);
        }
        if self.owns(port, dst) {
            let Some(pc) = self.config.ports.get(port as usize) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            if !is_control || dst != pc.gateway {
                return Verdict::Drop(DropReason::VipNotServed);
            }
            if pc.role != PortRole::Backend {
                return Verdict::Drop(DropReason::ControlWrongPort);
            }
            if self.config.verify_checksums && p.meta.csum == Kind::Full && udp.checksum != 0 {
                p.meter.checksum_words(udp.datagram.len() as u32 / 2 + 6);
                if !checksum::transport_ok(ip.src, ip.dst, ipv4::PROTO_UDP, udp.datagram) {
                    return Verdict::Drop(DropReason::UdpBadChecksum);
                }
            }
            let mut payload = [0u8; control::REQUEST_LEN];
            // The UDP length field equals the datagram's length (checked by the parser), so
            // the payload is everything after the header.
            let Some(body) = udp
                .datagram
                .get(field::udp::LEN..)
                .filter(|b| b.len() == control::REQUEST_LEN)
            else {
                return Verdict::Drop(DropReason::ControlMalformed);
            };
            payload.copy_from_slice(body);
            return self.control(
                port,
                table::millis(now),
                Ipv4Address::from_octets(ip.src),
                udp.sport,
                &payload,
                p.sink,
                p.meter,
            );
        }
        let Some(out) = self.route_between_nodes(port, dst) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if ip.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExpired);
        }
        self.forward_plain(p.frame, out, p.sink, p.meter)
    }

    // ----------------------------------------------------------------------------------------
    // TCP.

    /// A TCP segment: parse, lookup, classify (only a segment no flow holds on this port),
    /// then the flow's own path: plain NAT, routed, or spliced.
    fn tcp<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now: Instant,
        ip: &parse::Ip,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let verify = self.config.verify_checksums && p.meta.csum == Kind::Full;
        let mut seg = Seg::default();
        if let Err(r) = parse::tcp(p.frame, ip, verify, &mut seg) {
            return Verdict::Drop(r);
        }
        p.meter
            .bytes_read((ip.l4_len as u32).saturating_sub(seg.len));
        p.meter.option_bytes(seg.opts.walked as u32);
        if verify {
            p.meter.checksum_words(ip.l4_len as u32 / 2 + 6);
        }
        p.meter.step(Step::Lookup);
        let mut probes = 0;
        let hk = self.table.hashed(&seg.key);
        let found = self.table.lookup_hashed(&hk, &mut probes);
        p.meter.table_probe(probes);
        // The common cases first: an acknowledgment or data segment, on the port its
        // direction uses, of an established NAT flow that was never handed off or of a
        // spliced flow. Everything the general path below checks is then settled (no SYN, so
        // no reuse; no RST; an abort matters only outside a session), so it goes straight to
        // validate and the flow's own path.
        if let Some((fi, dir)) = found
            && let Some(flow) = self.table.get(fi)
            && seg.plain()
            && flow.ports[dir.index()] == port
        {
            let nat = flow.link == 0
                && flow.kind == FlowKind::Nat
                && flow.state == TcpState::Established
                && !flow.dirs[dir.index()].has(dirflag::ABORTED);
            if nat || flow.link != 0 {
                p.meter.table_entry(1);
                p.meter.step(Step::Decide);
                if let Some(r) = flow.validate(dir, &seg) {
                    return Verdict::Drop(r);
                }
                let now_ms = table::millis(now);
                return match flow.session() {
                    None => self.nat_plain(fi, dir, port, now_ms, &seg, p),
                    Some(s) => self.spliced(s, fi, dir, now_ms, &seg, p),
                };
            }
        }
        let Some(pc) = self.config.ports.get(port as usize) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let role = pc.role;
        let now_ms = table::millis(now);
        let Some((fi, dir)) = found else {
            p.meter.step(Step::Classify);
            if let Err(r) = self.classify_tcp(pc, &seg.key) {
                return Verdict::Drop(r);
            }
            p.meter.step(Step::Decide);
            // A FIN between two nodes on a connection the switch no longer holds: a retired
            // hand-off leg whose old node resends its FIN because the answer was lost.
            if seg.fin()
                && !seg.syn()
                && !seg.rst()
                && self
                    .route_between_nodes(port, Ipv4Address::from_octets(seg.key.dst))
                    .is_some()
            {
                // No entry is left to say whether the connection had timestamps: a node puts one
                // on its FIN only if it negotiated them.
                self.answer_late_fin(port, &seg, true, metered!(p));
                return Verdict::Local(LocalKind::TeardownAbsorbed);
            }
            return self.new_flow(port, role, now_ms, &seg, hk, p);
        };
        p.meter.table_entry(1);
        let (reuse, verdict, session, kind, aborted) = {
            let Some(flow) = self.table.get(fi) else {
                return Verdict::Drop(DropReason::UnknownFlow);
            };
            let me = &flow.dirs[dir.index()];
            if flow.ports[dir.index()] != port {
                // Not the port this direction uses: classified like an unknown segment first.
                p.meter.step(Step::Classify);
                if let Err(r) = self.classify_tcp(pc, &seg.key) {
                    return Verdict::Drop(r);
                }
                if me.has(dirflag::SYN) {
                    return Verdict::Drop(DropReason::WrongPort);
                }
            }
            p.meter.step(Step::Decide);
            let reuse = if seg.syn() && !seg.ackf() && dir == Dir::Orig {
                flow.reuse(self.tuple_closed(flow), &seg)
            } else {
                Reuse::Open
            };
            // An old node's RST on the leg it opened is checked against its own sequence
            // numbers (`on_old_node_packet`): the target's acknowledgments there also cover the
            // client's bytes, which follow the old node's in the same space.
            let old_node_rst = seg.rst()
                && dir == Dir::Orig
                && flow.kind == FlowKind::Routed
                && flow.session().is_some();
            let verdict = if old_node_rst || reuse != Reuse::Open {
                None
            } else {
                flow.validate(dir, &seg)
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
                self.remove_closed(fi, metered!(p));
                self.event(FlowEvent::Reopened);
                return self.new_flow(port, role, now_ms, &seg, hk, p);
            }
        }
        if let Some(r) = verdict {
            return Verdict::Drop(r);
        }
        if session.is_none() && aborted {
            self.track(fi, dir, port, now_ms, &seg);
            if !seg.rst() {
                self.answer_aborted(port, &seg, metered!(p));
            }
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        match (session, kind) {
            (None, FlowKind::Nat) => self.nat_plain(fi, dir, port, now_ms, &seg, p),
            (None, _) => self.routed_plain(fi, dir, port, now_ms, &seg, p),
            (Some(s), _) => self.spliced(s, fi, dir, now_ms, &seg, p),
        }
    }

    /// Stage 4 for flow `fi` (see [`FlowSlot::track`]).
    #[inline]
    fn track(&mut self, fi: usize, dir: Dir, port: PortId, now_ms: u32, seg: &Seg) {
        if let Some(f) = self.table.get_mut(fi) {
            f.track(dir, port, now_ms, seg);
        }
    }

    /// Whether a tuple's connection is closed: the flow (for a leg of a splice session, the
    /// session's client connection) is in TIME-WAIT.
    fn tuple_closed(&self, f: &FlowSlot) -> bool {
        match f.session() {
            None => f.state == TcpState::TimeWait,
            Some(s) => self
                .anchor_of(s)
                .and_then(|a| self.table.get(a))
                .is_some_and(|c| c.state == TcpState::TimeWait),
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
        orig: Hashed,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        if !seg.syn() || seg.ackf() {
            return Verdict::Drop(DropReason::UnknownFlow);
        }
        match role {
            PortRole::Client => {
                let Some(bi) = self.pick_backend(seg.key.src, seg.key.sport) else {
                    return Verdict::Drop(DropReason::NoBackend);
                };
                let be = self.config.backends[bi];
                let reply = self.table.hashed(&FlowKey {
                    src: be.addr.octets(),
                    dst: seg.key.src,
                    sport: seg.key.dport,
                    dport: seg.key.sport,
                });
                let mut probes = 0;
                if self.table.lookup_hashed(&reply, &mut probes).is_some() {
                    return Verdict::Drop(DropReason::FlowConflict);
                }
                let Some(fi) =
                    self.insert_or_reclaim(FlowKind::Nat, orig, reply, now_ms, metered!(p))
                else {
                    return Verdict::Drop(DropReason::TableFull);
                };
                p.meter.table_entry(1);
                if let Some(c) = self.counters.sprayed.get_mut(bi) {
                    *c += 1;
                }
                if let Some(c) = self
                    .config
                    .service(seg.key.dport)
                    .and_then(|(i, _)| self.counters.sprayed_by_service.get_mut(i))
                {
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
                let reply = self.table.hashed(&seg.key.reversed());
                if self.table.lookup_hashed(&reply, &mut probes).is_some() {
                    return Verdict::Drop(DropReason::FlowConflict);
                }
                let Some(fi) =
                    self.insert_or_reclaim(FlowKind::Routed, orig, reply, now_ms, metered!(p))
                else {
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
        orig: Hashed,
        reply: Hashed,
        now_ms: u32,
        sink: &mut S,
    ) -> Option<usize> {
        match self.table.insert_hashed(kind, orig, reply, now_ms) {
            Ok(fi) => Some(fi),
            Err(_) if self.reclaim_flow(sink) => {
                self.table.insert_hashed(kind, orig, reply, now_ms).ok()
            }
            Err(_) => None,
        }
    }

    /// A NAT flow that was never handed off: DNAT towards the node, SNAT back to the VIP.
    #[inline]
    fn nat_plain<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        fi: usize,
        dir: Dir,
        port: PortId,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        // Tracked, then only the keys and ports are needed: no copy of the whole record.
        let Some((keys, ports)) = self.table.get_mut(fi).map(|f| {
            f.track(dir, port, now_ms, seg);
            (f.keys, f.ports)
        }) else {
            return Verdict::Drop(DropReason::UnknownFlow);
        };
        let f = Keys { keys, ports };
        p.meter.step(Step::Rewrite);
        let Some(mut rw) = Rw::new(p.frame, p.meta.csum, p.meter) else {
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
        rw.finish();
        if !self.set_macs(p.frame, &out, metered!(p)) {
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
        let Some(mut rw) = Rw::new(p.frame, p.meta.csum, p.meter) else {
            return Verdict::Drop(DropReason::Internal);
        };
        rw.ttl_dec();
        rw.finish();
        let out = Out {
            port: out_port,
            next_hop: Ipv4Address::from_octets(seg.key.dst),
        };
        // A reset connection between two nodes outside any session goes at once: nothing of
        // it is translated, the RST is passed on, and a late segment of it is dropped as
        // unknown (the nodes' own stacks would only reset it again). A refused hand-off's
        // new leg, closed by the proxy with an RST, so costs the table nothing lasting.
        if seg.rst() && f.state == TcpState::TimeWait && f.link == 0 {
            self.counters.closed += 1;
            self.event(FlowEvent::RoutedReset);
            self.table.remove(fi);
        }
        if !self.set_macs(p.frame, &out, metered!(p)) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }
}
