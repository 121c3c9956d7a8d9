//! The study: the plan (pure), its execution (root), and the files it writes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cpu;
use crate::report::{self, HandoffRun, Measure, Run};
use crate::scenario::{Moves, Scenario, Topology, by_topology, size_label};
use crate::topo::{self, Built, Setup};
use crate::wrk::{self, Invocation};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scenarios, in report order.
    pub scenarios: Vec<&'static Scenario>,
    /// Response sizes of the serialized runs (Fig. 6, 7).
    pub sizes: Vec<u64>,
    /// Sizes of the 64-connection runs.
    pub conc_sizes: Vec<u64>,
    /// Sizes of the connections-per-second runs (Fig. 8).
    pub cps_sizes: Vec<u64>,
    /// Runs per point.
    pub runs: usize,
    /// Seconds per wrk run.
    pub seconds: u64,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests per connection of the request-sequence runs (0: none).
    pub seq_requests: usize,
    /// Output directory.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// Requests per connection of the request-sequence runs. Section V does not say how many
/// requests its serialized connections carried; two is the number that fits its Fig. 7 (64 KB:
/// +0.29 ms for one hand-off and +0.35 ms more for the second, "approximately 500 microseconds
/// per hand-off", which is about one hand-off per two requests), and with two requests each
/// KNITS-Handoff-2 connection is handed off at both of them (n1 to n2, n2 to n3).
pub const SEQ_REQUESTS: usize = 2;

/// How long the switch's counters take to show a run's last hand-offs: it publishes its
/// snapshot every 100 ms.
pub const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_millis(150);

impl Options {
    /// `--quick`: 4 sizes, 3 runs of 1 s (all kept), one concurrent size.
    pub fn quick(scenarios: Vec<&'static Scenario>, out: PathBuf) -> Options {
        Options {
            scenarios,
            sizes: vec![1 << 10, 64 << 10, 1 << 20, 32 << 20],
            conc_sizes: vec![64 << 10],
            cps_sizes: vec![1 << 10, 64 << 10],
            runs: 3,
            seconds: 1,
            connections: 64,
            seq_requests: SEQ_REQUESTS,
            out,
            command: String::new(),
        }
    }

