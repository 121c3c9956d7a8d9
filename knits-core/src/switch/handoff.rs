//! The spliced half of the pipeline: hand-off requests, translation of spliced flows, the
//! faked packets of paper IV.B, roll-back and retirement. See docs/protocol.md.

use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Address, Ipv4Packet,
    TcpPacket,
};

use super::rewrite::{Xlate, rewrite, translated};
use super::*;

/// One direction of a spliced flow's translation; client to server and server to client are
/// mirror images of each other with the offsets swapped.
struct Mirror {
    /// The 4-tuple the receiver expects.
    to: FlowKey,
    /// Added to the sender's sequence numbers.
    seq_off: u32,
    /// Subtracted from acknowledgments and SACK edges (the other direction's offset).
    back_off: u32,
    /// Added to TSval.
    ts_off: u32,
    /// Subtracted from TSecr (the other direction's clock offset).
    echo_off: u32,
    /// Window-scale shift of the sender's leg, and of the receiver's.
    shifts: (u8, u8),
    /// Send the newest TSval the receiver has seen instead of a translated one.
    freeze_ts: bool,
    /// The part of the sender's sequence space whose SACK blocks concern this receiver.
    sack_keep: Option<(Option<SeqNumber>, Option<SeqNumber>)>,
    /// Options the receiver's connection did not negotiate: (timestamps, SACK). They are
    /// removed instead of translated (docs/protocol.md "Options").
    strip: (bool, bool),
}

impl Mirror {
    /// The rewrite for `seg`; `seen` is what the receiver has been delivered so far, below which
    /// neither the acknowledgment nor the TSval may fall (RFC 7323 PAWS, RFC 5961 5.2).
    fn xlate(&self, seg: &Seg, seen: &table::DirState) -> Xlate {
        let mut ack = seg.ack.sub(self.back_off);
        if seen.has(dirflag::ACKED) {
            ack = ack.max(seen.ack);
        }
        let ts = seg.opts.ts_at.filter(|_| !self.strip.0).map(|_| {
            let v = seg.opts.tsval.wrapping_add(self.ts_off);
            let v = if !self.freeze_ts && v.wrapping_sub(seen.ts_in) as i32 >= 0 {
                v
            } else {
                seen.ts_in
            };
            (v, seg.opts.tsecr.wrapping_sub(self.echo_off))
        });
        Xlate {
            src: Some((self.to.src, self.to.sport)),
            dst: Some((self.to.dst, self.to.dport)),
            seq: Some(seg.seq.add(self.seq_off)),
            ack: seg.ackf().then_some(ack),
            win: Some(rescale_window(seg.win, self.shifts.0, self.shifts.1)),
            ts,
            sack_off: self.back_off,
            sack_keep: self.sack_keep,
            strip_ts: self.strip.0 && seg.opts.ts_at.is_some(),
            strip_sack: self.strip.1 && seg.opts.sack_blocks > 0,
            clear_fin: false,
        }
    }
}

impl<'a> Switch<'a> {
    /// Binding `k` of session `s`, copied. Callers index with values they have just looked up,
    /// so `None` means the switch's own state contradicts itself: the frame is dropped and
    /// counted as `internal` (or the timer step skipped) instead of panicking.
    fn binding(&self, s: usize, k: usize) -> Option<Binding> {
        self.sessions.get(s)?.bindings.get(k).copied()
    }

    fn binding_mut(&mut self, s: usize, k: usize) -> Option<&mut Binding> {
        self.sessions.get_mut(s)?.bindings.get_mut(k)
    }

    pub(super) fn anchor_of(&self, s: usize) -> Option<usize> {
        self.sessions.get(s).map(|x| x.anchor as usize)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn spliced<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        fi: usize,
        dir: Dir,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        // The session record; the flow records each path reads are counted where it reads them.
        p.meter.table_entry(1);
        let Some(sess) = self.sessions.get(s).filter(|x| x.in_use) else {
            return Verdict::Drop(DropReason::StaleLeg);
        };
        let anchor = sess.anchor as usize;
        if fi == anchor && dir == Dir::Orig {
            let v = self.client_to_server(s, anchor, now_ms, seg, p);
            self.prune(s, now_ms);
            return v;
        }
        let Some(k) = sess.binding_of_leg(fi) else {
            // The first node's connection after its binding left the history: only a resent
            // FIN (the faked final ACK was lost) still comes, and is answered.
            if seg.fin() && !seg.rst() && dir == Dir::Reply {
                let (port, ts) = self
                    .table
                    .get(fi)
                    .map_or((0, false), |f| (f.ports[1], f.ts_enabled()));
                self.answer_late_fin(port, seg, ts, metered!(p));
                return Verdict::Local(LocalKind::TeardownAbsorbed);
            }
            return Verdict::Drop(DropReason::StaleLeg);
        };
        let v = match dir {
            Dir::Reply => self.on_server_packet(s, k, fi, now_ms, seg, p),
            Dir::Orig => self.on_old_node_packet(s, k, fi, now_ms, seg, p),
        };
        // Binding indices are stable while a packet is handled; retired ones go afterwards.
        self.prune(s, now_ms);
        v
    }

    /// Removes retired bindings from the front of the history, with their legs: once its old
    /// node's legs are closed nothing can arrive that needs a binding (docs/protocol.md
    /// "Retiring the old node", step 5). Only from the front: client segments pick their
    /// binding by sequence ranges, and a gap would send an older one to the wrong node.
    pub(super) fn prune(&mut self, s: usize, now_ms: u32) {
        let Some(anchor) = self.anchor_of(s) else {
            return;
        };
        while let Some(sess) = self.sessions.get_mut(s) {
            if sess.bindings.len() < 2 {
                break;
            }
            let Some(b0) = sess.bindings.first() else {
                break;
            };
            // A leg waits for its old node's reset too (it follows the FIN's ACK at once),
            // unless the node never sends it.
            let leg_done = b0.leg == anchor as u32
                || b0.old_reset
                || now_ms.wrapping_sub(b0.teardown_ms) >= FORCE_RETIRE_MS;
            // And every client byte of the binding's range must be acknowledged by its server:
            // until then the client may resend some of them, which only this binding routes
            // to the node that needs them (a teardown forced after lost FINs would lose them).
            let drained = sess
                .bindings
                .get(1)
                .is_none_or(|next| b0.srv_ack.ge(next.c_start.add(b0.c_off)));
            if b0.phase != Phase::Retired || !leg_done || !drained {
                break;
            }
            let leg = b0.leg as usize;
            sess.bindings.remove(0);
            if leg != anchor {
                self.counters.closed += 1;
                self.table.remove(leg);
            }
            self.event(FlowEvent::BindingRemoved);
        }
    }

