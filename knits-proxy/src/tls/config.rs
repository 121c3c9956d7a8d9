//! The TLS listener's configuration: the `[tls]` table of the proxy's TOML file and the `--tls-*`,
//! `--sni` and `--alpn` flags, merged (flags win, repeated flags add rules) and validated.
//!
//! ```toml
//! [tls]
//! listen = "198.19.1.2:443"       # the node's address and the VIP's TLS port
//! upstream = "127.0.0.1:8443"     # the local TLS server (nginx with this node's certificates)
//! policy = "names"                # local | names | hash
//! default_node = "n1"             # names no rule matches (default: this node)
//! on_error = "close"              # close | default: what a bad or missing ClientHello gets
//! hello_timeout_ms = 10000        # the whole ClientHello must arrive within this
//! max_hello_bytes = 16384
//! local_names = ["n1.example", "*.n1.example"]  # names the local TLS server has a certificate for
//! handoff_attempts = 2            # hand-off requests per connection before giving up
//!
//! [[tls.name]]
//! name = "*.n2.example"
//! node = "n2"
//!
//! [[tls.alpn]]
//! protocol = "h2"
//! node = "n3"
//! ```
//!
//! Peers are the proxy's `[[peer]]` list; a peer's TLS listener is on the peer's address and
//! this listener's port (the switch maps VIP:port to node:port).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::hello::HelloLimits;
use super::route::{NamePattern, TlsPolicy, TlsRoutes};
use crate::config::{ConfigError, Peer};
use crate::policy::WeightedNode;

/// Default limit on the whole ClientHello's arrival.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS policy named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicyKind {
    /// Relay every connection to the local TLS server.
    Local,
    /// Name and ALPN rules, then the default node.
    Names,
    /// Name and ALPN rules, then the weighted hash of the server name.
    Hash,
}

/// What a connection without a usable ClientHello gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Closed (counted by reason).
    Close,
    /// Sent to the default node as it is (counted by reason); a client that sends nothing or
    /// closes early is closed all the same.
    Default,
}

/// The `--tls-*` flags of `knits-proxy run`.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Accept TLS connections here (the node's address, the VIP's TLS port), e.g.
    /// 198.19.1.2:443. Turns the TLS listener on.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tls_listen: Option<SocketAddr>,
    /// The local TLS server connections for this node are relayed to, e.g. 127.0.0.1:8443.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tls_upstream: Option<SocketAddr>,
    /// TLS routing policy (default: names when rules are given, else local).
    #[arg(long, value_enum)]
    pub tls_policy: Option<TlsPolicyKind>,
    /// A server-name rule, repeated: NAME=ID, where NAME is a host name or *.suffix.
    #[arg(long = "sni", value_name = "NAME=ID", value_parser = parse_rule)]
    pub sni: Vec<(String, String)>,
    /// An ALPN rule, repeated: PROTOCOL=ID (e.g. h2=n3).
    #[arg(long = "alpn", value_name = "PROTOCOL=ID", value_parser = parse_rule)]
    pub alpn: Vec<(String, String)>,
    /// The node for server names no rule matches (default: this node).
    #[arg(long, value_name = "ID")]
    pub tls_default_node: Option<String>,
    /// What a bad or missing ClientHello gets.
    #[arg(long, value_enum)]
    pub tls_on_error: Option<OnError>,
    /// Limit on the whole ClientHello's arrival.
    #[arg(long, value_name = "MS")]
    pub tls_hello_timeout_ms: Option<u64>,
    /// Largest ClientHello accepted (bytes).
    #[arg(long, value_name = "BYTES")]
    pub tls_max_hello_bytes: Option<usize>,
    /// A name the local TLS server holds a certificate for, repeated: a host name or
    /// *.suffix. A connection whose hand-off failed is relayed to the local TLS server only for
    /// these names (or without a name); any other is refused with a TLS alert.
    #[arg(long = "tls-local-name", value_name = "NAME")]
    pub tls_local_name: Vec<String>,
    /// Hand-off attempts per TLS connection before it is refused or served locally (1-8).
    #[arg(long, value_name = "N")]
    pub tls_handoff_attempts: Option<u32>,
}