    /// The full study: 1 KiB .. 32 MiB in powers of 4, 7 runs of 2 s (5 kept).
    pub fn full(scenarios: Vec<&'static Scenario>, out: PathBuf) -> Options {
        Options {
            scenarios,
            sizes: vec![
                1 << 10,
                4 << 10,
                16 << 10,
                64 << 10,
                256 << 10,
                1 << 20,
                4 << 20,
                32 << 20,
            ],
            conc_sizes: vec![64 << 10, 1 << 20],
            cps_sizes: vec![1 << 10, 64 << 10],
            runs: 7,
            seconds: 2,
            connections: 64,
            seq_requests: SEQ_REQUESTS,
            out,
            command: String::new(),
        }
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Build a topology (and warm it up).
    Build(Topology),
    /// One wrk run.
    Wrk {
        /// Scenario.
        scenario: &'static Scenario,
        /// Measure.
        measure: Measure,
        /// Size.
        size: u64,
        /// Run number from 1.
        run: usize,
    },
    /// One hand-off latency run (two wrk runs: without and with a hand-off per connection).
    Handoff {
        /// Scenario.
        scenario: &'static Scenario,
        /// Run number from 1.
        run: usize,
    },
    /// Tear the topology down.
    Teardown,
}

/// Whether `s` gets the hand-off latency runs: KNITS scenarios with one hand-off.
pub fn measures_handoff(s: &Scenario) -> bool {
    matches!(s.topology, Topology::Knits { .. }) && s.moves == Moves::One
}

/// Every step, in order. KNITS-Handoff-2 runs serialized only (see inside).
pub fn plan(o: &Options) -> Vec<Step> {
    let mut v = Vec::new();
    for (t, list) in by_topology(&o.scenarios) {
        v.push(Step::Build(t));
        for s in list {
            let mut points: Vec<(Measure, u64)> =
                o.sizes.iter().map(|&z| (Measure::Serial, z)).collect();
            if o.seq_requests > 0 {
                points.extend(o.sizes.iter().map(|&z| (Measure::Seq, z)));
            }
            // KNITS-Handoff-2 is scripted with a per-thread counter in wrk's Lua (wrk has no
            // per-connection state), which is a per-connection counter only with one connection
            // per thread; and one request per connection cannot move twice.
            if s.moves != Moves::Two {
                points.extend(o.conc_sizes.iter().map(|&z| (Measure::Concurrent, z)));
                points.extend(o.cps_sizes.iter().map(|&z| (Measure::Cps, z)));
            }
            for (measure, size) in points {
                for run in 1..=o.runs {
                    v.push(Step::Wrk {
                        scenario: s,
                        measure,
                        size,
                        run,
                    });
                }
            }
            if measures_handoff(s) {
                for run in 1..=o.runs {
                    v.push(Step::Handoff { scenario: s, run });
                }
            }
        }
        v.push(Step::Teardown);
    }
    v
}

/// Planned milliseconds of a step (for the progress bar's time left).
pub fn step_ms(s: &Step, seconds: u64) -> u64 {
    let wrk = seconds * 1000 + 250;
    match s {
        Step::Build(t) if t.is_knits() => 4000 + wrk,
        Step::Build(_) => 1500 + wrk,
        Step::Wrk { .. } => wrk,
        Step::Handoff { .. } => 2 * wrk + 100,
        Step::Teardown => 1500,
    }
}

/// The URL path of a request for `s` at `size`: node 1 (where every connection lands) unless
/// the scenario moves it.
pub fn path(s: &Scenario, size: u64) -> String {
    let node = match s.moves {
        Moves::None => 1,
        Moves::One | Moves::Two => 2,
    };
    format!("/obj/n{node}/s{size}")
}

/// The paths of one request sequence of `n` requests for `s`: node 1 throughout (no
/// hand-off), node 2 throughout (a hand-off at the first request), or node 2 then node 3
/// (hand-offs at the first and the second request: KNITS-Handoff-2).
pub fn sequence(s: &Scenario, size: u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            let node = match (s.moves, k) {
                (Moves::None, _) => 1,
                (Moves::One, _) | (Moves::Two, 0) => 2,
                (Moves::Two, _) => 3,
            };
            format!("/obj/n{node}/s{size}")
        })
        .collect()
}

/// How many hand-offs the switch should accept in one wrk run of KNITS scenario `s` that
/// opened `connections` connections, and by how much the count may differ: `(expected, slack)`.
/// Every connection lands on node 1 and moves once per change of owner among its requests: 0,
/// 1 or 2 times (KNITS-Handoff-2 needs two requests: with sequences of one it moves once). A
/// serialized run is one connection and must match exactly; elsewhere the connection open when
/// wrk stops may have moved without finishing a request (one sequence's moves of slack). A run
/// outside that is named in the report's notes (tests/handoff2.rs checks the same through a
/// cluster).
pub fn expected_handoffs(
    s: &Scenario,
    measure: Measure,
    connections: f64,
    seq_requests: usize,
) -> Option<(f64, f64)> {
    if !s.topology.is_knits() {
        return None;
    }
    let per_connection = match (s.moves, measure) {
        (Moves::None, _) => 0.0,
        (Moves::One, _) => 1.0,
        (Moves::Two, Measure::Seq) => seq_requests.min(2) as f64,
        // One request per connection cannot move twice (the plan does not run these).
        (Moves::Two, Measure::Cps) => 1.0,
        (Moves::Two, _) => 2.0,
    };
    let slack = if measure == Measure::Serial {
        0.0
    } else {
        per_connection
    };
    Some((per_connection * connections, slack))
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// wrk runs.
    pub runs: Vec<Run>,
    /// Hand-off latency runs.
    pub handoffs: Vec<HandoffRun>,
    /// Per scenario: hand-offs the switch accepted while it ran (KNITS).
    pub switch_handoffs: Vec<(String, u64)>,
    /// Remarks gathered on the way (failed runs, skipped parts).
    pub notes: Vec<String>,
    /// Wall-clock seconds of the study.
    pub seconds: f64,
}

