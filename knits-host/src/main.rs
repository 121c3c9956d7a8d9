//! `knits-host`: the KNITS switch on TAP devices, its namespace cluster, the demo and a load client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use knits_host::cluster::{self, Cluster, ClusterConfig};
use knits_host::load::{self, Progress, Spec};
use knits_host::netns;

#[derive(Parser)]
#[command(
    name = "knits-host",
    version,
    about = "KNITS switch on Linux TAP devices, a namespace cluster, the demo and a load client"
)]
struct Cli {
    /// Log level of the services: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn")]
    log_level: tracing::Level,
    /// Worker threads of an embedded proxy or origin.
    #[arg(long, global = true, hide = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build or remove a cluster of namespaces around the switch.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Print the counters of a running switch.
    Stats {
        /// Run prefix of the cluster.
        #[arg(long)]
        prefix: String,
        /// Prometheus text instead of the table.
        #[arg(long)]
        prom: bool,
    },
    /// A 3-node cluster, a pipelined verified workload with 0, 1 and 2 hand-offs per connection,
    /// and a summary. Needs root.
    Demo(DemoArgs),
    /// Persistent, pipelined, verified HTTP/1.1 load against the VIP from the client namespace.
    Load(LoadArgs),
    /// (internal) the knits-proxy back-end proxy, run inside a node namespace.
    #[command(hide = true)]
    ExecProxy(Box<knits_proxy::config::RunArgs>),
    /// (internal) the deterministic origin server, run inside a node namespace.
    #[command(hide = true)]
    ExecOrigin(knits_proxy::origin::OriginArgs),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Build the cluster, run the switch in the foreground, print "ready"; Ctrl-C tears down.
    Up(Box<UpArgs>),
    /// Remove what a crashed run with this prefix left (namespaces, links, processes).
    Down {
        /// Run prefix.
        #[arg(long)]
        prefix: String,
    },
}

#[derive(Args, Clone, Default)]
struct UpArgs {
    /// TOML file (flags override it); see docs/architecture.md ("The host harness").
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Back-end nodes (1..=15).
    #[arg(long)]
    nodes: Option<usize>,
    /// Name prefix of namespaces and links (1..=8 of [a-z0-9]).
    #[arg(long)]
    prefix: Option<String>,
    /// The VIP, in 198.18.0.0/24.
    #[arg(long)]
    vip: Option<std::net::Ipv4Addr>,
    /// Spray policy: round-robin, weighted or maglev.
    #[arg(long)]
    policy: Option<String>,
    /// Spray weight per node, node 1 first (e.g. 1,0,0); 0 drains a node from the spray (it
    /// still takes hand-offs).
    #[arg(long, value_delimiter = ',', value_name = "W,W,...")]
    weights: Option<Vec<u16>>,
    /// Control key, 32 hex digits (random when unset).
    #[arg(long)]
    key: Option<String>,
    /// Proxy dispatch policy: prefix (/obj/nK/ on node K), hash or local.
    #[arg(long)]
    proxy_policy: Option<String>,
    /// Turn TSO/checksum offloads off (MTU-sized frames, full checksums).
    #[arg(long)]
    no_offloads: bool,
    /// Write every frame in and out to this pcapng file (one interface per port).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Serve Prometheus metrics here, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<SocketAddr>,
    /// Switch TIME-WAIT in milliseconds.
    #[arg(long, value_name = "MS")]
    time_wait_ms: Option<u64>,
    /// Hand-off acknowledgment limit in milliseconds.
    #[arg(long, value_name = "MS")]
    handoff_ms: Option<u64>,
    /// Fault: loss rate per frame and port direction (0.01 = 1%).
    #[arg(long)]
    loss: Option<f64>,
    /// Fault: reorder rate.
    #[arg(long)]
    reorder: Option<f64>,
    /// Fault: duplication rate.
    #[arg(long)]
    duplicate: Option<f64>,
    /// Fault: corruption rate.
    #[arg(long)]
    corrupt: Option<f64>,
    /// Fault injector seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the services' logs in this directory.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Switch shards, one thread each (1..=4; default 1, the single-threaded loop).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Your web server behind every proxy, e.g. 127.0.0.1:8081 (default: the origin on :8080).
    ///
    /// The address inside each node namespace: loopback (in a one-node cluster also the
    /// node's own address). nginx or any HTTP/1.1 server; start it yourself in every node
    /// namespace, e.g. `ip netns exec <prefix>-n1 nginx -c FILE`, before sending traffic.
    /// "ready" needs only the proxies, which answer 502 while the server is missing.
    #[arg(long, value_name = "ADDR:PORT")]
    upstream: Option<SocketAddr>,
    /// Do not start the deterministic origin (127.0.0.1:8080); needs --upstream.
    ///
    /// Without this flag the origin keeps running next to your server, on its own port.
    #[arg(long)]
    no_origin: bool,
    /// A service on the VIP, repeated: PORT:MODE with MODE http, tls or l4 (e.g. 443:tls,
    /// 5201:l4). Port 80 is HTTP unless listed. TLS: the proxies route by server name and hand
    /// off without terminating TLS; l4: sprayed with NAT, never handed off.
    #[arg(long = "service", value_name = "PORT:MODE")]
    services: Vec<String>,
    /// Your TLS server in every node namespace, e.g. 127.0.0.1:9443 (default: nginx on
    /// 127.0.0.1:8443 with a per-node certificate, started by cluster up).
    #[arg(long, value_name = "ADDR:PORT")]
    tls_upstream: Option<SocketAddr>,
    /// The domain of the nodes' server names (node K owns nK.DOMAIN and *.nK.DOMAIN).
    #[arg(long, value_name = "DOMAIN")]
    tls_domain: Option<String>,
}

