//! `knits-np-sim`: run the KNITS switch core on a model of a network processor.
//!
//! ```text
//! knits-np-sim run --machine np4gs3 --workload handoff-1 [--packets 10000000] [--json]
//! knits-np-sim sweep --machine np4gs3 --workload handoff-1 --over engines [--csv s.csv] [--plot s.svg] [--out-dir DIR]
//! knits-np-sim calibrate [--check | --table]
//! knits-np-sim probe [--write]
//! knits-np-sim validate [--machine cpu]
//! knits-np-sim machines [--show np4gs3]
//! knits-np-sim capture --workload handoff-1 --out h1.pcapng
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use knits_np_sim::calibration::{self, Calibration};
use knits_np_sim::machine::{Machine, PRESETS};
use knits_np_sim::model::{Program, RunOptions};
use knits_np_sim::pcap;
use knits_np_sim::replay::{self, ReplaySpec};
use knits_np_sim::report::{RunOutput, TraceStats};
use knits_np_sim::sweep::{self, Over};
use knits_np_sim::trace::TraceSet;
use knits_np_sim::workload::{self, KEY, Report, Scenario, Spec};

#[derive(Parser)]
#[command(
    name = "knits-np-sim",
    version,
    about = "Cycle-counting network-processor model running the KNITS switch core"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate one workload on one machine and report packets/s, cycles per step, utilisation.
    Run(RunArgs),
    /// Sweep engines or threads and write CSV and an SVG plot of packets/s.
    Sweep(SweepArgs),
    /// List the machine presets, or print one as TOML.
    Machines {
        /// Print this preset's TOML.
        #[arg(long)]
        show: Option<String>,
    },
    /// Count instructions per packet class and stage of the release-built core under callgrind
    /// and write the calibration file (or check the checked-in one).
    Calibrate(CalibrateArgs),
    /// Measure this machine (clock, memory latencies, CPI of the switch core) for the cpu preset.
    Probe {
        /// Write the cpu preset (knits-np-sim/machines/cpu.toml) instead of printing it.
        #[arg(long)]
        write: bool,
    },
    /// The cpu preset's time per packet of every class beside criterion's medians
    /// (run `cargo bench -p knits-np-sim --bench classes` and knits-core's pipeline bench first).
    Validate {
        /// A preset or a machine description TOML file.
        #[arg(long, default_value = "cpu")]
        machine: String,
        /// Criterion's output folder (default: $CARGO_TARGET_DIR/criterion or target/criterion).
        #[arg(long)]
        criterion: Option<PathBuf>,
    },
    /// Write the frames of a synthetic workload to a pcapng file (one interface per port).
    Capture {
        #[command(flatten)]
        w: WorkloadArgs,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// forward, nat, knits, handoff-1, handoff-2, or a pcapng file to replay.
    #[arg(long, default_value = "handoff-1")]
    workload: String,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client connections to run through the switch.
    #[arg(long)]
    connections: Option<u32>,
    /// Connections open at once.
    #[arg(long)]
    concurrency: Option<u32>,
    /// Requests per connection.
    #[arg(long)]
    requests: Option<u32>,
    /// Send requests one after another instead of pipelined.
    #[arg(long)]
    no_pipeline: bool,
    /// Bytes per request.
    #[arg(long)]
    request_bytes: Option<u32>,
    /// Response size in bytes, N or MIN-MAX (uniform).
    #[arg(long)]
    response_bytes: Option<String>,
    /// Share of connections with 0,1,2 hand-offs, e.g. 0.5,0.3,0.2.
    #[arg(long)]
    handoff_share: Option<String>,
    /// Share of the flow table filled with idle connections first.
    #[arg(long)]
    occupancy: Option<f64>,
    /// Flow-table capacity.
    #[arg(long)]
    flow_capacity: Option<u32>,
    /// Minimum-size frames (60 bytes + FCS): no TCP options, MSS 6.
    #[arg(long)]
    min_frames: bool,
    /// MSS.
    #[arg(long)]
    mss: Option<u16>,
    /// Back-end nodes.
    #[arg(long)]
    backends: Option<u8>,
    /// Replay: control key (16 characters) the capture's nodes signed with.
    #[arg(long)]
    key: Option<String>,
    /// Replay: also feed frames marked outbound.
    #[arg(long)]
    all_directions: bool,
}

