//! Counters of a running switch: a snapshot and its human table here, its Prometheus exposition
//! in [`prometheus`], and the server that answers with either in [`server`].
//!
//! The event loop copies the core's [`Counters`] and its own per-port figures into a [`Snapshot`]
//! every 100 ms; a server thread answers from the latest copy, so nothing on the packet path
//! waits for a reader. Names of drop reasons, local kinds, generated frames and reply codes are
//! the core's `name()`s.

pub mod prometheus;
mod server;

pub use server::{Server, ServerConfig, query, socket_path};

use std::fmt::Write as _;

use knits_core::counters::{Counters, DropReason, FlowEvent, Generated, LocalKind};
use knits_core::wire::control::ReplyCode;

use crate::faults::FaultStats;

/// Host-side figures of one port.
#[derive(Debug, Clone, Default)]
pub struct PortStats {
    /// Interface name.
    pub name: String,
    /// Frames read from the TAP.
    pub rx_frames: u64,
    /// Bytes read (Ethernet frames, no virtio-net header).
    pub rx_bytes: u64,
    /// Frames written to the TAP.
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// TSO/GSO frames read (each stands for several segments).
    pub rx_gso: u64,
    /// Reads that failed or returned a frame shorter than the virtio-net header.
    pub rx_errors: u64,
    /// Writes that failed (the frame is lost).
    pub tx_errors: u64,
    /// TCP segments with RST written to the port (a client should never see one for a
    /// hand-off that succeeded).
    pub tx_rst: u64,
    /// Fault injector on frames read from the port.
    pub faults_in: FaultStats,
    /// Fault injector on frames written to the port.
    pub faults_out: FaultStats,
}

