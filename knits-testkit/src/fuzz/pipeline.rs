//! The pipeline target: one frame on any port of a fresh or warm switch.

use knits_core::checksum::Kind;

use super::harness::Harness;
use super::ops::SYN_OPTS;
use super::reader::Reader;
use super::script::{Script, Stage, handoff_on};

/// Pipeline target. Byte 0: bits 0-1 warm state (fresh, established, hand-off accepted, hand-off
/// confirmed), bit 2 partial checksum, bit 3 verify checksums, bits 4-7 seconds to wait first.
/// Byte 1: the port. The rest: the frame.
pub fn check_pipeline(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let port = r.u8();
    let mut frame = r.rest().to_vec();
    let mut h = match sel & 3 {
        0 => Harness::new(0, sel & 8 != 0),
        n => {
            let stage = [
                Stage::Established,
                Stage::Established,
                Stage::Accepted,
                Stage::Confirmed,
            ][n as usize];
            handoff_on(Script::with_verify(0, sel & 8 != 0), SYN_OPTS, stage).h
        }
    };
    if sel >> 4 != 0 {
        h.tick((sel >> 4) as u64 * 1000, h.sw.flow_capacity());
    }
    let kind = if sel & 4 != 0 {
        Kind::Partial
    } else {
        Kind::Full
    };
    h.frame(port, &mut frame, kind);
}
