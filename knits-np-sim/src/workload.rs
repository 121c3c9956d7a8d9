//! Synthetic workloads: real TCP exchanges between a client and back-end nodes, through the real
//! knits-core switch, recorded as meter traces.
//!
//! Every frame is built with smoltcp's `Repr::emit` (Ethernet, IPv4, TCP or UDP, ARP) and fed to
//! `Switch::process` with a [`TraceMeter`]. What the switch forwards, and what it generates into
//! its sink (ARP replies, control replies, faked FINs and ACKs), is delivered to the host behind
//! the port, whose small TCP and proxy logic answers as a real one would. So the mix of SYN, data,
//! ACK, FIN and control packets, and the switch's work on each, come from running the protocol,
//! not from a table.
//!
//! Addresses follow `Config::cluster(n, key)`: client 198.18.0.2 on port 0, VIP 198.18.0.10:80,
//! node N = 198.19.N.2 on port N, control messages to 198.19.N.1:7100.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use knits_core::checksum;
use knits_core::config::{Config, PortId};
use knits_core::counters::DropReason;
use knits_core::switch::{FrameMeta, Sink, Storage, Switch, Verdict};
use knits_core::time::Instant;
use knits_core::wire::control::{self, Endpoint, ReplyCode, ReplyRepr, RequestRepr};
use serde::Serialize;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket,
    TcpRepr, TcpSeqNumber, TcpTimestampRepr, UdpPacket, UdpRepr,
};

use crate::rng::Rng;
use crate::trace::{Outcome, TraceMeter, TraceSet};

/// The control key the synthetic cluster shares between switch and nodes.
pub const KEY: control::Key = *b"knits-np-sim-key";
/// The VIP's TCP port.
const HTTP: u16 = 80;
/// Source port of nodes' control messages.
const CONTROL_SRC: u16 = 7101;

/// The paper's scenarios (section V), by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Plain routing between two back-end ports, no NAT.
    Forward,
    /// Plain IPv4 forwarding of minimum-size ICMP packets between back-end nodes: route
    /// lookup, TTL, header checksum, MAC rewrite (what Spalink et al. measured on the
    /// IXP1200); no flow is tracked.
    IpForward,
    /// Spray and NAT, no hand-off: the switch has no control key, so no node can ask for one.
    Nat,
    /// KNITS with hand-offs possible, none requested.
    Knits,
    /// Every connection handed off once (its first request).
    Handoff1,
    /// Every connection handed off twice (its first two requests).
    Handoff2,
}

impl Scenario {
    /// All scenarios, in the paper's order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Forward,
        Scenario::IpForward,
        Scenario::Nat,
        Scenario::Knits,
        Scenario::Handoff1,
        Scenario::Handoff2,
    ];

    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Forward => "forward",
            Scenario::IpForward => "ip-forward",
            Scenario::Nat => "nat",
            Scenario::Knits => "knits",
            Scenario::Handoff1 => "handoff-1",
            Scenario::Handoff2 => "handoff-2",
        }
    }

    /// A scenario by name.
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.iter().copied().find(|x| x.name() == s)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    /// The scenario.
    pub scenario: Scenario,
    /// PRNG seed (ISNs, ports, sizes, hand-off targets).
    pub seed: u64,
    /// Client connections to run (each a distinct flow).
    pub connections: u32,
    /// Connections open at once (their packets interleave).
    pub concurrency: u32,
    /// HTTP requests per connection.
    pub requests: u32,
    /// Send all requests at once (pipelined) instead of one per response.
    pub pipelined: bool,
    /// Bytes per request.
    pub request_bytes: u32,
    /// Response sizes, uniform in `min..=max` bytes.
    pub response_bytes: (u32, u32),
    /// Share of connections with 0, 1 and 2 hand-offs (normalised).
    pub handoff_share: [f64; 3],
    /// Share of the flow table filled with idle connections before the measured traffic.
    pub occupancy: f64,
    /// Flow-table capacity (connection records).
    pub flow_capacity: u32,
    /// Minimum-size frames: no TCP options, MSS 6, so every frame is 60 bytes (64 with FCS).
    pub min_frames: bool,
    /// MSS of every connection (ignored with `min_frames`).
    pub mss: u16,
    /// Back-end nodes (2..=15).
    pub backends: u8,
}

impl Spec {
    /// The defaults of a scenario.
    pub fn scenario(s: Scenario) -> Spec {
        let handoff_share = match s {
            Scenario::Handoff1 => [0.0, 1.0, 0.0],
            Scenario::Handoff2 => [0.0, 0.0, 1.0],
            _ => [1.0, 0.0, 0.0],
        };
        Spec {
            scenario: s,
            seed: 1,
            connections: 2000,
            concurrency: 64,
            requests: 2,
            pipelined: true,
            request_bytes: 120,
            response_bytes: (1000, 8000),
            handoff_share,
            occupancy: 0.25,
            flow_capacity: 32768,
            min_frames: false,
            mss: 1460,
            backends: 3,
        }
    }

