//! Serial-number arithmetic for TCP sequence and acknowledgment numbers (RFC 1982, RFC 9293 3.4).
//!
//! Every sequence offset in the crate goes through [`SeqNumber`]: addition wraps modulo 2^32 and
//! comparison is "a is before b when b - a, as a signed 32-bit value, is positive". No raw `u32`
//! subtraction on sequence numbers appears anywhere else.

use core::cmp::Ordering;

/// A TCP sequence or acknowledgment number, compared in serial-number order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SeqNumber(pub u32);

impl SeqNumber {
    /// `self + n` modulo 2^32.
    #[inline]
    pub const fn add(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_add(n))
    }

    /// `self - n` modulo 2^32.
    #[inline]
    pub const fn sub(self, n: u32) -> SeqNumber {
        SeqNumber(self.0.wrapping_sub(n))
    }

    /// The signed distance from `other` to `self` (`self - other`), valid while the two are less
    /// than 2^31 apart.
    #[inline]
    pub const fn diff(self, other: SeqNumber) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// The offset that maps `from` onto `to`: `from.add(offset) == to`.
    #[inline]
    pub const fn offset_to(from: SeqNumber, to: SeqNumber) -> u32 {
        to.0.wrapping_sub(from.0)
    }

    /// True when `self` comes strictly before `other` in serial order.
    #[inline]
    pub const fn lt(self, other: SeqNumber) -> bool {
        self.diff(other) < 0
    }

    /// True when `self` comes before or equals `other` in serial order.
    #[inline]
    pub const fn le(self, other: SeqNumber) -> bool {
        self.diff(other) <= 0
    }

    /// True when `self` comes strictly after `other` in serial order.
    #[inline]
    pub const fn gt(self, other: SeqNumber) -> bool {
        self.diff(other) > 0
    }

    /// True when `self` comes after or equals `other` in serial order.
    #[inline]
    pub const fn ge(self, other: SeqNumber) -> bool {
        self.diff(other) >= 0
    }

    /// The later of the two in serial order.
    #[inline]
    pub const fn max(self, other: SeqNumber) -> SeqNumber {
        if self.lt(other) { other } else { self }
    }

    /// The earlier of the two in serial order.
    #[inline]
    pub const fn min(self, other: SeqNumber) -> SeqNumber {
        if self.lt(other) { self } else { other }
    }

    /// True when `self` lies in the half-open range `[start, end)`.
    #[inline]
    pub const fn in_range(self, start: SeqNumber, end: SeqNumber) -> bool {
        self.ge(start) && self.lt(end)
    }

    /// Serial order. Not a total order over all of `u32` (RFC 1982 leaves numbers exactly 2^31
    /// apart undefined; this function calls them `Greater`), so there is no `Ord` impl.
    #[inline]
    pub const fn serial_cmp(self, other: SeqNumber) -> Ordering {
        let d = self.diff(other);
        if d < 0 {
            Ordering::Less
        } else if d == 0 {
            Ordering::Equal
        } else {
            Ordering::Greater
        }
    }
}

impl From<smoltcp::wire::TcpSeqNumber> for SeqNumber {
    fn from(s: smoltcp::wire::TcpSeqNumber) -> Self {
        SeqNumber(s.0 as u32)
    }
}

impl From<SeqNumber> for smoltcp::wire::TcpSeqNumber {
    fn from(s: SeqNumber) -> Self {
        smoltcp::wire::TcpSeqNumber(s.0 as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wraps_at_2_32() {
        let a = SeqNumber(u32::MAX - 10);
        let b = a.add(20);
        assert_eq!(b, SeqNumber(9));
        assert!(a.lt(b));
        assert!(b.gt(a));
        assert_eq!(b.diff(a), 20);
        assert_eq!(a.diff(b), -20);
        assert_eq!(a.max(b), b);
        assert_eq!(a.min(b), a);
        assert!(SeqNumber(u32::MAX).in_range(a, b));
        assert!(!b.in_range(a, b));
    }

    proptest! {
        #[test]
        fn add_then_diff_is_identity(base in any::<u32>(), n in 0u32..(1 << 31)) {
            let a = SeqNumber(base);
            let b = a.add(n);
            prop_assert_eq!(b.diff(a), n as i32);
            prop_assert!(a.le(b));
            prop_assert_eq!(b.sub(n), a);
            prop_assert_eq!(SeqNumber::offset_to(a, b), n);
        }

        #[test]
        fn order_is_antisymmetric_near_wrap(off in 0u32..4096, n in 1u32..(1 << 30)) {
            let a = SeqNumber(u32::MAX - off);
            let b = a.add(n);
            prop_assert!(a.lt(b) && !b.lt(a) && b.gt(a) && !a.gt(b));
            prop_assert_eq!(a.serial_cmp(b), Ordering::Less);
            prop_assert_eq!(b.serial_cmp(a), Ordering::Greater);
        }

        #[test]
        fn offset_maps_there_and_back(from in any::<u32>(), to in any::<u32>(), x in any::<u32>()) {
            let off = SeqNumber::offset_to(SeqNumber(from), SeqNumber(to));
            prop_assert_eq!(SeqNumber(from).add(off), SeqNumber(to));
            prop_assert_eq!(SeqNumber(x).add(off).sub(off), SeqNumber(x));
        }
    }
}
