//! The timing model: a discrete-event simulation of engines, hardware threads, shared units and
//! a completion unit, replaying meter traces.
//!
//! ## The model
//! - E engines with T hardware threads each. An engine runs one thread at a time; a thread runs
//!   until it issues a visit to a shared unit it has to wait for, then yields (the engine pays
//!   `switch_cycles` when it picks up another thread) and the engine runs the next ready thread,
//!   oldest first. This is how the NP4GS3 and the IXP1200 hide memory latency.
//! - A shared unit is a set of FIFO servers (instances x banks). A visit waits for its bank,
//!   keeps it busy for its occupancy and returns after its latency. A path of units (search unit
//!   then memory bank) is booked stage after stage at issue time. Contention shows up as queueing.
//! - A thread that is free takes the next frame: an egress-pass frame first, else a new one. The
//!   input is saturated (a frame is always waiting), so the model measures the maximum rate.
//! - After its last pass a frame visits the completion unit and then leaves, but never before
//!   the frames of its flow that arrived earlier: per-flow order is restored there.
//!
//! Time is kept in ticks of 1/8 engine cycle so fractional costs add up without drift.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use knits_core::meter::Step;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::calibration::{self, Calibration, STAGES};
use crate::hist::Hist;
use crate::machine::{Machine, OpCost, Passes};
use crate::trace::{Op, Outcome, Rec, TraceSet};

/// Ticks per engine cycle.
pub const TICKS: u64 = 8;
/// Pseudo-step for per-frame work (dispatch, receive, enqueue, transmit).
pub const STEP_IO: usize = 6;
/// Pseudo-step for waiting outside a thread (between passes, reorder hold in completion).
pub const STEP_HOLD: usize = 7;
/// Number of report rows: the six knits-core steps, io, hold.
pub const ROWS: usize = 8;

