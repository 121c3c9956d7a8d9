//! The scenarios of the study, the topology each one runs in, and the `--only` selection.
//!
//! A scenario is one row of the paper's figures: a topology (what stands between the client and
//! the web server) and the path the client asks for (which decides, in KNITS, how many times a
//! connection is handed off). Scenarios that share a topology run in one build of it.

use std::fmt;

/// What stands between the client and nginx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Client and server namespaces joined by one veth pair.
    Direct,
    /// A router namespace with kernel IP forwarding between client and nodes.
    Forward,
    /// The router doing DNAT (VIP to node 1) and SNAT with nftables.
    Netfilter,
    /// HAProxy in the router namespace, routing by path to the owner node.
    Haproxy,
    /// knits-host's cluster: the switch on TAP devices, knits-proxy in front of nginx per node.
    Knits {
        /// TSO/checksum offloads on the TAPs.
        offloads: bool,
        /// Switch shards (threads).
        shards: usize,
        /// Pre-connected new legs per peer in every proxy (0: connect at hand-off).
        pool: usize,
    },
    /// nftables DNAT in the router, knits-proxy (policy local) in front of nginx on node 1.
    ProxyAlone,
    /// knits-host's cluster with a plain L4 service on the VIP's port [`L4_PORT`]: the switch
    /// sprays each connection with NAT to nginx on node 1 (weights 1,0,0), no proxy in the
    /// path, as Netfilter's DNAT does with the same nginx.
    KnitsL4,
}

/// The VIP port of the L4 service (iperf3's port; nginx listens there on every node).
pub const L4_PORT: u16 = 5201;

impl Topology {
    /// A short label for logs and the progress bar.
    pub fn label(&self) -> String {
        match self {
            Topology::Direct => "direct veth".into(),
            Topology::Forward => "router, ip_forward".into(),
            Topology::Netfilter => "router, nftables DNAT/SNAT".into(),
            Topology::Haproxy => "router, HAProxy".into(),
            Topology::Knits {
                offloads,
                shards,
                pool,
            } => format!(
                "knits cluster (offloads {}, {shards} shard{}, c2 pool {pool})",
                if *offloads { "on" } else { "off" },
                if *shards == 1 { "" } else { "s" }
            ),
            Topology::ProxyAlone => "router, nftables DNAT, knits-proxy".into(),
            Topology::KnitsL4 => format!("knits cluster, L4 service on port {L4_PORT}"),
        }
    }

    /// Whether the switch is in the path (a knits-host cluster).
    pub fn is_knits(&self) -> bool {
        matches!(self, Topology::Knits { .. } | Topology::KnitsL4)
    }
}

/// How a KNITS connection moves: the owner node of each request, in order; the last one repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moves {
    /// Every request for node 1, where the spray puts every connection: no hand-off.
    None,
    /// Every request for node 2: the first request of a connection hands it off once.
    One,
    /// The first request for node 2, the rest for node 3: two hand-offs per connection.
    Two,
}

/// One scenario of the study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Name used by `--only`, the CSV and the plots.
    pub name: &'static str,
    /// The topology it runs in.
    pub topology: Topology,
    /// Hand-offs per connection (KNITS scenarios; `None` elsewhere).
    pub moves: Moves,
    /// One sentence for the report.
    pub what: &'static str,
}

const KNITS: Topology = Topology::Knits {
    offloads: true,
    shards: 1,
    pool: 0,
};

