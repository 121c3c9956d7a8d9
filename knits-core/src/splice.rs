//! Splice sessions: the bindings of a handed-off client connection and the hand-off state
//! machine (paper III.B and IV.B, with the additions in docs/protocol.md).
//!
//! A client connection `c1` that has been handed off at least once owns a [`SessionSlot`]. The
//! session keeps a bounded history of [`Binding`]s: binding 0 is `c1` itself (client to the
//! node it was sprayed to); binding `k` is the leg `L_k` that node `S_(k-1)` opened to node
//! `S_k`. Each binding maps the client's sequence space onto its leg from `c_start` on and its
//! server's sequence space onto the client's from `s_start` on (paper IV.B: "two fields
//! representing a minimum and a maximum sequence number have been added"). The newest binding is
//! current; older ones still carry retransmissions and late ACKs until their leg is retired.
//!
//! The state machine lives in [`Phase`] (the binding as a whole) and [`Teardown`] (the retiring
//! node's two legs); [`transition`] and [`teardown_transition`] are the only functions that
//! change them (the switch calls [`Binding::teardown`] for the second).

use heapless::Vec;

use crate::seq::SeqNumber;
use crate::wire::control::ReplyCode;

/// Bindings one session holds at once: the current one plus up to seven old nodes still being
/// retired (a retirement takes about a round trip and the node's proxy closing its end; a
/// keep-alive client that moves on every request can start several hand-offs in that time).
/// A binding leaves the history as soon as its old node's inbound leg is closed, so a
/// connection can be handed off any number of times.
pub const MAX_BINDINGS: usize = 8;

/// Where a binding is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// Current binding; its target has acknowledged what it was handed (or it is binding 0).
    #[default]
    Live,
    /// Current binding, just accepted: waiting for the target to acknowledge the bytes the old
    /// node forwarded (docs/protocol.md, addition 4). Rolled back on time-out or reset.
    Pending,
    /// Superseded by a newer binding; its server is being retired.
    Stale,
    /// Its server's legs are closed; the binding leaves the history (once no older binding is
    /// still being retired).
    Retired,
}

/// Progress of retiring the old node's legs (paper IV.B steps 1, 4 and 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Teardown {
    /// Nothing to do (yet).
    #[default]
    Idle,
    /// Paper IV.B 1: the faked client FIN was sent to the old node on its inbound leg.
    FinSent,
    /// The old node acknowledged the faked FIN.
    FinAcked,
    /// Paper IV.B 1: the old node's FIN/ACK was absorbed and the faked final ACK sent.
    Closed,
}

/// Events that move a binding's [`Phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The switch accepted a hand-off onto this binding.
    Accept,
    /// The target acknowledged every byte sent to the old node (or sent response data).
    TargetAcked,
    /// A newer binding was accepted.
    Superseded,
    /// The newer binding was rolled back; this one is current again.
    Restored,
    /// The target did not acknowledge in time, or reset the new leg.
    RollBack,
    /// The old node's legs are closed.
    LegsClosed,
}

/// An impossible transition: the event does not apply in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BadTransition {
    /// Phase the binding was in.
    pub from: Phase,
    /// Event that did not apply.
    pub event: Event,
}

/// The one place a binding's phase changes. `None` as the result of `RollBack` means the
/// binding leaves the history.
pub const fn transition(from: Phase, event: Event) -> Result<Option<Phase>, BadTransition> {
    use Event as E;
    use Phase as P;
    match (from, event) {
        (P::Live, E::Accept) => Ok(Some(P::Pending)), // a fresh binding starts Pending
        (P::Pending, E::TargetAcked) => Ok(Some(P::Live)),
        (P::Pending, E::RollBack) => Ok(None),
        (P::Live, E::Superseded) => Ok(Some(P::Stale)),
        (P::Stale, E::Restored) => Ok(Some(P::Live)),
        (P::Stale, E::LegsClosed) => Ok(Some(P::Retired)),
        (from, event) => Err(BadTransition { from, event }),
    }
}

/// Events that move a retiring node's [`Teardown`] (paper IV.B steps 1, 4 and 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TeardownEvent {
    /// The faked client FIN went to the old node (the first time; resends change nothing).
    FakeFinSent,
    /// The old node acknowledged exactly the faked FIN.
    FakeFinAcked,
    /// The old node's own FIN was absorbed and answered with the faked final ACK.
    OldFinAbsorbed,
    /// The faked FIN was resent as often as allowed without an answer.
    RetriesExhausted,
    /// The teardown ran too long ([`FORCE_RETIRE_MS`](crate::switch)) and is ended anyway.
    ForceRetired,
}