fn run_wrk(ns: &str, inv: &Invocation) -> Result<wrk::WrkResult, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "wrk"])
        .args(inv.args())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk {} failed ({}): {}{}",
            inv.args().join(" "),
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    wrk::parse(&text)
}

fn tool_check(o: &Options) -> Result<(), String> {
    let need = |p: &str, pkg: &str| {
        if Path::new(p).exists() {
            Ok(())
        } else {
            Err(format!("{p} is missing: apt-get install -y {pkg}"))
        }
    };
    need("/usr/bin/wrk", "wrk")?;
    need(topo::NGINX, "nginx-light")?;
    let topos: Vec<Topology> = o.scenarios.iter().map(|s| s.topology).collect();
    if topos.contains(&Topology::Haproxy) {
        need(topo::HAPROXY, "haproxy")?;
    }
    if topos
        .iter()
        .any(|t| matches!(t, Topology::Netfilter | Topology::ProxyAlone))
    {
        need("/usr/sbin/nft", "nftables")?;
    }
    Ok(())
}

struct Ctx<'a> {
    o: &'a Options,
    built: Option<Built>,
    script_dir: PathBuf,
    res: Results,
    last_handoffs: u64,
}

impl Ctx<'_> {
    fn invocation(
        &self,
        s: &Scenario,
        measure: Measure,
        size: u64,
        host: &str,
    ) -> Result<Invocation, String> {
        let url_path = path(s, size);
        let script = if measure == Measure::Seq {
            let f = self.script_dir.join(format!("seq-{}-{size}.lua", s.name));
            std::fs::write(
                &f,
                wrk::sequence_script(&sequence(s, size, self.o.seq_requests)),
            )
            .map_err(|e| format!("{}: {e}", f.display()))?;
            Some(f.to_string_lossy().into_owned())
        } else if s.moves == Moves::Two {
            let f = self.script_dir.join(format!("h2-{size}.lua"));
            std::fs::write(
                &f,
                wrk::two_owner_script(&url_path, &format!("/obj/n3/s{size}")),
            )
            .map_err(|e| format!("{}: {e}", f.display()))?;
            Some(f.to_string_lossy().into_owned())
        } else {
            None
        };
        let (threads, connections) = match measure {
            Measure::Concurrent => (2, self.o.connections),
            _ => (1, 1),
        };
        Ok(Invocation {
            threads,
            connections,
            seconds: self.o.seconds,
            close: measure == Measure::Cps,
            script,
            url: format!("http://{host}{url_path}"),
        })
    }

    /// Adds the switch's hand-offs since the last call to `scenario`'s count; returns them.
    fn note_handoffs(&mut self, scenario: &str) -> u64 {
        let mut delta = 0;
        if let Some(b) = &self.built
            && let Some(n) = b.handoffs_accepted()
        {
            let d = n.saturating_sub(self.last_handoffs);
            delta = d;
            self.last_handoffs = n;
            match self
                .res
                .switch_handoffs
                .iter_mut()
                .find(|(s, _)| s == scenario)
            {
                Some((_, v)) => *v += d,
                None => self.res.switch_handoffs.push((scenario.to_string(), d)),
            }
        }
        delta
    }

    fn step(&mut self, st: &Step, setup: &Setup) -> Result<(), String> {
        match st {
            Step::Build(t) => {
                self.built = None;
                let prefix = knits_host::netns::unique_prefix("kb");
                let mut b = topo::build(*t, &prefix, setup)?;
                // Warm-up: page cache, ARP, the proxies' upstream connections.
                let inv = Invocation {
                    threads: 1,
                    connections: 1,
                    seconds: self.o.seconds,
                    close: false,
                    script: None,
                    url: format!("http://{}/obj/n1/s{}", b.host, 64 << 10),
                };
                run_wrk(&b.client_ns, &inv)?;
                b.check()?;
                self.last_handoffs = b.handoffs_accepted().unwrap_or(0);
                self.built = Some(b);
            }
            Step::Teardown => {
                if let Some(mut b) = self.built.take() {
                    b.check()?;
                    b.down();
                }
            }
            Step::Wrk {
                scenario,
                measure,
                size,
                run,
            } => {
                let b = self.built.as_ref().ok_or("no topology is up")?;
                let (ns, host, spaces) =
                    (b.client_ns.clone(), b.host.clone(), b.namespaces.clone());
                let knits = b.topology.is_knits();
                let mns = b.metrics_ns.clone();
                let inv = self.invocation(scenario, *measure, *size, &host)?;
                // The proxies' hand-off phases, scraped around the run (KNITS clusters only:
                // proxy-alone never hands off).
                let m0 = if knits {
                    Some(topo::proxies_metrics(&mns)?)
                } else {
                    None
                };
                let before = cpu::sample(&spaces);
                let w = run_wrk(&ns, &inv)?;
                let after = cpu::sample(&spaces);
                let proxy = match m0 {
                    Some(m0) => topo::proxies_metrics(&mns)?.since(&m0),
                    None => Default::default(),
                };
                if w.socket_errors + w.non_2xx > 0 || w.requests == 0 {
                    self.res.notes.push(format!(
                        "{scenario} {} {} run {run}: {} requests, {} socket errors, {} non-2xx",
                        measure.name(),
                        size_label(*size),
                        w.requests,
                        w.socket_errors,
                        w.non_2xx
                    ));
                }
                let connections = match measure {
                    Measure::Serial => 1.0,
                    Measure::Seq => w.requests as f64 / self.o.seq_requests.max(1) as f64,
                    Measure::Cps => w.requests as f64,
                    Measure::Concurrent => self.o.connections as f64,
                };
                if knits {
                    // The switch publishes its counters every 100 ms (knits-host runtime).
                    std::thread::sleep(SNAPSHOT_WAIT);
                }
                let handoffs = self.note_handoffs(scenario.name);
                if let Some((want, slack)) =
                    expected_handoffs(scenario, *measure, connections, self.o.seq_requests)
                    && (handoffs as f64 - want).abs() > slack + 1e-9
                {
                    self.res.notes.push(format!(
                        "{scenario} {} {} run {run}: the switch accepted {handoffs} hand-offs over {} client connections, expected {} (± {slack})",
                        measure.name(),
                        size_label(*size),
                        report::num(connections),
                        report::num(want),
                    ));
                }
                self.res.runs.push(Run {
                    scenario: scenario.name.to_string(),
                    measure: *measure,
                    size: *size,
                    run: *run,
                    wrk: w,
                    cpu: before.until(&after),
                    connections,
                    handoffs,
                    proxy,
                });
                if let Some(b) = &mut self.built {
                    b.check()?;
                }
            }
            Step::Handoff { scenario, run } => {
                let b = self.built.as_ref().ok_or("no topology is up")?;
                let (ns, host) = (b.client_ns.clone(), b.host.clone());
                let mns = b.metrics_ns.clone();
                if mns.is_empty() {
                    return Err("no proxy metrics in this topology".into());
                }
                let inv = |p: &str| Invocation {
                    threads: 1,
                    connections: 1,
                    seconds: self.o.seconds,
                    close: true,
                    script: None,
                    url: format!("http://{host}{p}"),
                };
                let base = run_wrk(&ns, &inv("/obj/n1/s1024"))?;
                let m0 = topo::proxies_metrics(&mns)?;
                let moved = run_wrk(&ns, &inv("/obj/n2/s1024"))?;
                let m1 = topo::proxies_metrics(&mns)?;
                std::thread::sleep(SNAPSHOT_WAIT);
                self.res.handoffs.push(HandoffRun {
                    scenario: scenario.name.to_string(),
                    run: *run,
                    base,
                    moved,
                    proxy: m1.since(&m0),
                });
                self.note_handoffs(scenario.name);
            }
        }
        Ok(())
    }
}