    /// Paper III.B steps 13-14: the client's packets, mapped onto the binding their sequence
    /// (data) or acknowledgment (bare ACK) numbers belong to.
    fn client_to_server<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        anchor: usize,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        // What is needed of the client connection, not a copy of its record.
        let Some((in_port, vip_port, c1_shift)) = self
            .table
            .get(anchor)
            .map(|c1| (c1.ports[0], c1.keys[0].dport, c1.shift(Dir::Orig)))
        else {
            return Verdict::Drop(DropReason::UnknownFlow);
        };
        p.meter.table_entry(1);
        self.track(anchor, Dir::Orig, in_port, now_ms, seg);
        // The client's RST closed its own connection (exact at its next sequence number, see
        // `FlowSlot::track`): the leg it is forwarded on closes with it, below.
        let client_reset = seg.rst()
            && self
                .table
                .get(anchor)
                .is_some_and(|c1| c1.state == TcpState::TimeWait);
        let Some(sess) = self.sessions.get_mut(s) else {
            return Verdict::Drop(DropReason::Internal);
        };
        // A client RST aborts the connection: it goes to the current server. (It may carry no
        // ACK, so its acknowledgment field says nothing about the binding; retiring nodes are
        // the switch's to close, paper IV.B 1.)
        let pick = if seg.rst() {
            sess.bindings.len().checked_sub(1)
        } else {
            sess.pick_for_client(seg.seq, seg.len + seg.fin() as u32, seg.ack)
        };
        let Some(k) = pick else {
            return Verdict::Drop(DropReason::StaleLeg);
        };
        // Where the next binding's server data starts in the client's space: the client's SACK
        // blocks beyond it (or before this binding's start) are about another server's data.
        let next_start = sess.bindings.get(k + 1).map(|n| n.s_start);
        let Some(b) = sess.bindings.get_mut(k) else {
            return Verdict::Drop(DropReason::Internal);
        };
        if seg.len > 0 || seg.fin() {
            let end = seg.seq.add(seg.len + seg.fin() as u32);
            if end.gt(b.c_hi) {
                b.c_hi = end;
            }
        }
        let b = *b;
        p.meter.step(Step::Rewrite);
        let out = Out {
            port: b.server_port,
            next_hop: Ipv4Address::from_octets(b.server),
        };
        if b.leg as usize == anchor {
            // Binding 0: the plain DNAT of the sprayed connection.
            let x = Xlate {
                dst: Some((b.server, vip_port)),
                sack_keep: Some((None, next_start)),
                ..Xlate::default()
            };
            if !rewrite(p.frame, p.meta, seg, &x, p.meter) {
                return Verdict::Drop(DropReason::Internal);
            }
        } else {
            let Some(leg) = self.table.get(b.leg as usize) else {
                return Verdict::Drop(DropReason::StaleLeg);
            };
            p.meter.table_entry(1);
            let leg_port = leg.ports[0];
            let x = Mirror {
                to: leg.keys[1].reversed(),
                seq_off: b.c_off,
                back_off: b.s_off,
                ts_off: b.ts_c_off,
                echo_off: b.ts_s_off,
                shifts: (c1_shift, leg.shift(Dir::Orig)),
                freeze_ts: false,
                sack_keep: Some((Some(b.s_start), next_start)),
                strip: (!leg.ts_enabled(), !leg.sack_enabled()),
            }
            .xlate(seg, &leg.dirs[0]);
            if !rewrite(p.frame, p.meta, seg, &x, p.meter) {
                return Verdict::Drop(DropReason::Internal);
            }
            self.count_strips(&x);
            let t = translated(seg, &x);
            self.track(b.leg as usize, Dir::Orig, leg_port, now_ms, &t);
            if client_reset && let Some(leg) = self.table.get_mut(b.leg as usize) {
                leg.reset_with_client();
            }
        }
        if !self.set_macs(p.frame, &out, metered!(p)) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    /// A packet from the server of binding `k` on its leg.
    fn on_server_packet<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        k: usize,
        fi: usize,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        // A SYN-ACK of a new leg arriving after the hand-off (a retransmission or a duplicate)
        // belongs to the old node's handshake, long completed; translated, it would reach the
        // client as a SYN-ACK in the middle of its connection. If the target still waits for
        // the handshake's last ACK, the old node's forwarded bytes (or their retransmission)
        // complete it. Checked before anything is tracked: a dropped p.frame changes nothing.
        // (The binding's index says nothing: older bindings leave the history. Its leg does:
        // only the original binding's "leg" is the client connection itself.)
        let Some(anchor) = self.anchor_of(s) else {
            return Verdict::Drop(DropReason::Internal);
        };
        let on_leg = fi != anchor;
        if seg.syn() && on_leg {
            return Verdict::Drop(DropReason::LegHandshake);
        }
        if fi != anchor {
            let port = self.table.get(fi).map(|f| f.ports[1]).unwrap_or(0);
            self.track(fi, Dir::Reply, port, now_ms, seg);
        }
        // The server's own view, raw.
        {
            let Some(b) = self.binding_mut(s, k) else {
                return Verdict::Drop(DropReason::Internal);
            };
            if seg.ackf() && seg.ack.gt(b.srv_ack) {
                b.srv_ack = seg.ack;
            }
            let end = seg.seq.add(seg.seq_len());
            if end.gt(b.srv_nxt) {
                b.srv_nxt = end;
            }
            if seg.opts.ts_at.is_some() && seg.opts.tsval.wrapping_sub(b.srv_ts) as i32 > 0 {
                b.srv_ts = seg.opts.tsval;
            }
        }
        let Some(b) = self.binding(s, k) else {
            return Verdict::Drop(DropReason::Internal);
        };
        if matches!(b.phase, Phase::Stale | Phase::Retired) {
            return self.old_node_inbound(s, k, now_ms, seg, p);
        }
        // Current binding.
        let sent_data = b.srv_nxt.gt(b.s_start.sub(b.s_off).add(1)) && on_leg;
        if seg.rst() && b.phase == Phase::Pending && !sent_data {
            // The target reset the new leg before answering: roll back (docs/protocol.md).
            self.rollback(s, metered!(p));
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        if on_leg {
            self.tell_old_node(s, k, seg, metered!(p));
            if b.phase == Phase::Pending {
                let Some(prev) = k.checked_sub(1).and_then(|j| self.binding(s, j)) else {
                    return Verdict::Drop(DropReason::Internal);
                };
                let need = prev.c_hi.max(b.c_start).add(b.c_off);
                if (seg.ackf() && seg.ack.ge(need)) || seg.len > 0 {
                    self.confirm(s, k, now_ms, metered!(p));
                }
            }
        }
        self.translate_to_client(s, k, fi, now_ms, seg, p)
    }

