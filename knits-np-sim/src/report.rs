//! One run's figures, as text for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::machine::{Machine, Passes};
use crate::model::SimResult;
use crate::trace::TraceSet;
use crate::workload::{Report, Spec};

/// The paper's claim for the NP4GS3 (section VI): packets per second.
pub const PAPER_PPS: f64 = 4.5e6;
/// The paper's claim for the NP4GS3 (section VI, after Aron et al.): connections per second.
pub const PAPER_CPS: f64 = 750_000.0;

/// What the traces hold.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStats {
    /// Distinct packets run through the real switch.
    pub distinct_packets: usize,
    /// Mean frame length (bytes, without FCS).
    pub mean_frame_bytes: f64,
    /// Connections carried.
    pub connections: u64,
    /// Hand-offs accepted.
    pub handoffs: u64,
    /// Packets per connection.
    pub packets_per_connection: f64,
    /// Mean items per packet of each metered operation.
    pub ops_per_packet: BTreeMap<String, f64>,
    /// Host seconds to generate (run the switch over every distinct packet).
    pub generation_seconds: f64,
}

impl TraceStats {
    /// Summarises `t`.
    pub fn of(t: &TraceSet, generation_seconds: f64) -> TraceStats {
        TraceStats {
            distinct_packets: t.packets.len(),
            mean_frame_bytes: t.mean_len(),
            connections: t.connections,
            handoffs: t.handoffs,
            packets_per_connection: if t.connections == 0 {
                0.0
            } else {
                t.packets.len() as f64 / t.connections as f64
            },
            ops_per_packet: t
                .mean_counts()
                .into_iter()
                .map(|(o, v)| (o.name().to_string(), v))
                .collect(),
            generation_seconds,
        }
    }
}

/// The estimate beside the paper's claim.
#[derive(Debug, Clone, Serialize)]
pub struct PaperComparison {
    /// The paper's packets/s.
    pub claim_pps: f64,
    /// The paper's connections/s.
    pub claim_connections_per_s: f64,
    /// Estimated / claimed packets/s.
    pub pps_ratio: f64,
    /// Estimated / claimed connections/s.
    pub connections_ratio: f64,
}

/// Everything `knits-np-sim run` reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutput {
    /// Workload name (scenario, or the capture's path).
    pub workload: String,
    /// The synthetic workload's parameters (none for a replay).
    pub spec: Option<Spec>,
    /// What the traces hold.
    pub trace: TraceStats,
    /// What the switch did while the traces were recorded.
    pub switch: Report,
    /// The timing model's figures.
    pub sim: SimResult,
    /// Set beside the paper's claim (for NP4GS3 runs).
    pub paper: Option<PaperComparison>,
}

impl RunOutput {
    /// Assembles the output; the paper comparison is added for the `np4gs3` machine.
    pub fn new(
        workload: String,
        spec: Option<Spec>,
        trace: TraceStats,
        switch: Report,
        sim: SimResult,
    ) -> Self {
        let paper = (sim.machine == "np4gs3").then(|| PaperComparison {
            claim_pps: PAPER_PPS,
            claim_connections_per_s: PAPER_CPS,
            pps_ratio: sim.pps / PAPER_PPS,
            connections_ratio: sim.connections_per_s / PAPER_CPS,
        });
        RunOutput {
            workload,
            spec,
            trace,
            switch,
            sim,
            paper,
        }
    }

    /// The human-readable report.
    pub fn text(&self, m: &Machine) -> String {
        let s = &self.sim;
        let mut o = String::new();
        let passes = match (m.passes, m.egress_engines) {
            (Passes::One, _) => "one pass".to_string(),
            (Passes::Two, 0) => "ingress + egress passes".to_string(),
            (Passes::Two, e) => format!(
                "ingress passes on {} engines, egress passes on {e}",
                m.engines - e
            ),
        };
        let _ = writeln!(
            o,
            "{} on {}: {} engines x {} threads at {} MHz, {}",
            self.workload, s.machine, s.engines, s.threads, s.clock_mhz, passes
        );
        let t = &self.trace;
        let verdicts: Vec<String> = self
            .switch
            .verdicts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "workload: {} distinct packets through the real switch ({:.1} per connection, mean {:.0} bytes), \
             {} connections, {} hand-offs accepted",
            t.distinct_packets,
            t.packets_per_connection,
            t.mean_frame_bytes,
            t.connections,
            t.handoffs
        );
        let _ = writeln!(o, "verdicts: {}", verdicts.join(", "));
        let _ = writeln!(o);
        let _ = writeln!(o, "  packets/s       {:>12}", si(s.pps));
        let _ = writeln!(o, "  Gbit/s          {:>12.2}", s.gbps);
        let _ = writeln!(o, "  connections/s   {:>12}", si(s.connections_per_s));
        if s.handoffs_per_s > 0.0 {
            let _ = writeln!(o, "  hand-offs/s     {:>12}", si(s.handoffs_per_s));
        }
        if let Some(p) = &self.paper {
            let _ = writeln!(
                o,
                "  paper (VI): {} packets/s, {} connections/s -> estimate is {:.2}x and {:.2}x of the claim",
                si(p.claim_pps),
                si(p.claim_connections_per_s),
                p.pps_ratio,
                p.connections_ratio
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "cycles per packet   work mean  work p99   time mean  time p99"
        );
        for st in s.steps.iter().chain(std::iter::once(&s.total)) {
            let _ = writeln!(
                o,
                "  {:<16} {:>9.1} {:>9.0} {:>11.1} {:>9.0}",
                st.step, st.work.mean, st.work.p99, st.latency.mean, st.latency.p99
            );
        }
        let _ = writeln!(
            o,
            "  (work = engine cycles issued; time = from the step's start to its end, waiting included;\n   \
             io = dispatch, receive, enqueue, transmit; hold = between passes and in the completion unit)"
        );
        let _ = writeln!(o);
        let (lo, hi) = s
            .engine_util
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), u| (lo.min(*u), hi.max(*u)));
        let _ = writeln!(
            o,
            "engines: {:.0}% busy (min {:.0}%, max {:.0}%); threads hold a frame {:.0}% of the time",
            s.engine_util_mean * 100.0,
            lo * 100.0,
            hi * 100.0,
            s.thread_util * 100.0
        );
        let _ = writeln!(
            o,
            "unit          servers  busy mean  busy max  visits/pkt  queue cycles"
        );
        for u in &s.units {
            let _ = writeln!(
                o,
                "  {:<12} {:>6} {:>9.0}% {:>8.0}% {:>11.2} {:>13.1}",
                u.unit,
                u.servers,
                u.util_mean * 100.0,
                u.util_max * 100.0,
                u.visits_per_packet,
                u.mean_queue_cycles
            );
        }
        let _ = writeln!(o, "bottleneck: {}", s.bottleneck);
        let _ = writeln!(
            o,
            "host: {} packets simulated in {:.2} s ({} packets/s, {:.1} events/packet); switch over the distinct packets in {:.2} s",
            si(s.packets as f64),
            s.host_seconds,
            si(s.host_pps),
            s.events_per_packet,
            t.generation_seconds
        );
        o
    }
}

/// A number with an SI suffix (k, M, G).
pub fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
