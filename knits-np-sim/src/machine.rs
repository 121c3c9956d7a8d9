//! Machine descriptions: engines, threads, clock, shared units and the cost of each metered
//! operation, read from TOML.
//!
//! A description never holds a per-packet cost. It holds what one *operation* of the real code
//! path costs on this machine (engine cycles per header byte read, one flow-table probe as a visit
//! to the search unit, ...); the simulator multiplies these by the counts that the knits-core
//! [`Meter`](knits_core::meter::Meter) recorded for each packet. docs/np-sim.md gives the source
//! or the assumption behind every number of the presets.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The preset names, in the order `--help` lists them.
pub const PRESETS: [&str; 3] = ["np4gs3", "ixp1200", "cpu"];

const NP4GS3: &str = include_str!("../machines/np4gs3.toml");
const IXP1200: &str = include_str!("../machines/ixp1200.toml");
const CPU: &str = include_str!("../machines/cpu.toml");

/// How many passes through the engines a frame makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Passes {
    /// One pass does everything (IXP1200, a CPU core).
    One,
    /// An ingress pass, then an egress pass (NP4GS3: ingress and egress EPC processing).
    Two,
}

/// One shared unit: a coprocessor, a memory, the dispatcher, the completion unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unit {
    /// What it is, for reports.
    #[serde(default)]
    pub description: String,
    /// One instance per this many engines (coprocessors of an NP4GS3 DPPU are shared by its two
    /// picoprocessors); 0 = a single instance shared by all engines.
    #[serde(default)]
    pub per_engines: u32,
    /// Independent banks (servers) per instance; a visit picks one by address (hash).
    #[serde(default = "one")]
    pub banks: u32,
    /// Cycles (engine clock) from issue to result, queueing excluded.
    pub latency: f64,
    /// Cycles a bank is busy per visit (the inverse of its throughput).
    pub occupancy: f64,
}

fn one() -> u32 {
    1
}

fn one_f() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// The cost of one metered operation (or of one piece of per-frame work).
///
/// A record counts `n` items (bytes, words, probes). Once per record:
/// `cycles + cycles_per_item * n` engine cycles, then one visit along `units` that keeps the first unit busy for its
/// `occupancy` plus `occupancy_per_item * n` cycles (and answers that much later). With
/// `visit_per_item` (dependent reads such as hash-chain probes): `cycles`, then per item
/// `cycles_per_item` and a visit with `occupancy_per_item` extra. With `wait` the thread yields
/// until the result is back; without, the visit is posted and the thread goes on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpCost {
    /// Engine cycles per record.
    #[serde(default)]
    pub cycles: f64,
    /// Engine cycles per item.
    #[serde(default)]
    pub cycles_per_item: f64,
    /// Units visited, in order (a path such as `["tse", "ctrl_mem"]`).
    #[serde(default)]
    pub units: Vec<String>,
    /// Visit once per item instead of once per record.
    #[serde(default)]
    pub visit_per_item: bool,
    /// Extra unit occupancy per item, for a visit per record.
    #[serde(default)]
    pub occupancy_per_item: f64,
    /// The thread waits for the visit's result.
    #[serde(default = "yes")]
    pub wait: bool,
    /// Count cells instead of bytes: with a value above 0, the items of a record of `n` bytes
    /// are `ceil((n + cell_extra) / cell_bytes)` cells (a frame cut into 64-byte data-store
    /// buffers or switch cells).
    #[serde(default)]
    pub cell_bytes: f64,
    /// Bytes added to the record before it is cut into cells (headers the cells carry).
    #[serde(default)]
    pub cell_extra: f64,
}

impl OpCost {
    /// The items a record of `n` counts for this cost: `n`, or its cells.
    pub fn items(&self, n: u32) -> u32 {
        if self.cell_bytes > 0.0 {
            ((n as f64 + self.cell_extra) / self.cell_bytes).ceil() as u32
        } else {
            n
        }
    }
}

