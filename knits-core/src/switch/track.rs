//! Stage 4, track: connection tracking, as methods of the flow record.
//!
//! Each direction of a flow is tracked in its own sequence space ([`DirState`]): what it has
//! sent, what it has acknowledged, its window, options and FIN; the flow's [`TcpState`] moves
//! from both directions together. Nothing here knows about hand-offs: a spliced flow is
//! tracked leg by leg, each leg in its own numbers (the splice stage translates between them).

use super::parse::Seg;
use crate::config::PortId;
use crate::counters::DropReason;
use crate::table::{Dir, DirState, FlowKind, FlowSlot, TcpState, dirflag};

/// What a SYN on a tuple the table already holds means (docs/protocol.md "Closed connections").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reuse {
    /// The tuple's connection is not closed: the SYN belongs to it (a retransmission).
    Open,
    /// The connection is closed and the SYN acceptable: a new connection on the same tuple.
    Reopen,
    /// The connection is closed but the SYN is an old duplicate (RFC 6191).
    Refuse,
}

impl FlowSlot {
    /// RFC 5961 and window sanity for a segment of this flow: a RST must be in the window
    /// (only an exact match changes state, see [`FlowSlot::track`]), data far outside it is
    /// dropped. A bare ACK is never refused here.
    #[inline(always)]
    pub(super) fn validate(&self, dir: Dir, seg: &Seg) -> Option<DropReason> {
        if seg.len == 0 && !seg.rst() {
            return None;
        }
        self.validate_in_window(dir, seg)
    }

    /// [`FlowSlot::validate`] for a RST or a segment with data: out of line, so that a bare
    /// ACK's check is two tests in the caller.
    #[inline(never)]
    fn validate_in_window(&self, dir: Dir, seg: &Seg) -> Option<DropReason> {
        let rcv = &self.dirs[dir.other().index()];
        if !rcv.has(dirflag::ACKED) || seg.syn() {
            return None;
        }
        let wnd = ((rcv.win as u32) << self.shift(dir.other())).max(65535);
        let lo = rcv.ack;
        if seg.rst() {
            if seg.seq.ge(lo) && seg.seq.lt(lo.add(wnd.saturating_add(1))) {
                return None;
            }
            return Some(DropReason::OutOfWindow);
        }
        // Generous: the receiver may have advertised more since; only far-off data goes.
        let slack = wnd.saturating_mul(4).min(1 << 30);
        let end = seg.seq.add(seg.len);
        if end.le(lo.sub(slack)) || seg.seq.ge(lo.add(slack)) {
            return Some(DropReason::OutOfWindow);
        }
        None
    }

    /// Whether a SYN (without ACK) from the originating side of this tuple opens a new
    /// connection (docs/protocol.md "Closed connections"). `closed` says whether the tuple's
    /// connection is closed: the flow (for a leg of a splice session, the session's client
    /// connection) is in TIME-WAIT.
    ///
    /// The SYN must then not be an old duplicate, by the rule Linux's own TIME-WAIT applies
    /// (`tcp_timewait_state_process`, RFC 6191): not rejected by PAWS, and either its sequence
    /// lies after everything the old connection sent or its timestamp is newer. (On a
    /// node-to-node leg PAWS is not applied: the TSvals the switch saw there include the
    /// client's, translated.) A reopened client connection is sprayed afresh, a leg's session
    /// ends with it; late segments of the old connection find no entry (or the new one's
    /// window) and go nowhere.
    pub(super) fn reuse(&self, closed: bool, seg: &Seg) -> Reuse {
        if !closed {
            return Reuse::Open;
        }
        let old = &self.dirs[Dir::Orig.index()];
        let ts = seg.opts.ts_at.is_some() && old.has(dirflag::TS) && old.ts_in != 0;
        let ts_age = seg.opts.tsval.wrapping_sub(old.ts_in) as i32;
        // On a leg the highest TSval seen may be the client's, translated, and run ahead of
        // the node's own clock: PAWS would refuse the node's real new SYN there.
        let paws_reject = ts && ts_age < 0 && self.kind == FlowKind::Nat;
        let newer = seg.seq.gt(old.nxt) || (ts && ts_age > 0);
        if !paws_reject && newer {
            Reuse::Reopen
        } else {
            Reuse::Refuse
        }
    }

    /// Updates a direction from a segment, in that direction's own sequence space, and moves
    /// the connection state.
    #[inline]
    pub(super) fn track(&mut self, dir: Dir, port: PortId, now_ms: u32, seg: &Seg) {
        // The common case first: an established connection's ACK or data segment moves only
        // the sender's numbers (the state machine below would leave the state as it is).
        if seg.plain() && self.state == TcpState::Established {
            self.last_ms = now_ms;
            let me = match dir {
                Dir::Orig => &mut self.dirs[0],
                Dir::Reply => &mut self.dirs[1],
            };
            me.advance(seg);
            return;
        }
        self.track_slow(dir, port, now_ms, seg);
    }

