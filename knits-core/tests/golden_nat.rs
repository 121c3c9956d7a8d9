//! Golden-packet tests for spray and NAT: input frame + table state -> verdict + exact output
//! bytes + counters, with sequence numbers near 2^32; and property tests that the rewrite
//! changes only what NAT must change and leaves valid checksums, for full and partial checksums.

use knits_core::checksum::{self, Kind};
use knits_core::config::Config;
use knits_core::counters::{DropReason, Generated, LocalKind};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot, TcpState};
use knits_core::time::Instant;
use knits_testkit::frames::{TcpFrame, arp, arp_request, flags_of};
use knits_testkit::sink::VecSink;
use proptest::prelude::*;
use smoltcp::wire::{
    ArpOperation, EthernetAddress, Ipv4Address, Ipv4Packet, TcpControl, TcpPacket, TcpSeqNumber,
};

const CLIENT_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 2]);
const NODE1_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 2]);
const CLIENT: Ipv4Address = Ipv4Address::new(198, 18, 0, 2);
const VIP: Ipv4Address = Ipv4Address::new(198, 18, 0, 10);
const NODE1: Ipv4Address = Ipv4Address::new(198, 19, 1, 2);

fn sw_mac(port: u8) -> EthernetAddress {
    EthernetAddress([0x02, 0x4b, 0x4e, 0, 0, port])
}

struct Tcp<'p> {
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Address, u16),
    dst: (Ipv4Address, u16),
    control: TcpControl,
    seq: u32,
    ack: Option<u32>,
    ts: Option<(u32, u32)>,
    sack: [Option<(u32, u32)>; 3],
    ttl: u8,
    payload: &'p [u8],
}

impl Tcp<'_> {
    /// The frame: window 502; a SYN carries MSS 1460, window scale 7 and SACK-permitted.
    fn frame(&self) -> Vec<u8> {
        let syn = self.control == TcpControl::Syn;
        let mut t = TcpFrame::new(self.src, self.dst);
        t.src_mac = self.src_mac;
        t.dst_mac = self.dst_mac;
        (t.flags, t.seq, t.ack) = (flags_of(self.control), self.seq, self.ack);
        t.win = 502;
        t.ws = syn.then_some(7);
        t.mss = syn.then_some(1460);
        t.sack_perm = syn;
        t.sack = self.sack;
        t.ts = self.ts;
        t.ttl = self.ttl;
        t.payload = self.payload.to_vec();
        t.build()
    }
}

fn new_switch() -> Switch<'static> {
    let storage = Storage {
        flows: vec![FlowSlot::default(); 64].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(64)].into(),
        sessions: vec![SessionSlot::default(); 4].into(),
    };
    Switch::new(Config::cluster(2, [1; 16]), storage).unwrap()
}

