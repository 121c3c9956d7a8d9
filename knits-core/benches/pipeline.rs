//! Per-packet cost of the switch pipeline and of flow-table lookups.
//!
//! `cargo bench -p knits-core --bench pipeline`. Targets (issue 2): an established NATed flow
//! in <= 50 ns per packet on the project machine; lookup cost at 1M flows <= 1.5x the cost at
//! 1k. Figures and the machine go in docs/performance.md.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowKey, FlowKind, FlowSlot, FlowTable, IndexSlot, index_len_for};
use knits_core::time::Instant;
use smoltcp::wire::{Ipv4Address, TcpControl};

#[path = "common/frames.rs"]
mod frames;
use frames::{CLIENT_MAC, Discard, NODE_MAC, arp, tcp};

fn switch(flows: usize) -> Switch<'static> {
    let storage = Storage {
        flows: vec![FlowSlot::default(); flows].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![SessionSlot::default(); 16].into(),
    };
    Switch::new(Config::cluster(1, [3; 16]), storage).unwrap()
}

fn established(c: &mut Criterion) {
    let cfg = Config::cluster(1, [3; 16]);
    let sw_client_mac = cfg.ports[0].mac;
    let sw_node_mac = cfg.ports[1].mac;
    let client = (Ipv4Address::new(198, 18, 0, 2), 40000);
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let node = (Ipv4Address::new(198, 19, 1, 2), 80);
    let mut sw = switch(1024);
    let t = Instant::from_millis(1);
    let mut sink = Discard;
    sw.process(
        0,
        t,
        &mut arp(CLIENT_MAC, client.0, vip.0),
        FrameMeta::FULL,
        &mut sink,
        &mut NoMeter,
    );
    sw.process(
        1,
        t,
        &mut arp(NODE_MAC, node.0, Ipv4Address::new(198, 19, 1, 1)),
        FrameMeta::FULL,
        &mut sink,
        &mut NoMeter,
    );
    let mut f = tcp(sw_client_mac, client, vip, TcpControl::Syn, 1000, None, &[]);
    assert!(matches!(
        sw.process(0, t, &mut f, FrameMeta::FULL, &mut sink, &mut NoMeter),
        Verdict::Forward(1)
    ));
    let mut f = tcp(
        sw_node_mac,
        node,
        client,
        TcpControl::Syn,
        5000,
        Some(1001),
        &[],
    );
    assert!(matches!(
        sw.process(1, t, &mut f, FrameMeta::FULL, &mut sink, &mut NoMeter),
        Verdict::Forward(0)
    ));
    let mut f = tcp(
        sw_client_mac,
        client,
        vip,
        TcpControl::None,
        1001,
        Some(5001),
        &[],
    );
    assert!(matches!(
        sw.process(0, t, &mut f, FrameMeta::FULL, &mut sink, &mut NoMeter),
        Verdict::Forward(1)
    ));
    let data = tcp(
        sw_client_mac,
        client,
        vip,
        TcpControl::Psh,
        1001,
        Some(5001),
        &[0x55; 64],
    );
    let ack = tcp(
        sw_client_mac,
        client,
        vip,
        TcpControl::None,
        1001,
        Some(5001),
        &[],
    );
    let mut g = c.benchmark_group("established_nat");
    for (name, tmpl) in [("ack", &ack), ("data64", &data)] {
        let mut buf = tmpl.clone();
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.copy_from_slice(tmpl);
                let v = sw.process(
                    0,
                    t,
                    black_box(&mut buf[..]),
                    FrameMeta::FULL,
                    &mut sink,
                    &mut NoMeter,
                );
                debug_assert!(matches!(v, Verdict::Forward(1)));
                v
            })
        });
    }
    g.finish();

    // New connections: each iteration sprays a fresh SYN; the table is emptied by expiry (SYN
    // time-out) each time the prebuilt frames run out.
    let mut sw = switch(65_536);
    sw.process(
        0,
        t,
        &mut arp(CLIENT_MAC, client.0, vip.0),
        FrameMeta::FULL,
        &mut sink,
        &mut NoMeter,
    );
    sw.process(
        1,
        t,
        &mut arp(NODE_MAC, node.0, Ipv4Address::new(198, 19, 1, 1)),
        FrameMeta::FULL,
        &mut sink,
        &mut NoMeter,
    );
    let syns: Vec<Vec<u8>> = (1..=60_000u16)
        .map(|p| {
            tcp(
                sw_client_mac,
                (client.0, p),
                vip,
                TcpControl::Syn,
                7,
                None,
                &[],
            )
        })
        .collect();
    let mut buf = syns[0].clone();
    let mut i = 0usize;
    let mut epoch = 1i64;
    c.bench_function("syn_spray", |b| {
        b.iter(|| {
            if i == syns.len() {
                i = 0;
                epoch += 1;
                sw.poll(Instant::from_secs(epoch * 1000), 65_536, &mut Discard);
            }
            buf.copy_from_slice(&syns[i]);
            i += 1;
            sw.process(
                0,
                Instant::from_secs(epoch * 1000),
                &mut buf[..],
                FrameMeta::FULL,
                &mut Discard,
                &mut NoMeter,
            )
        })
    });
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    for n in [1_000usize, 100_000, 1_000_000] {
        let mut t = FlowTable::new(
            vec![FlowSlot::default(); n].into(),
            vec![IndexSlot::default(); index_len_for(n)].into(),
            [1; 16],
        )
        .unwrap();
        let key = |i: u32| FlowKey {
            src: (0xc612_0000u32 + (i >> 16)).to_be_bytes(),
            dst: [198, 18, 0, 10],
            sport: i as u16,
            dport: 80,
        };
        for i in 0..n as u32 {
            t.insert(FlowKind::Nat, key(i), key(i).reversed(), 0)
                .unwrap();
        }
        // Keys visited in a scattered order over the whole table: every lookup at 1M flows
        // misses the caches (the worst case, no locality at all).
        let mut i = 0u32;
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let mut p = 0;
                black_box(t.lookup(&key(i % n as u32), &mut p))
            })
        });
        // 1,000 active flows spread over a table of n: what the table's size costs a lookup when
        // the traffic has the locality real traffic has (few connections active at a time).
        let active: Vec<FlowKey> = (0..1000u32)
            .map(|j| key((j.wrapping_mul(2_654_435_761)) % n as u32))
            .collect();
        let mut j = 0usize;
        g.bench_function(format!("{n}_active1k"), |b| {
            b.iter(|| {
                j = (j + 7) % active.len();
                let mut p = 0;
                black_box(t.lookup(&active[j], &mut p))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, established, lookups);
criterion_main!(benches);
