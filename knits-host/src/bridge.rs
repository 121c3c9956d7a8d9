//! A two-port wire for testing the host plumbing (TAPs, offloads, faults, capture) without the
//! switch.

use knits_core::checksum;
use knits_core::config::PortId;
use knits_core::time::Instant;

use crate::datapath::{Core, FrameSink, Outcome};
use crate::stats::Snapshot;

/// A two-port wire: every frame from port 0 goes out of port 1 and back. It tests TAPs, offloads,
/// faults and capture without the switch.
#[derive(Debug, Default)]
pub struct Bridge {
    /// Frames moved.
    pub frames: u64,
}

impl Core for Bridge {
    fn process(
        &mut self,
        port: PortId,
        _now: Instant,
        _frame: &mut [u8],
        _csum: checksum::Kind,
        _sink: &mut FrameSink,
    ) -> Outcome {
        self.frames += 1;
        match port {
            0 => Outcome::Forward(1),
            1 => Outcome::Forward(0),
            _ => Outcome::Drop,
        }
    }
    fn poll(&mut self, _now: Instant, _sink: &mut FrameSink) {}
    fn snapshot(&self, snap: &mut Snapshot) {
        snap.core.rx_frames[0] = self.frames;
    }
}