/// The name of report row `i`.
pub fn row_name(i: usize) -> &'static str {
    match i {
        0..=5 => Step::ALL[i].name(),
        STEP_IO => "io",
        _ => "hold",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Phase {
    Compute {
        ticks: u32,
        row: u8,
    },
    Visit {
        path: u16,
        extra: u32,
        wait: bool,
        row: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct CPacket {
    flow: u32,
    ordinal: u32,
    passes: u8,
    /// Phase ranges of the passes.
    pass: [(u32, u32); 2],
}

#[derive(Debug, Clone)]
struct UnitSpec {
    name: String,
    per_engines: u32,
    banks: u32,
    latency: u64,
    occupancy: u64,
}

/// Traces compiled into phases for one machine.
#[derive(Debug, Clone)]
pub struct Program {
    machine: Machine,
    units: Vec<UnitSpec>,
    paths: Vec<Vec<u16>>,
    phases: Vec<Phase>,
    packets: Vec<CPacket>,
    flow_len: Vec<u32>,
    flows: u32,
    completion: Option<u16>,
    switch_ticks: u64,
    mean_len: f64,
    conns_per_packet: f64,
    handoffs_per_packet: f64,
}

struct Builder<'a> {
    m: &'a Machine,
    unit_index: HashMap<&'a str, u16>,
    paths: Vec<Vec<u16>>,
    phases: Vec<Phase>,
    carry: f64,
    /// Where the pass being built starts: phases before it are never merged into.
    start: usize,
}

impl Builder<'_> {
    fn path(&mut self, units: &[String]) -> u16 {
        let p: Vec<u16> = units.iter().map(|u| self.unit_index[u.as_str()]).collect();
        if let Some(i) = self.paths.iter().position(|x| *x == p) {
            return i as u16;
        }
        self.paths.push(p);
        (self.paths.len() - 1) as u16
    }

    fn compute(&mut self, cycles: f64, row: u8) {
        self.carry += cycles * TICKS as f64;
        let t = self.carry.round();
        if t <= 0.0 {
            return;
        }
        self.carry -= t;
        let t = t as u32;
        if self.phases.len() > self.start
            && let Some(Phase::Compute { ticks, row: r }) = self.phases.last_mut()
            && *r == row
        {
            *ticks += t;
            return;
        }
        self.phases.push(Phase::Compute { ticks: t, row });
    }

    fn op(&mut self, c: &OpCost, n: u32, row: u8) {
        let n = c.items(n);
        let n_f = n as f64;
        if c.visit_per_item && !c.units.is_empty() {
            self.compute(c.cycles, row);
            let path = self.path(&c.units);
            let extra = (c.occupancy_per_item * TICKS as f64).round() as u32;
            for _ in 0..n.min(1 << 16) {
                self.compute(c.cycles_per_item, row);
                self.phases.push(Phase::Visit {
                    path,
                    extra,
                    wait: c.wait,
                    row,
                });
            }
        } else {
            self.compute(c.cycles + c.cycles_per_item * n_f, row);
            if !c.units.is_empty() {
                let path = self.path(&c.units);
                let extra = (c.occupancy_per_item * n_f * TICKS as f64).round() as u32;
                self.phases.push(Phase::Visit {
                    path,
                    extra,
                    wait: c.wait,
                    row,
                });
            }
        }
    }

    fn frame_work(&mut self, list: &[OpCost], len: u32) {
        for c in list {
            self.op(c, len, STEP_IO as u8);
        }
    }
}

fn op_cost(m: &Machine, op: Op) -> &OpCost {
    let o = &m.ops;
    match op {
        Op::Step => &o.step,
        Op::BytesRead => &o.bytes_read,
        Op::TableProbe => &o.table_probe,
        Op::TableEntry => &o.table_entry,
        Op::BytesRewritten => &o.bytes_rewritten,
        Op::ChecksumWords => &o.checksum_words,
        Op::OptionBytes => &o.option_bytes,
        Op::Generated => &o.generated,
        Op::Counter => &o.counter,
        Op::MacBytes => &o.mac_bytes,
    }
}

fn ticks(cycles: f64) -> u64 {
    (cycles * TICKS as f64).round() as u64
}

/// Engine cycles per step that a packet class costs on a machine: its calibrated instructions
/// per stage x cpi x isa_expansion, offloaded stages left out, the checksum stage kept apart
/// so that it can be scaled by the packet's own checksum words.
#[derive(Debug, Clone)]
struct ClassCycles {
    /// Per class: cycles per meter step (checksum excluded), checksum cycles, and the checksum
    /// words of the class's own frame.
    classes: Vec<([f64; 6], f64, f64)>,
}

impl ClassCycles {
    fn new(m: &Machine, cal: &Calibration) -> Option<ClassCycles> {
        if m.cpi <= 0.0 {
            return None;
        }
        let words = class_checksum_words();
        let f = m.cpi * m.isa_expansion;
        let classes = calibration::CLASSES
            .iter()
            .enumerate()
            .map(|(i, class)| {
                let mut steps = [0.0; 6];
                let mut csum = 0.0;
                if let Some(v) = cal.stages_of(class) {
                    for (k, s) in STAGES.iter().enumerate() {
                        if m.offload.iter().any(|o| o == s) {
                            continue;
                        }
                        if *s == "checksum" {
                            csum = v[k] * f;
                        } else {
                            steps[calibration::step_of_stage(s)] += v[k] * f;
                        }
                    }
                }
                (steps, csum, words.get(i).copied().unwrap_or(0.0))
            })
            .collect();
        Some(ClassCycles { classes })
    }
}

/// Checksum words each class's frame feeds (its meter records), computed once. `ack-cold` is
/// `ack`'s frame in a larger table (setting up its 1M flows would cost every run a second).
fn class_checksum_words() -> Vec<f64> {
    static WORDS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    WORDS
        .get_or_init(|| {
            let warm: Vec<&str> = calibration::CLASSES
                .iter()
                .map(|c| if *c == "ack-cold" { "ack" } else { *c })
                .collect();
            match calibration::class_traces(&warm) {
                Ok(t) => t
                    .packets
                    .iter()
                    .map(|p| {
                        t.recs_of(p)
                            .iter()
                            .filter(|r| r.op == Op::ChecksumWords)
                            .map(|r| r.n as f64)
                            .sum()
                    })
                    .collect(),
                Err(_) => Vec::new(),
            }
        })
        .clone()
}

impl Program {
    /// Compiles `traces` for machine `m` (which must have passed validation), charging the
    /// checked-in calibration's instructions.
    pub fn new(m: &Machine, traces: &TraceSet) -> Program {
        Program::with_calibration(m, traces, &Calibration::checked_in())
    }

    /// Compiles `traces` for machine `m` with calibration `cal`: each packet of a known class
    /// is charged its class's instructions per stage (at the step's first record, or at the
    /// end of the pass that holds `verdict` for a step the packet never entered) plus the op
    /// table's costs of its meter records.
    pub fn with_calibration(m: &Machine, traces: &TraceSet, cal: &Calibration) -> Program {
        let class_cycles = ClassCycles::new(m, cal);
        let names: Vec<&str> = m.units.keys().map(|k| k.as_str()).collect();
        let units: Vec<UnitSpec> = m
            .units
            .iter()
            .map(|(name, u)| UnitSpec {
                name: name.clone(),
                per_engines: u.per_engines,
                banks: u.banks.max(1),
                latency: ticks(u.latency),
                occupancy: ticks(u.occupancy),
            })
            .collect();
        let mut b = Builder {
            m,
            unit_index: names
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, i as u16))
                .collect(),
            paths: Vec::new(),
            phases: Vec::new(),
            carry: 0.0,
            start: 0,
        };
        let egress: Vec<bool> = Step::ALL
            .iter()
            .map(|s| m.passes == Passes::Two && m.egress_steps.iter().any(|e| e == s.name()))
            .collect();
        let mut flow_len = vec![0u32; traces.flows as usize];
        // Many packets compile to the same phases (ACKs, full-size segments): keep one copy of
        // each sequence, so the replayed program stays small enough for the host's caches.
        let mut seen: HashMap<Vec<Phase>, (u32, u32)> = HashMap::new();
        let mut packets = Vec::with_capacity(traces.packets.len());
        for p in &traces.packets {
            let recs: &[Rec] = traces.recs_of(p);
            let two = m.passes == Passes::Two && p.outcome == Outcome::Forward;
            let passes = if two { 2 } else { 1 };
            let len = p.len as u32;
            let mut pass = [(0u32, 0u32); 2];
            let mut charged = [false; 6];
            for (k, range) in pass.iter_mut().enumerate().take(passes) {
                b.carry = 0.0;
                b.start = b.phases.len();
                let start = b.phases.len() as u32;
                b.frame_work(&m.frame.pass_start, len);
                if k == 0 {
                    b.frame_work(&m.frame.receive, len);
                }
                let cc = class_cycles
                    .as_ref()
                    .and_then(|c| c.classes.get(p.class as usize));
                let mut cycles = [0.0f64; 6];
                if let Some((steps, csum, words)) = cc {
                    cycles = *steps;
                    // The checksum stage, scaled by the words this packet feeds it.
                    let w: f64 = recs
                        .iter()
                        .filter(|r| r.op == Op::ChecksumWords)
                        .map(|r| r.n as f64)
                        .sum();
                    cycles[0] += if *words > 0.0 {
                        csum * w / words
                    } else {
                        *csum
                    };
                }
                for r in recs {
                    let in_egress = two && egress[r.step as usize];
                    if in_egress == (k == 1) {
                        let st = r.step as usize;
                        if r.op == Op::Step && !charged[st] {
                            charged[st] = true;
                            b.compute(cycles[st], r.step);
                        }
                        b.op(op_cost(b.m, r.op), r.n, r.step);
                    }
                }
                // Steps the packet never entered still ran some of their code (a parse that
                // failed early is charged to parse): at the end of the pass that holds
                // `verdict`.
                let verdict_pass = if two && egress[5] { 1 } else { 0 };
                if k == verdict_pass {
                    for st in 0..6 {
                        if !charged[st] {
                            charged[st] = true;
                            b.compute(cycles[st], st as u8);
                        }
                    }
                }
                if k + 1 == passes && p.outcome == Outcome::Forward {
                    b.frame_work(&m.frame.transmit, len);
                }
                b.frame_work(&m.frame.pass_end, len);
                if k == 0 && passes == 2 {
                    b.frame_work(&m.frame.switch, len);
                }
                let end = b.phases.len() as u32;
                let key = b.phases[start as usize..].to_vec();
                *range = match seen.get(&key) {
                    Some(r) => {
                        b.phases.truncate(start as usize);
                        *r
                    }
                    None => {
                        seen.insert(key, (start, end));
                        (start, end)
                    }
                };
            }
            let ordinal = flow_len[p.flow as usize];
            flow_len[p.flow as usize] += 1;
            packets.push(CPacket {
                flow: p.flow,
                ordinal,
                passes: passes as u8,
                pass,
            });
        }
        let completion = m
            .completion
            .as_ref()
            .map(|c| b.path(std::slice::from_ref(c)));
        let n = traces.packets.len().max(1) as f64;
        Program {
            machine: m.clone(),
            units,
            paths: b.paths,
            phases: b.phases,
            packets,
            flow_len,
            flows: traces.flows,
            completion,
            switch_ticks: ticks(m.switch_cycles),
            mean_len: traces.mean_len(),
            conns_per_packet: traces.connections as f64 / n,
            handoffs_per_packet: traces.handoffs as f64 / n,
        }
    }

    /// Number of distinct packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when there is no packet.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Engine cycles of work per packet if nothing ever waited (mean over the trace).
    pub fn mean_work_cycles(&self) -> f64 {
        let t: u64 = self
            .phases
            .iter()
            .map(|p| match p {
                Phase::Compute { ticks, .. } => *ticks as u64,
                _ => 0,
            })
            .sum();
        t as f64 / TICKS as f64 / self.packets.len().max(1) as f64
    }

    /// Phases per packet (compute bursts and visits), for tuning.
    pub fn phases_per_packet(&self) -> f64 {
        self.phases.len() as f64 / self.packets.len().max(1) as f64
    }

    /// Runs `n` packets (the trace repeated, each round with fresh flows) through the model.
    pub fn run(&self, n: u64, opts: &RunOptions) -> SimResult {
        Sim::new(self, n, opts).run()
    }
}

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
    fn of(h: &Hist) -> Dist {
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

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Thread {
    engine: u32,
    frame: u32,
    cursor: u32,
    end: u32,
    pending_row: u8,
    pass_start: u64,
}

#[derive(Debug, Clone, Default)]
struct Engine {
    /// The engine is reserved until then (ticks): a thread that becomes ready earlier starts
    /// its run at this time, so threads take the engine in the order they became ready.
    busy_until: u64,
    /// The thread of the last run, to charge `switch_cycles` when another one follows.
    last: u32,
    busy: u64,
}

#[derive(Debug, Clone)]
struct Frame {
    pkt: u32,
    seq: u64,
    flow: u64,
    ordinal: u32,
    pass: u8,
    mark: u64,
    work: [u64; ROWS],
    lat: [u64; ROWS],
}

#[derive(Debug, Default)]
struct FlowOrder {
    next: u32,
    last_leave: u64,
    held: Vec<(u32, u64, u32)>,
}

struct Sim<'p> {
    p: &'p Program,
    n: u64,
    opts: &'p RunOptions,
    /// Pending events, at most one per thread: time << 20 | thread.
    heap: BinaryHeap<Reverse<u64>>,
    threads: Vec<Thread>,
    engines: Vec<Engine>,
    idle: VecDeque<u32>,
    egress_q: VecDeque<u32>,
    frames: Vec<Frame>,
    free_frames: Vec<u32>,
    next_seq: u64,
    // Units: per unit and server, the booked intervals and busy time; per unit, the latest end.
    calendars: Vec<Calendar>,
    /// Per unit: its first server in `calendars` and its number of servers.
    unit_servers: Vec<(usize, usize)>,
    last_end: Vec<u64>,
    /// Engines below this index do ingress passes; the others egress passes (when it is below
    /// the engine count; else every engine does both).
    ingress_engines: u32,
    /// Per unit and engine: the index of the engine's instance's first server.
    server_base: Vec<u32>,
    visits: Vec<u64>,
    queued: Vec<u64>,
    /// Keyed by global flow; only looked up, never iterated, so the hasher cannot change a figure.
    flows: FxHashMap<u64, FlowOrder>,
    work_h: Vec<Hist>,
    lat_h: Vec<Hist>,
    total_work: Hist,
    total_lat: Hist,
    thread_busy: u64,
    events: u64,
    end_time: u64,
    warm_seq: u64,
    warm_time: Option<u64>,
    departures: Vec<(u64, u32)>,
    ready_buf: Vec<(u32, u64)>,
}

