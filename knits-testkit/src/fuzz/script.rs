//! Scripted scenarios: the stateful target's seeds, and warm switches (connections established,
//! hand-offs at each stage) for the pipeline and burst targets.

use std::vec::Vec;

use knits_core::switch::Verdict;
use knits_core::wire::control::ReplyCode;

use super::cluster::{A_CLIENT, A_N1, A_VIP, P_80, P_L1};
use super::harness::Harness;
use super::ops::{At, CLIENT, SYN_OPTS, VIP, at};
use super::ops::{CtlOp, Macro, Op, SegOp, node};
use crate::frames::{F_ACK, F_FIN, F_PSH, F_SYN};

/// Runs ops on a harness and records their encoding.
pub struct Script {
    /// The harness the ops ran on.
    pub h: Harness,
    /// Header byte and encoded ops: a stateful-target input.
    pub bytes: Vec<u8>,
}

impl Script {
    /// A script on a fresh harness with this header byte.
    pub fn new(header: u8) -> Self {
        Self::with_verify(header, false)
    }

    /// Like [`Script::new`], with checksum verification on or off.
    pub fn with_verify(header: u8, verify: bool) -> Self {
        Script {
            h: Harness::new(header, verify),
            bytes: vec![header],
        }
    }

    /// Runs and records an op.
    pub fn op(&mut self, op: Op) -> Option<Verdict> {
        op.encode(&mut self.bytes);
        self.h.last = None;
        self.h.apply(&op);
        self.h.last
    }

    /// A segment from `src` to `dst` with these flags and `len` bytes, seq and ack from the model,
    /// and SYN options as [`SegOp::opts`] (WS shift 7, MSS 1460).
    pub fn seg_with(&mut self, src: At, dst: At, flags: u8, len: u8, opts: u8) -> Option<Verdict> {
        self.op(Op::Seg(SegOp {
            src: at(src),
            dst: at(dst),
            flags,
            len,
            opts,
            extra: 7,
            ..SegOp::default()
        }))
    }

    /// ARP requests for the gateway from every node and for the VIP from the client.
    pub fn arps(&mut self) {
        for n in 0..3 {
            self.op(Op::Arp {
                host: A_N1 + n,
                target: 6,
                mode: 0,
            });
        }
        self.op(Op::Arp {
            host: A_CLIENT,
            target: A_VIP,
            mode: 0,
        });
    }

    /// Runs and records a macro op.
    pub fn mac(&mut self, m: Macro, arg: u8, arg2: u8) {
        self.op(Op::Macro {
            kind: m as u8,
            arg,
            arg2,
        });
    }

    /// The client connection `c` closes plainly (client first) with node `n`.
    pub fn close_plain(&mut self, c: At, n: u8) {
        self.seg_with(c, VIP, F_ACK | F_FIN, 0, 0);
        self.seg_with(node(n), c, F_ACK | F_FIN, 0, 0);
        self.seg_with(c, VIP, F_ACK, 0, 0);
    }

    /// The node (1..=3) the last forwarded frame went to.
    pub fn last_node(&self) -> Option<u8> {
        match self.h.last {
            Some(Verdict::Forward(p)) if p >= 1 => Some(p),
            _ => None,
        }
    }

    /// Client connection `c` (client endpoint) through the handshake; returns the node it was
    /// sprayed to.
    pub fn connect(&mut self, c: At, opts: u8) -> u8 {
        self.seg_with(c, VIP, F_SYN, 0, opts);
        let n = self.last_node().unwrap_or(1);
        self.seg_with(node(n), c, F_SYN | F_ACK, 0, opts);
        self.seg_with(c, VIP, F_ACK, 0, opts & 8);
        n
    }

    /// Node `a` opens the leg `(a, P_L1)` to node `b`'s service.
    pub fn open_leg(&mut self, a: u8, b: u8, opts: u8) {
        let la = (A_N1 + a - 1, P_L1);
        self.seg_with(la, node(b), F_SYN, 0, opts);
        self.seg_with(node(b), la, F_SYN | F_ACK, 0, opts);
        self.seg_with(la, node(b), F_ACK, 0, opts & 8);
    }

