//! Packet classes: a switch brought into the state a class needs, and the frames of that class.
//!
//! One set, used by knits-core's instruction-count example (`examples/per_packet.rs`) and
//! benchmarks, and by knits-np-sim's calibration, its model's replays and its criterion
//! benchmark of the classes, so that the frames counted under callgrind, timed by criterion
//! and replayed by the model are the same.
//!
//! A class's measured frames are fed in order, once each (`Run::frame(i)`): classes whose
//! frame changes the switch for good (a new SYN, an accepted hand-off, a confirming ACK) set up
//! one instance per frame before the first one is fed, so that every measured frame meets the
//! same state.

use crate::frames::{self, CLIENT_MAC, NODE_MAC, Opts, arp_request as arp, tcp, tcp_opts, udp};
use crate::sink::Discard;
use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use knits_core::wire::control::{Endpoint, REQUEST_LEN, RequestRepr};
use smoltcp::wire::{IpProtocol, Ipv4Address, TcpControl};

/// The control key of the class set-ups.
pub const KEY: [u8; 16] = [3; 16];

/// Hand-offs a `handoff` or `fakefin` run can set up (one per measured frame).
pub const HANDOFFS: usize = 1000;
/// Session slots of the switch those runs use.
pub const SESSIONS: usize = 1024;

/// Every class, in report order.
pub const CLASSES: [&str; 10] = [
    "ack",
    "data",
    "syn",
    "spliced",
    "handoff",
    "fakefin",
    "arp",
    "malformed",
    "ip-forward",
    "ack-cold",
];

/// Flows of the `ack-cold` class's table.
pub const COLD_FLOWS: usize = 1 << 20;

/// What each class is, for reports.
pub fn describe(class: &str) -> &'static str {
    match class {
        "ack" => "established NATed flow, bare ACK, no options",
        "data" => "the same flow, 1448-byte data segment (full TCP checksum verified)",
        "syn" => "a new client connection's SYN, sprayed (a new tuple every frame)",
        "spliced" => "handed-off flow, client's bare ACK with timestamps and a SACK block",
        "handoff" => "a node's hand-off request (control message: MAC check, accept, reply)",
        "fakefin" => {
            "the target's ACK that confirms a hand-off; the switch fakes an ACK and a FIN to the old node"
        }
        "arp" => "ARP request for the VIP, answered",
        "malformed" => "truncated IPv4 header, dropped",
        "ack-cold" => {
            "bare ACKs of flows scattered over a table of 1M flows (each opened by a SYN), no locality"
        }
        "ip-forward" => {
            "ICMP between two back-end nodes: routed plainly (route, TTL, checksum, MACs), 60 bytes"
        }
        _ => "unknown class",
    }
}

/// The frames a class feeds, in order, to `sw`.
pub struct Run {
    /// The switch, in the state the class needs.
    pub sw: Switch<'static>,
    /// One (ingress port, frame) fed again and again, or one per measured frame.
    frames: Vec<(u8, Vec<u8>)>,
    /// The clock of every frame.
    pub now: Instant,
}

impl Run {
    /// The `i`th measured frame and its ingress port (`i` below the `n` the run was set up
    /// for; the frames repeat when a class holds fewer).
    pub fn frame(&self, i: usize) -> (u8, &[u8]) {
        let (p, f) = &self.frames[i % self.frames.len()];
        (*p, f)
    }
    /// The largest measured frame, for a buffer.
    pub fn max_len(&self) -> usize {
        self.frames.iter().map(|f| f.1.len()).max().unwrap_or(0)
    }
    /// How many measured frames the run holds (1 for a class that repeats one frame).
    pub fn distinct(&self) -> usize {
        self.frames.len()
    }
}

fn t() -> Instant {
    Instant::from_millis(1)
}
const M: FrameMeta = FrameMeta::FULL;

fn send(sw: &mut Switch, port: u8, mut f: Vec<u8>) -> Verdict {
    sw.process(port, t(), &mut f, M, &mut Discard, &mut NoMeter)
}

fn ep(a: Ipv4Address, port: u16) -> Endpoint {
    Endpoint::new(a.octets(), port)
}

fn node_addr(k: u8) -> Ipv4Address {
    Ipv4Address::new(198, 19, k, 2)
}

const CLIENT: Ipv4Address = Ipv4Address::new(198, 18, 0, 2);
const VIP: (Ipv4Address, u16) = (Ipv4Address::new(198, 18, 0, 10), 80);

fn switch(flows: usize, sessions: usize) -> Switch<'static> {
    let storage = Storage {
        flows: vec![FlowSlot::default(); flows].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![SessionSlot::default(); sessions].into(),
    };
    let mut sw = Switch::new(Config::cluster(2, KEY), storage).unwrap();
    send(&mut sw, 0, arp(CLIENT_MAC, CLIENT, VIP.0));
    for k in 1..=2u8 {
        send(
            &mut sw,
            k,
            arp(NODE_MAC, node_addr(k), Ipv4Address::new(198, 19, k, 1)),
        );
    }
    sw
}