fn parse_rule(s: &str) -> Result<(String, String), String> {
    crate::config::parse_key_id(s, "NAME=ID (e.g. *.example.com=n2)")
}

/// The `[tls]` table, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// [`TlsArgs::tls_listen`].
    pub listen: Option<SocketAddr>,
    /// [`TlsArgs::tls_upstream`].
    pub upstream: Option<SocketAddr>,
    /// [`TlsArgs::tls_policy`].
    pub policy: Option<TlsPolicyKind>,
    /// [`TlsArgs::tls_default_node`].
    pub default_node: Option<String>,
    /// [`TlsArgs::tls_on_error`].
    pub on_error: Option<OnError>,
    /// [`TlsArgs::tls_hello_timeout_ms`].
    pub hello_timeout_ms: Option<u64>,
    /// [`TlsArgs::tls_max_hello_bytes`].
    pub max_hello_bytes: Option<usize>,
    /// [`TlsArgs::tls_local_name`].
    #[serde(default)]
    pub local_names: Vec<String>,
    /// [`TlsArgs::tls_handoff_attempts`].
    pub handoff_attempts: Option<u32>,
    /// Server-name rules.
    #[serde(default)]
    pub name: Vec<FileName>,
    /// ALPN rules.
    #[serde(default)]
    pub alpn: Vec<FileAlpn>,
}

/// A `[[tls.name]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileName {
    /// Host name or `*.suffix`.
    pub name: String,
    /// Node id.
    pub node: String,
}

/// A `[[tls.alpn]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlpn {
    /// ALPN protocol id, e.g. `h2`.
    pub protocol: String,
    /// Node id.
    pub node: String,
}

/// The validated TLS listener configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where TLS connections are accepted.
    pub listen: SocketAddr,
    /// The local TLS server.
    pub upstream: SocketAddr,
    /// The routing table.
    pub routes: TlsRoutes,
    /// What a bad or missing ClientHello gets.
    pub on_error: OnError,
    /// Limit on the ClientHello's arrival.
    pub hello_timeout: Duration,
    /// Limits on the ClientHello.
    pub limits: HelloLimits,
    /// The names the local TLS server holds a certificate for.
    pub local_names: Vec<NamePattern>,
    /// Hand-off attempts per connection (at least 1).
    pub handoff_attempts: u32,
}

/// Default hand-off attempts per TLS connection: one more after a refusal or a lost answer
/// (most refusals are transient: the switch is busy, the new leg's handshake was not seen yet).
pub const DEFAULT_HANDOFF_ATTEMPTS: u32 = 2;

impl TlsConfig {
    /// Whether a connection for `sni` may be served by the local TLS server when its hand-off
    /// failed: the server holds a certificate for the name, or the hello named none (then no
    /// name can be wrong; the server presents its default certificate).
    pub fn serves_locally(&self, sni: Option<&str>) -> bool {
        let Some(name) = sni else {
            return true;
        };
        self.local_names.iter().any(|p| p.matches(name))
    }

