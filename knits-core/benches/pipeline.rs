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
use knits_testkit::frames::{CLIENT_MAC, NODE_MAC, arp_request as arp, tcp};
use knits_testkit::sink::Discard;
use smoltcp::wire::{Ipv4Address, TcpControl};

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

/// Bare ACKs of established NATed flows scattered over tables of 1k, 100k and 1M flows, 32 at a
/// time: `process_burst` (which reads every frame's index and flow slots before processing any)
/// against `process` one frame after another. Per iteration 32 frames; divide by 32.
fn bursts(c: &mut Criterion) {
    let mut g = c.benchmark_group("burst32");
    let cfg = Config::cluster(1, [3; 16]);
    let sw_c = cfg.ports[0].mac;
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let client = |i: u32| {
        (
            Ipv4Address::from_octets([198, 18, 1 + (i >> 16) as u8, (i >> 8) as u8]),
            1024 + (i & 0xff) as u16 * 200 + (i % 200) as u16,
        )
    };
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut sw = switch(n as usize + 16);
        let t = Instant::from_millis(1);
        let m = FrameMeta::FULL;
        sw.process(
            0,
            t,
            &mut arp(CLIENT_MAC, Ipv4Address::new(198, 18, 0, 2), vip.0),
            m,
            &mut Discard,
            &mut NoMeter,
        );
        sw.process(
            1,
            t,
            &mut arp(
                NODE_MAC,
                Ipv4Address::new(198, 19, 1, 2),
                Ipv4Address::new(198, 19, 1, 1),
            ),
            m,
            &mut Discard,
            &mut NoMeter,
        );
        for i in 0..n {
            let mut f = tcp(sw_c, client(i), vip, TcpControl::Syn, 1000, None, &[]);
            sw.process(0, t, &mut f, m, &mut Discard, &mut NoMeter);
        }
        assert_eq!(sw.flow_count(), n as usize);
        // 4,096 ACKs of flows drawn over the whole table.
        let acks: Vec<Vec<u8>> = (0..4096u32)
            .map(|j| {
                let i = j.wrapping_mul(2_654_435_761) % n;
                tcp(
                    sw_c,
                    client(i),
                    vip,
                    TcpControl::None,
                    1001,
                    Some(5001),
                    &[],
                )
            })
            .collect();
        let mut bufs: Vec<Vec<u8>> = acks[..32].to_vec();
        let metas = [m; 32];
        let mut verdicts = [Verdict::Forward(0); 32];
        let mut at = 0usize;
        g.bench_function(format!("process_burst/{n}"), |b| {
            b.iter(|| {
                at = (at + 32) % acks.len();
                for (b, a) in bufs.iter_mut().zip(&acks[at..at + 32]) {
                    b.copy_from_slice(a);
                }
                let mut refs: [&mut [u8]; 32] = {
                    let mut it = bufs.iter_mut();
                    core::array::from_fn(|_| &mut it.next().unwrap()[..])
                };
                black_box(sw.process_burst(
                    0,
                    t,
                    &mut refs,
                    &metas,
                    &mut verdicts,
                    &mut Discard,
                    &mut NoMeter,
                ))
            })
        });
        g.bench_function(format!("process_one_by_one/{n}"), |b| {
            b.iter(|| {
                at = (at + 32) % acks.len();
                for (b, a) in bufs.iter_mut().zip(&acks[at..at + 32]) {
                    b.copy_from_slice(a);
                }
                for b in bufs.iter_mut() {
                    black_box(sw.process(0, t, b, m, &mut Discard, &mut NoMeter));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, established, lookups, bursts);
criterion_main!(benches);
