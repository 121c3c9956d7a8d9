//! What a run reports: options in, figures out, and the naming of the bottleneck.

use serde::Serialize;

use crate::hist::Hist;

/// A progress callback: packets dispatched so far.
pub type Progress = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

/// Options of one run.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Record the order frames leave in (for tests): (global flow, ordinal).
    pub record_departures: bool,
    /// Called with the number of packets dispatched, every 2^16 packets.
    pub progress: Option<Progress>,
}

/// Mean and 99th percentile of a per-packet quantity, in engine cycles.
#[derive(Debug, Clone, Serialize)]
pub struct Dist {
    /// Mean.
    pub mean: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Dist {
    pub(super) fn of(h: &Hist) -> Dist {
        Dist {
            mean: h.mean(),
            p99: h.quantile(0.99) as f64,
        }
    }
}

/// Per-step figures: engine work and time spent (latency), per packet.
#[derive(Debug, Clone, Serialize)]
pub struct StepStat {
    /// Step name (knits-core's steps, then `io` and `hold`).
    pub step: String,
    /// Engine cycles the step issued.
    pub work: Dist,
    /// Cycles from the step's start to its end, waiting included.
    pub latency: Dist,
}

/// Utilisation of one unit.
#[derive(Debug, Clone, Serialize)]
pub struct UnitStat {
    /// Unit name.
    pub unit: String,
    /// Instances x banks.
    pub servers: u32,
    /// Busy share, mean over servers.
    pub util_mean: f64,
    /// Busy share of the busiest server.
    pub util_max: f64,
    /// Visits per packet.
    pub visits_per_packet: f64,
    /// Mean cycles a visit queued before service.
    pub mean_queue_cycles: f64,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    /// Machine name.
    pub machine: String,
    /// Engines.
    pub engines: u32,
    /// Threads per engine.
    pub threads: u32,
    /// Clock in MHz.
    pub clock_mhz: f64,
    /// Packets simulated.
    pub packets: u64,
    /// Simulated time in engine cycles.
    pub cycles: f64,
    /// Packets per second (steady state, after a warm-up of a tenth of the run).
    pub pps: f64,
    /// Gigabits per second of frame bytes at that rate.
    pub gbps: f64,
    /// Client connections per second the rate implies for this workload.
    pub connections_per_s: f64,
    /// Hand-offs per second the rate implies.
    pub handoffs_per_s: f64,
    /// Engine cycles of work per packet and time per packet, total.
    pub total: StepStat,
    /// The same per step.
    pub steps: Vec<StepStat>,
    /// Busy share per engine.
    pub engine_util: Vec<f64>,
    /// Mean busy share of the engines.
    pub engine_util_mean: f64,
    /// Share of thread-time holding a frame.
    pub thread_util: f64,
    /// Units.
    pub units: Vec<UnitStat>,
    /// What limits the rate.
    pub bottleneck: String,
    /// Host seconds the timing model took.
    pub host_seconds: f64,
    /// Simulated packets per host second.
    pub host_pps: f64,
    /// Events the simulation processed per packet (host cost).
    pub events_per_packet: f64,
    /// Departure order, when asked for: (global flow, ordinal within the flow).
    #[serde(skip)]
    pub departures: Vec<(u64, u32)>,
}

/// Names what limits the rate: the busiest resource when it is nearly saturated, else threads.
pub(super) fn bottleneck(engines: (&str, f64), thread_util: f64, units: &[UnitStat]) -> String {
    let mut best = (engines.0.to_string(), engines.1);
    for u in units {
        // A banked unit saturates when its busiest bank does.
        if u.util_max > best.1 {
            best = (format!("unit {}", u.unit), u.util_max);
        }
    }
    if best.1 >= 0.9 {
        format!("{} ({:.0}% busy)", best.0, best.1 * 100.0)
    } else if thread_util >= 0.9 {
        format!(
            "latency: every thread holds a frame ({:.0}%) while the busiest resource, {}, is {:.0}% \
             busy; more threads would hide more latency",
            thread_util * 100.0,
            best.0,
            best.1 * 100.0
        )
    } else {
        format!(
            "none saturated (busiest: {} at {:.0}%)",
            best.0,
            best.1 * 100.0
        )
    }
}