#[derive(Args)]
struct RunArgs {
    /// A preset (np4gs3, ixp1200, cpu) or a machine description TOML file.
    #[arg(long, default_value = "np4gs3")]
    machine: String,
    #[command(flatten)]
    w: WorkloadArgs,
    /// Packets to simulate (the traces are replayed with fresh flows until this many).
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Override the machine's engine count.
    #[arg(long)]
    engines: Option<u32>,
    /// Override the machine's threads per engine.
    #[arg(long)]
    threads: Option<u32>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Packets counted per class (handoff and fakefin: at most 1000).
    #[arg(long, default_value_t = 20_000)]
    packets: u64,
    /// The calibration file to write (or to check with --check).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not write: count again and fail if the file is staler than its tolerance.
    #[arg(long)]
    check: bool,
    /// Print the counts as a markdown table instead of writing the file.
    #[arg(long)]
    table: bool,
}

#[derive(Args)]
struct SweepArgs {
    /// A preset or a machine description TOML file.
    #[arg(long, default_value = "np4gs3")]
    machine: String,
    #[command(flatten)]
    w: WorkloadArgs,
    /// engines or threads.
    #[arg(long, default_value = "engines")]
    over: String,
    /// Values to sweep, comma separated.
    #[arg(long, default_value = "1,2,4,8,12,16,24,32,48,64")]
    values: String,
    /// Packets per point.
    #[arg(long, default_value_t = 300_000)]
    packets: u64,
    /// Write the CSV to this file (the CSV always goes to stdout too).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Write the SVG plot to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write both into this folder, named MACHINE-WORKLOAD-OVER.csv and .svg.
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn spec_of(w: &WorkloadArgs, scenario: Scenario) -> Result<Spec, String> {
    let mut s = Spec::scenario(scenario);
    s.seed = w.seed;
    if w.min_frames {
        s.min_frames = true;
        s.request_bytes = 6;
        s.response_bytes = (6, 60);
    }
    if let Some(v) = w.connections {
        s.connections = v;
    }
    if let Some(v) = w.concurrency {
        s.concurrency = v;
    }
    if let Some(v) = w.requests {
        s.requests = v;
    }
    s.pipelined = !w.no_pipeline;
    if let Some(v) = w.request_bytes {
        s.request_bytes = v;
    }
    if let Some(v) = &w.response_bytes {
        let parse = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| format!("--response-bytes: \"{x}\" is not a number"))
        };
        s.response_bytes = match v.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let n = parse(v)?;
                (n, n)
            }
        };
    }
    if let Some(v) = &w.handoff_share {
        let parts: Vec<f64> = v
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("--handoff-share: \"{x}\" is not a number"))
            })
            .collect::<Result<_, _>>()?;
        if parts.len() != 3 {
            return Err(
                "--handoff-share takes three numbers: shares of 0, 1 and 2 hand-offs".into(),
            );
        }
        s.handoff_share = [parts[0], parts[1], parts[2]];
    }
    if let Some(v) = w.occupancy {
        s.occupancy = v;
    }
    if let Some(v) = w.flow_capacity {
        s.flow_capacity = v;
    }
    if let Some(v) = w.mss {
        s.mss = v;
    }
    if let Some(v) = w.backends {
        s.backends = v;
    }
    s.validate()?;
    Ok(s)
}