impl UpArgs {
    fn config(&self) -> Result<ClusterConfig, String> {
        let mut c = match &self.config {
            Some(p) => ClusterConfig::from_toml(
                &std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?,
            )?,
            None => ClusterConfig::default(),
        };
        if let Some(v) = self.nodes {
            c.nodes = v;
        }
        if let Some(v) = &self.prefix {
            c.prefix = Some(v.clone());
        }
        if let Some(v) = self.vip {
            c.vip = v;
        }
        if let Some(v) = &self.policy {
            c.policy = v.clone();
        }
        if let Some(v) = &self.weights {
            c.weights = v.clone();
        }
        if let Some(v) = &self.key {
            c.key = Some(v.clone());
        }
        if let Some(v) = &self.proxy_policy {
            c.proxy.policy = v.clone();
        }
        if self.no_offloads {
            c.offloads = false;
        }
        if let Some(v) = &self.pcap {
            c.pcap = Some(v.clone());
        }
        if let Some(v) = self.metrics {
            c.metrics = Some(v);
        }
        if let Some(v) = self.time_wait_ms {
            c.timeouts.time_wait_ms = Some(v);
        }
        if let Some(v) = self.handoff_ms {
            c.timeouts.handoff_ms = Some(v);
        }
        let f = &mut c.faults;
        f.loss = self.loss.unwrap_or(f.loss);
        f.reorder = self.reorder.unwrap_or(f.reorder);
        f.duplicate = self.duplicate.unwrap_or(f.duplicate);
        f.corrupt = self.corrupt.unwrap_or(f.corrupt);
        f.seed = self.seed.unwrap_or(f.seed);
        if let Some(v) = &self.log_dir {
            c.log_dir = Some(v.clone());
        }
        if let Some(v) = self.shards {
            c.shards = v;
        }
        if let Some(v) = self.upstream {
            c.upstream = Some(v);
        }
        if self.no_origin {
            c.origin = false;
        }
        c.services.extend(self.services.iter().cloned());
        if let Some(v) = self.tls_upstream {
            c.tls_upstream = Some(v);
        }
        if let Some(v) = &self.tls_domain {
            c.tls_domain = v.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args, Clone)]
struct DemoArgs {
    /// Turn TSO/checksum offloads off.
    #[arg(long)]
    no_offloads: bool,
    /// Connections.
    #[arg(long, default_value_t = 30)]
    conns: usize,
    /// Requests per connection.
    #[arg(long, default_value_t = 12)]
    requests: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    /// Write every frame to this pcapng file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Switch shards, one thread each (1..=4).
    #[arg(long, default_value_t = 1)]
    shards: usize,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Run prefix of the cluster (the client runs in <prefix>-client).
    #[arg(long, conflicts_with = "netns")]
    prefix: Option<String>,
    /// Namespace to run in instead.
    #[arg(long)]
    netns: Option<String>,
    /// Server address.
    #[arg(long, default_value = "198.18.0.10:80")]
    target: SocketAddr,
    /// Back-end nodes (for the /obj/nK/ paths).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Connections.
    #[arg(long, default_value_t = 30)]
    conns: usize,
    /// Requests per connection.
    #[arg(long, default_value_t = 12)]
    requests: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 4)]
    pipeline: usize,
    /// Connections open at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Most hand-offs per connection (connection c plans c % (max+1)).
    #[arg(long, default_value_t = 2)]
    max_handoffs: usize,
    /// Object sizes to cycle through, bytes.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1024,16384,102400,1048576"
    )]
    sizes: Vec<u64>,
    /// Inactivity limit per connection, ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.cmd {
        Cmd::ExecProxy(args) => knits_host::services::exec_proxy(*args, cli.threads),
        Cmd::ExecOrigin(args) => knits_host::services::exec_origin(args, cli.threads),
        Cmd::Cluster(ClusterCmd::Down { prefix }) => cluster_down(&prefix),
        Cmd::Cluster(ClusterCmd::Up(args)) => args.config().and_then(cluster_up),
        Cmd::Stats { prefix, prom } => netns::check_prefix(&prefix).and_then(|_| {
            knits_host::stats::query(&knits_host::stats::socket_path(&prefix), prom)
                .map(|s| print!("{s}"))
                .map_err(|e| e.to_string())
        }),
        Cmd::Demo(args) => demo(args),
        Cmd::Load(args) => load_cmd(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knits-host: {e}");
            ExitCode::from(2)
        }
    }
}