/// Runs the plan. Stops between runs when `stop` is set (the topology is torn down).
pub fn execute(o: &Options, stop: &AtomicBool, exe: &Path) -> Result<Results, String> {
    if !knits_host::netns::have_net_admin() {
        return Err(knits_host::cluster::needs_root());
    }
    tool_check(o)?;
    let started = Instant::now();
    let work = std::env::temp_dir().join(format!("knits-bench-{}", std::process::id()));
    let www = work.join("www");
    let mut sizes: Vec<u64> = o
        .sizes
        .iter()
        .chain(&o.conc_sizes)
        .chain(&o.cps_sizes)
        .copied()
        .chain([1024, 64 << 10])
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    topo::write_objects(&www, &sizes)?;
    let setup = Setup {
        work: work.clone(),
        www,
        exe: exe.to_path_buf(),
    };
    let steps = plan(o);
    let total: u64 = steps.iter().map(|s| step_ms(s, o.seconds)).sum();
    let tty = std::io::stderr().is_terminal();
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {percent:>3}% left ~{eta_precise} {msg}",
        )
        .map_err(|e| e.to_string())?,
    );
    let mut ctx = Ctx {
        o,
        built: None,
        script_dir: work.clone(),
        res: Results::default(),
        last_handoffs: 0,
    };
    let mut outcome = Ok(());
    for st in &steps {
        if stop.load(Ordering::Relaxed) {
            outcome = Err("interrupted".to_string());
            break;
        }
        let msg = match st {
            Step::Build(t) => format!("building {}", t.label()),
            Step::Wrk {
                scenario,
                measure,
                size,
                run,
            } => format!(
                "{scenario} {} {} run {run}",
                measure.name(),
                size_label(*size)
            ),
            Step::Handoff { scenario, run } => format!("{scenario} hand-off latency run {run}"),
            Step::Teardown => "tearing down".into(),
        };
        if let Step::Build(t) = st {
            if tty {
                pb.println(format!("== {}", t.label()));
            } else {
                // No bar without a terminal (a log file): one line per topology instead.
                let done = pb.position() as f64 / total.max(1) as f64;
                let el = started.elapsed().as_secs_f64();
                let left = if done > 0.0 {
                    el / done - el
                } else {
                    total as f64 / 1e3
                };
                eprintln!(
                    "[{el:>5.0} s] {:>3.0}% done, ~{left:.0} s left: {}",
                    100.0 * done,
                    t.label()
                );
            }
        }
        pb.set_message(msg.clone());
        if let Err(e) = ctx.step(st, &setup) {
            outcome = Err(format!("{msg}: {e}"));
            break;
        }
        pb.inc(step_ms(st, o.seconds));
    }
    pb.finish_and_clear();
    ctx.built = None;
    match outcome {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Err(e) => {
            // The objects are large; the configurations and logs are what a failure needs.
            let _ = std::fs::remove_dir_all(work.join("www"));
            return Err(format!(
                "{e}\n(configurations and logs kept in {})",
                work.display()
            ));
        }
    }
    ctx.res.seconds = started.elapsed().as_secs_f64();
    Ok(ctx.res)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s += &String::from_utf8_lossy(&o.stderr);
            s.trim().to_string()
        })
        .unwrap_or_default()
}

