//! The application over that TCP: the client's requests, the nodes' responses and their
//! hand-offs through the switch's control protocol.

use knits_core::wire::control::{self, Endpoint, ReplyCode, ReplyRepr, RequestRepr};

use super::driver::*;
use super::frames::*;
use super::tcp::*;
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HopState {
    Serving,
    /// Waiting for its responses to be acknowledged before it hands off request `r`.
    WaitAcked,
    /// The new leg is opening.
    Opening,
    /// The control request is out.
    Requested,
    /// Handed off; this hop is done.
    Retired,
}

#[derive(Debug, Clone)]
pub(super) struct Hop {
    pub(super) node: usize,
    pub(super) held: usize,
    /// Index of the first request in this hop's stream.
    pub(super) first_req: u32,
    /// Requests of the stream this hop dealt with (served or handed off).
    pub(super) handled: u32,
    pub(super) state: HopState,
    pub(super) leg: Option<usize>,
    pub(super) counter: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Conn {
    pub(super) measured: bool,
    pub(super) handoffs: u8,
    pub(super) responses: Vec<u32>,
    pub(super) client: usize,
    /// Node host indices in the order they will serve (for hand-off targets).
    pub(super) route: Vec<usize>,
    pub(super) hops: Vec<Hop>,
    pub(super) client_sent: u32,
    pub(super) done: bool,
}

impl Driver {
    pub(super) fn client_send_requests(&mut self, c: usize, n: u32) {
        let t = self.conns[c].client;
        let rb = self.spec.request_bytes as u64;
        // Each request in its own burst of segments, as a browser writes them.
        for _ in 0..n {
            self.tcbs[t].tx += rb;
            self.conns[c].client_sent += 1;
            self.pump_tcb(t);
        }
    }

    pub(super) fn send_control(&mut self, c: usize, h: usize) {
        let hop = &self.conns[c].hops[h];
        let held = &self.tcbs[hop.held];
        let leg = &self.tcbs[hop.leg.unwrap_or(hop.held)];
        let node = hop.node;
        let me = self.hosts[node].ip.octets();
        let rb = self.spec.request_bytes as u64;
        let consumed = hop.handled as u64 * rb;
        let consumed = consumed.min(held.rx);
        let sent = held.snd_nxt.wrapping_sub(held.iss).wrapping_sub(1) as u64;
        let counter = self.hosts[node].control_counter;
        self.hosts[node].control_counter += 1;
        let req = RequestRepr {
            key_id: 1,
            counter,
            held_peer: Endpoint::new(held.rip.octets(), held.rport),
            held_local: Endpoint::new(me, held.lport),
            new_local: Endpoint::new(me, leg.lport),
            new_remote: Endpoint::new(leg.rip.octets(), leg.rport),
            consumed,
            sent,
        };
        let mut buf = [0u8; control::REQUEST_LEN];
        if req.emit(&mut buf, &KEY).is_none() {
            return;
        }
        let hst = &self.hosts[node];
        let f = udp_frame(
            hst.mac,
            hst.gw_mac,
            (hst.ip, CONTROL_SRC),
            (hst.gw, control::DEFAULT_PORT),
            &buf,
        );
        self.conns[c].hops[h].counter = counter;
        self.conns[c].hops[h].state = HopState::Requested;
        self.pending_control.insert((node, counter), (c, h));
        if self.conns[c].measured {
            self.report.handoffs_requested += 1;
        }
        self.send(node, f);
    }

    pub(super) fn on_control_reply(&mut self, node: usize, payload: &[u8]) {
        let Ok(r) = control::Reply::new_checked(payload) else {
            self.report.stray += 1;
            return;
        };
        if !r.verify(&KEY) {
            self.report.stray += 1;
            return;
        }
        let rep = ReplyRepr::parse(&r);
        let Some((c, h)) = self.pending_control.remove(&(node, rep.counter)) else {
            return;
        };
        let measured = self.conns[c].measured;
        let hop = self.conns[c].hops[h].clone();
        let (Some(leg), held) = (hop.leg, hop.held) else {
            return;
        };
        if rep.code == ReplyCode::Accepted {
            if measured {
                self.report.handoffs_accepted += 1;
            }
            // Forward the bytes of the held stream not consumed here, then close the leg.
            let consumed = hop.handled as u64 * self.spec.request_bytes as u64;
            let unconsumed = self.tcbs[held].rx.saturating_sub(consumed);
            self.tcbs[leg].tx += unconsumed;
            self.tcbs[leg].close = true;
            self.conns[c].hops[h].state = HopState::Retired;
            // The target's accepted TCB becomes the next hop.
            let target = self.conns[c].route[h + 1];
            let key = (HTTP, self.hosts[node].ip.octets(), self.tcbs[leg].lport);
            if let Some(&tt) = self.hosts[target].tcbs.get(&key) {
                let first_req = hop.first_req + hop.handled;
                self.conns[c].hops.push(Hop {
                    node: target,
                    held: tt,
                    first_req,
                    handled: 0,
                    state: HopState::Serving,
                    leg: None,
                    counter: 0,
                });
                self.tcbs[tt].conn = c;
                // Its stream starts with the forwarded requests: `handled` counts from there.
                self.pump_tcb(leg);
                self.on_progress(tt);
            } else {
                self.pump_tcb(leg);
            }
        } else {
            *self
                .report
                .handoffs_refused
                .entry(rep.code.name().to_string())
                .or_default() += 1;
            // Refused: serve locally and close the unused leg.
            self.conns[c].hops[h].state = HopState::Serving;
            self.conns[c].handoffs = h as u8; // no further hand-offs from here
            self.tcbs[leg].close = true;
            self.pump_tcb(leg);
            self.on_progress(held);
        }
    }

