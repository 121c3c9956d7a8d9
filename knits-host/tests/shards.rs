//! End-to-end with a sharded switch (`shards = 2`): two switch threads, each with its own core,
//! every TAP multi-queue, frames steered by the connection's ephemeral endpoint, and the proxies
//! choosing their new legs' source ports by shard. The pipelined hand-off workload of e2e.rs
//! (0..=3 hand-offs per connection, every byte verified) must behave exactly as with one shard.
//! Needs root; prints a visible skip otherwise (and fails when KNITS_REQUIRE_ROOT=1).

mod common;

use std::time::{Duration, Instant};

use knits_core::counters::{DropReason, FlowEvent};
use knits_host::cluster::{Cluster, ClusterConfig};
use knits_host::stats::Snapshot;

use common::{assert_handoffs_clean, assert_no_drops, assert_no_failures, handoff_scripts, run};

const MIB: u64 = 1 << 20;

fn up(stem: &str, shards: usize) -> Cluster {
    common::up(ClusterConfig {
        shards,
        ..common::config(stem)
    })
}

/// 2,000 pipelined requests on 100 persistent connections with 0..=3 hand-offs each through two
/// shards: every byte verified, every planned hand-off done, no RST to the client, the table
/// empty after TIME-WAIT, and both shards did work.
#[test]
fn two_shards_pipelined_handoffs() {
    if !common::root_or_skip("two_shards_pipelined_handoffs") {
        return;
    }
    let mut c = up("tsh", 2);
    let t = Instant::now();
    let r = run(&c, handoff_scripts(100, 20, |c| c % 4, true), 4, 50);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let snap = c.snapshot();
    assert_no_failures(&r, &snap);
    assert_eq!(r.requests(), 2000);
    assert_eq!(
        r.handoff_histogram(),
        vec![25, 25, 25, 25],
        "connections by hand-offs seen\n{}",
        r.table()
    );
    let snap = assert_handoffs_clean(&c, 150);
    // A new leg that the proxy resets (a hand-off refused `not_established` because, across
    // shards, the control request overtook the leg's ACK) leaves the table at once
    // (`routed_reset`, docs/architecture.md); a segment the target had in flight on it is then
    // dropped as `unknown_flow`, by design. Any other unknown flow is a fault.
    let routed_resets = snap.core.events[FlowEvent::RoutedReset.index()];
    assert!(
        snap.core.drop_count(DropReason::UnknownFlow) <= 2 * routed_resets,
        "unknown_flow drops beyond the reset legs' late segments\n{}",
        snap.table()
    );
    assert_no_drops(
        &snap,
        &[
            DropReason::TcpBadChecksum,
            DropReason::Ipv4BadChecksum,
            DropReason::StaleLeg,
        ],
    );
    let shards = c.shard_counts().expect("a sharded switch");
    assert_eq!(shards.len(), 2);
    for (i, s) in shards.iter().enumerate() {
        assert!(
            s.processed > 1000,
            "shard {i} processed {} frames: {shards:?}",
            s.processed
        );
    }
    per_shard_stats_while_running(&c);
    eprintln!(
        "2 shards: {} requests, {:.1} MiB in {:.2} s; shards {shards:?}; hand-off requests \
         answered {} (refused {}: retried by the proxies)",
        r.requests(),
        r.conns
            .iter()
            .flat_map(|c| &c.requests)
            .map(|o| o.bytes)
            .sum::<u64>() as f64
            / MIB as f64,
        took.as_secs_f64(),
        snap.core.handoffs.iter().sum::<u64>(),
        snap.handoffs_refused()
    );
    let last = c.stop_switch().unwrap();
    per_shard_stats_add_up(&last);
}

/// `knits-host stats` (table and `--prom`) of the running switch, as an operator runs it: a
/// line per shard in the table; per shard, the flow gauges and drops with a `shard` label next
/// to the unlabelled totals, and the shards' frame counters.
fn per_shard_stats_while_running(c: &Cluster) {
    let stats = |prom: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_knits-host"));
        cmd.args(["stats", "--prefix", c.prefix()]);
        if prom {
            cmd.arg("--prom");
        }
        let out = cmd.output().expect("knits-host stats");
        assert!(out.status.success(), "knits-host stats: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = stats(false);
    assert!(table.contains(", 2 shards"), "{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("shard"))
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 7, "{table}");
        assert_eq!(row[0], k.to_string(), "{table}");
        let processed: u64 = row[1].parse().expect("processed");
        assert!(processed > 1000, "shard {k}:\n{table}");
        assert!(
            row[4].ends_with("/8192"),
            "shard {k}'s half of the table:\n{table}"
        );
    }
    let prom = stats(true);
    let value = |series: &str| -> u64 {
        prom.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{prom}"))
    };
    for k in 0..2 {
        assert!(
            value(&format!(
                "knits_shard_frames_processed_total{{shard=\"{k}\"}}"
            )) > 1000
        );
        value(&format!(
            "knits_shard_frames_handed_over_total{{shard=\"{k}\"}}"
        ));
        assert_eq!(
            value(&format!("knits_shard_frames_lost_total{{shard=\"{k}\"}}")),
            0
        );
        assert_eq!(
            value(&format!("knits_flow_capacity{{shard=\"{k}\"}}")),
            8192
        );
        value(&format!("knits_flows{{shard=\"{k}\"}}"));
        value(&format!(
            "knits_drops_total{{shard=\"{k}\",reason=\"tcp_bad_checksum\"}}"
        ));
    }
    assert_eq!(
        value("knits_flow_capacity"),
        16384,
        "the total is unlabelled"
    );
    value("knits_flows");
}

/// The last snapshot of a stopped sharded switch: its per-shard figures add up to its totals.
fn per_shard_stats_add_up(s: &Snapshot) {
    assert_eq!(s.shards.len(), 2, "\n{}", s.table());
    let sum = |f: fn(&knits_host::stats::ShardSnapshot) -> u64| s.shards.iter().map(f).sum::<u64>();
    assert_eq!(
        sum(|k| k.processed),
        s.core.rx_frames.iter().sum::<u64>(),
        "every frame a core counted was processed by exactly one shard\n{}",
        s.table()
    );
    assert!(
        sum(|k| k.handed_over) > 0,
        "nothing was handed over\n{}",
        s.table()
    );
    assert_eq!(sum(|k| k.lost), 0, "\n{}", s.table());
    assert_eq!(sum(|k| k.total_drops()), s.core.total_drops());
    assert_eq!(sum(|k| k.flows as u64), s.flows as u64);
    assert_eq!(sum(|k| k.flow_capacity as u64), s.flow_capacity as u64);
    assert_eq!(sum(|k| k.sessions as u64), s.sessions as u64);
}
