//! The `Meter` hears of the frames the per-packet path generates, not only of the work on the
//! frame it was given: the simulator charges a generated frame to the engine that made it.

use knits_core::config::Config;
use knits_core::counters::DropReason;
use knits_core::meter::Meter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use knits_testkit::frames::{CLIENT_MAC, arp_request as arp, tcp};
use knits_testkit::sink::VecSink;
use smoltcp::wire::{Ipv4Address, TcpControl};

/// Counts the `generated` records and their bytes.
#[derive(Default)]
struct Generated {
    frames: u32,
    bytes: u32,
}

impl Meter for Generated {
    fn generated(&mut self, len: u32) {
        self.frames += 1;
        self.bytes += len;
    }
}

#[test]
fn an_arp_request_sent_while_forwarding_is_metered() {
    let cfg = Config::cluster(2, [7; 16]);
    let sw_c = cfg.ports[0].mac;
    let storage = Storage {
        flows: vec![FlowSlot::default(); 64].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(64)].into(),
        sessions: vec![SessionSlot::default(); 4].into(),
    };
    let mut sw = Switch::new(cfg, storage).unwrap();
    let t = Instant::from_millis(1);
    let client = (Ipv4Address::new(198, 18, 0, 2), 40000);
    let vip = (Ipv4Address::new(198, 18, 0, 10), 80);
    let mut sink = VecSink::default();
    let mut m = Generated::default();
    let mut f = arp(CLIENT_MAC, client.0, vip.0);
    sw.process(0, t, &mut f, FrameMeta::FULL, &mut sink, &mut m);
    // The ARP reply to the client: generated with the meter at hand.
    assert_eq!((m.frames, sink.frames.len()), (1, 1));

    // No node's MAC is known yet: the sprayed SYN waits, and the switch asks for the node's
    // address. That request is made inside the forwarding step, through the metered sink.
    let mut syn = tcp(sw_c, client, vip, TcpControl::Syn, 1000, None, &[]);
    let v = sw.process(0, t, &mut syn, FrameMeta::FULL, &mut sink, &mut m);
    assert_eq!(v, Verdict::Drop(DropReason::NeighborUnknown));
    assert_eq!(sink.frames.len(), 2, "an ARP request was sent");
    assert_eq!(m.frames, 2, "and the meter heard of it");
    assert_eq!(m.bytes, 42 + 42);
}
