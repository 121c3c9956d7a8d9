//! Services on the VIP (issue 17): every service's SYNs are sprayed with NAT and counted per
//! service; a plain layer-4 service is never handed off; a bad service list is refused with an
//! error that says what to fix.

use knits_core::config::{Config, ConfigError, Service, ServiceMode};
use knits_core::counters::{DropReason, LocalKind};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use knits_core::wire::control::{Endpoint, REQUEST_LEN, ReplyCode, RequestRepr};
use knits_testkit::frames::{CLIENT_MAC, NODE_MAC, arp_request as arp, tcp, udp};
use knits_testkit::sink::Discard;
use smoltcp::wire::{Ipv4Address, TcpControl};

const KEY: [u8; 16] = [7; 16];

fn switch(cfg: Config) -> Switch<'static> {
    let storage = Storage {
        flows: vec![FlowSlot::default(); 64].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(64)].into(),
        sessions: vec![SessionSlot::default(); 4].into(),
    };
    Switch::new(cfg, storage).unwrap()
}

fn with_l4(port: u16) -> Config {
    let mut cfg = Config::cluster(2, KEY);
    cfg.services
        .push(Service {
            port,
            mode: ServiceMode::L4,
        })
        .unwrap();
    cfg
}

#[test]
fn a_layer4_service_is_sprayed_and_never_handed_off() {
    let cfg = with_l4(5201);
    let (sw_c, sw_n1, sw_n2) = (cfg.ports[0].mac, cfg.ports[1].mac, cfg.ports[2].mac);
    let mut sw = switch(cfg);
    let t = Instant::from_millis(1);
    let m = FrameMeta::FULL;
    let send = |sw: &mut Switch, port: u8, mut f: Vec<u8>| {
        sw.process(port, t, &mut f, m, &mut Discard, &mut NoMeter)
    };
    let client = (Ipv4Address::new(198, 18, 0, 2), 40000);
    let vip = (Ipv4Address::new(198, 18, 0, 10), 5201);
    let n1 = (Ipv4Address::new(198, 19, 1, 2), 5201);
    let n2 = (Ipv4Address::new(198, 19, 2, 2), 80);
    let leg = (n1.0, 50000);
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

    // The L4 service's connection: sprayed (round robin: n1) and counted for service 1.
    let syn = tcp(sw_c, client, vip, TcpControl::Syn, 1000, None, &[]);
    assert_eq!(send(&mut sw, 0, syn), Verdict::Forward(1));
    assert_eq!(sw.counters().sprayed_by_service[..2], [0, 1]);
    let synack = tcp(sw_n1, n1, client, TcpControl::Syn, 5000, Some(1001), &[]);
    assert_eq!(send(&mut sw, 1, synack), Verdict::Forward(0));
    let ack = tcp(sw_c, client, vip, TcpControl::None, 1001, Some(5001), &[]);
    assert_eq!(send(&mut sw, 0, ack), Verdict::Forward(1));
    let data = tcp(
        sw_c,
        client,
        vip,
        TcpControl::Psh,
        1001,
        Some(5001),
        b"hello",
    );
    assert_eq!(send(&mut sw, 0, data), Verdict::Forward(1));

    // n1 opens a leg to n2 and asks for a hand-off of it: refused, nothing changes.
    let l = |ctl, seq, ack: Option<u32>| tcp(sw_n1, leg, n2, ctl, seq, ack, &[]);
    assert_eq!(
        send(&mut sw, 1, l(TcpControl::Syn, 9000, None)),
        Verdict::Forward(2)
    );
    let s2 = tcp(sw_n2, n2, leg, TcpControl::Syn, 20000, Some(9001), &[]);
    assert_eq!(send(&mut sw, 2, s2), Verdict::Forward(1));
    assert_eq!(
        send(&mut sw, 1, l(TcpControl::None, 9001, Some(20001))),
        Verdict::Forward(2)
    );
    let ep = |(a, p): (Ipv4Address, u16)| Endpoint::new(a.octets(), p);
    let r = RequestRepr {
        key_id: 1,
        counter: 1,
        held_peer: ep(client),
        held_local: ep(n1),
        new_local: ep(leg),
        new_remote: ep(n2),
        consumed: 0,
        sent: 0,
    };
    let mut msg = [0u8; REQUEST_LEN];
    r.emit(&mut msg, &KEY).unwrap();
    let gw = (Ipv4Address::new(198, 19, 1, 1), 7100);
    assert_eq!(
        send(&mut sw, 1, udp(sw_n1, (n1.0, 40001), gw, &msg)),
        Verdict::Local(LocalKind::Control)
    );
    let c = sw.counters();
    assert_eq!(c.handoffs[ReplyCode::NotHandoffService.index()], 1);
    assert_eq!(c.handoffs[ReplyCode::Accepted.index()], 0);
    assert_eq!(c.handoffs_by_service, [0; 8]);
    assert_eq!(sw.session_count(), 0);
    // The connection still goes to n1.
    let more = tcp(
        sw_c,
        client,
        vip,
        TcpControl::Psh,
        1006,
        Some(5001),
        b"again",
    );
    assert_eq!(send(&mut sw, 0, more), Verdict::Forward(1));

    // A port that is no service is refused.
    let other = tcp(
        sw_c,
        (client.0, 40001),
        (vip.0, 81),
        TcpControl::Syn,
        1,
        None,
        &[],
    );
    assert_eq!(
        send(&mut sw, 0, other),
        Verdict::Drop(DropReason::VipNotServed)
    );
}

#[test]
fn a_bad_service_list_is_refused_with_what_to_fix() {
    for port in [80, 0] {
        let cfg = with_l4(port);
        let storage = Storage {
            flows: vec![FlowSlot::default(); 8].into(),
            index: vec![IndexSlot::default(); Storage::index_len_for(8)].into(),
            sessions: vec![SessionSlot::default(); 1].into(),
        };
        let err = Switch::new(cfg, storage).unwrap_err();
        assert_eq!(err, ConfigError::BadService { port });
        assert!(err.to_string().contains(&format!("service port {port}")));
    }
    let mut cfg = Config::cluster(2, KEY);
    cfg.services.clear();
    assert_eq!(cfg.validate(), Err(ConfigError::NoVipPorts));
}
