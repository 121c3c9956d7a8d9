//! The pipeline target: one frame on any port of a fresh or warm switch.

use knits_core::checksum::Kind;

use super::reader::Reader;
use super::script::warm_harness;

/// Pipeline target. Byte 0: bits 0-1 warm state (fresh, established, hand-off accepted, hand-off
/// confirmed), bit 2 partial checksum, bit 3 verify checksums, bits 4-7 seconds to wait first.
/// Byte 1: the port. The rest: the frame.
pub fn check_pipeline(data: &[u8]) {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let port = r.u8();
    let mut frame = r.rest().to_vec();
    let mut h = warm_harness(sel, sel & 8 != 0);
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
