//! The stateful harness: a switch, a model of the hosts, and the invariants checked after every
//! step.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::vec::Vec;

use knits_core::checksum::Kind;
use knits_core::config::{MAX_PORTS, PortId, SprayPolicy};
use knits_core::counters::{DropReason, LocalKind};
use knits_core::meter::NoMeter;
use knits_core::splice::{Binding, Phase, SessionSlot};
use knits_core::switch::{FrameMeta, MAX_GENERATED, Storage, Switch, Verdict};
use knits_core::table::{Dir, FlowKey, FlowKind, FlowSlot, IndexSlot, dirflag};
use knits_core::time::Instant;
use knits_core::wire::control::{Endpoint, Reply, ReplyCode, RequestRepr};

use super::cluster::{
    A_CLIENT, A_N1, A_VIP, ADDRS, KEY, P_80, P_C1, P_L1, PORTS, SPOOF_GUARD, WRONG_KEY, config, ip,
    port_of, spoofed_tcp,
};
use super::frame::{
    TcpSeen, arp_frame, control_frame, frame_valid, make_partial, parse_tcp, serial_gt, tcp_spec,
};
use super::ops::{At, CtlOp, Macro, Op, SYN_OPTS, SegOp, VIP, at, node};
use crate::frames::{F_ACK, F_FIN, F_PSH, F_RST, F_SYN};
use crate::sink::VecSink;
use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol,
    Ipv4Address, Ipv4Packet, UdpPacket,
};

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
