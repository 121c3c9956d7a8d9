//! What the event loop drives: the packet logic behind the [`Core`] trait, the [`Outcome`] it
//! returns for a frame and the [`FrameSink`] that holds the frames it makes up until the loop
//! writes them.
//!
//! Two cores implement it: the knits-core switch ([`crate::switch`]) and [`crate::bridge`], a
//! two-port wire that tests the host plumbing alone.

use knits_core::checksum;
use knits_core::config::PortId;
use knits_core::time::Instant;

use crate::stats::Snapshot;

/// Longest frame the core generates.
pub const GENERATED_MAX: usize = 128;
/// Generated frames buffered between two drains.
pub const SINK_CAPACITY: usize = 64;

/// What the core decided for one frame (the host's view of the core's verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the (rewritten) frame on this port.
    Forward(PortId),
    /// The core consumed it (its replies, if any, are in the sink).
    Local,
    /// The core dropped it (and counted why).
    Drop,
}

/// Frames the core generates, kept until the loop writes them.
#[derive(Debug)]
pub struct FrameSink {
    /// Port, length and bytes of each frame (the loop takes them out to write them).
    pub(crate) frames: Vec<(PortId, usize, [u8; GENERATED_MAX])>,
}

impl Default for FrameSink {
    fn default() -> Self {
        FrameSink {
            frames: Vec::with_capacity(SINK_CAPACITY),
        }
    }
}

impl FrameSink {
    /// Queues a frame; false when full or longer than [`GENERATED_MAX`].
    pub fn push(&mut self, port: PortId, frame: &[u8]) -> bool {
        if self.frames.len() >= SINK_CAPACITY || frame.len() > GENERATED_MAX {
            return false;
        }
        let mut b = [0u8; GENERATED_MAX];
        b[..frame.len()].copy_from_slice(frame);
        self.frames.push((port, frame.len(), b));
        true
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// The packet logic the loop drives.
pub trait Core {
    /// Handles one frame received on `port`; may rewrite it in place and queue generated frames.
    fn process(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome;
    /// Handles a copy of a frame that another core handles and counts (a shard's copy of an ARP
    /// frame, turned into a reply so that it only teaches the neighbour): the core may learn
    /// from it, but its counters must not show it. The default counts it like any frame.
    fn teach(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome {
        self.process(port, now, frame, csum, sink)
    }
    /// Touches what handling `frame` will read (see `Switch::prefetch`), before a burst is
    /// handled frame by frame. The default does nothing.
    fn prefetch(&self, _frame: &[u8]) -> u32 {
        0
    }
    /// Runs timers.
    fn poll(&mut self, now: Instant, sink: &mut FrameSink);
    /// The link behind `port` went down (writes fail, or the device is gone) or came back.
    fn set_port_up(&mut self, _port: PortId, _up: bool, _sink: &mut FrameSink) {}
    /// Copies counters and occupancy into `snap` (ports and host figures are filled by the loop).
    fn snapshot(&self, snap: &mut Snapshot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_is_bounded() {
        let mut s = FrameSink::default();
        assert!(!s.push(0, &[0; GENERATED_MAX + 1]));
        for _ in 0..SINK_CAPACITY {
            assert!(s.push(1, &[1; 60]));
        }
        assert!(!s.push(1, &[1; 60]));
        assert_eq!(s.len(), SINK_CAPACITY);
    }
}