fn macs(sw: &Switch) -> [smoltcp::wire::EthernetAddress; 3] {
    [0, 1, 2].map(|k| sw.config().ports[k].mac)
}

fn ts(v: u32, e: u32) -> Opts {
    Opts {
        ts: Some((v, e)),
        ..Opts::default()
    }
}

const SYN_OPTS: Opts = Opts {
    ts: Some((100, 0)),
    sack_perm: true,
    sack: None,
};
const SYNACK_OPTS: Opts = Opts {
    ts: Some((500, 100)),
    sack_perm: true,
    sack: None,
};
const REQ: [u8; 100] = [b'x'; 100];

/// One client connection with timestamps and SACK, its request answered by its node's ACK.
/// Returns the node it was sprayed to (1 or 2).
fn connection(sw: &mut Switch, cport: u16) -> u8 {
    let macs = macs(sw);
    let mac = |k: u8| macs[k as usize];
    let (m0, client) = (mac(0), (CLIENT, cport));
    let c = |ctl, seq, ack, p: &[u8], o| tcp_opts(m0, client, VIP, ctl, seq, ack, p, o);
    let Verdict::Forward(k) = send(sw, 0, c(TcpControl::Syn, 1000, None, &[], SYN_OPTS)) else {
        panic!("SYN not forwarded")
    };
    let node = (node_addr(k), 80);
    let s1 = tcp_opts(
        mac(k),
        node,
        client,
        TcpControl::Syn,
        5000,
        Some(1001),
        &[],
        SYNACK_OPTS,
    );
    assert_eq!(send(sw, k, s1), Verdict::Forward(0));
    send(
        sw,
        0,
        c(TcpControl::None, 1001, Some(5001), &[], ts(101, 500)),
    );
    send(
        sw,
        0,
        c(TcpControl::Psh, 1001, Some(5001), &REQ, ts(102, 500)),
    );
    let a1 = tcp_opts(
        mac(k),
        node,
        client,
        TcpControl::None,
        5001,
        Some(1101),
        &[],
        ts(501, 102),
    );
    send(sw, k, a1);
    k
}

/// The frames of one hand-off of connection `cport` from node `k` to the other node, after the
/// leg to the target is open: the control request, the forwarded request on the leg, the
/// target's ACK of it (which confirms the hand-off), and the client's next ACK (spliced, with
/// timestamps and a SACK block).
struct Handoff {
    old: u8,
    target: u8,
    request: Vec<u8>,
    forward: Vec<u8>,
    target_ack: Vec<u8>,
    client_ack: Vec<u8>,
}

fn open_leg(sw: &mut Switch, cport: u16, k: u8, counter: u64) -> Handoff {
    let macs = macs(sw);
    let mac = |k: u8| macs[k as usize];
    let target = 3 - k;
    let leg = (node_addr(k), cport);
    let dst = (node_addr(target), 80);
    let (mk, mt) = (mac(k), mac(target));
    let l = |ctl, seq, ack, p: &[u8], o| tcp_opts(mk, leg, dst, ctl, seq, ack, p, o);
    send(sw, k, l(TcpControl::Syn, 9000, None, &[], SYN_OPTS));
    let s2 = tcp_opts(
        mt,
        dst,
        leg,
        TcpControl::Syn,
        20000,
        Some(9001),
        &[],
        SYNACK_OPTS,
    );
    send(sw, target, s2);
    send(
        sw,
        k,
        l(TcpControl::None, 9001, Some(20001), &[], ts(502, 500)),
    );
    let r = RequestRepr {
        key_id: 1,
        counter,
        held_peer: ep(CLIENT, cport),
        held_local: ep(node_addr(k), 80),
        new_local: ep(leg.0, leg.1),
        new_remote: ep(dst.0, dst.1),
        consumed: 0,
        sent: 0,
    };
    let mut msg = [0u8; REQUEST_LEN];
    r.emit(&mut msg, &KEY).unwrap();
    let gw = (Ipv4Address::new(198, 19, k, 1), 7100);
    let client_ack = Opts {
        ts: Some((103, 501)),
        sack: Some((5101, 5201)),
        ..Opts::default()
    };
    Handoff {
        old: k,
        target,
        request: udp(mk, (node_addr(k), 40001), gw, &msg),
        forward: l(TcpControl::Psh, 9001, Some(20001), &REQ, ts(503, 500)),
        target_ack: tcp_opts(
            mt,
            dst,
            leg,
            TcpControl::None,
            20001,
            Some(9101),
            &[],
            ts(501, 503),
        ),
        client_ack: tcp_opts(
            mac(0),
            (CLIENT, cport),
            VIP,
            TcpControl::None,
            1101,
            Some(5001),
            &[],
            client_ack,
        ),
    }
}

