//! Counters for every verdict, drop reason, hand-off outcome and generated packet.
//!
//! Plain `u64` arrays indexed by small enums: one increment per event, no allocation. The host
//! prints them and serves them in Prometheus text format; the names come from here.

use crate::named_enum;

named_enum! {
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    /// Why the switch dropped a frame.
    pub enum DropReason {
        /// Shorter than an Ethernet header.
        EthTruncated = "eth_truncated",
        /// An EtherType the switch does not handle (IPv6 included, for now).
        EthUnsupported = "eth_unsupported",
        /// Not addressed to the switch's MAC nor broadcast.
        EthNotForUs = "eth_not_for_us",
        /// ARP packet too short or not Ethernet/IPv4.
        ArpMalformed = "arp_malformed",
        /// ARP for an address the switch does not own.
        ArpNotForUs = "arp_not_for_us",
        /// IPv4 header truncated, IHL < 5, total length beyond the frame, or version != 4.
        Ipv4Malformed = "ipv4_malformed",
        /// IPv4 header carries options (never produced by the cluster's hosts).
        Ipv4Options = "ipv4_options",
        /// An IPv4 fragment (the switch needs the transport header of every packet).
        Ipv4Fragment = "ipv4_fragment",
        /// IPv4 header checksum wrong.
        Ipv4BadChecksum = "ipv4_bad_checksum",
        /// TTL would reach zero.
        TtlExpired = "ttl_expired",
        /// TCP data offset < 5 or beyond the segment.
        TcpMalformed = "tcp_malformed",
        /// A TCP option of length 0 or 1, running past the header, or a bad fixed length.
        TcpBadOption = "tcp_bad_option",
        /// TCP checksum wrong.
        TcpBadChecksum = "tcp_bad_checksum",
        /// An impossible flag set (SYN+FIN, SYN+RST, no flag at all, ...).
        TcpBadFlags = "tcp_bad_flags",
        /// UDP header truncated or length field wrong.
        UdpMalformed = "udp_malformed",
        /// UDP checksum wrong.
        UdpBadChecksum = "udp_bad_checksum",
        /// A protocol other than TCP to the VIP, or a VIP port that is not served.
        VipNotServed = "vip_not_served",
        /// A non-SYN segment for a connection the switch does not know.
        UnknownFlow = "unknown_flow",
        /// No room in the flow table for a new connection.
        TableFull = "table_full",
        /// No back-end is configured or up.
        NoBackend = "no_backend",
        /// No port owns the destination address.
        NoRoute = "no_route",
        /// The next hop's MAC is not known yet (an ARP request was sent).
        NeighborUnknown = "neighbor_unknown",
        /// A segment outside the receive window of a tracked connection (RFC 5961 for RST).
        OutOfWindow = "out_of_window",
        /// A packet that claims to be from a node but arrived on another port.
        WrongPort = "wrong_port",
        /// A control message that does not parse.
        ControlMalformed = "control_malformed",
        /// A control message from a port that may not send them (the client side).
        ControlWrongPort = "control_wrong_port",
        /// The sink for generated frames refused one.
        SinkFull = "sink_full",
        /// A packet of a stale hand-off leg with nowhere to go (after its teardown).
        StaleLeg = "stale_leg",
        /// A source address that does not belong behind the port it came in on: a back-end
        /// port's packets must come from its subnet, and the client side may not claim an
        /// address of the cluster.
        SrcSpoofed = "src_spoofed",
        /// A new connection whose keys collide with a tracked one.
        FlowConflict = "flow_conflict",
        /// A SYN-ACK on a hand-off leg after the hand-off: part of the old node's handshake,
        /// never forwarded to the client.
        LegHandshake = "leg_handshake",
        /// The switch's own state contradicted itself (a session or binding index out of
        /// range): the frame was dropped where a panic would otherwise be. Never expected; a
        /// count here is a bug to report.
        Internal = "internal",
        /// A SYN on a tuple whose connection is closed (TIME-WAIT) that RFC 6191 would not let
        /// reopen it: its sequence number is not past the old connection's and its timestamp
        /// (if any) is not newer. An old duplicate; the closed connection's entry stays.
        ReuseRefused = "reuse_refused",
        /// The old node's FIN on its connection to the client while its hand-off is pending:
        /// held back (the node resends it) until the hand-off is confirmed or rolled back.
        HandoffPending = "handoff_pending",
    }
}

