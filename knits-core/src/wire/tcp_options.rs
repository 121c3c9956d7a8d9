//! A bounded walker over the TCP options area, and in-place rewriting of SACK edges and
//! timestamps.
//!
//! The walk visits at most 40 bytes (the largest options area) and rejects what RFC 9293 3.1
//! calls malformed: a length byte of 0 or 1, an option running past the header, or a known
//! option with the wrong fixed length. Positions are kept as offsets from the start of the TCP
//! header, so the rewriter knows each field's 16-bit alignment for the checksum update.

use crate::checksum::{self, Kind};

/// Kind numbers (IANA "TCP Option Kind Numbers").
mod kind {
    pub const EOL: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WSCALE: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TIMESTAMP: u8 = 8;
}

/// The TCP header without options.
pub const BASE_HEADER_LEN: usize = 20;
/// Most SACK blocks one option can carry (40 bytes of options: 2 + 4 * 8).
pub const MAX_SACK_BLOCKS: usize = 4;

/// Why an options area is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OptionError {
    /// A length byte of 0 or 1.
    BadLength,
    /// An option runs past the end of the header.
    Overrun,
    /// A known option with the wrong length.
    WrongFixedLength,
}

/// What the walk found. Offsets are from the start of the TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TcpOptions {
    /// MSS option value.
    pub mss: Option<u16>,
    /// Window-scale shift.
    pub wscale: Option<u8>,
    /// SACK-permitted seen.
    pub sack_perm: bool,
    /// Offset of TSval (TSecr follows 4 bytes later), when a timestamp option is present.
    pub ts_at: Option<u8>,
    /// TSval.
    pub tsval: u32,
    /// TSecr.
    pub tsecr: u32,
    /// Offset of the first SACK block's left edge.
    pub sack_at: u8,
    /// Number of SACK blocks (0 when no SACK option).
    pub sack_blocks: u8,
    /// Option bytes walked (for the meter).
    pub walked: u8,
}

#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Walks the options of a TCP header. `header` is the whole TCP header (data offset * 4 bytes,
/// at least 20); anything past it is ignored.
pub fn parse(header: &[u8]) -> Result<TcpOptions, OptionError> {
    let mut o = TcpOptions::default();
    parse_into(header, &mut o)?;
    Ok(o)
}

/// [`parse`] into a caller's record (which should start as `TcpOptions::default()`): the
/// per-packet path fills the options of its segment in place instead of moving a result.
#[inline]
pub fn parse_into(header: &[u8], o: &mut TcpOptions) -> Result<(), OptionError> {
    // Header prediction (RFC 7323 appendix A's layout, which Linux, BSD and Windows put on every
    // segment once timestamps are on): NOP, NOP, timestamps, then nothing else or (during loss
    // recovery, as Linux sends it) NOP, NOP and SACK blocks up to the end of the header. The
    // same result as the walk below, read at fixed offsets.
    if let Some(h) = header.first_chunk::<{ BASE_HEADER_LEN + 12 }>()
        && h[20..24] == [kind::NOP, kind::NOP, kind::TIMESTAMP, 10]
    {
        let len = header.len().min(60);
        let sack = match header.get(32..36) {
            None if len == 32 => Some(0),
            Some(&[kind::NOP, kind::NOP, kind::SACK, n]) => {
                let n = n as usize;
                (n >= 10 && (n - 2).is_multiple_of(8) && 34 + n == len).then(|| (n - 2) / 8)
            }
            _ => None,
        };
        if let Some(blocks) = sack
            && header.len() == len
        {
            o.ts_at = Some(24);
            o.tsval = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
            o.tsecr = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
            if blocks > 0 {
                o.sack_at = 36;
                o.sack_blocks = blocks as u8;
            }
            o.walked = (len - BASE_HEADER_LEN) as u8;
            return Ok(());
        }
    }
    walk_into(header, o)
}

