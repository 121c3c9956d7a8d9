//! Plots in the style of the paper's Figures 6, 7 and 8 (SVG and PNG, plotters), three panels:
//! this run (value against response size, one line per scenario, error bars from the kept
//! runs' spread); the paper's figure on the same axes, as far as its text gives it (the curves
//! themselves are images the text does not hold: each scenario's stated value at its stated
//! size, and for Fig. 6 the plateau the text describes, dashed; see [`crate::paper`]); and
//! each stated value against the paper's Direct beside the same ratio from this run. A
//! scenario has the same colour in every panel.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::paper;
use crate::report::{Measure, Point, find, sizes_of};
use crate::scenario::size_label;
use crate::stats::Trimmed;

/// Fonts tried for the PNG text (plotters' `ab_glyph` backend needs a TTF file).
pub const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = FONTS
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or_else(|| {
                format!(
                    "no font for the plots' text (looked for {}; apt-get install fonts-dejavu-core)",
                    FONTS.join(", ")
                )
            })?;
        let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, leaked)
            .map_err(|_| "the font file is not a usable TTF".to_string())
    })
    .clone()
}

/// One line of a figure: the scenario and its points (size, mean, min, max).
pub type Series = (String, Vec<(f64, f64, f64, f64)>);

/// One figure's data.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`fig6-throughput`).
    pub stem: &'static str,
    /// Title of the left panel.
    pub title: String,
    /// Y axis label.
    pub y_label: &'static str,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// Per scenario: (size, mean, min, max).
    pub series: Vec<Series>,
    /// Middle panel: the paper's stated values (scenario, value in the left panel's unit).
    pub paper: Vec<(String, f64)>,
    /// Middle panel: the response size the values are stated at, bytes.
    pub paper_at: f64,
    /// Middle panel: draw each value as a plateau from this size to `paper_at` (Fig. 6).
    pub paper_plateau_from: Option<f64>,
    /// Middle panel title.
    pub paper_title: String,
    /// Right panel: per scenario (paper / paper Direct, this run / this run Direct).
    pub compare: Vec<(String, f64, f64)>,
    /// Right panel title.
    pub compare_title: String,
}

/// A scenario's colour, the same in every panel and figure.
pub fn colour(scenario: &str) -> RGBAColor {
    let i = crate::scenario::ALL
        .iter()
        .position(|s| s.name == scenario)
        .unwrap_or(crate::scenario::ALL.len());
    Palette99::pick(i).to_rgba()
}

fn paper_points(table: &[(&str, f64)], scale: f64) -> Vec<(String, f64)> {
    table
        .iter()
        .map(|(s, v)| (s.to_string(), v * scale))
        .collect()
}

fn series(
    points: &[Point],
    measure: Measure,
    f: fn(&Point) -> &Option<Trimmed>,
    scale: f64,
) -> Vec<Series> {
    let mut names: Vec<String> = Vec::new();
    for p in points.iter().filter(|p| p.measure == measure) {
        if !names.contains(&p.scenario) {
            names.push(p.scenario.clone());
        }
    }
    names
        .into_iter()
        .map(|s| {
            let v = sizes_of(points, measure)
                .into_iter()
                .filter_map(|z| {
                    let t = (*f(find(points, &s, measure, z)?))?;
                    Some((z as f64, t.mean * scale, t.min * scale, t.max * scale))
                })
                .collect();
            (s, v)
        })
        .collect()
}

fn compare(
    points: &[Point],
    table: &[(&str, f64)],
    measure: Measure,
    size: Option<u64>,
    f: fn(&Point) -> &Option<Trimmed>,
) -> Vec<(String, f64, f64)> {
    let ours = |s: &str| {
        size.and_then(|z| find(points, s, measure, z))
            .and_then(|p| f(p).map(|t| t.mean))
    };
    let (pd, od) = (paper::value(table, "direct"), ours("direct"));
    table
        .iter()
        .map(|(s, v)| {
            let p = pd.map_or(f64::NAN, |d| v / d);
            let o = match (ours(s), od) {
                (Some(a), Some(b)) if b != 0.0 => a / b,
                _ => f64::NAN,
            };
            (s.to_string(), p, o)
        })
        .collect()
}