/// The machine, the date and the tools, for the report.
pub fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    let first = |s: String| s.lines().next().unwrap_or_default().to_string();
    vec![
        ("date (UTC)".into(), sh("date", &["-u", "+%Y-%m-%d %H:%M"])),
        (
            "CPU".into(),
            format!(
                "{model}, {} logical CPUs (shared with other work)",
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ),
        ),
        ("memory".into(), mem),
        ("kernel".into(), sh("uname", &["-sr"])),
        (
            "load average at the start".into(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        ("wrk".into(), first(sh("wrk", &["-v"]))),
        ("nginx".into(), first(sh(topo::NGINX, &["-v"]))),
        ("HAProxy".into(), first(sh(topo::HAPROXY, &["-v"]))),
        ("nftables".into(), first(sh("nft", &["--version"]))),
    ]
}

/// A scenario's request sequence at 1 KiB for the report: `n1, n1`.
fn paths_of(name: &str, n: usize) -> String {
    crate::scenario::by_name(name)
        .map(|s| sequence(s, 1024, n).join(", "))
        .unwrap_or_default()
}

/// Writes runs.csv, points.csv, handoff.csv, the figures and results.md into `o.out`.
pub fn write_outputs(
    o: &Options,
    res: &Results,
    machine: &[(String, String)],
) -> Result<PathBuf, String> {
    let out = &o.out;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let w = |name: &str, text: String| {
        std::fs::write(out.join(name), text)
            .map_err(|e| format!("{}: {e}", out.join(name).display()))
    };
    let points = report::summarize(&res.runs);
    let hand = report::summarize_handoffs(&res.handoffs);
    w("runs.csv", report::runs_csv(&res.runs))?;
    w("points.csv", report::points_csv(&points))?;
    w("handoff.csv", report::handoff_csv(&hand))?;
    let mut notes = res.notes.clone();
    let figs = crate::plot::figures(&points);
    let plotted = match crate::plot::write_all(out, &figs) {
        Ok(_) => true,
        Err(e) => {
            notes.push(format!("plots not written: {e}"));
            false
        }
    };
    let mut md = String::new();
    md += "# knits-bench results\n\n";
    md += &format!("Command: `{}`\n\n", o.command);
    md += &format!(
        "{} runs per point of {} s each ({}), wrk over one persistent connection (serialized), {} connections (concurrent), and `Connection: close` one at a time (connections/s). The study took {:.0} s.\n\n",
        o.runs,
        o.seconds,
        if o.runs >= 5 {
            "highest and lowest dropped, mean of the rest"
        } else {
            "all kept"
        },
        o.connections,
        res.seconds
    );
    md += &report::md_table(
        &["machine", ""],
        &machine
            .iter()
            .map(|(a, b)| vec![a.clone(), b.clone()])
            .collect::<Vec<_>>(),
    );
    md += "\n## Scenarios\n\n";
    md += &report::md_table(
        &["scenario", "what"],
        &o.scenarios
            .iter()
            .map(|s| vec![s.name.to_string(), s.what.to_string()])
            .collect::<Vec<_>>(),
    );
    let mut head_sizes: Vec<u64> = [64 << 10, *o.sizes.iter().max().unwrap_or(&0)]
        .into_iter()
        .filter(|z| o.sizes.contains(z))
        .collect();
    head_sizes.dedup();
    md += "\n## Headline: ratios to Direct and to Netfilter measured in this run\n\n";
    md += "Throughput (higher is better) and p50 latency (lower is better), serialized; connections/s.\n\n";
    md += &report::headline(&points, &head_sizes);
    md += "\n## Targets (issue 12), reported\n\n";
    md += &report::targets_table(&report::targets(&points, &hand, o.seq_requests));
    md += "\n## Response throughput, Mbit/s (Fig. 6), mean (min–max of kept runs)\n\n";
    md += &report::matrix(&points, Measure::Serial, |p| &p.mbit_s);
    md += "\n## Latency p50, µs (Fig. 7)\n\n";
    md += &report::matrix(&points, Measure::Serial, |p| &p.p50_us);
    md += "\n## Latency p99, µs\n\n";
    md += &report::matrix(&points, Measure::Serial, |p| &p.p99_us);
    if o.seq_requests > 0 {
        md += &format!(
            "\n## Request sequences: {} requests per connection, the last with `Connection: close` (Fig. 6 and 7 with hand-offs)\n\n",
            o.seq_requests
        );
        md += &format!(
            "KNITS-Handoff-1 hands every connection off at its first request (n1 to n2); KNITS-Handoff-2 at its first and its second (n1 to n2 to n3). wrk's latency starts when a request is written, so the connection's handshake is outside it; its throughput includes it. Paths per connection: knits {}, knits-h1 {}, knits-h2 {} (1 KiB shown).\n\n",
            paths_of("knits", o.seq_requests),
            paths_of("knits-h1", o.seq_requests),
            paths_of("knits-h2", o.seq_requests),
        );
        md += "Response throughput, Mbit/s\n\n";
        md += &report::matrix(&points, Measure::Seq, |p| &p.mbit_s);
        md += "\nLatency p50, µs (with sequences of 2, every knits-h2 request causes one hand-off: its p50 minus knits's is one hand-off at the median, the figure the targets judge)\n\n";
        md += &report::matrix(&points, Measure::Seq, |p| &p.p50_us);
        md += "\nMean latency, µs (the paper's Fig. 7 is a mean; here rare 40 ms stalls move it, see docs/benchmarks.md)\n\n";
        md += &report::matrix(&points, Measure::Seq, |p| &p.mean_us);
        md += "\nLatency p99, µs\n\n";
        md += &report::matrix(&points, Measure::Seq, |p| &p.p99_us);
        md += "\nWhat a hand-off adds, the paper's way (differences of mean latency, times the requests per connection)\n\n";
        md += &report::seq_handoff_table(&points, o.seq_requests);
    }
    md += "\n## Connections per second, one request each (Fig. 8)\n\n";
    md += &report::matrix(&points, Measure::Cps, |p| &p.rps);
    md += &format!("\n## {} concurrent connections\n\n", o.connections);
    md += &report::concurrent_table(&points);
    md += "\n## CPU seconds per GB of response\n\n";
    md += "The switch: its threads in this process; HAProxy and knits-proxy: their processes; softirq: the whole machine's (/proc/stat), so it includes other work on the machine.\n\n";
    md += &report::cpu_table(&points);
    md += "\n## Hand-off latency (`Connection: close`, 1 KiB, one connection at a time)\n\n";
    md += "Client: wrk's mean and p50 asking node 1 (no hand-off) and node 2 (a hand-off per connection), one run after the other. Phases: every node's `knits_proxy_handoff_phase_seconds`, scraped before and after the hand-off run (the delta of `_sum` / `_count` is the mean; p50 / p99 are estimates interpolated in the proxy's buckets of 50, 100, 250, 500 µs ...). The target's first byte is not seen by any proxy (the answer goes from the target through the switch to the client): it is the client's added mean minus the four phases' means.\n\n";
    md += &report::handoff_table(&hand);
    md += "\n## Hand-offs per connection and the proxies' phases, every KNITS run\n\n";
    md += "The switch's accepted hand-offs over the client's connections, and every node's phase histograms scraped around each run.\n\n";
    md += &report::handoff_phases_table(&points);
    if !res.switch_handoffs.is_empty() {
        md += "\n## Hand-offs the switch accepted, per scenario\n\n";
        md += &report::md_table(
            &["scenario", "hand-offs accepted"],
            &res.switch_handoffs
                .iter()
                .map(|(s, n)| vec![s.clone(), n.to_string()])
                .collect::<Vec<_>>(),
        );
    }
    if plotted {
        md += "\n## Plots\n\n";
        md += &format!("Right panels: {}.\n\n", crate::paper::SOURCE);
        for f in &figs {
            md += &format!("![{}]({}.svg) ([PNG]({}.png))\n\n", f.stem, f.stem, f.stem);
        }
    }
    if !notes.is_empty() {
        md += "\n## Notes\n\n";
        for n in &notes {
            md += &format!("- {n}\n");
        }
    }
    w("results.md", md)?;
    Ok(out.join("results.md"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_only;

    #[test]
    fn plan_builds_each_topology_once_and_skips_h2_cps() {
        let o = Options::quick(
            parse_only("direct,knits,knits-h1,knits-h2").unwrap(),
            "x".into(),
        );
        let p = plan(&o);
        assert_eq!(p.iter().filter(|s| matches!(s, Step::Build(_))).count(), 2);
        assert_eq!(p.iter().filter(|s| **s == Step::Teardown).count(), 2);
        let wrk = |name: &str, m: Measure| {
            p.iter()
                .filter(|s| matches!(s, Step::Wrk { scenario, measure, .. } if scenario.name == name && *measure == m))
                .count()
        };
        assert_eq!(wrk("direct", Measure::Serial), 4 * 3);
        assert_eq!(wrk("direct", Measure::Cps), 2 * 3);
        assert_eq!(wrk("knits-h2", Measure::Cps), 0);
        assert_eq!(wrk("knits-h2", Measure::Concurrent), 0);
        assert_eq!(wrk("knits-h2", Measure::Serial), 4 * 3);
        assert_eq!(wrk("knits-h2", Measure::Seq), 4 * 3);
        assert_eq!(
            wrk("direct", Measure::Seq),
            4 * 3,
            "the same client everywhere"
        );
        let mut no_seq = o.clone();
        no_seq.seq_requests = 0;
        assert!(
            !plan(&no_seq)
                .iter()
                .any(|s| matches!(s, Step::Wrk { measure, .. } if *measure == Measure::Seq))
        );
        let h = p
            .iter()
            .filter(|s| matches!(s, Step::Handoff { .. }))
            .count();
        assert_eq!(h, 3, "only knits-h1 measures hand-off latency");
        let total: u64 = p.iter().map(|s| step_ms(s, o.seconds)).sum();
        assert!(total > 0);
    }

    #[test]
    fn paths_follow_the_moves() {
        let s = |n| crate::scenario::by_name(n).unwrap();
        assert_eq!(path(s("knits"), 1024), "/obj/n1/s1024");
        assert_eq!(path(s("knits-h1"), 65536), "/obj/n2/s65536");
        assert_eq!(path(s("haproxy"), 1024), "/obj/n1/s1024");
        assert!(measures_handoff(s("knits-h1-pool")));
        // KNITS-Handoff-2: every connection is handed off at its first and its second request.
        assert_eq!(
            sequence(s("knits-h2"), 1024, 2),
            ["/obj/n2/s1024", "/obj/n3/s1024"]
        );
        assert_eq!(
            sequence(s("knits-h2"), 1024, 3),
            ["/obj/n2/s1024", "/obj/n3/s1024", "/obj/n3/s1024"]
        );
        assert_eq!(
            sequence(s("knits-h1"), 64, 2),
            ["/obj/n2/s64", "/obj/n2/s64"]
        );
        assert_eq!(
            sequence(s("netfilter"), 64, 2),
            ["/obj/n1/s64", "/obj/n1/s64"]
        );
        assert!(!measures_handoff(s("knits-h2")));
    }

    #[test]
    fn expected_handoffs_per_scenario_and_measure() {
        let s = |n| crate::scenario::by_name(n).unwrap();
        let e = |n, m, c| expected_handoffs(s(n), m, c, 2);
        assert_eq!(e("knits-h2", Measure::Serial, 1.0), Some((2.0, 0.0)));
        assert_eq!(e("knits-h2", Measure::Seq, 100.5), Some((201.0, 2.0)));
        assert_eq!(
            expected_handoffs(s("knits-h2"), Measure::Seq, 10.0, 1),
            Some((10.0, 1.0))
        );
        assert_eq!(e("knits-h1", Measure::Serial, 1.0), Some((1.0, 0.0)));
        assert_eq!(e("knits-h1-pool", Measure::Cps, 500.0), Some((500.0, 1.0)));
        assert_eq!(e("knits-h1", Measure::Concurrent, 64.0), Some((64.0, 1.0)));
        assert_eq!(e("knits", Measure::Seq, 300.0), Some((0.0, 0.0)));
        assert_eq!(e("knits-nooffload", Measure::Serial, 1.0), Some((0.0, 0.0)));
        assert_eq!(e("haproxy", Measure::Serial, 1.0), None);
        assert_eq!(e("proxy-alone", Measure::Cps, 9.0), None);
    }

    #[test]
    fn full_mode_is_the_papers() {
        let o = Options::full(vec![], "x".into());
        assert_eq!(o.runs, 7);
        assert_eq!(o.sizes.first(), Some(&1024));
        assert_eq!(o.sizes.last(), Some(&(32 << 20)));
    }
}