/// Most intervals a calendar keeps apart; past that the two closest are merged (the gap
/// between them is given up), which only happens deep in a backlog.
const CAL_SLOTS: usize = 8;

/// The intervals one server of a unit is booked for, in time order, merged when adjacent.
/// Visits are booked when the compute burst before them starts, so a visit can be booked
/// before an earlier one in simulated time; it then takes the first gap that fits at or after
/// its arrival (a FIFO server when bookings come in time order).
#[derive(Debug, Clone, Copy, Default)]
struct Calendar {
    /// One slot more than kept, for the insertion before a merge.
    iv: [(u64, u64); CAL_SLOTS + 1],
    len: usize,
    busy: u64,
}

impl Calendar {
    /// Books `occ` ticks at or after `t`; `now` is the event time (nothing will be booked before
    /// it again). Returns the start.
    #[inline]
    fn book(&mut self, t: u64, occ: u64, now: u64) -> u64 {
        // Forget intervals that ended before now.
        let mut drop = 0;
        while drop < self.len && self.iv[drop].1 <= now {
            drop += 1;
        }
        if drop > 0 {
            self.iv.copy_within(drop..self.len, 0);
            self.len -= drop;
        }
        if occ == 0 {
            return t;
        }
        // Fast path: after everything booked.
        if self.len == 0 || self.iv[self.len - 1].1 <= t {
            if self.len > 0 && self.iv[self.len - 1].1 == t {
                self.iv[self.len - 1].1 = t + occ;
            } else {
                self.push_at(self.len, (t, t + occ));
            }
            return t;
        }
        let mut cur = t;
        let mut i = 0;
        while i < self.len {
            let (s, e) = self.iv[i];
            if e <= cur {
                i += 1;
                continue;
            }
            if s >= cur + occ {
                break;
            }
            cur = cur.max(e);
            i += 1;
        }
        let end = cur + occ;
        let prev = i > 0 && self.iv[i - 1].1 == cur;
        let next = i < self.len && self.iv[i].0 == end;
        match (prev, next) {
            (true, true) => {
                self.iv[i - 1].1 = self.iv[i].1;
                self.iv.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
            (true, false) => self.iv[i - 1].1 = end,
            (false, true) => self.iv[i].0 = cur,
            (false, false) => self.push_at(i, (cur, end)),
        }
        cur
    }

    /// Inserts an interval at position `i`; past `CAL_SLOTS` intervals the closest pair (the new
    /// one included) is merged.
    #[inline]
    fn push_at(&mut self, i: usize, iv: (u64, u64)) {
        self.iv.copy_within(i..self.len, i + 1);
        self.iv[i] = iv;
        self.len += 1;
        if self.len > CAL_SLOTS {
            let mut best = 0;
            let mut gap = u64::MAX;
            for k in 0..self.len - 1 {
                let g = self.iv[k + 1].0 - self.iv[k].1;
                if g < gap {
                    gap = g;
                    best = k;
                }
            }
            self.iv[best].1 = self.iv[best + 1].1;
            self.iv.copy_within(best + 2..self.len, best + 1);
            self.len -= 1;
        }
    }
}

impl<'p> Sim<'p> {
    fn new(p: &'p Program, n: u64, opts: &'p RunOptions) -> Self {
        let m = &p.machine;
        let e = m.engines as usize;
        let t = m.threads as usize;
        // Thread ids interleave engines so the first frames spread over all engines.
        let threads = (0..e * t)
            .map(|i| Thread {
                engine: (i % e) as u32,
                frame: NONE,
                cursor: 0,
                end: 0,
                pending_row: 0,
                pass_start: 0,
            })
            .collect();
        let servers = |u: &UnitSpec| {
            let inst = if u.per_engines == 0 {
                1
            } else {
                m.engines.div_ceil(u.per_engines)
            };
            (inst * u.banks) as usize
        };
        Sim {
            p,
            n,
            opts,
            heap: BinaryHeap::with_capacity(e * t),
            threads,
            engines: vec![
                Engine {
                    busy_until: 0,
                    last: NONE,
                    busy: 0,
                };
                e
            ],
            idle: VecDeque::new(),
            egress_q: VecDeque::new(),
            frames: Vec::new(),
            free_frames: Vec::new(),
            next_seq: 0,
            calendars: vec![Calendar::default(); p.units.iter().map(servers).sum()],
            unit_servers: p
                .units
                .iter()
                .scan(0, |off, u| {
                    let r = (*off, servers(u));
                    *off += r.1;
                    Some(r)
                })
                .collect(),
            last_end: vec![0; p.units.len()],
            ingress_engines: m.engines - m.egress_engines,
            server_base: {
                let mut off = 0;
                let mut v = Vec::new();
                for u in &p.units {
                    for e in 0..m.engines {
                        v.push(off + e.checked_div(u.per_engines).unwrap_or(0) * u.banks);
                    }
                    off += servers(u) as u32;
                }
                v
            },
            visits: vec![0; p.units.len()],
            queued: vec![0; p.units.len()],
            flows: FxHashMap::default(),
            work_h: vec![Hist::default(); ROWS],
            lat_h: vec![Hist::default(); ROWS],
            total_work: Hist::default(),
            total_lat: Hist::default(),
            thread_busy: 0,
            events: 0,
            end_time: 0,
            warm_seq: n / 10,
            warm_time: None,
            departures: Vec::new(),
            ready_buf: Vec::new(),
        }
    }