/// An impossible teardown step: the event does not apply in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BadTeardown {
    /// State the teardown was in.
    pub from: Teardown,
    /// Event that did not apply.
    pub event: TeardownEvent,
}

/// The one place a retiring node's [`Teardown`] changes.
pub const fn teardown_transition(
    from: Teardown,
    event: TeardownEvent,
) -> Result<Teardown, BadTeardown> {
    use Teardown as T;
    use TeardownEvent as E;
    match (from, event) {
        (T::Idle, E::FakeFinSent) => Ok(T::FinSent),
        (T::FinSent, E::FakeFinAcked) => Ok(T::FinAcked),
        (T::FinSent | T::FinAcked, E::OldFinAbsorbed) => Ok(T::Closed),
        (T::FinSent, E::RetriesExhausted) => Ok(T::Closed),
        (T::FinSent | T::FinAcked | T::Closed, E::ForceRetired) => Ok(T::Closed),
        (from, event) => Err(BadTeardown { from, event }),
    }
}

/// One binding: a leg to a server and the offsets that map it onto the client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Binding {
    /// Flow index of the leg (for binding 0, the client connection itself).
    pub leg: u32,
    /// The server of this leg.
    pub server: [u8; 4],
    /// The switch port the server sits behind.
    pub server_port: u8,
    /// Phase.
    pub phase: Phase,
    /// First client sequence number this binding carries (client space).
    pub c_start: SeqNumber,
    /// Client sequence + `c_off` = sequence on the leg.
    pub c_off: u32,
    /// First server sequence number, as the client sees it, that this binding carries.
    pub s_start: SeqNumber,
    /// Leg server sequence + `s_off` = sequence as the client sees it.
    pub s_off: u32,
    /// Client TSval + `ts_c_off` = TSval as the leg's server expects it.
    pub ts_c_off: u32,
    /// Server TSval + `ts_s_off` = TSval as the client expects it.
    pub ts_s_off: u32,
    /// One past the highest client sequence forwarded to this binding's server (client space).
    pub c_hi: SeqNumber,
    /// Retiring this binding's server on its inbound leg.
    pub inbound: Teardown,
    /// Sequence of the faked client FIN sent to the old node (leg space), when `inbound` >= FinSent.
    pub fake_fin: SeqNumber,
    /// The other place a retried faked FIN was put: the end of what was delivered to the old
    /// node on this leg, when that is past `fake_fin` (its rcv_nxt if the tail arrived but the
    /// ACK of it was lost).
    pub fake_fin_end: Option<SeqNumber>,
    /// Number of times the faked FIN was sent.
    pub fin_tries: u8,
    /// The old node `S_(k-1)` on this leg (k >= 1): one past its last byte on the leg.
    pub old_nxt: SeqNumber,
    /// The old node's FIN on this leg, once seen (paper IV.B 4).
    pub old_fin: Option<SeqNumber>,
    /// The old node's view of the target's stream on this leg (what it expects next).
    pub old_rcv: SeqNumber,
    /// Highest ack already told to the old node on this leg (faked or forwarded).
    pub old_told: SeqNumber,
    /// Highest TSval the old node sent on this leg.
    pub old_ts: u32,
    /// Paper IV.B 4: the old node's FIN on this leg was answered (a faked ACK), or the old node
    /// reset the leg: the leg it opened is closed.
    pub old_fin_acked: bool,
    /// The old node's FIN on this leg stands for the client's own FIN, which reached the old
    /// node before the hand-off (a half-closed client): it was passed on to the target, and is
    /// acknowledged to the old node only once the target acknowledged it.
    pub fin_passed: bool,
    /// The old node reset the leg it opened (after its FIN was acknowledged): nothing of it
    /// can still arrive on this binding's leg.
    pub old_reset: bool,
    /// When the teardown of this binding's server began (the first faked FIN), ms wrapping.
    pub teardown_ms: u32,
    /// The server's highest acknowledgment on the leg (raw, leg space).
    pub srv_ack: SeqNumber,
    /// One past the server's highest sequence number on the leg (raw, leg space).
    pub srv_nxt: SeqNumber,
    /// The server's highest TSval on the leg (raw).
    pub srv_ts: u32,
    /// When the binding was accepted, or when it was retired (ms, wrapping).
    pub since_ms: u32,
    /// The request counter and node that created this binding (for idempotent replies).
    pub counter: u64,
}