/// The general walk of [`parse_into`].
fn walk_into(header: &[u8], o: &mut TcpOptions) -> Result<(), OptionError> {
    let end = header.len().min(60);
    let mut i = BASE_HEADER_LEN;
    while i < end {
        let k = header[i];
        match k {
            kind::EOL => break,
            kind::NOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = header.get(i + 1) else {
            return Err(OptionError::Overrun);
        };
        let len = len as usize;
        if len < 2 {
            return Err(OptionError::BadLength);
        }
        if i + len > end {
            return Err(OptionError::Overrun);
        }
        match k {
            kind::MSS => {
                if len != 4 {
                    return Err(OptionError::WrongFixedLength);
                }
                o.mss = Some(u16::from_be_bytes([header[i + 2], header[i + 3]]));
            }
            kind::WSCALE => {
                if len != 3 {
                    return Err(OptionError::WrongFixedLength);
                }
                o.wscale = Some(header[i + 2]);
            }
            kind::SACK_PERM => {
                if len != 2 {
                    return Err(OptionError::WrongFixedLength);
                }
                o.sack_perm = true;
            }
            kind::SACK => {
                if len < 10 || !(len - 2).is_multiple_of(8) {
                    return Err(OptionError::WrongFixedLength);
                }
                o.sack_at = (i + 2) as u8;
                o.sack_blocks = ((len - 2) / 8) as u8;
            }
            kind::TIMESTAMP => {
                if len != 10 {
                    return Err(OptionError::WrongFixedLength);
                }
                o.ts_at = Some((i + 2) as u8);
                o.tsval = be32(header, i + 2);
                o.tsecr = be32(header, i + 6);
            }
            _ => {}
        }
        i += len;
    }
    o.walked = (i.min(end) - BASE_HEADER_LEN.min(i)) as u8;
    Ok(())
}

impl TcpOptions {
    /// SACK block `n` as (left, right) edges.
    pub fn sack_block(&self, header: &[u8], n: usize) -> Option<(u32, u32)> {
        if n >= self.sack_blocks as usize {
            return None;
        }
        let at = self.sack_at as usize + 8 * n;
        Some((be32(header, at), be32(header, at + 4)))
    }
}

/// Writes a 32-bit value at byte offset `at` of a TCP segment (`seg` starts at the TCP header)
/// and returns the transport checksum updated for the change (RFC 1624). A value at an odd
/// offset straddles three 16-bit words; its contribution to the sum is the value rotated by
/// eight bits, so the update uses the rotated old and new values.
#[inline]
pub fn write_u32(seg: &mut [u8], at: usize, new: u32, kind: Kind, csum: u16) -> u16 {
    let Some(s) = seg.get_mut(at..at + 4) else {
        return csum;
    };
    let old = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
    if old == new {
        return csum;
    }
    s.copy_from_slice(&new.to_be_bytes());
    if at.is_multiple_of(2) {
        checksum::segment_update32(kind, csum, old, new)
    } else {
        checksum::segment_update32(kind, csum, old.rotate_left(8), new.rotate_left(8))
    }
}

/// Reads a 32-bit value at byte offset `at` of a TCP segment (0 when out of range).
#[inline]
pub fn read_u32(seg: &[u8], at: usize) -> u32 {
    be32(seg, at)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum::{checksum, fold, sum};
    use proptest::prelude::*;
    use std::vec::Vec;

    fn header(opts: &[u8]) -> Vec<u8> {
        let mut h = std::vec![0u8; 20];
        h.extend_from_slice(opts);
        while !h.len().is_multiple_of(4) {
            h.push(0);
        }
        h[12] = ((h.len() / 4) as u8) << 4;
        h
    }

    #[test]
    fn linux_syn_options() {
        // MSS 1460, SACK-permitted, TS 0x01020304/0, NOP, WS 7 (Linux's SYN layout).
        let h = header(&[
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
        ]);
        let o = parse(&h).unwrap();
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_perm);
        assert_eq!(o.ts_at, Some(28));
        assert_eq!(o.tsval, 0x01020304);
        assert_eq!(o.tsecr, 0);
        assert_eq!(o.wscale, Some(7));
        assert_eq!(o.walked, 20);
    }

    #[test]
    fn sack_blocks() {
        let h = header(&[1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
        let o = parse(&h).unwrap();
        assert_eq!(o.sack_blocks, 2);
        assert_eq!(o.sack_block(&h, 0), Some((1, 2)));
        assert_eq!(o.sack_block(&h, 1), Some((3, 4)));
        assert_eq!(o.sack_block(&h, 2), None);
    }

    #[test]
    fn malformed_options_are_errors() {
        assert_eq!(parse(&header(&[2, 0, 0, 0])), Err(OptionError::BadLength));
        assert_eq!(parse(&header(&[2, 1, 0, 0])), Err(OptionError::BadLength));
        assert_eq!(parse(&header(&[1, 1, 1, 8])), Err(OptionError::Overrun));
        assert_eq!(
            parse(&header(&[8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(OptionError::WrongFixedLength)
        );
        assert_eq!(
            parse(&header(&[5, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(OptionError::WrongFixedLength)
        );
        assert_eq!(
            parse(&header(&[3, 4, 0, 0])),
            Err(OptionError::WrongFixedLength)
        );
        // EOL ends the walk; what follows is padding.
        assert!(parse(&header(&[0, 99, 99, 99])).is_ok());
        // Unknown kinds are skipped by their length.
        assert_eq!(
            parse(&header(&[99, 4, 0, 0, 3, 3, 2, 0])).unwrap().wscale,
            Some(2)
        );
        // A kind byte in the last position with no room for its length.
        let mut h = header(&[1, 1, 1, 1]);
        h[23] = 2;
        assert_eq!(parse(&h), Err(OptionError::Overrun));
    }

    proptest! {
        /// The predicted layout (NOP, NOP, timestamps) reads what the general walk reads, and
        /// so does any other 12-byte options area.
        #[test]
        fn prediction_matches_walk(tsval in any::<u32>(), tsecr in any::<u32>(),
                                   other in any::<[u8; 40]>(), predicted in any::<bool>(),
                                   blocks in 0usize..4, sack_len_byte in any::<u8>(),
                                   odd in any::<bool>(), len in 20usize..=60) {
            // The predicted layouts (timestamps alone, or with 1-3 SACK blocks), sometimes with
            // a wrong SACK length byte; otherwise any bytes of any header length.
            let mut h = std::vec![0u8; if predicted { 32 + if blocks > 0 { 4 + 8 * blocks } else { 0 } } else { len }];
            let n = h.len() - 20;
            h[20..].copy_from_slice(&other[..n]);
            if predicted {
                h[20..24].copy_from_slice(&[1, 1, 8, 10]);
                h[24..28].copy_from_slice(&tsval.to_be_bytes());
                h[28..32].copy_from_slice(&tsecr.to_be_bytes());
                if blocks > 0 {
                    let n = if odd { sack_len_byte } else { (2 + 8 * blocks) as u8 };
                    h[32..36].copy_from_slice(&[1, 1, 5, n]);
                }
            }
            let (mut fast, mut slow) = (TcpOptions::default(), TcpOptions::default());
            let r = parse_into(&h, &mut fast);
            prop_assert_eq!(r, walk_into(&h, &mut slow));
            prop_assert_eq!(fast, slow);
        }

        /// The walk never panics and never reports a field outside the header.
        #[test]
        fn walk_is_total(opts in proptest::collection::vec(any::<u8>(), 0..40)) {
            let h = header(&opts);
            if let Ok(o) = parse(&h) {
                if let Some(at) = o.ts_at { prop_assert!(at as usize + 8 <= h.len()); }
                prop_assert!(o.sack_at as usize + 8 * o.sack_blocks as usize <= h.len());
            }
        }

        /// write_u32 at any alignment keeps a full checksum equal to a recomputation.
        #[test]
        fn write_u32_keeps_checksum(mut seg in proptest::collection::vec(any::<u8>(), 24..80),
                                    at in 0usize..64, new in any::<u32>()) {
            let at = 18 + at % (seg.len() - 21); // somewhere after the checksum field
            seg[16] = 0; seg[17] = 0;
            seg[0] |= 1; // non-zero sum
            let c = checksum(&seg);
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            let inc = write_u32(&mut seg, at, new, Kind::Full, c);
            let mut full = seg.clone();
            full[16] = 0; full[17] = 0;
            let want = !fold(sum(&full, 0));
            prop_assert_eq!(inc, want);
        }
    }
}