    /// Checks ranges; the error says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("connections must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.requests == 0 || self.requests > 1000 {
            return Err("requests per connection must be in 1..=1000".into());
        }
        if self.request_bytes == 0 || self.request_bytes > 1 << 20 {
            return Err("request bytes must be in 1..=1048576".into());
        }
        if self.response_bytes.0 > self.response_bytes.1 || self.response_bytes.1 > 1 << 30 {
            return Err("response bytes: min must not exceed max, max at most 1 GiB".into());
        }
        if !(0.0..=0.95).contains(&self.occupancy) {
            return Err(format!("occupancy {} must be in 0..=0.95", self.occupancy));
        }
        if self.flow_capacity < 64 || self.flow_capacity > 1 << 22 {
            return Err("flow capacity must be in 64..=4194304".into());
        }
        if !(2..=15).contains(&self.backends) {
            return Err("backends must be in 2..=15".into());
        }
        if self
            .handoff_share
            .iter()
            .any(|s| !(s.is_finite() && *s >= 0.0))
            || self.handoff_share.iter().sum::<f64>() <= 0.0
        {
            return Err("hand-off shares must be non-negative with a positive sum".into());
        }
        if self.handoff_share[2] > 0.0 && self.backends < 3 {
            return Err("two hand-offs need at least 3 back-ends".into());
        }
        if !self.min_frames && !(64..=9000).contains(&self.mss) {
            return Err("mss must be in 64..=9000".into());
        }
        let per_conn = 1 + self.handoff_share.iter().filter(|s| **s > 0.0).count() as u64;
        let ports = (self.occupancy * self.flow_capacity as f64) as u64 + self.connections as u64;
        if ports > 60_000 {
            return Err(format!(
                "{ports} client connections (preloaded + measured) exceed the client's port space; \
                 lower --connections, --occupancy or --flow-capacity"
            ));
        }
        let need = (self.occupancy * self.flow_capacity as f64) as u64
            + self.connections as u64 * per_conn;
        if need > self.flow_capacity as u64 {
            return Err(format!(
                "the flow table needs about {need} records but holds {}; raise --flow-capacity or \
                 lower --occupancy or --connections",
                self.flow_capacity
            ));
        }
        Ok(())
    }

    fn mss_eff(&self) -> u16 {
        if self.min_frames { 6 } else { self.mss }
    }
}

/// What happened while generating: the switch's verdicts and the protocol's outcome.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Frames fed to the switch and recorded.
    pub packets: u64,
    /// Verdicts by name (`forward`, `local:arp`, `drop:unknown_flow`, ...).
    pub verdicts: BTreeMap<String, u64>,
    /// Frames the switch generated, by kind.
    pub generated: BTreeMap<String, u64>,
    /// Measured connections that completed (all responses received, closed).
    pub completed: u64,
    /// Measured connections that stalled (a frame they needed never came).
    pub stalled: u64,
    /// Hand-offs requested by nodes.
    pub handoffs_requested: u64,
    /// Hand-offs accepted by the switch.
    pub handoffs_accepted: u64,
    /// Hand-offs refused, by reply code.
    pub handoffs_refused: BTreeMap<String, u64>,
    /// Frames delivered to a host with a bad IP or TCP checksum (must be 0).
    pub bad_checksums: u64,
    /// Frames delivered to a host that had no use for them (no connection, wrong address).
    pub stray: u64,
    /// Response bytes the clients received.
    pub response_bytes: u64,
    /// Idle connections preloaded into the flow table.
    pub preloaded: u64,
    /// Flow-table records in use after the run / capacity.
    pub flows_in_use: (usize, usize),
}

impl Report {
    /// Drops of one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.verdicts
            .get(&format!("drop:{}", r.name()))
            .copied()
            .unwrap_or(0)
    }

    /// Drops of all reasons.
    pub fn total_drops(&self) -> u64 {
        self.verdicts
            .iter()
            .filter(|(k, _)| k.starts_with("drop:"))
            .map(|(_, v)| v)
            .sum()
    }
}

/// An error while generating (a switch that cannot be built from the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadError(pub String);

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WorkloadError {}

/// A sink that keeps the generated frames for delivery.
#[derive(Debug, Default)]
pub struct VecSink(pub Vec<(PortId, Vec<u8>)>);

impl Sink for VecSink {
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.0.push((port, frame.to_vec()));
        true
    }
}

/// Builds a switch for `cfg` with std vectors as its storage.
pub fn build_switch(
    cfg: Config,
    flows: usize,
    sessions: usize,
) -> Result<Switch<'static>, WorkloadError> {
    let storage = Storage {
        flows: vec![knits_core::table::FlowSlot::default(); flows].into(),
        index: vec![knits_core::table::IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![knits_core::splice::SessionSlot::default(); sessions.max(1)].into(),
    };
    Switch::new(cfg, storage).map_err(|e| WorkloadError(format!("switch configuration: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Frames.

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

fn eth_frame(
    src: EthernetAddress,
    dst: EthernetAddress,
    ethertype: EthernetProtocol,
    body_len: usize,
) -> Vec<u8> {
    let mut buf = vec![0u8; (14 + body_len).max(60)];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut eth);
    buf
}

fn tcp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    repr: &TcpRepr,
) -> Vec<u8> {
    let tcp_len = repr.buffer_len();
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Ipv4, 20 + tcp_len);
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp_len,
        hop_limit: 64,
    };
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut ipp, &caps());
    let mut tcp = TcpPacket::new_unchecked(ipp.payload_mut());
    repr.emit(
        &mut tcp,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps(),
    );
    buf
}

fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Ipv4, 20 + udp_len);
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
    };
    let mut ipp = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut ipp, &caps());
    let mut udp = UdpPacket::new_unchecked(ipp.payload_mut());
    UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    }
    .emit(
        &mut udp,
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps(),
    );
    buf
}

fn arp_frame(src_mac: EthernetAddress, dst_mac: EthernetAddress, repr: ArpRepr) -> Vec<u8> {
    let mut buf = eth_frame(src_mac, dst_mac, EthernetProtocol::Arp, repr.buffer_len());
    let mut arp = ArpPacket::new_unchecked(&mut buf[14..14 + repr.buffer_len()]);
    repr.emit(&mut arp);
    buf
}

// ---------------------------------------------------------------------------------------------
// Hosts and a small TCP.

#[derive(Debug, Clone)]
struct Host {
    ip: Ipv4Address,
    mac: EthernetAddress,
    port: PortId,
    gw: Ipv4Address,
    gw_mac: EthernetAddress,
    /// TSval offset: every host's clock differs, as the paper's timestamp rewriting assumes.
    ts_offset: u32,
    next_port: u16,
    control_counter: u64,
    /// (local port, remote address, remote port) -> TCB.
    tcbs: HashMap<(u16, [u8; 4], u16), usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    SynSent,
    SynRcvd,
    Established,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The client side of a measured or preloaded connection.
    Client,
    /// A node serving a stream (the held connection of a hop).
    Server,
    /// A node's new leg towards a hand-off target.
    Leg,
}

