//! Frames the delay fault holds back (which reorders them), each until its time is due.

use std::collections::BinaryHeap;
use std::time::Instant;

use knits_core::config::PortId;

/// A frame held back: where it goes, and whether the core gets it (read from `port`) or the
/// port does (sent by the core).
pub(crate) struct Held {
    due: Instant,
    seq: u64,
    pub(crate) port: PortId,
    pub(crate) ingress: bool,
    pub(crate) data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap; frames due at once in the order they were held.
        o.due.cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// The held frames, earliest due first.
#[derive(Default)]
pub(crate) struct HeldFrames {
    heap: BinaryHeap<Held>,
    seq: u64,
}

impl HeldFrames {
    /// Holds `data` until `due`.
    pub(crate) fn hold(&mut self, due: Instant, port: PortId, ingress: bool, data: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Held {
            due,
            seq: self.seq,
            port,
            ingress,
            data,
        });
    }

    /// When the earliest frame is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|h| h.due)
    }

    /// The earliest frame if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Held> {
        if self.heap.peek().is_some_and(|h| h.due <= now) {
            self.heap.pop()
        } else {
            None
        }
    }

    /// The earliest frame, due or not (a stop delivers them all).
    pub(crate) fn pop(&mut self) -> Option<Held> {
        self.heap.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn held_frames_come_out_earliest_first() {
        let t = Instant::now();
        let mut h = HeldFrames::default();
        for (i, ms) in [5u64, 1, 3, 1].iter().enumerate() {
            h.hold(t + Duration::from_millis(*ms), i as PortId, true, vec![]);
        }
        // Nothing is due before the first; at 3 ms the two frames due at 1 ms in the order they
        // were held, then the one due at 3 ms.
        assert!(h.pop_due(t).is_none());
        assert_eq!(h.next_due(), Some(t + Duration::from_millis(1)));
        let at3 = t + Duration::from_millis(3);
        let order: Vec<PortId> = std::iter::from_fn(|| h.pop_due(at3).map(|x| x.port)).collect();
        assert_eq!(order, vec![1, 3, 2]);
        assert_eq!(h.pop().map(|x| x.port), Some(0));
        assert!(h.pop().is_none());
    }
}
