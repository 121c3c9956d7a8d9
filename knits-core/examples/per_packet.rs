//! Runs an established NATed flow's bare ACK through the pipeline N times (default 100,000),
//! for instruction counting, which unlike time does not depend on what else the machine runs:
//!
//!     cargo build --release -p knits-core --example per_packet
//!     valgrind --tool=callgrind target/release/examples/per_packet 100000
//!
//! and divide the instructions of `Switch::process` by N (docs/performance.md).

#[path = "../benches/common/frames.rs"]
mod frames;

use frames::{CLIENT_MAC, Discard, NODE_MAC, arp, tcp};
use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use smoltcp::wire::{Ipv4Address, TcpControl};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let cfg = Config::cluster(1, [3; 16]);
    let (sw_c, sw_n) = (cfg.ports[0].mac, cfg.ports[1].mac);
    let storage = Storage {
        flows: vec![FlowSlot::default(); 1024].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(1024)].into(),
        sessions: vec![SessionSlot::default(); 4].into(),
    };
    let mut sw = Switch::new(cfg, storage).unwrap();
    let client = (Ipv4Address::new(198, 18, 0, 2), 40000);
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let node = (Ipv4Address::new(198, 19, 1, 2), 80);
    let t = Instant::from_millis(1);
    let m = FrameMeta::FULL;
    sw.process(
        0,
        t,
        &mut arp(CLIENT_MAC, client.0, vip.0),
        m,
        &mut Discard,
        &mut NoMeter,
    );
    sw.process(
        1,
        t,
        &mut arp(NODE_MAC, node.0, Ipv4Address::new(198, 19, 1, 1)),
        m,
        &mut Discard,
        &mut NoMeter,
    );
    let mut f = tcp(sw_c, client, vip, TcpControl::Syn, 1000, None, &[]);
    assert_eq!(
        sw.process(0, t, &mut f, m, &mut Discard, &mut NoMeter),
        Verdict::Forward(1)
    );
    let mut f = tcp(sw_n, node, client, TcpControl::Syn, 5000, Some(1001), &[]);
    assert_eq!(
        sw.process(1, t, &mut f, m, &mut Discard, &mut NoMeter),
        Verdict::Forward(0)
    );
    let ack = tcp(sw_c, client, vip, TcpControl::None, 1001, Some(5001), &[]);
    let mut buf = ack.clone();
    for _ in 0..n {
        buf.copy_from_slice(&ack);
        let v = sw.process(
            0,
            t,
            std::hint::black_box(&mut buf[..]),
            m,
            &mut Discard,
            &mut NoMeter,
        );
        debug_assert_eq!(v, Verdict::Forward(1));
    }
    assert_eq!(sw.counters().total_drops(), 0, "{:?}", sw.counters().drops);
    println!("{n} packets");
}
