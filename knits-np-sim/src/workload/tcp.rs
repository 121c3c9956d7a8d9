//! The hosts' small TCP: connection blocks, segments out, segments in.

use std::collections::HashMap;

use knits_core::config::PortId;
use smoltcp::wire::{
    EthernetAddress, Ipv4Address, TcpControl, TcpRepr, TcpSeqNumber, TcpTimestampRepr,
};

use super::driver::*;
use super::frames::*;
use super::handoff::*;
use super::*;

#[derive(Debug, Clone)]
pub(super) struct Host {
    pub(super) ip: Ipv4Address,
    pub(super) mac: EthernetAddress,
    pub(super) port: PortId,
    pub(super) gw: Ipv4Address,
    pub(super) gw_mac: EthernetAddress,
    /// TSval offset: every host's clock differs, as the paper's timestamp rewriting assumes.
    pub(super) ts_offset: u32,
    pub(super) next_port: u16,
    pub(super) control_counter: u64,
    /// (local port, remote address, remote port) -> TCB.
    pub(super) tcbs: HashMap<(u16, [u8; 4], u16), usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum St {
    SynSent,
    SynRcvd,
    Established,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The client side of a measured or preloaded connection.
    Client,
    /// A node serving a stream (the held connection of a hop).
    Server,
    /// A node's new leg towards a hand-off target.
    Leg,
}

#[derive(Debug, Clone)]
pub(super) struct Tcb {
    pub(super) host: usize,
    pub(super) lport: u16,
    pub(super) rip: Ipv4Address,
    pub(super) rport: u16,
    pub(super) role: Role,
    pub(super) conn: usize,
    pub(super) st: St,
    pub(super) iss: u32,
    pub(super) snd_una: u32,
    pub(super) snd_nxt: u32,
    pub(super) rcv_nxt: u32,
    pub(super) ts: bool,
    pub(super) ts_recent: u32,
    pub(super) mss: u16,
    /// Bytes the application queued and TCP has not sent yet.
    pub(super) tx: u64,
    /// Send a FIN once `tx` is drained.
    pub(super) close: bool,
    pub(super) fin_sent: bool,
    pub(super) fin_rcvd: bool,
    /// In-order payload bytes received.
    pub(super) rx: u64,
    pub(super) unacked_segs: u32,
}

pub(super) const WINDOW: u32 = 65535;

impl Driver {
    pub(super) fn tsval(&self, host: usize) -> u32 {
        self.hosts[host]
            .ts_offset
            .wrapping_add((self.now_us / 1000) as u32)
    }

    pub(super) fn emit_seg(
        &mut self,
        t: usize,
        control: TcpControl,
        seq: u32,
        payload_len: usize,
        syn_opts: bool,
    ) {
        let tcb = &self.tcbs[t];
        let host = tcb.host;
        let payload = vec![0x61u8; payload_len];
        let ack = if tcb.st == St::SynSent {
            None
        } else {
            Some(TcpSeqNumber(tcb.rcv_nxt as i32))
        };
        let timestamp = if tcb.ts {
            Some(TcpTimestampRepr::new(self.tsval(host), tcb.ts_recent))
        } else {
            None
        };
        let tcb = &self.tcbs[t];
        let repr = TcpRepr {
            src_port: tcb.lport,
            dst_port: tcb.rport,
            control,
            seq_number: TcpSeqNumber(seq as i32),
            ack_number: ack,
            window_len: WINDOW as u16,
            window_scale: None,
            max_seg_size: if syn_opts { Some(tcb.mss) } else { None },
            sack_permitted: syn_opts && !self.spec.min_frames,
            sack_ranges: [None, None, None],
            timestamp,
            payload: &payload,
        };
        let h = &self.hosts[host];
        let f = tcp_frame(h.mac, h.gw_mac, h.ip, tcb.rip, &repr);
        self.tcbs[t].unacked_segs = 0;
        self.send(host, f);
    }

    pub(super) fn send_ack(&mut self, t: usize) {
        let seq = self.tcbs[t].snd_nxt;
        self.emit_seg(t, TcpControl::None, seq, 0, false);
    }

