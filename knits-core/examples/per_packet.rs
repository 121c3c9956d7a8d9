//! Runs one packet class through the pipeline N times (default 100,000), for instruction
//! counting, which unlike time does not depend on what else the machine runs:
//!
//!     cargo build --release -p knits-core --example per_packet
//!     valgrind --tool=callgrind target/release/examples/per_packet 100000 [CLASS]
//!
//! and divide the instructions of `Switch::process` (inclusive) by N; `scripts/instructions.sh`
//! does it for every class (docs/performance.md). The set-up before the loop calls `process`
//! a few times, which is below 0.1 % of N calls. Classes:
//!
//! - `ack` (default): an established NATed flow's bare ACK, no options;
//! - `data`: the same flow's 1448-byte data segment (full checksum verified);
//! - `syn`: a new client connection's SYN, sprayed (a new tuple every time);
//! - `spliced`: a handed-off flow's bare ACK from the client, with timestamps and a SACK block;
//! - `arp`: an ARP request for the VIP, answered;
//! - `malformed`: a truncated IPv4 header, dropped.

#[path = "../benches/common/frames.rs"]
mod frames;

use frames::{CLIENT_MAC, Discard, NODE_MAC, Opts, arp, tcp, tcp_opts, udp};
use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use knits_core::wire::control::{Endpoint, REQUEST_LEN, RequestRepr};
use smoltcp::wire::{Ipv4Address, TcpControl};

const KEY: [u8; 16] = [3; 16];

