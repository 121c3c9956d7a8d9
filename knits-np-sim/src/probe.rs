//! A small probe of the machine this runs on, for the `cpu` preset: clock, memory latencies
//! and the cycles per instruction of the switch core, measured rather than typed in.
//!
//! - **Clock.** A chain of dependent shift-and-adds `x += x >> 3` (`shr` then `add`, one cycle
//!   each on every x86 core: Agner Fog, "Instruction tables"), timed with the OS clock:
//!   cycles = 2 x steps. A chain of dependent `x *= x | 1` (`or` 1 cycle + `imul r64` 3
//!   cycles) is a cross-check. Each step uses the previous result, so the compiler cannot
//!   shorten the chain.
//! - **Latencies.** Pointer chasing: a random cyclic permutation of cache lines (Sattolo's
//!   algorithm) over a buffer of a given size, each load's address the result of the previous
//!   one, so nothing overlaps; nanoseconds per hop. Sizes: half of L1d, half of L2, a quarter
//!   of the L3 (from `/sys/devices/system/cpu/cpu0/cache`), the size of a 1M-flow table's
//!   flow and index slots, and 1 GiB.
//! - **Checksum CPI.** knits-core's `checksum::transport_ok` over a 1468-byte and a 20-byte
//!   segment; the difference in time over the difference in calibrated instructions (`data`'s
//!   checksum stage less `ack`'s): the checksum loop's own CPI, a chain of dependent adds.
//! - **Miss costs.** An L1d miss that hits the L2 costs the L2's latency less the L1's; one
//!   past the L2 the latency over four times the L2 less the L1's. The calibration counts the
//!   misses (callgrind's cache simulator); the model charges them one after another.
//! - **CPI.** The `ack` class run through `Switch::process` (the loop of `per_packet`), timed
//!   by the thread's time on the CPU (`/proc/thread-self/schedstat`), less the time the loop
//!   spends copying the frame ([`harness_ns`]);
//!   cycles per packet / the calibrated instructions of the class. This is the one figure
//!   fitted on the core: the validation (docs/np-sim.md) predicts the other classes with it.
//!
//! Every timing counts the thread's time on the CPU (`/proc/thread-self/schedstat`, else the
//! wall clock) over runs of about 0.4 s and takes the best of three, so that other processes
//! on a shared machine lengthen it as little as possible.

use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;

/// What the probe measured.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Core clock, MHz (shift-add chain).
    pub clock_mhz: f64,
    /// Core clock, MHz (or-imul chain), a cross-check.
    pub clock_mhz_mul: f64,
    /// (buffer bytes, nanoseconds per dependent load).
    pub latencies: Vec<(usize, f64)>,
    /// Bytes of a 1M-flow table (flow slots and index slots).
    pub table_1m_bytes: usize,
    /// Nanoseconds per dependent load over a buffer of `table_1m_bytes`.
    pub table_1m_ns: f64,
    /// Nanoseconds per dependent load over 1 GiB.
    pub dram_ns: f64,
    /// Bytes of the buffer for a load past the L2 (four times the L2).
    pub past_l2_bytes: usize,
    /// Nanoseconds per dependent load over it.
    pub past_l2_ns: f64,
    /// Nanoseconds of the core's TCP checksum check over 1448 more payload bytes.
    pub checksum_1448_ns: f64,
    /// The calibration's instructions for those bytes (`data`'s checksum stage less `ack`'s).
    pub checksum_1448_instructions: f64,
    /// Cycles per instruction of the checksum stage.
    pub checksum_cpi: f64,
    /// `ack` class: nanoseconds per packet through `Switch::process`, frame copy included.
    pub ack_ns: f64,
    /// Of which copying the frame into the buffer (the harness).
    pub ack_harness_ns: f64,
    /// Its calibrated instructions per packet.
    pub ack_instructions: f64,
    /// Cycles per instruction of the core on `ack`.
    pub cpi: f64,
    /// Load average when the probe ran (1, 5, 15 minutes), from /proc/loadavg.
    pub loadavg: String,
}

/// Nanoseconds `f` took: on the CPU where the kernel tells (see [`oncpu_ns`]), else the wall
/// clock.
fn timed_ns(f: impl FnOnce()) -> f64 {
    let (t, c0) = (Instant::now(), oncpu_ns());
    f();
    match (c0, oncpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64,
        _ => t.elapsed().as_secs_f64() * 1e9,
    }
}

