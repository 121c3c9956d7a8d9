//! The hand-off control protocol: a node's request and the switch's reply, carried in UDP to the
//! node's gateway address, port [`DEFAULT_PORT`].
//!
//! Fixed layout, network byte order, version 1. Both messages end in a 64-bit SipHash-2-4 tag,
//! keyed with a 128-bit key shared by the switch and the node, over every byte before it. See
//! docs/protocol.md for the acceptance rules.
//!
//! ```text
//! Request (64 bytes)                         Reply (32 bytes)
//!  0  magic "KN"        2  version = 1        0  magic "KN"      2  version = 1
//!  3  type = 1 (request)                      3  type = 2 (reply)
//!  4  key id            5  flags (0)          4  code (0 = accepted)
//!  6  reserved (0, 2 bytes)                   5  key id          6  reserved (2)
//!  8  counter (u64)                           8  counter (u64, echoed)
//! 16  held peer address  20 held peer port   16  handoffs on this connection (u8)
//! 22  held local port    24 held local addr  17  reserved (7)
//! 28  new local address  32 new local port   24  tag (8 bytes)
//! 34  new remote port    36 new remote addr
//! 40  consumed (u64): peer bytes consumed before the new leg's first byte
//! 48  sent (u64): bytes the node sent to the peer before the target's first byte
//! 56  tag (8 bytes)
//! ```

use byteorder::{ByteOrder, NetworkEndian};
use core::hash::Hasher;
use siphasher::sip::SipHasher24;

use crate::named_enum;

/// The UDP port the switch listens on for control messages, by default.
pub const DEFAULT_PORT: u16 = 7100;
/// Protocol magic, "KN".
pub const MAGIC: [u8; 2] = *b"KN";
/// The only version this crate speaks.
pub const VERSION: u8 = 1;
/// Message type of a hand-off request.
pub const TYPE_REQUEST: u8 = 1;
/// Message type of the switch's reply.
pub const TYPE_REPLY: u8 = 2;
/// Length of a request.
pub const REQUEST_LEN: usize = 64;
/// Length of a reply.
pub const REPLY_LEN: usize = 32;
/// Length of the MAC tag.
pub const TAG_LEN: usize = 8;
/// Bytes of a request its tag covers (all before the tag).
pub const REQUEST_TAGGED: usize = REQUEST_LEN - TAG_LEN;
/// Bytes of a reply its tag covers (all before the tag).
pub const REPLY_TAGGED: usize = REPLY_LEN - TAG_LEN;

/// A 128-bit control key.
pub type Key = [u8; 16];

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const TYPE: usize = 3;
    // Request.
    pub const KEY_ID: usize = 4;
    pub const FLAGS: usize = 5;
    pub const COUNTER: Range<usize> = 8..16;
    pub const HELD_PEER_ADDR: Range<usize> = 16..20;
    pub const HELD_PEER_PORT: Range<usize> = 20..22;
    pub const HELD_LOCAL_PORT: Range<usize> = 22..24;
    pub const HELD_LOCAL_ADDR: Range<usize> = 24..28;
    pub const NEW_LOCAL_ADDR: Range<usize> = 28..32;
    pub const NEW_LOCAL_PORT: Range<usize> = 32..34;
    pub const NEW_REMOTE_PORT: Range<usize> = 34..36;
    pub const NEW_REMOTE_ADDR: Range<usize> = 36..40;
    pub const CONSUMED: Range<usize> = 40..48;
    pub const SENT: Range<usize> = 48..56;
    pub const REQ_TAG: Range<usize> = 56..64;
    // Reply.
    pub const CODE: usize = 4;
    pub const REPLY_KEY_ID: usize = 5;
    pub const HOPS: usize = 16;
    pub const REPLY_TAG: Range<usize> = 24..32;
}