/// Costs of the operations the knits-core meter records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ops {
    /// Entering a pipeline step (call, dispatch on the step's inputs).
    pub step: OpCost,
    /// Header bytes parsed.
    pub bytes_read: OpCost,
    /// Flow-table buckets probed.
    pub table_probe: OpCost,
    /// Flow-table entries read or written.
    pub table_entry: OpCost,
    /// Header bytes rewritten.
    pub bytes_rewritten: OpCost,
    /// 16-bit words through a checksum computation or update.
    pub checksum_words: OpCost,
    /// TCP option bytes walked.
    pub option_bytes: OpCost,
    /// A generated frame (items = its length).
    pub generated: OpCost,
    /// A counter increment.
    pub counter: OpCost,
    /// Bytes through the keyed MAC.
    pub mac_bytes: OpCost,
}

/// Per-frame work outside the knits-core steps (items = frame length in bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameWork {
    /// Once per frame, at the start of its first pass (receive into memory).
    #[serde(default)]
    pub receive: Vec<OpCost>,
    /// At the start of every pass (dispatch, header fetch).
    #[serde(default)]
    pub pass_start: Vec<OpCost>,
    /// At the end of every pass (enqueue, header write-back).
    #[serde(default)]
    pub pass_end: Vec<OpCost>,
    /// Once per frame, at the end of its last pass (transmit from memory).
    #[serde(default)]
    pub transmit: Vec<OpCost>,
    /// Once per frame that makes an egress pass, after its ingress pass: the hand-over from the
    /// ingress to the egress side (NP4GS3: ingress data store -> switch interface -> egress
    /// data store).
    #[serde(default)]
    pub switch: Vec<OpCost>,
}

/// A whole machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Short name.
    pub name: String,
    /// One line on what it models.
    #[serde(default)]
    pub description: String,
    /// Engine clock in MHz; all cycle figures are in this clock.
    pub clock_mhz: f64,
    /// Packet engines (picoprocessors, microengines, cores).
    pub engines: u32,
    /// Hardware threads per engine.
    pub threads: u32,
    /// Engine cycles lost when an engine switches to another thread.
    #[serde(default)]
    pub switch_cycles: f64,
    /// Engine cycles per instruction of knits-core's code: each packet is charged, per stage,
    /// the instructions its class takes in the compiled core (`calibration.toml`) times this
    /// and `isa_expansion`. 0 = charge no calibrated instructions (the op table's cycles only).
    #[serde(default)]
    pub cpi: f64,
    /// The engine's instructions per instruction of the calibration's (x86-64) count: 1 for
    /// the CPU the core was counted on; for a network-processor engine an assumption
    /// (docs/np-sim.md, sensitivity table).
    #[serde(default = "one_f")]
    pub isa_expansion: f64,
    /// Cycles per instruction of the `checksum` stage where it was measured apart (a chain of
    /// dependent adds runs at a lower IPC than the rest of the core); 0 = `cpi`.
    #[serde(default)]
    pub checksum_cpi: f64,
    /// Cycles charged for each data-cache miss of the calibration that hits the L2 (a CPU
    /// preset: the probed L2 latency). 0 on a network processor, whose memory is its units.
    #[serde(default)]
    pub l1_miss_cycles: f64,
    /// Cycles charged for each data-cache miss of the calibration that also misses the L2.
    #[serde(default)]
    pub l2_miss_cycles: f64,
    /// Calibration stages the engine does not execute because a coprocessor does them (the
    /// meter's records of that work still visit the coprocessor's unit).
    #[serde(default)]
    pub offload: Vec<String>,
    /// One pass or ingress + egress passes.
    pub passes: Passes,
    /// With two passes: the steps done in the egress pass (the rest go in the ingress pass).
    #[serde(default)]
    pub egress_steps: Vec<String>,
    /// With two passes: the last this many engines only do egress passes and the others only
    /// ingress passes (the IXP1200 input and output microengines); 0 = every engine does both.
    #[serde(default)]
    pub egress_engines: u32,
    /// The unit that restores per-flow order before frames leave (a name in `units`).
    #[serde(default)]
    pub completion: Option<String>,
    /// Shared units by name.
    pub units: BTreeMap<String, Unit>,
    /// Costs of the metered operations.
    pub ops: Ops,
    /// Per-frame work.
    #[serde(default)]
    pub frame: FrameWork,
}

/// A machine description that cannot be used, with what to fix.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineError {
    /// Where (file or preset name).
    pub origin: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "machine description {}: {}", self.origin, self.message)
    }
}

impl std::error::Error for MachineError {}

