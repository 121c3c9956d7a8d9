//! End-to-end with a sharded switch (`shards = 2`): two switch threads, each with its own core,
//! every TAP multi-queue, frames steered by the connection's ephemeral endpoint, and the proxies
//! choosing their new legs' source ports by shard. The pipelined hand-off workload of e2e.rs
//! (0..=3 hand-offs per connection, every byte verified) must behave exactly as with one shard.
//! Needs root; prints a visible skip otherwise (and fails when KNITS_REQUIRE_ROOT=1).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knits_core::counters::{DropReason, Generated};
use knits_host::cluster::{Cluster, ClusterConfig, TimeoutsMs};
use knits_host::load::{self, Progress, Request, Spec};
use knits_host::stats::Snapshot;

const MIB: u64 = 1 << 20;

fn up(stem: &str, shards: usize) -> Cluster {
    let cfg = ClusterConfig {
        nodes: 3,
        prefix: Some(knits_host::netns::unique_prefix(stem)),
        timeouts: TimeoutsMs {
            time_wait_ms: Some(500),
            ..Default::default()
        },
        shards,
        ..ClusterConfig::default()
    };
    let mut c = Cluster::up(cfg, Path::new(env!("CARGO_BIN_EXE_knits-host"))).expect("cluster up");
    c.start_switch().expect("switch");
    c.wait_ready(Duration::from_secs(30)).expect("ready");
    c
}

fn run(c: &Cluster, scripts: Vec<Vec<Request>>, pipeline: usize, conc: usize) -> load::Report {
    let spec = Spec {
        target: c.vip(),
        netns: Some(c.client_ns.clone()),
        scripts,
        pipeline,
        concurrency: conc,
        timeout: Duration::from_secs(20),
    };
    load::run(&spec, Arc::new(Progress::default()))
}

fn wait_table_empty(c: &Cluster, limit: Duration) -> Snapshot {
    let t = Instant::now();
    loop {
        let s = c.snapshot();
        if s.flows == 0 && s.sessions == 0 {
            return s;
        }
        assert!(
            t.elapsed() < limit,
            "flow table not empty {} s after the run:\n{}",
            limit.as_secs(),
            s.table()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scripts of e2e.rs's `handoff_scripts`: connection `c` plans `c % 4` hand-offs.
fn handoff_scripts(conns: usize, per: usize) -> Vec<Vec<Request>> {
    const SIZES: [u64; 8] = [0, 1, 100, 1460, 4096, 65536, 200_000, MIB];
    (0..conns)
        .map(|c| {
            let h = c % 4;
            (0..per)
                .map(|r| {
                    let seg = r * (h + 1) / per;
                    let mut size = SIZES[(c * 3 + r) % SIZES.len()];
                    if (c * per + r) % 500 == 7 {
                        size = 16 * MIB;
                    }
                    if seg == 0 {
                        Request::object(&format!("any/c{c}r{r}"), size)
                    } else {
                        Request::relative(seg, 3, &format!("c{c}r{r}"), size)
                    }
                })
                .collect()
        })
        .collect()
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
    let r = run(&c, handoff_scripts(100, 20), 4, 50);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let snap = c.snapshot();
    let f = r.failures();
    assert!(
        f.is_empty(),
        "{} connections failed, first: {:?}\n{}\n{}",
        f.len(),
        f.first(),
        r.table(),
        snap.table()
    );
    assert_eq!(r.requests(), 2000);
    assert_eq!(
        r.handoff_histogram(),
        vec![25, 25, 25, 25],
        "connections by hand-offs seen\n{}",
        r.table()
    );
    let snap = wait_table_empty(&c, Duration::from_secs(10));
    assert_eq!(snap.core.handoffs_completed, 150, "\n{}", snap.table());
    assert_eq!(snap.core.handoffs_rolled_back, 0, "\n{}", snap.table());
    assert_eq!(snap.core.generated_count(Generated::AbortReset), 0);
    assert_eq!(
        snap.ports[0].tx_rst,
        0,
        "the client saw RSTs:\n{}",
        snap.table()
    );
    for reason in [
        DropReason::TcpBadChecksum,
        DropReason::Ipv4BadChecksum,
        DropReason::UnknownFlow,
        DropReason::StaleLeg,
    ] {
        assert_eq!(
            snap.core.drop_count(reason),
            0,
            "{} drops\n{}",
            reason.name(),
            snap.table()
        );
    }
    let shards = c.shard_counts().expect("a sharded switch");
    assert_eq!(shards.len(), 2);
    for (i, s) in shards.iter().enumerate() {
        assert!(
            s.processed > 1000,
            "shard {i} processed {} frames: {shards:?}",
            s.processed
        );
    }
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
    c.stop_switch().unwrap();
}