/// Runs the real switch over the workload: traces, the switch's verdicts, the spec, seconds.
fn traces_of(w: &WorkloadArgs) -> Result<(TraceSet, Report, Option<Spec>, f64), String> {
    let t0 = Instant::now();
    if let Some(sc) = Scenario::parse(&w.workload) {
        let spec = spec_of(w, sc)?;
        let (t, r) = workload::generate(&spec).map_err(|e| e.to_string())?;
        return Ok((t, r, Some(spec), t0.elapsed().as_secs_f64()));
    }
    let path = std::path::Path::new(&w.workload);
    if !path.exists() {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        return Err(format!(
            "--workload \"{}\" is neither a scenario ({}) nor an existing pcapng file",
            w.workload,
            names.join(", ")
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = match &w.key {
        None => KEY,
        Some(k) => k
            .as_bytes()
            .try_into()
            .map_err(|_| "--key must be exactly 16 characters".to_string())?,
    };
    let spec = ReplaySpec {
        backends: w.backends,
        key,
        flow_capacity: w.flow_capacity.unwrap_or(65536),
        all_directions: w.all_directions,
    };
    let (t, r) = replay::replay(&bytes, &spec).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((t, r, None, t0.elapsed().as_secs_f64()))
}

fn machine_of(name: &str, engines: Option<u32>, threads: Option<u32>) -> Result<Machine, String> {
    let m = Machine::load(name).map_err(|e| e.to_string())?;
    m.with_shape(engines.unwrap_or(m.engines), threads.unwrap_or(m.threads))
        .map_err(|e| format!("{name}: {e}"))
}

fn cmd_run(a: RunArgs) -> Result<(), String> {
    let m = machine_of(&a.machine, a.engines, a.threads)?;
    let (traces, report, spec, gen_s) = traces_of(&a.w)?;
    if traces.packets.is_empty() {
        return Err("the workload produced no packets".into());
    }
    let program = Program::new(&m, &traces);
    let mut opts = RunOptions::default();
    let bar = (std::io::stderr().is_terminal() && a.packets >= 1_000_000).then(|| {
        let b = ProgressBar::new(a.packets);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} packets ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    if let Some(b) = &bar {
        let b = b.clone();
        opts.progress = Some(Arc::new(move |n| b.set_position(n)));
    }
    let sim = program.run(a.packets, &opts);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let out = RunOutput::new(
        a.w.workload.clone(),
        spec,
        TraceStats::of(&traces, gen_s),
        report,
        sim,
    );
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", out.text(&m));
    }
    Ok(())
}

fn cmd_sweep(a: SweepArgs) -> Result<(), String> {
    let over = match a.over.as_str() {
        "engines" => Over::Engines,
        "threads" => Over::Threads,
        o => return Err(format!("--over \"{o}\": sweep over engines or threads")),
    };
    let values: Vec<u32> = a
        .values
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| format!("--values: \"{v}\" is not a count"))
        })
        .collect::<Result<_, _>>()?;
    let m = machine_of(&a.machine, None, None)?;
    let (traces, _, _, _) = traces_of(&a.w)?;
    if traces.packets.is_empty() {
        return Err("the workload produced no packets".into());
    }
    let rows = sweep::run(&m, &traces, over, &values, a.packets)?;
    let (mut csv, mut plot) = (a.csv, a.plot);
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let stem: String = format!("{}-{}-{}", m.name, a.w.workload, over.name())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        csv.get_or_insert(dir.join(format!("{stem}.csv")));
        plot.get_or_insert(dir.join(format!("{stem}.svg")));
    }
    print!("{}", sweep::csv(&rows));
    let mut wrote = Vec::new();
    if let Some(p) = &csv {
        std::fs::write(p, sweep::csv(&rows)).map_err(|e| format!("{}: {e}", p.display()))?;
        wrote.push(p.display().to_string());
    }
    if let Some(p) = &plot {
        let title = format!(
            "{} on {}: packets/s over {}",
            a.w.workload,
            m.name,
            over.name()
        );
        sweep::plot(&rows, over, &title, p)?;
        wrote.push(p.display().to_string());
    }
    if wrote.is_empty() {
        eprintln!("wrote no file (give --csv, --plot or --out-dir to keep the sweep)");
    } else {
        eprintln!("wrote {}", wrote.join(" and "));
    }
    Ok(())
}