/// One shard of a sharded switch (`--shards N`, N > 1): what it did alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Frames this shard's core processed: read from its own queues and handed over to it by
    /// the others (not the ARP copies it only learns from).
    pub processed: u64,
    /// Frames it read that belong to another shard, handed over through a channel.
    pub handed_over: u64,
    /// Frames it could not hand over because the owner's channel was full (lost).
    pub lost: u64,
    /// Flow entries in use in its table.
    pub flows: usize,
    /// Its flow table's capacity (its share of the switch's).
    pub flow_capacity: usize,
    /// Splice sessions in use.
    pub sessions: usize,
    /// Its session capacity.
    pub session_capacity: usize,
    /// Frames its core dropped, by [`DropReason`] index.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for ShardSnapshot {
    fn default() -> Self {
        ShardSnapshot {
            processed: 0,
            handed_over: 0,
            lost: 0,
            flows: 0,
            flow_capacity: 0,
            sessions: 0,
            session_capacity: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl ShardSnapshot {
    /// The table figures and drops of one shard's own snapshot `part`, with the frame counts
    /// its loop keeps (`processed`, `handed_over`, `lost`).
    pub fn of(part: &Snapshot, processed: u64, handed_over: u64, lost: u64) -> ShardSnapshot {
        ShardSnapshot {
            processed,
            handed_over,
            lost,
            flows: part.flows,
            flow_capacity: part.flow_capacity,
            sessions: part.sessions,
            session_capacity: part.session_capacity,
            drops: part.core.drops,
        }
    }

    /// Frames its core dropped, all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Everything the stats server reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The core's counters.
    pub core: Counters,
    /// Flow entries in use.
    pub flows: usize,
    /// Flow capacity.
    pub flow_capacity: usize,
    /// Flow entries per TCP state (syn_sent, syn_received, established, fin_wait, closing,
    /// time_wait).
    pub flows_by_state: [usize; 6],
    /// Splice sessions in use.
    pub sessions: usize,
    /// Session capacity.
    pub session_capacity: usize,
    /// Per port, by port id.
    pub ports: Vec<PortStats>,
    /// Frames written to the pcap file.
    pub pcap_frames: u64,
    /// Seconds the switch has run.
    pub uptime_s: f64,
    /// Whether offloads are on.
    pub offloads: bool,
    /// Per shard, by shard id, when the switch runs more than one; empty with one. Everything
    /// above is the sum of the shards.
    pub shards: Vec<ShardSnapshot>,
    /// The services on the VIP, in the order of the core's per-service counters.
    pub services: Vec<knits_core::config::Service>,
}

impl std::ops::AddAssign<&PortStats> for PortStats {
    /// Adds the figures of `b`; the name stays, or is `b`'s when there was none.
    fn add_assign(&mut self, b: &PortStats) {
        if self.name.is_empty() {
            self.name = b.name.clone();
        }
        self.rx_frames += b.rx_frames;
        self.rx_bytes += b.rx_bytes;
        self.tx_frames += b.tx_frames;
        self.tx_bytes += b.tx_bytes;
        self.rx_gso += b.rx_gso;
        self.rx_errors += b.rx_errors;
        self.tx_errors += b.tx_errors;
        self.tx_rst += b.tx_rst;
        self.faults_in += &b.faults_in;
        self.faults_out += &b.faults_out;
    }
}

/// Adds a shard's snapshot into the switch's: counters, table figures and ports add up, the
/// uptime is the longest. What is one per switch (`pcap_frames`, `offloads`, `services`,
/// `shards`) is left alone: the caller takes it from one shard.
impl std::ops::AddAssign<&Snapshot> for Snapshot {
    fn add_assign(&mut self, o: &Snapshot) {
        self.core += &o.core;
        self.flows += o.flows;
        self.flow_capacity += o.flow_capacity;
        self.sessions += o.sessions;
        self.session_capacity += o.session_capacity;
        self.flows_by_state
            .iter_mut()
            .zip(o.flows_by_state)
            .for_each(|(x, y)| *x += y);
        if self.ports.len() < o.ports.len() {
            self.ports.resize_with(o.ports.len(), PortStats::default);
        }
        for (a, b) in self.ports.iter_mut().zip(&o.ports) {
            *a += b;
        }
        self.uptime_s = self.uptime_s.max(o.uptime_s);
    }
}

impl Snapshot {
    /// Connections sprayed and hand-offs accepted on the service on VIP port `port`.
    pub fn service_counts(&self, port: u16) -> Option<(u64, u64)> {
        let i = self.services.iter().position(|s| s.port == port)?;
        let c = &self.core;
        Some((
            c.sprayed_by_service.get(i).copied().unwrap_or(0),
            c.handoffs_by_service.get(i).copied().unwrap_or(0),
        ))
    }

    /// `80/http sprayed 12 handed off 5; 443/tls ...` for the table.
    fn service_line(&self) -> String {
        let v: Vec<String> = self
            .services
            .iter()
            .map(|s| {
                let (sprayed, handoffs) = self.service_counts(s.port).unwrap_or_default();
                format!(
                    "{}/{} sprayed {sprayed} handed off {handoffs}",
                    s.port,
                    s.mode.name()
                )
            })
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join("; ")
        }
    }

    /// Hand-off requests accepted.
    pub fn handoffs_accepted(&self) -> u64 {
        self.core.handoffs[ReplyCode::Accepted.index()]
    }

    /// Hand-off requests refused (any code but accepted).
    pub fn handoffs_refused(&self) -> u64 {
        self.core.handoffs.iter().sum::<u64>() - self.handoffs_accepted()
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let c = &self.core;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "switch: up {:.1} s, offloads {}, flows {}/{}, splice sessions {}/{}{}",
            self.uptime_s,
            if self.offloads { "on" } else { "off" },
            self.flows,
            self.flow_capacity,
            self.sessions,
            self.session_capacity,
            if self.shards.len() > 1 {
                format!(", {} shards", self.shards.len())
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "  {:<4} {:<16} {:>10} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>6} {:>6}",
            "port",
            "interface",
            "core rx",
            "core tx",
            "rx bytes",
            "tx frames",
            "tx bytes",
            "rx gso",
            "rx err",
            "tx err",
            "tx rst"
        );
        for (i, p) in self.ports.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<4} {:<16} {:>10} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>6} {:>6}",
                i,
                p.name,
                c.rx_frames.get(i).copied().unwrap_or(0),
                c.tx_frames.get(i).copied().unwrap_or(0),
                p.rx_bytes,
                p.tx_frames,
                p.tx_bytes,
                p.rx_gso,
                p.rx_errors,
                p.tx_errors,
                p.tx_rst
            );
        }
        if self.flows > 0 {
            let names = [
                "syn_sent",
                "syn_received",
                "established",
                "fin_wait",
                "closing",
                "time_wait",
            ];
            let v: Vec<String> = names
                .iter()
                .zip(self.flows_by_state)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "flows by state: {}", v.join(", "));
        }
        let _ = writeln!(
            s,
            "hand-offs: accepted {}, refused {}, completed {}, rolled back {}",
            self.handoffs_accepted(),
            self.handoffs_refused(),
            c.handoffs_completed,
            c.handoffs_rolled_back
        );
        let nonzero = |pairs: Vec<(&str, u64)>| -> String {
            let v: Vec<String> = pairs
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            s,
            "  reply codes: {}",
            nonzero(
                ReplyCode::ALL
                    .iter()
                    .map(|r| (r.name(), c.handoffs[r.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "sprayed: {}; routed flows {}; closed {}; expired {}",
            nonzero(
                c.sprayed
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (
                        [
                            "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9", "n10", "n11",
                            "n12", "n13", "n14", "n15"
                        ][i.min(14)],
                        *n
                    ))
                    .collect()
            ),
            c.tracked_routed,
            c.closed,
            c.expired
        );
        let _ = writeln!(s, "services: {}", self.service_line());
        let _ = writeln!(
            s,
            "flow events: {}",
            nonzero(
                FlowEvent::ALL
                    .iter()
                    .map(|e| (e.name(), c.events[e.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "local: {}",
            nonzero(
                LocalKind::ALL
                    .iter()
                    .map(|k| (k.name(), c.local[k.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "generated: {}",
            nonzero(
                Generated::ALL
                    .iter()
                    .map(|k| (k.name(), c.generated[k.index()]))
                    .collect()
            )
        );
        let _ = writeln!(
            s,
            "drops ({}): {}",
            c.total_drops(),
            nonzero(
                DropReason::ALL
                    .iter()
                    .map(|k| (k.name(), c.drops[k.index()]))
                    .collect()
            )
        );
        if self.shards.len() > 1 {
            s.push_str(&self.shard_table());
        }
        let mut fin = FaultStats::default();
        let mut fout = FaultStats::default();
        for p in &self.ports {
            fin += &p.faults_in;
            fout += &p.faults_out;
        }
        let injected = |f: &FaultStats| f.dropped + f.duplicated + f.reordered + f.corrupted;
        if injected(&fin) + injected(&fout) > 0 {
            let _ = writeln!(
                s,
                "faults injected: lost {}, duplicated {}, reordered {}, corrupted {}",
                fin.dropped + fout.dropped,
                fin.duplicated + fout.duplicated,
                fin.reordered + fout.reordered,
                fin.corrupted + fout.corrupted
            );
        }
        if self.pcap_frames > 0 {
            let _ = writeln!(s, "pcap: {} frames", self.pcap_frames);
        }
        s
    }

    /// The per-shard breakdown of the table: one line per shard.
    fn shard_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  {:<5} {:>12} {:>12} {:>9} {:>15} {:>13} {:>10}",
            "shard", "processed", "handed over", "lost", "flows", "sessions", "drops"
        );
        for (i, sh) in self.shards.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:<5} {:>12} {:>12} {:>9} {:>15} {:>13} {:>10}",
                i,
                sh.processed,
                sh.handed_over,
                sh.lost,
                format!("{}/{}", sh.flows, sh.flow_capacity),
                format!("{}/{}", sh.sessions, sh.session_capacity),
                sh.total_drops()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn snap() -> Snapshot {
        let mut s = Snapshot {
            flows: 3,
            flow_capacity: 4096,
            sessions: 1,
            session_capacity: 1024,
            ..Default::default()
        };
        s.services = vec![
            knits_core::config::Service {
                port: 80,
                mode: knits_core::config::ServiceMode::Http,
            },
            knits_core::config::Service {
                port: 443,
                mode: knits_core::config::ServiceMode::Tls,
            },
        ];
        s.core.sprayed_by_service[1] = 4;
        s.core.handoffs_by_service[1] = 3;
        s.core.rx_frames[0] = 10;
        s.core.tx_frames[1] = 9;
        s.core.drops[DropReason::TcpBadChecksum.index()] = 2;
        s.core.handoffs[ReplyCode::Accepted.index()] = 5;
        s.core.handoffs[ReplyCode::Busy.index()] = 1;
        s.core.generated[Generated::FakeClientFin.index()] = 4;
        s.ports = vec![
            PortStats {
                name: "k-client".into(),
                rx_bytes: 1000,
                ..Default::default()
            },
            PortStats {
                name: "k-n1".into(),
                ..Default::default()
            },
        ];
        s.ports[1].faults_out.dropped = 7;
        s
    }

    /// A shard's snapshot adds into the switch's: counters, table figures and ports.
    #[test]
    fn shard_snapshots_add_up() {
        let mut a = Snapshot::default();
        a.core.rx_frames[1] = 3;
        a.core.handoffs_completed = 2;
        a.flows = 5;
        a.flow_capacity = 8;
        a.ports = vec![PortStats {
            name: "p0".into(),
            rx_frames: 4,
            ..Default::default()
        }];
        let mut sum = Snapshot::default();
        sum += &a;
        sum += &a;
        assert_eq!(sum.core.rx_frames[1], 6);
        assert_eq!(sum.core.handoffs_completed, 4);
        assert_eq!((sum.flows, sum.flow_capacity), (10, 16));
        assert_eq!(sum.ports[0].name, "p0");
        assert_eq!(sum.ports[0].rx_frames, 8);
    }

    #[test]
    fn table_mentions_what_happened() {
        let t = snap().table();
        assert!(t.contains("flows 3/4096"), "{t}");
        assert!(t.contains("accepted 5, refused 1"), "{t}");
        assert!(t.contains("tcp_bad_checksum 2"), "{t}");
        assert!(t.contains("fake_client_fin 4"), "{t}");
        assert!(t.contains("k-client"), "{t}");
        assert!(t.contains("lost 7"), "{t}");
    }

    /// Every sample line is `name{labels} value` with a declared family; names use the core's.
    #[test]
    fn prometheus_text_is_well_formed() {
        for s in [snap(), sharded()] {
            well_formed(&s.prometheus());
        }
    }

    fn well_formed(p: &str) {
        let mut declared = std::collections::HashMap::new();
        assert_eq!(p.lines().last(), Some("# EOF"));
        for line in p.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split_whitespace();
                let name = it.next().unwrap().to_string();
                let kind = it.next().unwrap();
                assert!(matches!(kind, "counter" | "gauge"));
                assert!(declared.insert(name, kind).is_none(), "{line} twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap();
            let sample = name.split('{').next().unwrap();
            // OpenMetrics: a counter family `x` has the samples `x_total`.
            let family = match sample.strip_suffix("_total") {
                Some(f) if declared.get(f) == Some(&"counter") => f,
                _ => sample,
            };
            assert!(declared.contains_key(family), "undeclared {sample}");
            assert!(
                family
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            );
        }
        assert!(p.contains("knits_drops_total{reason=\"tcp_bad_checksum\"} 2"));
        assert!(p.contains("knits_handoff_replies_total{code=\"accepted\"} 5"));
        assert!(p.contains("knits_flows 3"));
        assert!(p.contains(
            "knits_host_faults_injected_total{port=\"1\",direction=\"out\",fault=\"lost\"} 7"
        ));
        for r in DropReason::ALL {
            assert!(p.contains(&format!("reason=\"{}\"", r.name())));
        }
    }

    /// The sample names and label names of today's exposition, in order (the label values come
    /// from the core's `name()`s and the configuration). Scrapers store these; a change here is a
    /// change to every dashboard.
    #[test]
    fn prometheus_series_names_and_labels_are_pinned() {
        let p = sharded().prometheus();
        let mut shapes: Vec<String> = Vec::new();
        for line in p.lines().filter(|l| !l.starts_with('#')) {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let keys: Vec<&str> = labels
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .collect();
            let shape = if keys.is_empty() {
                name.to_string()
            } else {
                format!("{name}{{{}}}", keys.join(","))
            };
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
        let want = [
            "knits_rx_frames_total{port}",
            "knits_tx_frames_total{port}",
            "knits_drops_total{reason}",
            "knits_drops_total{shard,reason}",
            "knits_local_total{kind}",
            "knits_generated_total{kind}",
            "knits_handoff_replies_total{code}",
            "knits_handoffs_completed_total",
            "knits_handoffs_rolled_back_total",
            "knits_sprayed_total{backend}",
            "knits_service_sprayed_total{port,mode}",
            "knits_service_handoffs_total{port,mode}",
            "knits_tracked_routed_total",
            "knits_flows_expired_total",
            "knits_flows_closed_total",
            "knits_flow_events_total{event}",
            "knits_flows",
            "knits_flows{shard}",
            "knits_flow_capacity",
            "knits_flow_capacity{shard}",
            "knits_splice_sessions",
            "knits_splice_sessions{shard}",
            "knits_splice_session_capacity",
            "knits_splice_session_capacity{shard}",
            "knits_host_rx_bytes_total{port,interface}",
            "knits_host_tx_frames_total{port,interface}",
            "knits_host_tx_bytes_total{port,interface}",
            "knits_host_rx_gso_frames_total{port,interface}",
            "knits_host_rx_errors_total{port,interface}",
            "knits_host_tx_errors_total{port,interface}",
            "knits_host_tx_rst_total{port,interface}",
            "knits_host_faults_injected_total{port,direction,fault}",
            "knits_host_pcap_frames_total",
            "knits_shard_frames_processed_total{shard}",
            "knits_shard_frames_handed_over_total{shard}",
            "knits_shard_frames_lost_total{shard}",
        ];
        assert_eq!(shapes, want, "{p}");
    }

    /// `snap()` as the sum of two shards.
    fn sharded() -> Snapshot {
        let mut s = snap();
        let mut a = ShardSnapshot {
            processed: 1200,
            handed_over: 34,
            lost: 0,
            flows: 2,
            flow_capacity: 2048,
            sessions: 1,
            session_capacity: 512,
            ..Default::default()
        };
        a.drops[DropReason::TcpBadChecksum.index()] = 2;
        let b = ShardSnapshot {
            processed: 800,
            handed_over: 56,
            lost: 7,
            flows: 1,
            flow_capacity: 2048,
            sessions: 0,
            session_capacity: 512,
            ..Default::default()
        };
        s.shards = vec![a, b];
        s
    }

    #[test]
    fn table_breaks_a_sharded_switch_down_per_shard() {
        let t = sharded().table();
        assert!(
            t.contains("flows 3/4096, splice sessions 1/1024, 2 shards"),
            "{t}"
        );
        let lines: Vec<Vec<&str>> = t
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|w: &Vec<&str>| w.first() == Some(&"0") || w.first() == Some(&"1"))
            .filter(|w| w.len() == 7)
            .collect();
        assert_eq!(
            lines,
            vec![
                vec!["0", "1200", "34", "0", "2/2048", "1/512", "2"],
                vec!["1", "800", "56", "7", "1/2048", "0/512", "0"],
            ],
            "{t}"
        );
        assert!(t.contains("handed over"), "{t}");
        // The summed part is the same as without shards; one shard (or none) has no breakdown.
        let plain = snap().table();
        assert!(!plain.contains("shard"), "{plain}");
        for l in plain.lines().skip(1) {
            assert!(t.contains(l), "{l:?} missing from\n{t}");
        }
        let mut one = snap();
        one.shards = vec![ShardSnapshot::default()];
        assert_eq!(one.table(), plain);
    }

    /// Per shard, the same families with a `shard` label; the unlabelled totals are exactly
    /// what an unsharded switch exposes.
    #[test]
    fn prometheus_labels_each_shard_and_keeps_the_totals() {
        let p = sharded().prometheus();
        let plain = snap().prometheus();
        let lines: std::collections::HashSet<&str> = p.lines().collect();
        for l in plain.lines() {
            assert!(lines.contains(l), "{l:?} missing");
        }
        for want in [
            "knits_flows 3",
            "knits_flows{shard=\"0\"} 2",
            "knits_flows{shard=\"1\"} 1",
            "knits_flow_capacity{shard=\"1\"} 2048",
            "knits_splice_sessions{shard=\"0\"} 1",
            "knits_splice_session_capacity{shard=\"0\"} 512",
            "knits_drops_total{reason=\"tcp_bad_checksum\"} 2",
            "knits_drops_total{shard=\"0\",reason=\"tcp_bad_checksum\"} 2",
            "knits_drops_total{shard=\"1\",reason=\"tcp_bad_checksum\"} 0",
            "knits_shard_frames_processed_total{shard=\"0\"} 1200",
            "knits_shard_frames_processed_total{shard=\"1\"} 800",
            "knits_shard_frames_handed_over_total{shard=\"1\"} 56",
            "knits_shard_frames_lost_total{shard=\"1\"} 7",
        ] {
            assert!(lines.contains(want), "{want:?} missing from\n{p}");
        }
        // Every reason for every shard; each family declared once.
        for k in 0..2 {
            for r in DropReason::ALL {
                let l = format!("knits_drops_total{{shard=\"{k}\",reason=\"{}\"}}", r.name());
                assert!(p.contains(&l), "{l}");
            }
        }
        let types: Vec<&str> = p.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let unique: std::collections::HashSet<&&str> = types.iter().collect();
        assert_eq!(types.len(), unique.len(), "a family declared twice");
        // Sum per family of the shard series = the total.
        let value = |name: &str| -> u64 {
            p.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name}"))
        };
        assert_eq!(
            value("knits_flows{shard=\"0\"}") + value("knits_flows{shard=\"1\"}"),
            value("knits_flows")
        );
        assert!(
            !plain.contains("shard"),
            "an unsharded switch has no shard series"
        );
    }

    #[test]
    fn server_answers_http_and_unix() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("knits-stats-{}", std::process::id()));
        let sock = dir.join("s.sock");
        let shared = Arc::new(Mutex::new(snap()));
        let srv = Server::start(
            &ServerConfig {
                http: Some("127.0.0.1:0".parse().unwrap()),
                unix: Some(sock.clone()),
            },
            shared,
        )
        .unwrap();
        let addr = srv.http_addr.unwrap();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("knits_flows 3"));
        let t = query(&sock, false).unwrap();
        assert!(t.contains("flows 3/4096"));
        let p = query(&sock, true).unwrap();
        assert!(p.contains("knits_flows 3"));
        drop(srv);
        assert!(!sock.exists());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            Server::start(
                &ServerConfig {
                    http: Some("0.0.0.0:0".parse().unwrap()),
                    unix: None
                },
                Arc::default()
            )
            .is_err()
        );
    }
}
