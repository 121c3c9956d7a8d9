//! Proxy configuration: a TOML file and command-line flags, merged (flags win; repeated flags such
//! as `--peer` add to the file's lists) and validated into a [`ProxyConfig`]. Every error says
//! what to fix.
//!
//! ```toml
//! node_id = "n1"
//! listen = "198.19.1.2:80"
//! upstream = "127.0.0.1:8080"
//! policy = "hash"               # local | prefix | hash
//! weight = 1                    # this node's weight in the hash
//! switch = "198.19.1.1:7100"    # the node's gateway, control port
//! key_file = "/etc/knits/control.key"
//! key_id = 1
//! metrics = "127.0.0.1:9100"
//! c2_pool = 2
//! shards = 1                   # the switch's shards (knits-host --shards); see handoff.rs
//!
//! [[peer]]
//! id = "n2"
//! addr = "198.19.2.2:80"
//! weight = 1
//!
//! [[prefix]]
//! prefix = "/img/"
//! node = "n2"
//!
//! [limits]
//! max_header_bytes = 16384
//! max_headers = 100
//!
//! [timeouts]
//! control_retry_ms = 50
//! control_total_ms = 1000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use knits_core::wire::control::Key;
use serde::Deserialize;

use crate::framing::Limits;
use crate::policy::{Policy, WeightedNode};

/// Most switch shards the proxy accepts.
pub const MAX_SHARDS: u32 = 64;

/// A configuration mistake, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// A peer node the proxy may hand connections off to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The peer's node id.
    pub id: String,
    /// The peer proxy's service address (where c2 connects).
    pub addr: SocketAddr,
    /// Weight in the hash policy.
    pub weight: u32,
}

/// What the proxy needs to talk to the switch. `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SwitchConfig {
    /// The switch's control address: the node's gateway and the control port.
    pub control: SocketAddr,
    /// Local address of the control socket (the node's own address; port 0 = any).
    pub bind: SocketAddr,
    /// The 128-bit control key shared with the switch.
    pub key: Key,
    /// The key's id.
    pub key_id: u8,
}

impl core::fmt::Debug for SwitchConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SwitchConfig")
            .field("control", &self.control)
            .field("bind", &self.bind)
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .finish()
    }
}

/// Pre-connected new legs per peer and MSS when neither flag nor file says (`--c2-pool`): the
/// pool takes a TCP handshake through the switch out of every hand-off but the first to a
/// peer, for two idle flows per peer in the switch's table. `0` turns it off.
pub const DEFAULT_C2_POOL: usize = 2;

/// Time limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a client connection may wait for its next request head.
    pub client_idle: Duration,
    /// Upstream connect and read inactivity limit.
    pub upstream: Duration,
    /// How long to wait for the node's responses on the held connection to be acknowledged.
    pub unacked: Duration,
    /// Connect limit for the new leg (c2).
    pub connect: Duration,
    /// Interval between retransmissions of a control request.
    pub control_retry: Duration,
    /// Total time to wait for the switch's reply before serving locally.
    pub control_total: Duration,
    /// After acceptance: how long to keep copying the held connection until its (faked) FIN.
    pub drain: Duration,
    /// After acceptance: how long to wait for the new leg's (faked) FIN after closing it.
    pub c2_close: Duration,
    /// After a control time-out: how long to keep the unused new leg open before closing it,
    /// so that a hand-off the switch accepted but whose reply was lost rolls back by its own
    /// timer (the target never acknowledges) rather than on an unexpected FIN.
    pub abandon_linger: Duration,
    /// Age after which a pre-connected new leg is discarded instead of used.
    pub pool_max_age: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_idle: Duration::from_secs(60),
            upstream: Duration::from_secs(30),
            unacked: Duration::from_secs(2),
            connect: Duration::from_secs(1),
            control_retry: Duration::from_millis(50),
            control_total: Duration::from_millis(1000),
            drain: Duration::from_secs(30),
            c2_close: Duration::from_secs(5),
            abandon_linger: Duration::from_secs(6),
            pool_max_age: Duration::from_secs(20),
        }
    }
}