named_enum! {
    #[cfg_attr(feature = "defmt", derive(defmt::Format))]
    /// The switch's answer to a hand-off request.
    pub enum ReplyCode {
        /// The splice is in effect.
        Accepted = "accepted",
        /// The held connection is not tracked by the switch.
        UnknownConnection = "unknown_connection",
        /// The sender is not the node that owns the connection now, or sent from another port.
        NotOwner = "not_owner",
        /// The key id is unknown or the tag does not verify.
        BadMac = "bad_mac",
        /// The counter was seen before with a different request, or is older than the window.
        Replay = "replay",
        /// The new leg is not tracked or not established.
        UnknownNewLeg = "unknown_new_leg",
        /// A leg is not in the established state (or already closing).
        NotEstablished = "not_established",
        /// An anchor lies outside what the switch has seen of a stream.
        AnchorsOutOfRange = "anchors_out_of_range",
        /// Timestamps on one leg only, or another option that cannot be translated.
        OptionsIncompatible = "options_incompatible",
        /// No room for another binding or splice session.
        TableFull = "table_full",
        /// The connection already had as many hand-offs as the binding history holds.
        TooManyHops = "too_many_hops",
        /// The previous hand-off of this connection has not completed yet.
        Busy = "busy",
        /// The hand-off was rolled back: the target never acknowledged or reset the new leg.
        RolledBack = "rolled_back",
        /// The message version is not supported.
        BadVersion = "bad_version",
        /// The connection belongs to a plain layer-4 service, which is never handed off.
        NotHandoffService = "not_handoff_service",
        /// A code this crate does not know (kept, not rejected).
        Unknown = "unknown",
    }
}

impl ReplyCode {
    /// The code on the wire.
    pub const fn to_wire(self) -> u8 {
        self as u8
    }

    /// A code from the wire; unknown values become [`ReplyCode::Unknown`].
    pub const fn from_wire(v: u8) -> ReplyCode {
        if (v as usize) < Self::COUNT {
            Self::ALL[v as usize]
        } else {
            ReplyCode::Unknown
        }
    }
}

/// Errors from parsing a control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Shorter than the message needs.
    Truncated,
    /// Not "KN".
    BadMagic,
    /// A version this crate does not speak.
    BadVersion(u8),
    /// Not the expected message type.
    BadType(u8),
}

/// Computes the 64-bit SipHash-2-4 tag of `data` under `key`.
pub fn tag(key: &Key, data: &[u8]) -> [u8; TAG_LEN] {
    let mut h = SipHasher24::new_with_key(key);
    h.write(data);
    h.finish().to_be_bytes()
}

/// Constant-time comparison of two tags.
pub fn tags_equal(a: &[u8; TAG_LEN], b: &[u8; TAG_LEN]) -> bool {
    let mut d = 0u8;
    for i in 0..TAG_LEN {
        d |= a[i] ^ b[i];
    }
    d == 0
}

/// An IPv4 endpoint: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Endpoint {
    /// IPv4 address, network order bytes.
    pub addr: [u8; 4],
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// A new endpoint.
    pub const fn new(addr: [u8; 4], port: u16) -> Self {
        Endpoint { addr, port }
    }
}

