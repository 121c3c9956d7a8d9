//! End-to-end: the knits-core switch on TAPs, a namespace cluster with real Linux TCP on the
//! client and the nodes, the knits-proxy and the deterministic origin on every node. Every body
//! byte is verified against knits_proxy::content. Needs root; prints a visible skip otherwise
//! (and fails when KNITS_REQUIRE_ROOT=1). Each test has its own prefix, so they run in parallel;
//! the cluster's Drop removes everything, also when an assertion fails.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_handoffs_clean, assert_no_drops, assert_no_failures, config, handoff_scripts, run, up,
};
use knits_core::counters::DropReason;
use knits_core::wire::control::ReplyCode;
use knits_host::cluster::Cluster;
use knits_host::faults::FaultConfig;
use knits_host::load::Request;
use knits_host::stats::Snapshot;

/// The counters once the switch has published after the run (every 100 ms).
fn settled(c: &Cluster) -> Snapshot {
    std::thread::sleep(Duration::from_millis(300));
    c.snapshot()
}

/// Waits until the switch's table is empty (after the test TIME-WAIT); returns the snapshot.
fn wait_table_empty(c: &Cluster, limit: Duration) -> Snapshot {
    let t = Instant::now();
    loop {
        let s = c.snapshot();
        if s.flows == 0 && s.sessions == 0 {
            return s;
        }
        if t.elapsed() > limit {
            panic!(
                "flow table not empty {} s after the run:\n{}",
                limit.as_secs(),
                s.table()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn spray_only_1000_short_connections() {
    if !common::root_or_skip("spray_only_1000_short_connections") {
        return;
    }
    let mut c = up(config("tsp"));
    let scripts: Vec<Vec<Request>> = (0..1000)
        .map(|i| {
            vec![Request::object(
                &format!("any/s{i}"),
                [0, 10, 1000, 20_000][i % 4],
            )]
        })
        .collect();
    let r = run(&c, scripts, 1, 32);
    let snap = settled(&c);
    assert_no_failures(&r, &snap);
    assert_eq!(r.requests(), 1000);
    let mut served = std::collections::BTreeMap::new();
    for conn in &r.conns {
        *served
            .entry(conn.requests[0].node.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    // Round robin: every node gets a third (the readiness probe's connections shift it a bit).
    assert_eq!(served.len(), 3, "{served:?}");
    for (node, n) in &served {
        assert!(
            (320..=347).contains(n),
            "node {node} served {n} of 1000: {served:?}"
        );
    }
    let snap = wait_table_empty(&c, Duration::from_secs(10));
    assert_eq!(snap.core.handoffs.iter().sum::<u64>(), 0);
    assert_eq!(
        snap.ports[0].tx_rst,
        0,
        "the client saw RSTs:\n{}",
        snap.table()
    );
    assert!(snap.core.sprayed[..3].iter().sum::<u64>() >= 1000);
    c.stop_switch().unwrap();
}

/// 2,000 pipelined requests on 100 persistent connections with 0..=3 hand-offs each, sizes
/// 0 B .. 16 MiB: every byte verified, every planned hand-off accepted, no RST to the client,
/// the table empty after TIME-WAIT.
#[test]
fn handoffs_pipelined_0_to_16_mib() {
    if !common::root_or_skip("handoffs_pipelined_0_to_16_mib") {
        return;
    }
    let c = up(config("tho"));
    let r = run(&c, handoff_scripts(100, 20, |c| c % 4, true), 4, 50);
    let snap = settled(&c);
    assert_no_failures(&r, &snap);
    assert_eq!(r.requests(), 2000);
    let hist = r.handoff_histogram();
    assert_eq!(
        hist,
        vec![25, 25, 25, 25],
        "connections by hand-offs seen\n{}",
        r.table()
    );
    assert!(
        snap.ports.iter().skip(1).all(|p| p.rx_gso > 0),
        "offloads on but no TSO frame:\n{}",
        snap.table()
    );
    // Retransmitted requests are answered (and counted) again: at least one per hand-off.
    let accepted = snap.core.handoffs[ReplyCode::Accepted.index()];
    assert!(accepted >= 150, "\n{}", snap.table());
    let snap = assert_handoffs_clean(&c, 150);
    assert_no_drops(
        &snap,
        &[
            DropReason::TcpBadChecksum,
            DropReason::Ipv4BadChecksum,
            DropReason::UnknownFlow,
            DropReason::StaleLeg,
        ],
    );
}

/// The same 2,000-request workload with 1% loss, 5% reordering and 1% duplication on every port
/// (each direction): TCP and the hand-off protocol recover, every byte is right.
#[test]
fn handoffs_under_loss_reordering_duplication() {
    if !common::root_or_skip("handoffs_under_loss_reordering_duplication") {
        return;
    }
    let mut cfg = config("tft");
    cfg.faults = FaultConfig {
        loss: 0.01,
        reorder: 0.05,
        duplicate: 0.01,
        seed: 2024,
        ..FaultConfig::default()
    };
    let c = up(cfg);
    let r = run(&c, handoff_scripts(100, 20, |c| c % 4, true), 4, 50);
    let snap = settled(&c);
    assert_no_failures(&r, &snap);
    assert_eq!(r.requests(), 2000);
    let faults: u64 = snap
        .ports
        .iter()
        .map(|p| p.faults_in.dropped + p.faults_out.dropped)
        .sum();
    assert!(
        faults > 100,
        "too few frames lost to test anything:\n{}",
        snap.table()
    );
    eprintln!("{}\n{}", r.table(), snap.table());
}

/// Offloads off: MTU-sized frames with full checksums, 1, 2 and 3 hand-offs per connection,
/// captured to pcapng; the capture shows no RST to the client and every port's traffic.
#[test]
fn handoffs_offloads_off_with_capture() {
    if !common::root_or_skip("handoffs_offloads_off_with_capture") {
        return;
    }
    let mut cfg = config("tof");
    cfg.offloads = false;
    let dir = std::env::temp_dir().join(format!("knits-{}", cfg.prefix.as_deref().unwrap_or("x")));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("run.pcapng");
    cfg.pcap = Some(pcap.clone());
    let mut c = up(cfg);
    let r = run(&c, handoff_scripts(30, 12, |c| 1 + c % 3, false), 4, 30);
    let snap = settled(&c);
    assert_no_failures(&r, &snap);
    assert_eq!(r.handoff_histogram(), vec![0, 10, 10, 10]);
    let snap = wait_table_empty(&c, Duration::from_secs(10));
    c.stop_switch().unwrap();
    assert!(snap.ports.iter().all(|p| p.rx_gso == 0));
    assert!(
        snap.ports
            .iter()
            .all(|p| p.rx_bytes / p.rx_frames.max(1) <= 1514)
    );
    let cap = knits_host::pcap::read(std::fs::File::open(&pcap).unwrap()).unwrap();
    assert_eq!(cap.interfaces.len(), 4);
    let to_client_rst = cap
        .records
        .iter()
        .filter(|r| r.interface == 0 && r.dir == Some(knits_host::pcap::Direction::Out))
        .filter(|r| knits_host::runtime::is_tcp_rst(&r.data))
        .count();
    if to_client_rst != 0 {
        // Say which connections were reset, with every frame of theirs, before failing.
        let rsts: Vec<_> = cap
            .records
            .iter()
            .filter(|r| r.interface == 0 && r.dir == Some(knits_host::pcap::Direction::Out))
            .filter(|r| knits_host::runtime::is_tcp_rst(&r.data))
            .collect();
        for r in &rsts {
            eprintln!("RST to the client: {}", describe(&r.data));
        }
        let keep = std::env::temp_dir().join("knits-tof-failed.pcapng");
        let _ = std::fs::copy(&pcap, &keep);
        eprintln!("capture kept at {}", keep.display());
    }
    assert_eq!(to_client_rst, 0);
    for port in 0..4 {
        assert!(
            cap.records.iter().any(|r| r.interface == port),
            "no frame on port {port}"
        );
    }
    assert!(cap.records.iter().all(|r| r.data.len() <= 1514));
    let _ = std::fs::remove_dir_all(&dir);
}

/// "src:port > dst:port flags seq ack len" of an Ethernet/IPv4/TCP frame.
fn describe(f: &[u8]) -> String {
    if f.len() < 54 {
        return format!("{} bytes", f.len());
    }
    let ip = &f[14..];
    let ihl = ((ip[0] & 15) as usize) * 4;
    let t = &ip[ihl..];
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    format!(
        "{}.{}.{}.{}:{} > {}.{}.{}.{}:{} flags {:#04x} seq {} ack {}",
        ip[12],
        ip[13],
        ip[14],
        ip[15],
        be16(&t[0..]),
        ip[16],
        ip[17],
        ip[18],
        ip[19],
        be16(&t[2..]),
        t[13],
        be32(&t[4..]),
        be32(&t[8..])
    )
}