/// Every scenario, in the order of the report (the paper's order first).
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "direct",
        topology: Topology::Direct,
        moves: Moves::None,
        what: "client and nginx joined by a veth pair",
    },
    Scenario {
        name: "forward",
        topology: Topology::Forward,
        moves: Moves::None,
        what: "a router namespace forwarding (ip_forward=1) to node 1",
    },
    Scenario {
        name: "netfilter",
        topology: Topology::Netfilter,
        moves: Moves::None,
        what: "the router doing DNAT (VIP to node 1) and SNAT with nftables",
    },
    Scenario {
        name: "knits",
        topology: KNITS,
        moves: Moves::None,
        what: "KNITS without hand-off (every connection sprayed to node 1, which owns the path)",
    },
    Scenario {
        name: "knits-h1",
        topology: KNITS,
        moves: Moves::One,
        what: "KNITS-Handoff-1: the first request of each connection hands it off (n1 to n2)",
    },
    Scenario {
        name: "knits-h2",
        topology: KNITS,
        moves: Moves::Two,
        what: "KNITS-Handoff-2: the first two requests of each connection hand it off (n1 to n2 to n3)",
    },
    Scenario {
        name: "haproxy",
        topology: Topology::Haproxy,
        moves: Moves::None,
        what: "HAProxy (mode http, 1 thread) in the router routing by path to the owner node",
    },
    Scenario {
        name: "proxy-alone",
        topology: Topology::ProxyAlone,
        moves: Moves::None,
        what: "nftables DNAT to node 1, where knits-proxy (policy local) relays to nginx: the proxy's own cost",
    },
    Scenario {
        name: "knits-nooffload",
        topology: Topology::Knits {
            offloads: false,
            shards: 1,
            pool: 0,
        },
        moves: Moves::None,
        what: "KNITS without hand-off, TAP offloads off (MTU frames, full checksums)",
    },
    Scenario {
        name: "knits-h1-2shards",
        topology: Topology::Knits {
            offloads: true,
            shards: 2,
            pool: 0,
        },
        moves: Moves::One,
        what: "KNITS-Handoff-1 with two switch shards (one thread per core)",
    },
    Scenario {
        name: "knits-h1-pool",
        topology: Topology::Knits {
            offloads: true,
            shards: 1,
            pool: 2,
        },
        moves: Moves::One,
        what: "KNITS-Handoff-1 with 2 pre-connected new legs per peer in every proxy (--c2-pool 2)",
    },
    Scenario {
        name: "knits-l4",
        topology: Topology::KnitsL4,
        moves: Moves::None,
        what: "the switch's L4 service (VIP:5201 sprayed with NAT to nginx on node 1, no proxy): compare with netfilter's DNAT to the same nginx",
    },
];

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Looks a scenario up by name.
pub fn by_name(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// Parses `--only`: comma-separated scenario names, or groups: `kernel` (direct, forward,
/// netfilter), `paper` (the paper's six), `knits-all` (every KNITS scenario), `l4` (netfilter
/// and knits-l4: the L4 service against kernel NAT), `all`. Keeps the
/// report's order and drops repeats. An unknown name is an error that lists the known ones.
pub fn parse_only(spec: &str) -> Result<Vec<&'static Scenario>, String> {
    let mut want = vec![false; ALL.len()];
    let mut any = false;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        any = true;
        let pick: Vec<usize> = match part {
            "all" => (0..ALL.len()).collect(),
            "kernel" => idx(&["direct", "forward", "netfilter"]),
            "paper" => idx(&[
                "direct",
                "forward",
                "netfilter",
                "knits",
                "knits-h1",
                "knits-h2",
            ]),
            "knits-all" => (0..ALL.len())
                .filter(|&i| ALL[i].topology.is_knits())
                .collect(),
            "l4" => idx(&["netfilter", "knits-l4"]),
            name => match ALL.iter().position(|s| s.name == name) {
                Some(i) => vec![i],
                None => {
                    let names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
                    return Err(format!(
                        "unknown scenario {name:?}; known: {} (groups: all, kernel, paper, knits-all, l4)",
                        names.join(", ")
                    ));
                }
            },
        };
        for i in pick {
            want[i] = true;
        }
    }
    if !any {
        return Err("--only needs at least one scenario name".into());
    }
    Ok(ALL
        .iter()
        .zip(want)
        .filter(|(_, w)| *w)
        .map(|(s, _)| s)
        .collect())
}

fn idx(names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .filter_map(|n| ALL.iter().position(|s| s.name == *n))
        .collect()
}

/// Groups scenarios by topology, keeping the order of first appearance, so each topology is
/// built once.
pub fn by_topology(list: &[&'static Scenario]) -> Vec<(Topology, Vec<&'static Scenario>)> {
    let mut groups: Vec<(Topology, Vec<&'static Scenario>)> = Vec::new();
    for s in list {
        match groups.iter_mut().find(|(t, _)| *t == s.topology) {
            Some((_, v)) => v.push(s),
            None => groups.push((s.topology, vec![s])),
        }
    }
    groups
}

/// Parses a size such as `1024`, `1k`, `64KiB`, `32M`, `1MiB` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number with an optional k/m/g unit"))?;
    let mult = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("size {s:?}: unknown unit {unit:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A size as the report writes it: `1 KiB`, `64 KiB`, `32 MiB`, `100 B`.
pub fn size_label(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&Scenario]) -> Vec<&'static str> {
        v.iter().map(|s| s.name).collect()
    }

    #[test]
    fn only_keeps_report_order_and_drops_repeats() {
        let v = parse_only("knits-h1,direct, direct,haproxy").unwrap();
        assert_eq!(names(&v), ["direct", "knits-h1", "haproxy"]);
    }

    #[test]
    fn only_groups() {
        assert_eq!(
            names(&parse_only("kernel").unwrap()),
            ["direct", "forward", "netfilter"]
        );
        assert_eq!(parse_only("all").unwrap().len(), ALL.len());
        assert_eq!(
            names(&parse_only("paper").unwrap()),
            [
                "direct",
                "forward",
                "netfilter",
                "knits",
                "knits-h1",
                "knits-h2"
            ]
        );
        let k = parse_only("knits-all").unwrap();
        assert!(k.iter().all(|s| s.topology.is_knits()));
        assert_eq!(k.len(), 7);
        assert_eq!(names(&parse_only("l4").unwrap()), ["netfilter", "knits-l4"]);
        assert_eq!(names(&parse_only("knits").unwrap()), ["knits"]);
    }

    #[test]
    fn only_rejects_unknown_and_empty() {
        let e = parse_only("direct,nope").unwrap_err();
        assert!(e.contains("\"nope\"") && e.contains("haproxy"), "{e}");
        assert!(parse_only(" , ").is_err());
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|b| b.name != a.name), "{}", a.name);
            assert_eq!(by_name(a.name), Some(a));
        }
    }

    #[test]
    fn scenarios_sharing_a_cluster_are_grouped() {
        let v = parse_only("knits,direct,knits-h2,knits-h1").unwrap();
        let g = by_topology(&v);
        assert_eq!(g[0].0, Topology::Direct);
        assert_eq!(names(&g[1].1), ["knits", "knits-h1", "knits-h2"]);
        assert_eq!(g.len(), 2, "{g:?}");
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size(" 1M ").unwrap(), 1 << 20);
        assert!(parse_size("12q").is_err());
        assert!(parse_size("k").is_err());
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(32 << 20), "32 MiB");
        assert_eq!(size_label(100), "100 B");
        assert_eq!(size_label(1536), "1536 B");
    }
}