    /// A leg closes with its client's connection: the client's RST that closed its own
    /// connection (exact at the client's next sequence number) goes on to the target on this
    /// leg and resets the target's socket. On the leg the RST's number cannot tell it from the
    /// old node's bytes ([`FlowSlot::track`] applies the own-next rule to client connections
    /// only) and the target may not have acknowledged the client's last bytes yet (a TLS
    /// close_notify right before the RST), so the splice stage, which knows whose RST it
    /// forwards, closes the leg: TIME-WAIT, then it goes with its session.
    pub(super) fn reset_with_client(&mut self) {
        if self.state != TcpState::TimeWait {
            knits_trace!("leg {} -> time_wait (client reset)", self.state.name());
            self.state = TcpState::TimeWait;
        }
    }

    fn track_slow(&mut self, dir: Dir, port: PortId, now_ms: u32, seg: &Seg) {
        // The sender's direction and the other one, by destructuring (no slice indexing).
        let [o, r] = &mut self.dirs;
        let (me, other) = match dir {
            Dir::Orig => (o, r),
            Dir::Reply => (r, o),
        };
        // A retransmitted SYN or SYN-ACK is no sign of life: a node answering a spoofed SYN would
        // otherwise keep the half-open entry alive for as long as it retries.
        if !(seg.syn() && me.has(dirflag::SYN)) {
            self.last_ms = now_ms;
        }
        if seg.syn() && !me.has(dirflag::SYN) {
            me.isn = seg.seq;
            me.nxt = seg.seq.add(1);
            me.flags |= dirflag::SYN;
            me.mss = seg.opts.mss.unwrap_or(0);
            if let Some(w) = seg.opts.wscale {
                me.wscale = w.min(14);
                me.flags |= dirflag::WSCALE;
            }
            if seg.opts.sack_perm {
                me.flags |= dirflag::SACK_PERM;
            }
            if seg.opts.ts_at.is_some() {
                me.flags |= dirflag::TS;
            }
            if let Some(p) = self.ports.get_mut(dir.index()) {
                *p = port;
            }
        }
        // Everything the sender had sent before this segment: a RST there is its own next
        // sequence number (see `exact_rst` below).
        let sent = me.has(dirflag::SYN).then_some(me.nxt);
        me.advance(seg);
        if seg.fin() && !me.has(dirflag::FIN) {
            me.flags |= dirflag::FIN;
        }
        // The other direction's FIN is acknowledged once this ack passes it.
        if other.has(dirflag::FIN) && me.has(dirflag::ACKED) && me.ack.ge(other.nxt) {
            other.flags |= dirflag::FIN_ACKED;
        }
        // Only an exact RST moves the state (RFC 5961 3.2): at the receiver's next expected
        // sequence number as its last ACK said, or at the sender's own next sequence number
        // (everything it sent, which the receiver may hold without having acknowledged it
        // yet: a client's close_notify and RST in a row). Either takes the whole 32-bit
        // number to forge; an in-window RST that is neither is passed on and changes nothing.
        //
        // The second only for a client's own RST on its connection to the VIP: there the
        // client is the one sender of the direction. On a node-to-node leg of a hand-off the
        // orig direction carries the old node's bytes and the client's after them, so the old
        // node's RST at its own last byte can coincide with it and must not close the leg.
        let own_next = dir == Dir::Orig && self.kind == FlowKind::Nat && Some(seg.seq) == sent;
        let exact_rst =
            seg.rst() && (!other.has(dirflag::ACKED) || seg.seq == other.ack || own_next);
        let both_syn = me.has(dirflag::SYN) && other.has(dirflag::SYN);
        let fins = me.has(dirflag::FIN) as u8 + other.has(dirflag::FIN) as u8;
        let fins_acked = me.has(dirflag::FIN_ACKED) && other.has(dirflag::FIN_ACKED);
        let state = self.state;
        let new_state = if exact_rst || fins_acked {
            TcpState::TimeWait
        } else if fins == 2 {
            TcpState::Closing
        } else if fins == 1 {
            TcpState::FinWait
        } else if both_syn
            && (state == TcpState::SynReceived || state == TcpState::Established)
            && (seg.len > 0 || (dir == Dir::Orig && seg.ackf()))
        {
            TcpState::Established
        } else if both_syn && state == TcpState::SynSent {
            TcpState::SynReceived
        } else {
            state
        };
        if state != TcpState::TimeWait {
            if new_state != state {
                knits_trace!("flow {} -> {}", state.name(), new_state.name());
            }
            self.state = new_state;
        }
    }
}

