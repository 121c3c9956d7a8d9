//! The booking calendar of one server of a shared unit.

/// Most intervals a calendar keeps apart; past that the two closest are merged (the gap
/// between them is given up), which only happens deep in a backlog.
const CAL_SLOTS: usize = 8;

/// The intervals one server of a unit is booked for, in time order, merged when adjacent.
/// Visits are booked when the compute burst before them starts, so a visit can be booked
/// before an earlier one in simulated time; it then takes the first gap that fits at or after
/// its arrival (a FIFO server when bookings come in time order).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Calendar {
    /// One slot more than kept, for the insertion before a merge.
    iv: [(u64, u64); CAL_SLOTS + 1],
    len: usize,
    pub(super) busy: u64,
}

impl Calendar {
    /// Books `occ` ticks at or after `t`; `now` is the event time (nothing will be booked before
    /// it again). Returns the start.
    #[inline]
    pub(super) fn book(&mut self, t: u64, occ: u64, now: u64) -> u64 {
        // Forget intervals that ended before now.
        let mut drop = 0;
        while drop < self.len && self.iv[drop].1 <= now {
            drop += 1;
        }
        if drop > 0 {
            self.iv.copy_within(drop..self.len, 0);
            self.len -= drop;
        }
        if occ == 0 {
            return t;
        }
        // Fast path: after everything booked.
        if self.len == 0 || self.iv[self.len - 1].1 <= t {
            if self.len > 0 && self.iv[self.len - 1].1 == t {
                self.iv[self.len - 1].1 = t + occ;
            } else {
                self.push_at(self.len, (t, t + occ));
            }
            return t;
        }
        let mut cur = t;
        let mut i = 0;
        while i < self.len {
            let (s, e) = self.iv[i];
            if e <= cur {
                i += 1;
                continue;
            }
            if s >= cur + occ {
                break;
            }
            cur = cur.max(e);
            i += 1;
        }
        let end = cur + occ;
        let prev = i > 0 && self.iv[i - 1].1 == cur;
        let next = i < self.len && self.iv[i].0 == end;
        match (prev, next) {
            (true, true) => {
                self.iv[i - 1].1 = self.iv[i].1;
                self.iv.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
            (true, false) => self.iv[i - 1].1 = end,
            (false, true) => self.iv[i].0 = cur,
            (false, false) => self.push_at(i, (cur, end)),
        }
        cur
    }

    /// Inserts an interval at position `i`; past `CAL_SLOTS` intervals the closest pair (the new
    /// one included) is merged.
    #[inline]
    fn push_at(&mut self, i: usize, iv: (u64, u64)) {
        self.iv.copy_within(i..self.len, i + 1);
        self.iv[i] = iv;
        self.len += 1;
        if self.len > CAL_SLOTS {
            let mut best = 0;
            let mut gap = u64::MAX;
            for k in 0..self.len - 1 {
                let g = self.iv[k + 1].0 - self.iv[k].1;
                if g < gap {
                    gap = g;
                    best = k;
                }
            }
            self.iv[best].1 = self.iv[best + 1].1;
            self.iv.copy_within(best + 2..self.len, best + 1);
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_fills_gaps_in_time_order_and_merges() {
        let mut c = Calendar::default();
        // A booking in the future leaves a gap before it.
        assert_eq!(c.book(100, 10, 0), 100);
        // An earlier arrival that fits in the gap goes first.
        assert_eq!(c.book(20, 30, 0), 20);
        // One that does not fit waits until after the booking it would overlap.
        assert_eq!(c.book(90, 20, 0), 110);
        // Adjacent bookings merged: [20,50) [100,130).
        assert_eq!(c.len, 2);
        assert_eq!(c.iv[1], (100, 130));
        // In time order it is a FIFO server.
        assert_eq!(c.book(130, 5, 120), 130);
        assert_eq!(c.book(131, 5, 130), 135);
        // Intervals that ended before now are forgotten.
        assert_eq!(c.book(500, 1, 400), 500);
        assert_eq!(c.len, 1);
        // Never more than CAL_SLOTS intervals: the closest pair is merged.
        let mut d = Calendar::default();
        for k in 0..20u64 {
            d.book(1000 - 40 * k, 10, 0);
        }
        assert!(d.len <= CAL_SLOTS);
        for w in d.iv[..d.len].windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?}", &d.iv[..d.len]);
        }
        // Full, then a booking into the narrowest gap: the intervals stay disjoint and sorted
        // and each booking got its own time.
        let mut f = Calendar::default();
        let mut got = Vec::new();
        for k in 0..CAL_SLOTS as u64 {
            got.push((f.book(100 * k, 10, 0), 10));
        }
        f.book(1000, 5, 0); // gaps of 90 and one of 90: full + 1
        got.push((f.book(212, 3, 0), 3)); // into the gap after [200, 210)
        for k in 0..50u64 {
            got.push((f.book(7 * k, 4, 0), 4));
        }
        for w in f.iv[..f.len].windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?}", &f.iv[..f.len]);
        }
        // The calendar may give up gaps, never double-book: the bookings are disjoint.
        got.sort();
        for w in got.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{got:?}");
        }
    }
}