    /// Translates a server packet of binding `k` to the client (paper III.B step 12).
    fn translate_to_client<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        k: usize,
        fi: usize,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let (Some(anchor), Some(b)) = (self.anchor_of(s), self.binding(s, k)) else {
            return Verdict::Drop(DropReason::Internal);
        };
        let (Some(c1), Some(leg)) = (self.table.get(anchor), self.table.get(fi)) else {
            return Verdict::Drop(DropReason::StaleLeg);
        };
        p.meter.table_entry(if fi == anchor { 1 } else { 2 });
        p.meter.step(Step::Rewrite);
        let vip = c1.keys[0];
        // The mirror image of the client-to-server translation. A retiring server's late packets
        // carry the newest TSval the client has already seen: the next binding's clock offset
        // was fixed from that value when it took over, so a later one from the old server would
        // reach the next server as a TSecr from its future.
        let x = Mirror {
            to: vip.reversed(),
            seq_off: b.s_off,
            back_off: b.c_off,
            ts_off: b.ts_s_off,
            echo_off: b.ts_c_off,
            shifts: (leg.shift(Dir::Reply), c1.shift(Dir::Reply)),
            freeze_ts: matches!(b.phase, Phase::Stale | Phase::Retired),
            sack_keep: None,
            strip: (!c1.ts_enabled(), !c1.sack_enabled()),
        }
        .xlate(seg, &c1.dirs[1]);
        // While the hand-off is pending, the client learns only of bytes the old node has too:
        // if it is rolled back, the bytes that only the target acknowledged would be lost (the
        // client would never send them again). The old node's own acknowledgment (in client
        // space) is the limit; what the client was already told stays (never backwards).
        let (c1_ports, seen) = (c1.ports, c1.dirs[1]);
        let mut x = x;
        if b.phase == Phase::Pending
            && let (Some(ack), Some(prev)) =
                (x.ack, k.checked_sub(1).and_then(|j| self.binding(s, j)))
        {
            let mut limit = prev.srv_ack.sub(prev.c_off);
            if seen.has(dirflag::ACKED) {
                limit = limit.max(seen.ack);
            }
            if ack.gt(limit) {
                x.ack = Some(limit);
                // Nor may a SACK block tell the client of them (a client does not resend what
                // it believes the receiver holds): blocks past the limit go (blocks here are in
                // the leg's space of the client's stream).
                x.sack_keep = Some((None, Some(limit.add(b.c_off))));
            }
        }
        if !rewrite(p.frame, p.meta, seg, &x, p.meter) {
            return Verdict::Drop(DropReason::Internal);
        }
        self.count_strips(&x);
        let t = translated(seg, &x);
        self.track(anchor, Dir::Reply, c1_ports[1], now_ms, &t);
        let out = Out {
            port: c1_ports[0],
            next_hop: Ipv4Address::from_octets(vip.src),
        };
        if !self.set_macs(p.frame, &out, metered!(p)) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    /// Paper IV.B 2-3: the old node must see the target acknowledge the bytes it forwarded;
    /// those ACKs ride on response data that goes to the client, so the switch fakes them.
    /// Paper IV.B 4: once the target has acknowledged up to the old node's FIN, the switch
    /// answers that FIN with a faked FIN/ACK.
    fn tell_old_node<S: Sink + ?Sized>(&mut self, s: usize, k: usize, seg: &Seg, sink: &mut S) {
        if !seg.ackf() {
            return;
        }
        let Some(b) = self.binding(s, k) else {
            return;
        };
        let Some(leg) = self.table.get(b.leg as usize).copied() else {
            return;
        };
        let limit = b.old_fin.unwrap_or(b.old_nxt);
        let a = seg.ack.min(limit);
        let ts = leg.ts_enabled().then_some((b.srv_ts, b.old_ts));
        if a.gt(b.old_told) {
            if let Some(x) = self.binding_mut(s, k) {
                x.old_told = a;
            }
            if b.old_fin.is_none() || !a.ge(limit) {
                let g = GenTcp {
                    src: leg.keys[1],
                    seq: b.old_rcv,
                    ack: a,
                    fin: false,
                    rst: false,
                    win: leg.dirs[1].win,
                    ts,
                };
                self.gen_tcp(leg.ports[0], g, Generated::FakeTargetAck, sink);
            }
        }
        // A FIN that was passed on (the client's own) is answered only once the target has
        // acknowledged it: neither the client nor the old node would send it again.
        if let Some(fin) = b.old_fin
            && seg.ack.ge(if b.fin_passed { fin.add(1) } else { fin })
            && !b.old_fin_acked
        {
            self.fake_target_fin_ack(s, k, sink);
        }
    }