/// A read/write view of a hand-off request.
#[derive(Debug, Clone)]
pub struct Request<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Request<T> {
    /// Wraps a buffer without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Request { buffer }
    }

    /// Wraps a buffer and checks length, magic, version and type. After `Ok`, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let r = Request { buffer };
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < REQUEST_LEN {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC {
            return Err(Error::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(Error::BadVersion(b[field::VERSION]));
        }
        if b[field::TYPE] != TYPE_REQUEST {
            return Err(Error::BadType(b[field::TYPE]));
        }
        Ok(())
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    fn addr(&self, r: core::ops::Range<usize>) -> [u8; 4] {
        let s = &self.b()[r];
        [s[0], s[1], s[2], s[3]]
    }

    /// Key id.
    pub fn key_id(&self) -> u8 {
        self.b()[field::KEY_ID]
    }
    /// Flags (0 in version 1).
    pub fn flags(&self) -> u8 {
        self.b()[field::FLAGS]
    }
    /// Per-node counter.
    pub fn counter(&self) -> u64 {
        NetworkEndian::read_u64(&self.b()[field::COUNTER])
    }
    /// The held connection's peer as the node sees it.
    pub fn held_peer(&self) -> Endpoint {
        Endpoint::new(
            self.addr(field::HELD_PEER_ADDR),
            NetworkEndian::read_u16(&self.b()[field::HELD_PEER_PORT]),
        )
    }
    /// The node's own end of the held connection.
    pub fn held_local(&self) -> Endpoint {
        Endpoint::new(
            self.addr(field::HELD_LOCAL_ADDR),
            NetworkEndian::read_u16(&self.b()[field::HELD_LOCAL_PORT]),
        )
    }
    /// The node's end of the new leg.
    pub fn new_local(&self) -> Endpoint {
        Endpoint::new(
            self.addr(field::NEW_LOCAL_ADDR),
            NetworkEndian::read_u16(&self.b()[field::NEW_LOCAL_PORT]),
        )
    }
    /// The target's end of the new leg.
    pub fn new_remote(&self) -> Endpoint {
        Endpoint::new(
            self.addr(field::NEW_REMOTE_ADDR),
            NetworkEndian::read_u16(&self.b()[field::NEW_REMOTE_PORT]),
        )
    }
    /// Peer bytes the node consumed before the new leg's first byte.
    pub fn consumed(&self) -> u64 {
        NetworkEndian::read_u64(&self.b()[field::CONSUMED])
    }
    /// Bytes the node sent to its peer before the target's first byte.
    pub fn sent(&self) -> u64 {
        NetworkEndian::read_u64(&self.b()[field::SENT])
    }
    /// The tag carried in the message.
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let s = &self.b()[field::REQ_TAG];
        let mut t = [0; TAG_LEN];
        t.copy_from_slice(s);
        t
    }
    /// True when the tag verifies under `key`.
    pub fn verify(&self, key: &Key) -> bool {
        let want = tag(key, &self.b()[..field::REQ_TAG.start]);
        tags_equal(&want, &self.tag())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Request<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }
    /// Signs the message: writes the tag of every byte before it.
    pub fn sign(&mut self, key: &Key) {
        let t = tag(key, &self.b()[..field::REQ_TAG.start]);
        self.bm()[field::REQ_TAG].copy_from_slice(&t);
    }
}

/// A parsed hand-off request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RequestRepr {
    /// Which key signs the message.
    pub key_id: u8,
    /// Per-node counter, fresh for each new request, kept for its retransmissions.
    pub counter: u64,
    /// The held connection's peer as the node sees it.
    pub held_peer: Endpoint,
    /// The node's own end of the held connection.
    pub held_local: Endpoint,
    /// The node's end of the new leg.
    pub new_local: Endpoint,
    /// The target's end of the new leg.
    pub new_remote: Endpoint,
    /// Peer bytes consumed before the new leg's first byte.
    pub consumed: u64,
    /// Bytes sent to the peer before the target's first byte.
    pub sent: u64,
}

impl RequestRepr {
    /// Parses a checked request (the tag is not verified here).
    pub fn parse<T: AsRef<[u8]>>(r: &Request<T>) -> RequestRepr {
        RequestRepr {
            key_id: r.key_id(),
            counter: r.counter(),
            held_peer: r.held_peer(),
            held_local: r.held_local(),
            new_local: r.new_local(),
            new_remote: r.new_remote(),
            consumed: r.consumed(),
            sent: r.sent(),
        }
    }