    /// Something arrived on TCB `t`: let its application act.
    pub(super) fn on_progress(&mut self, t: usize) {
        let c = self.tcbs[t].conn;
        if c == usize::MAX || c >= self.conns.len() {
            // A node's TCB not (yet) tied to a connection: if the peer closed, close too.
            if self.tcbs[t].fin_rcvd {
                self.tcbs[t].close = true;
            }
            return;
        }
        match self.tcbs[t].role {
            Role::Client => self.client_progress(c),
            Role::Server => {
                if let Some(h) = self.conns[c].hops.iter().position(|h| h.held == t) {
                    self.hop_progress(c, h);
                } else if self.tcbs[t].fin_rcvd {
                    self.tcbs[t].close = true;
                }
            }
            Role::Leg => {
                if self.tcbs[t].fin_rcvd {
                    self.tcbs[t].close = true;
                }
            }
        }
    }

    pub(super) fn client_progress(&mut self, c: usize) {
        let t = self.conns[c].client;
        let conn = &self.conns[c];
        if conn.responses.is_empty() || conn.done {
            return;
        }
        let rx = self.tcbs[t].rx;
        // Responses fully received so far.
        let mut sum = 0u64;
        let mut full = 0u32;
        for r in &conn.responses {
            sum += *r as u64;
            if rx >= sum {
                full += 1;
            }
        }
        let total = sum;
        if !self.spec.pipelined && full == conn.client_sent && full < conn.responses.len() as u32 {
            self.client_send_requests(c, 1);
            return;
        }
        if rx >= total && !self.tcbs[t].close {
            self.tcbs[t].close = true;
            self.pump_tcb(t);
        }
        if rx >= total && self.tcbs[t].fin_rcvd && self.tcbs[t].fin_sent {
            let conn = &mut self.conns[c];
            conn.done = true;
            if conn.measured {
                self.report.completed += 1;
                self.report.response_bytes += total;
            }
        }
    }

    pub(super) fn hop_progress(&mut self, c: usize, h: usize) {
        let rb = self.spec.request_bytes as u64;
        loop {
            let hop = self.conns[c].hops[h].clone();
            let held = hop.held;
            match hop.state {
                HopState::Retired => {
                    // Paper IV.B 1: the switch's faked client FIN closes the old leg; close too.
                    if self.tcbs[held].fin_rcvd {
                        self.tcbs[held].close = true;
                        self.pump_tcb(held);
                    }
                    return;
                }
                HopState::Opening | HopState::Requested => return,
                HopState::WaitAcked => {
                    let tcb = &self.tcbs[held];
                    if tcb.snd_una == tcb.snd_nxt && tcb.tx == 0 {
                        self.open_leg(c, h);
                    }
                    return;
                }
                HopState::Serving => {
                    let total_reqs = self.conns[c].responses.len() as u32;
                    let req = hop.first_req + hop.handled;
                    if req >= total_reqs {
                        if self.tcbs[held].fin_rcvd {
                            self.tcbs[held].close = true;
                            self.pump_tcb(held);
                        }
                        return;
                    }
                    let received = (self.tcbs[held].rx / rb) as u32;
                    if received <= hop.handled {
                        return;
                    }
                    // Hop h hands off request h (paper V: handoff-1 moves the first request,
                    // handoff-2 the first two, each to a new node).
                    if (h as u8) < self.conns[c].handoffs && req == h as u32 {
                        self.conns[c].hops[h].state = HopState::WaitAcked;
                        continue;
                    }
                    let resp = self.conns[c].responses[req as usize] as u64;
                    self.tcbs[held].tx += resp;
                    self.conns[c].hops[h].handled += 1;
                    self.pump_tcb(held);
                }
            }
        }
    }

    /// Addition 1 done (responses acknowledged): open the new leg to the next node.
    pub(super) fn open_leg(&mut self, c: usize, h: usize) {
        let node = self.conns[c].hops[h].node;
        let target = self.conns[c].route[h + 1];
        let rip = self.hosts[target].ip;
        let leg = self.connect(node, rip, HTTP, Role::Leg, c);
        self.conns[c].hops[h].leg = Some(leg);
        self.conns[c].hops[h].state = HopState::Opening;
    }

    // --- connections ------------------------------------------------------------------------
}
