//! Replay of a pcapng capture through the real switch: the port of each frame is its interface
//! index, frames marked outbound are skipped, timestamps become the switch's clock.

use std::collections::HashMap;

use knits_core::checksum;
use knits_core::config::Config;
use knits_core::switch::{FrameMeta, Verdict};
use knits_core::time::Instant;
use knits_core::wire::control::{Key, ReplyCode};
use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};

use crate::pcap;
use crate::trace::{Outcome, TraceMeter, TraceSet};
use knits_testkit::sink::VecSink;

use crate::workload::{Report, WorkloadError, build_switch};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    /// Back-end nodes of the cluster (`None`: one per interface after the first).
    pub backends: Option<u8>,
    /// Control key the capture's nodes signed with.
    pub key: Key,
    /// Flow-table capacity.
    pub flow_capacity: u32,
    /// Also feed frames the capture marks as outbound.
    pub all_directions: bool,
}

/// Reads `bytes` as pcapng and replays it; returns the traces and the switch's verdicts.
pub fn replay(bytes: &[u8], spec: &ReplaySpec) -> Result<(TraceSet, Report), WorkloadError> {
    let packets = pcap::read(bytes).map_err(|e| WorkloadError(e.to_string()))?;
    if packets.is_empty() {
        return Err(WorkloadError("the capture holds no packets".into()));
    }
    let max_port = packets.iter().map(|p| p.port).max().unwrap_or(0);
    let backends = spec.backends.unwrap_or(max_port.clamp(1, 15) as u8);
    if max_port as usize > backends as usize {
        return Err(WorkloadError(format!(
            "the capture has frames on interface {max_port} but the cluster has ports 0..={backends}; \
             pass --backends {max_port}"
        )));
    }
    let cfg = Config::cluster(backends as usize, spec.key);
    let mut sw = build_switch(
        cfg,
        spec.flow_capacity as usize,
        spec.flow_capacity as usize / 2,
    )?;
    let mut sink = VecSink::default();
    let mut meter = TraceMeter::new();
    let mut traces = TraceSet::default();
    let mut report = Report::default();
    let mut flows: HashMap<([u8; 4], [u8; 4], u16, u16), u32> = HashMap::new();
    let t0 = packets[0].ts_us;
    for p in packets {
        if p.inbound == Some(false) && !spec.all_directions {
            continue;
        }
        let mut frame = p.data;
        let key = flow_key(&frame);
        let next = flows.len() as u32;
        let flow = *flows.entry(key).or_insert(next);
        let syn_from_client = p.port == 0 && is_syn(&frame);
        meter.clear();
        let now = Instant::from_micros(1_000_000 + p.ts_us.saturating_sub(t0) as i64);
        let v = sw.process(
            p.port as u8,
            now,
            &mut frame[..],
            FrameMeta {
                csum: checksum::Kind::Full,
            },
            &mut sink,
            &mut meter,
        );
        let generated = sink.frames.len();
        sink.frames.clear();
        let class = crate::calibration::class_of(&frame, v, generated, &meter.recs);
        let (outcome, name) = match v {
            Verdict::Forward(_) => (Outcome::Forward, "forward".to_string()),
            Verdict::Local(k) => (Outcome::Local, format!("local:{}", k.name())),
            Verdict::Drop(r) => (Outcome::Drop, format!("drop:{}", r.name())),
        };
        if syn_from_client && outcome == Outcome::Forward {
            report.completed += 1; // connections opened
        }
        traces.push(p.port as u8, frame.len(), flow, outcome, &meter);
        if let Some(t) = traces.packets.last_mut() {
            t.class = class;
        }
        *report.verdicts.entry(name).or_default() += 1;
        report.packets += 1;
    }
    let c = sw.counters();
    report.handoffs_accepted = c.handoffs[ReplyCode::Accepted.to_wire() as usize];
    report.handoffs_requested = c.handoffs.iter().sum();
    traces.connections = report.completed;
    traces.handoffs = report.handoffs_accepted;
    report.flows_in_use = (sw.flow_count(), sw.flow_capacity());
    Ok((traces, report))
}

fn flow_key(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Default::default();
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Default::default();
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Default::default();
    };
    let (s, d) = (ip.src_addr().octets(), ip.dst_addr().octets());
    let (mut sp, mut dp) = (0, 0);
    if ip.next_header() == IpProtocol::Tcp
        && let Ok(t) = TcpPacket::new_checked(ip.payload())
    {
        (sp, dp) = (t.src_port(), t.dst_port());
    }
    if (s, sp) <= (d, dp) {
        (s, d, sp, dp)
    } else {
        (d, s, dp, sp)
    }
}

fn is_syn(frame: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.next_header() != IpProtocol::Tcp {
        return false;
    }
    TcpPacket::new_checked(ip.payload())
        .map(|t| t.syn() && !t.ack())
        .unwrap_or(false)
}

/// Runs a synthetic workload and also returns every frame it fed to the switch, as
/// `(port, frame)` before the switch rewrote it, for writing a capture.
pub fn capture(spec: &crate::workload::Spec) -> Result<Vec<(u8, Vec<u8>)>, WorkloadError> {
    crate::workload::generate_with_capture(spec).map(|(_, _, frames)| frames)
}
