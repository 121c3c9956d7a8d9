//! Switch configuration: ports, the VIP, back-ends, spray policy, control keys and timeouts.
//!
//! Fixed capacities (const) so the configuration itself lives without an allocator.

use heapless::Vec;
use smoltcp::wire::{EthernetAddress, Ipv4Address};

use crate::time::Duration;
use crate::wire::control::Key;

/// Most ports one switch has (port 0 is usually the client side).
pub const MAX_PORTS: usize = 16;
/// Most back-end nodes.
pub const MAX_BACKENDS: usize = 15;
/// Most control keys in use at once (for key rotation).
pub const MAX_KEYS: usize = 4;
/// Most served VIP ports.
pub const MAX_SERVICES: usize = 8;

/// How a service on the VIP is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ServiceMode {
    /// HTTP: the node's proxy reads requests and may hand the connection off (paper III).
    Http,
    /// TLS: the node's proxy reads the ClientHello and may hand the connection off by server
    /// name before any server byte is sent (the switch treats it like `Http`).
    Tls,
    /// Plain layer 4: sprayed with NAT, never handed off (hand-off requests are refused
    /// `not_handoff_service`), as IPVS would.
    L4,
}

impl ServiceMode {
    /// The mode's name in configuration and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ServiceMode::Http => "http",
            ServiceMode::Tls => "tls",
            ServiceMode::L4 => "l4",
        }
    }
    /// Whether connections of this service may be handed off.
    pub const fn hands_off(self) -> bool {
        !matches!(self, ServiceMode::L4)
    }
}

/// One service on the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Service {
    /// TCP port on the VIP and on the back-ends.
    pub port: u16,
    /// How it is served.
    pub mode: ServiceMode,
}

/// A switch port number, `0..MAX_PORTS`.
pub type PortId = u8;

/// What sits behind a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PortRole {
    /// The outside: clients reach the VIP through it. Control messages are refused here.
    Client,
    /// One back-end node's link.
    Backend,
}

/// One switch port: its subnet and the switch's own address and MAC on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PortConfig {
    /// Client side or back-end.
    pub role: PortRole,
    /// The switch's (gateway) address on this port's subnet.
    pub gateway: Ipv4Address,
    /// Subnet prefix length; addresses in `gateway/prefix_len` are routed to this port.
    pub prefix_len: u8,
    /// The switch's MAC on this port.
    pub mac: EthernetAddress,
}

impl PortConfig {
    /// True when `addr` lies in this port's subnet.
    pub fn contains(&self, addr: Ipv4Address) -> bool {
        let p = self.prefix_len.min(32) as u32;
        let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        (u32::from(addr) & mask) == (u32::from(self.gateway) & mask)
    }
}

/// A back-end node the VIP is sprayed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Backend {
    /// The node's address (it must lie in `port`'s subnet).
    pub addr: Ipv4Address,
    /// The port the node sits behind.
    pub port: PortId,
    /// Relative weight for [`SprayPolicy::Weighted`] and [`SprayPolicy::Maglev`]; 0 = drained.
    pub weight: u16,
}

/// How a new connection to the VIP picks its back-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SprayPolicy {
    /// Round robin over the back-ends with non-zero weight (the paper's policy).
    RoundRobin,
    /// Smooth weighted round robin (nginx's algorithm).
    Weighted,
    /// Maglev consistent hashing of the client's address and port (Eisenbud et al., NSDI 2016).
    Maglev,
}

/// Flow timeouts. Defaults follow RFC 5382 (REQ-5: established >= 2 h 4 min; transitory >= 4 min)
/// and a 2-minute TIME-WAIT (2 MSL, RFC 9293).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Timeouts {
    /// A connection whose handshake has not completed (SYN, or SYN and SYN-ACK, seen); short, so
    /// a flood of spoofed SYNs drains. Retransmitted SYNs and SYN-ACKs do not extend it.
    pub syn: Duration,
    /// An established connection without traffic.
    pub established: Duration,
    /// A connection that is opening or closing (SYN-ACK seen, FIN seen).
    pub transitory: Duration,
    /// After both FINs are acknowledged or after an RST: a client connection (and its splice
    /// session). A SYN that RFC 6191 accepts reopens the tuple sooner, and a full table recycles
    /// TIME-WAIT entries (docs/protocol.md "Closed connections").
    pub time_wait: Duration,
    /// TIME-WAIT of a connection between two nodes that is not part of a splice session. The
    /// switch forwards such a connection unchanged, so its entry only carries the last ACKs of
    /// the close; the nodes keep their own TIME-WAIT against old duplicates. Short, so that
    /// closed node-to-node legs never hold the table.
    pub routed_time_wait: Duration,
    /// How long the target of a hand-off has to acknowledge the forwarded bytes before the
    /// hand-off is rolled back.
    pub handoff: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            syn: Duration::from_secs(30),
            established: Duration::from_secs(2 * 3600 + 4 * 60),
            transitory: Duration::from_secs(4 * 60),
            time_wait: Duration::from_secs(120),
            routed_time_wait: Duration::from_secs(10),
            handoff: Duration::from_secs(5),
        }
    }
}