fn cluster_down(prefix: &str) -> Result<(), String> {
    netns::check_prefix(prefix)?;
    if !netns::have_net_admin() {
        return Err(cluster::needs_root());
    }
    let removed = netns::cleanup_prefix(prefix).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(knits_host::stats::socket_path(prefix));
    if removed.is_empty() {
        println!("nothing with prefix {prefix} was left");
    } else {
        println!("removed {}", removed.join(", "));
    }
    Ok(())
}

/// Sets `stop` on SIGINT and SIGTERM.
fn stop_on_signals() -> Result<Arc<AtomicBool>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    Ok(stop)
}

fn self_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))
}

fn cluster_up(cfg: ClusterConfig) -> Result<(), String> {
    if !netns::have_net_admin() {
        return Err(cluster::needs_root());
    }
    let stop = stop_on_signals()?;
    let mut c = Cluster::up(cfg, &self_exe()?)?;
    let prefix = c.prefix().to_string();
    // The origin's paths mean nothing to another web server.
    let path = if c.config.upstream.is_some() {
        "/"
    } else {
        "/obj/n2/x?size=100"
    };
    eprintln!(
        "cluster {prefix}: {} nodes; client namespace {}; try `ip netns exec {} curl http://{}{path}`; \
         counters: `knits-host stats --prefix {prefix}`",
        c.config.nodes, c.client_ns, c.client_ns, c.config.vip
    );
    if let Some(a) = c.metrics_addr() {
        eprintln!("metrics on http://{a}/metrics");
    }
    if let (Some(port), Some(tls)) = (c.config.tls_port(), &c.tls) {
        let name = format!("n2.{}", c.config.tls_domain);
        eprintln!(
            "HTTPS on port {port}: node K owns nK.{d} and *.nK.{d}; try `ip netns exec {} curl \
             --cacert {} --resolve {name}:{port}:{} https://{name}:{port}{path}`",
            c.client_ns,
            tls.ca().display(),
            c.config.vip,
            d = c.config.tls_domain,
        );
    }
    if let Some(up) = c.config.upstream {
        eprintln!(
            "the proxies forward to {up} inside each node namespace: start your web server there \
             (e.g. `ip netns exec {prefix}-n1 nginx -c FILE`) before sending traffic; until then \
             they answer 502{}",
            if c.config.origin {
                format!(
                    "; the origin still runs on 127.0.0.1:{}",
                    cluster::ORIGIN_PORT
                )
            } else {
                String::new()
            }
        );
    }
    // The switch runs on a thread of this process; this one probes readiness, then watches the
    // services until a signal.
    c.start_switch()?;
    let r = (|| {
        c.wait_ready(Duration::from_secs(30))
            .map_err(|e| format!("{e}\n(services' logs: {})", c.log_dir.display()))?;
        println!("ready");
        while !stop.load(Ordering::Relaxed) {
            c.check_services()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok::<(), String>(())
    })();
    // The table has a line per shard when there are several.
    let snap = c.stop_switch();
    c.down();
    if let Ok(snap) = &snap {
        eprintln!("{}", snap.table());
    }
    r.and(snap.map(|_| ()))
}

fn run_with_progress(spec: Spec, label: &str) -> load::Report {
    let total: u64 = spec.scripts.iter().map(|s| s.len() as u64).sum();
    let progress = Arc::new(Progress::default());
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} requests {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let p2 = progress.clone();
    let worker = std::thread::spawn(move || load::run(&spec, p2));
    while !worker.is_finished() {
        bar.set_position(progress.requests.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{:.1} MiB verified, {} failed",
            progress.bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
            progress.failed.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
    worker.join().unwrap_or_default()
}

fn demo(args: DemoArgs) -> Result<(), String> {
    if !netns::have_net_admin() {
        return Err(format!("demo: {}", cluster::needs_root()));
    }
    let stop = stop_on_signals()?;
    let cfg = ClusterConfig {
        nodes: 3,
        prefix: Some(netns::unique_prefix("demo")),
        offloads: !args.no_offloads,
        pcap: args.pcap.clone(),
        timeouts: cluster::TimeoutsMs {
            time_wait_ms: Some(2000),
            ..Default::default()
        },
        shards: args.shards,
        ..ClusterConfig::default()
    };
    cfg.validate()?;
    let t0 = std::time::Instant::now();
    eprintln!(
        "building a 3-node cluster (prefix {}) ...",
        cfg.prefix.as_deref().unwrap_or("")
    );
    let mut c = Cluster::up(cfg, &self_exe()?)?;
    c.start_switch()?;
    c.wait_ready(Duration::from_secs(30))?;
    eprintln!(
        "ready after {:.1} s; running the workload",
        t0.elapsed().as_secs_f64()
    );
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    let spec = Spec {
        target: c.vip(),
        netns: Some(c.client_ns.clone()),
        scripts: load::mixed_scripts(
            args.conns,
            args.requests,
            3,
            2,
            &[0, 1024, 16 * 1024, 100 * 1024, 1 << 20],
        ),
        pipeline: args.pipeline,
        concurrency: args.conns,
        timeout: Duration::from_secs(10),
    };
    let report = run_with_progress(spec, "demo");
    // Let the switch see the closes before reading its counters.
    std::thread::sleep(Duration::from_millis(300));
    let snap = c.stop_switch()?;
    println!(
        "== client ({} connections, pipeline {}, every byte verified) ==",
        args.conns, args.pipeline
    );
    print!("{}", report.table());
    println!("== switch ==");
    print!("{}", snap.table());
    println!("demo finished in {:.1} s", t0.elapsed().as_secs_f64());
    drop(c);
    if !report.failures().is_empty() {
        return Err(format!("{} connections failed", report.failures().len()));
    }
    Ok(())
}

fn load_cmd(args: LoadArgs) -> Result<(), String> {
    let ns = match (&args.prefix, &args.netns) {
        (Some(p), _) => {
            netns::check_prefix(p)?;
            Some(format!("{p}-client"))
        }
        (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    };
    if ns.is_some() && !netns::have_net_admin() {
        return Err("load: entering a namespace needs root (CAP_SYS_ADMIN); run with sudo or without --prefix/--netns".into());
    }
    if args.sizes.is_empty() {
        return Err("--sizes needs at least one size".into());
    }
    let spec = Spec {
        target: args.target,
        netns: ns,
        scripts: load::mixed_scripts(
            args.conns,
            args.requests,
            args.nodes,
            args.max_handoffs,
            &args.sizes,
        ),
        pipeline: args.pipeline,
        concurrency: args.concurrency,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let report = run_with_progress(spec, "load");
    print!("{}", report.table());
    if !report.failures().is_empty() {
        return Err(format!(
            "{} of {} connections failed",
            report.failures().len(),
            report.conns.len()
        ));
    }
    Ok(())
}
