//! The Prometheus exposition of a [`Snapshot`], encoded by `prometheus-client` (OpenMetrics text).
//!
//! The families, their order, their sample names and their labels are this module's; the text
//! format is the crate's, through the collector knits-proxy's metrics use too
//! ([`knits_proxy::metrics::encode`]). Each family is declared with its OpenMetrics name: a counter family
//! `knits_drops` has the samples `knits_drops_total{...}` (the names scrapers store, the same as
//! before the crate was used); a gauge family's samples carry its name as it is.

use knits_core::counters::{DropReason, FlowEvent, Generated, LocalKind};
use knits_core::wire::control::ReplyCode;
use knits_proxy::metrics::{self, Family, Labels, one};

use super::{PortStats, ShardSnapshot, Snapshot};

/// The content type of [`Snapshot::prometheus`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Snapshot {
    /// The OpenMetrics text exposition (see [`CONTENT_TYPE`]).
    pub fn prometheus(&self) -> String {
        metrics::encode("knits", self.families())
    }

    fn families(&self) -> Vec<Family> {
        let c = &self.core;
        let ports = self.ports.len().max(1);
        let per_port = |a: &[u64]| -> Vec<(Labels, u64)> {
            (0..ports)
                .map(|i| {
                    (
                        vec![("port", i.to_string())],
                        a.get(i).copied().unwrap_or(0),
                    )
                })
                .collect()
        };
        let per_service = |a: &[u64]| -> Vec<(Labels, u64)> {
            self.services
                .iter()
                .enumerate()
                .map(|(i, sv)| {
                    (
                        vec![
                            ("port", sv.port.to_string()),
                            ("mode", sv.mode.name().to_string()),
                        ],
                        a.get(i).copied().unwrap_or(0),
                    )
                })
                .collect()
        };
        // Per shard (sharded switch only): the same families with a shard label, after the
        // unlabelled totals, which stay as they are.
        let shards: &[ShardSnapshot] = if self.shards.len() > 1 {
            &self.shards
        } else {
            &[]
        };
        let per_shard = |total: Vec<(Labels, u64)>, f: fn(&ShardSnapshot) -> u64| {
            let mut v = total;
            v.extend(
                shards
                    .iter()
                    .enumerate()
                    .map(|(k, sh)| (vec![("shard", k.to_string())], f(sh))),
            );
            v
        };
        let named = |key: &'static str, names: &mut dyn Iterator<Item = (&'static str, u64)>| {
            names
                .map(|(n, v)| (vec![(key, n.to_string())], v))
                .collect::<Vec<_>>()
        };
        let mut drops = named(
            "reason",
            &mut DropReason::ALL
                .iter()
                .map(|r| (r.name(), c.drops[r.index()])),
        );
        for (k, sh) in shards.iter().enumerate() {
            drops.extend(DropReason::ALL.iter().map(|r| {
                (
                    vec![("shard", k.to_string()), ("reason", r.name().to_string())],
                    sh.drops[r.index()],
                )
            }));
        }
        let host = |f: fn(&PortStats) -> u64| -> Vec<(Labels, u64)> {
            self.ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let l = vec![("port", i.to_string()), ("interface", p.name.clone())];
                    (l, f(p))
                })
                .collect()
        };
        let mut faults = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            for (dir, f) in [("in", &p.faults_in), ("out", &p.faults_out)] {
                for (kind, n) in [
                    ("lost", f.dropped),
                    ("duplicated", f.duplicated),
                    ("reordered", f.reordered),
                    ("corrupted", f.corrupted),
                ] {
                    let l = vec![
                        ("port", i.to_string()),
                        ("direction", dir.to_string()),
                        ("fault", kind.to_string()),
                    ];
                    faults.push((l, n));
                }
            }
        }
        let mut v = vec![
            Family::counter(
                "rx_frames",
                "Frames the core received, per port.",
                per_port(&c.rx_frames),
            ),
            Family::counter(
                "tx_frames",
                "Frames the core forwarded, per egress port.",
                per_port(&c.tx_frames),
            ),
            Family::counter("drops", "Frames dropped by the core, by reason.", drops),
            Family::counter(
                "local",
                "Frames handled by the switch itself, by kind.",
                named(
                    "kind",
                    &mut LocalKind::ALL
                        .iter()
                        .map(|r| (r.name(), c.local[r.index()])),
                ),
            ),
            Family::counter(
                "generated",
                "Frames generated by the switch, by kind.",
                named(
                    "kind",
                    &mut Generated::ALL
                        .iter()
                        .map(|r| (r.name(), c.generated[r.index()])),
                ),
            ),
            Family::counter(
                "handoff_replies",
                "Hand-off requests answered, by reply code.",
                named(
                    "code",
                    &mut ReplyCode::ALL
                        .iter()
                        .map(|r| (r.name(), c.handoffs[r.index()])),
                ),
            ),
            Family::counter(
                "handoffs_completed",
                "Hand-offs whose old legs were retired.",
                one(c.handoffs_completed),
            ),
            Family::counter(
                "handoffs_rolled_back",
                "Hand-offs rolled back.",
                one(c.handoffs_rolled_back),
            ),
            Family::counter(
                "sprayed",
                "Connections sprayed, per back-end index.",
                (0..ports.saturating_sub(1).max(1))
                    .map(|i| {
                        let n = c.sprayed.get(i).copied().unwrap_or(0);
                        (vec![("backend", i.to_string())], n)
                    })
                    .collect(),
            ),
            Family::counter(
                "service_sprayed",
                "Connections sprayed, per service on the VIP.",
                per_service(&c.sprayed_by_service),
            ),
            Family::counter(
                "service_handoffs",
                "Hand-offs accepted, per service on the VIP.",
                per_service(&c.handoffs_by_service),
            ),
            Family::counter(
                "tracked_routed",
                "Routed connections tracked.",
                one(c.tracked_routed),
            ),
            Family::counter(
                "flows_expired",
                "Flow entries removed by expiry.",
                one(c.expired),
            ),
            Family::counter(
                "flows_closed",
                "Flow entries removed after TIME-WAIT (or on reopening, recycling, reset).",
                one(c.closed),
            ),
            Family::counter(
                "flow_events",
                "Flow and hand-off life-cycle events (knits_core::counters::FlowEvent).",
                named(
                    "event",
                    &mut FlowEvent::ALL
                        .iter()
                        .map(|e| (e.name(), c.events[e.index()])),
                ),
            ),
            Family::gauge(
                "flows",
                "Flow table entries in use.",
                per_shard(one(self.flows as u64), |sh| sh.flows as u64),
            ),
            Family::gauge(
                "flow_capacity",
                "Flow table capacity.",
                per_shard(one(self.flow_capacity as u64), |sh| sh.flow_capacity as u64),
            ),
            Family::gauge(
                "splice_sessions",
                "Splice sessions in use.",
                per_shard(one(self.sessions as u64), |sh| sh.sessions as u64),
            ),
            Family::gauge(
                "splice_session_capacity",
                "Splice session capacity.",
                per_shard(one(self.session_capacity as u64), |sh| {
                    sh.session_capacity as u64
                }),
            ),
            Family::counter(
                "host_rx_bytes",
                "Bytes read from the port's TAP.",
                host(|p| p.rx_bytes),
            ),
            Family::counter(
                "host_tx_frames",
                "Frames written to the port's TAP.",
                host(|p| p.tx_frames),
            ),
            Family::counter(
                "host_tx_bytes",
                "Bytes written to the port's TAP.",
                host(|p| p.tx_bytes),
            ),
            Family::counter(
                "host_rx_gso_frames",
                "TSO/GSO frames read.",
                host(|p| p.rx_gso),
            ),
            Family::counter(
                "host_rx_errors",
                "Failed or short TAP reads.",
                host(|p| p.rx_errors),
            ),
            Family::counter(
                "host_tx_errors",
                "Failed TAP writes.",
                host(|p| p.tx_errors),
            ),
            Family::counter(
                "host_tx_rst",
                "TCP RST segments written to the port.",
                host(|p| p.tx_rst),
            ),
            Family::counter(
                "host_faults_injected",
                "Faults injected, per port and direction.",
                faults,
            ),
            Family::counter(
                "host_pcap_frames",
                "Frames written to the pcap file.",
                one(self.pcap_frames),
            ),
        ];
        if !shards.is_empty() {
            v.extend([
                Family::counter(
                    "shard_frames_processed",
                    "Frames a shard's core processed (read from its queues or handed over to it).",
                    per_shard(Vec::new(), |sh| sh.processed),
                ),
                Family::counter(
                    "shard_frames_handed_over",
                    "Frames a shard read for another shard and handed over.",
                    per_shard(Vec::new(), |sh| sh.handed_over),
                ),
                Family::counter(
                    "shard_frames_lost",
                    "Frames a shard lost because the owner shard's channel was full.",
                    per_shard(Vec::new(), |sh| sh.lost),
                ),
            ]);
        }
        v
    }
}