#[derive(Debug, Clone)]
struct Tcb {
    host: usize,
    lport: u16,
    rip: Ipv4Address,
    rport: u16,
    role: Role,
    conn: usize,
    st: St,
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ts: bool,
    ts_recent: u32,
    mss: u16,
    /// Bytes the application queued and TCP has not sent yet.
    tx: u64,
    /// Send a FIN once `tx` is drained.
    close: bool,
    fin_sent: bool,
    fin_rcvd: bool,
    /// In-order payload bytes received.
    rx: u64,
    unacked_segs: u32,
}

const WINDOW: u32 = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopState {
    Serving,
    /// Waiting for its responses to be acknowledged before it hands off request `r`.
    WaitAcked,
    /// The new leg is opening.
    Opening,
    /// The control request is out.
    Requested,
    /// Handed off; this hop is done.
    Retired,
}

#[derive(Debug, Clone)]
struct Hop {
    node: usize,
    held: usize,
    /// Index of the first request in this hop's stream.
    first_req: u32,
    /// Requests of the stream this hop dealt with (served or handed off).
    handled: u32,
    state: HopState,
    leg: Option<usize>,
    counter: u64,
}

#[derive(Debug, Clone)]
struct Conn {
    measured: bool,
    handoffs: u8,
    responses: Vec<u32>,
    client: usize,
    /// Node host indices in the order they will serve (for hand-off targets).
    route: Vec<usize>,
    hops: Vec<Hop>,
    client_sent: u32,
    done: bool,
}

/// Addresses, ports and a protocol tag: what tells flows apart for the completion unit.
type FlowTuple = ([u8; 4], [u8; 4], u16, u16, u8);

/// The generator: hosts, connections and the switch they talk through.
struct Driver {
    spec: Spec,
    rng: Rng,
    sw: Switch<'static>,
    sink: VecSink,
    meter: TraceMeter,
    hosts: Vec<Host>,
    tcbs: Vec<Tcb>,
    conns: Vec<Conn>,
    wire: VecDeque<(PortId, Vec<u8>)>,
    now_us: i64,
    recording: bool,
    traces: TraceSet,
    flow_ids: HashMap<FlowTuple, u32>,
    report: Report,
    /// Control counter -> (connection, hop).
    pending_control: HashMap<(usize, u64), (usize, usize)>,
    /// (address, port) of a connection's opener (client or hand-off leg) -> connection.
    by_opener: HashMap<([u8; 4], u16), usize>,
    /// Every frame fed to the switch, when capturing.
    capture: Option<Vec<(PortId, Vec<u8>)>>,
}

fn mac_of(host: usize) -> EthernetAddress {
    EthernetAddress([0x02, 0x00, 0x00, 0x00, host as u8, 0x02])
}

impl Driver {
    fn new(spec: &Spec) -> Result<Driver, WorkloadError> {
        spec.validate().map_err(WorkloadError)?;
        let mut cfg = Config::cluster(spec.backends as usize, KEY);
        if spec.scenario == Scenario::Nat {
            cfg.keys.clear();
        }
        let mut rng = Rng::new(spec.seed);
        let sessions = (spec.connections as usize * 2).max(64);
        let sw = build_switch(cfg.clone(), spec.flow_capacity as usize, sessions)?;
        let mut hosts = Vec::new();
        for (i, p) in cfg.ports.iter().enumerate() {
            let ip = if i == 0 {
                Ipv4Address::new(198, 18, 0, 2)
            } else {
                Ipv4Address::new(198, 19, i as u8, 2)
            };
            hosts.push(Host {
                ip,
                mac: mac_of(i),
                port: i as PortId,
                gw: p.gateway,
                gw_mac: EthernetAddress::BROADCAST,
                ts_offset: rng.next_u32(),
                next_port: if i == 0 { 1024 } else { 40000 },
                control_counter: 1,
                tcbs: HashMap::new(),
            });
        }
        Ok(Driver {
            spec: spec.clone(),
            rng,
            sw,
            sink: VecSink::default(),
            meter: TraceMeter::new(),
            hosts,
            tcbs: Vec::new(),
            conns: Vec::new(),
            wire: VecDeque::new(),
            now_us: 1_000_000,
            recording: false,
            traces: TraceSet::default(),
            flow_ids: HashMap::new(),
            report: Report::default(),
            pending_control: HashMap::new(),
            by_opener: HashMap::new(),
            capture: None,
        })
    }

    // --- the wire -------------------------------------------------------------------------

    fn send(&mut self, host: usize, frame: Vec<u8>) {
        self.wire.push_back((self.hosts[host].port, frame));
    }

    /// Feeds queued frames to the switch and delivers what comes out until nothing moves.
    fn pump_wire(&mut self) {
        while let Some((port, frame)) = self.wire.pop_front() {
            self.process_frame(port, frame);
        }
    }

