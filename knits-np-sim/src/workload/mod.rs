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

mod driver;
mod frames;
mod handoff;
mod tcp;

use std::collections::BTreeMap;
use std::fmt;

use knits_core::config::{Config, PortId};
use knits_core::counters::DropReason;
use knits_core::switch::{Storage, Switch};
use knits_core::wire::control::{self};
use serde::Serialize;

use crate::trace::TraceSet;

use knits_testkit::sink::VecSink;

use driver::Driver;

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