fn accept(sw: &mut Switch, h: &Handoff) {
    let before = sw.counters().handoffs[0];
    assert_eq!(
        send(sw, h.old, h.request.clone()),
        Verdict::Local(knits_core::counters::LocalKind::Control)
    );
    assert_eq!(
        sw.counters().handoffs[0],
        before + 1,
        "hand-off not accepted: {:?}",
        sw.counters().handoffs
    );
}

/// Sets up `class` for `n` measured frames (`n` matters only to classes with one frame per
/// instance: syn, handoff, fakefin).
pub fn setup(class: &str, n: usize) -> Result<Run, String> {
    let n = n.max(1);
    let one = |sw: Switch<'static>, port: u8, f: Vec<u8>| Run {
        sw,
        frames: vec![(port, f)],
        now: t(),
    };
    Ok(match class {
        "ack" | "data" | "malformed" | "arp" => {
            let mut sw = switch(1024, 4);
            connection(&mut sw, 40000);
            let m0 = sw.config().ports[0].mac;
            let c = |ctl, p: &[u8]| tcp(m0, (CLIENT, 40000), VIP, ctl, 1101, Some(5001), p);
            let f = match class {
                "ack" => c(TcpControl::None, &[]),
                "data" => c(TcpControl::Psh, &[b'd'; 1448]),
                "malformed" => {
                    let mut f = c(TcpControl::None, &[]);
                    f.truncate(14 + 12);
                    f
                }
                _ => arp(CLIENT_MAC, CLIENT, VIP.0),
            };
            one(sw, 0, f)
        }
        "syn" => {
            let mut sw = switch(n + 64, 4);
            connection(&mut sw, 40000);
            let m0 = sw.config().ports[0].mac;
            // A new tuple every time: the client's address and port.
            let frames = (0..n as u32)
                .map(|k| {
                    let src = Ipv4Address::new(198, 18, 1 + (k / 60000) as u8, 2);
                    let p = 1024 + (k % 60000) as u16;
                    let mut f = tcp(m0, (src, p), VIP, TcpControl::Syn, 7000, None, &[]);
                    frames::fix_checksums(&mut f);
                    (0, f)
                })
                .collect();
            Run {
                sw,
                frames,
                now: t(),
            }
        }
        "spliced" => {
            let mut sw = switch(1024, 4);
            let k = connection(&mut sw, 40000);
            let h = open_leg(&mut sw, 40000, k, 1);
            accept(&mut sw, &h);
            send(&mut sw, h.old, h.forward.clone());
            send(&mut sw, h.target, h.target_ack.clone());
            one(sw, 0, h.client_ack)
        }
        "handoff" | "fakefin" => {
            if n > HANDOFFS {
                return Err(format!(
                    "{class}: at most {HANDOFFS} instances per run, not {n}"
                ));
            }
            // The session table has a fixed size: a hand-off request's cost grows with it
            // (docs/np-sim.md, "Calibration").
            let mut sw = switch(4 * n + 64, SESSIONS);
            let mut frames = Vec::with_capacity(n);
            for i in 0..n {
                let cport = 1024 + i as u16;
                let k = connection(&mut sw, cport);
                let h = open_leg(&mut sw, cport, k, 1 + i as u64);
                if class == "fakefin" {
                    accept(&mut sw, &h);
                    send(&mut sw, h.old, h.forward.clone());
                    frames.push((h.target, h.target_ack));
                } else {
                    frames.push((h.old, h.request));
                }
            }
            Run {
                sw,
                frames,
                now: t(),
            }
        }
        "ack-cold" => {
            let mut sw = switch(COLD_FLOWS + 64, 4);
            let m0 = sw.config().ports[0].mac;
            // Like knits-core's burst benchmark: a client per flow, opened by its SYN.
            let client = |i: u32| {
                (
                    Ipv4Address::new(198, 18, 1 + (i >> 16) as u8, (i >> 8) as u8),
                    1024 + (i & 0xff) as u16 * 200 + (i % 200) as u16,
                )
            };
            for i in 0..COLD_FLOWS as u32 {
                let f = tcp(m0, client(i), VIP, TcpControl::Syn, 1000, None, &[]);
                send(&mut sw, 0, f);
            }
            assert_eq!(sw.flow_count(), COLD_FLOWS, "ack-cold: flows not opened");
            // ACKs of flows drawn over the whole table, in a scattered order.
            let frames = (0..n.min(65_536) as u32)
                .map(|j| {
                    let i = j.wrapping_mul(2_654_435_761) % COLD_FLOWS as u32;
                    let f = tcp(m0, client(i), VIP, TcpControl::None, 1001, Some(5001), &[]);
                    (0, f)
                })
                .collect();
            Run {
                sw,
                frames,
                now: t(),
            }
        }
        "ip-forward" => {
            let sw = switch(1024, 4);
            let m1 = sw.config().ports[1].mac;
            one(
                sw,
                1,
                frames::ipv4(m1, node_addr(1), node_addr(2), IpProtocol::Icmp, &[0; 26]),
            )
        }
        other => {
            return Err(format!(
                "unknown class {other:?}; classes: {}",
                CLASSES.join(", ")
            ));
        }
    })
}
