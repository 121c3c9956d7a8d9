//! Validation on the machine this runs on: the `cpu` preset's prediction of the time per packet
//! of every class beside criterion's measurement of the same class
//! (`cargo bench -p knits-np-sim --bench classes`), and of cold lookups at 1M flows beside
//! knits-core's lookup and burst benchmarks.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::calibration::{self, CLASSES, Calibration};
use crate::machine::Machine;
use crate::model::{Program, RunOptions};
use crate::trace::TraceSet;

/// One row of the validation table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is compared.
    pub name: String,
    /// Calibrated instructions per packet (0 where not applicable).
    pub instructions: f64,
    /// The model's time per packet, ns.
    pub predicted_ns: f64,
    /// The same with the calibrated cache misses left free (the lower end of the bracket the
    /// misses span: charged one after another they are its upper end).
    pub without_misses_ns: f64,
    /// Criterion's median, ns (None when the benchmark has not been run).
    pub measured_ns: Option<f64>,
    /// Where the measurement comes from.
    pub bench: String,
    /// Allowed error.
    pub target: f64,
}

impl Row {
    /// predicted / measured - 1.
    pub fn error(&self) -> Option<f64> {
        self.measured_ns.map(|m| self.predicted_ns / m - 1.0)
    }
}

/// Criterion's median estimate of a benchmark, ns, from `<criterion>/<id>/new/estimates.json`.
pub fn criterion_median(criterion: &Path, id: &str) -> Option<f64> {
    let p = criterion.join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(p).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// The criterion output folder of this workspace (`$CARGO_TARGET_DIR/criterion`, else
/// `target/criterion`).
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| calibration::workspace_root().join("target"))
        .join("criterion")
}

/// Nanoseconds per packet the model gives for one class's trace on `m` (one engine, one
/// thread: the serial sum of its costs).
pub fn predict_ns(m: &Machine, t: &TraceSet, cal: &Calibration) -> f64 {
    let r = Program::with_calibration(m, t, cal).run(1000, &RunOptions::default());
    1e9 / r.pps
}

/// `m` with the flow table's loads going to unit `unit` (a 1M-flow table instead of a hot one).
pub fn with_table_unit(m: &Machine, unit: &str) -> Machine {
    let mut c = m.clone();
    c.ops.table_probe.units = vec![unit.to_string()];
    c.ops.table_entry.units = vec![unit.to_string()];
    c
}

/// The validation table.
/// `group` is the criterion group: `class` (wall-clock time) or `class_oncpu` (time on the
/// CPU, which other processes on a shared machine lengthen less).
pub fn rows(
    m: &Machine,
    cal: &Calibration,
    criterion: &Path,
    group: &str,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let traces = calibration::class_traces(&CLASSES)?;
    let mut free = m.clone();
    (free.l1_miss_cycles, free.l2_miss_cycles) = (0.0, 0.0);
    // The benchmark copies each frame before processing it: measured here and added, as the
    // probe took it out of the CPI.
    let harness: Vec<f64> = CLASSES
        .iter()
        .map(|c| crate::probe::harness_ns(c))
        .collect::<Result<_, _>>()?;
    for (i, class) in CLASSES.iter().enumerate() {
        let mut t = TraceSet::default();
        let p = traces.packets[i];
        t.recs = traces.recs_of(&p).to_vec();
        t.packets.push(crate::trace::PacketTrace {
            start: 0,
            flow: 0,
            ..p
        });
        t.flows = 1;
        rows.push(Row {
            name: class.to_string(),
            instructions: cal
                .classes
                .get(*class)
                .map(|k| k.instructions)
                .unwrap_or(0.0),
            predicted_ns: predict_ns(m, &t, cal) + harness[i],
            without_misses_ns: predict_ns(&free, &t, cal) + harness[i],
            measured_ns: criterion_median(criterion, &format!("{group}/{class}")),
            bench: format!("knits-np-sim classes: {group}/{class}"),
            target: 0.20,
        });
    }
    // Cold lookups at 1M flows: the ack-cold class with the table's loads at the latency of a
    // random load over a 1M-flow table.
    if m.units.contains_key("table_1m") {
        let cold = CLASSES.iter().position(|c| *c == "ack-cold").unwrap_or(0);
        let mut t = TraceSet::default();
        let p = traces.packets[cold];
        t.recs = traces.recs_of(&p).to_vec();
        t.packets.push(crate::trace::PacketTrace {
            start: 0,
            flow: 0,
            ..p
        });
        t.flows = 1;
        // Its misses past the L2 go to the 1M-flow table, not to a buffer of four L2s: charged
        // at the table's probed latency. Where the calibration has no miss counts (an old
        // file), the table's two loads are charged as visits instead.
        let has_misses = cal
            .classes
            .get("ack-cold")
            .is_some_and(|k| k.l2_misses > 0.0);
        let cold_m = if has_misses && m.l2_miss_cycles > 0.0 {
            let mut c = m.clone();
            c.l2_miss_cycles = m.units["table_1m"].latency;
            c
        } else {
            with_table_unit(m, "table_1m")
        };
        let cold_ns = predict_ns(&cold_m, &t, cal) + harness[cold];
        let cold_free = predict_ns(&free, &t, cal) + harness[cold];
        if let Some(r) = rows.iter_mut().find(|r| r.name == "ack-cold") {
            r.predicted_ns = cold_ns;
            r.without_misses_ns = cold_free;
            r.target = 0.25;
        }
        rows.push(Row {
            name: "ack-cold, knits-core's burst bench".into(),
            instructions: cal
                .classes
                .get("ack-cold")
                .map(|k| k.instructions)
                .unwrap_or(0.0),
            predicted_ns: cold_ns,
            without_misses_ns: cold_free,
            measured_ns: criterion_median(criterion, "burst32/process_one_by_one_1000000")
                .map(|v| v / 32.0),
            bench: "knits-core pipeline: burst32/process_one_by_one/1000000 / 32 (wall)".into(),
            target: 0.25,
        });
        // A bare lookup: the lookup stage's instructions of an ACK plus its two dependent loads
        // (index slot, flow slot).
        let lookup = cal
            .classes
            .get("ack")
            .and_then(|k| k.stages.get("lookup"))
            .copied()
            .unwrap_or(0.0);
        let lat = m.units["table_1m"].latency;
        rows.push(Row {
            name: "lookup at 1M flows".into(),
            instructions: lookup,
            predicted_ns: (lookup * m.cpi + 2.0 * lat) / m.clock_mhz * 1e3,
            without_misses_ns: lookup * m.cpi / m.clock_mhz * 1e3,
            measured_ns: criterion_median(criterion, "lookup/1000000"),
            bench: "knits-core pipeline: lookup/1000000 (wall)".into(),
            target: 0.25,
        });
    }
    Ok(rows)
}

/// The table as markdown.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| class | instructions | predicted ns | without misses ns | measured ns (criterion median) | error | target | benchmark |\n|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let (m, e) = match (r.measured_ns, r.error()) {
            (Some(m), Some(e)) => (
                format!("{m:.1}"),
                format!(
                    "{:+.0} %{}",
                    e * 100.0,
                    if e.abs() <= r.target { "" } else { " **miss**" }
                ),
            ),
            _ => ("not run".into(), String::new()),
        };
        s += &format!(
            "| {} | {:.0} | {:.1} | {:.1} | {m} | {e} | {:.0} % | {} |\n",
            r.name,
            r.instructions,
            r.predicted_ns,
            r.without_misses_ns,
            r.target * 100.0,
            r.bench
        );
    }
    s
}