    /// Writes the request into `buf` (at least [`REQUEST_LEN`] bytes) and signs it with `key`.
    /// Returns the message length, or `None` when `buf` is too short.
    pub fn emit(&self, buf: &mut [u8], key: &Key) -> Option<usize> {
        let b = buf.get_mut(..REQUEST_LEN)?;
        b.fill(0);
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::TYPE] = TYPE_REQUEST;
        b[field::KEY_ID] = self.key_id;
        b[field::FLAGS] = 0;
        NetworkEndian::write_u64(&mut b[field::COUNTER], self.counter);
        b[field::HELD_PEER_ADDR].copy_from_slice(&self.held_peer.addr);
        NetworkEndian::write_u16(&mut b[field::HELD_PEER_PORT], self.held_peer.port);
        b[field::HELD_LOCAL_ADDR].copy_from_slice(&self.held_local.addr);
        NetworkEndian::write_u16(&mut b[field::HELD_LOCAL_PORT], self.held_local.port);
        b[field::NEW_LOCAL_ADDR].copy_from_slice(&self.new_local.addr);
        NetworkEndian::write_u16(&mut b[field::NEW_LOCAL_PORT], self.new_local.port);
        b[field::NEW_REMOTE_ADDR].copy_from_slice(&self.new_remote.addr);
        NetworkEndian::write_u16(&mut b[field::NEW_REMOTE_PORT], self.new_remote.port);
        NetworkEndian::write_u64(&mut b[field::CONSUMED], self.consumed);
        NetworkEndian::write_u64(&mut b[field::SENT], self.sent);
        Request::new_unchecked(&mut *b).sign(key);
        Some(REQUEST_LEN)
    }
}

/// A read view of the switch's reply.
#[derive(Debug, Clone)]
pub struct Reply<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Reply<T> {
    /// Wraps a buffer and checks length, magic, version and type.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < REPLY_LEN {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC {
            return Err(Error::BadMagic);
        }
        if b[field::VERSION] != VERSION {
            return Err(Error::BadVersion(b[field::VERSION]));
        }
        if b[field::TYPE] != TYPE_REPLY {
            return Err(Error::BadType(b[field::TYPE]));
        }
        Ok(Reply { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    /// The answer.
    pub fn code(&self) -> ReplyCode {
        ReplyCode::from_wire(self.b()[field::CODE])
    }
    /// Key id of the tag.
    pub fn key_id(&self) -> u8 {
        self.b()[field::REPLY_KEY_ID]
    }
    /// The request counter this answers.
    pub fn counter(&self) -> u64 {
        NetworkEndian::read_u64(&self.b()[field::COUNTER])
    }
    /// Hand-offs the connection has had, this one included when accepted.
    pub fn hops(&self) -> u8 {
        self.b()[field::HOPS]
    }
    /// True when the tag verifies under `key`.
    pub fn verify(&self, key: &Key) -> bool {
        let want = tag(key, &self.b()[..field::REPLY_TAG.start]);
        let mut got = [0; TAG_LEN];
        got.copy_from_slice(&self.b()[field::REPLY_TAG]);
        tags_equal(&want, &got)
    }
}

/// A parsed reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReplyRepr {
    /// The answer.
    pub code: ReplyCode,
    /// Key id of the tag.
    pub key_id: u8,
    /// The request counter this answers.
    pub counter: u64,
    /// Hand-offs the connection has had.
    pub hops: u8,
}

impl ReplyRepr {
    /// Parses a checked reply (the tag is not verified here).
    pub fn parse<T: AsRef<[u8]>>(r: &Reply<T>) -> ReplyRepr {
        ReplyRepr {
            code: r.code(),
            key_id: r.key_id(),
            counter: r.counter(),
            hops: r.hops(),
        }
    }

