//! The ops of the stateful target: segments, control requests, time and whole hand-off steps,
//! each decoded from and encoded to a few bytes of input, over small alphabets of endpoints.

use std::vec::Vec;

use super::cluster::{A_CLIENT, A_N1, A_VIP, P_80, P_C1};
use super::reader::Reader;

/// An endpoint of the alphabets: (address index, port index).
pub type At = (u8, u8);

pub(super) fn at(a: At) -> u8 {
    (a.0 & 7) | (a.1 & 7) << 3
}

/// The client's connection endpoint.
pub const CLIENT: At = (A_CLIENT, P_C1);
/// The VIP service.
pub const VIP: At = (A_VIP, P_80);

/// Node `n`'s service endpoint.
pub const fn node(n: u8) -> At {
    (A_N1 + n - 1, P_80)
}

/// Options for the scripted connections: TS and SACK-permitted, WS, MSS.
pub const SYN_OPTS: u8 = 1 | 2 | 4 | 8;

/// A TCP segment op: endpoints from the alphabets, sequence numbers relative to the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegOp {
    /// Source: address index (bits 0-2), port index (bits 3-5).
    pub src: u8,
    /// Destination, like `src`.
    pub dst: u8,
    /// SYN 1, ACK 2, FIN 4, RST 8, PSH 16, partial checksum 32, corrupt checksum 64, wrong port 128.
    pub flags: u8,
    /// Bits 0-1: seq = next, next + delta, ISN + delta, raw; bits 2-3: TTL; bits 4-7: ISN choice.
    pub seq_mode: u8,
    /// Sequence delta.
    pub seq_delta: i16,
    /// Bits 0-1: ack = rcv next, + delta, 0, raw; bits 2-4: window.
    pub ack_mode: u8,
    /// Acknowledgment delta.
    pub ack_delta: i16,
    /// Payload bytes.
    pub len: u8,
    /// Options: MSS 1, WS 2, SACK-permitted 4, TS 8, SACK blocks (bits 4-5), odd MSS 64.
    pub opts: u8,
    /// Window-scale shift, MSS / 8, SACK edge offset.
    pub extra: u8,
}

/// A hand-off request op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtlOp {
    /// Node 1 + n % 3.
    pub node: u8,
    /// Bits 2-3: key good, wrong, unknown id, bad tag; 4-5: counter fresh, repeat, 0, old;
    /// 6: sent from another node's port.
    pub mode: u8,
    /// Held connection's peer: address index, port index << 3.
    pub held: u8,
    /// Held connection's local port index.
    pub held_local: u8,
    /// New leg's local port index.
    pub new_port: u8,
    /// New leg's remote: address index, port index << 3.
    pub target: u8,
    /// Client bytes received but not consumed.
    pub consumed_adj: i16,
    /// Added to the bytes sent.
    pub sent_adj: i16,
    /// UDP source port choice.
    pub sport: u8,
}

/// One step of the stateful target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Advance the clock and poll: mode bits 0-1 = ms, s, drain, min; bits 2-7 = budget.
    Tick {
        /// Unit and budget.
        mode: u8,
        /// Amount.
        amount: u16,
    },
    /// Arbitrary bytes on a port.
    Raw {
        /// Port (mod 6, so some do not exist).
        port: u8,
        /// Partial checksum.
        partial: bool,
        /// The frame.
        frame: Vec<u8>,
    },
    /// ARP from a host about an address (mode 1: reply, 2: unicast to the switch).
    Arp {
        /// Host address index.
        host: u8,
        /// Target address index.
        target: u8,
        /// Mode bits.
        mode: u8,
    },
    /// A TCP segment.
    Seg(SegOp),
    /// A hand-off request.
    Control(CtlOp),
    /// A compound step of a real client or proxy, built from the ops above on the model and the
    /// switch's state (see [`Macro`]): a whole hand-off, a reconnect on the same tuple, a
    /// request (maybe half-closing), a close.
    Macro {
        /// Which macro (mod 4, see [`Macro`]).
        kind: u8,
        /// Its flags.
        arg: u8,
        /// Sizes.
        arg2: u8,
    },
}