    /// One frame through the switch, with the meter; delivers what the switch sends on.
    fn process_frame(&mut self, port: PortId, mut frame: Vec<u8>) {
        self.now_us += 1;
        let now = Instant::from_micros(self.now_us);
        if let Some(c) = &mut self.capture {
            c.push((port, frame.clone()));
        }
        let flow = self.flow_of(&frame);
        self.meter.clear();
        let verdict = self.sw.process(
            port,
            now,
            &mut frame[..],
            FrameMeta {
                csum: checksum::Kind::Full,
            },
            &mut self.sink,
            &mut self.meter,
        );
        if self.recording {
            let (outcome, name) = match verdict {
                Verdict::Forward(_) => (Outcome::Forward, "forward".to_string()),
                Verdict::Local(k) => (Outcome::Local, format!("local:{}", k.name())),
                Verdict::Drop(r) => (Outcome::Drop, format!("drop:{}", r.name())),
            };
            let class =
                crate::calibration::class_of(&frame, verdict, self.sink.0.len(), &self.meter.recs);
            self.traces
                .push(port, frame.len(), flow, outcome, &self.meter);
            if let Some(p) = self.traces.packets.last_mut() {
                p.class = class;
            }
            *self.report.verdicts.entry(name).or_default() += 1;
            self.report.packets += 1;
        }
        if let Verdict::Forward(out) = verdict {
            self.deliver(out, &frame);
        }
        if self.now_us % 10_000 == 0 {
            self.sw.poll(now, 1024, &mut self.sink);
        }
        let generated = std::mem::take(&mut self.sink.0);
        for (p, f) in generated {
            self.deliver(p, &f);
        }
    }

