//! The committed seed corpus of every target.

use std::string::String;
use std::vec::Vec;

use knits_core::config::SprayPolicy;
use knits_core::wire::control::{self, Endpoint, ReplyCode, ReplyRepr, RequestRepr};

use super::cluster::{A_CLIENT, A_N1, ADDRS, KEY, P_L1, config};
use super::frame::{arp_frame, control_frame, other_frame, tcp_spec, udp_frame};
use super::ops::{CLIENT, CtlOp, Op, SYN_OPTS, SegOp, VIP, at, node};
use super::script::{Script, Stage, handoff_script, macro_scenarios};
use crate::frames::{F_ACK, F_FIN, F_PSH, F_RST, F_SYN};
use smoltcp::wire::EthernetAddress;

/// The committed seed corpus: (target, file name, bytes). Small and well formed, built with
/// smoltcp's `Repr::emit` for the cluster of `Config::cluster(3, KEY)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let c = config(SprayPolicy::RoundRobin, true);
    let mac0 = c.ports[0].mac;
    let client = (ADDRS[0], 40000);
    let vip = ([198, 18, 0, 10], 80);
    // Pipeline: frames on each port, fresh and warm.
    let syn = {
        let mut t = tcp_spec(client, vip, mac0);
        t.flags = F_SYN;
        t.seq = 1000;
        t.mss = Some(1460);
        t.ws = Some(7);
        t.sack_perm = true;
        t.ts = Some((1, 0));
        t.build()
    };
    let mut pipe = |name: &str, sel: u8, port: u8, f: &[u8]| {
        let mut v = vec![sel, port];
        v.extend_from_slice(f);
        out.push(("pipeline", String::from(name), v));
    };
    pipe("client-syn", 0, 0, &syn);
    pipe("client-syn-partial", 4, 0, &syn);
    pipe("client-syn-verify", 8, 0, &syn);
    let seg = |flags: u8, seq: u32, ack: u32, len: usize| {
        let mut t = tcp_spec(client, vip, mac0);
        t.flags = flags;
        t.seq = seq;
        t.ack = Some(ack);
        t.ts = Some((5, 5));
        t.payload = vec![b'G'; len];
        t.build()
    };
    pipe("client-ack", 1, 0, &seg(0, 1001, 1, 0));
    pipe("client-data", 1, 0, &seg(F_PSH, 1001, 1, 40));
    pipe("client-fin", 1, 0, &seg(F_FIN, 1001, 1, 0));
    pipe("client-rst", 1, 0, &seg(F_RST, 1001, 1, 0));
    pipe("client-data-spliced", 2, 0, &seg(F_PSH, 1081, 1, 40));
    pipe("client-ack-confirmed", 3, 0, &seg(0, 1081, 1, 0));
    for p in 0..4u8 {
        let (src, gw) = if p == 0 {
            (ADDRS[0], [198, 18, 0, 1])
        } else {
            ([198, 19, p, 2], [198, 19, p, 1])
        };
        pipe(
            &format!("arp-gw-port{p}"),
            0,
            p,
            &arp_frame(src, gw, EthernetAddress::BROADCAST, false),
        );
    }
    pipe(
        "arp-vip",
        0,
        0,
        &arp_frame(ADDRS[0], vip.0, EthernetAddress::BROADCAST, false),
    );
    pipe(
        "arp-reply",
        0,
        1,
        &arp_frame([198, 19, 1, 2], [198, 19, 1, 1], c.ports[1].mac, true),
    );
    let req = RequestRepr {
        key_id: 1,
        counter: 1,
        held_peer: Endpoint::new(ADDRS[0], 40000),
        held_local: Endpoint::new([198, 19, 1, 2], 80),
        new_local: Endpoint::new([198, 19, 1, 2], 50000),
        new_remote: Endpoint::new([198, 19, 2, 2], 80),
        consumed: 40,
        sent: 100,
    };
    let ctl = control_frame(1, 40100, &req, &KEY);
    pipe("control-request", 0, 1, &ctl);
    pipe("control-request-warm", 1, 1, &ctl);
    pipe("control-request-client-port", 0, 0, &ctl);
    let n2n = udp_frame(
        ([198, 19, 1, 2], 5353),
        ([198, 19, 2, 2], 5353),
        c.ports[1].mac,
        b"node to node",
    );
    pipe("udp-node-to-node", 1, 1, &n2n);
    pipe(
        "icmp-node-to-node",
        1,
        1,
        &other_frame(
            [198, 19, 1, 2],
            [198, 19, 3, 2],
            c.ports[1].mac,
            &[8, 0, 0, 0, 0, 1, 0, 1],
        ),
    );
    let mut leg = tcp_spec(
        ([198, 19, 1, 2], 50000),
        ([198, 19, 2, 2], 80),
        c.ports[1].mac,
    );
    leg.flags = F_SYN;
    leg.seq = 7;
    leg.mss = Some(1460);
    pipe("node-syn-to-node", 1, 1, &leg.build());
    let mut reply = tcp_spec(([198, 19, 1, 2], 80), client, c.ports[1].mac);
    reply.seq = 1;
    reply.ack = Some(1001);
    reply.payload = vec![b'H'; 100];
    reply.flags = F_PSH;
    pipe("node-reply-data", 1, 1, &reply.build());
    pipe("node-reply-data-partial", 1 | 4, 1, &reply.build());
    // Known bug 1: node 2 claims the client's address towards node 1 (the core drops it: src_spoofed).
    let spoof = {
        let mut t = tcp_spec(client, ([198, 19, 1, 2], 80), c.ports[2].mac);
        t.flags = F_SYN;
        t.seq = 9;
        t.build()
    };
    pipe("known-bug1-spoofed-syn", 1, 2, &spoof);
    let mut ipv6 = syn.clone();
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    pipe("ipv6-ethertype", 0, 0, &ipv6);
    pipe("truncated", 0, 0, &syn[..30]);

    // Stateful: scripted scenarios.
    let mut st = |name: &str, s: Script| out.push(("stateful", String::from(name), s.bytes));
    st("handoff-closed", handoff_script(0, SYN_OPTS, Stage::Closed));
    st(
        "handoff-closed-no-options",
        handoff_script(0, 0, Stage::Closed),
    );
    st(
        "handoff-closed-ts-only",
        handoff_script(0, 8, Stage::Closed),
    );
    st(
        "handoff-retired",
        handoff_script(2, SYN_OPTS, Stage::Retired),
    );
    st(
        "handoff-accepted",
        handoff_script(0, SYN_OPTS, Stage::Accepted),
    );
    st(
        "handoff-confirmed-sink-full",
        handoff_script(0x10, SYN_OPTS, Stage::Confirmed),
    );
    st(
        "handoff-weighted",
        handoff_script(0x20, SYN_OPTS, Stage::Closed),
    );
    st(
        "handoff-maglev",
        handoff_script(0x40, SYN_OPTS, Stage::Closed),
    );
    {
        // Accepted, then the target never answers: rolled back after the time-out.
        let mut s = handoff_script(0, SYN_OPTS, Stage::Accepted);
        s.op(Op::Tick { mode: 1, amount: 6 });
        s.op(Op::Tick { mode: 2, amount: 0 });
        st("handoff-rollback-drain", s);
    }
    {
        // Two hand-offs in a row: A -> B -> C.
        let mut s = handoff_script(2, SYN_OPTS, Stage::Confirmed);
        s.op(Op::Seg(SegOp {
            src: at(CLIENT),
            dst: at(VIP),
            flags: F_ACK | F_PSH,
            len: 30,
            opts: 8,
            ..SegOp::default()
        }));
        st("handoff-then-more-data", s);
    }
    {
        let mut s = handoff_script(0, SYN_OPTS, Stage::Established);
        s.op(Op::Control(CtlOp {
            node: 0,
            mode: 4,
            held: at(CLIENT),
            target: at(node(2)),
            new_port: P_L1,
            ..CtlOp::default()
        }));
        s.op(Op::Control(CtlOp {
            node: 0,
            mode: 0x10,
            held: at(CLIENT),
            target: at(node(2)),
            new_port: P_L1,
            ..CtlOp::default()
        }));
        st("control-bad-mac-and-repeat", s);
    }
    {
        let mut s = Script::new(1);
        s.arps();
        for p in 0..6u8 {
            s.seg_with((A_CLIENT + (p & 1), 1 + (p % 4)), VIP, F_SYN, 0, 0);
        }
        s.op(Op::Tick {
            mode: 1,
            amount: 31,
        });
        st("syn-flood-table-full", s);
    }
    {
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.seg_with(CLIENT, VIP, F_ACK | F_RST, 0, 0);
        s.op(Op::Tick { mode: 2, amount: 0 });
        st("connect-reset-drain", s);
    }
    {
        let mut s = Script::new(0);
        s.arps();
        s.open_leg(1, 2, SYN_OPTS);
        s.seg_with((A_N1, P_L1), node(2), F_ACK | F_PSH, 20, 8);
        s.op(Op::Raw {
            port: 1,
            partial: false,
            frame: n2n.clone(),
        });
        st("routed-between-nodes", s);
    }

    {
        // Known bug 1, the leak: node 2 keeps a spoofed flow alive past the client's connection
        // and then receives node 1's segments for the client (the core drops it: src_spoofed).
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, 0);
        s.op(Op::Raw {
            port: 2,
            partial: false,
            frame: spoof.clone(),
        });
        s.seg_with(CLIENT, VIP, F_ACK | F_RST, 0, 0);
        for _ in 0..7 {
            s.op(Op::Tick {
                mode: 1,
                amount: 20,
            });
            s.op(Op::Raw {
                port: 2,
                partial: false,
                frame: spoof.clone(),
            });
        }
        s.seg_with(node(1), CLIENT, F_ACK | F_PSH, 6, 0);
        st("known-bug1-spoofed-syn", s);
    }
    for (name, s) in macro_scenarios() {
        out.push(("stateful", String::from(name), s.bytes));
    }
    // Control: requests and replies.
    let mut msg = [0u8; control::REQUEST_LEN];
    let _ = req.emit(&mut msg, &KEY);
    let mut ctl = |name: &str, mode: u8, m: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(m);
        out.push(("control", String::from(name), v));
    };
    ctl("request", 0, &msg);
    ctl("request-resign", 1, &msg);
    ctl("request-to-switch", 8 | 1, &msg);
    ctl("request-to-switch-accepted", 16 | 8 | 1, &msg);
    ctl("request-to-switch-node2", 8 | 2 | 1, &msg);
    let mut bad = msg;
    bad[40] ^= 1;
    ctl("request-bad-tag", 8, &bad);
    let mut rep = [0u8; control::REPLY_LEN];
    let _ = ReplyRepr {
        code: ReplyCode::Accepted,
        key_id: 1,
        counter: 1,
        hops: 1,
    }
    .emit(&mut rep, &KEY);
    ctl("reply", 0, &rep);
    let _ = ReplyRepr {
        code: ReplyCode::Unknown,
        key_id: 3,
        counter: u64::MAX,
        hops: 255,
    }
    .emit(&mut rep, &KEY);
    ctl("reply-unknown-code", 0, &rep);
    ctl("truncated", 0, &msg[..20]);

    // TCP options.
    let mut topt = |name: &str, o: &[u8], values: &[u32]| {
        let mut v = vec![o.len() as u8];
        v.extend_from_slice(o);
        v.push(16);
        for x in values {
            v.extend_from_slice(&x.to_be_bytes());
        }
        out.push(("tcp_options", String::from(name), v));
    };
    topt(
        "linux-syn",
        &[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        &[9, 10],
    );
    topt(
        "ts-aligned",
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        &[0xffff_ffff, 0],
    );
    topt(
        "ts-odd",
        &[1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0],
        &[0x8000_0000, 0x7fff_ffff],
    );
    topt(
        "smoltcp-syn",
        &[
            2, 4, 5, 0xb4, 3, 3, 7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0,
        ],
        &[3, 4],
    );
    let mut sack = vec![1, 1, 5, 34];
    for i in 0..32u8 {
        sack.push(i);
    }
    topt("sack-4-blocks", &sack, &[1, 2, 3, 4, 5, 6, 7, 8]);
    topt(
        "sack-1-block-ts",
        &[
            1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 5, 10, 0, 0, 1, 0, 0, 0, 2, 0,
        ],
        &[1, 2, 3, 4],
    );
    topt("bad-length", &[2, 0, 0, 0], &[]);
    topt("overrun", &[1, 1, 1, 8], &[]);
    topt("wrong-fixed", &[3, 4, 0, 0], &[]);
    topt("eol", &[0, 99, 99, 99], &[]);
    topt("unknown-kind", &[99, 4, 0, 0, 3, 3, 2, 0], &[]);

    // Flow table.
    let mut ft = |name: &str, v: Vec<u8>| out.push(("flow_table", String::from(name), v));
    ft(
        "fill-remove-sweep",
        vec![
            3, 1, 1, 0, 1, 2, 0, 1, 3, 0, 1, 4, 0, 1, 5, 0, 2, 1, 0, 1, 6, 0, 0x1b, 0, 5, 3, 0, 9,
        ],
    );
    ft(
        "distinct-keys",
        vec![7, 0, 1, 2, 4, 3, 4, 0, 9, 40, 2, 0, 0, 0, 9, 40, 0xfb, 2, 7],
    );
    ft("one-slot", vec![0, 1, 1, 0, 1, 2, 0, 2, 0, 0, 1, 2, 0]);
    ft(
        "big-index",
        vec![
            0x8b, 1, 10, 0, 1, 11, 0, 1, 12, 0, 3, 0, 20, 2, 1, 0, 3, 200, 20,
        ],
    );

    // Checksums.
    let mut ck = |name: &str, v: Vec<u8>| out.push(("checksum", String::from(name), v));
    let hdr: Vec<u8> = syn[34..].to_vec();
    let mut v = vec![6, hdr.len() as u8];
    v.extend_from_slice(&hdr);
    v.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 10]);
    for (off, w, val) in [
        (2u8, 0u8, 0x1234u32),
        (4, 1, 0xdead_beef),
        (7, 2, 0xffff_ffff),
        (0, 3, 0xc613_0102),
        (9, 2, 0),
        (3, 0, 0),
    ] {
        v.extend_from_slice(&[off, w]);
        v.extend_from_slice(&val.to_be_bytes());
    }
    ck("tcp-header-edits", v);
    ck(
        "rfc1071-example",
        vec![0, 8, 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7],
    );
    let mut z = vec![2, 12];
    z.extend_from_slice(&[0; 12]);
    z.extend_from_slice(&[0; 8]);
    z.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    z.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    ck("all-zero", z);
    ck(
        "odd-length",
        vec![
            3, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 4, 2, 0, 0, 0, 1, 3, 1, 0, 0,
            0, 1, 3, 3, 1, 2, 3, 4,
        ],
    );
    out
}