    /// Sends what the window allows, then the FIN if asked for.
    pub(super) fn pump_tcb(&mut self, t: usize) {
        let mss = self.tcbs[t].mss as u64;
        loop {
            let tcb = &self.tcbs[t];
            if tcb.st != St::Established || tcb.fin_sent {
                return;
            }
            let in_flight = tcb.snd_nxt.wrapping_sub(tcb.snd_una) as u64;
            if tcb.tx > 0 {
                if in_flight + 1 > WINDOW as u64 {
                    return;
                }
                let n = tcb.tx.min(mss).min(WINDOW as u64 - in_flight) as usize;
                let last = n as u64 == tcb.tx;
                let seq = tcb.snd_nxt;
                let control = if last {
                    TcpControl::Psh
                } else {
                    TcpControl::None
                };
                self.emit_seg(t, control, seq, n, false);
                let tcb = &mut self.tcbs[t];
                tcb.snd_nxt = tcb.snd_nxt.wrapping_add(n as u32);
                tcb.tx -= n as u64;
                continue;
            }
            if tcb.close {
                let seq = tcb.snd_nxt;
                self.emit_seg(t, TcpControl::Fin, seq, 0, false);
                let tcb = &mut self.tcbs[t];
                tcb.snd_nxt = tcb.snd_nxt.wrapping_add(1);
                tcb.fin_sent = true;
            }
            return;
        }
    }

    pub(super) fn new_tcb(
        &mut self,
        host: usize,
        lport: u16,
        rip: Ipv4Address,
        rport: u16,
        role: Role,
        conn: usize,
    ) -> usize {
        let iss = self.rng.next_u32();
        let tcb = Tcb {
            host,
            lport,
            rip,
            rport,
            role,
            conn,
            st: St::SynSent,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            rcv_nxt: 0,
            ts: !self.spec.min_frames,
            ts_recent: 0,
            mss: self.spec.mss_eff(),
            tx: 0,
            close: false,
            fin_sent: false,
            fin_rcvd: false,
            rx: 0,
            unacked_segs: 0,
        };
        self.tcbs.push(tcb);
        let id = self.tcbs.len() - 1;
        self.hosts[host]
            .tcbs
            .insert((lport, rip.octets(), rport), id);
        id
    }

    pub(super) fn connect(
        &mut self,
        host: usize,
        rip: Ipv4Address,
        rport: u16,
        role: Role,
        conn: usize,
    ) -> usize {
        let h = &mut self.hosts[host];
        let lport = h.next_port;
        h.next_port = h.next_port.wrapping_add(1).max(1024);
        let t = self.new_tcb(host, lport, rip, rport, role, conn);
        self.by_opener
            .insert((self.hosts[host].ip.octets(), lport), conn);
        let iss = self.tcbs[t].iss;
        self.emit_seg(t, TcpControl::Syn, iss, 0, true);
        self.tcbs[t].snd_nxt = iss.wrapping_add(1);
        t
    }

