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
//!
//! ## Modules
//! - `program`: traces compiled into compute bursts and unit visits for one machine.
//! - `sim`: the event loop that runs a program on the engines, threads and units.
//! - `calendar`: the booking calendar of one unit server.
//! - `results`: run options, the reported figures and the bottleneck's name.

mod calendar;
mod program;
mod results;
mod sim;

use knits_core::meter::Step;

pub use program::Program;
pub use results::{Dist, Progress, RunOptions, SimResult, StepStat, UnitStat};

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::calibration::{self, Calibration};
    use crate::machine::{Machine, OpCost};
    use crate::trace::{Outcome, TraceMeter, TraceSet};
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
        // The checksum stage at its own CPI, and the class's cache misses at the miss costs.
        m.offload.clear();
        m.checksum_cpi = 3.0;
        (m.l1_miss_cycles, m.l2_miss_cycles) = (20.0, 300.0);
        let mut with_misses = cal.clone();
        let h = with_misses.classes.get_mut("data").unwrap();
        (h.l1_misses, h.l2_misses) = (4.0, 0.5);
        let r = Program::with_calibration(&m, &one, &with_misses).run(100, &RunOptions::default());
        let want = 2.0 * (k.instructions - k.stages["checksum"])
            + 3.0 * k.stages["checksum"]
            + 4.0 * 20.0
            + 0.5 * 300.0;
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