impl Binding {
    /// Moves this binding's teardown by `event` (see [`teardown_transition`]); false, and no
    /// change, when the event does not apply.
    pub fn teardown(&mut self, event: TeardownEvent) -> bool {
        match teardown_transition(self.inbound, event) {
            Ok(t) => {
                self.inbound = t;
                true
            }
            Err(_) => false,
        }
    }
}

/// A handed-off client connection.
#[derive(Debug, Clone, Default)]
pub struct SessionSlot {
    /// In use.
    pub in_use: bool,
    /// Flow index of the client connection `c1` (its orig key is the session's anchor).
    pub anchor: u32,
    /// Bindings, oldest first; the last is current.
    pub bindings: Vec<Binding, MAX_BINDINGS>,
    /// Hand-offs accepted on this connection so far (retired ones included).
    pub hops: u8,
    /// While free: the next free slot + 1 (0 = none), so that a hand-off finds a free slot
    /// without a scan.
    pub(crate) next_free: u32,
}

impl SessionSlot {
    /// The current binding.
    pub fn current(&self) -> Option<&Binding> {
        self.bindings.last()
    }

    /// The binding whose leg is flow `leg`.
    pub fn binding_of_leg(&self, leg: usize) -> Option<usize> {
        self.bindings.iter().position(|b| b.leg as usize == leg)
    }

    /// The binding a client packet belongs to: by sequence for data, by acknowledgment for a
    /// bare ACK (paper III.A: "packets from the client with reference sequence numbers prior to
    /// the hand-off get routed to A, all other packets will be routed to B").
    pub fn pick_for_client(&self, seq: SeqNumber, len: u32, ack: SeqNumber) -> Option<usize> {
        let n = self.bindings.len();
        for k in (0..n).rev() {
            let b = &self.bindings[k];
            if k == 0 {
                return Some(0);
            }
            let hit = if len > 0 {
                seq.add(len).gt(b.c_start)
            } else {
                ack.ge(b.s_start)
            };
            if hit {
                return Some(k);
            }
        }
        None
    }
}

/// Per-node replay state for control messages: a 64-counter window (RFC 4303 3.4.3 style) and
/// the answers to the most recent requests, so a retransmission gets the same answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayState {
    /// Highest counter accepted into the window.
    pub highest: u64,
    /// Bit i set: counter `highest - i` was seen.
    pub bitmap: u64,
    /// Recent (counter, answer, hops) triples.
    pub recent: [(u64, u8, u8); 8],
    /// Next slot of `recent` to overwrite.
    pub next: u8,
}

/// What the replay check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A fresh counter: process the request.
    Fresh,
    /// A retransmission of an answered request: repeat the answer.
    Repeat(ReplyCode, u8),
    /// Seen before and no longer remembered, or older than the window.
    Stale,
}

impl ReplayState {
    /// Checks a counter without recording it.
    pub fn check(&self, counter: u64) -> Replay {
        for &(c, code, hops) in &self.recent {
            if c == counter && c != 0 {
                return Replay::Repeat(ReplyCode::from_wire(code), hops);
            }
        }
        if counter == 0 {
            return Replay::Stale;
        }
        if counter > self.highest {
            return Replay::Fresh;
        }
        let age = self.highest - counter;
        if age >= 64 || self.bitmap & (1 << age) != 0 {
            Replay::Stale
        } else {
            Replay::Fresh
        }
    }

    /// Records a fresh counter and its answer.
    pub fn record(&mut self, counter: u64, code: ReplyCode, hops: u8) {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.bitmap = if shift >= 64 { 0 } else { self.bitmap << shift };
            self.highest = counter;
            self.bitmap |= 1;
        } else {
            let age = self.highest - counter;
            if age < 64 {
                self.bitmap |= 1 << age;
            }
        }
        let i = (self.next as usize) % self.recent.len();
        self.recent[i] = (counter, code.to_wire(), hops);
        self.next = ((i + 1) % self.recent.len()) as u8;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    /// The whole transition table, printed so that a change to it shows in review.
    #[test]
    fn transition_table() {
        let phases = [Phase::Live, Phase::Pending, Phase::Stale, Phase::Retired];
        let events = [
            Event::Accept,
            Event::TargetAcked,
            Event::Superseded,
            Event::Restored,
            Event::RollBack,
            Event::LegsClosed,
        ];
        let mut out = String::new();
        for p in phases {
            for e in events {
                if let Ok(to) = transition(p, e) {
                    out += &std::format!(
                        "{p:?} --{e:?}--> {}\n",
                        match to {
                            Some(t) => std::format!("{t:?}"),
                            None => String::from("(removed)"),
                        }
                    );
                }
            }
        }
        std::println!("{out}");
        assert_eq!(
            out,
            "Live --Accept--> Pending\n\
             Live --Superseded--> Stale\n\
             Pending --TargetAcked--> Live\n\
             Pending --RollBack--> (removed)\n\
             Stale --Restored--> Live\n\
             Stale --LegsClosed--> Retired\n"
        );
        assert_eq!(
            transition(Phase::Retired, Event::Accept),
            Err(BadTransition {
                from: Phase::Retired,
                event: Event::Accept
            })
        );
    }

