//! A cluster of network namespaces around the switch (ARCHITECTURE.md, "Addresses"):
//!
//! ```text
//!   <prefix>-client  198.18.0.2/24 gw 198.18.0.1 --TAP <prefix>-client-- port 0 --+
//!   <prefix>-n1      198.19.1.2/24 gw 198.19.1.1 --TAP <prefix>-n1------ port 1 --+-- switch
//!   <prefix>-nN      198.19.N.2/24 gw 198.19.N.1 --TAP <prefix>-nN------ port N --+   (this process)
//! ```
//!
//! Each back-end namespace runs the deterministic origin (127.0.0.1:8080) and knits-proxy on
//! 198.19.N.2:80 with a prefix policy: `/obj/nK/...` lives on node K, anything else is served where
//! the connection landed. Both are this executable (`knits-host exec-origin` / `exec-proxy`, the
//! knits-proxy library), started with `ip netns exec`, killed with the run. The TAP fds stay
//! here; their links live in the namespaces. Everything carries the run prefix, and the
//! [`Guard`] removes it on drop, also on panic.
//!
//! With [`ClusterConfig::upstream`] the proxies forward to another web server instead (nginx or
//! any HTTP/1.1 server), at the same loopback address in every node namespace; the user starts
//! it there (`ip netns exec <prefix>-nN nginx ...`). The origin still runs on its own port unless
//! [`ClusterConfig::origin`] is false.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use knits_core::config::{Config, SprayPolicy};
use knits_core::time::Duration as CoreDuration;
use serde::Deserialize;

use crate::faults::FaultConfig;
use crate::http::{ResponseParser, Step};
use crate::netns::{self, Guard};
use crate::runtime::{Options, Runtime};
use crate::shard::{MAX_SHARDS, ShardCounts, ShardStats};
use crate::shard_set::ShardSet;
use crate::stats::{self, Snapshot};
use crate::switch::SwitchCore;
use crate::tap::{Tap, TapOptions};

/// The origin's port inside each node namespace.
pub const ORIGIN_PORT: u16 = 8080;
/// The service port on the VIP and on each node.
pub const SERVICE_PORT: u16 = 80;

/// Switch timeouts in milliseconds; unset ones keep the core's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsMs {
    /// SYN-only connections.
    pub syn_ms: Option<u64>,
    /// Idle established connections.
    pub established_ms: Option<u64>,
    /// Opening or closing connections.
    pub transitory_ms: Option<u64>,
    /// After close (2 MSL).
    pub time_wait_ms: Option<u64>,
    /// Hand-off target's acknowledgment limit.
    pub handoff_ms: Option<u64>,
}

/// How the proxies are set up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySetup {
    /// `prefix` (`/obj/nK/` on node K, the rest local), `hash` or `local`.
    pub policy: String,
    /// Further `knits-proxy run` flags, e.g. `["--c2-pool", "2"]`. The default is
    /// `["--c2-pool", "0"]`: the proxy keeps 2 pre-connected new legs per peer unless told
    /// otherwise, and those are idle flows in the switch's table, which the e2e tests expect to
    /// empty or stay flat. Setting `extra_args` replaces the default (knits-bench does, so its
    /// clusters run with the proxy's own default).
    pub extra_args: Vec<String>,
    /// Worker threads of each proxy and origin.
    pub threads: usize,
}

impl Default for ProxySetup {
    fn default() -> Self {
        ProxySetup {
            policy: "prefix".into(),
            extra_args: vec!["--c2-pool".into(), "0".into()],
            threads: 1,
        }
    }
}