    /// Repeats to the old node the target's acknowledgment of its forwarded bytes.
    fn reack_old_node<S: Sink + ?Sized>(&mut self, s: usize, k: usize, sink: &mut S) {
        let Some(b) = self.binding(s, k) else {
            return;
        };
        let Some(leg) = self.table.get(b.leg as usize).copied() else {
            return;
        };
        let a = b.srv_ack.min(b.old_fin.unwrap_or(b.old_nxt));
        let ts = leg.ts_enabled().then_some((b.srv_ts, b.old_ts));
        let g = GenTcp {
            src: leg.keys[1],
            seq: b.old_rcv,
            ack: a,
            fin: false,
            rst: false,
            win: leg.dirs[1].win,
            ts,
        };
        self.gen_tcp(leg.ports[0], g, Generated::FakeTargetAck, sink);
        if a.gt(b.old_told)
            && let Some(x) = self.binding_mut(s, k)
        {
            x.old_told = a;
        }
    }

    fn fake_target_fin_ack<S: Sink + ?Sized>(&mut self, s: usize, k: usize, sink: &mut S) {
        let Some(b) = self.binding(s, k) else {
            return;
        };
        let (Some(fin), Some(leg)) = (b.old_fin, self.table.get(b.leg as usize).copied()) else {
            return;
        };
        let ts = leg.ts_enabled().then_some((b.srv_ts, b.old_ts));
        // An ACK of the FIN, without a FIN of the target's own: the old node stays in
        // FIN-WAIT-2 and resets the leg (its proxy closes with SO_LINGER 0), so it never holds
        // the leg in TIME-WAIT; that reset is absorbed (`on_old_node_packet`).
        let g = GenTcp {
            src: leg.keys[1],
            seq: b.old_rcv,
            ack: fin.add(1),
            fin: false,
            rst: false,
            win: leg.dirs[1].win,
            ts,
        };
        self.gen_tcp(leg.ports[0], g, Generated::FakeTargetFinAck, sink);
        if let Some(x) = self.binding_mut(s, k) {
            x.old_fin_acked = true;
            x.old_told = fin.add(1);
        }
        if let Some(j) = k.checked_sub(1) {
            self.maybe_complete(s, j);
        }
    }

    /// The target acknowledged the forwarded bytes: the hand-off holds, and the old node's
    /// inbound leg can be retired.
    fn confirm<S: Sink + ?Sized>(&mut self, s: usize, k: usize, now_ms: u32, sink: &mut S) {
        let Some(b) = self.binding_mut(s, k) else {
            return;
        };
        if let Ok(Some(p)) = splice::transition(b.phase, Event::TargetAcked) {
            b.phase = p;
            b.since_ms = now_ms;
            knits_trace!("hand-off confirmed, binding {}", k);
        }
        if let Some(j) = k.checked_sub(1) {
            self.maybe_fake_fin(s, j, now_ms, sink);
        }
    }

    /// Paper IV.B 1: fake the client's FIN to the old node on its inbound leg, once the node has
    /// acknowledged everything sent to it (or a second has passed: bytes lost on the way to it
    /// reached the target by retransmission).
    fn maybe_fake_fin<S: Sink + ?Sized>(&mut self, s: usize, j: usize, now_ms: u32, sink: &mut S) {
        let Some(sess) = self.sessions.get(s) else {
            return;
        };
        let Some(b) = sess.bindings.get(j).copied() else {
            return;
        };
        let Some(next) = sess.bindings.get(j + 1).copied() else {
            return;
        };
        // The next binding must have been confirmed: it is live, or already superseded by a
        // later hand-off (only a live binding can be superseded). Waiting for `Live` alone
        // would never retire a node whose successor handed the connection on quickly.
        if b.phase != Phase::Stale || next.phase == Phase::Pending || b.inbound != Teardown::Idle {
            return;
        }
        // At once: the first FIN goes at the end of what was delivered to the node, behind
        // every client byte it was sent. If some of them are still missing there, the node
        // queues the FIN until the client's retransmissions (still routed to it by sequence)
        // fill the gap. Waiting for the node's (possibly delayed) ACK first would keep the
        // binding in the history for that long; a keep-alive client that moves on every
        // request would fill it.
        self.send_fake_fin(s, j, now_ms, sink);
    }

    fn send_fake_fin<S: Sink + ?Sized>(&mut self, s: usize, j: usize, now_ms: u32, sink: &mut S) {
        let (Some(anchor), Some(b)) = (self.anchor_of(s), self.binding(s, j)) else {
            return;
        };
        let Some(leg) = self.table.get(b.leg as usize).copied() else {
            return;
        };
        // What the old node last received from its peer on this leg.
        // For binding 0 the leg is c1 and its orig direction is the client's own (untranslated)
        // stream; for later bindings it holds what was delivered on the leg. Either way it is
        // what the old node last received.
        let (ts_out, win) = (leg.dirs[0].ts_in, leg.dirs[0].win);
        // At the old node's rcv_nxt as last seen (its highest ACK), on retries too: when its
        // ACK of the last client bytes was lost, the first FIN lay before its rcv_nxt and was
        // ignored; its duplicate ACK then moves `srv_ack` on, and the retry follows. Those
        // duplicate ACKs are rate-limited and may be lost as well, so every other retry goes
        // at the end of what was delivered to the node on this leg instead (its rcv_nxt when
        // the tail arrived). An ACK of either ends the retries (see `on_old_node_inbound`).
        let delivered = if b.leg as usize == anchor {
            b.c_hi.add(b.c_off)
        } else {
            leg.dirs[0].nxt
        };
        // Never before the splice point: the node must still get every client byte before it
        // (the client resends missing ones to this binding). Bytes after it that the node lacks
        // need not reach it (the client resends them to the next binding's server), so a FIN
        // at the node's own rcv_nxt past that point is right even when more was sent to it.
        let splice = self
            .binding(s, j + 1)
            .map_or(b.srv_ack, |n| n.c_start.add(b.c_off));
        let at_ack = if b.inbound == Teardown::Idle {
            b.srv_ack.max(splice)
        } else {
            b.srv_ack.max(b.fake_fin).max(splice)
        };
        let first = b.inbound == Teardown::Idle;
        let at_end = (first || b.fin_tries % 2 == 1) && delivered.gt(at_ack);
        // A half-closed client's own FIN reached this node already (it lies at the splice
        // point: the node consumed everything before it): the "faked" FIN is a retransmission
        // of it, at its own place, which the node acknowledges again. A client FIN after the
        // splice point belongs to the next binding's server.
        let client_fin = self
            .table
            .get(anchor)
            .map(|c| c.dirs[0])
            .filter(|d| d.has(dirflag::FIN) && d.nxt.le(b.c_hi))
            .map(|d| d.nxt.sub(1).add(b.c_off))
            .filter(|f| f.le(splice));
        let at_end = at_end && client_fin.is_none();
        let seq = client_fin.unwrap_or(if at_end { delivered } else { at_ack });
        let ts = leg.ts_enabled().then_some((ts_out, b.srv_ts));
        let g = GenTcp {
            src: leg.keys[1].reversed(),
            seq,
            ack: b.srv_nxt,
            fin: true,
            rst: false,
            win,
            ts,
        };
        self.gen_tcp(b.server_port, g, Generated::FakeClientFin, sink);
        let Some(b) = self.binding_mut(s, j) else {
            return;
        };
        if at_end {
            b.fake_fin_end = Some(seq);
            if first {
                // The node's rcv_nxt as last seen, for the retries and the ACK checks.
                b.fake_fin = at_ack;
            }
        } else {
            b.fake_fin = seq;
        }
        b.fin_tries = b.fin_tries.saturating_add(1);
        if b.teardown(TeardownEvent::FakeFinSent) {
            b.teardown_ms = now_ms;
        }
        b.since_ms = now_ms;
    }