named_enum! {
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    /// Packets the switch handled itself instead of forwarding.
    pub enum LocalKind {
        /// An ARP request answered, or a reply learned.
        Arp = "arp",
        /// A control message (hand-off request) answered.
        Control = "control",
        /// A stale-leg teardown packet absorbed, as paper IV.B lists.
        TeardownAbsorbed = "teardown_absorbed",
    }
}

named_enum! {
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    /// Frames the switch made up itself.
    pub enum Generated {
        /// Answer to an ARP request for a gateway address or the VIP.
        ArpReply = "arp_reply",
        /// ARP request for an unknown next hop.
        ArpRequest = "arp_request",
        /// Reply to a hand-off request.
        ControlReply = "control_reply",
        /// Paper IV.B 1: the client's FIN, faked to the old node on c1.
        FakeClientFin = "fake_client_fin",
        /// Paper IV.B 1: the final ACK of the old node's FIN on c1.
        FakeClientFinalAck = "fake_client_final_ack",
        /// Paper IV.B 3: the target's ACK of the forwarded request, when it rode on response data.
        FakeTargetAck = "fake_target_ack",
        /// Paper IV.B 4: the target's ACK of the old node's FIN on c2 (without a FIN of its own:
        /// the old node then resets c2 and keeps no TIME-WAIT).
        FakeTargetFinAck = "fake_target_fin_ack",
        /// A reset sent to a node whose hand-off was rolled back (c2 only).
        AbortReset = "abort_reset",
        /// A reset sent to a client whose server's port went down.
        PortDownReset = "port_down_reset",
        /// The final ACK for a FIN that a node resent on a leg the switch has already retired
        /// (its first answer was lost), as a TIME-WAIT socket would answer it.
        LateFinAck = "late_fin_ack",
    }
}

named_enum! {
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    /// Flow and hand-off life-cycle events beyond the verdicts (docs/protocol.md).
    pub enum FlowEvent {
        /// A SYN on a tuple whose connection was closed (TIME-WAIT) started a new connection:
        /// the old entry (and its splice session) went, the SYN was sprayed again.
        Reopened = "reopened",
        /// A connection in TIME-WAIT gave up its entry (and session) early because the flow or
        /// session table was full and a new connection needed the room.
        TimeWaitRecycled = "time_wait_recycled",
        /// An old node closed the new leg it opened with an RST once everything it sent was
        /// acknowledged (so it keeps no TIME-WAIT): absorbed, the leg counts as closed.
        LegReset = "leg_reset",
        /// A connection between two nodes outside any splice session was reset: its entry
        /// went at once (nothing of it is translated, so nothing late needs it).
        RoutedReset = "routed_reset",
        /// A binding left the history as soon as its old node's legs were closed.
        BindingRemoved = "binding_removed",
        /// A stale binding whose old node never finished closing was retired by the teardown
        /// time-out.
        BindingForced = "binding_forced",
        /// A timestamp option removed (NOPs) from a segment to a client that did not negotiate
        /// timestamps, or to a leg that did not.
        TsStripped = "ts_stripped",
        /// A SACK option removed (NOPs) from a segment to an end that did not negotiate SACK.
        SackStripped = "sack_stripped",
        /// A half-closed client's FIN, delivered to the old node before the hand-off, passed on
        /// to the target behind the forwarded request.
        ClientFinPassed = "client_fin_passed",
    }
}

