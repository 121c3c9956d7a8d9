//! Internet checksums: the full RFC 1071 sum and RFC 1624 incremental updates.
//!
//! The per-packet path never recomputes a checksum over a whole segment. When it changes a field it
//! calls one of the `update*` functions with the old and new value, so the cost does not depend on
//! the payload size (a 64 KiB TSO frame costs the same as a bare ACK).
//!
//! Two kinds of stored checksum exist ([`Kind`]):
//! - [`Kind::Full`]: the field holds the complemented sum over pseudo-header, header and payload.
//!   RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`.
//! - [`Kind::Partial`]: a frame from a TAP with a virtio-net header and `NEEDS_CSUM` (Linux
//!   `CHECKSUM_PARTIAL`) holds only the *uncomplemented* pseudo-header sum; whoever transmits it
//!   adds the sum over the segment. Then only pseudo-header edits (addresses, length) change the
//!   field, as plain one's complement arithmetic: `P' = P + ~m + m'`. Edits of header words inside
//!   the segment (ports, seq, ack, options, window) need no update at all (Linux
//!   `inet_proto_csum_replace4` does the same).

/// How the transport checksum field of a frame is to be kept correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// A complete checksum (RFC 793 / RFC 768).
    Full,
    /// Only the pseudo-header sum, uncomplemented; the NIC or kernel completes it.
    Partial,
}

/// Folds a 32-bit one's complement accumulator to 16 bits with end-around carry.
#[inline]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a 64-bit one's complement accumulator to 16 bits with end-around carry (a sum of
/// many 16-bit terms, e.g. the edits of a whole rewrite).
#[inline]
pub const fn fold64(sum: u64) -> u16 {
    let s = (sum & 0xffff_ffff) + (sum >> 32);
    let s = (s & 0xffff_ffff) + (s >> 32);
    fold(s as u32)
}

/// The RFC 1071 one's complement sum of `data` (big-endian 16-bit words, an odd last byte padded
/// with zero), added to `initial`. Not complemented; fold it with [`fold`].
///
/// The words are summed in the machine's own byte order and the folded result is swapped once
/// at the end: the one's complement sum is byte-order independent (RFC 1071 section 2(B)), so a
/// little-endian machine needs no byte swap per word. The words are 64 bits wide with
/// end-around carry (since 2^16 = 1 modulo 2^16 - 1, a 64-bit word counts as its four 16-bit
/// halves; RFC 1071 2(B) "parallel summation" and 2(C) deferred carries), four at a time so
/// that a 1,460-byte segment costs about 3 instructions per 8 bytes.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // Straight-line sums for the two lengths a bare TCP header has (20 bytes, and 32 with the
    // timestamps option that Linux puts on every segment): most segments a switch verifies.
    let native = match data.len() {
        20 => words32(data, 5),
        32 => words32(data, 8),
        _ => native_sum(data),
    };
    // `from_be` swaps on a little-endian machine and is nothing on a big-endian one.
    let t = initial as u64 + u16::from_be(fold64(native)) as u64;
    ((t & 0xffff_ffff) + (t >> 32)) as u32
}

/// The sum of the first `n` 32-bit words of `data` in native order (a missing word counts 0).
#[inline(always)]
fn words32(data: &[u8], n: usize) -> u64 {
    (0..n).fold(0, |acc, k| match data.get(4 * k..4 * k + 4) {
        Some(&[a, b, c, d]) => acc + u32::from_ne_bytes([a, b, c, d]) as u64,
        _ => acc,
    })
}