/// The three figures of this run.
pub fn figures(points: &[Point]) -> Vec<Figure> {
    let serial = sizes_of(points, Measure::Serial);
    let big = serial.last().copied();
    let k64 = Some(64 << 10).filter(|z| serial.contains(z));
    let cps64 = Some(64 << 10).filter(|z| sizes_of(points, Measure::Cps).contains(z));
    vec![
        Figure {
            stem: "fig6-throughput",
            title: "Fig. 6 (this run): response throughput, 1 connection, serialized".into(),
            y_label: "Mbit/s (response bytes)",
            log_y: false,
            series: series(points, Measure::Serial, |p| &p.mbit_s, 1.0),
            paper: paper_points(paper::FIG6_MAX_MBIT, 1.0),
            paper_at: paper::FIG6_AT as f64,
            paper_plateau_from: Some(paper::FIG6_PLATEAU_FROM as f64),
            paper_title: "the paper's Fig. 6 as its text gives it (Mbit/s)".into(),
            compare: compare(points, paper::FIG6_MAX_MBIT, Measure::Serial, big, |p| {
                &p.mbit_s
            }),
            compare_title: format!(
                "vs Direct: paper (max, 32 MB) and this run ({})",
                big.map_or("-".into(), size_label)
            ),
        },
        Figure {
            stem: "fig7-latency",
            title: "Fig. 7 (this run): request latency p50, 1 connection".into(),
            y_label: "ms (p50)",
            log_y: true,
            series: series(points, Measure::Serial, |p| &p.p50_us, 1e-3),
            paper: paper_points(paper::FIG7_64K_MS, 1.0),
            paper_at: paper::FIG7_AT as f64,
            paper_plateau_from: None,
            paper_title: "the paper's Fig. 7 as its text gives it (ms)".into(),
            compare: compare(points, paper::FIG7_64K_MS, Measure::Serial, k64, |p| {
                &p.p50_us
            }),
            compare_title: "vs Direct: paper and this run, latency at 64 KiB".into(),
        },
        Figure {
            stem: "fig8-connections",
            title: "Fig. 8 (this run): connections/s, 1 request each, serialized".into(),
            y_label: "connections/s",
            log_y: false,
            series: series(points, Measure::Cps, |p| &p.rps, 1.0),
            paper: paper_points(paper::FIG8_64K_CPS, 1.0),
            paper_at: paper::FIG8_AT as f64,
            paper_plateau_from: None,
            paper_title: "the paper's Fig. 8 as its text gives it (conn/s)".into(),
            compare: compare(points, paper::FIG8_64K_CPS, Measure::Cps, cps64, |p| &p.rps),
            compare_title: "vs Direct: paper and this run, conn/s at 64 KiB".into(),
        },
    ]
}

/// A size on a log axis, whose ticks fall on powers of ten: `1 KiB`, `97.7 KiB`, `9.54 MiB`.
pub fn axis_size(x: f64) -> String {
    let (v, u) = if x >= (1 << 20) as f64 {
        (x / (1 << 20) as f64, "MiB")
    } else if x >= 1024.0 {
        (x / 1024.0, "KiB")
    } else {
        (x, "B")
    };
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s} {u}")
}