/// MHz from a chain of `n` dependent squarings `x = x * (x | 1)` (or then imul: 4 cycles; the
/// compiler cannot shorten the chain because each factor is the previous result).
fn clock_imul(n: u64) -> f64 {
    (0..3)
        .map(|_| {
            let mut x = black_box(0x9e37_79b9_7f4a_7c15u64);
            let ns = timed_ns(|| {
                for _ in 0..black_box(n) {
                    x = x.wrapping_mul(x | 1);
                }
                black_box(x);
            });
            4.0 * n as f64 / ns * 1e3
        })
        .fold(0.0f64, f64::max)
}

/// MHz from a chain of `n` dependent shift-and-adds (2 cycles each).
fn clock_add(n: u64) -> f64 {
    (0..3)
        .map(|_| {
            let mut x = black_box(1u64);
            let ns = timed_ns(|| {
                for _ in 0..black_box(n) {
                    x = x.wrapping_add(x >> 3);
                }
                black_box(x);
            });
            2.0 * n as f64 / ns * 1e3
        })
        .fold(0.0f64, f64::max)
}

/// Nanoseconds per call of knits-core's TCP checksum check (`checksum::transport_ok`, the
/// function the switch verifies a segment with) over a `len`-byte segment, best of three.
pub fn checksum_ns(len: usize) -> f64 {
    let seg = vec![0x5au8; len];
    let n = (400_000_000 / len.max(20)).max(100_000);
    (0..3)
        .map(|_| {
            timed_ns(|| {
                for _ in 0..n {
                    black_box(knits_core::checksum::transport_ok(
                        black_box([198, 18, 0, 2]),
                        [198, 18, 0, 10],
                        6,
                        black_box(&seg[..]),
                    ));
                }
            }) / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Nanoseconds per dependent load over `bytes` of cache lines in a random cycle: each timed
/// run lasts about 0.4 s on the CPU.
pub fn chase_ns(bytes: usize) -> f64 {
    const LINE: usize = 8; // u64 per 64-byte line
    let lines = (bytes / 64).max(2);
    let mut next = vec![0u64; lines * LINE];
    // Sattolo: one cycle through every line.
    let mut perm: Vec<usize> = (0..lines).collect();
    let mut rng = crate::rng::Rng::new(7);
    for i in (1..lines).rev() {
        let j = rng.below(i as u64) as usize;
        perm.swap(i, j);
    }
    for i in 0..lines {
        next[perm[i] * LINE] = (perm[(i + 1) % lines] * LINE) as u64;
    }
    let chase = |hops: usize| {
        let mut p = black_box(0usize);
        let ns = timed_ns(|| {
            for _ in 0..hops {
                p = next[p] as usize;
            }
            black_box(p);
        });
        ns / hops as f64
    };
    // Warm the path (and the TLB) once, estimate, then time runs of ~0.4 s.
    chase(lines.min(1 << 22));
    let est = chase(200_000).max(0.1);
    let hops = ((0.4e9 / est) as usize).clamp(1_000_000, 400_000_000);
    (0..3).map(|_| chase(hops)).fold(f64::INFINITY, f64::min)
}

fn cache_bytes(level: u32) -> Option<usize> {
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let lv = std::fs::read_to_string(format!("{base}/level")).ok()?;
        let ty = std::fs::read_to_string(format!("{base}/type")).unwrap_or_default();
        if lv.trim() == level.to_string() && ty.trim() != "Instruction" {
            let s = std::fs::read_to_string(format!("{base}/size")).ok()?;
            let s = s.trim();
            let (num, mul) = match s.strip_suffix('K') {
                Some(n) => (n, 1024),
                None => match s.strip_suffix('M') {
                    Some(n) => (n, 1024 * 1024),
                    None => (s, 1),
                },
            };
            return num.parse::<usize>().ok().map(|n| n * mul);
        }
    }
    None
}

/// Nanoseconds this thread has run on a CPU (`/proc/thread-self/schedstat`, first field; the
/// kernel brings it up to date at each tick and context switch, so a run of 0.3 s or more is
/// off by about 1 % at most), or `None` where the file does not exist.
pub fn oncpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Nanoseconds per packet of `class` through `Switch::process`, best of several runs of `n`,
/// timed with the thread's time on the CPU where the kernel gives it (else the wall clock), so
/// that other processes on a shared machine lengthen it as little as possible.
pub fn time_class_ns(class: &str, n: usize) -> Result<f64, String> {
    use knits_core::switch::FrameMeta;
    let per_run = match class {
        "handoff" | "fakefin" => n.min(crate::classes::HANDOFFS),
        "syn" => n.min(100_000),
        _ => n,
    };
    let mut best_ns = f64::INFINITY;
    for _ in 0..5 {
        let mut run = crate::classes::setup(class, per_run)?;
        let mut buf = vec![0u8; run.max_len()];
        let t = Instant::now();
        let c0 = oncpu_ns();
        for i in 0..per_run {
            let (port, f) = run.frame(i);
            let frame = &mut buf[..f.len()];
            frame.copy_from_slice(f);
            black_box(run.sw.process(
                port,
                run.now,
                black_box(frame),
                FrameMeta::FULL,
                &mut knits_testkit::sink::Discard,
                &mut knits_core::meter::NoMeter,
            ));
        }
        let ns = match (c0, oncpu_ns()) {
            (Some(a), Some(b)) if b > a => (b - a) as f64,
            _ => t.elapsed().as_secs_f64() * 1e9,
        };
        best_ns = best_ns.min(ns / per_run as f64);
    }
    Ok(best_ns)
}

/// Nanoseconds per iteration of the benchmarks' harness alone for `class`: copy the frame into
/// the buffer (what every timed iteration does besides `Switch::process`), on the CPU.
pub fn harness_ns(class: &str) -> Result<f64, String> {
    let run = crate::classes::setup(if class == "ack-cold" { "ack" } else { class }, 3)?;
    let mut buf = vec![0u8; run.max_len()];
    let n = 20_000_000usize;
    let best = (0..3)
        .map(|_| {
            timed_ns(|| {
                for i in 0..n {
                    let (_, f) = run.frame(i);
                    let frame = &mut buf[..f.len()];
                    frame.copy_from_slice(f);
                    black_box(frame);
                }
            }) / n as f64
        })
        .fold(f64::INFINITY, f64::min);
    Ok(best)
}

/// Runs the probe (a few seconds; 1 GiB of memory for a moment).
pub fn run(log: &mut dyn FnMut(&str)) -> Result<Probe, String> {
    let clock_mhz = clock_add(600_000_000);
    let clock_mhz_mul = clock_imul(300_000_000);
    log(&format!(
        "clock: {clock_mhz:.0} MHz (shift-add chain), {clock_mhz_mul:.0} MHz (or-imul chain)"
    ));
    let mut latencies = Vec::new();
    for (level, share) in [(1, 2), (2, 2), (3, 4)] {
        if let Some(b) = cache_bytes(level) {
            let bytes = b / share;
            let ns = chase_ns(bytes);
            log(&format!("L{level}: {} KiB -> {ns:.2} ns", bytes / 1024));
            latencies.push((bytes, ns));
        }
    }
    let n = 1usize << 20;
    let table_1m_bytes = n * std::mem::size_of::<knits_core::table::FlowSlot>()
        + knits_core::switch::Storage::index_len_for(n)
            * std::mem::size_of::<knits_core::table::IndexSlot>();
    let table_1m_ns = chase_ns(table_1m_bytes);
    log(&format!(
        "1M-flow table, {} MiB -> {table_1m_ns:.1} ns",
        table_1m_bytes >> 20
    ));
    let dram_ns = chase_ns(1 << 30);
    log(&format!("1 GiB -> {dram_ns:.1} ns"));
    let past_l2_bytes = 4 * cache_bytes(2).unwrap_or(1 << 20);
    let past_l2_ns = chase_ns(past_l2_bytes);
    log(&format!(
        "past the L2, {} MiB -> {past_l2_ns:.1} ns",
        past_l2_bytes >> 20
    ));
    let cal = crate::calibration::Calibration::checked_in();
    let stage = |class: &str, s: &str| {
        cal.classes
            .get(class)
            .and_then(|k| k.stages.get(s))
            .copied()
            .unwrap_or(0.0)
    };
    let checksum_1448_instructions = stage("data", "checksum") - stage("ack", "checksum");
    let checksum_1448_ns = checksum_ns(20 + 1448) - checksum_ns(20);
    let checksum_cpi = if checksum_1448_instructions > 0.0 {
        checksum_1448_ns * clock_mhz / 1e3 / checksum_1448_instructions
    } else {
        0.0
    };
    log(&format!(
        "checksum: 1448 bytes in {checksum_1448_ns:.1} ns, {checksum_1448_instructions:.0} \
         instructions -> CPI {checksum_cpi:.3}"
    ));
    let ack_instructions = cal
        .classes
        .get("ack")
        .map(|k| k.instructions)
        .ok_or("calibration.toml has no ack class")?;
    let ack_ns = time_class_ns("ack", 5_000_000)?;
    let harness = harness_ns("ack")?;
    let cpi = (ack_ns - harness) * clock_mhz / 1e3 / ack_instructions;
    log(&format!(
        "ack: {ack_ns:.1} ns a packet ({harness:.1} of them copying the frame), \
         {ack_instructions:.0} instructions -> CPI {cpi:.3}"
    ));
    Ok(Probe {
        clock_mhz,
        clock_mhz_mul,
        latencies,
        table_1m_bytes,
        table_1m_ns,
        dram_ns,
        past_l2_bytes,
        past_l2_ns,
        checksum_1448_ns,
        checksum_1448_instructions,
        checksum_cpi,
        ack_ns,
        ack_harness_ns: harness,
        ack_instructions,
        cpi,
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    })
}

impl Probe {
    /// The `cpu` preset for this machine.
    pub fn machine_toml(&self) -> String {
        let cyc = |ns: f64| ns * self.clock_mhz / 1e3;
        let level = |i: usize| self.latencies.get(i).map_or(0.0, |l| l.1);
        let (l1, l2) = (level(0), level(1));
        let levels: String = self
            .latencies
            .iter()
            .map(|(b, ns)| {
                format!(
                    "#   {:>9} KiB: {ns:.2} ns = {:.1} cycles",
                    b / 1024,
                    cyc(*ns)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            r#"# This machine's core running the switch in a loop, as the criterion benchmarks do (no
# receive or transmit work). Written by `knits-np-sim probe --write` (src/probe.rs); the
# numbers are measured, not typed in. docs/np-sim.md, "The cpu preset".
#   clock: shift-add chain {clock:.0} MHz, or-imul chain {mul:.0} MHz
#   pointer chasing (ns per dependent load):
{levels}
#   1M-flow table ({tb} MiB): {t1:.1} ns = {t1c:.1} cycles; 1 GiB: {dr:.1} ns = {drc:.1} cycles
#   past the L2 ({pb} MiB): {pl:.1} ns = {plc:.1} cycles
#   checksum check over 1448 more bytes: {cns:.1} ns for {cins:.0} instructions: CPI {ccpi:.3}
#   ack class: {ackns:.1} ns a packet on the CPU, {harn:.1} ns of it copying the frame;
#   {acki:.0} instructions: CPI {cpi:.3} (the one figure fitted on the core)
#   load average while probing: {load}
name = "cpu"
description = "this machine's core at {clock:.0} MHz, 1 thread, CPI {cpi:.3} on the switch core (probe)"
clock_mhz = {clock:.1}
engines = 1
threads = 1
switch_cycles = 0.0
passes = "one"
completion = "order"
cpi = {cpi:.4}
isa_expansion = 1.0
checksum_cpi = {ccpi:.4}
# A data-cache miss of the calibration costs the load's latency less an L1 hit's (that one is
# inside the CPI): an L1 miss that hits the L2, and one past the L2.
l1_miss_cycles = {l1m:.1}
l2_miss_cycles = {l2m:.1}

[units.table]
description = "flow table in the caches: its loads are inside the CPI measured on ack"
latency = 0.0
occupancy = 0.0

[units.table_1m]
description = "a random load into a 1M-flow table (pointer chasing over its size)"
latency = {t1c:.1}
occupancy = 0.0

[units.dram]
description = "a random load over 1 GiB (pointer chasing)"
latency = {drc:.1}
occupancy = 0.0

[units.order]
description = "one thread keeps order by itself"
latency = 0.0
occupancy = 0.0

[ops]
# Instructions are charged from calibration.toml x cpi; the ops only visit memory.
step            = {{}}
bytes_read      = {{}}
table_probe     = {{ units = ["table"], visit_per_item = true }}
table_entry     = {{ units = ["table"], visit_per_item = true }}
bytes_rewritten = {{}}
checksum_words  = {{}}
option_bytes    = {{}}
generated       = {{}}
counter         = {{}}
mac_bytes       = {{}}
"#,
            clock = self.clock_mhz,
            mul = self.clock_mhz_mul,
            tb = self.table_1m_bytes >> 20,
            t1 = self.table_1m_ns,
            t1c = cyc(self.table_1m_ns),
            dr = self.dram_ns,
            drc = cyc(self.dram_ns),
            ackns = self.ack_ns,
            harn = self.ack_harness_ns,
            acki = self.ack_instructions,
            cpi = self.cpi,
            load = self.loadavg,
            pb = self.past_l2_bytes >> 20,
            pl = self.past_l2_ns,
            plc = cyc(self.past_l2_ns),
            cns = self.checksum_1448_ns,
            cins = self.checksum_1448_instructions,
            ccpi = self.checksum_cpi,
            l1m = (cyc(l2) - cyc(l1)).max(0.0),
            l2m = (cyc(self.past_l2_ns) - cyc(l1)).max(0.0),
        )
    }
}