    fn run(mut self) -> SimResult {
        let started = std::time::Instant::now();
        if !self.p.is_empty() {
            for th in 0..self.threads.len() as u32 {
                if self.assign(th, 0) {
                    self.resume(th, 0);
                }
            }
            while let Some(Reverse(key)) = self.heap.pop() {
                self.wake((key & 0xf_ffff) as u32, key >> 20);
            }
        }
        self.finish(started.elapsed().as_secs_f64())
    }

    #[inline]
    fn schedule(&mut self, t: u64, th: u32) {
        self.events += 1;
        // One u64 per event: time in the high bits, thread in the low 20 (ties go to the lower
        // thread). Times stay below 2^44 ticks (over 500 simulated seconds at 4 GHz).
        debug_assert!(t < 1 << 44 && th < 1 << 20);
        self.heap.push(Reverse((t << 20) | th as u64));
    }

    /// Gives thread `th` its next frame (egress pass first), or parks it; true if it got one.
    /// With `egress_engines`, a thread takes only the passes of its engine's role.
    fn assign(&mut self, th: u32, t: u64) -> bool {
        let engine = self.threads[th as usize].engine;
        let egress_only = engine >= self.ingress_engines;
        let ingress_only = self.ingress_engines < self.engines.len() as u32 && !egress_only;
        if !ingress_only && let Some(f) = self.egress_q.pop_front() {
            self.start_pass(th, f, t);
            return true;
        }
        if !egress_only && self.next_seq < self.n {
            let seq = self.next_seq;
            self.next_seq += 1;
            if seq == self.warm_seq {
                self.warm_time = Some(t);
            }
            if seq & 0xffff == 0
                && let Some(cb) = &self.opts.progress
            {
                cb(seq);
            }
            let np = self.p.packets.len() as u64;
            let pkt = (seq % np) as u32;
            let round = seq / np;
            let cp = &self.p.packets[pkt as usize];
            let frame = Frame {
                pkt,
                seq,
                flow: round * self.p.flows as u64 + cp.flow as u64,
                ordinal: cp.ordinal,
                pass: 0,
                mark: t,
                work: [0; ROWS],
                lat: [0; ROWS],
            };
            let f = match self.free_frames.pop() {
                Some(i) => {
                    self.frames[i as usize] = frame;
                    i
                }
                None => {
                    self.frames.push(frame);
                    (self.frames.len() - 1) as u32
                }
            };
            self.start_pass(th, f, t);
            return true;
        }
        if !ingress_only {
            // Parked until a frame waits for its egress pass.
            self.idle.push_back(th);
        }
        false
    }

    fn start_pass(&mut self, th: u32, f: u32, t: u64) {
        let fr = &mut self.frames[f as usize];
        let cp = &self.p.packets[fr.pkt as usize];
        let (s, e) = cp.pass[fr.pass as usize];
        fr.lat[STEP_HOLD] += t - fr.mark;
        fr.mark = t;
        let thr = &mut self.threads[th as usize];
        thr.frame = f;
        thr.cursor = s;
        thr.end = e;
        thr.pass_start = t;
    }