    /// The teardown transitions, printed like the phase table above.
    #[test]
    fn teardown_table() {
        use Teardown as T;
        use TeardownEvent as E;
        let states = [T::Idle, T::FinSent, T::FinAcked, T::Closed];
        let events = [
            E::FakeFinSent,
            E::FakeFinAcked,
            E::OldFinAbsorbed,
            E::RetriesExhausted,
            E::ForceRetired,
        ];
        let mut out = String::new();
        for s in states {
            for e in events {
                if let Ok(to) = teardown_transition(s, e) {
                    out += &std::format!("{s:?} --{e:?}--> {to:?}\n");
                }
            }
        }
        std::println!("{out}");
        assert_eq!(
            out,
            "Idle --FakeFinSent--> FinSent\n\
             FinSent --FakeFinAcked--> FinAcked\n\
             FinSent --OldFinAbsorbed--> Closed\n\
             FinSent --RetriesExhausted--> Closed\n\
             FinSent --ForceRetired--> Closed\n\
             FinAcked --OldFinAbsorbed--> Closed\n\
             FinAcked --ForceRetired--> Closed\n\
             Closed --ForceRetired--> Closed\n"
        );
        let mut b = Binding::default();
        assert!(
            !b.teardown(E::OldFinAbsorbed),
            "an idle teardown cannot close"
        );
        assert_eq!(b.inbound, T::Idle);
        assert!(b.teardown(E::FakeFinSent));
        assert_eq!(b.inbound, T::FinSent);
    }

    #[test]
    fn replay_window() {
        let mut r = ReplayState::default();
        assert_eq!(r.check(0), Replay::Stale);
        assert_eq!(r.check(10), Replay::Fresh);
        r.record(10, ReplyCode::Accepted, 1);
        assert_eq!(r.check(10), Replay::Repeat(ReplyCode::Accepted, 1));
        assert_eq!(r.check(9), Replay::Fresh, "out of order within the window");
        r.record(9, ReplyCode::NotOwner, 0);
        for c in 11..20 {
            r.record(c, ReplyCode::Accepted, 1);
        }
        // 9 and 10 fell out of the answer ring but stay in the window: refused as replays.
        assert_eq!(r.check(9), Replay::Stale);
        assert_eq!(r.check(10), Replay::Stale);
        r.record(200, ReplyCode::Accepted, 1);
        assert_eq!(r.check(100), Replay::Stale, "older than the window");
        assert_eq!(r.check(199), Replay::Fresh);
    }

    #[test]
    fn client_packets_pick_their_binding() {
        let mut s = SessionSlot {
            in_use: true,
            ..Default::default()
        };
        let _ = s.bindings.push(Binding::default());
        let _ = s.bindings.push(Binding {
            c_start: SeqNumber(1000),
            s_start: SeqNumber(5000),
            ..Default::default()
        });
        // Data ending at or before the splice point goes to the old node.
        assert_eq!(
            s.pick_for_client(SeqNumber(900), 100, SeqNumber(5000)),
            Some(0)
        );
        // Data straddling or after it goes to the new one.
        assert_eq!(
            s.pick_for_client(SeqNumber(950), 100, SeqNumber(4000)),
            Some(1)
        );
        // A bare ACK of the old node's bytes only goes to the old node.
        assert_eq!(
            s.pick_for_client(SeqNumber(1000), 0, SeqNumber(4999)),
            Some(0)
        );
        assert_eq!(
            s.pick_for_client(SeqNumber(1000), 0, SeqNumber(5000)),
            Some(1)
        );
        // Across the 2^32 wrap.
        s.bindings[1].c_start = SeqNumber(10);
        assert_eq!(
            s.pick_for_client(SeqNumber(u32::MAX - 5), 10, SeqNumber(5000)),
            Some(0)
        );
        assert_eq!(
            s.pick_for_client(SeqNumber(u32::MAX - 5), 20, SeqNumber(5000)),
            Some(1)
        );
    }
}
