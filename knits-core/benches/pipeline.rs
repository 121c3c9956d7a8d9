//! Per-packet cost of the switch pipeline and of flow-table lookups.
//!
//! `cargo bench -p knits-core --bench pipeline`. Targets (issue 2): an established NATed flow
//! in <= 50 ns per packet on the project machine; lookup cost at 1M flows <= 1.5x the cost at
//! 1k. Figures and the machine go in docs/performance.md.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Sink, Storage, Switch, Verdict};
use knits_core::table::{FlowKey, FlowKind, FlowSlot, FlowTable, IndexSlot, index_len_for};
use knits_core::time::Instant;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};

struct Discard;
impl Sink for Discard {
    fn emit(&mut self, _: u8, _: &[u8]) -> bool {
        true
    }
}

const CLIENT_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const NODE_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 2]);

fn arp(src_mac: EthernetAddress, src: Ipv4Address, target: Ipv4Address) -> Vec<u8> {
    let mut b = vec![0u8; 42];
    EthernetRepr {
        src_addr: src_mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(&mut b[14..]));
    b
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    payload: &[u8],
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.1,
        dst_port: dst.1,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 64000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut b = vec![0u8; 14 + 20 + repr.buffer_len()];
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 9, 9]),
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[14..]), &caps);
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut b[34..]),
        &src.0.into(),
        &dst.0.into(),
        &caps,
    );
    b[6..12].copy_from_slice(&if src.0.octets()[1] == 18 {
        CLIENT_MAC.0
    } else {
        NODE_MAC.0
    });
    b
}

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
        // Visit keys in a scattered order so the cost includes cache misses, as real traffic would.
        let mut i = 0u32;
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let mut p = 0;
                black_box(t.lookup(&key(i % n as u32), &mut p))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, established, lookups);
criterion_main!(benches);