    /// Packets of an old node on its inbound leg (binding `k` is stale): paper IV.B 1.
    fn old_node_inbound<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        k: usize,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        let Some(b) = self.binding(s, k) else {
            return Verdict::Drop(DropReason::Internal);
        };
        let Some(leg) = self.table.get(b.leg as usize).copied() else {
            return Verdict::Drop(DropReason::StaleLeg);
        };
        if seg.rst() {
            // Never let a retiring node reset the client.
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        // The old node closes while its hand-off is still pending: its FIN is held back (it
        // resends it). Confirmed, the FIN is then absorbed as the end of a retired leg; rolled
        // back, it reaches the client, whose connection the node really closed.
        if seg.fin()
            && self
                .binding(s, k + 1)
                .is_some_and(|n| n.phase == Phase::Pending)
        {
            return Verdict::Drop(DropReason::HandoffPending);
        }
        // Only an ACK of exactly a faked FIN acknowledges it: a larger one is a duplicate ACK
        // for client bytes past the FIN, i.e. the FIN was out of place and ignored (and is
        // resent, see `send_fake_fin`).
        let acks_fin = seg.ackf()
            && (seg.ack == b.fake_fin.add(1)
                || b.fake_fin_end.is_some_and(|e| seg.ack == e.add(1)));
        if acks_fin && let Some(x) = self.binding_mut(s, k) {
            x.teardown(TeardownEvent::FakeFinAcked);
        }
        if seg.fin() {
            let fin_seq = seg.seq.add(seg.len);
            // The client's next sequence as the old node sees it: what its FIN acknowledges
            // (one past the faked FIN it took).
            let mine = if b.inbound == Teardown::Idle {
                b.srv_ack
            } else if acks_fin {
                seg.ack
            } else {
                b.fake_fin.add(1)
            };
            let (ts_out, win) = (leg.dirs[0].ts_in, leg.dirs[0].win);
            let ts = leg.ts_enabled().then_some((ts_out, b.srv_ts));
            let g = GenTcp {
                src: leg.keys[1].reversed(),
                seq: mine,
                ack: fin_seq.add(1),
                fin: false,
                rst: false,
                win,
                ts,
            };
            self.gen_tcp(b.server_port, g, Generated::FakeClientFinalAck, metered!(p));
            if self
                .binding_mut(s, k)
                .is_some_and(|x| x.teardown(TeardownEvent::OldFinAbsorbed))
            {
                self.maybe_complete(s, k);
            }
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        let client_acked = self
            .anchor_of(s)
            .and_then(|anchor| self.table.get(anchor))
            .map(|c| c.dirs[1].ack)
            .unwrap_or_default();
        // Only an acknowledgment of client bytes the old node really received is news for the
        // client: never its ACK of the faked FIN (paper IV.B 1: "the acknowledgment ... will be
        // intercepted by the switch and be dropped"), which would acknowledge a byte the client
        // never sent, nor anything past the faked FIN, which sits at the old node's `rcv_nxt`.
        let ack_c = seg.ack.sub(b.c_off);
        let received = ack_c.le(b.c_hi) && (b.inbound == Teardown::Idle || seg.ack.le(b.fake_fin));
        let new_ack = seg.ackf() && received && ack_c.gt(client_acked);
        if seg.len == 0 && !new_ack {
            let _ = now_ms;
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        self.translate_to_client(s, k, b.leg as usize, now_ms, seg, p)
    }

    /// Packets of the old node on the leg it opened to the target (binding `k` >= 1):
    /// forwarded bytes pass; its FIN and bare ACKs are absorbed (paper IV.B 4-5).
    fn on_old_node_packet<S: Sink + ?Sized, M: Meter + ?Sized>(
        &mut self,
        s: usize,
        k: usize,
        fi: usize,
        now_ms: u32,
        seg: &Seg,
        p: &mut Pkt<'_, S, M>,
    ) -> Verdict {
        if self.anchor_of(s) == Some(fi) {
            return Verdict::Drop(DropReason::StaleLeg);
        }
        // An RST is judged before anything of the segment is recorded: one that is refused
        // (out of window) must change nothing.
        if !seg.rst() {
            let Some(b) = self.binding_mut(s, k) else {
                return Verdict::Drop(DropReason::Internal);
            };
            if seg.opts.ts_at.is_some() && seg.opts.tsval.wrapping_sub(b.old_ts) as i32 > 0 {
                b.old_ts = seg.opts.tsval;
            }
            let end = seg.seq.add(seg.len);
            if seg.len > 0 && end.gt(b.old_nxt) {
                b.old_nxt = end;
            }
        }
        let Some(b) = self.binding(s, k) else {
            return Verdict::Drop(DropReason::Internal);
        };
        if seg.rst() {
            // At the old node's snd_nxt: the end of what it sent, or one past its FIN.
            let at_nxt = seg.seq == b.old_nxt || b.old_fin.is_some_and(|f| seg.seq == f.add(1));
            if !at_nxt {
                return Verdict::Drop(DropReason::OutOfWindow);
            }
            if b.phase == Phase::Pending {
                // The old node gave up on the hand-off (it saw no answer): roll back.
                self.rollback(s, metered!(p));
            } else {
                // The old node closed the leg it opened with a reset (its proxy does, once its
                // FIN is acknowledged, to keep no TIME-WAIT): the leg is closed. The target
                // never sees it.
                self.event(FlowEvent::LegReset);
                if let Some(x) = self.binding_mut(s, k) {
                    x.old_reset = true;
                }
                if !b.old_fin_acked {
                    if let Some(x) = self.binding_mut(s, k) {
                        x.old_fin_acked = true;
                    }
                    if let Some(j) = k.checked_sub(1) {
                        self.maybe_complete(s, j);
                    }
                }
            }
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        // The old node's FIN where the client's own FIN maps on this leg: a half-closed client
        // whose FIN reached the old node before the hand-off. It goes on to the target.
        let fin_seq = seg.seq.add(seg.len);
        let pass_fin = seg.fin() && self.client_fin_on_leg(s, k) == Some(fin_seq);
        if seg.fin() {
            if let Some(x) = self.binding_mut(s, k) {
                x.old_fin = Some(fin_seq);
                if pass_fin {
                    x.fin_passed = true;
                    let end = fin_seq.sub(x.c_off).add(1);
                    if end.gt(x.c_hi) {
                        x.c_hi = end;
                    }
                }
            }
            if pass_fin && !b.fin_passed {
                self.event(FlowEvent::ClientFinPassed);
            }
            let acked = if pass_fin { fin_seq.add(1) } else { fin_seq };
            if b.srv_ack.ge(acked) {
                self.fake_target_fin_ack(s, k, metered!(p));
                if pass_fin {
                    // A retransmission of a FIN the target already has.
                    return Verdict::Local(LocalKind::TeardownAbsorbed);
                }
            }
            if seg.len == 0 && !pass_fin {
                return Verdict::Local(LocalKind::TeardownAbsorbed);
            }
        } else if seg.len == 0 {
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        // Bytes the target has already acknowledged: the old node missed the faked ACK (lost or
        // late) and retransmits. The target may have closed the leg by now and would answer
        // with a reset, so answer the old node again instead of passing the bytes on.
        if !seg.fin() && seg.seq.add(seg.len).le(b.srv_ack) {
            self.reack_old_node(s, k, metered!(p));
            return Verdict::Local(LocalKind::TeardownAbsorbed);
        }
        // Forwarded request bytes: merge into the stream the target sees (ack, window and
        // TSval never go backwards, so PAWS and old-ACK checks pass). The TSval is the newest
        // the target has seen on the leg: the client's clock offset (`ts_c_off`) was fixed from
        // it at the hand-off, and the old node's live clock may run ahead of the client's
        // mapped one; the target would echo it and the client get a TSecr from its future.
        let Some(leg) = self.table.get(fi).copied() else {
            return Verdict::Drop(DropReason::StaleLeg);
        };
        let lo = leg.dirs[0];
        p.meter.step(Step::Rewrite);
        let ts = seg.opts.ts_at.map(|_| (lo.ts_in, seg.opts.tsecr));
        let x = Xlate {
            ack: if seg.ackf() && lo.has(dirflag::ACKED) {
                Some(seg.ack.max(lo.ack))
            } else {
                None
            },
            win: Some(lo.win),
            ts,
            clear_fin: seg.fin() && !pass_fin,
            ..Xlate::default()
        };
        if !rewrite(p.frame, p.meta, seg, &x, p.meter) {
            return Verdict::Drop(DropReason::Internal);
        }
        let mut t = translated(seg, &x);
        t.set_fin(pass_fin);
        self.track(fi, Dir::Orig, leg.ports[0], now_ms, &t);
        let out = Out {
            port: leg.ports[1],
            next_hop: Ipv4Address::from_octets(leg.keys[0].dst),
        };
        if !self.set_macs(p.frame, &out, metered!(p)) {
            return Verdict::Drop(DropReason::NeighborUnknown);
        }
        Verdict::Forward(out.port)
    }

    /// Where the client's FIN lies on binding `k`'s leg (leg space), once the client sent one.
    fn client_fin_on_leg(&self, s: usize, k: usize) -> Option<SeqNumber> {
        let b = self.binding(s, k)?;
        let c1 = self.table.get(self.anchor_of(s)?)?;
        let d = c1.dirs[Dir::Orig.index()];
        d.has(dirflag::FIN).then(|| d.nxt.sub(1).add(b.c_off))
    }

    fn count_strips(&mut self, x: &Xlate) {
        if x.strip_ts {
            self.event(FlowEvent::TsStripped);
        }
        if x.strip_sack {
            self.event(FlowEvent::SackStripped);
        }
    }

    /// Binding `j` is retired once the old node's inbound leg is closed (the leg it opened is
    /// the next binding's to close).
    fn maybe_complete(&mut self, s: usize, j: usize) {
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        // Only a superseded binding retires.
        if sess.bindings.get(j + 1).is_none() {
            return;
        }
        let Some(b) = sess.bindings.get_mut(j) else {
            return;
        };
        // The leg the old node opened is the next binding's (its FIN, its reset); this binding
        // is done once the node's inbound leg is closed.
        if b.phase == Phase::Stale
            && b.inbound == Teardown::Closed
            && let Ok(Some(p)) = splice::transition(b.phase, Event::LegsClosed)
        {
            b.phase = p;
            self.counters.handoffs_completed += 1;
            knits_trace!("hand-off complete, binding {} retired", j);
        }
    }

    /// Undoes the newest binding: the client stays with the old node, which learns of it by an
    /// RST on the new leg; the target is reset too. The client sees nothing.
    pub(super) fn rollback<S: Sink + ?Sized>(&mut self, s: usize, sink: &mut S) {
        let Some(sess) = self.sessions.get(s) else {
            return;
        };
        let (Some(&b), 2..) = (sess.bindings.last(), sess.bindings.len()) else {
            return;
        };
        if splice::transition(b.phase, Event::RollBack).is_err() {
            return;
        }
        if let Some(leg) = self.table.get(b.leg as usize).copied() {
            let to_old = GenTcp {
                src: leg.keys[1],
                seq: b.old_rcv,
                ack: b.old_nxt,
                fin: false,
                rst: true,
                win: 0,
                ts: None,
            };
            self.gen_tcp(leg.ports[0], to_old, Generated::AbortReset, sink);
            // At the target's `rcv_nxt` as best known: the end of what was delivered to it on
            // the leg. Its last acknowledgment seen here (`srv_ack`) lags behind when its ACKs
            // were lost, or never sent (a hung target), and an RST before `rcv_nxt` is out of
            // the window and ignored (RFC 9293 3.10.7.4, RFC 5961 3.2).
            let to_target = GenTcp {
                src: leg.keys[1].reversed(),
                seq: leg.dirs[0].nxt.max(b.srv_ack),
                ack: b.srv_nxt,
                fin: false,
                rst: true,
                win: 0,
                ts: None,
            };
            self.gen_tcp(leg.ports[1], to_target, Generated::AbortReset, sink);
            if let Some(f) = self.table.get_mut(b.leg as usize) {
                f.link = 0;
                f.state = TcpState::TimeWait;
                // One RST may be lost: a hung target never answers the old node's
                // retransmissions, so the old node would never learn of the roll-back.
                f.dirs[0].flags |= dirflag::ABORTED;
                f.dirs[1].flags |= dirflag::ABORTED;
            }
        }
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        sess.bindings.pop();
        if let Some(prev) = sess.bindings.last_mut()
            && let Ok(Some(p)) = splice::transition(prev.phase, Event::Restored)
        {
            prev.phase = p;
        }
        let counter = b.counter;
        self.counters.handoffs_rolled_back += 1;
        // A retransmitted request now learns of the roll-back. Counters are per node: only the
        // requester's answer changes (the server of the binding that is current again), never
        // another node's answer that happens to carry the same counter.
        let requester = sess.bindings.last().and_then(|p| {
            self.config
                .backend_index(Ipv4Address::from_octets(p.server))
        });
        if let Some(r) = requester.and_then(|bi| self.replay.get_mut(bi)) {
            for e in r.recent.iter_mut() {
                if e.0 == counter && e.1 == ReplyCode::Accepted.to_wire() {
                    e.1 = ReplyCode::RolledBack.to_wire();
                }
            }
        }
        // Back to a plain NAT connection when only the original binding is left.
        let Some(sess) = self.sessions.get_mut(s) else {
            return;
        };
        if let [only] = sess.bindings.as_slice()
            && only.leg == sess.anchor
        {
            let anchor = sess.anchor as usize;
            self.free_session(s);
            if let Some(f) = self.table.get_mut(anchor) {
                f.link = 0;
            }
        }
    }

    /// Resets the old nodes of session `s` that are still being retired, on both their legs,
    /// when the session ends early (its tuple reopened or recycled): nothing would retire them
    /// any more, and their proxies would hold both connections until their own time-outs.
    pub(super) fn reset_retiring<S: Sink + ?Sized>(&mut self, s: usize, sink: &mut S) {
        let Some(n) = self.sessions.get(s).map(|x| x.bindings.len()) else {
            return;
        };
        for j in 0..n.saturating_sub(1) {
            let (Some(b), Some(next)) = (self.binding(s, j), self.binding(s, j + 1)) else {
                break;
            };
            if b.phase == Phase::Retired {
                continue;
            }
            if b.inbound != Teardown::Closed
                && let Some(leg) = self.table.get(b.leg as usize).copied()
            {
                let g = GenTcp {
                    src: leg.keys[1].reversed(),
                    seq: b.srv_ack,
                    ack: b.srv_nxt,
                    fin: false,
                    rst: true,
                    win: 0,
                    ts: None,
                };
                self.gen_tcp(b.server_port, g, Generated::AbortReset, sink);
            }
            if !next.old_reset
                && let Some(leg) = self.table.get(next.leg as usize).copied()
            {
                let g = GenTcp {
                    src: leg.keys[1],
                    seq: next.old_rcv,
                    ack: next.old_fin.map_or(next.old_nxt, |f| f.add(1)),
                    fin: false,
                    rst: true,
                    win: 0,
                    ts: None,
                };
                self.gen_tcp(leg.ports[0], g, Generated::AbortReset, sink);
            }
        }
    }

    /// A FIN resent by an old node on a leg the switch has retired (the faked final ACK was
    /// lost): answered as a TIME-WAIT socket would, so the node does not linger in LAST-ACK.
    /// With `ts` (the connection negotiated timestamps, or the switch cannot know and the node
    /// sent one), the timestamp echoes the node's own and repeats the value it last echoed, which is the
    /// newest it has seen from its peer, so PAWS accepts it (RFC 7323 5.3).
    pub(super) fn answer_late_fin<S: Sink + ?Sized>(
        &mut self,
        port: PortId,
        seg: &Seg,
        ts: bool,
        sink: &mut S,
    ) {
        let g = GenTcp {
            src: seg.key.reversed(),
            seq: seg.ack,
            ack: seg.seq.add(seg.seq_len()),
            fin: false,
            rst: false,
            win: seg.win,
            ts: seg
                .opts
                .ts_at
                .filter(|_| ts)
                .map(|_| (seg.opts.tsecr, seg.opts.tsval)),
        };
        self.gen_tcp(port, g, Generated::LateFinAck, sink);
    }

    /// A segment from an end of a rolled-back leg: answered as the closed peer would (RFC 9293
    /// 3.10.7.1), an RST at the sender's rcv_nxt (its ACK field) acknowledging the segment.
    pub(super) fn answer_aborted<S: Sink + ?Sized>(
        &mut self,
        port: PortId,
        seg: &Seg,
        sink: &mut S,
    ) {
        let g = GenTcp {
            src: seg.key.reversed(),
            seq: if seg.ackf() { seg.ack } else { SeqNumber(0) },
            ack: seg.seq.add(seg.seq_len()),
            fin: false,
            rst: true,
            win: 0,
            ts: None,
        };
        self.gen_tcp(port, g, Generated::AbortReset, sink);
    }

    /// Timers of one session: hand-off time-out, faked FINs (first send and retries), and
    /// retirement of bindings whose TIME-WAIT has passed.
    pub(super) fn session_timers<S: Sink + ?Sized>(&mut self, s: usize, now_ms: u32, sink: &mut S) {
        let t = self.config.timeouts;
        let Some(&cur) = self.sessions.get(s).and_then(|x| x.bindings.last()) else {
            return;
        };
        let n = self.sessions.get(s).map_or(0, |x| x.bindings.len());
        if cur.phase == Phase::Pending
            && now_ms.wrapping_sub(cur.since_ms) >= t.handoff.total_millis() as u32
        {
            let sent_data = cur.srv_nxt.gt(cur.s_start.sub(cur.s_off).add(1));
            if sent_data {
                self.confirm(s, n - 1, now_ms, sink);
            } else {
                self.rollback(s, sink);
                return;
            }
        }
        let n = self.sessions.get(s).map_or(0, |x| x.bindings.len());
        for j in 0..n.saturating_sub(1) {
            let Some(b) = self.binding(s, j) else {
                break;
            };
            match b.inbound {
                Teardown::Idle => self.maybe_fake_fin(s, j, now_ms, sink),
                Teardown::FinSent if now_ms.wrapping_sub(b.since_ms) >= FIN_RETRY_MS => {
                    if b.fin_tries < FIN_TRIES {
                        self.send_fake_fin(s, j, now_ms, sink);
                    } else {
                        if let Some(x) = self.binding_mut(s, j) {
                            x.teardown(TeardownEvent::RetriesExhausted);
                        }
                        self.maybe_complete(s, j);
                    }
                }
                _ => {}
            }
            // An old node that never closes the leg it opened (gone, or an old proxy) is
            // retired anyway once its teardown has run for FORCE_RETIRE_MS.
            if b.phase == Phase::Stale
                && b.inbound != Teardown::Idle
                && now_ms.wrapping_sub(b.teardown_ms) >= FORCE_RETIRE_MS
            {
                if let Some(x) = self.binding_mut(s, j) {
                    x.teardown(TeardownEvent::ForceRetired);
                }
                if let Some(x) = self.binding_mut(s, j + 1) {
                    x.old_fin_acked = true;
                }
                self.maybe_complete(s, j);
                if self
                    .binding(s, j)
                    .is_some_and(|x| x.phase == Phase::Retired)
                {
                    self.event(FlowEvent::BindingForced);
                }
            }
        }
        self.prune(s, now_ms);
    }

    // ----------------------------------------------------------------------------------------
    // Generated TCP segments.

    /// Builds and sends a TCP segment from `g.src` (a key as the sender would put it on the wire)
    /// out of `port`, with complete checksums and an optional timestamp option.
    pub(super) fn gen_tcp<S: Sink + ?Sized>(
        &mut self,
        port: PortId,
        g: GenTcp,
        what: Generated,
        sink: &mut S,
    ) {
        let Some(pc) = self.config.ports.get(port as usize).copied() else {
            return;
        };
        let dst = Ipv4Address::from_octets(g.src.dst);
        let Some(mac) = self.neighbors.get(g.src.dst) else {
            self.arp_request(port, dst, sink);
            self.counters.drops[DropReason::NeighborUnknown.index()] += 1;
            return;
        };
        let opt_len = if g.ts.is_some() { 12 } else { 0 };
        let tcp_len = 20 + opt_len;
        let len = TCP_AT + tcp_len;
        let mut buf = [0u8; MAX_GENERATED];
        let src = Ipv4Address::from_octets(g.src.src);
        write_eth_ip(
            &mut buf[..len],
            pc.mac,
            mac,
            src,
            dst,
            IpProtocol::Tcp,
            (IP_LEN + tcp_len) as u16,
        );
        {
            let mut t = TcpPacket::new_unchecked(&mut buf[TCP_AT..len]);
            t.set_src_port(g.src.sport);
            t.set_dst_port(g.src.dport);
            t.set_seq_number(g.seq.into());
            t.set_ack_number(g.ack.into());
            t.set_header_len(tcp_len as u8);
            t.clear_flags();
            // Every generated segment acknowledges what its receiver sent (the roll-back RSTs
            // too). 0 is an ordinary sequence number, not "no ACK": a stream that crossed 2^32
            // acknowledges 0 like any other value.
            t.set_ack(true);
            t.set_fin(g.fin);
            t.set_rst(g.rst);
            t.set_window_len(g.win);
            t.set_urgent_at(0);
            if let Some((tsval, tsecr)) = g.ts {
                let o = t.options_mut();
                o[0] = 1;
                o[1] = 1;
                o[2] = 8;
                o[3] = 10;
                o[4..8].copy_from_slice(&tsval.to_be_bytes());
                o[8..12].copy_from_slice(&tsecr.to_be_bytes());
            }
            t.fill_checksum(&src.into(), &dst.into());
        }
        self.generate(port, &buf[..len], what, sink, &mut crate::meter::NoMeter);
    }
}

/// Writes Ethernet and IPv4 headers (no options, DF, TTL 64, checksum filled).
pub(super) fn write_eth_ip(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Address,
    dst: Ipv4Address,
    proto: IpProtocol,
    ip_total: u16,
) {
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_src_addr(src_mac);
    eth.set_dst_addr(dst_mac);
    eth.set_ethertype(EthernetProtocol::Ipv4);
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[ETH_LEN..]);
    ip.set_version(4);
    ip.set_header_len(IP_LEN as u8);
    ip.set_dscp(0);
    ip.set_ecn(0);
    ip.set_total_len(ip_total);
    ip.set_ident(0);
    ip.clear_flags();
    ip.set_dont_frag(true);
    ip.set_frag_offset(0);
    ip.set_hop_limit(64);
    ip.set_next_header(proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
}