    /// Node `a` asks to hand the client connection over to its leg to node `b`, `unconsumed`
    /// client bytes still to forward.
    pub fn handoff(&mut self, a: u8, b: u8, unconsumed: i16) -> Option<ReplyCode> {
        let before = self.h.sw.counters().handoffs;
        self.op(Op::Control(CtlOp {
            node: a - 1,
            mode: 0,
            held: at(CLIENT),
            held_local: P_80,
            new_port: P_L1,
            target: at(node(b)),
            consumed_adj: unconsumed,
            sent_adj: 0,
            sport: 0,
        }));
        // From the counters: the sink may have refused the reply.
        let after = self.h.sw.counters().handoffs;
        (0..ReplyCode::COUNT)
            .find(|&i| after[i] != before[i])
            .map(|i| ReplyCode::ALL[i])
    }
}

/// How far [`handoff_script`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Client connection established with data both ways, nothing handed off.
    Established,
    /// The hand-off request was accepted (binding pending).
    Accepted,
    /// The target answered: the hand-off holds, the old node is being retired.
    Confirmed,
    /// The old node's legs are closed.
    Retired,
    /// The client connection is closed.
    Closed,
}

/// The hand-off of ARCHITECTURE.md, run on a fresh switch up to `stage`. `opts` are the SYN
/// options of every connection (see [`SegOp::opts`]).
pub fn handoff_script(header: u8, opts: u8, stage: Stage) -> Script {
    handoff_on(Script::new(header), opts, stage)
}