/// The validated configuration of `knits-proxy run`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// This node's id.
    pub node_id: String,
    /// Where the proxy accepts connections.
    pub listen: SocketAddr,
    /// The local web server.
    pub upstream: SocketAddr,
    /// Peers, by id.
    pub peers: Vec<Peer>,
    /// This node's weight in the hash policy.
    pub weight: u32,
    /// The dispatch policy.
    pub policy: Policy,
    /// The switch (absent for the local policy without `--switch`).
    pub switch: Option<SwitchConfig>,
    /// Where to serve metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Pre-connected new legs kept per peer and MSS (0 = off).
    pub c2_pool: usize,
    /// Shards of the switch (knits-host `--shards`): with more than one, a new leg's source port
    /// is chosen so that it lands in the held connection's shard (see [`crate::handoff`]).
    pub shards: u32,
    /// Idle upstream connections kept.
    pub upstream_idle: usize,
    /// Head limits.
    pub limits: Limits,
    /// Time limits.
    pub timeouts: Timeouts,
    /// The TLS listener, if any.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl ProxyConfig {
    /// A configuration for tests and embedding: local policy, default limits and timeouts.
    pub fn local(node_id: &str, listen: SocketAddr, upstream: SocketAddr) -> Self {
        ProxyConfig {
            node_id: node_id.to_string(),
            listen,
            upstream,
            peers: Vec::new(),
            weight: 1,
            policy: Policy::Local,
            switch: None,
            metrics: None,
            c2_pool: 0,
            shards: 1,
            upstream_idle: 32,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            tls: None,
        }
    }

    /// The peer with id `id`.
    pub fn peer(&self, id: &str) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }
}

/// The dispatch policy named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// Serve every request locally.
    Local,
    /// Path-prefix map to nodes.
    Prefix,
    /// Weighted consistent hash of the path.
    Hash,
}

/// Flags of `knits-proxy run`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's id, e.g. n1.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Service address to accept connections on, e.g. 198.19.1.2:80.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// The local HTTP/1.1 server requests are served by, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR:PORT")]
    pub upstream: Option<SocketAddr>,
    /// A peer node, repeated: ID=ADDR:PORT (the peer proxy's service address).
    #[arg(long = "peer", value_name = "ID=ADDR:PORT", value_parser = parse_peer)]
    pub peers: Vec<(String, SocketAddr)>,
    /// A node's weight in the hash policy, repeated: ID=WEIGHT (this node included; default 1).
    #[arg(long = "weight", value_name = "ID=WEIGHT", value_parser = parse_weight)]
    pub weights: Vec<(String, u32)>,
    /// Dispatch policy.
    #[arg(long, value_enum)]
    pub policy: Option<PolicyKind>,
    /// A prefix rule, repeated: PREFIX=ID (longest match wins), e.g. /img/=n2.
    #[arg(long = "prefix", value_name = "PREFIX=ID", value_parser = parse_prefix)]
    pub prefixes: Vec<(String, String)>,
    /// The node for paths no prefix matches (default: this node).
    #[arg(long, value_name = "ID")]
    pub default_node: Option<String>,
    /// The switch's control address (the node's gateway), e.g. 198.19.1.1:7100.
    #[arg(long, value_name = "ADDR:PORT")]
    pub switch: Option<SocketAddr>,
    /// Local address of the control socket (default 0.0.0.0:0, the kernel picks the node's own).
    #[arg(long, value_name = "ADDR:PORT")]
    pub control_bind: Option<SocketAddr>,
    /// File holding the control key: 32 hex digits (16 bytes).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The control key's id (as configured on the switch).
    #[arg(long, value_name = "N")]
    pub key_id: Option<u8>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Pre-connected new legs kept per peer and MSS (0 = off; default 2).
    #[arg(long, value_name = "N")]
    pub c2_pool: Option<usize>,
    /// Shards of the switch (knits-host --shards; 1..=64, default 1): new legs get source ports
    /// in the held connection's shard.
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Idle upstream connections kept.
    #[arg(long, value_name = "N")]
    pub upstream_idle: Option<usize>,
    /// Largest request head accepted (bytes); larger heads get 431.
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most header fields accepted; more get 431.
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Keep-alive idle limit for client connections.
    #[arg(long, value_name = "MS")]
    pub client_idle_ms: Option<u64>,
    /// Upstream connect and read inactivity limit.
    #[arg(long, value_name = "MS")]
    pub upstream_timeout_ms: Option<u64>,
    /// Wait for the held connection's responses to be acknowledged.
    #[arg(long, value_name = "MS")]
    pub unacked_timeout_ms: Option<u64>,
    /// Connect limit of the new leg.
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Control request retransmission interval.
    #[arg(long, value_name = "MS")]
    pub control_retry_ms: Option<u64>,
    /// Total wait for the switch's reply.
    #[arg(long, value_name = "MS")]
    pub control_timeout_ms: Option<u64>,
    /// After acceptance, limit on copying the held connection until its FIN.
    #[arg(long, value_name = "MS")]
    pub drain_timeout_ms: Option<u64>,
    /// After acceptance, wait for the new leg's FIN.
    #[arg(long, value_name = "MS")]
    pub c2_close_timeout_ms: Option<u64>,
    /// After a control time-out, keep the unused new leg open this long.
    #[arg(long, value_name = "MS")]
    pub abandon_linger_ms: Option<u64>,
    /// Discard pre-connected new legs older than this.
    #[arg(long, value_name = "MS")]
    pub c2_pool_max_age_ms: Option<u64>,
    /// The TLS listener (`--tls-*`, `--sni`, `--alpn`).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