/// The macros of [`Op::Macro`], by `kind % 4`. Bit 0 of `arg` picks the client port (40000 or
/// 40001) in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Macro {
    /// A whole hand-off of the client's connection by its current server (from the switch's
    /// table) to one of the two other nodes (`arg` bits 1-2), over a new leg from port 50000
    /// or 50001 (bit 3) with all options, no timestamps, no SACK or none (bits 4-5): the
    /// client's request (`arg2` sizes it; none if the client has half-closed, whose FIN then
    /// goes on behind the forwarded bytes), the leg's handshake, the request, the forwarded
    /// bytes, the target's ACK (with a SACK block if `arg2` bit 7) and response, the old node's
    /// close: its FIN on the leg, its ACK of the faked FIN and its own FIN on the held
    /// connection, then its RST on the leg (none if `arg` bit 7: an old proxy, retired by
    /// time-out). With `arg` bit 6 it stops once the request is accepted (a hand-off in flight).
    Handoff,
    /// A new connection on the client's tuple (RFC 6191 reuse): SYN (options as in
    /// `Handoff`, `arg` bits 1-2) after the old connection's sequence numbers, or, with `arg`
    /// bit 3, an old duplicate before them (no timestamp); the handshake with the node it was
    /// sprayed to.
    Reconnect,
    /// A client request of `arg2 % 64 + 1` bytes, with the client's FIN behind it if `arg` bit
    /// 6 (a half-closed client); its server acknowledges.
    Request,
    /// The connection closes, the server first (`Connection: close`) or, with `arg` bit 6,
    /// the client.
    Close,
}

impl Macro {
    /// The macro of a `kind` byte.
    pub fn of(kind: u8) -> Macro {
        [
            Macro::Handoff,
            Macro::Reconnect,
            Macro::Request,
            Macro::Close,
        ][(kind % 4) as usize]
    }
}

impl Op {
    /// Decodes one op; `None` at the end of the input.
    pub fn decode(r: &mut Reader) -> Option<Op> {
        if r.is_empty() {
            return None;
        }
        let tag = r.u8();
        // Tags 15, 31, ... (an odd tag's 16s bit set as well): macros. Other tags keep their
        // meaning of before, so older corpus files decode as they did.
        if tag % 16 == 15 {
            return Some(Op::Macro {
                kind: r.u8(),
                arg: r.u8(),
                arg2: r.u8(),
            });
        }
        Some(match tag % 8 {
            0 => Op::Tick {
                mode: r.u8(),
                amount: r.u16(),
            },
            1 => {
                let port = r.u8();
                let len = r.u8();
                Op::Raw {
                    port: port & 0x7f,
                    partial: port & 0x80 != 0,
                    frame: r.bytes(len as usize).to_vec(),
                }
            }
            2 => Op::Arp {
                host: r.u8(),
                target: r.u8(),
                mode: r.u8(),
            },
            6 => Op::Control(CtlOp {
                node: r.u8(),
                mode: r.u8(),
                held: r.u8(),
                held_local: r.u8(),
                new_port: r.u8(),
                target: r.u8(),
                consumed_adj: r.u16() as i16,
                sent_adj: r.u16() as i16,
                sport: r.u8(),
            }),
            _ => Op::Seg(SegOp {
                src: r.u8(),
                dst: r.u8(),
                flags: r.u8(),
                seq_mode: r.u8(),
                seq_delta: r.u16() as i16,
                ack_mode: r.u8(),
                ack_delta: r.u16() as i16,
                len: r.u8(),
                opts: r.u8(),
                extra: r.u8(),
            }),
        })
    }

    /// Encodes the op so that [`Op::decode`] reads it back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Tick { mode, amount } => {
                out.extend_from_slice(&[0, *mode]);
                out.extend_from_slice(&amount.to_be_bytes());
            }
            Op::Raw {
                port,
                partial,
                frame,
            } => {
                let n = frame.len().min(255);
                out.extend_from_slice(&[1, (port & 0x7f) | (*partial as u8) << 7, n as u8]);
                out.extend_from_slice(&frame[..n]);
            }
            Op::Arp { host, target, mode } => out.extend_from_slice(&[2, *host, *target, *mode]),
            Op::Seg(s) => {
                out.extend_from_slice(&[3, s.src, s.dst, s.flags, s.seq_mode]);
                out.extend_from_slice(&s.seq_delta.to_be_bytes());
                out.push(s.ack_mode);
                out.extend_from_slice(&s.ack_delta.to_be_bytes());
                out.extend_from_slice(&[s.len, s.opts, s.extra]);
            }
            Op::Macro { kind, arg, arg2 } => out.extend_from_slice(&[15, *kind, *arg, *arg2]),
            Op::Control(c) => {
                out.extend_from_slice(&[
                    6,
                    c.node,
                    c.mode,
                    c.held,
                    c.held_local,
                    c.new_port,
                    c.target,
                ]);
                out.extend_from_slice(&c.consumed_adj.to_be_bytes());
                out.extend_from_slice(&c.sent_adj.to_be_bytes());
                out.push(c.sport);
            }
        }
    }
}
