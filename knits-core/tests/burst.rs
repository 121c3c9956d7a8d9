//! `Switch::process_burst` gives exactly what `Switch::process` gives frame by frame: the same
//! verdicts, the same rewritten bytes, the same generated frames and the same counters, for
//! random sequences of frames (handshakes, data, FINs, resets, ARP, malformed and truncated
//! frames, both directions) cut into random bursts.

use knits_core::config::{Config, PortId};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{BURST, FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use knits_testkit::frames::{CLIENT_MAC, NODE_MAC, arp_request as arp, tcp};
use knits_testkit::sink::VecSink;
use proptest::prelude::*;
use smoltcp::wire::{Ipv4Address, TcpControl};

fn switch() -> Switch<'static> {
    let cfg = Config::cluster(2, [5; 16]);
    Switch::new(
        cfg,
        Storage {
            flows: vec![FlowSlot::default(); 64].into(),
            index: vec![IndexSlot::default(); Storage::index_len_for(64)].into(),
            sessions: vec![SessionSlot::default(); 4].into(),
        },
    )
    .unwrap()
}

/// One frame of the vocabulary: (port it arrives on, bytes).
fn frame(op: u8, flow: u8, seq: u32) -> (PortId, Vec<u8>) {
    let cfg = Config::cluster(2, [5; 16]);
    let (sw_c, sw_n) = (cfg.ports[0].mac, cfg.ports[1].mac);
    let client = (
        Ipv4Address::new(198, 18, 0, 2 + flow % 4),
        40000 + flow as u16,
    );
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let node = (Ipv4Address::new(198, 19, 1 + flow % 2, 2), 80);
    let ack = Some(5001 + seq % 3000);
    match op % 9 {
        0 => (0, tcp(sw_c, client, vip, TcpControl::Syn, 1000, None, &[])),
        1 => (
            1 + flow % 2,
            tcp(sw_n, node, client, TcpControl::Syn, 5000, Some(1001), &[]),
        ),
        2 => (0, tcp(sw_c, client, vip, TcpControl::None, 1001, ack, &[])),
        3 => (
            0,
            tcp(
                sw_c,
                client,
                vip,
                TcpControl::Psh,
                1001 + seq % 500,
                ack,
                b"GET /",
            ),
        ),
        4 => (
            1 + flow % 2,
            tcp(
                sw_n,
                node,
                client,
                TcpControl::Psh,
                5001,
                Some(1006),
                &[7; 300],
            ),
        ),
        5 => (0, tcp(sw_c, client, vip, TcpControl::Fin, 1006, ack, &[])),
        6 => (0, tcp(sw_c, client, vip, TcpControl::Rst, 1006, None, &[])),
        7 => (0, arp(CLIENT_MAC, client.0, vip.0)),
        _ => {
            let mut f = tcp(sw_c, client, vip, TcpControl::None, 1001, ack, &[]);
            f.truncate(14 + (seq as usize % 40));
            (0, f)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn bursts_match_one_by_one(
        ops in prop::collection::vec((any::<u8>(), 0u8..6, any::<u32>()), 1..120),
        cuts in prop::collection::vec(1usize..=BURST, 1..40),
    ) {
        let (mut one, mut many) = (switch(), switch());
        let (mut s1, mut s2) = (VecSink::default(), VecSink::default());
        let t = Instant::from_millis(5);
        // Neighbors first, so that frames are forwarded rather than held for ARP.
        for (port, mac, ip, gw) in [
            (0u8, CLIENT_MAC, Ipv4Address::new(198, 18, 0, 2), Ipv4Address::new(198, 18, 0, 10)),
            (1, NODE_MAC, Ipv4Address::new(198, 19, 1, 2), Ipv4Address::new(198, 19, 1, 1)),
            (2, NODE_MAC, Ipv4Address::new(198, 19, 2, 2), Ipv4Address::new(198, 19, 2, 1)),
        ] {
            for (sw, sink) in [(&mut one, &mut s1), (&mut many, &mut s2)] {
                sw.process(port, t, &mut arp(mac, ip, gw), FrameMeta::FULL, sink, &mut NoMeter);
            }
        }
        let frames: Vec<(PortId, Vec<u8>)> =
            ops.iter().map(|&(op, flow, seq)| frame(op, flow, seq)).collect();
        // One by one.
        let mut want = Vec::new();
        for (port, f) in &frames {
            let mut f = f.clone();
            let v = one.process(*port, t, &mut f, FrameMeta::FULL, &mut s1, &mut NoMeter);
            want.push((v, f));
        }
        // In bursts: consecutive frames of one port, cut where `cuts` says.
        let mut got = Vec::new();
        let mut i = 0;
        let mut c = cuts.iter().cycle();
        while i < frames.len() {
            let port = frames[i].0;
            let mut n = (*c.next().unwrap()).min(frames.len() - i);
            n = frames[i..i + n].iter().take_while(|(p, _)| *p == port).count();
            let mut bufs: Vec<Vec<u8>> = frames[i..i + n].iter().map(|(_, f)| f.clone()).collect();
            let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            let metas = vec![FrameMeta::FULL; n];
            let mut verdicts = vec![Verdict::Local(knits_core::counters::LocalKind::Arp); n];
            let done = many.process_burst(port, t, &mut refs, &metas, &mut verdicts, &mut s2, &mut NoMeter);
            prop_assert_eq!(done, n);
            for (v, b) in verdicts.into_iter().zip(bufs) {
                got.push((v, b));
            }
            i += n;
        }
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(&s2.frames, &s1.frames);
        prop_assert_eq!(format!("{:?}", many.counters()), format!("{:?}", one.counters()));
        prop_assert_eq!(many.flow_count(), one.flow_count());
    }
}

#[test]
fn a_burst_is_at_most_burst_frames() {
    let mut sw = switch();
    let mut bufs: Vec<Vec<u8>> = (0..BURST + 5).map(|i| frame(7, i as u8, 0).1).collect();
    let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
    let metas = vec![FrameMeta::FULL; refs.len()];
    let mut verdicts = vec![Verdict::Local(knits_core::counters::LocalKind::Arp); refs.len()];
    let n = sw.process_burst(
        0,
        Instant::from_millis(1),
        &mut refs,
        &metas,
        &mut verdicts,
        &mut VecSink::default(),
        &mut NoMeter,
    );
    assert_eq!(n, BURST);
    // Shorter metas or verdicts bound it too.
    let n = sw.process_burst(
        0,
        Instant::from_millis(1),
        &mut refs,
        &metas[..3],
        &mut verdicts,
        &mut VecSink::default(),
        &mut NoMeter,
    );
    assert_eq!(n, 3);
}