/// Upper bounds that keep a description from exhausting memory.
const MAX_ENGINES: u32 = 4096;
const MAX_THREADS: u32 = 64;
const MAX_BANKS: u32 = 1024;

impl Machine {
    /// A preset by name (`np4gs3`, `ixp1200`, `cpu`).
    pub fn preset(name: &str) -> Result<Machine, MachineError> {
        let text = match name {
            "np4gs3" => NP4GS3,
            "ixp1200" => IXP1200,
            "cpu" => CPU,
            _ => {
                return Err(MachineError {
                    origin: name.to_string(),
                    message: format!(
                        "no preset of that name; use one of {} or a path to a .toml file",
                        PRESETS.join(", ")
                    ),
                });
            }
        };
        Machine::from_toml(text, &format!("preset {name}"))
    }

    /// A preset name, or else a TOML file path.
    pub fn load(name_or_path: &str) -> Result<Machine, MachineError> {
        if PRESETS.contains(&name_or_path) {
            return Machine::preset(name_or_path);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| MachineError {
            origin: name_or_path.to_string(),
            message: format!(
                "cannot read it ({e}); give a preset ({}) or a readable .toml file",
                PRESETS.join(", ")
            ),
        })?;
        Machine::from_toml(&text, name_or_path)
    }

    /// Parses and validates a description.
    pub fn from_toml(text: &str, origin: &str) -> Result<Machine, MachineError> {
        let m: Machine = toml::from_str(text).map_err(|e| MachineError {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        m.validate().map_err(|message| MachineError {
            origin: origin.to_string(),
            message,
        })?;
        Ok(m)
    }

    /// The preset's TOML text, for `knits-np-sim machines --show`.
    pub fn preset_text(name: &str) -> Option<&'static str> {
        match name {
            "np4gs3" => Some(NP4GS3),
            "ixp1200" => Some(IXP1200),
            "cpu" => Some(CPU),
            _ => None,
        }
    }

    /// Checks ranges and names; the error says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.clock_mhz.is_finite() && self.clock_mhz > 0.0) {
            return Err(format!(
                "clock_mhz = {} must be a positive number",
                self.clock_mhz
            ));
        }
        if self.engines == 0 || self.engines > MAX_ENGINES {
            return Err(format!(
                "engines = {} must be in 1..={MAX_ENGINES}",
                self.engines
            ));
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(format!(
                "threads = {} must be in 1..={MAX_THREADS}",
                self.threads
            ));
        }
        check_cycles("switch_cycles", self.switch_cycles)?;
        if !(self.cpi.is_finite() && (0.0..=100.0).contains(&self.cpi)) {
            return Err(format!(
                "cpi = {} must be in 0..=100 (0 = no calibrated instructions)",
                self.cpi
            ));
        }
        if !(self.checksum_cpi.is_finite() && (0.0..=100.0).contains(&self.checksum_cpi)) {
            return Err(format!(
                "checksum_cpi = {} must be in 0..=100 (0 = cpi)",
                self.checksum_cpi
            ));
        }
        check_cycles("l1_miss_cycles", self.l1_miss_cycles)?;
        check_cycles("l2_miss_cycles", self.l2_miss_cycles)?;
        if !(self.isa_expansion.is_finite() && (0.1..=10.0).contains(&self.isa_expansion)) {
            return Err(format!(
                "isa_expansion = {} must be in 0.1..=10",
                self.isa_expansion
            ));
        }
        for s in &self.offload {
            if !crate::calibration::STAGES.contains(&s.as_str()) {
                return Err(format!(
                    "offload names \"{s}\", which is not a stage; stages are {}",
                    crate::calibration::STAGES.join(", ")
                ));
            }
        }
        for (name, u) in &self.units {
            if u.banks == 0 || u.banks > MAX_BANKS {
                return Err(format!(
                    "units.{name}.banks = {} must be in 1..={MAX_BANKS}",
                    u.banks
                ));
            }
            if u.per_engines > MAX_ENGINES {
                return Err(format!(
                    "units.{name}.per_engines = {} is too large",
                    u.per_engines
                ));
            }
            check_cycles(&format!("units.{name}.latency"), u.latency)?;
            check_cycles(&format!("units.{name}.occupancy"), u.occupancy)?;
            if u.occupancy > u.latency {
                return Err(format!(
                    "units.{name}: occupancy {} exceeds latency {}; a visit cannot keep the unit \
                     busy longer than it takes to answer (raise latency or lower occupancy)",
                    u.occupancy, u.latency
                ));
            }
        }
        let steps: Vec<&str> = knits_core::meter::Step::ALL
            .iter()
            .map(|s| s.name())
            .collect();
        match self.passes {
            Passes::One => {
                if !self.egress_steps.is_empty() {
                    return Err(
                        "egress_steps is set but passes = \"one\"; remove it or set \
                                passes = \"two\""
                            .to_string(),
                    );
                }
                if self.egress_engines > 0 {
                    return Err(
                        "egress_engines is set but passes = \"one\"; remove it or set \
                                passes = \"two\""
                            .to_string(),
                    );
                }
                if !self.frame.switch.is_empty() {
                    return Err("frame.switch is set but passes = \"one\"; it runs between \
                                the two passes"
                        .to_string());
                }
            }
            Passes::Two => {
                if self.egress_engines >= self.engines {
                    return Err(format!(
                        "egress_engines = {} leaves no engine for ingress passes; it must be \
                         below engines = {}",
                        self.egress_engines, self.engines
                    ));
                }
                for s in &self.egress_steps {
                    if !steps.contains(&s.as_str()) {
                        return Err(format!(
                            "egress_steps names \"{s}\", which is not a step; steps are {}",
                            steps.join(", ")
                        ));
                    }
                }
            }
        }
        if let Some(c) = &self.completion
            && !self.units.contains_key(c)
        {
            return Err(format!(
                "completion = \"{c}\" is not a unit; add [units.{c}]"
            ));
        }
        for (name, op) in self.all_ops() {
            self.check_op(&name, op)?;
        }
        Ok(())
    }

    fn check_op(&self, name: &str, op: &OpCost) -> Result<(), String> {
        check_cycles(&format!("{name}.cycles"), op.cycles)?;
        check_cycles(&format!("{name}.cycles_per_item"), op.cycles_per_item)?;
        check_cycles(&format!("{name}.occupancy_per_item"), op.occupancy_per_item)?;
        if !(op.cell_bytes.is_finite() && (0.0..=65536.0).contains(&op.cell_bytes)) {
            return Err(format!(
                "{name}.cell_bytes = {} must be 0 (count bytes) or a cell size up to 65536",
                op.cell_bytes
            ));
        }
        if !(op.cell_extra.is_finite() && (0.0..=65536.0).contains(&op.cell_extra)) {
            return Err(format!(
                "{name}.cell_extra = {} must be a number of bytes in 0..=65536",
                op.cell_extra
            ));
        }
        for u in &op.units {
            if !self.units.contains_key(u) {
                let known: Vec<&str> = self.units.keys().map(|s| s.as_str()).collect();
                return Err(format!(
                    "{name} visits unit \"{u}\", which is not defined; defined units: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        if op.units.len() > 8 {
            return Err(format!("{name} visits more than 8 units in one path"));
        }
        Ok(())
    }

    /// Every operation cost with its name in the description, for validation and reports.
    pub fn all_ops(&self) -> Vec<(String, &OpCost)> {
        let o = &self.ops;
        let mut v: Vec<(String, &OpCost)> = vec![
            ("ops.step".into(), &o.step),
            ("ops.bytes_read".into(), &o.bytes_read),
            ("ops.table_probe".into(), &o.table_probe),
            ("ops.table_entry".into(), &o.table_entry),
            ("ops.bytes_rewritten".into(), &o.bytes_rewritten),
            ("ops.checksum_words".into(), &o.checksum_words),
            ("ops.option_bytes".into(), &o.option_bytes),
            ("ops.generated".into(), &o.generated),
            ("ops.counter".into(), &o.counter),
            ("ops.mac_bytes".into(), &o.mac_bytes),
        ];
        let f = &self.frame;
        for (list, name) in [
            (&f.receive, "frame.receive"),
            (&f.pass_start, "frame.pass_start"),
            (&f.pass_end, "frame.pass_end"),
            (&f.transmit, "frame.transmit"),
            (&f.switch, "frame.switch"),
        ] {
            for (i, op) in list.iter().enumerate() {
                v.push((format!("{name}[{i}]"), op));
            }
        }
        v
    }

    /// Instances of unit `u` with this many engines.
    pub fn instances(&self, u: &Unit) -> u32 {
        if u.per_engines == 0 {
            1
        } else {
            self.engines.div_ceil(u.per_engines)
        }
    }

    /// A copy with a different engine or thread count (for sweeps).
    pub fn with_shape(&self, engines: u32, threads: u32) -> Result<Machine, String> {
        let mut m = self.clone();
        m.engines = engines;
        m.threads = threads;
        if self.egress_engines > 0 {
            // Keep the share of egress engines; one engine does both passes.
            m.egress_engines = if engines < 2 {
                0
            } else {
                ((engines as f64 * self.egress_engines as f64 / self.engines as f64).round() as u32)
                    .clamp(1, engines - 1)
            };
        }
        m.validate()?;
        Ok(m)
    }
}

fn check_cycles(name: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=1.0e7).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{name} = {v} must be a number of cycles in 0..=10000000"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        for p in PRESETS {
            let m = Machine::preset(p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(m.name, p);
        }
        let np = Machine::preset("np4gs3").unwrap();
        assert_eq!((np.engines, np.threads, np.clock_mhz), (16, 2, 133.0));
        let ixp = Machine::preset("ixp1200").unwrap();
        assert_eq!((ixp.engines, ixp.threads, ixp.clock_mhz), (6, 4, 200.0));
        let cpu = Machine::preset("cpu").unwrap();
        // Measured by `knits-np-sim probe`: one core, a clock and a CPI, whatever they are here.
        assert_eq!(cpu.engines, 1);
        assert!(cpu.clock_mhz > 100.0 && cpu.cpi > 0.0);
    }

    fn err(text: &str) -> String {
        Machine::from_toml(text, "test.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        let good = Machine::preset_text("ixp1200").unwrap();
        // Unknown unit in an op.
        let t = good.replace("units = [\"scratch\"]", "units = [\"sramm\"]");
        let e = err(&t);
        assert!(e.contains("\"sramm\", which is not defined"), "{e}");
        // Zero engines.
        let t = good.replace("engines = 6", "engines = 0");
        assert!(err(&t).contains("engines = 0 must be in 1..="));
        // A typo in a key is caught by the parser with its place.
        let t = good.replace("clock_mhz", "clock_mz");
        let e = err(&t);
        assert!(e.contains("clock_mz") && e.contains("test.toml"), "{e}");
        // Not TOML at all.
        let e = err("engines = [");
        assert!(e.starts_with("machine description test.toml:"), "{e}");
        // Negative cost.
        let t = good.replacen("cycles = 12.0", "cycles = -1.0", 1);
        assert!(err(&t).contains("must be a number of cycles"));
        // Unknown preset.
        let e = Machine::load("np9").unwrap_err().to_string();
        assert!(e.contains("cannot read it") && e.contains("np4gs3"), "{e}");
    }

    #[test]
    fn cells_and_roles_are_checked() {
        let c = OpCost {
            cell_bytes: 58.0,
            cell_extra: 10.0,
            ..Default::default()
        };
        assert_eq!(c.items(48), 1);
        assert_eq!(c.items(49), 2);
        assert_eq!(c.items(60), 2);
        assert_eq!(OpCost::default().items(60), 60);
        let good = Machine::preset_text("ixp1200").unwrap();
        let t = good.replace("egress_engines = 2", "egress_engines = 6");
        assert!(
            err(&t).contains("leaves no engine for ingress"),
            "{}",
            err(&t)
        );
        let np = Machine::preset_text("np4gs3").unwrap();
        let t = np.replace("passes = \"two\"", "passes = \"one\"");
        let t = t.replace("egress_steps = [\"rewrite\", \"verdict\"]", "");
        assert!(err(&t).contains("frame.switch is set"), "{}", err(&t));
    }

    #[test]
    fn egress_steps_are_checked() {
        let good = Machine::preset_text("np4gs3").unwrap();
        let t = good.replace(
            "egress_steps = [\"rewrite\", \"verdict\"]",
            "egress_steps = [\"rewrit\"]",
        );
        assert!(err(&t).contains("\"rewrit\", which is not a step"));
    }
}