/// Everything a switch needs to know before the first frame.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ports, indexed by [`PortId`].
    pub ports: Vec<PortConfig, MAX_PORTS>,
    /// The virtual address clients connect to.
    pub vip: Ipv4Address,
    /// The services on the VIP: TCP ports (the same port on the back-end) and how each is
    /// served.
    pub services: Vec<Service, MAX_SERVICES>,
    /// Back-end nodes.
    pub backends: Vec<Backend, MAX_BACKENDS>,
    /// Spray policy.
    pub policy: SprayPolicy,
    /// UDP port for control messages, on each back-end port's gateway address.
    pub control_port: u16,
    /// Control keys by key id.
    pub keys: Vec<(u8, Key), MAX_KEYS>,
    /// Flow timeouts.
    pub timeouts: Timeouts,
    /// Seed of the flow-table hash, so attacker-chosen tuples cannot pile into one bucket.
    pub hash_seed: [u8; 16],
    /// Verify IPv4 and TCP/UDP checksums on ingress (turn off only for fuzzing).
    pub verify_checksums: bool,
}

/// A configuration that cannot work, with what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// No port is configured.
    NoPorts,
    /// Back-end `index` names a port that does not exist or is not a back-end port.
    BackendPort {
        /// Index into `backends`.
        index: usize,
    },
    /// Back-end `index` has an address outside its port's subnet.
    BackendSubnet {
        /// Index into `backends`.
        index: usize,
    },
    /// The VIP lies in a back-end port's subnet.
    VipInBackendSubnet,
    /// No VIP port is served.
    NoVipPorts,
    /// A service's port is 0 or appears twice.
    BadService {
        /// The port.
        port: u16,
    },
    /// Two ports have overlapping subnets.
    OverlappingPorts {
        /// First port.
        a: PortId,
        /// Second port.
        b: PortId,
    },
    /// The flow storage is empty or the index is not a power of two at least twice the flows.
    Storage,
    /// The session storage is empty.
    SessionStorage,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::NoPorts => write!(
                f,
                "no switch port is configured; add at least a client port and one back-end port"
            ),
            ConfigError::BackendPort { index } => write!(
                f,
                "back-end #{index} names a port that is missing or not a back-end port"
            ),
            ConfigError::BackendSubnet { index } => write!(
                f,
                "back-end #{index} has an address outside its port's subnet"
            ),
            ConfigError::VipInBackendSubnet => write!(
                f,
                "the VIP lies inside a back-end subnet; pick an address on the client side"
            ),
            ConfigError::BadService { port } => write!(
                f,
                "service port {port} is 0 or listed twice; give each service its own port"
            ),
            ConfigError::NoVipPorts => {
                write!(f, "no TCP port is served on the VIP; add one (e.g. 80)")
            }
            ConfigError::OverlappingPorts { a, b } => {
                write!(f, "ports {a} and {b} have overlapping subnets")
            }
            ConfigError::Storage => write!(
                f,
                "flow storage must be non-empty and the index a power of two at least twice the flow capacity"
            ),
            ConfigError::SessionStorage => write!(f, "splice session storage must be non-empty"),
        }
    }
}

impl Config {
    /// The service on VIP port `port`, with its index in [`Config::services`].
    #[inline]
    pub fn service(&self, port: u16) -> Option<(usize, Service)> {
        self.services
            .iter()
            .position(|s| s.port == port)
            .and_then(|i| self.services.get(i).map(|s| (i, *s)))
    }