fn e<E: std::fmt::Debug>(x: E) -> String {
    format!("{x:?}")
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Result<(), String> {
    root.fill(&WHITE).map_err(e)?;
    let (left, rest) = root.split_horizontally((50).percent_width());
    let (middle, right) = rest.split_horizontally((50).percent_width());
    // Left: this run.
    let xs: Vec<f64> = fig
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = fig
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flat_map(|p| [p.2, p.3]))
        .filter(|y| y.is_finite() && *y > 0.0)
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(0.0, f64::max),
    );
    let (y0, y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(0.0, f64::max),
    );
    if xs.is_empty() || ys.is_empty() {
        left.titled(&format!("{}: no data", fig.title), ("sans-serif", 16))
            .map_err(e)?;
    } else {
        let x0 = if x1 > x0 { x0 / 1.5 } else { x0 / 2.0 };
        let x1 = x1 * 1.5;
        let mut b = ChartBuilder::on(&left);
        b.caption(&fig.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let size_fmt = |x: &f64| axis_size(*x);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("response size")
                    .y_desc(fig.y_label)
                    .x_label_formatter(&size_fmt)
                    .draw()
                    .map_err(e)?;
                for (name, pts) in fig.series.iter() {
                    let c = colour(name);
                    let style = ShapeStyle::from(&c).stroke_width(2);
                    chart
                        .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), style))
                        .map_err(e)?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(
                                vec![(x, y), (x + 18, y)],
                                ShapeStyle::from(&c).stroke_width(2),
                            )
                        });
                    chart
                        .draw_series(pts.iter().map(|p| {
                            ErrorBar::new_vertical(p.0, p.2, p.1, p.3, ShapeStyle::from(&c), 6)
                        }))
                        .map_err(e)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 12))
                    .draw()
                    .map_err(e)?;
            }};
        }
        if fig.log_y {
            body!(
                b.build_cartesian_2d((x0..x1).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())
                    .map_err(e)?
            );
        } else {
            body!(
                b.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1 * 1.1)
                    .map_err(e)?
            );
        }
    }
    // Middle: the paper's figure on the same x axis, as far as its text gives it.
    draw_paper(&middle, fig, &xs)?;
    // Right: ratios to Direct, the paper's beside this run's.
    let n = fig.compare.len().max(1);
    let ymax = fig
        .compare
        .iter()
        .flat_map(|c| [c.1, c.2])
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption(&fig.compare_title, ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..n as f64, 0.0..ymax)
        .map_err(e)?;
    let names: Vec<String> = fig.compare.iter().map(|c| c.0.clone()).collect();
    let name_fmt = move |x: &f64| {
        let i = x.floor() as usize;
        if (x - i as f64 - 0.5).abs() < 0.01 {
            names.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&name_fmt)
        .x_label_style(("sans-serif", 11))
        .y_desc("ratio to Direct")
        .draw()
        .map_err(e)?;
    let paper_c = RGBColor(120, 120, 120);
    let ours_c = RGBColor(31, 119, 180);
    chart
        .draw_series(
            fig.compare
                .iter()
                .enumerate()
                .filter(|(_, c)| c.1.is_finite())
                .map(|(i, c)| {
                    Rectangle::new(
                        [(i as f64 + 0.12, 0.0), (i as f64 + 0.48, c.1)],
                        paper_c.filled(),
                    )
                }),
        )
        .map_err(e)?
        .label("paper (section V text)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], paper_c.filled()));
    chart
        .draw_series(
            fig.compare
                .iter()
                .enumerate()
                .filter(|(_, c)| c.2.is_finite())
                .map(|(i, c)| {
                    Rectangle::new(
                        [(i as f64 + 0.52, 0.0), (i as f64 + 0.88, c.2)],
                        ours_c.filled(),
                    )
                }),
        )
        .map_err(e)?
        .label("this run")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], ours_c.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn draw_paper<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    xs: &[f64],
) -> Result<(), String> {
    let from = fig.paper_plateau_from.unwrap_or(fig.paper_at);
    let x0 = xs.iter().copied().fold(from, f64::min) / 1.5;
    let x1 = xs.iter().copied().fold(fig.paper_at, f64::max) * 1.5;
    let ys: Vec<f64> = fig.paper.iter().map(|p| p.1).collect();
    let (y0, y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(0.0, f64::max),
    );
    let size_fmt = |x: &f64| axis_size(*x);
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("response size")
                .y_desc(fig.y_label)
                .x_labels(4)
                .x_label_formatter(&size_fmt)
                .draw()
                .map_err(e)?;
            for (name, v) in &fig.paper {
                let c = colour(name);
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (fig.paper_at, *v),
                        5,
                        c.filled(),
                    )))
                    .map_err(e)?
                    .label(format!("{name} {}", crate::report::num(*v)))
                    .legend(move |(x, y)| Circle::new((x + 6, y), 4, c.filled()));
                if let Some(f) = fig.paper_plateau_from {
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(f, *v), (fig.paper_at, *v)],
                            6,
                            4,
                            ShapeStyle::from(&c).stroke_width(1),
                        ))
                        .map_err(e)?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 11))
                .draw()
                .map_err(e)?;
        }};
    }
    let mut b = ChartBuilder::on(area);
    b.caption(&fig.paper_title, ("sans-serif", 13))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55);
    if ys.is_empty() {
        return Ok(());
    }
    if fig.log_y {
        body!(
            b.build_cartesian_2d((x0..x1).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())
                .map_err(e)?
        );
    } else {
        body!(
            b.build_cartesian_2d((x0..x1).log_scale(), 0.0..y1 * 1.15)
                .map_err(e)?
        );
    }
    Ok(())
}

