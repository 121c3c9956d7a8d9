//! The event loop: threads take frames, run their phases on engines, book unit servers and
//! hand frames to the completion unit, which restores per-flow order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rustc_hash::FxHashMap;

use super::calendar::Calendar;
use super::program::{Phase, Program, UnitSpec};
use super::results::{Dist, RunOptions, SimResult, StepStat, UnitStat, bottleneck};
use super::{ROWS, STEP_HOLD, TICKS, row_name};
use crate::hist::Hist;

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

pub(super) struct Sim<'p> {
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

impl<'p> Sim<'p> {
    pub(super) fn new(p: &'p Program, n: u64, opts: &'p RunOptions) -> Self {
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

    pub(super) fn run(mut self) -> SimResult {
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