fn parse_peer(s: &str) -> Result<(String, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=ADDR:PORT (e.g. n2=198.19.2.2:80), got {s:?}"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not ADDR:PORT (e.g. n2=198.19.2.2:80)"))?;
    Ok((id.to_string(), addr))
}

fn parse_weight(s: &str) -> Result<(String, u32), String> {
    let (id, w) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=WEIGHT (e.g. n2=3), got {s:?}"))?;
    let w = w
        .parse()
        .map_err(|_| format!("weight {w:?} is not a whole number (e.g. n2=3)"))?;
    Ok((id.to_string(), w))
}

fn parse_prefix(s: &str) -> Result<(String, String), String> {
    parse_key_id(s, "PREFIX=ID (e.g. /img/=n2)")
}

/// `KEY=ID` split at the last `=`; `expected` says the form in the error.
pub(crate) fn parse_key_id(s: &str, expected: &str) -> Result<(String, String), String> {
    let (k, id) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected {expected}, got {s:?}"))?;
    Ok((k.to_string(), id.to_string()))
}

/// The configuration file, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node's id.
    pub node_id: Option<String>,
    /// Service address.
    pub listen: Option<SocketAddr>,
    /// Local web server.
    pub upstream: Option<SocketAddr>,
    /// Dispatch policy.
    pub policy: Option<PolicyKind>,
    /// This node's weight.
    pub weight: Option<u32>,
    /// Node for unmatched prefixes.
    pub default_node: Option<String>,
    /// Switch control address.
    pub switch: Option<SocketAddr>,
    /// Control socket bind address.
    pub control_bind: Option<SocketAddr>,
    /// Control key file (relative paths are relative to the config file).
    pub key_file: Option<PathBuf>,
    /// Control key id.
    pub key_id: Option<u8>,
    /// Metrics address.
    pub metrics: Option<SocketAddr>,
    /// Pre-connected new legs per peer.
    pub c2_pool: Option<usize>,
    /// Shards of the switch.
    pub shards: Option<u32>,
    /// Idle upstream connections kept.
    pub upstream_idle: Option<usize>,
    /// Peers.
    #[serde(default)]
    pub peer: Vec<FilePeer>,
    /// Prefix rules.
    #[serde(default)]
    pub prefix: Vec<FilePrefix>,
    /// Head limits.
    #[serde(default)]
    pub limits: FileLimits,
    /// Timeouts, in milliseconds.
    #[serde(default)]
    pub timeouts: FileTimeouts,
    /// The TLS listener.
    pub tls: Option<crate::tls::config::FileTls>,
}