/// All counters of one switch.
#[derive(Debug, Clone)]
pub struct Counters {
    /// Frames received, per port (index = port id).
    pub rx_frames: [u64; crate::config::MAX_PORTS],
    /// Frames forwarded, per egress port.
    pub tx_frames: [u64; crate::config::MAX_PORTS],
    /// Drops, by reason.
    pub drops: [u64; DropReason::COUNT],
    /// Frames handled by the switch itself, by kind.
    pub local: [u64; LocalKind::COUNT],
    /// Frames generated, by kind.
    pub generated: [u64; Generated::COUNT],
    /// Hand-off requests answered, by reply code.
    pub handoffs: [u64; crate::wire::control::ReplyCode::COUNT],
    /// Hand-offs completed (the old node's legs were retired).
    pub handoffs_completed: u64,
    /// Hand-offs rolled back (target silent or reset).
    pub handoffs_rolled_back: u64,
    /// Connections sprayed, per back-end index.
    pub sprayed: [u64; crate::config::MAX_BACKENDS],
    /// Connections sprayed, per service (index into `Config::services`).
    pub sprayed_by_service: [u64; crate::config::MAX_SERVICES],
    /// Hand-offs accepted, per service.
    pub handoffs_by_service: [u64; crate::config::MAX_SERVICES],
    /// Routed (untranslated) connections tracked between nodes.
    pub tracked_routed: u64,
    /// Flow entries removed by expiry, by reason.
    pub expired: u64,
    /// Flow entries removed on close (after TIME-WAIT, on reopening, recycling or reset).
    pub closed: u64,
    /// Life-cycle events, by kind.
    pub events: [u64; FlowEvent::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx_frames: [0; crate::config::MAX_PORTS],
            tx_frames: [0; crate::config::MAX_PORTS],
            drops: [0; DropReason::COUNT],
            local: [0; LocalKind::COUNT],
            generated: [0; Generated::COUNT],
            handoffs: [0; crate::wire::control::ReplyCode::COUNT],
            handoffs_completed: 0,
            handoffs_rolled_back: 0,
            sprayed: [0; crate::config::MAX_BACKENDS],
            sprayed_by_service: [0; crate::config::MAX_SERVICES],
            handoffs_by_service: [0; crate::config::MAX_SERVICES],
            tracked_routed: 0,
            expired: 0,
            closed: 0,
            events: [0; FlowEvent::COUNT],
        }
    }
}

/// Adds another switch's counters, every field: a host running several shards, each with a
/// switch of its own, reports their sum.
impl core::ops::AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        fn add(a: &mut [u64], b: &[u64]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        // Destructured, so that a new field cannot be left out of the sum.
        let Counters {
            rx_frames,
            tx_frames,
            drops,
            local,
            generated,
            handoffs,
            handoffs_completed,
            handoffs_rolled_back,
            sprayed,
            sprayed_by_service,
            handoffs_by_service,
            tracked_routed,
            expired,
            closed,
            events,
        } = self;
        add(rx_frames, &o.rx_frames);
        add(tx_frames, &o.tx_frames);
        add(drops, &o.drops);
        add(local, &o.local);
        add(generated, &o.generated);
        add(handoffs, &o.handoffs);
        add(sprayed, &o.sprayed);
        add(sprayed_by_service, &o.sprayed_by_service);
        add(handoffs_by_service, &o.handoffs_by_service);
        add(events, &o.events);
        *handoffs_completed += o.handoffs_completed;
        *handoffs_rolled_back += o.handoffs_rolled_back;
        *tracked_routed += o.tracked_routed;
        *expired += o.expired;
        *closed += o.closed;
    }
}

impl Counters {
    /// Total drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// The count for one drop reason.
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }

    /// The count of one life-cycle event.
    pub fn event_count(&self, e: FlowEvent) -> u64 {
        self.events[e.index()]
    }

    /// The count for one kind of generated frame.
    pub fn generated_count(&self, g: Generated) -> u64 {
        self.generated[g.index()]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec::Vec;

    /// Every value `Debug` prints, in order: every field's every entry (no field name holds a
    /// digit).
    fn values(c: &Counters) -> Vec<u64> {
        std::format!("{c:?}")
            .split(|ch: char| !ch.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().unwrap())
            .collect()
    }

    /// `+=` adds every field into itself: with every entry of `a` distinct and not zero, every
    /// entry of `a + a` is twice `a`'s (a field summed into another, or not at all, is not).
    #[test]
    fn add_assign_adds_every_field() {
        let mut a = Counters::default();
        let mut n = 0u64;
        let mut next = || {
            n += 1;
            n
        };
        for arr in [
            &mut a.rx_frames[..],
            &mut a.tx_frames[..],
            &mut a.drops[..],
            &mut a.local[..],
            &mut a.generated[..],
            &mut a.handoffs[..],
            &mut a.sprayed[..],
            &mut a.sprayed_by_service[..],
            &mut a.handoffs_by_service[..],
            &mut a.events[..],
        ] {
            arr.iter_mut().for_each(|x| *x = next());
        }
        for x in [
            &mut a.handoffs_completed,
            &mut a.handoffs_rolled_back,
            &mut a.tracked_routed,
            &mut a.expired,
            &mut a.closed,
        ] {
            *x = next();
        }
        let one = values(&a);
        assert!(one.iter().all(|&v| v != 0), "a field the test does not set");
        let mut sum = a.clone();
        sum += &a;
        let two: Vec<u64> = one.iter().map(|v| 2 * v).collect();
        assert_eq!(values(&sum), two);
    }
}
