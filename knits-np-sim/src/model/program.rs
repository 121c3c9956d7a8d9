//! The program builder: meter traces compiled into compute bursts and unit visits for one
//! machine, each packet charged its class's calibrated instructions per stage.

use std::collections::HashMap;

use knits_core::meter::Step;

use super::{RunOptions, STEP_IO, SimResult, TICKS, sim::Sim};
use crate::calibration::{self, Calibration, STAGES};
use crate::machine::{Machine, OpCost, Passes};
use crate::trace::{Op, Outcome, Rec, TraceSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Phase {
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
pub(super) struct CPacket {
    pub(super) flow: u32,
    pub(super) ordinal: u32,
    pub(super) passes: u8,
    /// Phase ranges of the passes.
    pub(super) pass: [(u32, u32); 2],
}

#[derive(Debug, Clone)]
pub(super) struct UnitSpec {
    pub(super) name: String,
    pub(super) per_engines: u32,
    pub(super) banks: u32,
    pub(super) latency: u64,
    pub(super) occupancy: u64,
}

/// Traces compiled into phases for one machine.
#[derive(Debug, Clone)]
pub struct Program {
    pub(super) machine: Machine,
    pub(super) units: Vec<UnitSpec>,
    pub(super) paths: Vec<Vec<u16>>,
    pub(super) phases: Vec<Phase>,
    pub(super) packets: Vec<CPacket>,
    pub(super) flow_len: Vec<u32>,
    pub(super) flows: u32,
    pub(super) completion: Option<u16>,
    pub(super) switch_ticks: u64,
    pub(super) mean_len: f64,
    pub(super) conns_per_packet: f64,
    pub(super) handoffs_per_packet: f64,
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
/// per stage x cpi x isa_expansion (the checksum stage at `checksum_cpi` where measured),
/// offloaded stages left out, the checksum stage kept apart so that it can be scaled by the
/// packet's own checksum words, plus the class's calibrated cache misses at the machine's
/// miss costs.
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
        let f_csum = if m.checksum_cpi > 0.0 {
            m.checksum_cpi
        } else {
            m.cpi
        } * m.isa_expansion;
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
                            csum = v[k] * f_csum;
                        } else {
                            steps[calibration::step_of_stage(s)] += v[k] * f;
                        }
                    }
                }
                // The class's data-cache misses (calibration), charged in `lookup`: most are
                // the flow table's (callgrind puts them in FlowTable::lookup and ::insert).
                if let Some(k) = cal.classes.get(*class) {
                    steps[2] += k.l1_misses * m.l1_miss_cycles + k.l2_misses * m.l2_miss_cycles;
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