/// A `[[peer]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePeer {
    /// Node id.
    pub id: String,
    /// Service address of the peer's proxy.
    pub addr: SocketAddr,
    /// Hash weight (default 1).
    pub weight: Option<u32>,
}

/// A `[[prefix]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePrefix {
    /// Path prefix.
    pub prefix: String,
    /// Node id.
    pub node: String,
}

/// The `[limits]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest head.
    pub max_header_bytes: Option<usize>,
    /// Most fields.
    pub max_headers: Option<usize>,
}

/// The `[timeouts]` table, milliseconds (see [`Timeouts`] for each meaning).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// [`Timeouts::client_idle`].
    pub client_idle_ms: Option<u64>,
    /// [`Timeouts::upstream`].
    pub upstream_ms: Option<u64>,
    /// [`Timeouts::unacked`].
    pub unacked_ms: Option<u64>,
    /// [`Timeouts::connect`].
    pub connect_ms: Option<u64>,
    /// [`Timeouts::control_retry`].
    pub control_retry_ms: Option<u64>,
    /// [`Timeouts::control_total`].
    pub control_total_ms: Option<u64>,
    /// [`Timeouts::drain`].
    pub drain_ms: Option<u64>,
    /// [`Timeouts::c2_close`].
    pub c2_close_ms: Option<u64>,
    /// [`Timeouts::abandon_linger`].
    pub abandon_linger_ms: Option<u64>,
    /// [`Timeouts::pool_max_age`].
    pub c2_pool_max_age_ms: Option<u64>,
}

/// Parses the text of a key file: 32 hex digits, surrounding white space ignored.
pub fn parse_key(text: &str) -> Result<Key, String> {
    let t = text.trim();
    if t.len() != 32 {
        return Err(format!(
            "expected 32 hex digits (16 bytes), found {} characters",
            t.len()
        ));
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        let pair = t
            .get(2 * i..2 * i + 2)
            .ok_or("expected only hex digits 0-9, a-f")?;
        *k = u8::from_str_radix(pair, 16)
            .map_err(|_| format!("{pair:?} at position {} is not hex (0-9, a-f)", 2 * i))?;
    }
    Ok(key)
}

/// Reads and parses a key file.
pub fn read_key(path: &Path) -> Result<Key, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read key file {}: {e}; pass --key-file with a readable file",
            path.display()
        ))
    })?;
    parse_key(&text).map_err(|m| ConfigError(format!("key file {}: {m}", path.display())))
}