    /// Runs thread `th`, ready at event time `t`, from its cursor until it waits for a visit or
    /// ends its pass, all in one go: each compute burst reserves the engine from when it is free
    /// (threads take it in the order they became ready), each visit is booked at the time the
    /// burst before it ends. One event brings the thread back: the result of the visit it waits
    /// for, or the end of its pass. This is the event count the model pays per run.
    fn resume(&mut self, th: u32, t: u64) {
        let mut now = t;
        loop {
            let thr = &self.threads[th as usize];
            if thr.cursor == thr.end {
                if now > t {
                    // The pass ends in the future: come back then to take the next frame.
                    self.schedule(now, th);
                    return;
                }
                self.end_pass(th, t);
                let got = self.assign(th, t);
                // Frames queued for their egress pass go to parked threads (only while draining).
                while !self.egress_q.is_empty() {
                    match self.idle.pop_front() {
                        Some(idle) => {
                            if self.assign(idle, t) {
                                self.resume(idle, t);
                            }
                        }
                        None => break,
                    }
                }
                if got {
                    continue;
                }
                return;
            }
            let f = thr.frame as usize;
            match self.p.phases[thr.cursor as usize] {
                Phase::Compute { ticks, row } => {
                    let e = thr.engine as usize;
                    let eng = &mut self.engines[e];
                    let start = now.max(eng.busy_until);
                    let switch = if eng.last != th {
                        self.p.switch_ticks
                    } else {
                        0
                    };
                    let end = start + switch + ticks as u64;
                    eng.busy_until = end;
                    eng.last = th;
                    eng.busy += ticks as u64 + switch;
                    let fr = &mut self.frames[f];
                    fr.work[row as usize] += ticks as u64;
                    fr.lat[row as usize] += end - fr.mark;
                    fr.mark = end;
                    self.threads[th as usize].cursor += 1;
                    now = end;
                }
                Phase::Visit {
                    path,
                    extra,
                    wait,
                    row,
                } => {
                    let engine = thr.engine;
                    let salt = self.frames[f].seq.wrapping_mul(1024) + thr.cursor as u64;
                    let (start, done) = self.visit(path, now, extra as u64, engine, salt, t);
                    let thr = &mut self.threads[th as usize];
                    thr.cursor += 1;
                    if wait {
                        thr.pending_row = row;
                        self.schedule(done, th);
                        return;
                    }
                    if start > now {
                        // A posted visit is handed over when its unit can take it: the thread
                        // waits for that (how a saturated unit pushes back), not for the result.
                        thr.pending_row = row;
                        self.schedule(start, th);
                        return;
                    }
                }
            }
        }
    }

    /// Books a visit along `path` issued at `t` (event time `now <= t`); returns when its first
    /// stage starts and when its result is back. Each stage takes the first free interval of its server at or after the time the
    /// visit reaches it.
    fn visit(
        &mut self,
        path: u16,
        t: u64,
        extra: u64,
        engine: u32,
        salt: u64,
        now: u64,
    ) -> (u64, u64) {
        let mut time = t;
        let mut first = t;
        let engines = self.engines.len();
        for (k, &u) in self.p.paths[path as usize].iter().enumerate() {
            let spec = &self.p.units[u as usize];
            let base = self.server_base[u as usize * engines + engine as usize];
            let bank = if spec.banks > 1 {
                // Multiply-shift: a uniform bank from the hashed address without a division.
                ((crate::rng::mix(salt ^ ((k as u64) << 56)) as u128 * spec.banks as u128) >> 64)
                    as u32
            } else {
                0
            };
            let idx = (base + bank) as usize;
            let x = if k == 0 { extra } else { 0 };
            let occ = spec.occupancy + x;
            let latency = spec.latency + x;
            let cal = &mut self.calendars[idx];
            let start = cal.book(time, occ, now);
            let u = u as usize;
            self.last_end[u] = self.last_end[u].max(start + occ);
            cal.busy += occ;
            self.visits[u] += 1;
            self.queued[u] += start - time;
            if k == 0 {
                first = start;
            }
            time = start + latency;
        }
        (first, time)
    }

    fn wake(&mut self, th: u32, t: u64) {
        let thr = &self.threads[th as usize];
        let fr = &mut self.frames[thr.frame as usize];
        fr.lat[thr.pending_row as usize] += t - fr.mark;
        fr.mark = t;
        self.resume(th, t);
    }

    fn end_pass(&mut self, th: u32, t: u64) {
        let f = self.threads[th as usize].frame;
        self.thread_busy += t - self.threads[th as usize].pass_start;
        self.threads[th as usize].frame = NONE;
        let fr = &mut self.frames[f as usize];
        let passes = self.p.packets[fr.pkt as usize].passes;
        if fr.pass + 1 < passes {
            fr.pass += 1;
            self.egress_q.push_back(f);
            return;
        }
        let done = match self.p.completion {
            Some(path) => {
                self.visit(path, t, 0, 0, fr_seq(&self.frames[f as usize]), t)
                    .1
            }
            None => t,
        };
        self.complete(f, done);
    }

    /// Frame `f` is through the completion unit at `done`: leave in flow order.
    fn complete(&mut self, f: u32, done: u64) {
        let (flow, ordinal, pkt) = {
            let fr = &self.frames[f as usize];
            (fr.flow, fr.ordinal, fr.pkt)
        };
        let flow_len = self.p.flow_len[self.p.packets[pkt as usize].flow as usize];
        if ordinal == 0 && flow_len == 1 {
            // A flow of one packet: nothing to wait for.
            self.depart(f, done);
            return;
        }
        let mut ready = std::mem::take(&mut self.ready_buf);
        {
            let fo = self.flows.entry(flow).or_default();
            if ordinal != fo.next {
                fo.held.push((ordinal, done, f));
                self.ready_buf = ready;
                return;
            }
            let leave = done.max(fo.last_leave);
            fo.last_leave = leave;
            fo.next += 1;
            ready.push((f, leave));
            while let Some(i) = fo.held.iter().position(|h| h.0 == fo.next) {
                let (_, d, g) = fo.held.swap_remove(i);
                let leave = d.max(fo.last_leave);
                fo.last_leave = leave;
                fo.next += 1;
                ready.push((g, leave));
            }
            if fo.next == flow_len {
                self.flows.remove(&flow);
            }
        }
        for &(g, leave) in &ready {
            self.depart(g, leave);
        }
        ready.clear();
        self.ready_buf = ready;
    }