/// Writes `<stem>.svg` and `<stem>.png` of every figure into `dir`; returns the files written.
pub fn write_all(dir: &Path, figs: &[Figure]) -> Result<Vec<PathBuf>, String> {
    register_font()?;
    let mut out = Vec::new();
    for f in figs {
        let svg = dir.join(format!("{}.svg", f.stem));
        draw(SVGBackend::new(&svg, (1500, 520)).into_drawing_area(), f)?;
        out.push(svg);
        let png = dir.join(format!("{}.png", f.stem));
        draw(BitMapBackend::new(&png, (1500, 520)).into_drawing_area(), f)?;
        out.push(png);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Spent;
    use crate::report::{Run, summarize};
    use crate::wrk::WrkResult;

    fn run(s: &str, m: Measure, size: u64, rps: f64) -> Run {
        Run {
            scenario: s.into(),
            measure: m,
            size,
            run: 1,
            wrk: WrkResult {
                requests: rps as u64,
                seconds: 1.0,
                rps,
                lat_mean_us: 1e6 / rps,
                lat_p50_us: 1e6 / rps,
                lat_p99_us: 2e6 / rps,
                ..Default::default()
            },
            cpu: Spent::default(),
            connections: 1.0,
            handoffs: 0,
            proxy: Default::default(),
        }
    }

    #[test]
    fn axis_sizes() {
        assert_eq!(axis_size(1024.0), "1 KiB");
        assert_eq!(axis_size(100_000.0), "97.7 KiB");
        assert_eq!(axis_size(10_000_000.0), "9.54 MiB");
        assert_eq!(axis_size(1000.0), "1000 B");
    }

    #[test]
    fn figures_compare_against_direct() {
        let mut runs = Vec::new();
        for (s, k) in [("direct", 2.0), ("netfilter", 1.0), ("knits", 0.9)] {
            for z in [1024u64, 65536, 1 << 20] {
                runs.push(run(s, Measure::Serial, z, 1000.0 * k));
            }
            runs.push(run(s, Measure::Cps, 65536, 100.0 * k));
        }
        let figs = figures(&summarize(&runs));
        assert_eq!(figs.len(), 3);
        let f6 = &figs[0];
        assert_eq!(f6.series.len(), 3);
        assert_eq!(f6.series[0].1.len(), 3);
        let knits = f6.compare.iter().find(|c| c.0 == "knits").unwrap();
        assert!((knits.1 - 377.0 / 580.0).abs() < 1e-9);
        assert!((knits.2 - 0.45).abs() < 1e-9);
        assert!(
            f6.compare
                .iter()
                .find(|c| c.0 == "forward")
                .unwrap()
                .2
                .is_nan()
        );
        assert_eq!(figs[2].series[0].1.len(), 1);
        assert_eq!(f6.paper.len(), 6);
        assert_eq!(f6.paper_at, (32 << 20) as f64);
        assert_eq!(f6.paper_plateau_from, Some(65536.0));
        assert_eq!(figs[1].paper_at, 65536.0);
        assert!(figs[2].paper.iter().all(|(s, _)| s != "knits-h2"));
        assert_eq!(colour("knits"), colour("knits"));
        assert_ne!(colour("knits"), colour("netfilter"));
    }

    #[test]
    fn plots_are_written() {
        if register_font().is_err() {
            // Straight to fd 2: the harness captures print! of passing tests.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: plots_are_written: no DejaVuSans.ttf (apt-get install fonts-dejavu-core)"
            );
            assert!(
                std::env::var("KNITS_REQUIRE_ROOT").as_deref() != Ok("1"),
                "CI installs fonts-dejavu-core"
            );
            return;
        }
        let mut runs = Vec::new();
        for z in [1024u64, 1 << 20] {
            runs.push(run("direct", Measure::Serial, z, 1000.0));
            runs.push(run("knits-h1", Measure::Serial, z, 500.0));
        }
        let d = std::env::temp_dir().join(format!("knits-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let files = write_all(&d, &figures(&summarize(&runs))).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            assert!(f.metadata().unwrap().len() > 1000, "{}", f.display());
        }
        let svg = std::fs::read_to_string(d.join("fig6-throughput.svg")).unwrap();
        assert!(svg.contains("knits-h1") && svg.contains("paper"));
        // The paper's panel: its stated values, as labels of its points.
        assert!(svg.contains("netfilter 377"), "the paper's Fig. 6 panel");
        let _ = std::fs::remove_dir_all(&d);
    }
}
