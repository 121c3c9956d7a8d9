//! The deterministic end-to-end proof of the splice (issue "Proof").
//!
//! smoltcp TCP stacks play the client (switch port 0) and the nodes A, B, C (198.19.N.2 on ports
//! 1-3), joined through [`Switch::process`] by in-memory links on a virtual millisecond clock.
//! Every host has its own ISN seed (chosen so that streams cross 2^32), window scale (receive
//! buffer size) and timestamp clock (offsets near the 2^32 wrap). A scripted proxy on each node
//! performs the hand-off steps: it waits until its response bytes are acknowledged, opens c2,
//! asks the switch (signed UDP control request, retried every 50 ms), forwards the bytes it read
//! but did not consume, copies c1 to c2 until the switch fakes the client's FIN, then closes c2
//! and c1. A node that receives a handed-off connection serves it like any other and may hand it
//! off again.
//!
//! Every run checks:
//! - the client receives every response once, in order, byte for byte, from the right node
//!   (the one its request names, unless the hand-off was refused or rolled back);
//! - every request is served once (twice only when a hand-off was rolled back after its target
//!   had read it; that answer never reaches the client);
//! - every frame delivered to a host has correct IPv4 and TCP checksums, acknowledges nothing
//!   its receiver did not send, carries SACK edges inside the receiver's sent range, a TSecr that
//!   echoes the receiver's own clock and a TSval in the clock domain of the peer it believes it
//!   talks to (monotonic too, when the links do not reorder), and no timestamp or SACK option
//!   on a connection whose SYNs did not negotiate it;
//! - no RST hits a live (synchronized) connection, except the two ends of the new leg of a
//!   rolled-back hand-off; the client never sees one;
//! - the run goes on until every host socket is closed or in TIME-WAIT (so late retransmissions
//!   must still be answered), the switch's table is empty within its TIME-WAIT of the last one
//!   closing, and no entry leaves it by idle expiry. Exempt on a faulty network only: both ends
//!   of a leg to a hung target, and a target's idle end of a rolled-back leg whose one RST was
//!   lost (no packet of it reaches the switch again).
//!
//! The hosts behave as real stacks where smoltcp does not: a host holds one connection per
//! 4-tuple and rejects a late duplicate SYN (smoltcp would hand it to a second listener), but a
//! new SYN that Linux's TIME-WAIT accepts (RFC 6191) ends the TIME-WAIT and opens the tuple
//! again. A client without SACK is one whose SYNs lose the option on its link (smoltcp always
//! offers it).
//!
//! Then golden-packet tests pin the exact bytes of each packet of paper IV.B the switch fakes,
//! with sequence numbers and timestamps across the 2^32 wrap, and a deterministic proptest runs
//! random schedules. `KNITS_E2E_SEED` / `KNITS_E2E_CASES` explore more schedules,
//! `KNITS_E2E_TRACE=1` prints every frame, `KNITS_E2E_SUMMARY=1` the switch's counters and state.
//!
//! The set-up, shared by every test: `net` (clock, addresses, ISNs, the switch's key), `request`
//! (the request protocol), `params` (a scenario), `device` (a smoltcp host on an in-memory link,
//! its sockets), `client` and `node` (the applications), `observe` (what the wire must show),
//! `fabric` (hosts, links, the switch) and `run` (a scenario to its end, checked). The tests:
//! `scenarios`, `schedules` (proptest), `regressions` (named schedules that found bugs) and
//! `golden` (hand-crafted frames in, exact bytes out, on the same switch set-up and addresses).
//! Each module imports only modules listed before it (the tests: the set-up).

mod client;
mod device;
mod fabric;
mod net;
mod node;
mod observe;
mod params;
mod request;
mod run;

mod golden;
mod regressions;
mod scenarios;
mod schedules;
