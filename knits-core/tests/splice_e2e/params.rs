//! Scenario parameters, and the deterministic randomness they draw from.

use crate::net::HOSTS;
use crate::request::Req;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Per 10 000 frames, on every link in both directions.
    pub(crate) loss: u32,
    pub(crate) dup: u32,
    pub(crate) reorder: u32,
    /// A reordered frame is held back 1..=max_delay ms.
    pub(crate) max_delay: u64,
    /// Targeted: the first n hand-off requests, replies, and segments of forwarded bytes (data
    /// from an old node on a new leg) are lost.
    pub(crate) drop_first: [u32; 3],
}

impl Faults {
    pub(crate) fn any(&self) -> bool {
        self.loss + self.dup + self.reorder + self.drop_first.iter().sum::<u32>() > 0
    }
}

/// How a node's proxy treats connections handed to it by another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Normal,
    /// Never answers: its frames on such connections are dropped (a hung target).
    Mute,
    /// Resets such a connection when the forwarded bytes arrive, before acknowledging them.
    Reset,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ConnSpec {
    /// When the connection opens: virtual ms, or ms after connection `after` has finished.
    pub(crate) start_ms: u64,
    pub(crate) reqs: Vec<Req>,
    /// Client port (default 40000 + 7 x index). Two connections may share one, one after the
    /// other (`after`): the tuple is reused.
    pub(crate) lport: Option<u16>,
    /// Opens `start_ms` after this (earlier) connection has finished.
    pub(crate) after: Option<usize>,
    /// The client closes its write side (FIN) right after its last request is out, and reads
    /// the responses half-closed.
    pub(crate) half_close: bool,
    /// Once every response is in (the last one with `close`: the server closes first), the
    /// client sends a last small record and resets at once, without a FIN, before the server
    /// can acknowledge the record: how wrk ends a TLS connection (its close_notify, then RST
    /// at its own next sequence number).
    pub(crate) notify_then_reset: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) seed: u64,
    pub(crate) faults: Faults,
    pub(crate) conns: Vec<ConnSpec>,
    pub(crate) modes: [Mode; HOSTS],
    /// ISN of each host's first connection.
    pub(crate) isn: [u32; HOSTS],
    pub(crate) ts_off: [u32; HOSTS],
    /// Receive buffer of accepted (and client) sockets: sets the window scale.
    pub(crate) rx_in: [usize; HOSTS],
    /// Receive buffer of the sockets a node opens for c2.
    pub(crate) rx_out: [usize; HOSTS],
    pub(crate) tx: [usize; HOSTS],
    /// Give up (and fail) after this much virtual time.
    pub(crate) deadline_ms: u64,
    /// The client's SYNs offer timestamps (else its sockets run without them).
    pub(crate) client_ts: bool,
    /// The client's SYNs offer SACK. smoltcp always offers it, so without it the client's
    /// link removes the option from its SYNs (NOPs), and every peer takes the client for a
    /// host without SACK.
    pub(crate) client_sack: bool,
    /// Delayed ACK of every host's sockets: None for smoltcp's default (10 ms), Some(0) for
    /// none.
    pub(crate) ack_delay_ms: Option<u64>,
    /// The switch's hand-off time-out, if not the tests' 1 s (the default is 5 s).
    pub(crate) handoff_ms: Option<u64>,
    /// Removes closed sockets (and a node's finished connections) as the run goes, so that
    /// long runs stay small. Off by default: it changes the order in which hosts send, and
    /// with it the fault schedule of a seed.
    pub(crate) reap: bool,
}

impl Params {
    /// Which node each request names, by connection.
    pub(crate) fn targets(&self) -> Vec<Vec<u8>> {
        self.conns
            .iter()
            .map(|c| c.reqs.iter().map(|r| r.target).collect())
            .collect()
    }

    pub(crate) fn new(seed: u64, conns: Vec<ConnSpec>) -> Params {
        Params {
            seed,
            faults: Faults::default(),
            conns,
            modes: [Mode::Normal; HOSTS],
            // Client data, node responses and the legs' SYN-ACKs all cross 2^32.
            isn: [0xffff_fff0, 0xffff_f000, 0xffff_ffff, 0xfff0_0000],
            // Four clock domains far apart; node C's clock wraps 4 s into the run.
            ts_off: [0x1000_0000, 0x7fff_0000, 0xc000_1234, 0xffff_f000],
            // Window shifts 3, 0, 2, 5 on accepted sockets; 1, 4, 0 on the sockets opened for c2.
            rx_in: [256 << 10, 32 << 10, 128 << 10, 1 << 20],
            rx_out: [0, 64 << 10, 512 << 10, 16 << 10],
            tx: [16 << 10, 64 << 10, 48 << 10, 96 << 10],
            deadline_ms: 120_000,
            client_ts: true,
            client_sack: true,
            ack_delay_ms: None,
            handoff_ms: None,
            reap: false,
        }
    }
}

pub(crate) fn script(targets: &[(u8, u32)]) -> Vec<Req> {
    requests(targets, true)
}

pub(crate) fn pipelined(targets: &[(u8, u32)]) -> Vec<Req> {
    requests(targets, false)
}

/// Requests of (target, size), each sent once the one before was answered (`wait`) or at once.
fn requests(targets: &[(u8, u32)], wait: bool) -> Vec<Req> {
    targets
        .iter()
        .map(|&(target, size)| Req {
            target,
            size,
            wait,
            ..Req::default()
        })
        .collect()
}

pub(crate) fn request_id(conn: usize, i: usize) -> u32 {
    (conn as u32 + 1) * 1000 + i as u32
}

#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// A scenario of a named regression: its seed, faults (loss, duplication, reordering), connections,
/// ISNs and timestamp offsets.
pub(crate) fn regression(
    seed: u64,
    fl: (u32, u32, u32),
    conns: Vec<ConnSpec>,
    isn: [u32; 4],
    ts_off: [u32; 4],
) -> Params {
    let mut p = Params::new(seed, conns);
    p.faults = Faults {
        loss: fl.0,
        dup: fl.1,
        reorder: fl.2,
        max_delay: 8,
        drop_first: [0; 3],
    };
    p.isn = isn;
    p.ts_off = ts_off;
    p
}