    fn depart(&mut self, f: u32, leave: u64) {
        let fr = &mut self.frames[f as usize];
        fr.lat[STEP_HOLD] += leave.saturating_sub(fr.mark);
        let mut tw = 0;
        let mut tl = 0;
        for r in 0..ROWS {
            let w = fr.work[r] / TICKS;
            let l = fr.lat[r] / TICKS;
            self.work_h[r].add(w);
            self.lat_h[r].add(l);
            tw += fr.work[r];
            tl += fr.lat[r];
        }
        self.total_work.add(tw / TICKS);
        self.total_lat.add(tl / TICKS);
        self.end_time = self.end_time.max(leave);
        if self.opts.record_departures {
            self.departures.push((fr.flow, fr.ordinal));
        }
        self.free_frames.push(f);
    }

    fn finish(self, host_seconds: f64) -> SimResult {
        let m = &self.p.machine;
        // Posted visits may leave a unit working after the last frame left: the run ends when
        // every unit is done too, so an over-subscribed unit still caps the rate.
        let backlog = self.last_end.iter().copied().max().unwrap_or(0);
        let end = self.end_time.max(backlog).max(1);
        let warm = self.warm_time.unwrap_or(0);
        let measured = self.n.saturating_sub(self.warm_seq);
        let cycles = end as f64 / TICKS as f64;
        let hz = m.clock_mhz * 1e6;
        let pps = if self.n == 0 {
            0.0
        } else if end > warm && measured > 0 {
            measured as f64 / ((end - warm) as f64 / TICKS as f64) * hz
        } else {
            self.n as f64 / cycles * hz
        };
        let row = |r: usize| StepStat {
            step: row_name(r).to_string(),
            work: Dist::of(&self.work_h[r]),
            latency: Dist::of(&self.lat_h[r]),
        };
        let engine_util: Vec<f64> = self
            .engines
            .iter()
            .map(|e| (e.busy as f64 / end as f64).min(1.0))
            .collect();
        let engine_util_mean = engine_util.iter().sum::<f64>() / engine_util.len().max(1) as f64;
        let thread_util = self.thread_busy as f64 / (end as f64 * self.threads.len() as f64);
        let n = self.n.max(1) as f64;
        let units: Vec<UnitStat> = self
            .p
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let (off, count) = self.unit_servers[i];
                let busy: Vec<u64> = self.calendars[off..off + count]
                    .iter()
                    .map(|c| c.busy)
                    .collect();
                let max = busy.iter().copied().max().unwrap_or(0) as f64 / end as f64;
                let mean = busy.iter().sum::<u64>() as f64 / (end as f64 * busy.len() as f64);
                UnitStat {
                    unit: u.name.clone(),
                    servers: busy.len() as u32,
                    util_mean: mean.min(1.0),
                    util_max: max.min(1.0),
                    visits_per_packet: self.visits[i] as f64 / n,
                    mean_queue_cycles: if self.visits[i] == 0 {
                        0.0
                    } else {
                        self.queued[i] as f64 / self.visits[i] as f64 / TICKS as f64
                    },
                }
            })
            .collect();
        // With engine roles, the busier group is what can saturate.
        let group = |r: std::ops::Range<usize>| {
            let n = r.len().max(1) as f64;
            engine_util[r].iter().sum::<f64>() / n
        };
        let split = self.ingress_engines as usize;
        let engines = if split < engine_util.len() {
            let (i, o) = (group(0..split), group(split..engine_util.len()));
            if i >= o {
                ("ingress engines", i)
            } else {
                ("egress engines", o)
            }
        } else {
            ("engines", engine_util_mean)
        };
        let bottleneck = bottleneck(engines, thread_util, &units);
        SimResult {
            machine: m.name.clone(),
            engines: m.engines,
            threads: m.threads,
            clock_mhz: m.clock_mhz,
            packets: self.n,
            cycles,
            pps,
            gbps: pps * self.p.mean_len * 8.0 / 1e9,
            connections_per_s: pps * self.p.conns_per_packet,
            handoffs_per_s: pps * self.p.handoffs_per_packet,
            total: StepStat {
                step: "total".into(),
                work: Dist::of(&self.total_work),
                latency: Dist::of(&self.total_lat),
            },
            steps: (0..ROWS).map(row).collect(),
            engine_util,
            engine_util_mean,
            thread_util,
            units,
            bottleneck,
            host_seconds,
            host_pps: if host_seconds > 0.0 {
                self.n as f64 / host_seconds
            } else {
                0.0
            },
            events_per_packet: self.events as f64 / n,
            departures: self.departures,
        }
    }
}

fn fr_seq(f: &Frame) -> u64 {
    f.seq
}

