//! Sweeps over engines or threads: the same traces on machines of different shape, as CSV and an
//! SVG plot of packets per second with the linear-scaling line for reference.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::machine::Machine;
use crate::model::{Program, RunOptions};
use crate::trace::TraceSet;

/// What a sweep varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// Engines (threads per engine fixed).
    Engines,
    /// Threads per engine (engines fixed).
    Threads,
}

impl Over {
    /// The name on the command line and in the CSV header.
    pub fn name(self) -> &'static str {
        match self {
            Over::Engines => "engines",
            Over::Threads => "threads",
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Engines.
    pub engines: u32,
    /// Threads per engine.
    pub threads: u32,
    /// Packets per second.
    pub pps: f64,
    /// Connections per second.
    pub connections_per_s: f64,
    /// Mean engine busy share.
    pub engine_util: f64,
    /// The busiest unit and its busy share (busiest server).
    pub top_unit: String,
    /// Its busy share.
    pub top_unit_util: f64,
    /// What limits the rate.
    pub bottleneck: String,
}

/// Runs `traces` on `base` reshaped to each value.
pub fn run(
    base: &Machine,
    traces: &TraceSet,
    over: Over,
    values: &[u32],
    packets: u64,
) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for &v in values {
        let (e, t) = match over {
            Over::Engines => (v, base.threads),
            Over::Threads => (base.engines, v),
        };
        let m = base
            .with_shape(e, t)
            .map_err(|err| format!("{} = {v}: {err}", over.name()))?;
        let r = Program::new(&m, traces).run(packets, &RunOptions::default());
        let top = r
            .units
            .iter()
            .max_by(|a, b| a.util_max.total_cmp(&b.util_max))
            .map(|u| (u.unit.clone(), u.util_max))
            .unwrap_or_default();
        rows.push(Row {
            engines: e,
            threads: t,
            pps: r.pps,
            connections_per_s: r.connections_per_s,
            engine_util: r.engine_util_mean,
            top_unit: top.0,
            top_unit_util: top.1,
            bottleneck: r.bottleneck,
        });
    }
    Ok(rows)
}

/// The rows as CSV.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "engines,threads,pps,connections_per_s,engine_util,top_unit,top_unit_util,bottleneck\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{:.0},{:.0},{:.4},{},{:.4},\"{}\"",
            r.engines,
            r.threads,
            r.pps,
            r.connections_per_s,
            r.engine_util,
            r.top_unit,
            r.top_unit_util,
            r.bottleneck.replace('"', "'")
        );
    }
    s
}

/// Plots packets/s over the swept value, with the line of perfect scaling from the first point.
pub fn plot(rows: &[Row], over: Over, title: &str, path: &Path) -> Result<(), String> {
    if rows.is_empty() {
        return Err("nothing to plot".into());
    }
    let x = |r: &Row| match over {
        Over::Engines => r.engines as f64,
        Over::Threads => r.threads as f64,
    };
    let xmax = rows.iter().map(x).fold(1.0, f64::max);
    let ymax = rows.iter().map(|r| r.pps / 1e6).fold(0.0, f64::max) * 1.15;
    let first = &rows[0];
    let per_unit = first.pps / 1e6 / x(first);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    let e = |err: &dyn std::fmt::Display| format!("plot {}: {err}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax * 1.05, 0.0..ymax.max(1e-3))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(over.name())
        .y_desc("Mpackets/s")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (x(r), (per_unit * x(r)).min(ymax))),
            ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
        ))
        .map_err(|x| e(&x))?
        .label("linear scaling from the first point")
        .legend(|(a, b)| PathElement::new(vec![(a, b), (a + 20, b)], RGBColor(150, 150, 150)));
    chart
        .draw_series(LineSeries::new(
            rows.iter().map(|r| (x(r), r.pps / 1e6)),
            BLUE.stroke_width(2),
        ))
        .map_err(|x| e(&x))?
        .label("simulated")
        .legend(|(a, b)| PathElement::new(vec![(a, b), (a + 20, b)], BLUE));
    chart
        .draw_series(
            rows.iter()
                .map(|r| Circle::new((x(r), r.pps / 1e6), 4, BLUE.filled())),
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