    /// A dense flow id: both directions of a 4-tuple, or per address pair for non-TCP.
    fn flow_of(&mut self, frame: &[u8]) -> u32 {
        let mut key = ([0u8; 4], [0u8; 4], 0u16, 0u16, 0u8);
        if let Ok(eth) = EthernetFrame::new_checked(frame) {
            if eth.ethertype() == EthernetProtocol::Ipv4 {
                if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
                    let (s, d) = (ip.src_addr().octets(), ip.dst_addr().octets());
                    let (mut sp, mut dp) = (0, 0);
                    if ip.next_header() == IpProtocol::Tcp
                        && let Ok(t) = TcpPacket::new_checked(ip.payload())
                    {
                        sp = t.src_port();
                        dp = t.dst_port();
                    }
                    key = if (s, sp) <= (d, dp) {
                        (s, d, sp, dp, 6)
                    } else {
                        (d, s, dp, sp, 6)
                    };
                }
            } else {
                key.4 = 1;
                key.0[0] = frame.get(11).copied().unwrap_or(0);
            }
        }
        let next = self.flow_ids.len() as u32;
        *self.flow_ids.entry(key).or_insert(next)
    }

    fn deliver(&mut self, port: PortId, frame: &[u8]) {
        let Some(host) = self.hosts.iter().position(|h| h.port == port) else {
            self.report.stray += 1;
            return;
        };
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.report.stray += 1;
            return;
        };
        match eth.ethertype() {
            EthernetProtocol::Arp => self.on_arp(host, eth.payload()),
            EthernetProtocol::Ipv4 => {
                let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                    self.report.stray += 1;
                    return;
                };
                if !ip.verify_checksum() {
                    self.report.bad_checksums += 1;
                    return;
                }
                if ip.dst_addr() != self.hosts[host].ip {
                    self.report.stray += 1;
                    return;
                }
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                match ip.next_header() {
                    IpProtocol::Tcp => {
                        let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                            self.report.stray += 1;
                            return;
                        };
                        match TcpRepr::parse(
                            &tcp,
                            &IpAddress::Ipv4(src),
                            &IpAddress::Ipv4(dst),
                            &caps(),
                        ) {
                            Ok(repr) => {
                                let payload_len = repr.payload.len();
                                let repr = TcpRepr {
                                    payload: &[],
                                    ..repr
                                };
                                self.on_tcp(host, src, &repr, payload_len, tcp.psh());
                            }
                            Err(_) => self.report.bad_checksums += 1,
                        }
                    }
                    IpProtocol::Udp => {
                        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                            self.report.stray += 1;
                            return;
                        };
                        if !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst)) {
                            self.report.bad_checksums += 1;
                            return;
                        }
                        self.on_control_reply(host, udp.payload());
                    }
                    IpProtocol::Icmp => self.report.completed += 1,
                    _ => self.report.stray += 1,
                }
            }
            _ => self.report.stray += 1,
        }
    }

    fn on_arp(&mut self, host: usize, body: &[u8]) {
        let Ok(p) = ArpPacket::new_checked(body) else {
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&p)
        else {
            return;
        };
        let h = &mut self.hosts[host];
        if source_protocol_addr == h.gw {
            h.gw_mac = source_hardware_addr;
        }
        if operation == ArpOperation::Request && target_protocol_addr == h.ip {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: h.mac,
                source_protocol_addr: h.ip,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let f = arp_frame(h.mac, source_hardware_addr, reply);
            self.send(host, f);
        }
    }

    fn arp_warmup(&mut self) {
        for i in 0..self.hosts.len() {
            let h = &self.hosts[i];
            let req = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: h.mac,
                source_protocol_addr: h.ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: h.gw,
            };
            let f = arp_frame(h.mac, EthernetAddress::BROADCAST, req);
            self.send(i, f);
        }
        self.pump_wire();
    }

    // --- TCP ------------------------------------------------------------------------------

    fn tsval(&self, host: usize) -> u32 {
        self.hosts[host]
            .ts_offset
            .wrapping_add((self.now_us / 1000) as u32)
    }

    fn emit_seg(
        &mut self,
        t: usize,
        control: TcpControl,
        seq: u32,
        payload_len: usize,
        syn_opts: bool,
    ) {
        let tcb = &self.tcbs[t];
        let host = tcb.host;
        let payload = vec![0x61u8; payload_len];
        let ack = if tcb.st == St::SynSent {
            None
        } else {
            Some(TcpSeqNumber(tcb.rcv_nxt as i32))
        };
        let timestamp = if tcb.ts {
            Some(TcpTimestampRepr::new(self.tsval(host), tcb.ts_recent))
        } else {
            None
        };
        let tcb = &self.tcbs[t];
        let repr = TcpRepr {
            src_port: tcb.lport,
            dst_port: tcb.rport,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack,
            window_len: WINDOW as u16,
            window_scale: None,
            max_seg_size: if syn_opts { Some(tcb.mss) } else { None },
            sack_permitted: syn_opts && !self.spec.min_frames,
            sack_ranges: [None, None, None],
            timestamp,
            payload: &payload,
        };
        let h = &self.hosts[host];
        let f = tcp_frame(h.mac, h.gw_mac, h.ip, tcb.rip, &repr);
        self.tcbs[t].unacked_segs = 0;
        self.send(host, f);
    }

    fn send_ack(&mut self, t: usize) {
        let seq = self.tcbs[t].snd_nxt;
        self.emit_seg(t, TcpControl::None, seq, 0, false);
    }

    /// Sends what the window allows, then the FIN if asked for.
    fn pump_tcb(&mut self, t: usize) {
        let mss = self.tcbs[t].mss as u64;
        loop {
            let tcb = &self.tcbs[t];
            if tcb.st != St::Established || tcb.fin_sent {
                return;
            }
            let in_flight = tcb.snd_nxt.wrapping_sub(tcb.snd_una) as u64;
            if tcb.tx > 0 {
                if in_flight + 1 > WINDOW as u64 {
                    return;
                }
                let n = tcb.tx.min(mss).min(WINDOW as u64 - in_flight) as usize;
                let last = n as u64 == tcb.tx;
                let seq = tcb.snd_nxt;
                let control = if last {
                    TcpControl::Psh
                } else {
                    TcpControl::None
                };
                self.emit_seg(t, control, seq, n, false);
                let tcb = &mut self.tcbs[t];
                tcb.snd_nxt = tcb.snd_nxt.wrapping_add(n as u32);
                tcb.tx -= n as u64;
                continue;
            }
            if tcb.close {
                let seq = tcb.snd_nxt;
                self.emit_seg(t, TcpControl::Fin, seq, 0, false);
                let tcb = &mut self.tcbs[t];
                tcb.snd_nxt = tcb.snd_nxt.wrapping_add(1);
                tcb.fin_sent = true;
            }
            return;
        }
    }

    fn new_tcb(
        &mut self,
        host: usize,
        lport: u16,
        rip: Ipv4Address,
        rport: u16,
        role: Role,
        conn: usize,
    ) -> usize {
        let iss = self.rng.next_u32();
        let tcb = Tcb {
            host,
            lport,
            rip,
            rport,
            role,
            conn,
            st: St::SynSent,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            rcv_nxt: 0,
            ts: !self.spec.min_frames,
            ts_recent: 0,
            mss: self.spec.mss_eff(),
            tx: 0,
            close: false,
            fin_sent: false,
            fin_rcvd: false,
            rx: 0,
            unacked_segs: 0,
        };
        self.tcbs.push(tcb);
        let id = self.tcbs.len() - 1;
        self.hosts[host]
            .tcbs
            .insert((lport, rip.octets(), rport), id);
        id
    }

    fn connect(
        &mut self,
        host: usize,
        rip: Ipv4Address,
        rport: u16,
        role: Role,
        conn: usize,
    ) -> usize {
        let h = &mut self.hosts[host];
        let lport = h.next_port;
        h.next_port = h.next_port.wrapping_add(1).max(1024);
        let t = self.new_tcb(host, lport, rip, rport, role, conn);
        self.by_opener
            .insert((self.hosts[host].ip.octets(), lport), conn);
        let iss = self.tcbs[t].iss;
        self.emit_seg(t, TcpControl::Syn, iss, 0, true);
        self.tcbs[t].snd_nxt = iss.wrapping_add(1);
        t
    }

    fn on_tcp(
        &mut self,
        host: usize,
        src: Ipv4Address,
        seg: &TcpRepr,
        payload_len: usize,
        psh: bool,
    ) {
        let key = (seg.dst_port, src.octets(), seg.src_port);
        let t = match self.hosts[host].tcbs.get(&key) {
            Some(&t) => t,
            None => {
                if seg.control == TcpControl::Syn
                    && seg.ack_number.is_none()
                    && seg.dst_port == HTTP
                    && host != 0
                {
                    // A node accepts: which connection it belongs to is settled by the caller's
                    // bookkeeping (`adopt`), so mark it unowned for now.
                    let t = self.new_tcb(
                        host,
                        seg.dst_port,
                        src,
                        seg.src_port,
                        Role::Server,
                        usize::MAX,
                    );
                    let tcb = &mut self.tcbs[t];
                    tcb.st = St::SynRcvd;
                    tcb.rcv_nxt = (seg.seq_number.0 as u32).wrapping_add(1);
                    tcb.ts = seg.timestamp.is_some() && tcb.ts;
                    if let Some(ts) = seg.timestamp {
                        tcb.ts_recent = ts.tsval;
                    }
                    let iss = tcb.iss;
                    self.emit_seg(t, TcpControl::Syn, iss, 0, true);
                    self.tcbs[t].snd_nxt = iss.wrapping_add(1);
                    self.adopt(host, t);
                } else {
                    self.report.stray += 1;
                }
                return;
            }
        };
        if let Some(ts) = seg.timestamp {
            self.tcbs[t].ts_recent = ts.tsval;
        }
        if seg.control == TcpControl::Rst {
            self.tcbs[t].st = St::Closed;
            self.report.stray += 1;
            return;
        }
        // ACK processing.
        if let Some(ack) = seg.ack_number {
            let ack = ack.0 as u32;
            let tcb = &mut self.tcbs[t];
            if tcb.st == St::SynSent && seg.control == TcpControl::Syn {
                tcb.st = St::Established;
                tcb.snd_una = ack;
                tcb.rcv_nxt = (seg.seq_number.0 as u32).wrapping_add(1);
                tcb.ts = tcb.ts && seg.timestamp.is_some();
                self.send_ack(t);
                self.on_established(t);
                return;
            }
            if tcb.st == St::SynRcvd && ack == tcb.snd_nxt {
                tcb.st = St::Established;
            }
            let in_flight = tcb.snd_nxt.wrapping_sub(tcb.snd_una);
            let acked = ack.wrapping_sub(tcb.snd_una);
            if acked > 0 && acked <= in_flight {
                tcb.snd_una = ack;
            }
        }
        let tcb = &self.tcbs[t];
        if tcb.st == St::Closed || tcb.st == St::SynSent {
            return;
        }
        // Data and FIN, in order only (nothing is lost or reordered on this wire).
        let seq = seg.seq_number.0 as u32;
        let mut ack_now = false;
        if payload_len > 0 || seg.control == TcpControl::Fin {
            if seq != tcb.rcv_nxt {
                // A duplicate or a gap: answer with an ACK of what we have.
                self.send_ack(t);
                return;
            }
            let tcb = &mut self.tcbs[t];
            tcb.rcv_nxt = tcb.rcv_nxt.wrapping_add(payload_len as u32);
            tcb.rx += payload_len as u64;
            tcb.unacked_segs += (payload_len > 0) as u32;
            if seg.control == TcpControl::Fin {
                tcb.rcv_nxt = tcb.rcv_nxt.wrapping_add(1);
                tcb.fin_rcvd = true;
                ack_now = true;
            }
            // Delayed ACK as Linux does it for a bulk stream: every second segment, and at once at
            // the end of a burst (PSH).
            if tcb.unacked_segs >= 2 || psh {
                ack_now = true;
            }
        }
        if ack_now {
            self.send_ack(t);
        }
        self.on_progress(t);
        self.pump_tcb(t);
    }

    // --- the application: client, proxy, hand-off ------------------------------------------

    /// A node accepted a connection: find the connection (and hop) it belongs to, by the
    /// address and port of the side that opened it.
    fn adopt(&mut self, node: usize, t: usize) {
        let key = (self.tcbs[t].rip.octets(), self.tcbs[t].rport);
        if let Some(c) = self.by_opener.remove(&key) {
            self.tcbs[t].conn = c;
            let conn = &mut self.conns[c];
            if conn.hops.is_empty() {
                // A client connection (or a forward-scenario one): the first hop.
                conn.hops.push(Hop {
                    node,
                    held: t,
                    first_req: 0,
                    handled: 0,
                    state: HopState::Serving,
                    leg: None,
                    counter: 0,
                });
                if conn.route.first() != Some(&node) {
                    // The switch chose the first node; plan the hand-off targets after it.
                    let n = self.spec.backends as usize;
                    conn.route = (0..3).map(|k| 1 + (node - 1 + k) % n).collect();
                }
            }
        }
    }

    fn on_established(&mut self, t: usize) {
        let tcb = &self.tcbs[t];
        let c = tcb.conn;
        if c == usize::MAX {
            return;
        }
        match tcb.role {
            Role::Client => {
                let conn = &self.conns[c];
                if conn.responses.is_empty() {
                    return; // preloaded idle connection
                }
                let n = if self.spec.pipelined {
                    conn.responses.len() as u32
                } else {
                    1
                };
                self.client_send_requests(c, n);
            }
            Role::Leg => {
                // Ask the switch to splice.
                let Some(h) = self.conns[c].hops.iter().position(|h| h.leg == Some(t)) else {
                    return;
                };
                self.send_control(c, h);
            }
            Role::Server => {}
        }
    }

    fn client_send_requests(&mut self, c: usize, n: u32) {
        let t = self.conns[c].client;
        let rb = self.spec.request_bytes as u64;
        // Each request in its own burst of segments, as a browser writes them.
        for _ in 0..n {
            self.tcbs[t].tx += rb;
            self.conns[c].client_sent += 1;
            self.pump_tcb(t);
        }
    }

    fn send_control(&mut self, c: usize, h: usize) {
        let hop = &self.conns[c].hops[h];
        let held = &self.tcbs[hop.held];
        let leg = &self.tcbs[hop.leg.unwrap_or(hop.held)];
        let node = hop.node;
        let me = self.hosts[node].ip.octets();
        let rb = self.spec.request_bytes as u64;
        let consumed = hop.handled as u64 * rb;
        let consumed = consumed.min(held.rx);
        let sent = held.snd_nxt.wrapping_sub(held.iss).wrapping_sub(1) as u64;
        let counter = self.hosts[node].control_counter;
        self.hosts[node].control_counter += 1;
        let req = RequestRepr {
            key_id: 1,
            counter,
            held_peer: Endpoint::new(held.rip.octets(), held.rport),
            held_local: Endpoint::new(me, held.lport),
            new_local: Endpoint::new(me, leg.lport),
            new_remote: Endpoint::new(leg.rip.octets(), leg.rport),
            consumed,
            sent,
        };
        let mut buf = [0u8; control::REQUEST_LEN];
        if req.emit(&mut buf, &KEY).is_none() {
            return;
        }
        let hst = &self.hosts[node];
        let f = udp_frame(
            hst.mac,
            hst.gw_mac,
            (hst.ip, CONTROL_SRC),
            (hst.gw, control::DEFAULT_PORT),
            &buf,
        );
        self.conns[c].hops[h].counter = counter;
        self.conns[c].hops[h].state = HopState::Requested;
        self.pending_control.insert((node, counter), (c, h));
        if self.conns[c].measured {
            self.report.handoffs_requested += 1;
        }
        self.send(node, f);
    }

    fn on_control_reply(&mut self, node: usize, payload: &[u8]) {
        let Ok(r) = control::Reply::new_checked(payload) else {
            self.report.stray += 1;
            return;
        };
        if !r.verify(&KEY) {
            self.report.stray += 1;
            return;
        }
        let rep = ReplyRepr::parse(&r);
        let Some((c, h)) = self.pending_control.remove(&(node, rep.counter)) else {
            return;
        };
        let measured = self.conns[c].measured;
        let hop = self.conns[c].hops[h].clone();
        let (Some(leg), held) = (hop.leg, hop.held) else {
            return;
        };
        if rep.code == ReplyCode::Accepted {
            if measured {
                self.report.handoffs_accepted += 1;
            }
            // Forward the bytes of the held stream not consumed here, then close the leg.
            let consumed = hop.handled as u64 * self.spec.request_bytes as u64;
            let unconsumed = self.tcbs[held].rx.saturating_sub(consumed);
            self.tcbs[leg].tx += unconsumed;
            self.tcbs[leg].close = true;
            self.conns[c].hops[h].state = HopState::Retired;
            // The target's accepted TCB becomes the next hop.
            let target = self.conns[c].route[h + 1];
            let key = (HTTP, self.hosts[node].ip.octets(), self.tcbs[leg].lport);
            if let Some(&tt) = self.hosts[target].tcbs.get(&key) {
                let first_req = hop.first_req + hop.handled;
                self.conns[c].hops.push(Hop {
                    node: target,
                    held: tt,
                    first_req,
                    handled: 0,
                    state: HopState::Serving,
                    leg: None,
                    counter: 0,
                });
                self.tcbs[tt].conn = c;
                // Its stream starts with the forwarded requests: `handled` counts from there.
                self.pump_tcb(leg);
                self.on_progress(tt);
            } else {
                self.pump_tcb(leg);
            }
        } else {
            *self
                .report
                .handoffs_refused
                .entry(rep.code.name().to_string())
                .or_default() += 1;
            // Refused: serve locally and close the unused leg.
            self.conns[c].hops[h].state = HopState::Serving;
            self.conns[c].handoffs = h as u8; // no further hand-offs from here
            self.tcbs[leg].close = true;
            self.pump_tcb(leg);
            self.on_progress(held);
        }
    }

    /// Something arrived on TCB `t`: let its application act.
    fn on_progress(&mut self, t: usize) {
        let c = self.tcbs[t].conn;
        if c == usize::MAX || c >= self.conns.len() {
            // A node's TCB not (yet) tied to a connection: if the peer closed, close too.
            if self.tcbs[t].fin_rcvd {
                self.tcbs[t].close = true;
            }
            return;
        }
        match self.tcbs[t].role {
            Role::Client => self.client_progress(c),
            Role::Server => {
                if let Some(h) = self.conns[c].hops.iter().position(|h| h.held == t) {
                    self.hop_progress(c, h);
                } else if self.tcbs[t].fin_rcvd {
                    self.tcbs[t].close = true;
                }
            }
            Role::Leg => {
                if self.tcbs[t].fin_rcvd {
                    self.tcbs[t].close = true;
                }
            }
        }
    }

    fn client_progress(&mut self, c: usize) {
        let t = self.conns[c].client;
        let conn = &self.conns[c];
        if conn.responses.is_empty() || conn.done {
            return;
        }
        let rx = self.tcbs[t].rx;
        // Responses fully received so far.
        let mut sum = 0u64;
        let mut full = 0u32;
        for r in &conn.responses {
            sum += *r as u64;
            if rx >= sum {
                full += 1;
            }
        }
        let total = sum;
        if !self.spec.pipelined && full == conn.client_sent && full < conn.responses.len() as u32 {
            self.client_send_requests(c, 1);
            return;
        }
        if rx >= total && !self.tcbs[t].close {
            self.tcbs[t].close = true;
            self.pump_tcb(t);
        }
        if rx >= total && self.tcbs[t].fin_rcvd && self.tcbs[t].fin_sent {
            let conn = &mut self.conns[c];
            conn.done = true;
            if conn.measured {
                self.report.completed += 1;
                self.report.response_bytes += total;
            }
        }
    }

    fn hop_progress(&mut self, c: usize, h: usize) {
        let rb = self.spec.request_bytes as u64;
        loop {
            let hop = self.conns[c].hops[h].clone();
            let held = hop.held;
            match hop.state {
                HopState::Retired => {
                    // Paper IV.B 1: the switch's faked client FIN closes the old leg; close too.
                    if self.tcbs[held].fin_rcvd {
                        self.tcbs[held].close = true;
                        self.pump_tcb(held);
                    }
                    return;
                }
                HopState::Opening | HopState::Requested => return,
                HopState::WaitAcked => {
                    let tcb = &self.tcbs[held];
                    if tcb.snd_una == tcb.snd_nxt && tcb.tx == 0 {
                        self.open_leg(c, h);
                    }
                    return;
                }
                HopState::Serving => {
                    let total_reqs = self.conns[c].responses.len() as u32;
                    let req = hop.first_req + hop.handled;
                    if req >= total_reqs {
                        if self.tcbs[held].fin_rcvd {
                            self.tcbs[held].close = true;
                            self.pump_tcb(held);
                        }
                        return;
                    }
                    let received = (self.tcbs[held].rx / rb) as u32;
                    if received <= hop.handled {
                        return;
                    }
                    // Hop h hands off request h (paper V: handoff-1 moves the first request,
                    // handoff-2 the first two, each to a new node).
                    if (h as u8) < self.conns[c].handoffs && req == h as u32 {
                        self.conns[c].hops[h].state = HopState::WaitAcked;
                        continue;
                    }
                    let resp = self.conns[c].responses[req as usize] as u64;
                    self.tcbs[held].tx += resp;
                    self.conns[c].hops[h].handled += 1;
                    self.pump_tcb(held);
                }
            }
        }
    }

    /// Addition 1 done (responses acknowledged): open the new leg to the next node.
    fn open_leg(&mut self, c: usize, h: usize) {
        let node = self.conns[c].hops[h].node;
        let target = self.conns[c].route[h + 1];
        let rip = self.hosts[target].ip;
        let leg = self.connect(node, rip, HTTP, Role::Leg, c);
        self.conns[c].hops[h].leg = Some(leg);
        self.conns[c].hops[h].state = HopState::Opening;
    }

    // --- connections ------------------------------------------------------------------------

    fn start_conn(&mut self, measured: bool) {
        let c = self.conns.len();
        let n = self.spec.backends as usize;
        let (handoffs, responses) = if measured {
            let share = self.spec.handoff_share;
            let sum: f64 = share.iter().sum();
            let u = self.rng.unit() * sum;
            let h = if u < share[0] {
                0
            } else if u < share[0] + share[1] {
                1
            } else {
                2
            };
            let reqs = self.spec.requests.max(h);
            let (lo, hi) = self.spec.response_bytes;
            let responses = (0..reqs)
                .map(|_| lo + self.rng.below((hi - lo) as u64 + 1) as u32)
                .collect();
            (h as u8, responses)
        } else {
            (0, Vec::new())
        };
        let first = 1 + self.rng.below(n as u64) as usize;
        let route: Vec<usize> = (0..3).map(|k| 1 + (first - 1 + k) % n).collect();
        let forward = self.spec.scenario == Scenario::Forward;
        let (client_host, rip) = if forward {
            // Plain routing: node `first` opens a connection to the next node.
            (first, self.hosts[route[1]].ip)
        } else {
            (0, Ipv4Address::new(198, 18, 0, 10))
        };
        self.conns.push(Conn {
            measured,
            handoffs: if forward { 0 } else { handoffs },
            responses,
            client: usize::MAX,
            route: if forward {
                vec![route[1], route[2], route[0]]
            } else {
                route
            },
            hops: Vec::new(),
            client_sent: 0,
            done: false,
        });
        let t = self.connect(client_host, rip, HTTP, Role::Client, c);
        self.conns[c].client = t;
    }

    fn preload(&mut self) {
        let target = (self.spec.occupancy * self.spec.flow_capacity as f64) as usize;
        let mut guard = 0;
        while self.sw.flow_count() < target && guard < 200_000 {
            for _ in 0..64.min(target - self.sw.flow_count()) {
                self.start_conn(false);
                self.report.preloaded += 1;
            }
            self.pump_wire();
            guard += 64;
        }
        // Idle connections are done as far as the generator is concerned.
        for c in &mut self.conns {
            c.done = true;
        }
    }

    /// `ip-forward`: `connections` ICMP packets of 60 bytes, node N to node N+1 in turn.
    fn run_ip_forward(&mut self) -> (TraceSet, Report) {
        self.arp_warmup();
        self.recording = true;
        let n = self.spec.backends as usize;
        for i in 0..self.spec.connections as usize {
            let (a, b) = (1 + i % n, 1 + (i + 1) % n);
            let (src, dst) = (self.hosts[a].ip, self.hosts[b].ip);
            let mut f = eth_frame(
                self.hosts[a].mac,
                self.hosts[a].gw_mac,
                EthernetProtocol::Ipv4,
                46,
            );
            let ip = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Icmp,
                payload_len: 26,
                hop_limit: 64,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..]), &caps());
            // An echo request: type 8, code 0, the checksum of the 26 bytes, id and sequence.
            f[34] = 8;
            f[38..40].copy_from_slice(&(i as u16).to_be_bytes());
            let c = checksum::checksum(&f[34..60]);
            f[36..38].copy_from_slice(&c.to_be_bytes());
            self.send(a, f);
            self.pump_wire();
        }
        self.report.flows_in_use = (self.sw.flow_count(), self.sw.flow_capacity());
        (
            std::mem::take(&mut self.traces),
            std::mem::take(&mut self.report),
        )
    }

    fn run(&mut self) -> (TraceSet, Report) {
        if self.spec.scenario == Scenario::IpForward {
            return self.run_ip_forward();
        }
        self.arp_warmup();
        self.preload();
        self.recording = true;
        let accepted_before = self.accepted();
        let mut started = 0u32;
        let mut open: Vec<usize> = Vec::new();
        loop {
            while started < self.spec.connections && open.len() < self.spec.concurrency as usize {
                open.push(self.conns.len());
                self.start_conn(true);
                started += 1;
            }
            // One frame at a time from one FIFO: the open connections interleave.
            match self.wire.pop_front() {
                Some((port, frame)) => self.process_frame(port, frame),
                None => {
                    // Nothing moves: whatever is still open is stuck.
                    open.retain(|&c| !self.conns[c].done);
                    self.report.stalled += open.len() as u64;
                    for &c in &open {
                        self.conns[c].done = true;
                    }
                    open.clear();
                    if started >= self.spec.connections {
                        break;
                    }
                }
            }
            open.retain(|&c| !self.conns[c].done);
        }
        self.traces.connections = self.report.completed;
        self.traces.handoffs = self.accepted() - accepted_before;
        for (i, n) in self.sw.counters().generated.iter().enumerate() {
            if *n > 0 {
                let name = knits_core::counters::Generated::ALL[i].name().to_string();
                self.report.generated.insert(name, *n);
            }
        }
        self.report.flows_in_use = (self.sw.flow_count(), self.sw.flow_capacity());
        (
            std::mem::take(&mut self.traces),
            std::mem::take(&mut self.report),
        )
    }

    fn accepted(&self) -> u64 {
        self.sw.counters().handoffs[ReplyCode::Accepted.to_wire() as usize]
    }
}

/// Runs a synthetic workload through the real switch and returns its traces and report.
pub fn generate(spec: &Spec) -> Result<(TraceSet, Report), WorkloadError> {
    Ok(Driver::new(spec)?.run())
}

/// Like [`generate`], and also returns every frame fed to the switch (ARP warm-up and preload
/// included), as it was before the switch rewrote it.
#[allow(clippy::type_complexity)]
pub fn generate_with_capture(
    spec: &Spec,
) -> Result<(TraceSet, Report, Vec<(PortId, Vec<u8>)>), WorkloadError> {
    let mut d = Driver::new(spec)?;
    d.capture = Some(Vec::new());
    let (t, r) = d.run();
    Ok((t, r, d.capture.take().unwrap_or_default()))
}