/// Everything `cluster up` needs, from flags or a TOML file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Back-end nodes, 1..=15.
    pub nodes: usize,
    /// Name prefix of namespaces and links (a fresh one when unset).
    pub prefix: Option<String>,
    /// The VIP (in the client subnet 198.18.0.0/24).
    pub vip: Ipv4Addr,
    /// Spray policy: `round-robin`, `weighted` or `maglev`.
    pub policy: String,
    /// Control key, 32 hex digits (a random one when unset).
    pub key: Option<String>,
    /// TSO and checksum offloads on the TAPs.
    pub offloads: bool,
    /// Capture every frame to this pcapng file.
    pub pcap: Option<PathBuf>,
    /// Serve Prometheus metrics on this loopback address.
    pub metrics: Option<SocketAddr>,
    /// Flow table capacity.
    pub flow_capacity: usize,
    /// Splice session capacity.
    pub session_capacity: usize,
    /// Switch timeouts.
    pub timeouts: TimeoutsMs,
    /// Fault injection on every port.
    pub faults: FaultConfig,
    /// The proxies.
    pub proxy: ProxySetup,
    /// Where the proxies' and origins' logs go (default: a temporary directory per run).
    pub log_dir: Option<PathBuf>,
    /// Switch shards, one thread each (1..=4; 1: the single-threaded loop). With more, every
    /// TAP is multi-queue and the proxies pick new legs' ports by shard
    /// (docs/architecture.md, "Using both cores").
    pub shards: usize,
    /// The web server each node's proxy forwards to, as seen inside the node's namespace
    /// (loopback, e.g. `127.0.0.1:8081`; in a one-node cluster also the node's own address).
    /// Unset: the deterministic origin on 127.0.0.1:8080. The user starts the server in every
    /// node namespace; readiness needs only the proxies, which answer 502 while it is missing.
    pub upstream: Option<SocketAddr>,
    /// Start the deterministic origin on 127.0.0.1:8080 in every node namespace (false only
    /// together with `upstream`).
    pub origin: bool,
    /// Spray weight of each node, node 1 first (empty: 1 each). 0 drains a node: it gets no
    /// new connections from the spray but still takes hand-offs (e.g. `[1, 0, 0]`: every
    /// connection lands on node 1, so every request for another owner is handed off).
    pub weights: Vec<u16>,
    /// More services on the VIP, `PORT:MODE` (`443:tls`, `5201:l4`); port 80 is HTTP unless
    /// listed (see [`crate::https`]).
    pub services: Vec<String>,
    /// The TLS server of every node, inside its namespace (unset: `cluster up` starts nginx on
    /// 127.0.0.1:8443 with the node's certificate).
    pub tls_upstream: Option<SocketAddr>,
    /// The domain of the nodes' server names: node K owns `nK.<domain>` and `*.nK.<domain>`.
    pub tls_domain: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            prefix: None,
            vip: Ipv4Addr::new(198, 18, 0, 10),
            policy: "round-robin".into(),
            key: None,
            offloads: true,
            pcap: None,
            metrics: None,
            flow_capacity: 16384,
            session_capacity: 4096,
            timeouts: TimeoutsMs::default(),
            faults: FaultConfig::default(),
            proxy: ProxySetup::default(),
            log_dir: None,
            shards: 1,
            upstream: None,
            origin: true,
            weights: Vec::new(),
            services: Vec::new(),
            tls_upstream: None,
            tls_domain: "knits.test".into(),
        }
    }
}

/// Parses 32 hex digits into a key.
pub fn parse_key(hex: &str) -> Result<[u8; 16], String> {
    let hex = hex.trim();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "control key must be 32 hex digits (16 bytes), got {} characters",
            hex.len()
        ));
    }
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(k)
}

fn hex(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_key() -> [u8; 16] {
    let mut k = [0u8; 16];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut k))
        .is_err()
    {
        use rand_xoshiro::rand_core::{Rng, SeedableRng};
        let s = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(s);
        for b in &mut k {
            *b = rng.next_u64() as u8;
        }
    }
    k
}

impl ClusterConfig {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_toml(text: &str) -> Result<ClusterConfig, String> {
        toml::from_str(text).map_err(|e| format!("cluster configuration: {e}"))
    }