fn ms(
    v: Option<u64>,
    file: Option<u64>,
    default: Duration,
    name: &str,
) -> Result<Duration, ConfigError> {
    match v.or(file) {
        Some(0) => err(format!("{name} must be at least 1 ms")),
        Some(ms) => Ok(Duration::from_millis(ms)),
        None => Ok(default),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl RunArgs {
    /// Loads the file (if any), merges the flags over it and validates.
    pub fn load(&self) -> Result<ProxyConfig, ConfigError> {
        let (file, base) = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", p.display()))
                })?;
                let f: FileConfig = toml::from_str(&text)
                    .map_err(|e| ConfigError(format!("config file {}: {e}", p.display())))?;
                (f, p.parent().map(Path::to_path_buf))
            }
            None => (FileConfig::default(), None),
        };
        self.merge(file, base.as_deref())
    }

    /// Merges the flags over a parsed file and validates. `base` resolves relative key paths.
    ///
    /// Each part has its own function below, in the order the parts depend on each other: who
    /// this node is, its peers and weights, the policy (which needs the nodes), the switch
    /// (which only a policy that hands off requires), limits, timeouts, the rest, then TLS.
    pub fn merge(&self, file: FileConfig, base: Option<&Path>) -> Result<ProxyConfig, ConfigError> {
        let (node_id, listen, upstream) = self.merge_identity(&file)?;
        let mut peers = self.merge_peers(&file, &node_id, listen)?;
        let weight = self.merge_weights(&file, &node_id, &mut peers)?;
        let (kind, policy) = self.merge_policy(&file, &node_id, weight, &peers)?;
        let switch = self.merge_switch(&file, kind, base)?;
        let limits = self.merge_limits(&file)?;
        let timeouts = self.merge_timeouts(&file)?;
        let c2_pool = self.c2_pool.or(file.c2_pool).unwrap_or(DEFAULT_C2_POOL);
        if c2_pool > 64 {
            return err(format!(
                "c2_pool {c2_pool} is too large; use 0 (off) to 64 per peer"
            ));
        }
        let shards = self.shards.or(file.shards).unwrap_or(1);
        if !(1..=MAX_SHARDS).contains(&shards) {
            return err(format!(
                "shards {shards} must be 1..={MAX_SHARDS} (the switch's --shards)"
            ));
        }
        let metrics = self.metrics.or(file.metrics);
        let upstream_idle = self.upstream_idle.or(file.upstream_idle).unwrap_or(32);
        let tls = self
            .tls
            .merge(file.tls, &node_id, weight, &peers, switch.is_some())?;
        if let Some(t) = tls.as_ref().filter(|t| t.listen == listen) {
            return err(format!(
                "--tls-listen {} is the HTTP --listen address; give TLS its own port (e.g. 443)",
                t.listen
            ));
        }
        Ok(ProxyConfig {
            node_id,
            listen,
            upstream,
            peers,
            weight,
            policy,
            switch,
            metrics,
            c2_pool,
            shards,
            upstream_idle,
            limits,
            timeouts,
            tls,
        })
    }

    /// This node's id, its service address and its web server.
    fn merge_identity(
        &self,
        file: &FileConfig,
    ) -> Result<(String, SocketAddr, SocketAddr), ConfigError> {
        let node_id = match self.node_id.clone().or(file.node_id.clone()) {
            Some(id) if valid_id(&id) => id,
            Some(id) => {
                return err(format!(
                    "node id {id:?} is not valid: use 1-64 letters, digits, '-', '_' or '.' (e.g. n1)"
                ));
            }
            None => {
                return err(
                    "no node id: pass --node-id ID (or node_id in the config file), e.g. --node-id n1",
                );
            }
        };
        let Some(listen) = self.listen.or(file.listen) else {
            return err(
                "no service address: pass --listen ADDR:PORT (or listen in the config file), e.g. --listen 198.19.1.2:80",
            );
        };
        let Some(upstream) = self.upstream.or(file.upstream) else {
            return err(
                "no upstream web server: pass --upstream ADDR:PORT (or upstream in the config file), e.g. --upstream 127.0.0.1:8080",
            );
        };
        if upstream == listen {
            return err(format!(
                "--upstream {upstream} is the proxy's own --listen address; point it at the local web server"
            ));
        }
        Ok((node_id, listen, upstream))
    }

    /// The peers: the file's, then the flags' (a flag replaces a file peer with the same id).
    fn merge_peers(
        &self,
        file: &FileConfig,
        node_id: &str,
        listen: SocketAddr,
    ) -> Result<Vec<Peer>, ConfigError> {
        let mut peers: Vec<Peer> = Vec::new();
        for p in &file.peer {
            if peers.iter().any(|q| q.id == p.id) {
                return err(format!(
                    "peer {} is listed twice in the config file; keep one [[peer]] entry",
                    p.id
                ));
            }
            peers.push(Peer {
                id: p.id.clone(),
                addr: p.addr,
                weight: p.weight.unwrap_or(1),
            });
        }
        let mut flag_ids: Vec<&str> = Vec::new();
        for (id, addr) in &self.peers {
            if flag_ids.contains(&id.as_str()) {
                return err(format!("--peer {id}=... is given twice; keep one"));
            }
            flag_ids.push(id);
            match peers.iter_mut().find(|q| &q.id == id) {
                Some(q) => q.addr = *addr,
                None => peers.push(Peer {
                    id: id.clone(),
                    addr: *addr,
                    weight: 1,
                }),
            }
        }
        for p in &peers {
            if !valid_id(&p.id) {
                return err(format!(
                    "peer id {:?} is not valid: use 1-64 letters, digits, '-', '_' or '.'",
                    p.id
                ));
            }
            if p.id == node_id {
                return err(format!(
                    "peer {} has this node's own id; remove it from the peers (this node is always included)",
                    p.id
                ));
            }
            if p.addr == listen {
                return err(format!(
                    "peer {} has this node's own service address {}",
                    p.id, p.addr
                ));
            }
        }
        Ok(peers)
    }

    /// This node's weight (returned) and the `--weight` flags applied to `peers`.
    fn merge_weights(
        &self,
        file: &FileConfig,
        node_id: &str,
        peers: &mut [Peer],
    ) -> Result<u32, ConfigError> {
        let mut weight = file.weight.unwrap_or(1);
        for (id, w) in &self.weights {
            if *id == node_id {
                weight = *w;
            } else if let Some(p) = peers.iter_mut().find(|p| &p.id == id) {
                p.weight = *w;
            } else {
                return err(format!(
                    "--weight {id}={w} names no known node; add --peer {id}=ADDR:PORT first"
                ));
            }
        }
        Ok(weight)
    }

    /// The dispatch policy over this node and `peers`.
    fn merge_policy(
        &self,
        file: &FileConfig,
        node_id: &str,
        weight: u32,
        peers: &[Peer],
    ) -> Result<(PolicyKind, Policy), ConfigError> {
        let kind = self.policy.or(file.policy).unwrap_or(PolicyKind::Local);
        let policy = match kind {
            PolicyKind::Local => Policy::Local,
            PolicyKind::Prefix => self.merge_prefix_rules(file, node_id, peers)?,
            PolicyKind::Hash => {
                let mut nodes = vec![WeightedNode {
                    id: node_id.to_string(),
                    weight,
                }];
                nodes.extend(peers.iter().map(|p| WeightedNode {
                    id: p.id.clone(),
                    weight: p.weight,
                }));
                if nodes.iter().all(|n| n.weight == 0) {
                    return err(
                        "every node has weight 0 in the hash policy; give at least one node a positive --weight",
                    );
                }
                Policy::Hash { nodes }
            }
        };
        if kind != PolicyKind::Local && peers.is_empty() {
            return err(format!(
                "policy {kind:?} hands connections off to peers but none is configured; add --peer ID=ADDR:PORT or use --policy local"
            )
            .to_lowercase());
        }
        Ok((kind, policy))
    }

    /// The prefix policy: the file's rules, then the flags' (a flag replaces the same prefix),
    /// each naming a known node, and the default node.
    fn merge_prefix_rules(
        &self,
        file: &FileConfig,
        node_id: &str,
        peers: &[Peer],
    ) -> Result<Policy, ConfigError> {
        let known = |id: &str| id == node_id || peers.iter().any(|p| p.id == id);
        let mut rules: BTreeMap<String, String> = BTreeMap::new();
        for r in &file.prefix {
            rules.insert(r.prefix.clone(), r.node.clone());
        }
        for (p, id) in &self.prefixes {
            rules.insert(p.clone(), id.clone());
        }
        if rules.is_empty() {
            return err(
                "policy prefix has no rules: add --prefix PREFIX=ID (e.g. --prefix /img/=n2) or [[prefix]] entries",
            );
        }
        for (p, id) in &rules {
            if !p.starts_with('/') {
                return err(format!("prefix {p:?} must start with '/' (e.g. /img/)"));
            }
            if !known(id) {
                return err(format!(
                    "prefix {p} names node {id}, which is neither this node ({node_id}) nor a peer; add --peer {id}=ADDR:PORT"
                ));
            }
        }
        let default = self.default_node.clone().or(file.default_node.clone());
        if let Some(d) = default.as_deref().filter(|d| !known(d)) {
            return err(format!(
                "--default-node {d} is neither this node ({node_id}) nor a peer"
            ));
        }
        Ok(Policy::Prefix {
            rules: rules.into_iter().collect(),
            default,
        })
    }

    /// The switch's control channel: required by a policy that hands off, and then complete
    /// (address and key).
    fn merge_switch(
        &self,
        file: &FileConfig,
        kind: PolicyKind,
        base: Option<&Path>,
    ) -> Result<Option<SwitchConfig>, ConfigError> {
        match (
            self.switch.or(file.switch),
            self.key_file.clone().or(file.key_file.clone()),
        ) {
            (None, None) if kind == PolicyKind::Local => Ok(None),
            (None, _) => err(
                "hand-off needs the switch: pass --switch ADDR:PORT (the node's gateway and control port, e.g. 198.19.1.1:7100)",
            ),
            (Some(_), None) => err(
                "hand-off needs the control key: pass --key-file FILE (32 hex digits, the key configured on the switch)",
            ),
            (Some(control), Some(key_path)) => {
                let path = match base {
                    Some(b) if key_path.is_relative() => b.join(key_path),
                    _ => key_path,
                };
                let key = read_key(&path)?;
                let bind = self.control_bind.or(file.control_bind).unwrap_or_else(|| {
                    if control.is_ipv4() {
                        SocketAddr::from(([0, 0, 0, 0], 0))
                    } else {
                        SocketAddr::from(([0u16; 8], 0))
                    }
                });
                if !control.is_ipv4() {
                    return err(format!(
                        "--switch {control}: the control protocol is IPv4 only"
                    ));
                }
                Ok(Some(SwitchConfig {
                    control,
                    bind,
                    key,
                    key_id: self.key_id.or(file.key_id).unwrap_or(1),
                }))
            }
        }
    }

    /// The request head limits, within their ranges.
    fn merge_limits(&self, file: &FileConfig) -> Result<Limits, ConfigError> {
        let limits = Limits {
            max_header_bytes: self
                .max_header_bytes
                .or(file.limits.max_header_bytes)
                .unwrap_or(crate::framing::DEFAULT_MAX_HEADER_BYTES),
            max_headers: self
                .max_headers
                .or(file.limits.max_headers)
                .unwrap_or(crate::framing::DEFAULT_MAX_HEADERS),
        };
        if !(256..=1 << 20).contains(&limits.max_header_bytes) {
            return err(format!(
                "max_header_bytes {} is out of range; use 256 to 1048576",
                limits.max_header_bytes
            ));
        }
        if !(1..=1024).contains(&limits.max_headers) {
            return err(format!(
                "max_headers {} is out of range; use 1 to 1024",
                limits.max_headers
            ));
        }
        Ok(limits)
    }

    /// Every timeout (none may be 0), the control retry within the control timeout.
    fn merge_timeouts(&self, file: &FileConfig) -> Result<Timeouts, ConfigError> {
        let d = Timeouts::default();
        let t = &file.timeouts;
        let timeouts = Timeouts {
            client_idle: ms(
                self.client_idle_ms,
                t.client_idle_ms,
                d.client_idle,
                "client idle timeout",
            )?,
            upstream: ms(
                self.upstream_timeout_ms,
                t.upstream_ms,
                d.upstream,
                "upstream timeout",
            )?,
            unacked: ms(
                self.unacked_timeout_ms,
                t.unacked_ms,
                d.unacked,
                "unacked timeout",
            )?,
            connect: ms(
                self.connect_timeout_ms,
                t.connect_ms,
                d.connect,
                "connect timeout",
            )?,
            control_retry: ms(
                self.control_retry_ms,
                t.control_retry_ms,
                d.control_retry,
                "control retry interval",
            )?,
            control_total: ms(
                self.control_timeout_ms,
                t.control_total_ms,
                d.control_total,
                "control timeout",
            )?,
            drain: ms(self.drain_timeout_ms, t.drain_ms, d.drain, "drain timeout")?,
            c2_close: ms(
                self.c2_close_timeout_ms,
                t.c2_close_ms,
                d.c2_close,
                "c2 close timeout",
            )?,
            abandon_linger: ms(
                self.abandon_linger_ms,
                t.abandon_linger_ms,
                d.abandon_linger,
                "abandon linger",
            )?,
            pool_max_age: ms(
                self.c2_pool_max_age_ms,
                t.c2_pool_max_age_ms,
                d.pool_max_age,
                "c2 pool max age",
            )?,
        };
        if timeouts.control_retry > timeouts.control_total {
            return err(format!(
                "control retry interval ({} ms) is longer than the control timeout ({} ms); the request would never be retried",
                timeouts.control_retry.as_millis(),
                timeouts.control_total.as_millis()
            ));
        }
        Ok(timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(list: &[&str]) -> RunArgs {
        let mut v = vec!["knits-proxy"];
        v.extend_from_slice(list);
        Cli::try_parse_from(v).unwrap().run
    }

    fn key_file() -> PathBuf {
        let p = std::env::temp_dir().join(format!("knits-proxy-key-{}", std::process::id()));
        std::fs::write(&p, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        p
    }

    #[test]
    fn key_file_format() {
        assert_eq!(
            parse_key(" 000102030405060708090a0b0c0d0e0f\n").unwrap()[15],
            15
        );
        assert!(parse_key("0001").unwrap_err().contains("32 hex digits"));
        assert!(
            parse_key("zz0102030405060708090a0b0c0d0e0f")
                .unwrap_err()
                .contains("not hex")
        );
    }

    #[test]
    fn minimal_local_config() {
        let c = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
        ])
        .load()
        .unwrap();
        assert_eq!(c.policy, Policy::Local);
        assert!(c.switch.is_none());
    }

    #[test]
    fn errors_say_what_to_fix() {
        let e = args(&["--listen", "127.0.0.1:80"]).load().unwrap_err();
        assert!(e.0.contains("--node-id"), "{e}");
        let e = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--policy",
            "hash",
        ])
        .load()
        .unwrap_err();
        assert!(e.0.contains("--peer"), "{e}");
        let e = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--policy",
            "hash",
            "--peer",
            "n2=127.0.0.2:80",
        ])
        .load()
        .unwrap_err();
        assert!(e.0.contains("--switch"), "{e}");
        let e = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--policy",
            "prefix",
            "--peer",
            "n2=127.0.0.2:80",
            "--prefix",
            "/a/=n9",
        ])
        .load()
        .unwrap_err();
        assert!(e.0.contains("n9") && e.0.contains("--peer n9="), "{e}");
        let e = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:80",
        ])
        .load()
        .unwrap_err();
        assert!(e.0.contains("own --listen"), "{e}");
        let e = args(&[
            "--node-id",
            "n1",
            "--listen",
            "127.0.0.1:80",
            "--upstream",
            "127.0.0.1:8080",
            "--shards",
            "0",
        ])
        .load()
        .unwrap_err();
        assert!(e.0.contains("shards 0 must be 1..="), "{e}");
        assert!(Cli::try_parse_from(["x", "--peer", "n2"]).is_err());
    }

    #[test]
    fn file_and_flags_merge() {
        let key = key_file();
        let text = format!(
            r#"
node_id = "n1"
listen = "127.0.0.1:80"
upstream = "127.0.0.1:8080"
policy = "prefix"
switch = "127.0.0.1:7100"
key_file = "{}"
key_id = 3
[[peer]]
id = "n2"
addr = "127.0.0.2:80"
[[prefix]]
prefix = "/a/"
node = "n2"
[timeouts]
control_retry_ms = 20
"#,
            key.display()
        );
        let file: FileConfig = toml::from_str(&text).unwrap();
        let c = args(&[
            "--peer",
            "n3=127.0.0.3:80",
            "--prefix",
            "/b/=n3",
            "--c2-pool",
            "2",
            "--shards",
            "2",
        ])
        .merge(file, None)
        .unwrap();
        assert_eq!(c.peers.len(), 2);
        let s = c.switch.unwrap();
        assert_eq!(s.key_id, 3);
        assert_eq!(s.key[1], 1);
        assert_eq!(c.timeouts.control_retry, Duration::from_millis(20));
        assert_eq!(c.c2_pool, 2);
        assert_eq!(c.shards, 2);
        match c.policy {
            Policy::Prefix { rules, .. } => assert_eq!(rules.len(), 2),
            p => panic!("{p:?}"),
        }
        let bad: Result<FileConfig, _> = toml::from_str("nodeid = \"n1\"");
        assert!(bad.unwrap_err().to_string().contains("nodeid"));
    }
}