impl DirState {
    /// The sequence numbers, acknowledgment, timestamp and window a segment from this
    /// direction's sender moves (its SYN, if any, already recorded).
    #[inline]
    fn advance(&mut self, seg: &Seg) {
        // A RST occupies no sequence space: it never moves `nxt` (which would let one RST
        // make the next one look exact).
        let end = seg.seq.add(seg.seq_len());
        if self.has(dirflag::SYN) && !seg.rst() && end.gt(self.nxt) {
            self.nxt = end;
        }
        if seg.ackf() && (!self.has(dirflag::ACKED) || seg.ack.gt(self.ack)) {
            self.ack = seg.ack;
            self.flags |= dirflag::ACKED;
        }
        if seg.opts.ts_at.is_some()
            && (seg.opts.tsval.wrapping_sub(self.ts_in) as i32 > 0 || self.ts_in == 0)
        {
            self.ts_in = seg.opts.tsval;
        }
        self.win = seg.win;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::SeqNumber;
    use crate::table::FlowKey;
    use crate::wire::field::tcp;

    fn seg(flags: u8, seq: u32, ack: u32, len: u32) -> Seg {
        Seg {
            key: FlowKey::default(),
            seq: SeqNumber(seq),
            ack: SeqNumber(ack),
            flags,
            len,
            win: 1000,
            ..Seg::default()
        }
    }

    /// A connection through its handshake and one request: client ISN 100, server ISN 500.
    fn established() -> FlowSlot {
        let mut f = FlowSlot {
            kind: FlowKind::Nat,
            ..FlowSlot::default()
        };
        f.track(Dir::Orig, 0, 1, &seg(tcp::SYN, 100, 0, 0));
        f.track(
            Dir::Reply,
            1,
            1,
            &seg(tcp::SYN | tcp::ACK_FLAG, 500, 101, 0),
        );
        f.track(Dir::Orig, 0, 1, &seg(tcp::ACK_FLAG, 101, 501, 0));
        f.track(
            Dir::Orig,
            0,
            1,
            &seg(tcp::ACK_FLAG | tcp::PSH, 101, 501, 50),
        );
        f.track(Dir::Reply, 1, 1, &seg(tcp::ACK_FLAG, 501, 151, 0));
        assert_eq!(f.state, TcpState::Established);
        f
    }

    /// A client that sends its last bytes and a RST right behind them (curl after a TLS
    /// close_notify) closes the connection although the server has not acknowledged those
    /// bytes: the RST is at the client's own next sequence number. Without this a reused
    /// tuple's next SYN counted as a retransmission of the old connection.
    #[test]
    fn a_rst_right_behind_unacknowledged_bytes_closes() {
        let mut f = established();
        f.track(
            Dir::Orig,
            0,
            2,
            &seg(tcp::ACK_FLAG | tcp::PSH, 151, 501, 31),
        );
        f.track(Dir::Orig, 0, 2, &seg(tcp::ACK_FLAG | tcp::RST, 182, 501, 0));
        assert_eq!(f.state, TcpState::TimeWait);
    }

    /// On a node-to-node leg (routed) the sender's next sequence number is not enough: the
    /// old node's RST there must not close the leg.
    #[test]
    fn a_rst_at_the_senders_next_does_not_close_a_leg() {
        let mut f = established();
        f.kind = FlowKind::Routed;
        f.track(
            Dir::Orig,
            0,
            2,
            &seg(tcp::ACK_FLAG | tcp::PSH, 151, 501, 31),
        );
        f.track(Dir::Orig, 0, 2, &seg(tcp::ACK_FLAG | tcp::RST, 182, 501, 0));
        assert_eq!(f.state, TcpState::Established);
    }

    /// An in-window RST that is neither at the receiver's acknowledgment nor at the sender's
    /// next sequence number changes nothing (RFC 5961 3.2), before or after other data.
    #[test]
    fn an_inexact_rst_changes_nothing() {
        for rst_seq in [160, 200, 140] {
            let mut f = established();
            f.track(
                Dir::Orig,
                0,
                2,
                &seg(tcp::ACK_FLAG | tcp::PSH, 151, 501, 31),
            );
            // Twice: the first must not make the second look exact.
            f.track(
                Dir::Orig,
                0,
                2,
                &seg(tcp::ACK_FLAG | tcp::RST, rst_seq, 501, 0),
            );
            f.track(
                Dir::Orig,
                0,
                2,
                &seg(tcp::ACK_FLAG | tcp::RST, rst_seq, 501, 0),
            );
            assert_eq!(f.state, TcpState::Established, "RST at {rst_seq}");
        }
        // At the server's acknowledgment it is exact, as before.
        let mut f = established();
        f.track(Dir::Orig, 0, 2, &seg(tcp::ACK_FLAG | tcp::RST, 151, 501, 0));
        assert_eq!(f.state, TcpState::TimeWait);
    }
}
