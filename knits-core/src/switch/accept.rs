//! Stage 8, control (the `accept` module: `wire::control` is the message format): acceptance of hand-off requests (docs/protocol.md "Acceptance").
//!
//! A request arrives as a UDP datagram to a back-end port's gateway. It is authenticated
//! (per-node key, replay window), checked against the flow table (the held connection must be
//! the sender's, the new leg must be tracked and fresh), and either refused with a reason or
//! accepted: a new binding is appended to the connection's splice session, created if this is
//! its first hand-off. The reply goes back to the proxy that asked.

use smoltcp::wire::{IpProtocol, Ipv4Address};

use super::handoff::write_eth_ip;
use super::*;

impl Switch<'_> {
    // ----------------------------------------------------------------------------------------
    // Control messages (docs/protocol.md "Acceptance rules").

    #[allow(clippy::too_many_arguments)]
    pub(super) fn control<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        port: PortId,
        now_ms: u32,
        src: Ipv4Address,
        sport: u16,
        payload: &[u8; control::REQUEST_LEN],
        sink: &mut S,
        meter: &mut M,
    ) -> Verdict {
        meter.step(Step::Decide);
        let Ok(req) = control::Request::new_checked(&payload[..]) else {
            return Verdict::Drop(DropReason::ControlMalformed);
        };
        let repr = RequestRepr::parse(&req);
        meter.mac_bytes(control::REQUEST_TAGGED as u32);
        let key_id = repr.key_id;
        let (code, hops) = 'decide: {
            let Some(key) = self.config.key(key_id).copied() else {
                break 'decide (ReplyCode::BadMac, 0);
            };
            if !req.verify(&key) {
                break 'decide (ReplyCode::BadMac, 0);
            }
            let Some(bi) = self
                .config
                .backend_index(src)
                .filter(|&i| self.config.backends.get(i).is_some_and(|b| b.port == port))
            else {
                break 'decide (ReplyCode::NotOwner, 0);
            };
            match self.replay.get(bi).map(|r| r.check(repr.counter)) {
                Some(Replay::Repeat(code, hops)) => break 'decide (code, hops),
                Some(Replay::Stale) => break 'decide (ReplyCode::Replay, 0),
                Some(Replay::Fresh) => {}
                None => break 'decide (ReplyCode::NotOwner, 0),
            }
            let (code, hops) = self.handoff(bi, port, now_ms, &repr, &mut Metered { sink, meter });
            if let Some(r) = self.replay.get_mut(bi) {
                r.record(repr.counter, code, hops);
            }
            (code, hops)
        };
        if let Some(c) = self.counters.handoffs.get_mut(code.index()) {
            *c += 1;
        }
        knits_trace!(
            "hand-off request {} from {}: {}",
            repr.counter,
            src,
            code.name()
        );
        // A request whose tag does not verify gets no answer: a signed "bad_mac" would let
        // anyone on a node's link who guesses the node's counter end that node's real hand-off
        // (the node takes the first verified reply for its counter). It is counted above.
        if code == ReplyCode::BadMac {
            return Verdict::Local(LocalKind::Control);
        }
        // Answer, signed with the request's key.
        let Some(&(kid, key)) = self.config.keys.iter().find(|(id, _)| *id == key_id) else {
            return Verdict::Local(LocalKind::Control);
        };
        let reply = ReplyRepr {
            code,
            key_id: kid,
            counter: repr.counter,
            hops,
        };
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return Verdict::Local(LocalKind::Control);
        };
        let Some(mac) = self.neighbors.get(src.octets()) else {
            return Verdict::Local(LocalKind::Control);
        };
        let mut buf = [0u8; ETH_LEN + IP_LEN + 8 + control::REPLY_LEN];
        let len = buf.len();
        write_eth_ip(
            &mut buf,
            pc.mac,
            mac,
            pc.gateway,
            src,
            IpProtocol::Udp,
            (len - ETH_LEN) as u16,
        );
        // The UDP header by hand, at constant offsets into the fixed buffer (smoltcp's
        // `fill_checksum` re-reads the length field and keeps a bounds check that can panic).
        let udp_len = (8 + control::REPLY_LEN) as u16;
        let (_, udp) = buf.split_at_mut(TCP_AT);
        udp[0..2].copy_from_slice(&self.config.control_port.to_be_bytes());
        udp[2..4].copy_from_slice(&sport.to_be_bytes());
        udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let _ = reply.emit(&mut udp[8..], &key);
        meter.mac_bytes(control::REPLY_TAGGED as u32);
        let pseudo = checksum::pseudo_header_sum(
            pc.gateway.octets(),
            src.octets(),
            IpProtocol::Udp.into(),
            udp_len,
        );
        // RFC 768: a computed checksum of zero is sent as all ones.
        let c = match !checksum::fold(checksum::sum(udp, pseudo)) {
            0 => 0xffff,
            c => c,
        };
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        self.generate(port, &buf, Generated::ControlReply, sink, meter);
        Verdict::Local(LocalKind::Control)
    }

    /// Decides a verified, fresh hand-off request from back-end `bi` (paper IV.B: "Upon
    /// reception of a hand-off request the kernel thread updates the ip_nat_info_manip
    /// structure").
    fn handoff<S: Sink + ?Sized>(
        &mut self,
        bi: usize,
        port: PortId,
        now_ms: u32,
        req: &RequestRepr,
        _sink: &mut S,
    ) -> (ReplyCode, u8) {
        let Some(node) = self.config.backends.get(bi).map(|b| b.addr.octets()) else {
            return (ReplyCode::NotOwner, 0);
        };
        if req.held_local.addr != node || req.new_local.addr != node {
            return (ReplyCode::NotOwner, 0);
        }
        let hkey = FlowKey {
            src: req.held_local.addr,
            dst: req.held_peer.addr,
            sport: req.held_local.port,
            dport: req.held_peer.port,
        };
        let mut probes = 0;
        let Some((hf, hdir)) = self.table.lookup(&hkey, &mut probes) else {
            return (ReplyCode::UnknownConnection, 0);
        };
        let Some(h) = self.table.get(hf).copied() else {
            return (ReplyCode::UnknownConnection, 0);
        };
        if hdir != Dir::Reply || h.ports[1] != port {
            return (ReplyCode::UnknownConnection, 0);
        }
        // Resolve the client connection this leg serves (paper IV.B: "a pointer to the original
        // client-server connection has been added").
        let (anchor, sess) = match h.session() {
            None => {
                if h.kind != FlowKind::Nat {
                    return (ReplyCode::UnknownConnection, 0);
                }
                (hf, None)
            }
            Some(s) => {
                // Old nodes whose legs are closed leave the history before it is checked.
                self.prune(s, now_ms);
                let Some(sess) = self.sessions.get(s).filter(|x| x.in_use) else {
                    return (ReplyCode::UnknownConnection, 0);
                };
                let Some(cur) = sess.current() else {
                    return (ReplyCode::UnknownConnection, 0);
                };
                if cur.leg as usize != hf || cur.server != node {
                    return (ReplyCode::NotOwner, 0);
                }
                if cur.phase == Phase::Pending {
                    return (ReplyCode::Busy, sess.hops);
                }
                if sess.bindings.is_full() {
                    return (ReplyCode::TooManyHops, sess.hops);
                }
                (sess.anchor as usize, Some(s))
            }
        };
        // A plain layer-4 service is never handed off (its node runs no proxy for it).
        let service = self
            .table
            .get(anchor)
            .and_then(|c| self.config.service(c.keys[0].dport));
        if service.is_some_and(|(_, s)| !s.mode.hands_off()) {
            return (ReplyCode::NotHandoffService, 0);
        }
        // Established, or half-closed by the client side only: the node has read the request
        // and the end of the client's stream, and the target gets both (docs/protocol.md
        // "Half-closed clients").
        let half_closed = h.state == TcpState::FinWait
            && h.dirs[0].has(dirflag::FIN)
            && !h.dirs[1].has(dirflag::FIN);
        if h.state != TcpState::Established && !half_closed {
            return (ReplyCode::NotEstablished, 0);
        }
        let nkey = FlowKey {
            src: req.new_local.addr,
            dst: req.new_remote.addr,
            sport: req.new_local.port,
            dport: req.new_remote.port,
        };
        let Some((nf, ndir)) = self.table.lookup(&nkey, &mut probes) else {
            return (ReplyCode::UnknownNewLeg, 0);
        };
        let Some(n) = self.table.get(nf).copied() else {
            return (ReplyCode::UnknownNewLeg, 0);
        };
        let target_ok = self
            .config
            .backend_index(Ipv4Address::from_octets(req.new_remote.addr))
            .is_some()
            && req.new_remote.addr != node;
        if ndir != Dir::Orig || n.kind != FlowKind::Routed || n.session().is_some() || !target_ok {
            return (ReplyCode::UnknownNewLeg, 0);
        }
        if n.state != TcpState::Established {
            return (ReplyCode::NotEstablished, 0);
        }
        // The new leg carries no data yet: its first byte is the first one forwarded.
        let (no, nr) = (n.dirs[0], n.dirs[1]);
        if no.nxt != no.isn.add(1) || nr.nxt != nr.isn.add(1) {
            return (ReplyCode::AnchorsOutOfRange, 0);
        }
        // Anchors, in the held leg's own space (the node's view).
        let (ho, hr) = (h.dirs[0], h.dirs[1]);
        if req.consumed >= (1 << 31) || req.sent >= (1 << 31) {
            return (ReplyCode::AnchorsOutOfRange, 0);
        }
        let p = ho.isn.add(1).add(req.consumed as u32);
        let q = hr.isn.add(1).add(req.sent as u32);
        if p.gt(ho.nxt)
            || q != hr.nxt
            || hr.has(dirflag::FIN)
            || !ho.has(dirflag::ACKED)
            || ho.ack.lt(q)
        {
            return (ReplyCode::AnchorsOutOfRange, 0);
        }
        let Some(c1) = self.table.get(anchor).copied() else {
            return (ReplyCode::UnknownConnection, 0);
        };
        // A client with timestamps needs them on every leg: the switch can remove an option
        // from a segment but cannot add one (docs/protocol.md "Options"). A client without
        // them can go to a leg with them: their timestamps are removed on the way back.
        if c1.ts_enabled() && !n.ts_enabled() {
            return (ReplyCode::OptionsIncompatible, 0);
        }
        // A session for the connection, with binding 0 = the connection as it is.
        let s = match sess {
            Some(s) => s,
            None => {
                let mut free = self.take_free_session();
                if free.is_none() && self.reclaim_session(_sink) {
                    free = self.take_free_session();
                }
                let Some(s) = free else {
                    return (ReplyCode::TableFull, 0);
                };
                let b0 = Binding {
                    leg: anchor as u32,
                    server: node,
                    server_port: port,
                    phase: Phase::Live,
                    c_start: c1.dirs[0].isn,
                    s_start: c1.dirs[1].isn,
                    c_hi: c1.dirs[0].nxt,
                    srv_ack: c1.dirs[1].ack,
                    srv_nxt: c1.dirs[1].nxt,
                    srv_ts: c1.dirs[1].ts_in,
                    ..Binding::default()
                };
                let Some(slot) = self.sessions.get_mut(s) else {
                    return (ReplyCode::TableFull, 0);
                };
                *slot = SessionSlot {
                    in_use: true,
                    anchor: anchor as u32,
                    ..SessionSlot::default()
                };
                let _ = slot.bindings.push(b0);
                self.sessions_used += 1;
                if let Some(f) = self.table.get_mut(anchor) {
                    f.link = s as u32 + 1;
                }
                s
            }
        };
        let Some(sess) = self.sessions.get_mut(s) else {
            return (ReplyCode::UnknownConnection, 0);
        };
        let Some(cur) = sess.bindings.last_mut() else {
            return (ReplyCode::UnknownConnection, 0);
        };
        let c_start = p.sub(cur.c_off);
        let s_start = q.add(cur.s_off);
        let nb = Binding {
            leg: nf as u32,
            server: req.new_remote.addr,
            server_port: n.ports[1],
            phase: Phase::Pending,
            c_start,
            c_off: SeqNumber::offset_to(c_start, no.isn.add(1)),
            s_start,
            s_off: SeqNumber::offset_to(nr.isn.add(1), s_start),
            ts_c_off: no.ts_in.wrapping_sub(c1.dirs[0].ts_in),
            ts_s_off: c1.dirs[1].ts_in.wrapping_sub(nr.ts_in),
            c_hi: c_start,
            old_nxt: no.nxt,
            old_rcv: no.ack,
            old_told: nr.ack,
            old_ts: no.ts_in,
            srv_ack: nr.ack,
            srv_nxt: nr.nxt,
            srv_ts: nr.ts_in,
            // The hand-off timer starts now, not at the held leg's last packet: that may be
            // long ago (an idle connection, a SYN of the new leg that had to be resent), and
            // the binding would be rolled back at the first poll.
            since_ms: now_ms,
            counter: req.counter,
            ..Binding::default()
        };
        match splice::transition(cur.phase, Event::Superseded) {
            Ok(Some(ph)) => cur.phase = ph,
            _ => return (ReplyCode::Busy, sess.hops),
        }
        if sess.bindings.push(nb).is_err() {
            if let Some(cur) = sess.bindings.last_mut() {
                cur.phase = Phase::Live;
            }
            return (ReplyCode::TooManyHops, sess.hops);
        }
        sess.hops = sess.hops.saturating_add(1);
        let hops = sess.hops;
        if let Some(f) = self.table.get_mut(nf) {
            f.link = s as u32 + 1;
        }
        if let Some(c) = service.and_then(|(i, _)| self.counters.handoffs_by_service.get_mut(i)) {
            *c += 1;
        }
        (ReplyCode::Accepted, hops)
    }

    // ----------------------------------------------------------------------------------------
    // Spliced flows.
}