/// The one's complement sum of `data` in native byte order, not folded below 64 bits. Kept out
/// of line, so that [`sum`]'s straight-line cases inline into their callers.
#[inline(never)]
fn native_sum(data: &[u8]) -> u64 {
    let add = |acc: u64, v: u64| {
        let (s, carry) = acc.overflowing_add(v);
        s + carry as u64
    };
    let word = |w: &[u8]| match w.first_chunk::<8>() {
        Some(w) => u64::from_ne_bytes(*w),
        None => 0,
    };
    let mut acc = 0u64;
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        acc = add(acc, word(&b[0..]));
        acc = add(acc, word(&b[8..]));
        acc = add(acc, word(&b[16..]));
        acc = add(acc, word(&b[24..]));
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        acc = add(acc, word(w));
    }
    // At most 2^33 after this fold, so the tail's few words cannot overflow.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut rest = words.remainder();
    if let Some((w, r)) = rest.split_first_chunk::<4>() {
        acc += u32::from_ne_bytes(*w) as u64;
        rest = r;
    }
    if let Some((w, r)) = rest.split_first_chunk::<2>() {
        acc += u16::from_ne_bytes(*w) as u64;
        rest = r;
    }
    // An odd last byte is the high half of its big-endian word: the first byte in memory.
    if let [last] = rest {
        acc += u16::from_ne_bytes([*last, 0]) as u64;
    }
    acc
}

/// True when an IPv4 header's checksum is right (its sum, checksum included, is 0xFFFF). The
/// sum is taken in native byte order: 0xFFFF reads the same either way round.
#[inline(always)]
pub fn ipv4_header_ok(header: &[u8]) -> bool {
    // The common option-less header as five fixed words, so the sum is straight-line code.
    let native = if header.len() == 20 {
        words32(header, 5)
    } else {
        native_sum(header)
    };
    fold64(native) == 0xffff
}

/// True when a TCP or UDP segment's full checksum is right under the IPv4 pseudo-header. The
/// pseudo-header and the segment are summed in native byte order (see [`ipv4_header_ok`]).
#[inline(always)]
pub fn transport_ok(src: [u8; 4], dst: [u8; 4], protocol: u8, segment: &[u8]) -> bool {
    let len = segment.len();
    if len > 0xffff {
        return false;
    }
    let pseudo = u32::from_ne_bytes(src) as u64
        + u32::from_ne_bytes(dst) as u64
        + u16::from_ne_bytes([0, protocol]) as u64
        + u16::from_ne_bytes((len as u16).to_be_bytes()) as u64;
    let native = match len {
        20 => words32(segment, 5),
        32 => words32(segment, 8),
        // Timestamps and one SACK block (an ACK during loss recovery).
        44 => words32(segment, 11),
        _ => native_sum(segment),
    };
    fold64(pseudo + native) == 0xffff
}

/// The RFC 1071 checksum of `data`: the complement of the folded sum.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// The IPv4 pseudo-header sum (RFC 793 3.1) for a transport segment of `len` bytes.
pub const fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u32 {
    u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
        + protocol as u32
        + len as u32
}

/// RFC 1624 equation 3 for a 16-bit field changing from `old` to `new`:
/// `HC' = ~(~HC + ~m + m')`.
#[inline]
pub const fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(!hc as u32 + !old as u32 + new as u32)
}

/// RFC 1624 equation 3 for a 32-bit field (two 16-bit words) changing from `old` to `new`.
#[inline]
pub const fn update32(hc: u16, old: u32, new: u32) -> u16 {
    !fold(
        !hc as u32
            + !(old >> 16) as u16 as u32
            + !(old as u16) as u32
            + (new >> 16)
            + (new & 0xffff),
    )
}

/// The partial-checksum counterpart of [`update16`]: the field holds an uncomplemented
/// pseudo-header sum `P`, so `P' = P + ~m + m'`.
#[inline]
pub const fn update16_partial(p: u16, old: u16, new: u16) -> u16 {
    fold(p as u32 + !old as u32 + new as u32)
}

/// The partial-checksum counterpart of [`update32`].
#[inline]
pub const fn update32_partial(p: u16, old: u32, new: u32) -> u16 {
    fold(
        p as u32 + !(old >> 16) as u16 as u32 + !(old as u16) as u32 + (new >> 16) + (new & 0xffff),
    )
}