    /// Checks everything that can be checked before touching the system.
    pub fn validate(&self) -> Result<(), String> {
        self.check_weights()?;
        if !(1..=knits_core::config::MAX_BACKENDS).contains(&self.nodes) {
            return Err(format!(
                "nodes = {} must be 1..={}",
                self.nodes,
                knits_core::config::MAX_BACKENDS
            ));
        }
        if let Some(p) = &self.prefix {
            netns::check_prefix(p)?;
        }
        let o = self.vip.octets();
        if o[..3] != [198, 18, 0] || matches!(o[3], 0 | 1 | 2 | 255) {
            return Err(format!(
                "vip {} must lie in the client subnet 198.18.0.0/24 and not be .0, .1 (gateway), .2 (client) or .255",
                self.vip
            ));
        }
        self.spray_policy()?;
        if let Some(k) = &self.key {
            parse_key(k)?;
        }
        if self.flow_capacity < 16 || self.session_capacity < 1 {
            return Err("flow_capacity must be >= 16 and session_capacity >= 1".into());
        }
        self.faults.validate()?;
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            return Err(format!(
                "shards = {} must be 1..={} (one switch thread each)",
                self.shards, MAX_SHARDS
            ));
        }
        if !matches!(self.proxy.policy.as_str(), "prefix" | "hash" | "local") {
            return Err(format!(
                "proxy.policy {:?} must be prefix, hash or local",
                self.proxy.policy
            ));
        }
        crate::https::services(&self.services, SERVICE_PORT)?;
        if !matches!(
            knits_proxy::tls::route::NamePattern::parse(&self.tls_domain),
            Ok(knits_proxy::tls::route::NamePattern::Exact(_))
        ) {
            return Err(format!(
                "tls_domain {:?} is not a host name (e.g. knits.test)",
                self.tls_domain
            ));
        }
        self.check_upstream()
    }

    /// The TLS service's port, if the cluster serves one.
    pub fn tls_port(&self) -> Option<u16> {
        crate::https::services(&self.services, SERVICE_PORT)
            .ok()?
            .iter()
            .find(|s| s.mode == knits_core::config::ServiceMode::Tls)
            .map(|s| s.port)
    }

    /// The upstream must be reachable inside every node namespace without the switch: a
    /// loopback address (the same in every namespace), or, with one node, that node's address.
    fn check_upstream(&self) -> Result<(), String> {
        let Some(up) = self.upstream else {
            if !self.origin {
                return Err(
                    "origin = false (--no-origin) leaves the proxies nothing to forward to: \
                     also give upstream = \"ADDR:PORT\" (--upstream ADDR:PORT), the web server you \
                     start in every node namespace"
                        .into(),
                );
            }
            return Ok(());
        };
        let example = "e.g. --upstream 127.0.0.1:8081 (upstream = \"127.0.0.1:8081\") with your \
                       server listening on 127.0.0.1:8081 in every node namespace";
        if up.port() == 0 {
            return Err(format!(
                "upstream {up} has port 0: give the port your web server listens on, {example}"
            ));
        }
        let local = up.ip().is_loopback()
            || (self.nodes == 1 && up.ip() == std::net::IpAddr::V4(node_addr(1)));
        if !local {
            let why = if up.ip().is_unspecified() {
                "is a wildcard address, not one to connect to".to_string()
            } else if (1..=self.nodes).any(|n| up.ip() == std::net::IpAddr::V4(node_addr(n))) {
                "is one node's address: the other nodes would reach it through the switch"
                    .to_string()
            } else {
                "is not an address of the node namespaces".to_string()
            };
            return Err(format!(
                "upstream {up} {why}; each node's proxy connects to its upstream inside its own \
                 namespace, so use a loopback address, {example}"
            ));
        }
        if up.ip() == std::net::IpAddr::V4(node_addr(1)) && up.port() == SERVICE_PORT {
            return Err(format!(
                "upstream {up} is where the proxy itself listens; move your web server to another \
                 port, {example}"
            ));
        }
        if self.origin && up.port() == ORIGIN_PORT {
            return Err(format!(
                "upstream {up}: port {ORIGIN_PORT} is the deterministic origin's (127.0.0.1:{ORIGIN_PORT} \
                 in every node namespace); move your web server to another port, {example}; or pass \
                 --no-origin (origin = false)"
            ));
        }
        Ok(())
    }

    /// The address every proxy forwards to: [`ClusterConfig::upstream`] or the origin.
    pub fn proxy_upstream(&self) -> SocketAddr {
        self.upstream
            .unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, ORIGIN_PORT)))
    }

    /// The spray policy named by `policy`.
    pub fn spray_policy(&self) -> Result<SprayPolicy, String> {
        match self.policy.as_str() {
            "round-robin" | "rr" => Ok(SprayPolicy::RoundRobin),
            "weighted" => Ok(SprayPolicy::Weighted),
            "maglev" => Ok(SprayPolicy::Maglev),
            p => Err(format!(
                "spray policy {p:?} must be round-robin, weighted or maglev"
            )),
        }
    }

    fn check_weights(&self) -> Result<(), String> {
        if self.weights.is_empty() {
            return Ok(());
        }
        if self.weights.len() != self.nodes {
            return Err(format!(
                "weights has {} entries for {} nodes: give one weight per node, node 1 first (e.g. weights = [1, 0, 0])",
                self.weights.len(),
                self.nodes
            ));
        }
        if self.weights.iter().all(|&w| w == 0) {
            return Err("every weight is 0: at least one node must take new connections".into());
        }
        Ok(())
    }

    /// The switch configuration: [`Config::cluster`] with this file's VIP, policy and timeouts.
    pub fn switch_config(&self, key: [u8; 16]) -> Result<Config, String> {
        let mut c = Config::cluster(self.nodes, key);
        // A fresh flow-table hash seed per run, so nobody can precompute colliding tuples.
        c.hash_seed = random_key();
        c.vip = self.vip.octets().into();
        c.policy = self.spray_policy()?;
        c.services.clear();
        for s in crate::https::services(&self.services, SERVICE_PORT)? {
            let _ = c.services.push(s);
        }
        self.check_weights()?;
        for (b, &w) in c.backends.iter_mut().zip(&self.weights) {
            b.weight = w;
        }
        let ms = |v: Option<u64>, d: CoreDuration| v.map(CoreDuration::from_millis).unwrap_or(d);
        let t = &mut c.timeouts;
        t.syn = ms(self.timeouts.syn_ms, t.syn);
        t.established = ms(self.timeouts.established_ms, t.established);
        t.transitory = ms(self.timeouts.transitory_ms, t.transitory);
        t.time_wait = ms(self.timeouts.time_wait_ms, t.time_wait);
        t.handoff = ms(self.timeouts.handoff_ms, t.handoff);
        c.validate()
            .map_err(|e| format!("switch configuration: {e}"))?;
        Ok(c)
    }
}

/// Node `n`'s address (1-based).
pub fn node_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, n as u8, 2)
}