    /// Checks the configuration for mistakes that would make the switch misroute.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ports.is_empty() {
            return Err(ConfigError::NoPorts);
        }
        if self.services.is_empty() {
            return Err(ConfigError::NoVipPorts);
        }
        for (i, a) in self.services.iter().enumerate() {
            if a.port == 0 || self.services.iter().skip(i + 1).any(|b| b.port == a.port) {
                return Err(ConfigError::BadService { port: a.port });
            }
        }
        for (i, a) in self.ports.iter().enumerate() {
            for (j, b) in self.ports.iter().enumerate().skip(i + 1) {
                if a.contains(b.gateway) || b.contains(a.gateway) {
                    return Err(ConfigError::OverlappingPorts {
                        a: i as PortId,
                        b: j as PortId,
                    });
                }
            }
            if a.role == PortRole::Backend && a.contains(self.vip) {
                return Err(ConfigError::VipInBackendSubnet);
            }
        }
        for (index, be) in self.backends.iter().enumerate() {
            let port = self
                .ports
                .get(be.port as usize)
                .ok_or(ConfigError::BackendPort { index })?;
            if port.role != PortRole::Backend {
                return Err(ConfigError::BackendPort { index });
            }
            if !port.contains(be.addr) {
                return Err(ConfigError::BackendSubnet { index });
            }
        }
        Ok(())
    }

    /// The port whose subnet holds `addr`.
    pub fn route(&self, addr: Ipv4Address) -> Option<PortId> {
        self.ports
            .iter()
            .position(|p| p.contains(addr))
            .map(|i| i as PortId)
    }

    /// The key with id `key_id`.
    pub fn key(&self, key_id: u8) -> Option<&Key> {
        self.keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, k)| k)
    }

    /// The back-end with address `addr`, as an index into `backends`.
    pub fn backend_index(&self, addr: Ipv4Address) -> Option<usize> {
        self.backends.iter().position(|b| b.addr == addr)
    }

    /// The cluster layout of ARCHITECTURE.md: client port 0 (198.18.0.1/24, VIP 198.18.0.10) and
    /// `n` back-end ports, port N = 198.19.N.1/24 with node 198.19.N.2, serving VIP port 80.
    pub fn cluster(n: usize, key: Key) -> Config {
        let mut ports = Vec::new();
        let _ = ports.push(PortConfig {
            role: PortRole::Client,
            gateway: Ipv4Address::new(198, 18, 0, 1),
            prefix_len: 24,
            mac: EthernetAddress([0x02, 0x4b, 0x4e, 0x00, 0x00, 0x00]),
        });
        let mut backends = Vec::new();
        for i in 1..=n.min(MAX_BACKENDS) {
            let _ = ports.push(PortConfig {
                role: PortRole::Backend,
                gateway: Ipv4Address::new(198, 19, i as u8, 1),
                prefix_len: 24,
                mac: EthernetAddress([0x02, 0x4b, 0x4e, 0x00, 0x00, i as u8]),
            });
            let _ = backends.push(Backend {
                addr: Ipv4Address::new(198, 19, i as u8, 2),
                port: i as PortId,
                weight: 1,
            });
        }
        let mut services = Vec::new();
        let _ = services.push(Service {
            port: 80,
            mode: ServiceMode::Http,
        });
        let mut keys = Vec::new();
        let _ = keys.push((1, key));
        Config {
            ports,
            vip: Ipv4Address::new(198, 18, 0, 10),
            services,
            backends,
            policy: SprayPolicy::RoundRobin,
            control_port: crate::wire::control::DEFAULT_PORT,
            keys,
            timeouts: Timeouts::default(),
            hash_seed: [0x4b; 16],
            verify_checksums: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_config_is_valid_and_routes() {
        let c = Config::cluster(3, [7; 16]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.route(Ipv4Address::new(198, 18, 0, 2)), Some(0));
        assert_eq!(c.route(Ipv4Address::new(198, 19, 2, 2)), Some(2));
        assert_eq!(c.route(Ipv4Address::new(10, 0, 0, 1)), None);
        assert_eq!(c.backend_index(Ipv4Address::new(198, 19, 3, 2)), Some(2));
    }

    #[test]
    fn bad_configs_say_what_to_fix() {
        let mut c = Config::cluster(2, [0; 16]);
        c.backends[1].addr = Ipv4Address::new(198, 19, 9, 2);
        assert_eq!(c.validate(), Err(ConfigError::BackendSubnet { index: 1 }));
        let mut c = Config::cluster(2, [0; 16]);
        c.backends[0].port = 0;
        assert_eq!(c.validate(), Err(ConfigError::BackendPort { index: 0 }));
        let mut c = Config::cluster(2, [0; 16]);
        c.vip = Ipv4Address::new(198, 19, 1, 77);
        assert_eq!(c.validate(), Err(ConfigError::VipInBackendSubnet));
        let mut c = Config::cluster(2, [0; 16]);
        c.ports[2].gateway = Ipv4Address::new(198, 19, 1, 9);
        assert_eq!(
            c.validate(),
            Err(ConfigError::OverlappingPorts { a: 1, b: 2 })
        );
    }
}
