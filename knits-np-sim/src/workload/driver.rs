//! The generator: hosts, connections and the switch they talk through; the wire between them,
//! ARP, and the runs that record traces.

use std::collections::{HashMap, VecDeque};

use knits_core::checksum;
use knits_core::config::{Config, PortId};
use knits_core::switch::{FrameMeta, Switch, Verdict};
use knits_core::time::Instant;
use knits_core::wire::control::ReplyCode;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress,
    IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, TcpRepr, UdpPacket,
};

use crate::rng::Rng;
use crate::trace::{Outcome, TraceMeter, TraceSet};

use super::frames::*;
use super::handoff::*;
use super::tcp::*;
use super::*;

/// Addresses, ports and a protocol tag: what tells flows apart for the completion unit.
pub(super) type FlowTuple = ([u8; 4], [u8; 4], u16, u16, u8);

/// The generator: hosts, connections and the switch they talk through.
pub(super) struct Driver {
    pub(super) spec: Spec,
    pub(super) rng: Rng,
    pub(super) sw: Switch<'static>,
    pub(super) sink: VecSink,
    pub(super) meter: TraceMeter,
    pub(super) hosts: Vec<Host>,
    pub(super) tcbs: Vec<Tcb>,
    pub(super) conns: Vec<Conn>,
    pub(super) wire: VecDeque<(PortId, Vec<u8>)>,
    pub(super) now_us: i64,
    pub(super) recording: bool,
    pub(super) traces: TraceSet,
    pub(super) flow_ids: HashMap<FlowTuple, u32>,
    pub(super) report: Report,
    /// Control counter -> (connection, hop).
    pub(super) pending_control: HashMap<(usize, u64), (usize, usize)>,
    /// (address, port) of a connection's opener (client or hand-off leg) -> connection.
    pub(super) by_opener: HashMap<([u8; 4], u16), usize>,
    /// Every frame fed to the switch, when capturing.
    pub(super) capture: Option<Vec<(PortId, Vec<u8>)>>,
}

pub(super) fn mac_of(host: usize) -> EthernetAddress {
    EthernetAddress([0x02, 0x00, 0x00, 0x00, host as u8, 0x02])
}

impl Driver {
    pub(super) fn new(spec: &Spec) -> Result<Driver, WorkloadError> {
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

    pub(super) fn send(&mut self, host: usize, frame: Vec<u8>) {
        self.wire.push_back((self.hosts[host].port, frame));
    }

    /// Feeds queued frames to the switch and delivers what comes out until nothing moves.
    pub(super) fn pump_wire(&mut self) {
        while let Some((port, frame)) = self.wire.pop_front() {
            self.process_frame(port, frame);
        }
    }

    /// One frame through the switch, with the meter; delivers what the switch sends on.
    pub(super) fn process_frame(&mut self, port: PortId, mut frame: Vec<u8>) {
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
            let class = crate::calibration::class_of(
                &frame,
                verdict,
                self.sink.frames.len(),
                &self.meter.recs,
            );
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
        let generated = std::mem::take(&mut self.sink.frames);
        for (p, f) in generated {
            self.deliver(p, &f);
        }
    }

    /// A dense flow id: both directions of a 4-tuple, or per address pair for non-TCP.
    pub(super) fn flow_of(&mut self, frame: &[u8]) -> u32 {
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

    pub(super) fn deliver(&mut self, port: PortId, frame: &[u8]) {
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
                            &ChecksumCapabilities::default(),
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

    pub(super) fn on_arp(&mut self, host: usize, body: &[u8]) {
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

    pub(super) fn arp_warmup(&mut self) {
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

    pub(super) fn start_conn(&mut self, measured: bool) {
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

    pub(super) fn preload(&mut self) {
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
    pub(super) fn run_ip_forward(&mut self) -> (TraceSet, Report) {
        self.arp_warmup();
        self.recording = true;
        let n = self.spec.backends as usize;
        for i in 0..self.spec.connections as usize {
            let (a, b) = (1 + i % n, 1 + (i + 1) % n);
            let (src, dst) = (self.hosts[a].ip, self.hosts[b].ip);
            // An echo request: type 8, code 0, the checksum of the 26 bytes, id and sequence.
            let mut m = [0u8; 26];
            m[0] = 8;
            m[4..6].copy_from_slice(&(i as u16).to_be_bytes());
            let c = checksum::checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            let f = icmp_frame(l3(self.hosts[a].mac, self.hosts[a].gw_mac, src, dst), &m);
            self.send(a, f);
            self.pump_wire();
        }
        self.report.flows_in_use = (self.sw.flow_count(), self.sw.flow_capacity());
        (
            std::mem::take(&mut self.traces),
            std::mem::take(&mut self.report),
        )
    }

    pub(super) fn run(&mut self) -> (TraceSet, Report) {
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

    pub(super) fn accepted(&self) -> u64 {
        self.sw.counters().handoffs[ReplyCode::Accepted.to_wire() as usize]
    }
}