    /// A peer's TLS listener: its address with this listener's port.
    pub fn peer_addr(&self, peer: &Peer) -> SocketAddr {
        SocketAddr::new(peer.addr.ip(), self.listen.port())
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

impl TlsArgs {
    /// Merges the flags over the file's `[tls]` table; `None` when neither turns TLS on.
    /// `node_id`, `weight` and `peers` are the proxy's, already validated; `switch` says
    /// whether a switch is configured (hand-off needs one).
    pub fn merge(
        &self,
        file: Option<FileTls>,
        node_id: &str,
        weight: u32,
        peers: &[Peer],
        switch: bool,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        let file = file.unwrap_or_default();
        let Some(listen) = self.tls_listen.or(file.listen) else {
            if self.tls_upstream.is_some() || !self.sni.is_empty() || !self.alpn.is_empty() {
                return err(
                    "TLS flags without a TLS listener: pass --tls-listen ADDR:PORT (e.g. --tls-listen 198.19.1.2:443)",
                );
            }
            return Ok(None);
        };
        let Some(upstream) = self.tls_upstream.or(file.upstream) else {
            return err(
                "the TLS listener needs the local TLS server: pass --tls-upstream ADDR:PORT (e.g. --tls-upstream 127.0.0.1:8443)",
            );
        };
        if upstream == listen {
            return err(format!(
                "--tls-upstream {upstream} is the TLS listener's own address; point it at the local TLS server"
            ));
        }
        let known = |id: &str| id == node_id || peers.iter().any(|p| p.id == id);
        let mut names = Vec::new();
        let rules = file
            .name
            .iter()
            .map(|r| (r.name.clone(), r.node.clone()))
            .chain(self.sni.iter().cloned());
        for (name, id) in rules {
            let p = NamePattern::parse(&name).map_err(ConfigError)?;
            if !known(&id) {
                return err(format!(
                    "server name {name} names node {id}, which is neither this node ({node_id}) nor a peer; add --peer {id}=ADDR:PORT"
                ));
            }
            // A later rule for the same pattern (a flag over the file) replaces it.
            names.retain(|(q, _)| *q != p);
            names.push((p, id));
        }
        let mut alpn: Vec<(String, String)> = Vec::new();
        let rules = file
            .alpn
            .iter()
            .map(|r| (r.protocol.clone(), r.node.clone()))
            .chain(self.alpn.iter().cloned());
        for (proto, id) in rules {
            if proto.is_empty() || proto.len() > 255 {
                return err(format!(
                    "ALPN protocol {proto:?} must be 1-255 bytes (e.g. h2)"
                ));
            }
            if !known(&id) {
                return err(format!(
                    "ALPN protocol {proto} names node {id}, which is neither this node ({node_id}) nor a peer"
                ));
            }
            alpn.retain(|(q, _)| *q != proto);
            alpn.push((proto, id));
        }
        let default = self.tls_default_node.clone().or(file.default_node);
        if let Some(d) = default.as_deref().filter(|d| !known(d)) {
            return err(format!(
                "--tls-default-node {d} is neither this node ({node_id}) nor a peer"
            ));
        }
        let kind = self.tls_policy.or(file.policy).unwrap_or(
            if names.is_empty() && alpn.is_empty() && default.is_none() {
                TlsPolicyKind::Local
            } else {
                TlsPolicyKind::Names
            },
        );
        let policy = match kind {
            TlsPolicyKind::Local => TlsPolicy::Local,
            TlsPolicyKind::Names => TlsPolicy::Names,
            TlsPolicyKind::Hash => {
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
                        "every node has weight 0 in the TLS hash policy; give at least one node a positive --weight",
                    );
                }
                TlsPolicy::Hash(nodes)
            }
        };
        if kind != TlsPolicyKind::Local && !switch {
            return err(
                "TLS routing to peers needs the switch: pass --switch ADDR:PORT and --key-file FILE, or --tls-policy local",
            );
        }
        let hello_timeout = match self.tls_hello_timeout_ms.or(file.hello_timeout_ms) {
            Some(0) => return err("TLS hello timeout must be at least 1 ms"),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_HELLO_TIMEOUT,
        };
        let mut limits = HelloLimits::default();
        if let Some(b) = self.tls_max_hello_bytes.or(file.max_hello_bytes) {
            if !(512..=1 << 20).contains(&b) {
                return err(format!(
                    "max_hello_bytes {b} is out of range; use 512 to 1048576"
                ));
            }
            limits.max_hello_bytes = b;
            // Room for the hello in records of 512 bytes and more.
            limits.max_records = limits.max_records.max(b.div_ceil(512));
        }
        let mut local_names = Vec::new();
        for n in file.local_names.iter().chain(&self.tls_local_name) {
            local_names.push(NamePattern::parse(n).map_err(ConfigError)?);
        }
        let handoff_attempts = self
            .tls_handoff_attempts
            .or(file.handoff_attempts)
            .unwrap_or(DEFAULT_HANDOFF_ATTEMPTS);
        if !(1..=8).contains(&handoff_attempts) {
            return err(format!(
                "TLS hand-off attempts {handoff_attempts} is out of range; use 1 to 8"
            ));
        }
        Ok(Some(TlsConfig {
            listen,
            upstream,
            routes: TlsRoutes::new(
                node_id,
                policy,
                names,
                alpn,
                default.or_else(|| Some(node_id.to_string())),
            ),
            on_error: self
                .tls_on_error
                .or(file.on_error)
                .unwrap_or(OnError::Close),
            hello_timeout,
            limits,
            local_names,
            handoff_attempts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<Peer> {
        vec![Peer {
            id: "n2".into(),
            addr: "198.19.2.2:80".parse().unwrap(),
            weight: 1,
        }]
    }

    #[test]
    fn flags_and_file_merge_and_mistakes_say_what_to_fix() {
        let a = TlsArgs::default();
        assert_eq!(a.merge(None, "n1", 1, &peers(), true), Ok(None));
        let file: FileTls = toml::from_str(
            "listen = \"198.19.1.2:443\"\nupstream = \"127.0.0.1:8443\"\n\
             [[name]]\nname = \"*.n2.example\"\nnode = \"n2\"\n",
        )
        .unwrap();
        let a = TlsArgs {
            sni: vec![("n1.example".into(), "n1".into())],
            ..TlsArgs::default()
        };
        let c = a
            .merge(Some(file.clone()), "n1", 1, &peers(), true)
            .unwrap()
            .unwrap();
        assert_eq!(c.routes.owner(Some("a.n2.example"), &[]), "n2");
        assert_eq!(c.routes.owner(Some("n1.example"), &[]), "n1");
        assert_eq!(c.routes.policy(), &TlsPolicy::Names);
        assert_eq!(
            c.peer_addr(&peers()[0]),
            "198.19.2.2:443".parse::<SocketAddr>().unwrap()
        );
        let e = a.merge(Some(file.clone()), "n1", 1, &peers(), false);
        assert!(e.unwrap_err().0.contains("--switch"));
        let bad = TlsArgs {
            sni: vec![("x.example".into(), "n9".into())],
            ..TlsArgs::default()
        };
        let e = bad.merge(Some(file), "n1", 1, &peers(), true).unwrap_err();
        assert!(e.0.contains("add --peer n9="), "{e}");
        let no_listen = TlsArgs {
            tls_upstream: Some("127.0.0.1:8443".parse().unwrap()),
            ..TlsArgs::default()
        };
        let e = no_listen.merge(None, "n1", 1, &peers(), true).unwrap_err();
        assert!(e.0.contains("--tls-listen"), "{e}");
    }

    #[test]
    fn local_names_decide_the_fallback() {
        let file: FileTls = toml::from_str(
            "listen = \"198.19.1.2:443\"\nupstream = \"127.0.0.1:8443\"\n\
             local_names = [\"n1.example\"]\nhandoff_attempts = 3\n",
        )
        .unwrap();
        let a = TlsArgs {
            tls_local_name: vec!["*.n1.example".into()],
            sni: vec![("*.n2.example".into(), "n2".into())],
            ..TlsArgs::default()
        };
        let c = a
            .merge(Some(file), "n1", 1, &peers(), true)
            .unwrap()
            .unwrap();
        assert_eq!(c.handoff_attempts, 3);
        assert!(c.serves_locally(Some("n1.example")));
        assert!(c.serves_locally(Some("www.n1.example")));
        assert!(c.serves_locally(None));
        assert!(!c.serves_locally(Some("a.n2.example")));
        assert!(!c.serves_locally(Some("example")));
        let bad = TlsArgs {
            tls_listen: Some("198.19.1.2:443".parse().unwrap()),
            tls_upstream: Some("127.0.0.1:8443".parse().unwrap()),
            tls_handoff_attempts: Some(0),
            ..TlsArgs::default()
        };
        let e = bad.merge(None, "n1", 1, &peers(), true).unwrap_err();
        assert!(e.0.contains("1 to 8"), "{e}");
        let bad = TlsArgs {
            tls_handoff_attempts: None,
            tls_local_name: vec!["a b".into()],
            ..bad
        };
        assert!(bad.merge(None, "n1", 1, &peers(), true).is_err());
    }
}