/// Updates a transport checksum for an edit of a 32-bit pseudo-header field (an IPv4 address).
#[inline]
pub const fn pseudo_update32(kind: Kind, hc: u16, old: u32, new: u32) -> u16 {
    match kind {
        Kind::Full => update32(hc, old, new),
        Kind::Partial => update32_partial(hc, old, new),
    }
}

/// Updates a transport checksum for an edit of a 16-bit word inside the segment (port, window).
/// A partial checksum does not cover the segment yet, so it stays as it is.
#[inline]
pub const fn segment_update16(kind: Kind, hc: u16, old: u16, new: u16) -> u16 {
    match kind {
        Kind::Full => update16(hc, old, new),
        Kind::Partial => hc,
    }
}

/// Updates a transport checksum for an edit of a 32-bit value inside the segment (seq, ack,
/// TSval, a SACK edge). A partial checksum stays as it is.
#[inline]
pub const fn segment_update32(kind: Kind, hc: u16, old: u32, new: u32) -> u16 {
    match kind {
        Kind::Full => update32(hc, old, new),
        Kind::Partial => hc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1624 section 4 example: the other header words sum to 0xCD7A and a field changes from
    /// 0x5555 to 0x3285. The old checksum is ~(0xCD7A + 0x5555) = 0xDD2F; equation 3 gives 0x0000
    /// where the equation-2 pitfall the RFC warns of gives 0xFFFF.
    #[test]
    fn rfc1624_section4_example() {
        assert_eq!(!fold(0xcd7a + 0x5555), 0xdd2f);
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
        assert_eq!(update32(0xdd2f, 0x0000_5555, 0x0000_3285), 0x0000);
    }

    /// RFC 1071 section 3 example: words 0x0001 0xf203 0xf4f5 0xf6f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example_sum() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
        assert_eq!(
            fold(sum(&[0x12, 0x34, 0x56, 0x78, 0x9a], 0)),
            fold(0x1234 + 0x5678 + 0x9a00)
        );
    }

    /// The fixed 20-byte header check agrees with the general sum, also when the words carry.
    #[test]
    fn ipv4_header_check_agrees_with_the_sum() {
        for seed in 0u32..2000 {
            let mut h: [u8; 20] =
                core::array::from_fn(|i| (seed.wrapping_mul(2654435761) >> (i % 24)) as u8 | 0xf0);
            h[10] = 0;
            h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_header_ok(&h), "seed {seed}");
            h[3] ^= 1;
            assert!(!ipv4_header_ok(&h), "seed {seed}");
        }
    }

    /// The 32-bit-word sum equals the plain 16-bit-word sum of RFC 1071 for every length.
    #[test]
    fn wide_sum_equals_word_sum() {
        let data: [u8; 67] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        for n in 0..data.len() {
            let mut plain = 0u32;
            for (i, b) in data[..n].iter().enumerate() {
                plain += if i % 2 == 0 {
                    (*b as u32) << 8
                } else {
                    *b as u32
                };
            }
            assert_eq!(fold(sum(&data[..n], 0)), fold(plain), "length {n}");
        }
    }

    fn put_checksum(buf: &mut [u8], at: usize) {
        buf[at] = 0;
        buf[at + 1] = 0;
        let c = checksum(buf);
        buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    /// RFC 1071's sum the slow way: big-endian 16-bit words one by one, carries folded at the end.
    fn reference_sum(data: &[u8], initial: u32) -> u16 {
        let mut acc = initial as u64;
        for w in data.chunks(2) {
            acc += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u64;
        }
        fold64(acc)
    }

    proptest! {
        /// The fast sum (native order, 64-bit words, four at a time, every tail length) is
        /// RFC 1071's sum: equal as one's complement numbers for any data and initial value.
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..300),
                                 skip in 0usize..8, initial in any::<u32>()) {
            // A start at any alignment, as a header inside a frame has.
            let d = &data[skip.min(data.len())..];
            // The straight-line lengths (a bare TCP header, with timestamps) every time.
            for short in [20, 32] {
                if d.len() >= short {
                    let (f, r) = (fold(sum(&d[..short], initial)), reference_sum(&d[..short], initial));
                    prop_assert!(f == r || (f % 0xffff == r % 0xffff));
                }
            }
            let fast = fold(sum(d, initial));
            let slow = reference_sum(d, initial);
            prop_assert!(fast == slow || (fast % 0xffff == slow % 0xffff), "{:#x} {:#x}", fast, slow);
        }

        /// `transport_ok` (native order, straight-line at 20 and 32 bytes) accepts a segment
        /// whose checksum the reference sum wrote, and refuses it with any one byte changed.
        #[test]
        fn transport_ok_matches_reference(mut seg in proptest::collection::vec(any::<u8>(), 18..80),
                                          src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                                          short in any::<bool>(), at in any::<usize>(), flip in 1u8..) {
            // Half the cases at the straight-line lengths.
            if short {
                seg.resize(if seg.len() < 40 { 20 } else { 32 }, 0);
            }
            seg[16] = 0;
            seg[17] = 0;
            let pseudo = pseudo_header_sum(src, dst, 6, seg.len() as u16);
            let c = !reference_sum(&seg, pseudo);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            prop_assert!(transport_ok(src, dst, 6, &seg));
            let i = at % seg.len();
            seg[i] ^= flip;
            prop_assert!(!transport_ok(src, dst, 6, &seg));
        }

        /// Incremental update of one 16-bit word equals a full recomputation.
        #[test]
        fn update16_matches_full(mut data in proptest::collection::vec(any::<u8>(), 8..200),
                                 word in any::<usize>(), new in any::<u16>()) {
            // A real header always has a non-zero word (protocol number); keep the sum non-zero.
            data[2] = 0x06;
            let len = data.len() & !1;
            data.truncate(len);
            put_checksum(&mut data, 0);
            let hc = u16::from_be_bytes([data[0], data[1]]);
            let i = 2 + 2 * (word % ((len - 2) / 2));
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update16(hc, old, new);
            let mut full = data.clone();
            put_checksum(&mut full, 0);
            prop_assert_eq!(inc, u16::from_be_bytes([full[0], full[1]]));
        }

        /// Incremental update of one 32-bit field equals a full recomputation.
        #[test]
        fn update32_matches_full(mut data in proptest::collection::vec(any::<u8>(), 12..200),
                                 word in any::<usize>(), new in any::<u32>()) {
            data[2] = 0x06;
            let len = data.len() & !3;
            data.truncate(len);
            put_checksum(&mut data, 0);
            let hc = u16::from_be_bytes([data[0], data[1]]);
            let i = 4 + 4 * (word % ((len - 4) / 4));
            let old = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            data[i..i + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update32(hc, old, new);
            let mut full = data.clone();
            put_checksum(&mut full, 0);
            prop_assert_eq!(inc, u16::from_be_bytes([full[0], full[1]]));
        }

        /// A partial (pseudo-header only) sum updated for an address change equals the pseudo
        /// header sum of the new addresses.
        #[test]
        fn partial_matches_new_pseudo_header(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                                             new_src in any::<[u8; 4]>(), len in 20u16..65000) {
            let p = fold(pseudo_header_sum(src, dst, 6, len));
            let upd = update32_partial(p, u32::from_be_bytes(src), u32::from_be_bytes(new_src));
            let want = fold(pseudo_header_sum(new_src, dst, 6, len));
            // Equal as one's complement numbers (0x0000 and 0xffff are both zero).
            prop_assert!(upd == want || (upd % 0xffff == want % 0xffff));
        }
    }
}