/// A switch that knows the client's and node 1's MACs.
fn warmed() -> (Switch<'static>, VecSink) {
    let mut sw = new_switch();
    let mut out = VecSink::default();
    let t = Instant::from_millis(1);
    let v = sw.process(
        0,
        t,
        &mut arp_request(CLIENT_MAC, CLIENT, VIP),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    assert_eq!(v, Verdict::Local(LocalKind::Arp));
    let v = sw.process(
        1,
        t,
        &mut arp_request(NODE1_MAC, NODE1, Ipv4Address::new(198, 19, 1, 1)),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    assert_eq!(v, Verdict::Local(LocalKind::Arp));
    (sw, out)
}

#[test]
fn arp_reply_for_the_vip_is_exact() {
    let (_, out) = warmed();
    let (port, reply) = &out.frames[0];
    assert_eq!(*port, 0);
    let want = arp(
        ArpOperation::Reply,
        (sw_mac(0), VIP),
        CLIENT_MAC,
        (CLIENT_MAC, CLIENT),
    );
    assert_eq!(reply, &want);
}

/// A whole connection near the sequence wrap: SYN, SYN-ACK, ACK, data across 2^32, FINs.
/// Each forwarded frame must equal, byte for byte, the frame an ideal NAT would emit.
#[test]
fn nat_connection_across_the_sequence_wrap_is_exact() {
    let (mut sw, mut out) = warmed();
    let t = Instant::from_millis(2);
    let c_isn = 0xffff_ff00u32;
    let s_isn = 0xffff_fff0u32;
    let cp = 40000;
    let payload = [0x42u8; 300];
    let steps: Vec<(u8, Tcp, Tcp)> = vec![
        (
            0,
            Tcp {
                src_mac: CLIENT_MAC,
                dst_mac: sw_mac(0),
                src: (CLIENT, cp),
                dst: (VIP, 80),
                control: TcpControl::Syn,
                seq: c_isn,
                ack: None,
                ts: Some((100, 0)),
                sack: [None; 3],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(1),
                dst_mac: NODE1_MAC,
                src: (CLIENT, cp),
                dst: (NODE1, 80),
                control: TcpControl::Syn,
                seq: c_isn,
                ack: None,
                ts: Some((100, 0)),
                sack: [None; 3],
                ttl: 63,
                payload: &[],
            },
        ),
        (
            1,
            Tcp {
                src_mac: NODE1_MAC,
                dst_mac: sw_mac(1),
                src: (NODE1, 80),
                dst: (CLIENT, cp),
                control: TcpControl::Syn,
                seq: s_isn,
                ack: Some(c_isn.wrapping_add(1)),
                ts: Some((7000, 100)),
                sack: [None; 3],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(0),
                dst_mac: CLIENT_MAC,
                src: (VIP, 80),
                dst: (CLIENT, cp),
                control: TcpControl::Syn,
                seq: s_isn,
                ack: Some(c_isn.wrapping_add(1)),
                ts: Some((7000, 100)),
                sack: [None; 3],
                ttl: 63,
                payload: &[],
            },
        ),
        (
            0,
            Tcp {
                src_mac: CLIENT_MAC,
                dst_mac: sw_mac(0),
                src: (CLIENT, cp),
                dst: (VIP, 80),
                control: TcpControl::Psh,
                seq: c_isn.wrapping_add(1),
                ack: Some(s_isn.wrapping_add(1)),
                ts: Some((101, 7000)),
                sack: [None; 3],
                ttl: 64,
                payload: &payload,
            },
            Tcp {
                src_mac: sw_mac(1),
                dst_mac: NODE1_MAC,
                src: (CLIENT, cp),
                dst: (NODE1, 80),
                control: TcpControl::Psh,
                seq: c_isn.wrapping_add(1),
                ack: Some(s_isn.wrapping_add(1)),
                ts: Some((101, 7000)),
                sack: [None; 3],
                ttl: 63,
                payload: &payload,
            },
        ),
        (
            1,
            Tcp {
                src_mac: NODE1_MAC,
                dst_mac: sw_mac(1),
                src: (NODE1, 80),
                dst: (CLIENT, cp),
                control: TcpControl::None,
                seq: s_isn.wrapping_add(1),
                ack: Some(c_isn.wrapping_add(301)),
                ts: Some((7001, 101)),
                sack: [
                    Some((c_isn.wrapping_add(301), c_isn.wrapping_add(401))),
                    None,
                    None,
                ],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(0),
                dst_mac: CLIENT_MAC,
                src: (VIP, 80),
                dst: (CLIENT, cp),
                control: TcpControl::None,
                seq: s_isn.wrapping_add(1),
                ack: Some(c_isn.wrapping_add(301)),
                ts: Some((7001, 101)),
                sack: [
                    Some((c_isn.wrapping_add(301), c_isn.wrapping_add(401))),
                    None,
                    None,
                ],
                ttl: 63,
                payload: &[],
            },
        ),
        (
            0,
            Tcp {
                src_mac: CLIENT_MAC,
                dst_mac: sw_mac(0),
                src: (CLIENT, cp),
                dst: (VIP, 80),
                control: TcpControl::Fin,
                seq: c_isn.wrapping_add(301),
                ack: Some(s_isn.wrapping_add(1)),
                ts: Some((102, 7001)),
                sack: [None; 3],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(1),
                dst_mac: NODE1_MAC,
                src: (CLIENT, cp),
                dst: (NODE1, 80),
                control: TcpControl::Fin,
                seq: c_isn.wrapping_add(301),
                ack: Some(s_isn.wrapping_add(1)),
                ts: Some((102, 7001)),
                sack: [None; 3],
                ttl: 63,
                payload: &[],
            },
        ),
        (
            1,
            Tcp {
                src_mac: NODE1_MAC,
                dst_mac: sw_mac(1),
                src: (NODE1, 80),
                dst: (CLIENT, cp),
                control: TcpControl::Fin,
                seq: s_isn.wrapping_add(1),
                ack: Some(c_isn.wrapping_add(302)),
                ts: Some((7002, 102)),
                sack: [None; 3],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(0),
                dst_mac: CLIENT_MAC,
                src: (VIP, 80),
                dst: (CLIENT, cp),
                control: TcpControl::Fin,
                seq: s_isn.wrapping_add(1),
                ack: Some(c_isn.wrapping_add(302)),
                ts: Some((7002, 102)),
                sack: [None; 3],
                ttl: 63,
                payload: &[],
            },
        ),
        (
            0,
            Tcp {
                src_mac: CLIENT_MAC,
                dst_mac: sw_mac(0),
                src: (CLIENT, cp),
                dst: (VIP, 80),
                control: TcpControl::None,
                seq: c_isn.wrapping_add(302),
                ack: Some(s_isn.wrapping_add(2)),
                ts: Some((103, 7002)),
                sack: [None; 3],
                ttl: 64,
                payload: &[],
            },
            Tcp {
                src_mac: sw_mac(1),
                dst_mac: NODE1_MAC,
                src: (CLIENT, cp),
                dst: (NODE1, 80),
                control: TcpControl::None,
                seq: c_isn.wrapping_add(302),
                ack: Some(s_isn.wrapping_add(2)),
                ts: Some((103, 7002)),
                sack: [None; 3],
                ttl: 63,
                payload: &[],
            },
        ),
    ];
    for (i, (port, input, want)) in steps.iter().enumerate() {
        let mut f = input.frame();
        let v = sw.process(*port, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter);
        let want_port = if *port == 0 { 1 } else { 0 };
        assert_eq!(v, Verdict::Forward(want_port), "step {i}");
        assert_eq!(f, want.frame(), "step {i}: output bytes");
    }
    let c = sw.counters();
    assert_eq!(c.sprayed[0], 1);
    assert_eq!(
        c.tx_frames[1],
        4 + 1,
        "four frames to node 1 and the ARP reply on port 1"
    );
    assert_eq!(c.total_drops(), 0);
    // Both FINs acknowledged: TIME-WAIT, then gone after the TIME-WAIT period.
    let (fi, f) = sw.table().iter().next().unwrap();
    assert_eq!(f.state, TcpState::TimeWait, "flow {fi}");
    sw.poll(Instant::from_secs(119), 1000, &mut out);
    assert_eq!(sw.flow_count(), 1);
    sw.poll(Instant::from_secs(125), 1000, &mut out);
    assert_eq!(sw.flow_count(), 0);
    assert_eq!(sw.counters().closed, 1);
}

#[test]
fn malformed_and_stray_packets_are_dropped_by_reason() {
    let (mut sw, mut out) = warmed();
    let t = Instant::from_millis(3);
    let base = Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: sw_mac(0),
        src: (CLIENT, 1234),
        dst: (VIP, 80),
        control: TcpControl::Syn,
        seq: 1,
        ack: None,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    cases.push((base.frame()[..10].to_vec(), DropReason::EthTruncated));
    let mut f = base.frame();
    f[14] = 0x44; // IHL 4
    cases.push((f, DropReason::Ipv4Malformed));
    let mut f = base.frame();
    f[16] = 0x10; // total length 4096, beyond the frame
    cases.push((f, DropReason::Ipv4Malformed));
    let mut f = base.frame();
    f[20] = 0x20; // more fragments
    cases.push((f, DropReason::Ipv4Fragment));
    let mut f = base.frame();
    f[24] ^= 0xff; // IP checksum
    cases.push((f, DropReason::Ipv4BadChecksum));
    let mut f = base.frame();
    f[50] ^= 0x01; // TCP checksum
    cases.push((f, DropReason::TcpBadChecksum));
    let mut f = base.frame();
    f[47] = 0x03; // SYN+FIN
    cases.push((f, DropReason::TcpBadFlags));
    let mut f = Tcp {
        control: TcpControl::None,
        ack: Some(5),
        ..base
    }
    .frame();
    let _ = &mut f;
    cases.push((f, DropReason::UnknownFlow));
    cases.push((
        Tcp {
            dst: (VIP, 81),
            ..base
        }
        .frame(),
        DropReason::VipNotServed,
    ));
    cases.push((
        Tcp {
            dst: (NODE1, 80),
            ..base
        }
        .frame(),
        DropReason::NoRoute,
    ));
    cases.push((
        Tcp {
            dst_mac: EthernetAddress([2, 9, 9, 9, 9, 9]),
            ..base
        }
        .frame(),
        DropReason::EthNotForUs,
    ));
    cases.push((Tcp { ttl: 1, ..base }.frame(), DropReason::TtlExpired));
    for (i, (mut f, why)) in cases.into_iter().enumerate() {
        let before = sw.counters().drop_count(why);
        let v = sw.process(0, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter);
        assert_eq!(v, Verdict::Drop(why), "case {i}");
        assert_eq!(sw.counters().drop_count(why), before + 1, "case {i}");
    }
    assert_eq!(sw.flow_count(), 0, "no malformed packet created state");
}

#[test]
fn a_full_table_refuses_new_flows_and_keeps_old_ones() {
    let storage = Storage {
        flows: vec![FlowSlot::default(); 2].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(2)].into(),
        sessions: vec![SessionSlot::default(); 1].into(),
    };
    let mut sw = Switch::new(Config::cluster(1, [1; 16]), storage).unwrap();
    let mut out = VecSink::default();
    let t = Instant::from_millis(1);
    sw.process(
        1,
        t,
        &mut arp_request(NODE1_MAC, NODE1, Ipv4Address::new(198, 19, 1, 1)),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    for p in 1..=3u16 {
        let mut f = Tcp {
            src_mac: CLIENT_MAC,
            dst_mac: sw_mac(0),
            src: (CLIENT, p),
            dst: (VIP, 80),
            control: TcpControl::Syn,
            seq: 1,
            ack: None,
            ts: None,
            sack: [None; 3],
            ttl: 64,
            payload: &[],
        }
        .frame();
        let v = sw.process(0, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter);
        if p <= 2 {
            assert_eq!(v, Verdict::Forward(1));
        } else {
            assert_eq!(v, Verdict::Drop(DropReason::TableFull));
        }
    }
    assert_eq!(sw.flow_count(), 2);
    // SYN-only entries expire after the SYN time-out; then new connections are admitted.
    sw.poll(Instant::from_secs(31), 100, &mut out);
    assert_eq!(sw.flow_count(), 0);
    assert_eq!(sw.counters().expired, 2);
    let _ = Generated::ArpReply;
}

fn check_full(frame: &[u8]) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(
        tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()),
        "TCP checksum"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any segment of an established flow, NAT changes exactly the destination (or source)
    /// address, TTL and MACs, and the incremental checksums equal a full recomputation; a frame
    /// with a partial checksum keeps the pseudo-header sum of its new addresses.
    #[test]
    fn nat_rewrite_changes_only_what_it_must(
        seq in any::<u32>(), ack in any::<u32>(), tsv in any::<u32>(), tse in any::<u32>(),
        sack in proptest::option::of((any::<u32>(), any::<u32>())),
        len in 0usize..1400, partial in any::<bool>(), cp in 1024u16..65535,
    ) {
        let (mut sw, mut out) = warmed();
        let t = Instant::from_millis(5);
        let syn = Tcp { src_mac: CLIENT_MAC, dst_mac: sw_mac(0), src: (CLIENT, cp), dst: (VIP, 80), control: TcpControl::Syn, seq: seq.wrapping_sub(1), ack: None, ts: Some((tsv, 0)), sack: [None; 3], ttl: 64, payload: &[] };
        prop_assert_eq!(sw.process(0, t, &mut syn.frame(), FrameMeta::FULL, &mut out, &mut NoMeter), Verdict::Forward(1));
        let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let input = Tcp { src_mac: CLIENT_MAC, dst_mac: sw_mac(0), src: (CLIENT, cp), dst: (VIP, 80), control: TcpControl::Psh, seq, ack: Some(ack), ts: Some((tsv, tse)), sack: [sack, None, None], ttl: 64, payload: &payload };
        let mut f = input.frame();
        let kind = if partial { Kind::Partial } else { Kind::Full };
        if partial {
            // What a TAP with NEEDS_CSUM delivers: the TCP field holds the pseudo-header sum only.
            let p = checksum::fold(checksum::pseudo_header_sum(CLIENT.octets(), VIP.octets(), 6, (f.len() - 34) as u16));
            f[50..52].copy_from_slice(&p.to_be_bytes());
        }
        let v = sw.process(0, t, &mut f, FrameMeta { csum: kind }, &mut out, &mut NoMeter);
        prop_assert_eq!(v, Verdict::Forward(1));
        let want = Tcp { src_mac: sw_mac(1), dst_mac: NODE1_MAC, dst: (NODE1, 80), ttl: 63, ..input }.frame();
        if partial {
            let p = checksum::fold(checksum::pseudo_header_sum(CLIENT.octets(), NODE1.octets(), 6, (f.len() - 34) as u16));
            let got = u16::from_be_bytes([f[50], f[51]]);
            prop_assert_eq!(got % 0xffff, p % 0xffff, "partial sum of the new pseudo-header");
            prop_assert_eq!(&f[..50], &want[..50]);
            prop_assert_eq!(&f[52..], &want[52..]);
        } else {
            prop_assert_eq!(&f, &want);
            check_full(&f);
        }
    }
}

/// Ingress filtering (found by the pipeline fuzz target): a node may not claim a client's
/// address, and the client side may not claim a cluster address; either would let traffic for
/// one host be steered to another.
#[test]
fn spoofed_sources_are_dropped_and_change_nothing() {
    let (mut sw, mut out) = warmed();
    let t = Instant::from_millis(3);
    // Node 2 (port 2) claims to be the client.
    let mut f = Tcp {
        src_mac: NODE1_MAC,
        dst_mac: sw_mac(2),
        src: (CLIENT, 40000),
        dst: (NODE1, 80),
        control: TcpControl::Syn,
        seq: 1,
        ack: None,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    }
    .frame();
    assert_eq!(
        sw.process(2, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter),
        Verdict::Drop(DropReason::SrcSpoofed)
    );
    // Node 2 claims node 1's address.
    let mut f = Tcp {
        src_mac: NODE1_MAC,
        dst_mac: sw_mac(2),
        src: (NODE1, 5000),
        dst: (Ipv4Address::new(198, 19, 2, 2), 80),
        control: TcpControl::Syn,
        seq: 1,
        ack: None,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    }
    .frame();
    assert_eq!(
        sw.process(2, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter),
        Verdict::Drop(DropReason::SrcSpoofed)
    );
    // The client side claims a back-end address, a gateway, the VIP.
    for src in [
        NODE1,
        Ipv4Address::new(198, 19, 1, 1),
        Ipv4Address::new(198, 18, 0, 1),
        VIP,
    ] {
        let mut f = Tcp {
            src_mac: CLIENT_MAC,
            dst_mac: sw_mac(0),
            src: (src, 40000),
            dst: (VIP, 80),
            control: TcpControl::Syn,
            seq: 1,
            ack: None,
            ts: None,
            sack: [None; 3],
            ttl: 64,
            payload: &[],
        }
        .frame();
        assert_eq!(
            sw.process(0, t, &mut f, FrameMeta::FULL, &mut out, &mut NoMeter),
            Verdict::Drop(DropReason::SrcSpoofed),
            "{src}"
        );
    }
    assert_eq!(sw.flow_count(), 0);
    assert_eq!(sw.counters().drop_count(DropReason::SrcSpoofed), 6);
}

/// A node answering a spoofed SYN keeps retransmitting its SYN-ACK; the half-open entry must
/// still go after the SYN time-out, or a flood keeps the table full (found by knits-host's
/// hostile tests).
#[test]
fn half_open_entries_expire_after_the_syn_timeout_despite_retransmissions() {
    let (mut sw, mut out) = warmed();
    let syn = Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: sw_mac(0),
        src: (CLIENT, 999),
        dst: (VIP, 80),
        control: TcpControl::Syn,
        seq: 1,
        ack: None,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    assert_eq!(
        sw.process(
            0,
            Instant::from_secs(1),
            &mut syn.frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Forward(1)
    );
    let synack = Tcp {
        src_mac: NODE1_MAC,
        dst_mac: sw_mac(1),
        src: (NODE1, 80),
        dst: (CLIENT, 999),
        control: TcpControl::Syn,
        seq: 77,
        ack: Some(2),
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    for t in [1u64, 2, 4, 8, 16, 28] {
        assert_eq!(
            sw.process(
                1,
                Instant::from_secs(t as i64),
                &mut synack.frame(),
                FrameMeta::FULL,
                &mut out,
                &mut NoMeter
            ),
            Verdict::Forward(0)
        );
    }
    let (_, f) = sw.table().iter().next().unwrap();
    assert_eq!(f.state, TcpState::SynReceived);
    sw.poll(Instant::from_secs(30), 100, &mut out);
    assert_eq!(sw.flow_count(), 1, "within 30 s of the first SYN");
    sw.poll(Instant::from_secs(32), 100, &mut out);
    assert_eq!(
        sw.flow_count(),
        0,
        "the retransmitted SYN-ACKs did not keep it alive"
    );
}

/// When a back-end's link goes down, its clients get an RST at their own receive point and new
/// connections go elsewhere.
#[test]
fn a_port_going_down_resets_its_clients_and_is_skipped_by_spray() {
    let (mut sw, mut out) = warmed();
    let node2 = Ipv4Address::new(198, 19, 2, 2);
    let node2_mac = EthernetAddress([2, 0, 0, 0, 2, 2]);
    sw.process(
        2,
        Instant::from_millis(1),
        &mut arp_request(node2_mac, node2, Ipv4Address::new(198, 19, 2, 1)),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    let t = Instant::from_millis(2);
    let c = |sport, ctl, seq, ack| Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: sw_mac(0),
        src: (CLIENT, sport),
        dst: (VIP, 80),
        control: ctl,
        seq,
        ack,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    // Connection 1 (round robin: node 1), established.
    assert_eq!(
        sw.process(
            0,
            t,
            &mut c(1000, TcpControl::Syn, 100, None).frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Forward(1)
    );
    let sa = Tcp {
        src_mac: NODE1_MAC,
        dst_mac: sw_mac(1),
        src: (NODE1, 80),
        dst: (CLIENT, 1000),
        control: TcpControl::Syn,
        seq: 500,
        ack: Some(101),
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    assert_eq!(
        sw.process(
            1,
            t,
            &mut sa.frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Forward(0)
    );
    assert_eq!(
        sw.process(
            0,
            t,
            &mut c(1000, TcpControl::None, 101, Some(501)).frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Forward(1)
    );
    out.frames.clear();
    assert_eq!(sw.set_port_up(1, false, &mut out), 1);
    assert_eq!(sw.flow_count(), 0);
    assert_eq!(out.frames.len(), 1);
    let (port, rst) = &out.frames[0];
    assert_eq!(*port, 0);
    let want = Tcp {
        src_mac: sw_mac(0),
        dst_mac: CLIENT_MAC,
        src: (VIP, 80),
        dst: (CLIENT, 1000),
        control: TcpControl::Rst,
        seq: 501,
        ack: Some(101),
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    }
    .frame();
    let rst_tcp = TcpPacket::new_checked(&rst[34..]).unwrap();
    assert!(rst_tcp.rst() && rst_tcp.seq_number() == TcpSeqNumber(501));
    assert_eq!(&rst[..14], &want[..14]);
    check_full(rst);
    assert_eq!(sw.counters().generated_count(Generated::PortDownReset), 1);
    // New connections all go to node 2 now.
    for p in 2000..2004 {
        assert_eq!(
            sw.process(
                0,
                t,
                &mut c(p, TcpControl::Syn, 1, None).frame(),
                FrameMeta::FULL,
                &mut out,
                &mut NoMeter
            ),
            Verdict::Forward(2)
        );
    }
    sw.set_port_up(1, true, &mut out);
    let picks: Vec<_> = (3000..3004)
        .map(|p| {
            sw.process(
                0,
                t,
                &mut c(p, TcpControl::Syn, 1, None).frame(),
                FrameMeta::FULL,
                &mut out,
                &mut NoMeter,
            )
        })
        .collect();
    assert!(picks.contains(&Verdict::Forward(1)), "{picks:?}");
}

/// The switch resolves the back-ends' MACs itself (poll sends ARP requests for the ones it does
/// not know), so the first SYN to a node is not lost to an unknown neighbor; a SYN that still
/// meets one is dropped and its retransmission goes to the same node, sprayed once.
#[test]
fn backends_are_resolved_before_the_first_syn_and_a_retransmitted_syn_is_sprayed_once() {
    let mut sw = new_switch();
    let mut out = VecSink::default();
    let t = Instant::from_millis(1);
    sw.process(
        0,
        t,
        &mut arp_request(CLIENT_MAC, CLIENT, VIP),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    out.frames.clear();
    sw.poll(t, 64, &mut out);
    let asked: Vec<u8> = out
        .frames
        .iter()
        .map(|(p, f)| {
            assert_eq!(&f[12..14], &[0x08, 0x06]);
            *p
        })
        .collect();
    assert_eq!(asked, vec![1, 2], "one ARP request per unresolved back-end");
    out.frames.clear();
    sw.poll(Instant::from_millis(500), 64, &mut out);
    assert!(out.frames.is_empty(), "probes are rate-limited");
    // Node 1 never answered: the SYN is dropped, the flow stays, the retransmission is not
    // sprayed again.
    let syn = Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: sw_mac(0),
        src: (CLIENT, 5555),
        dst: (VIP, 80),
        control: TcpControl::Syn,
        seq: 9,
        ack: None,
        ts: None,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    assert_eq!(
        sw.process(
            0,
            t,
            &mut syn.frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Drop(DropReason::NeighborUnknown)
    );
    sw.process(
        1,
        t,
        &mut arp_request(NODE1_MAC, NODE1, Ipv4Address::new(198, 19, 1, 1)),
        FrameMeta::FULL,
        &mut out,
        &mut NoMeter,
    );
    assert_eq!(
        sw.process(
            0,
            t,
            &mut syn.frame(),
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter
        ),
        Verdict::Forward(1)
    );
    assert_eq!(sw.counters().sprayed[..2], [1, 0]);
    assert_eq!(sw.flow_count(), 1);
}

/// Tuple reuse on a closed (TIME-WAIT) NAT connection, by the rule of Linux's TIME-WAIT (RFC
/// 6191, `tcp_timewait_state_process`): a SYN whose sequence number is past the old
/// connection's, or whose timestamp is newer, and which PAWS does not reject, starts a new
/// connection, sprayed afresh and forwarded byte for byte (`reopened`); an old duplicate
/// (neither) and a SYN with an older timestamp are dropped (`reuse_refused`) and change
/// nothing. Sequence numbers across the wrap.
#[test]
fn a_closed_tuple_reopens_only_on_an_acceptable_syn() {
    use knits_core::counters::FlowEvent;
    let storage = Storage {
        flows: vec![FlowSlot::default(); 8].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(8)].into(),
        sessions: vec![SessionSlot::default(); 1].into(),
    };
    let mut sw = Switch::new(Config::cluster(1, [1; 16]), storage).unwrap();
    let mut out = VecSink::default();
    let mut now = 1;
    let mut send = |sw: &mut Switch<'static>, port: u8, f: &mut Vec<u8>| {
        now += 1;
        sw.process(
            port,
            Instant::from_millis(now),
            f,
            FrameMeta::FULL,
            &mut out,
            &mut NoMeter,
        )
    };
    let mut arp = arp_request(NODE1_MAC, NODE1, Ipv4Address::new(198, 19, 1, 1));
    send(&mut sw, 1, &mut arp);
    send(&mut sw, 0, &mut arp_request(CLIENT_MAC, CLIENT, VIP));
    let (c_isn, s_isn) = (0xffff_fff0u32, 0x7fff_fffeu32);
    let client = |cp: u16, control, seq: u32, ack: Option<u32>, ts: Option<(u32, u32)>| Tcp {
        src_mac: CLIENT_MAC,
        dst_mac: sw_mac(0),
        src: (CLIENT, cp),
        dst: (VIP, 80),
        control,
        seq,
        ack,
        ts,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    let node = |cp: u16, control, seq: u32, ack: u32, ts: Option<(u32, u32)>| Tcp {
        src_mac: NODE1_MAC,
        dst_mac: sw_mac(1),
        src: (NODE1, 80),
        dst: (CLIENT, cp),
        control,
        seq,
        ack: Some(ack),
        ts,
        sack: [None; 3],
        ttl: 64,
        payload: &[],
    };
    // Two connections open and close (the client closes first): both end in TIME-WAIT.
    for cp in [40000, 40001] {
        let c = |control, seq: u32, ack, ts| client(cp, control, seq, ack, ts).frame();
        let n = |control, seq: u32, ack, ts| node(cp, control, seq, ack, ts).frame();
        let steps = [
            (0, c(TcpControl::Syn, c_isn, None, Some((100, 0)))),
            (
                1,
                n(
                    TcpControl::Syn,
                    s_isn,
                    c_isn.wrapping_add(1),
                    Some((7000, 100)),
                ),
            ),
            (
                0,
                c(
                    TcpControl::None,
                    c_isn.wrapping_add(1),
                    Some(s_isn.wrapping_add(1)),
                    Some((101, 7000)),
                ),
            ),
            (
                0,
                c(
                    TcpControl::Fin,
                    c_isn.wrapping_add(1),
                    Some(s_isn.wrapping_add(1)),
                    Some((102, 7000)),
                ),
            ),
            (
                1,
                n(
                    TcpControl::Fin,
                    s_isn.wrapping_add(1),
                    c_isn.wrapping_add(2),
                    Some((7001, 102)),
                ),
            ),
            (
                0,
                c(
                    TcpControl::None,
                    c_isn.wrapping_add(2),
                    Some(s_isn.wrapping_add(2)),
                    Some((103, 7001)),
                ),
            ),
        ];
        for (port, mut f) in steps {
            assert_eq!(send(&mut sw, port, &mut f), Verdict::Forward(1 - port));
        }
    }
    let states = |sw: &Switch<'static>| sw.table().iter().map(|(_, f)| *f).collect::<Vec<_>>();
    let closed = states(&sw);
    assert_eq!(closed.len(), 2);
    assert!(closed.iter().all(|f| f.state == TcpState::TimeWait));
    // An old duplicate: its sequence number is not past the old connection's, no timestamp.
    let mut f = client(40000, TcpControl::Syn, c_isn, None, None).frame();
    assert_eq!(
        send(&mut sw, 0, &mut f),
        Verdict::Drop(DropReason::ReuseRefused)
    );
    // Past the old sequence numbers, but PAWS rejects its timestamp (older than 103).
    let mut f = client(
        40000,
        TcpControl::Syn,
        c_isn.wrapping_add(5000),
        None,
        Some((50, 0)),
    )
    .frame();
    assert_eq!(
        send(&mut sw, 0, &mut f),
        Verdict::Drop(DropReason::ReuseRefused)
    );
    assert_eq!(states(&sw), closed, "a refused SYN changes nothing");
    // Past the old sequence numbers, no timestamp: a new connection, forwarded as is.
    let syn = client(40000, TcpControl::Syn, c_isn.wrapping_add(5000), None, None);
    let mut f = syn.frame();
    assert_eq!(send(&mut sw, 0, &mut f), Verdict::Forward(1));
    let want = Tcp {
        src_mac: sw_mac(1),
        dst_mac: NODE1_MAC,
        dst: (NODE1, 80),
        ttl: 63,
        ..syn
    }
    .frame();
    assert_eq!(f, want, "the reopening SYN, NATed");
    // A newer timestamp: a new connection even with an old sequence number.
    let mut f = client(40001, TcpControl::Syn, c_isn, None, Some((200, 0))).frame();
    assert_eq!(send(&mut sw, 0, &mut f), Verdict::Forward(1));
    let c = sw.counters();
    assert_eq!(c.event_count(FlowEvent::Reopened), 2);
    assert_eq!(c.drop_count(DropReason::ReuseRefused), 2);
    assert_eq!(c.closed, 2, "the closed entries went");
    assert_eq!(c.sprayed[0], 4, "each new connection sprayed");
    assert!(
        sw.table().iter().all(|(_, f)| f.state == TcpState::SynSent),
        "two new half-open connections"
    );
}