enum RunningSwitch {
    One {
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
    Sharded {
        stop: Arc<AtomicBool>,
        set: ShardSet,
    },
}

/// Opens TAP `ifname` with `queues` queues (multi-queue when more than one) here, then moves
/// its link into `ns` and configures it (what [`Guard::attach_tap`] does for one queue: a queue
/// can only be attached by name in the namespace the device is in).
fn attach_queues(
    ns: &str,
    ifname: &str,
    addr: &str,
    gateway: &str,
    opts: TapOptions,
    queues: usize,
) -> io::Result<Vec<Tap>> {
    let first = Tap::open(ifname, opts)?;
    let mut v = Vec::with_capacity(queues);
    for _ in 1..queues {
        v.push(first.open_queue()?);
    }
    v.insert(0, first);
    netns::ip(&["link", "set", "dev", ifname, "netns", ns])?;
    netns::ip_batch(
        Some(ns),
        &format!(
            "addr add {addr} dev {ifname}\nlink set dev {ifname} up\nroute add default via {gateway} dev {ifname}\n"
        ),
    )?;
    Ok(v)
}

/// A cluster that is up. Dropping it stops the switch, kills the services and removes every
/// namespace.
pub struct Cluster {
    /// The configuration (prefix resolved).
    pub config: ClusterConfig,
    /// The control key.
    pub key: [u8; 16],
    /// Client namespace.
    pub client_ns: String,
    /// Back-end namespaces, node 1 first.
    pub node_ns: Vec<String>,
    /// Logs of the proxies and origins.
    pub log_dir: PathBuf,
    /// The certificates of the TLS service, if the cluster serves one.
    pub tls: Option<crate::https::TlsFiles>,
    /// Per port, one queue per shard.
    taps: Option<Vec<Vec<Tap>>>,
    switch: Option<RunningSwitch>,
    shard_stats: Option<Arc<Vec<ShardStats>>>,
    snapshot: Arc<Mutex<Snapshot>>,
    server: Option<stats::Server>,
    remove_logs: bool,
    // Last: dropped after the switch has stopped.
    guard: Guard,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.guard.prefix())
            .field("nodes", &self.config.nodes)
            .finish()
    }
}

impl Cluster {
    /// Builds namespaces, TAPs and addresses and starts the origins and proxies (`exe` is the
    /// knits-host executable that provides `exec-origin` / `exec-proxy`). Does not start the
    /// switch.
    pub fn up(mut config: ClusterConfig, exe: &Path) -> Result<Cluster, String> {
        config.validate()?;
        if !netns::have_net_admin() {
            return Err(needs_root());
        }
        let prefix = config
            .prefix
            .clone()
            .unwrap_or_else(|| netns::unique_prefix("kn"));
        config.prefix = Some(prefix.clone());
        let key = match &config.key {
            Some(k) => parse_key(k)?,
            None => random_key(),
        };
        let mut guard = Guard::new(&prefix)?;
        let io = |e: io::Error| e.to_string();
        if netns::list_namespaces()
            .map_err(io)?
            .iter()
            .any(|n| n.starts_with(&format!("{prefix}-")))
        {
            return Err(format!(
                "namespaces with prefix {prefix} exist already (a crashed run?); remove them with \
                 `knits-host cluster down --prefix {prefix}` or pick another prefix"
            ));
        }
        let (log_dir, remove_logs) = match &config.log_dir {
            Some(d) => (d.clone(), false),
            None => (std::env::temp_dir().join(format!("knits-{prefix}")), true),
        };
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| format!("log directory {}: {e}", log_dir.display()))?;
        let key_file = log_dir.join("control.key");
        std::fs::write(&key_file, hex(&key) + "\n")
            .map_err(|e| format!("key file {}: {e}", key_file.display()))?;