fn cmd_calibrate(a: CalibrateArgs) -> Result<(), String> {
    let path = a.out.unwrap_or_else(calibration::default_path);
    let fresh = calibration::calibrate(a.packets, &mut |l| eprintln!("{l}"))?;
    if a.table {
        print!("{}", fresh.table());
        return Ok(());
    }
    if a.check {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let old = Calibration::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let moved = calibration::stale(&old, &fresh);
        if moved.is_empty() {
            eprintln!(
                "{} is current (every class and stage within {:.0} %; counted at {}, file made at {})",
                path.display(),
                old.tolerance * 100.0,
                fresh.commit,
                old.commit
            );
            return Ok(());
        }
        return Err(format!(
            "{} is stale; run `{}` and commit it:\n  {}",
            path.display(),
            old.command,
            moved.join("\n  ")
        ));
    }
    std::fs::write(&path, fresh.to_toml()).map_err(|e| format!("{}: {e}", path.display()))?;
    print!("{}", fresh.table());
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Sweep(a) => cmd_sweep(a),
        Cmd::Calibrate(a) => cmd_calibrate(a),
        Cmd::Probe { write } => (|| {
            let p = knits_np_sim::probe::run(&mut |l| eprintln!("{l}"))?;
            let text = p.machine_toml();
            if write {
                let path =
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("machines/cpu.toml");
                std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
                eprintln!(
                    "wrote {} (rebuild to use it as the cpu preset)",
                    path.display()
                );
            } else {
                print!("{text}");
            }
            Ok(())
        })(),
        Cmd::Validate { machine, criterion } => (|| {
            let m = Machine::load(&machine).map_err(|e| e.to_string())?;
            let dir = criterion.unwrap_or_else(knits_np_sim::validate::criterion_dir);
            for (group, what) in [
                ("class_oncpu", "time on the CPU (thread CPU clock)"),
                ("class", "wall-clock time"),
            ] {
                let rows =
                    knits_np_sim::validate::rows(&m, &Calibration::checked_in(), &dir, group)?;
                println!("\n{} against criterion's {what}, group {group}:\n", m.name);
                print!("{}", knits_np_sim::validate::table(&rows));
            }
            eprintln!("criterion medians read from {}", dir.display());
            Ok(())
        })(),
        Cmd::Machines { show: None } => {
            for p in PRESETS {
                match Machine::preset(p) {
                    Ok(m) => println!("{:<8} {}", p, m.description),
                    Err(e) => println!("{p}: {e}"),
                }
            }
            Ok(())
        }
        Cmd::Machines { show: Some(name) } => match Machine::preset_text(&name) {
            Some(t) => {
                print!("{t}");
                Ok(())
            }
            None => Err(format!(
                "no preset \"{name}\"; presets: {}",
                PRESETS.join(", ")
            )),
        },
        Cmd::Capture { w, out } => (|| {
            let sc = Scenario::parse(&w.workload)
                .ok_or("capture needs a scenario name as --workload")?;
            let spec = spec_of(&w, sc)?;
            let frames = replay::capture(&spec).map_err(|e| e.to_string())?;
            let list: Vec<(u16, u64, &[u8])> = frames
                .iter()
                .enumerate()
                .map(|(i, (p, f))| (*p as u16, i as u64, &f[..]))
                .collect();
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?,
            );
            pcap::write(&mut file, spec.backends as u16 + 1, &list)
                .map_err(|e| format!("{}: {e}", out.display()))?;
            eprintln!("wrote {} frames to {}", list.len(), out.display());
            Ok(())
        })(),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knits-np-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