/// Names what limits the rate: the busiest resource when it is nearly saturated, else threads.
fn bottleneck(engines: (&str, f64), thread_util: f64, units: &[UnitStat]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{TraceMeter, TraceSet};
    use knits_core::meter::Meter;

    /// A machine with one memory unit and given shape; a probe costs 10 cycles then a visit of
    /// latency 30 / occupancy `occ`; a step entry costs 20 cycles.
    fn machine(engines: u32, threads: u32, occ: f64) -> Machine {
        machine_with(engines, threads, occ, "")
    }

    fn machine_with(engines: u32, threads: u32, occ: f64, extra: &str) -> Machine {
        let text = format!(
            r#"
name = "test"
clock_mhz = 100.0
engines = {engines}
threads = {threads}
passes = "one"
completion = "done"
[units.mem]
latency = 30.0
occupancy = {occ}
[units.done]
latency = 0.0
occupancy = 0.0
[ops]
step = {{ cycles = 20.0 }}
bytes_read = {{}}
table_probe = {{ cycles_per_item = 10.0, units = ["mem"], visit_per_item = true }}
table_entry = {{}}
bytes_rewritten = {{}}
checksum_words = {{}}
option_bytes = {{}}
generated = {{}}
counter = {{}}
mac_bytes = {{}}
{extra}
"#
        );
        Machine::from_toml(&text, "test").unwrap()
    }

    /// `n` packets over `flows` flows; packet i probes `probes(i)` times.
    fn traces(n: u32, flows: u32, probes: impl Fn(u32) -> u32) -> TraceSet {
        let mut t = TraceSet::default();
        let mut m = TraceMeter::new();
        for i in 0..n {
            m.clear();
            m.step(Step::Parse);
            m.table_probe(probes(i));
            t.push(0, 64, i % flows, Outcome::Forward, &m);
        }
        t
    }

    #[test]
    fn one_engine_one_thread_is_the_serial_sum_of_costs() {
        let m = machine(1, 1, 5.0);
        let t = traces(100, 7, |i| 1 + i % 3);
        let p = Program::new(&m, &t);
        let r = p.run(1000, &RunOptions::default());
        // Per packet: 20 (step) + probes * (10 compute + 30 latency).
        let total: u64 = (0..1000u32)
            .map(|i| 20 + (1 + (i % 100) % 3) as u64 * 40)
            .sum();
        assert_eq!(r.cycles, total as f64);
        assert_eq!(
            r.total.work.mean,
            (0..100u32)
                .map(|i| 20 + 10 * (1 + i % 3) as u64)
                .sum::<u64>() as f64
                / 100.0
        );
    }

    #[test]
    fn per_frame_work_is_counted_once_per_frame() {
        // Receive and transmit are pure compute: they must not merge across packets.
        let frame = "[frame]\nreceive = [ { cycles = 5.0 } ]\ntransmit = [ { cycles = 7.0 } ]";
        let m = machine_with(1, 1, 1.0, frame);
        let t = traces(10, 10, |i| i % 2);
        let r = Program::new(&m, &t).run(100, &RunOptions::default());
        assert_eq!(r.steps[STEP_IO].work.mean, 12.0);
        assert_eq!(r.steps[STEP_IO].work.p99, 12.0);
        let total: u64 = (0..100u32).map(|i| 12 + 20 + (i % 2) as u64 * 40).sum();
        assert_eq!(r.cycles, total as f64);
    }

    #[test]
    fn more_threads_hide_latency() {
        let t = traces(50, 50, |_| 2);
        let run =
            |threads| Program::new(&machine(1, threads, 1.0), &t).run(5000, &RunOptions::default());
        // One thread: 20 + 2 x (10 + 30) = 100 cycles a packet, 1 Mpps at 100 MHz.
        let r1 = run(1);
        assert!((r1.pps - 1.0e6).abs() < 1e3, "{}", r1.pps);
        // Two threads: one computes while the other waits, twice the rate.
        let r2 = run(2);
        assert!(r2.pps > 1.9e6, "{}", r2.pps);
        // Four: the 40 cycles of work per packet are the limit, 2.5 Mpps, engine saturated.
        let r4 = run(4);
        assert!(r4.pps > 2.45e6 && r4.pps <= 2.5e6 * 1.0001, "{}", r4.pps);
        assert!(r4.bottleneck.starts_with("engines"), "{}", r4.bottleneck);
        assert!(r1.bottleneck.starts_with("latency"), "{}", r1.bottleneck);
    }

    #[test]
    fn a_saturated_unit_caps_throughput() {
        // Occupancy 25 cycles a visit, one visit a packet: at most 4 Mpps, whatever the engines.
        let t = traces(64, 64, |_| 1);
        let r8 = Program::new(&machine(8, 4, 25.0), &t).run(20_000, &RunOptions::default());
        let r32 = Program::new(&machine(32, 4, 25.0), &t).run(20_000, &RunOptions::default());
        assert!(r8.pps <= 4.0e6 * 1.001 && r8.pps > 3.9e6, "{}", r8.pps);
        assert!(
            (r32.pps - r8.pps).abs() / r8.pps < 0.01,
            "{} vs {}",
            r32.pps,
            r8.pps
        );
        assert!(r32.bottleneck.starts_with("unit mem"), "{}", r32.bottleneck);
    }

    #[test]
    fn per_flow_order_is_restored() {
        // Three flows; packets of varying cost so later ones often finish first.
        let t = traces(300, 3, |i| if i % 5 == 0 { 6 } else { 1 });
        let opts = RunOptions {
            record_departures: true,
            ..Default::default()
        };
        let r = Program::new(&machine(4, 4, 1.0), &t).run(3000, &opts);
        assert_eq!(r.departures.len(), 3000);
        let mut next: HashMap<u64, u32> = HashMap::new();
        for (flow, ord) in &r.departures {
            let n = next.entry(*flow).or_insert(0);
            assert_eq!(*ord, *n, "flow {flow} left out of order");
            *n += 1;
        }
        // Frames did finish out of order and were held.
        assert!(r.steps[STEP_HOLD].latency.mean > 0.0);
    }

    /// Two engines, one per role: the ingress pass costs 20 (step) + probes x 10, the egress
    /// pass 5 (transmit).
    fn split_machine(egress_engines: u32) -> Machine {
        let text = format!(
            r#"
name = "split"
clock_mhz = 100.0
engines = 2
threads = 1
passes = "two"
egress_engines = {egress_engines}
[units.mem]
latency = 0.0
occupancy = 0.0
[ops]
step = {{ cycles = 20.0 }}
bytes_read = {{}}
table_probe = {{ cycles_per_item = 10.0 }}
table_entry = {{}}
bytes_rewritten = {{}}
checksum_words = {{}}
option_bytes = {{}}
generated = {{}}
counter = {{}}
mac_bytes = {{}}
[frame]
transmit = [ {{ cycles = 5.0 }} ]
switch = [ {{ units = ["mem"], cell_bytes = 64.0, wait = false }} ]
"#
        );
        Machine::from_toml(&text, "split").unwrap()
    }

    #[test]
    fn engine_roles_split_the_passes() {
        let t = traces(50, 50, |_| 2);
        // Shared: 40 + 5 cycles a packet over 2 engines -> 100 MHz / 22.5 = 4.44 Mpps.
        let shared = Program::new(&split_machine(0), &t).run(5000, &RunOptions::default());
        assert!((shared.pps - 4.444e6).abs() < 0.05e6, "{}", shared.pps);
        // Split: the ingress engine does 40 cycles a packet alone -> 2.5 Mpps, and is the
        // bottleneck.
        let split = Program::new(&split_machine(1), &t).run(5000, &RunOptions::default());
        assert!((split.pps - 2.5e6).abs() < 0.01e6, "{}", split.pps);
        assert!(
            split.bottleneck.starts_with("ingress engines"),
            "{}",
            split.bottleneck
        );
        // The switch hand-over ran once per frame (one 64-byte cell each).
        let mem = split.units.iter().find(|u| u.unit == "mem").unwrap();
        assert!((mem.visits_per_packet - 1.0).abs() < 1e-9);
    }

    #[test]
    fn calendar_fills_gaps_in_time_order_and_merges() {
        let mut c = Calendar::default();
        // A booking in the future leaves a gap before it.
        assert_eq!(c.book(100, 10, 0), 100);
        // An earlier arrival that fits in the gap goes first.
        assert_eq!(c.book(20, 30, 0), 20);
        // One that does not fit waits until after the booking it would overlap.
        assert_eq!(c.book(90, 20, 0), 110);
        // Adjacent bookings merged: [20,50) [100,130).
        assert_eq!(c.len, 2);
        assert_eq!(c.iv[1], (100, 130));
        // In time order it is a FIFO server.
        assert_eq!(c.book(130, 5, 120), 130);
        assert_eq!(c.book(131, 5, 130), 135);
        // Intervals that ended before now are forgotten.
        assert_eq!(c.book(500, 1, 400), 500);
        assert_eq!(c.len, 1);
        // Never more than CAL_SLOTS intervals: the closest pair is merged.
        let mut d = Calendar::default();
        for k in 0..20u64 {
            d.book(1000 - 40 * k, 10, 0);
        }
        assert!(d.len <= CAL_SLOTS);
        for w in d.iv[..d.len].windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?}", &d.iv[..d.len]);
        }
        // Full, then a booking into the narrowest gap: the intervals stay disjoint and sorted
        // and each booking got its own time.
        let mut f = Calendar::default();
        let mut got = Vec::new();
        for k in 0..CAL_SLOTS as u64 {
            got.push((f.book(100 * k, 10, 0), 10));
        }
        f.book(1000, 5, 0); // gaps of 90 and one of 90: full + 1
        got.push((f.book(212, 3, 0), 3)); // into the gap after [200, 210)
        for k in 0..50u64 {
            got.push((f.book(7 * k, 4, 0), 4));
        }
        for w in f.iv[..f.len].windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?}", &f.iv[..f.len]);
        }
        // The calendar may give up gaps, never double-book: the bookings are disjoint.
        got.sort();
        for w in got.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{got:?}");
        }
    }

    #[test]
    fn each_class_is_charged_its_calibrated_instructions() {
        // One engine, one thread, cpi 2, no unit costs: cycles per packet = 2 x instructions.
        let m = machine_with(1, 1, 0.0, "").with_shape(1, 1).unwrap();
        let mut m = m;
        m.cpi = 2.0;
        m.ops.table_probe = OpCost::default();
        m.ops.step = OpCost::default();
        let cal = Calibration::checked_in();
        // ack-cold (1M flows to set up) takes ack's path: leave it to the calibration tests.
        let classes: Vec<&str> = calibration::CLASSES[..calibration::CLASSES.len() - 1].to_vec();
        assert!(!classes.contains(&"ack-cold"));
        let t = calibration::class_traces(&classes).unwrap();
        for (i, class) in classes.iter().enumerate() {
            let mut one = TraceSet::default();
            let p = t.packets[i];
            one.recs = t.recs_of(&p).to_vec();
            one.packets.push(crate::trace::PacketTrace {
                start: 0,
                flow: 0,
                ..p
            });
            one.flows = 1;
            let r = Program::with_calibration(&m, &one, &cal).run(100, &RunOptions::default());
            let want = 2.0 * cal.classes[*class].instructions;
            assert!(
                (r.total.work.mean - want).abs() <= 2.0 + want / 32.0,
                "{class}: {} cycles, calibration says {want}",
                r.total.work.mean
            );
        }
        // An offloaded stage is not charged.
        m.offload = vec!["checksum".into()];
        let data = calibration::class_index("data") as usize;
        let mut one = TraceSet::default();
        let p = t.packets[data];
        one.recs = t.recs_of(&p).to_vec();
        one.packets.push(crate::trace::PacketTrace {
            start: 0,
            flow: 0,
            ..p
        });
        one.flows = 1;
        let r = Program::with_calibration(&m, &one, &cal).run(100, &RunOptions::default());
        let k = &cal.classes["data"];
        let want = 2.0 * (k.instructions - k.stages["checksum"]);
        assert!(
            (r.total.work.mean - want).abs() <= 2.0 + want / 32.0,
            "{} vs {want}",
            r.total.work.mean
        );
    }

    #[test]
    fn doubling_engines_never_lowers_throughput() {
        for (preset, scenario) in [
            ("np4gs3", crate::workload::Scenario::Handoff1),
            ("ixp1200", crate::workload::Scenario::IpForward),
            ("np4gs3", crate::workload::Scenario::IpForward),
        ] {
            let mut spec = crate::workload::Spec::scenario(scenario);
            spec.connections = 60;
            spec.occupancy = 0.0;
            let (t, _) = crate::workload::generate(&spec).unwrap();
            let base = Machine::preset(preset).unwrap();
            let mut last = 0.0;
            for e in [1, 2, 4, 8, 16, 32] {
                let m = base.with_shape(e, base.threads).unwrap();
                let r = Program::new(&m, &t).run(20_000, &RunOptions::default());
                assert!(
                    r.pps >= last * 0.995,
                    "{preset} {scenario}: {e} engines give {} pps, fewer gave {last}",
                    r.pps
                );
                last = r.pps;
            }
        }
    }

    #[test]
    fn a_saturated_unit_is_named_whatever_the_engines() {
        // The unit caps the rate; more engines leave it the bottleneck, by name.
        let t = traces(64, 64, |_| 2);
        for e in [4, 16, 64] {
            let r = Program::new(&machine(e, 4, 20.0), &t).run(20_000, &RunOptions::default());
            assert!(
                r.bottleneck.starts_with("unit mem"),
                "{e}: {}",
                r.bottleneck
            );
            let mem = r.units.iter().find(|u| u.unit == "mem").unwrap();
            assert!(mem.util_max > 0.9, "{}", mem.util_max);
        }
    }

    #[test]
    fn runs_are_deterministic() {
        let t = traces(100, 10, |i| 1 + i % 4);
        let p = Program::new(&machine(4, 2, 3.0), &t);
        let a = p.run(10_000, &RunOptions::default());
        let b = p.run(10_000, &RunOptions::default());
        assert_eq!(a.cycles, b.cycles);
        assert_eq!(a.pps, b.pps);
    }
}