        let shards = config.shards;
        let opts = TapOptions {
            offloads: config.offloads,
            multi_queue: shards > 1,
        };
        let attach = |guard: &mut Guard, ns: &str, addr: &str, gw: &str| {
            if shards > 1 {
                attach_queues(ns, ns, addr, gw, opts, shards).map_err(io)
            } else {
                Ok(vec![
                    guard.attach_tap(ns, ns, addr, Some(gw), opts).map_err(io)?,
                ])
            }
        };
        let client_ns = guard.add_namespace("client").map_err(io)?;
        let mut taps = vec![attach(
            &mut guard,
            &client_ns,
            "198.18.0.2/24",
            "198.18.0.1",
        )?];
        let mut node_ns = Vec::new();
        for n in 1..=config.nodes {
            let ns = guard.add_namespace(&format!("n{n}")).map_err(io)?;
            let addr = format!("{}/24", node_addr(n));
            let gw = format!("198.19.{n}.1");
            taps.push(attach(&mut guard, &ns, &addr, &gw)?);
            node_ns.push(ns);
        }
        let exe_s = exe.to_string_lossy().to_string();
        let tls_port = config.tls_port();
        let tls = match tls_port {
            Some(_) => Some(crate::https::TlsFiles::make(
                &log_dir.join("tls"),
                &config.tls_domain,
                config.nodes,
            )?),
            None => None,
        };
        let nginx = match (&tls, config.tls_upstream) {
            (Some(_), None) => Some(crate::https::find_nginx()?),
            _ => None,
        };
        for n in 1..=config.nodes {
            let ns = &node_ns[n - 1];
            let threads = config.proxy.threads.max(1).to_string();
            let log = |what: &str| File::create(log_dir.join(format!("n{n}-{what}.log"))).ok();
            if config.origin {
                let origin_args = vec![
                    "--threads".into(),
                    threads.clone(),
                    "exec-origin".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{ORIGIN_PORT}"),
                    "--node-id".into(),
                    format!("n{n}"),
                ];
                guard
                    .spawn_in(
                        ns,
                        &format!("origin n{n}"),
                        &exe_s,
                        &origin_args,
                        log("origin"),
                    )
                    .map_err(io)?;
            }
            let mut args: Vec<String> = vec![
                "--threads".into(),
                threads,
                "exec-proxy".into(),
                "--node-id".into(),
                format!("n{n}"),
                "--listen".into(),
                format!("{}:{SERVICE_PORT}", node_addr(n)),
                "--upstream".into(),
                config.proxy_upstream().to_string(),
                "--policy".into(),
                // A single node has no peer to hand off to.
                if config.nodes == 1 {
                    "local".into()
                } else {
                    config.proxy.policy.clone()
                },
                "--switch".into(),
                format!("198.19.{n}.1:{}", knits_core::wire::control::DEFAULT_PORT),
                "--key-file".into(),
                key_file.to_string_lossy().to_string(),
                "--key-id".into(),
                "1".into(),
            ];
            for k in 1..=config.nodes {
                if k != n {
                    args.push("--peer".into());
                    args.push(format!("n{k}={}:{SERVICE_PORT}", node_addr(k)));
                }
                if config.proxy.policy == "prefix" {
                    args.push("--prefix".into());
                    args.push(format!("/obj/n{k}/=n{k}"));
                }
            }
            if shards > 1 {
                args.push("--shards".into());
                args.push(shards.to_string());
            }
            if let (Some(port), Some(files)) = (tls_port, &tls) {
                let upstream = config
                    .tls_upstream
                    .unwrap_or_else(crate::https::default_tls_upstream);
                if let Some(nginx) = &nginx {
                    let conf = crate::https::nginx_conf(
                        &files.dir.join(format!("n{n}")),
                        files,
                        n,
                        upstream,
                        config.proxy_upstream(),
                    )?;
                    let nginx_args = vec![
                        "-c".to_string(),
                        conf.to_string_lossy().to_string(),
                        "-g".into(),
                        "daemon off;".into(),
                    ];
                    guard
                        .spawn_in(
                            ns,
                            &format!("nginx n{n}"),
                            &nginx.to_string_lossy(),
                            &nginx_args,
                            log("nginx"),
                        )
                        .map_err(io)?;
                }
                args.push("--tls-listen".into());
                args.push(format!("{}:{port}", node_addr(n)));
                args.push("--tls-upstream".into());
                args.push(upstream.to_string());
                for k in 1..=config.nodes {
                    for name in crate::https::node_names(&config.tls_domain, k) {
                        args.push("--sni".into());
                        args.push(format!("{name}=n{k}"));
                    }
                }
                // What this node's certificate holds: a failed hand-off is served here only
                // for these names, any other gets an alert (not this node's certificate).
                for name in crate::https::cert_names(&config.tls_domain, n) {
                    args.push("--tls-local-name".into());
                    args.push(name);
                }
            }
            args.extend(config.proxy.extra_args.iter().cloned());
            guard
                .spawn_in(ns, &format!("proxy n{n}"), &exe_s, &args, log("proxy"))
                .map_err(io)?;
        }
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let server = stats::Server::start(
            &stats::ServerConfig {
                http: config.metrics,
                unix: Some(stats::socket_path(&prefix)),
            },
            snapshot.clone(),
        )
        .map_err(io)?;
        Ok(Cluster {
            config,
            key,
            client_ns,
            node_ns,
            log_dir,
            tls,
            taps: Some(taps),
            switch: None,
            shard_stats: None,
            snapshot,
            server: Some(server),
            remove_logs,
            guard,
        })
    }

    /// The run prefix.
    pub fn prefix(&self) -> &str {
        self.guard.prefix()
    }

    /// The VIP service address.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.config.vip, SERVICE_PORT))
    }

    /// The metrics address actually bound, when serving.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().and_then(|s| s.http_addr)
    }

    fn runtime(&mut self) -> Result<Runtime<SwitchCore>, String> {
        if self.config.shards > 1 {
            return Err("a sharded switch runs on threads of its own (start_switch)".into());
        }
        let taps = self
            .taps
            .take()
            .ok_or("the switch was started already")?
            .into_iter()
            .flatten()
            .collect();
        let core = SwitchCore::new(
            self.config.switch_config(self.key)?,
            self.config.flow_capacity,
            self.config.session_capacity,
        )?;
        let opts = Options {
            faults: Some(self.config.faults),
            pcap: self.config.pcap.clone(),
        };
        Runtime::new(core, taps, &opts, self.snapshot.clone()).map_err(|e| e.to_string())
    }

    /// Starts `shards` > 1 switch loops, one thread each.
    fn start_shards(&mut self, stop: Arc<AtomicBool>) -> Result<ShardSet, String> {
        let n = self.config.shards;
        let per_port = self.taps.take().ok_or("the switch was started already")?;
        // queues[k][port]: shard k's queue of every port.
        let mut queues: Vec<Vec<Tap>> = (0..n).map(|_| Vec::new()).collect();
        for port in per_port {
            for (k, q) in port.into_iter().enumerate() {
                queues[k].push(q);
            }
        }
        let config = self.config.switch_config(self.key)?;
        // The capacities are the cluster's: each shard gets its share.
        let flows = self.config.flow_capacity.div_ceil(n).max(16);
        let sessions = self.config.session_capacity.div_ceil(n).max(1);
        let cores = (0..n)
            .map(|_| SwitchCore::new(config.clone(), flows, sessions))
            .collect::<Result<Vec<_>, _>>()?;
        let opts = Options {
            faults: Some(self.config.faults),
            pcap: self.config.pcap.clone(),
        };
        let set = ShardSet::start(cores, queues, config, &opts, self.snapshot.clone(), stop)
            .map_err(|e| format!("switch shards: {e}"))?;
        self.shard_stats = Some(set.stats());
        Ok(set)
    }

    /// Runs the switch on a thread of its own (one per shard).
    pub fn start_switch(&mut self) -> Result<(), String> {
        let stop = Arc::new(AtomicBool::new(false));
        if self.config.shards > 1 {
            let set = self.start_shards(stop.clone())?;
            self.switch = Some(RunningSwitch::Sharded { stop, set });
            return Ok(());
        }
        let mut rt = self.runtime()?;
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("knits-switch".into())
            .spawn(move || rt.run(&st).map_err(|e| format!("switch loop: {e}")))
            .map_err(|e| e.to_string())?;
        self.switch = Some(RunningSwitch::One { stop, thread });
        Ok(())
    }

    /// Runs the switch on the calling thread until `stop` is set (sharded: waits for the
    /// shards' threads).
    pub fn run_switch(&mut self, stop: &AtomicBool) -> Result<(), String> {
        if self.config.shards > 1 {
            let own = Arc::new(AtomicBool::new(false));
            let set = self.start_shards(own.clone())?;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            own.store(true, Ordering::Relaxed);
            return set.join().map_err(|e| format!("switch loop: {e}"));
        }
        let mut rt = self.runtime()?;
        rt.run(stop).map_err(|e| format!("switch loop: {e}"))
    }

    /// Stops a switch started with [`Cluster::start_switch`]; returns the last snapshot.
    pub fn stop_switch(&mut self) -> Result<Snapshot, String> {
        match self.switch.take() {
            Some(RunningSwitch::One { stop, thread }) => {
                stop.store(true, Ordering::Relaxed);
                thread
                    .join()
                    .map_err(|_| "the switch thread panicked".to_string())??;
            }
            Some(RunningSwitch::Sharded { stop, set }) => {
                stop.store(true, Ordering::Relaxed);
                set.join().map_err(|e| format!("switch loop: {e}"))?;
            }
            None => {}
        }
        Ok(self.snapshot())
    }

    /// Per shard: frames processed, handed over, lost to full rings (`None` with one shard).
    pub fn shard_counts(&self) -> Option<Vec<ShardCounts>> {
        self.shard_stats
            .as_ref()
            .map(|v| v.iter().map(ShardStats::counts).collect())
    }

    /// The latest counters.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The shared snapshot the switch publishes into.
    pub fn shared_snapshot(&self) -> Arc<Mutex<Snapshot>> {
        self.snapshot.clone()
    }

    /// Fails when a proxy or origin has exited, with the end of its log.
    pub fn check_services(&mut self) -> Result<(), String> {
        let dead = self.guard.exited_children();
        if let Some((label, st)) = dead.first() {
            let (what, node) = label.split_once(' ').unwrap_or((label, ""));
            let log = std::fs::read_to_string(self.log_dir.join(format!("{node}-{what}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{label} exited ({st}); its log ends:\n{}",
                tail.join("\n")
            ));
        }
        Ok(())
    }

    /// Waits until every node answers through the switch (also checks the services are alive).
    ///
    /// With the origin as upstream, every node must serve a request through the VIP. With an
    /// external [`ClusterConfig::upstream`] only the proxies are needed: each must listen, and
    /// `nodes` connections through the VIP must be answered by a proxy itself (a `CONNECT`,
    /// which the proxy refuses with 501 without asking the web server). So the web server may
    /// be started after this returns, but before traffic is sent (until then the proxies answer
    /// 502); it never sees a probe.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        // First every proxy must be listening, checked from inside its own namespace: a probe
        // through the VIP that reaches a node before its proxy listens is answered with an RST
        // that the client side would see.
        let ours = self.config.tls_upstream.is_none();
        let tls = self
            .config
            .tls_port()
            .map(|p| (p, ours.then(crate::https::default_tls_upstream)));
        let listeners: Vec<_> = (1..=self.config.nodes)
            .map(|n| {
                let ns = self.node_ns[n - 1].clone();
                std::thread::spawn(move || {
                    wait_listening(
                        &ns,
                        SocketAddr::from((node_addr(n), SERVICE_PORT)),
                        deadline,
                    )?;
                    // The TLS listener, and the TLS server behind it (which is ours to start
                    // unless the user runs one).
                    if let Some((port, up)) = tls {
                        wait_listening(&ns, SocketAddr::from((node_addr(n), port)), deadline)?;
                        if let Some(up) = up {
                            wait_listening(&ns, up, deadline)?;
                        }
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for l in listeners {
            while !l.is_finished() {
                self.check_services()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            l.join()
                .map_err(|_| "readiness check panicked".to_string())??;
        }
        // Drained nodes (weight 0) get no connection through the VIP: only the others answer.
        let nodes = match self.config.weights.as_slice() {
            [] => self.config.nodes,
            w => w.iter().filter(|&&w| w > 0).count(),
        };
        let (ns, vip) = (self.client_ns.clone(), self.vip());
        let external = self.config.upstream.is_some();
        let probe = std::thread::spawn(move || probe(&ns, vip, nodes, external, deadline));
        while !probe.is_finished() {
            self.check_services()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        probe
            .join()
            .map_err(|_| "readiness probe panicked".to_string())?
    }

    /// Stops everything now (also done on drop).
    pub fn down(&mut self) {
        let _ = self.stop_switch();
        self.server = None;
        self.guard.teardown();
        if self.remove_logs && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        } else {
            let _ = std::fs::remove_file(self.log_dir.join("control.key"));
            if std::thread::panicking() {
                eprintln!(
                    "knits-host: logs of the failed run are in {}",
                    self.log_dir.display()
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}

/// The message for a run without CAP_NET_ADMIN.
pub fn needs_root() -> String {
    "this needs root (CAP_NET_ADMIN): it creates network namespaces and TAP devices for the switch \
     ports; run it with sudo"
        .to_string()
}

/// One request through the VIP from inside namespace `ns` (the calling thread must be there):
/// a GET the origin answers, returning the serving node; or (`external`, the proxies forward to
/// a web server the user runs) a `CONNECT` the proxy refuses itself, returning its status.
fn probe_once(vip: SocketAddr, external: bool) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&vip, Duration::from_secs(3)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let req = if external {
        format!("CONNECT {vip} HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n")
    } else {
        crate::http::request("/obj/any/ready?size=1", &vip.ip().to_string(), true)
    };
    c.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut p = ResponseParser::new();
    let mut buf = [0u8; 4096];
    let mut node = None;
    loop {
        let n = c.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a response".into());
        }
        let mut at = 0;
        loop {
            let (used, step) = p.advance(&buf[at..n]).map_err(|e| e.to_string())?;
            at += used;
            match step {
                Step::Head(h) if external => node = Some(h.status.to_string()),
                Step::Head(h) => node = h.header(crate::load::NODE_HEADER).map(str::to_string),
                Step::Done => return node.ok_or_else(|| "no x-knits-node header".to_string()),
                Step::NeedMore if at >= n => break,
                _ => {}
            }
        }
    }
}

/// Waits, inside namespace `ns`, until something accepts connections on `addr`.
fn wait_listening(ns: &str, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    netns::enter(ns).map_err(|e| e.to_string())?;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("nothing listens on {addr} in {ns}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Probes until every node has answered (the origin names it), or, with an external upstream
/// (no node names), until `nodes` connections have been answered.
fn probe(
    ns: &str,
    vip: SocketAddr,
    nodes: usize,
    external: bool,
    deadline: Instant,
) -> Result<(), String> {
    netns::enter(ns).map_err(|e| e.to_string())?;
    let mut seen = std::collections::BTreeSet::new();
    let mut answered = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        match probe_once(vip, external) {
            Ok(n) => {
                answered += 1;
                seen.insert(n);
                if seen.len() >= nodes || (external && answered >= nodes) {
                    return Ok(());
                }
            }
            Err(e) => {
                last = e;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    if external {
        return Err(format!(
            "the cluster did not become ready: {answered} of {nodes} probe connections through \
             the VIP answered by a proxy; last error: {last}"
        ));
    }
    Err(format!(
        "the cluster did not become ready: nodes answering {seen:?} of {nodes}; last error: {last}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_defaults() {
        let c = ClusterConfig::from_toml(
            "nodes = 2\nprefix = \"ab\"\npolicy = \"maglev\"\nkey = \"000102030405060708090a0b0c0d0e0f\"\n\
             [timeouts]\ntime_wait_ms = 500\n[faults]\nloss = 0.01\nseed = 3\n[proxy]\npolicy = \"hash\"\n",
        )
        .unwrap();
        assert_eq!(c.nodes, 2);
        assert!(c.validate().is_ok());
        let sc = c
            .switch_config(parse_key(c.key.as_ref().unwrap()).unwrap())
            .unwrap();
        assert_eq!(sc.policy, SprayPolicy::Maglev);
        assert_eq!(sc.timeouts.time_wait, CoreDuration::from_millis(500));
        assert_eq!(sc.backends.len(), 2);
        assert_eq!(c.faults.loss, 0.01);
        assert!(ClusterConfig::default().validate().is_ok());
    }

    #[test]
    fn weights_drain_nodes_and_bad_ones_say_what_to_fix() {
        let c = ClusterConfig::from_toml("nodes = 3\nweights = [1, 0, 0]\n").unwrap();
        let sc = c.switch_config([1; 16]).unwrap();
        let w: Vec<u16> = sc.backends.iter().map(|b| b.weight).collect();
        assert_eq!(w, vec![1, 0, 0]);
        let mut c = ClusterConfig {
            weights: vec![1, 1],
            ..ClusterConfig::default()
        };
        assert!(
            c.switch_config([1; 16])
                .unwrap_err()
                .contains("one weight per node")
        );
        c.weights = vec![0, 0, 0];
        assert!(
            c.switch_config([1; 16])
                .unwrap_err()
                .contains("at least one node")
        );
    }

    #[test]
    fn bad_configs_say_what_to_fix() {
        let e = ClusterConfig::from_toml("nodes = 2\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let bad = |f: fn(&mut ClusterConfig), want: &str| {
            let mut c = ClusterConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(want), "{e}");
        };
        bad(|c| c.nodes = 0, "nodes");
        bad(|c| c.nodes = 16, "nodes");
        bad(|c| c.prefix = Some("Bad-Prefix".into()), "prefix");
        bad(|c| c.vip = Ipv4Addr::new(10, 0, 0, 1), "vip");
        bad(|c| c.vip = Ipv4Addr::new(198, 18, 0, 1), "vip");
        bad(|c| c.policy = "random".into(), "spray policy");
        bad(|c| c.key = Some("abc".into()), "32 hex");
        bad(|c| c.faults.loss = 2.0, "loss");
        bad(|c| c.proxy.policy = "x".into(), "proxy.policy");
        bad(|c| c.shards = 0, "shards = 0 must be 1..=4");
        bad(|c| c.shards = 5, "shards = 5 must be 1..=4");
        assert_eq!(ClusterConfig::from_toml("shards = 2\n").unwrap().shards, 2);
    }

    #[test]
    fn upstream_from_toml_and_checks() {
        let c =
            ClusterConfig::from_toml("upstream = \"127.0.0.1:8081\"\norigin = false\n").unwrap();
        assert_eq!(c.upstream, Some("127.0.0.1:8081".parse().unwrap()));
        assert!(!c.origin);
        assert!(c.validate().is_ok());
        assert_eq!(c.proxy_upstream().to_string(), "127.0.0.1:8081");
        let d = ClusterConfig::default();
        assert!(d.origin);
        assert_eq!(d.proxy_upstream().to_string(), "127.0.0.1:8080");
        let e = ClusterConfig::from_toml("upstream = \"nginx\"\n").unwrap_err();
        assert!(e.contains("upstream"), "{e}");
        let e = ClusterConfig::from_toml("upstream_cmd = \"nginx\"\n").unwrap_err();
        assert!(e.contains("upstream_cmd"), "{e}");
        let with = |up: &str, nodes: usize, origin: bool| ClusterConfig {
            upstream: Some(up.parse().unwrap()),
            nodes,
            origin,
            ..ClusterConfig::default()
        };
        for ok in [
            "127.0.0.1:8081",
            "127.0.0.2:80",
            "[::1]:8081",
            "127.0.0.1:8080",
        ] {
            let origin = !ok.ends_with(":8080");
            assert!(with(ok, 3, origin).validate().is_ok(), "{ok}");
        }
        assert!(with("198.19.1.2:8081", 1, true).validate().is_ok());
        let bad = |c: ClusterConfig, want: &[&str]| {
            let e = c.validate().unwrap_err();
            for w in want {
                assert!(e.contains(w), "{e:?} lacks {w:?}");
            }
        };
        bad(
            with("198.19.2.2:8081", 3, true),
            &["one node's address", "--upstream 127.0.0.1:8081"],
        );
        bad(
            with("10.1.2.3:80", 3, true),
            &["not an address of the node namespaces", "loopback"],
        );
        bad(with("0.0.0.0:8081", 3, true), &["wildcard"]);
        bad(with("127.0.0.1:0", 3, true), &["port 0"]);
        bad(
            with("198.19.1.2:80", 1, true),
            &["where the proxy itself listens"],
        );
        bad(
            with("127.0.0.1:8080", 3, true),
            &["origin's", "--no-origin"],
        );
        let c = ClusterConfig {
            origin: false,
            ..ClusterConfig::default()
        };
        bad(c, &["nothing to forward", "--upstream"]);
    }

    #[test]
    fn architecture_toml_example_is_valid() {
        let doc = include_str!("../../docs/architecture.md");
        let start = doc
            .find("`cluster up` takes flags or `--config FILE`")
            .and_then(|i| doc[i..].find("```toml\n").map(|j| i + j + 8))
            .expect("the TOML example in docs/architecture.md");
        let end = start + doc[start..].find("```").expect("end of the TOML example");
        let c = ClusterConfig::from_toml(&doc[start..end]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.proxy_upstream().to_string(), "127.0.0.1:8081");
    }

    #[test]
    fn keys() {
        assert_eq!(
            parse_key("000102030405060708090a0b0c0d0e0f").unwrap()[15],
            15
        );
        assert!(parse_key("zz0102030405060708090a0b0c0d0e0f").is_err());
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
        assert_ne!(random_key(), [0; 16]);
    }
}
