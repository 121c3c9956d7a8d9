//! Shared by the end-to-end tests: the root check and its visible skip, the cluster they start,
//! a load run, the pipelined hand-off workload, and the wait for an empty flow table.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use knits_core::counters::{DropReason, Generated};
use knits_host::cluster::{Cluster, ClusterConfig, TimeoutsMs};
use knits_host::load::{self, Progress, Request, Spec};
use knits_host::stats::Snapshot;

const MIB: u64 = 1 << 20;

/// True when the test may run. Without CAP_NET_ADMIN it prints a visible skip and returns
/// false, or panics when KNITS_REQUIRE_ROOT=1 (as CI sets it).
pub fn root_or_skip(test: &str) -> bool {
    if knits_host::netns::have_net_admin() {
        return true;
    }
    if std::env::var("KNITS_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: needs root (CAP_NET_ADMIN) and KNITS_REQUIRE_ROOT=1 is set");
    }
    // Straight to fd 2: the test harness captures print!/eprint! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: needs root (CAP_NET_ADMIN): {test}"
    );
    false
}

/// Waits until the switch's table is empty (after the test TIME-WAIT); returns the snapshot.
pub fn wait_table_empty(
    c: &knits_host::cluster::Cluster,
    limit: std::time::Duration,
) -> knits_host::stats::Snapshot {
    let t = std::time::Instant::now();
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
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Three nodes, a 500 ms TIME-WAIT, namespaces named after `stem`.
pub fn config(stem: &str) -> ClusterConfig {
    ClusterConfig {
        nodes: 3,
        prefix: Some(knits_host::netns::unique_prefix(stem)),
        timeouts: TimeoutsMs {
            time_wait_ms: Some(500),
            ..Default::default()
        },
        ..ClusterConfig::default()
    }
}

/// The cluster up, its switch started and every proxy answering.
/// `KNITS_E2E_PCAP_DIR=dir` captures every test's frames there (for post-mortems).
pub fn up(mut cfg: ClusterConfig) -> Cluster {
    if let (Ok(dir), None) = (std::env::var("KNITS_E2E_PCAP_DIR"), &cfg.pcap) {
        cfg.pcap = Some(
            Path::new(&dir).join(format!("{}.pcapng", cfg.prefix.as_deref().unwrap_or("run"))),
        );
    }
    let mut c = Cluster::up(cfg, Path::new(env!("CARGO_BIN_EXE_knits-host"))).expect("cluster up");
    c.start_switch().expect("switch");
    c.wait_ready(Duration::from_secs(30)).expect("ready");
    c
}

/// Runs `scripts` from the client namespace to the VIP (20 s time-out per request).
pub fn run(
    c: &Cluster,
    scripts: Vec<Vec<Request>>,
    pipeline: usize,
    concurrency: usize,
) -> load::Report {
    let spec = Spec {
        target: c.vip(),
        netns: Some(c.client_ns.clone()),
        scripts,
        pipeline,
        concurrency,
        timeout: Duration::from_secs(20),
    };
    load::run(&spec, Arc::new(Progress::default()))
}

/// Connection `c` of `conns` plans `hops(c)` hand-offs over `per` pipelined requests; sizes
/// from 0 B up, with a few 16 MiB responses when `big`.
pub fn handoff_scripts(
    conns: usize,
    per: usize,
    hops: impl Fn(usize) -> usize,
    big: bool,
) -> Vec<Vec<Request>> {
    const SIZES: [u64; 8] = [0, 1, 100, 1460, 4096, 65536, 200_000, MIB];
    (0..conns)
        .map(|c| {
            let h = hops(c);
            (0..per)
                .map(|r| {
                    let seg = r * (h + 1) / per;
                    let mut size = SIZES[(c * 3 + r) % SIZES.len()];
                    if big && (c * per + r) % 500 == 7 {
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

/// After a run on a network without faults in which `handoffs` hand-offs were planned: the table
/// empties within 10 s, every hand-off completed and none was rolled back or aborted, and the
/// client saw no RST. Returns the last snapshot.
pub fn assert_handoffs_clean(c: &Cluster, handoffs: u64) -> Snapshot {
    let snap = wait_table_empty(c, Duration::from_secs(10));
    assert_eq!(snap.core.handoffs_completed, handoffs, "\n{}", snap.table());
    assert_eq!(snap.core.handoffs_rolled_back, 0, "\n{}", snap.table());
    assert_eq!(snap.core.generated_count(Generated::AbortReset), 0);
    assert_eq!(
        snap.ports[0].tx_rst,
        0,
        "the client saw RSTs:\n{}",
        snap.table()
    );
    snap
}

/// Every connection of the run succeeded (else the load report and the switch's counters).
pub fn assert_no_failures(r: &load::Report, snap: &Snapshot) {
    let f = r.failures();
    assert!(
        f.is_empty(),
        "{} connections failed, first: {:?}\n{}\n{}",
        f.len(),
        f.first(),
        r.table(),
        snap.table()
    );
}

/// No frame was dropped for any of `reasons`.
pub fn assert_no_drops(snap: &Snapshot, reasons: &[DropReason]) {
    for &reason in reasons {
        assert_eq!(
            snap.core.drop_count(reason),
            0,
            "{} drops\n{}",
            reason.name(),
            snap.table()
        );
    }
}
