//! `knits-bench`: the paper's Figures 6-8 on this machine, beside Direct, kernel forwarding,
//! Netfilter NAT and HAProxy (docs/benchmarks.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use knits_bench::runner::{self, Options};
use knits_bench::scenario::{self, parse_only, parse_size};

#[derive(Parser)]
#[command(
    name = "knits-bench",
    version,
    about = "KNITS against Direct, Forward, Netfilter NAT and HAProxy: throughput, latency, connections/s, CPU per GB"
)]
struct Cli {
    /// Worker threads of an embedded proxy (set by the cluster for `exec-proxy`).
    #[arg(long, global = true, hide = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build each topology in namespaces, run wrk against it, tear it down; write CSV, markdown
    /// and plots. Needs root, wrk, nginx-light, haproxy and nftables.
    Run(RunArgs),
    /// List the scenarios.
    List,
    /// (internal) the knits-proxy back-end proxy, run inside a node namespace.
    #[command(hide = true)]
    ExecProxy(Box<knits_proxy::config::RunArgs>),
    /// (internal) the deterministic origin, run inside a node namespace.
    #[command(hide = true)]
    ExecOrigin(knits_proxy::origin::OriginArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// A short run: 1 KiB, 64 KiB, 1 MiB, 32 MiB; 3 runs of 1 s per point (all kept).
    #[arg(long)]
    quick: bool,
    /// Scenarios (comma-separated names, or groups all, kernel, paper, knits-all); `list` shows them.
    #[arg(long, value_name = "NAME,...", default_value = "all")]
    only: String,
    /// Output directory (CSV, results.md, plots).
    #[arg(long, value_name = "DIR", default_value = "bench-out")]
    out: PathBuf,
    /// Override the serialized response sizes (e.g. 1k,64k,32M).
    #[arg(long, value_name = "SIZE,...", value_delimiter = ',')]
    sizes: Option<Vec<String>>,
    /// Override the runs per point.
    #[arg(long)]
    runs: Option<usize>,
    /// Override the seconds per run.
    #[arg(long)]
    seconds: Option<u64>,
    /// Requests per connection of the request-sequence runs (KNITS-Handoff-2 needs 2 or more;
    /// 0 skips them).
    #[arg(long, value_name = "N")]
    seq_requests: Option<usize>,
    /// Skip the connections/s runs.
    #[arg(long)]
    no_cps: bool,
    /// Skip the concurrent runs.
    #[arg(long)]
    no_concurrent: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::List => {
            for s in scenario::ALL {
                println!("{:<18} {}", s.name, s.what);
            }
            Ok(())
        }
        Cmd::ExecProxy(args) => knits_host::services::exec_proxy(*args, cli.threads),
        Cmd::ExecOrigin(args) => knits_host::services::exec_origin(args, cli.threads),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knits-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: RunArgs) -> Result<(), String> {
    let scenarios = parse_only(&a.only)?;
    let mut o = if a.quick {
        Options::quick(scenarios, a.out.clone())
    } else {
        Options::full(scenarios, a.out.clone())
    };
    if let Some(s) = &a.sizes {
        o.sizes = s.iter().map(|x| parse_size(x)).collect::<Result<_, _>>()?;
    }
    if let Some(r) = a.runs {
        o.runs = r.max(1);
    }
    if let Some(s) = a.seconds {
        o.seconds = s.max(1);
    }
    if let Some(n) = a.seq_requests {
        o.seq_requests = n;
    }
    if a.no_cps {
        o.cps_sizes.clear();
    }
    if a.no_concurrent {
        o.conc_sizes.clear();
    }
    o.command = std::env::args()
        .map(|s| if s.contains(' ') { format!("'{s}'") } else { s })
        .collect::<Vec<_>>()
        .join(" ");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let machine = runner::machine();
    let res = runner::execute(&o, &stop, &exe)?;
    let md = runner::write_outputs(&o, &res, &machine)?;
    eprintln!(
        "knits-bench: {} runs in {:.0} s; results in {}",
        res.runs.len() + 2 * res.handoffs.len(),
        res.seconds,
        md.display()
    );
    Ok(())
}