    /// Writes and signs the reply into `buf`; returns its length or `None` if `buf` is too short.
    pub fn emit(&self, buf: &mut [u8], key: &Key) -> Option<usize> {
        let b = buf.get_mut(..REPLY_LEN)?;
        b.fill(0);
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::TYPE] = TYPE_REPLY;
        b[field::CODE] = self.code.to_wire();
        b[field::REPLY_KEY_ID] = self.key_id;
        NetworkEndian::write_u64(&mut b[field::COUNTER], self.counter);
        b[field::HOPS] = self.hops;
        let t = tag(key, &b[..field::REPLY_TAG.start]);
        b[field::REPLY_TAG].copy_from_slice(&t);
        Some(REPLY_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_lengths_end_where_the_tags_start() {
        assert_eq!(REQUEST_TAGGED, field::REQ_TAG.start);
        assert_eq!(REPLY_TAGGED, field::REPLY_TAG.start);
    }

    const KEY: Key = *b"0123456789abcdef";

    fn sample() -> RequestRepr {
        RequestRepr {
            key_id: 1,
            counter: 0x0102_0304_0506_0708,
            held_peer: Endpoint::new([198, 18, 0, 2], 40000),
            held_local: Endpoint::new([198, 19, 1, 2], 80),
            new_local: Endpoint::new([198, 19, 1, 2], 50000),
            new_remote: Endpoint::new([198, 19, 2, 2], 80),
            consumed: 78,
            sent: 1_000_000,
        }
    }

    #[test]
    fn request_emit_exact_bytes() {
        let mut buf = [0xa5u8; 64];
        assert_eq!(sample().emit(&mut buf, &KEY), Some(64));
        let head: [u8; 56] = [
            b'K', b'N', 1, 1, 1, 0, 0, 0, // magic, version, type, key id, flags, reserved
            1, 2, 3, 4, 5, 6, 7, 8, // counter
            198, 18, 0, 2, 0x9c, 0x40, 0, 80, // held peer addr, port; held local port
            198, 19, 1, 2, 198, 19, 1, 2, // held local addr; new local addr
            0xc3, 0x50, 0, 80, 198, 19, 2, 2, // new local port, new remote port, addr
            0, 0, 0, 0, 0, 0, 0, 78, // consumed
            0, 0, 0, 0, 0, 0x0f, 0x42, 0x40, // sent
        ];
        assert_eq!(&buf[..56], &head[..]);
        assert_eq!(&buf[56..], &tag(&KEY, &head));
    }

    #[test]
    fn request_roundtrip_and_verify() {
        let mut buf = [0u8; 64];
        sample().emit(&mut buf, &KEY).unwrap();
        let r = Request::new_checked(&buf[..]).unwrap();
        assert!(r.verify(&KEY));
        assert!(!r.verify(b"fedcba9876543210"));
        assert_eq!(RequestRepr::parse(&r), sample());
    }

    #[test]
    fn any_flipped_bit_breaks_the_tag() {
        let mut buf = [0u8; 64];
        sample().emit(&mut buf, &KEY).unwrap();
        for i in 4..64 {
            for bit in 0..8 {
                let mut m = buf;
                m[i] ^= 1 << bit;
                let r = Request::new_checked(&m[..]).unwrap();
                assert!(!r.verify(&KEY), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn truncated_and_bad_headers_are_errors() {
        let mut buf = [0u8; 64];
        sample().emit(&mut buf, &KEY).unwrap();
        for n in 0..64 {
            assert_eq!(
                Request::new_checked(&buf[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut m = buf;
        m[0] = b'X';
        assert_eq!(Request::new_checked(&m[..]).unwrap_err(), Error::BadMagic);
        let mut m = buf;
        m[2] = 9;
        assert_eq!(
            Request::new_checked(&m[..]).unwrap_err(),
            Error::BadVersion(9)
        );
        let mut m = buf;
        m[3] = 2;
        assert_eq!(Request::new_checked(&m[..]).unwrap_err(), Error::BadType(2));
    }

    #[test]
    fn reply_roundtrip() {
        let rep = ReplyRepr {
            code: ReplyCode::AnchorsOutOfRange,
            key_id: 1,
            counter: 77,
            hops: 2,
        };
        let mut buf = [0xa5u8; 32];
        assert_eq!(rep.emit(&mut buf, &KEY), Some(32));
        let r = Reply::new_checked(&buf[..]).unwrap();
        assert!(r.verify(&KEY));
        assert_eq!(ReplyRepr::parse(&r), rep);
        assert_eq!(&buf[17..24], &[0; 7]);
    }

    #[test]
    fn unknown_reply_codes_are_kept() {
        assert_eq!(ReplyCode::from_wire(200), ReplyCode::Unknown);
        for c in ReplyCode::ALL {
            assert_eq!(ReplyCode::from_wire(c.to_wire()), c);
        }
    }
}