    pub(super) fn on_tcp(
        &mut self,
        host: usize,
        src: Ipv4Address,
        seg: &TcpRepr,
        payload_len: usize,
        psh: bool,
    ) {
        let key = (seg.dst_port, src.octets(), seg.src_port);
        let t = match self.hosts[host].tcbs.get(&key) {
            Some(&t) => t,
            None => {
                if seg.control == TcpControl::Syn
                    && seg.ack_number.is_none()
                    && seg.dst_port == HTTP
                    && host != 0
                {
                    // A node accepts: which connection it belongs to is settled by the caller's
                    // bookkeeping (`adopt`), so mark it unowned for now.
                    let t = self.new_tcb(
                        host,
                        seg.dst_port,
                        src,
                        seg.src_port,
                        Role::Server,
                        usize::MAX,
                    );
                    let tcb = &mut self.tcbs[t];
                    tcb.st = St::SynRcvd;
                    tcb.rcv_nxt = (seg.seq_number.0 as u32).wrapping_add(1);
                    tcb.ts = seg.timestamp.is_some() && tcb.ts;
                    if let Some(ts) = seg.timestamp {
                        tcb.ts_recent = ts.tsval;
                    }
                    let iss = tcb.iss;
                    self.emit_seg(t, TcpControl::Syn, iss, 0, true);
                    self.tcbs[t].snd_nxt = iss.wrapping_add(1);
                    self.adopt(host, t);
                } else {
                    self.report.stray += 1;
                }
                return;
            }
        };
        if let Some(ts) = seg.timestamp {
            self.tcbs[t].ts_recent = ts.tsval;
        }
        if seg.control == TcpControl::Rst {
            self.tcbs[t].st = St::Closed;
            self.report.stray += 1;
            return;
        }
        // ACK processing.
        if let Some(ack) = seg.ack_number {
            let ack = ack.0 as u32;
            let tcb = &mut self.tcbs[t];
            if tcb.st == St::SynSent && seg.control == TcpControl::Syn {
                tcb.st = St::Established;
                tcb.snd_una = ack;
                tcb.rcv_nxt = (seg.seq_number.0 as u32).wrapping_add(1);
                tcb.ts = tcb.ts && seg.timestamp.is_some();
                self.send_ack(t);
                self.on_established(t);
                return;
            }
            if tcb.st == St::SynRcvd && ack == tcb.snd_nxt {
                tcb.st = St::Established;
            }
            let in_flight = tcb.snd_nxt.wrapping_sub(tcb.snd_una);
            let acked = ack.wrapping_sub(tcb.snd_una);
            if acked > 0 && acked <= in_flight {
                tcb.snd_una = ack;
            }
        }
        let tcb = &self.tcbs[t];
        if tcb.st == St::Closed || tcb.st == St::SynSent {
            return;
        }
        // Data and FIN, in order only (nothing is lost or reordered on this wire).
        let seq = seg.seq_number.0 as u32;
        let mut ack_now = false;
        if payload_len > 0 || seg.control == TcpControl::Fin {
            if seq != tcb.rcv_nxt {
                // A duplicate or a gap: answer with an ACK of what we have.
                self.send_ack(t);
                return;
            }
            let tcb = &mut self.tcbs[t];
            tcb.rcv_nxt = tcb.rcv_nxt.wrapping_add(payload_len as u32);
            tcb.rx += payload_len as u64;
            tcb.unacked_segs += (payload_len > 0) as u32;
            if seg.control == TcpControl::Fin {
                tcb.rcv_nxt = tcb.rcv_nxt.wrapping_add(1);
                tcb.fin_rcvd = true;
                ack_now = true;
            }
            // Delayed ACK as Linux does it for a bulk stream: every second segment, and at once at
            // the end of a burst (PSH).
            if tcb.unacked_segs >= 2 || psh {
                ack_now = true;
            }
        }
        if ack_now {
            self.send_ack(t);
        }
        self.on_progress(t);
        self.pump_tcb(t);
    }

    // --- the application: client, proxy, hand-off ------------------------------------------

    /// A node accepted a connection: find the connection (and hop) it belongs to, by the
    /// address and port of the side that opened it.
    pub(super) fn adopt(&mut self, node: usize, t: usize) {
        let key = (self.tcbs[t].rip.octets(), self.tcbs[t].rport);
        if let Some(c) = self.by_opener.remove(&key) {
            self.tcbs[t].conn = c;
            let conn = &mut self.conns[c];
            if conn.hops.is_empty() {
                // A client connection (or a forward-scenario one): the first hop.
                conn.hops.push(Hop {
                    node,
                    held: t,
                    first_req: 0,
                    handled: 0,
                    state: HopState::Serving,
                    leg: None,
                    counter: 0,
                });
                if conn.route.first() != Some(&node) {
                    // The switch chose the first node; plan the hand-off targets after it.
                    let n = self.spec.backends as usize;
                    conn.route = (0..3).map(|k| 1 + (node - 1 + k) % n).collect();
                }
            }
        }
    }

    pub(super) fn on_established(&mut self, t: usize) {
        let tcb = &self.tcbs[t];
        let c = tcb.conn;
        if c == usize::MAX {
            return;
        }
        match tcb.role {
            Role::Client => {
                let conn = &self.conns[c];
                if conn.responses.is_empty() {
                    return; // preloaded idle connection
                }
                let n = if self.spec.pipelined {
                    conn.responses.len() as u32
                } else {
                    1
                };
                self.client_send_requests(c, n);
            }
            Role::Leg => {
                // Ask the switch to splice.
                let Some(h) = self.conns[c].hops.iter().position(|h| h.leg == Some(t)) else {
                    return;
                };
                self.send_control(c, h);
            }
            Role::Server => {}
        }
    }
}