fn ep(a: Ipv4Address, port: u16) -> Endpoint {
    Endpoint::new(a.octets(), port)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let class = args.next().unwrap_or_else(|| "ack".into());
    let cfg = Config::cluster(2, KEY);
    let (sw_c, sw_n1, sw_n2) = (cfg.ports[0].mac, cfg.ports[1].mac, cfg.ports[2].mac);
    let flows = if class == "syn" {
        n as usize + 64
    } else {
        1024
    };
    let storage = Storage {
        flows: vec![FlowSlot::default(); flows].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![SessionSlot::default(); 4].into(),
    };
    let mut sw = Switch::new(cfg, storage).unwrap();
    let client = (Ipv4Address::new(198, 18, 0, 2), 40000);
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let n1 = (Ipv4Address::new(198, 19, 1, 2), 80);
    let n2 = (Ipv4Address::new(198, 19, 2, 2), 80);
    let leg = (n1.0, 50000);
    let t = Instant::from_millis(1);
    let m = FrameMeta::FULL;
    let send = |sw: &mut Switch, port: u8, mut f: Vec<u8>| {
        sw.process(port, t, &mut f, m, &mut Discard, &mut NoMeter)
    };
    send(&mut sw, 0, arp(CLIENT_MAC, client.0, vip.0));
    send(
        &mut sw,
        1,
        arp(NODE_MAC, n1.0, Ipv4Address::new(198, 19, 1, 1)),
    );
    send(
        &mut sw,
        2,
        arp(NODE_MAC, n2.0, Ipv4Address::new(198, 19, 2, 1)),
    );
    // The client connection, with timestamps and SACK (round robin: it lands on n1).
    let ts = |v: u32, e: u32| Opts {
        ts: Some((v, e)),
        ..Opts::default()
    };
    let syn = Opts {
        sack_perm: true,
        ..ts(100, 0)
    };
    let c = |ctl, seq, ack, p: &[u8], o| tcp_opts(sw_c, client, vip, ctl, seq, ack, p, o);
    assert_eq!(
        send(&mut sw, 0, c(TcpControl::Syn, 1000, None, &[], syn)),
        Verdict::Forward(1)
    );
    let synack = Opts {
        sack_perm: true,
        ..ts(500, 100)
    };
    let s1 = tcp_opts(
        sw_n1,
        n1,
        client,
        TcpControl::Syn,
        5000,
        Some(1001),
        &[],
        synack,
    );
    assert_eq!(send(&mut sw, 1, s1), Verdict::Forward(0));
    send(
        &mut sw,
        0,
        c(TcpControl::None, 1001, Some(5001), &[], ts(101, 500)),
    );
    let req = [b'x'; 100];
    send(
        &mut sw,
        0,
        c(TcpControl::Psh, 1001, Some(5001), &req, ts(102, 500)),
    );
    let a1 = tcp_opts(
        sw_n1,
        n1,
        client,
        TcpControl::None,
        5001,
        Some(1101),
        &[],
        ts(501, 102),
    );
    send(&mut sw, 1, a1);

    let (mut frame, port) = match class.as_str() {
        "ack" => (
            tcp(sw_c, client, vip, TcpControl::None, 1101, Some(5001), &[]),
            0,
        ),
        "data" => {
            let d = [b'd'; 1448];
            (
                tcp(sw_c, client, vip, TcpControl::Psh, 1101, Some(5001), &d),
                0,
            )
        }
        "syn" => (tcp(sw_c, client, vip, TcpControl::Syn, 7000, None, &[]), 0),
        "arp" => (arp(CLIENT_MAC, client.0, vip.0), 0),
        "malformed" => {
            let mut f = tcp(sw_c, client, vip, TcpControl::None, 1101, Some(5001), &[]);
            f.truncate(14 + 12);
            (f, 0)
        }
        "spliced" => {
            // n1 opens a leg to n2, asks the switch to splice, forwards the request; n2
            // acknowledges it: the hand-off is confirmed.
            let l = |ctl, seq, ack, p: &[u8], o| tcp_opts(sw_n1, leg, n2, ctl, seq, ack, p, o);
            send(&mut sw, 1, l(TcpControl::Syn, 9000, None, &[], syn));
            let s2 = tcp_opts(
                sw_n2,
                n2,
                leg,
                TcpControl::Syn,
                20000,
                Some(9001),
                &[],
                synack,
            );
            send(&mut sw, 2, s2);
            send(
                &mut sw,
                1,
                l(TcpControl::None, 9001, Some(20001), &[], ts(502, 500)),
            );
            let r = RequestRepr {
                key_id: 1,
                counter: 1,
                held_peer: ep(client.0, client.1),
                held_local: ep(n1.0, n1.1),
                new_local: ep(leg.0, leg.1),
                new_remote: ep(n2.0, n2.1),
                consumed: 0,
                sent: 0,
            };
            let mut msg = [0u8; REQUEST_LEN];
            r.emit(&mut msg, &KEY).unwrap();
            let gw = (Ipv4Address::new(198, 19, 1, 1), 7100);
            assert_eq!(
                send(&mut sw, 1, udp(sw_n1, (n1.0, 40001), gw, &msg)),
                Verdict::Local(knits_core::counters::LocalKind::Control)
            );
            assert_eq!(
                sw.counters().handoffs[0],
                1,
                "hand-off not accepted: {:?}",
                sw.counters().handoffs
            );
            send(
                &mut sw,
                1,
                l(TcpControl::Psh, 9001, Some(20001), &req, ts(503, 500)),
            );
            let a2 = tcp_opts(
                sw_n2,
                n2,
                leg,
                TcpControl::None,
                20001,
                Some(9101),
                &[],
                ts(501, 503),
            );
            send(&mut sw, 2, a2);
            // The client's ACK of the target's first byte, with a SACK block of later bytes.
            let o = Opts {
                ts: Some((103, 501)),
                sack: Some((5101, 5201)),
                ..Opts::default()
            };
            (c(TcpControl::None, 1101, Some(5001), &[], o), 0)
        }
        other => panic!("unknown class {other:?}: ack, data, syn, spliced, arp or malformed"),
    };
    let orig = frame.clone();
    let mut first = None;
    for i in 0..n {
        frame.copy_from_slice(&orig);
        if class == "syn" {
            // A new tuple every time: the client's address and port.
            let k = i as u32;
            frame[28] = 1 + (k / 60000) as u8;
            frame[34..36].copy_from_slice(&(1024 + (k % 60000) as u16).to_be_bytes());
            frames::fix_checksums(&mut frame);
        }
        let v = sw.process(
            port,
            t,
            std::hint::black_box(&mut frame[..]),
            m,
            &mut Discard,
            &mut NoMeter,
        );
        first.get_or_insert(v);
    }
    println!("{n} x {class}: first verdict {first:?}, drops {:?}", {
        let c = sw.counters();
        knits_core::counters::DropReason::ALL
            .iter()
            .filter(|r| c.drop_count(**r) > 0)
            .map(|r| (r.name(), c.drop_count(*r)))
            .collect::<Vec<_>>()
    });
}