/// [`handoff_script`] on a given script.
pub fn handoff_on(mut s: Script, opts: u8, stage: Stage) -> Script {
    s.arps();
    let a = s.connect(CLIENT, opts);
    let b = a % 3 + 1;
    let na = node(a);
    let ts = opts & 8;
    // Two pipelined requests of 40 bytes; A serves the first with 100 bytes.
    s.seg_with(CLIENT, VIP, F_ACK | F_PSH, 80, ts);
    s.seg_with(na, CLIENT, F_ACK | F_PSH, 100, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    if stage == Stage::Established {
        return s;
    }
    s.open_leg(a, b, opts);
    let code = s.handoff(a, b, 40);
    assert_eq!(
        code,
        Some(ReplyCode::Accepted),
        "the scripted hand-off is accepted"
    );
    if stage == Stage::Accepted {
        return s;
    }
    // A forwards the second request on the leg; B acknowledges and answers.
    let la = (A_N1 + a - 1, P_L1);
    s.seg_with(la, node(b), F_ACK | F_PSH, 40, ts);
    s.seg_with(node(b), la, F_ACK, 0, ts);
    s.seg_with(node(b), la, F_ACK | F_PSH, 120, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    if stage == Stage::Confirmed {
        return s;
    }
    // A closes its side of the leg; the switch fakes the client's FIN to A on c1.
    s.seg_with(la, node(b), F_ACK | F_FIN, 0, ts);
    s.op(Op::Tick {
        mode: 0,
        amount: 300,
    });
    s.seg_with(na, CLIENT, F_ACK, 0, ts);
    s.seg_with(na, CLIENT, F_ACK | F_FIN, 0, ts);
    s.op(Op::Tick {
        mode: 0,
        amount: 300,
    });
    if stage == Stage::Retired {
        return s;
    }
    s.seg_with(CLIENT, VIP, F_ACK | F_FIN, 0, ts);
    s.seg_with(node(b), la, F_ACK | F_FIN, 0, ts);
    s.seg_with(CLIENT, VIP, F_ACK, 0, ts);
    s.op(Op::Tick {
        mode: 1,
        amount: 130,
    });
    s
}

/// Scenarios of the behaviour of real clients and proxies (tuple reuse, long hand-off chains,
/// clients without timestamps or SACK, half-closed clients, full tables), built from macros.
/// They are stateful seeds (`seed-<name>`); `knits-core/tests/fuzz_corpus.rs` asserts that
/// each reaches what it is named after.
pub fn macro_scenarios() -> Vec<(&'static str, Script)> {
    let drain = Op::Tick { mode: 2, amount: 0 };
    let mut out = Vec::new();
    {
        // Handed off, closed by the server, the port reused at once, handed off again.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0, 10);
        s.mac(Macro::Close, 0, 0);
        s.mac(Macro::Reconnect, 0, 0);
        s.mac(Macro::Handoff, 2, 20);
        s.mac(Macro::Request, 0, 5);
        s.mac(Macro::Close, 0x40, 0);
        s.op(drain.clone());
        out.push(("reuse-after-handoff", s));
    }
    {
        // An old duplicate SYN (before the closed connection's sequence numbers, no
        // timestamp) on the closed tuple: refused, the TIME-WAIT entry stays.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !8);
        s.mac(Macro::Request, 0, 30);
        s.mac(Macro::Close, 0, 0);
        s.mac(Macro::Reconnect, 8 | 2, 0);
        s.op(drain.clone());
        out.push(("reuse-old-duplicate", s));
    }
    {
        // Twenty hand-offs of one connection, every node to every other, both leg ports.
        let mut s = Script::new(2);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        for i in 0..20u8 {
            s.mac(Macro::Handoff, ((i % 2) << 1) | ((i / 2 % 2) << 3), i);
        }
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("handoff-chain", s));
    }
    {
        // A client without timestamps to legs with them (and without): stripped towards it.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !8);
        s.mac(Macro::Handoff, 0, 0x80 | 9);
        s.mac(Macro::Handoff, 0x10 | 2, 3);
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("client-without-timestamps", s));
    }
    {
        // A client without SACK; the target's ACK carries a SACK block: stripped towards it.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS & !4);
        s.mac(Macro::Handoff, 0, 0x80 | 17);
        s.mac(Macro::Handoff, 0x20 | 2, 0x80);
        s.mac(Macro::Close, 0x40, 0);
        s.op(drain.clone());
        out.push(("client-without-sack", s));
    }
    {
        // A client with timestamps cannot go to a leg without them: refused, the leg reset.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0x10, 4);
        s.mac(Macro::Close, 0, 0);
        s.op(drain.clone());
        out.push(("options-incompatible", s));
    }
    {
        // A half-closed client: request and FIN, then the hand-off carries the FIN on.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Request, 0x40, 20);
        s.mac(Macro::Handoff, 0, 6);
        s.op(drain.clone());
        out.push(("client-half-close", s));
    }
    {
        // A hand-off left in flight, more client data, a second hand-off asked meanwhile.
        let mut s = Script::new(0);
        s.arps();
        s.connect(CLIENT, SYN_OPTS);
        s.mac(Macro::Handoff, 0x40, 5);
        s.mac(Macro::Request, 0, 7);
        s.mac(Macro::Handoff, 0x08 | 2, 9);
        s.op(drain.clone());
        out.push(("handoff-in-flight", s));
    }
    {
        // A table of four flows full of connections in TIME-WAIT: a new one recycles one.
        let mut s = Script::new(1 | 4);
        s.arps();
        s.op(Op::Arp {
            host: 1,
            target: A_VIP,
            mode: 0,
        });
        for p in 1..5u8 {
            let c: At = (1, p);
            let n = s.connect(c, SYN_OPTS);
            s.close_plain(c, n);
        }
        s.connect(CLIENT, SYN_OPTS);
        s.op(drain);
        out.push(("table-full-recycle", s));
    }
    out
}

/// A harness in the warm state `sel & 3` selects: fresh, established, hand-off accepted,
/// hand-off confirmed (the pipeline and burst targets' first byte).
pub fn warm_harness(sel: u8, verify: bool) -> Harness {
    match sel & 3 {
        0 => Harness::new(0, verify),
        n => {
            let stage = [
                Stage::Established,
                Stage::Established,
                Stage::Accepted,
                Stage::Confirmed,
            ][n as usize];
            handoff_on(Script::with_verify(0, verify), SYN_OPTS, stage).h
        }
    }
}
