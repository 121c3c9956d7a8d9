//! The burst target: `Switch::process_burst` must give exactly what `Switch::process` gives
//! frame by frame (verdicts, rewritten bytes, generated frames, counters) from the same state,
//! for any frames. See docs/fuzzing.md.

use knits_core::meter::NoMeter;
use knits_core::switch::{BURST, FrameMeta, Verdict};
use knits_core::time::Instant;

use super::script::warm_harness;
use crate::sink::VecSink;

/// Byte 0: bits 0-1 the starting state (fresh, established, hand-off accepted, confirmed), bit 2
/// partial checksums, bits 3-4 the port the burst arrives on. Then frames, each a length byte
/// and that many bytes (at most [`BURST`] frames).
pub fn check_burst(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let (mut a, mut b) = (warm_harness(sel, true), warm_harness(sel, true));
    let meta = FrameMeta {
        csum: if sel & 4 != 0 {
            knits_core::checksum::Kind::Partial
        } else {
            knits_core::checksum::Kind::Full
        },
    };
    let port = (sel >> 3) & 3;
    let mut frames: Vec<Vec<u8>> = Vec::new();
    while let Some((&len, r)) = rest.split_first() {
        if frames.len() == BURST {
            break;
        }
        let n = (len as usize).min(r.len());
        frames.push(r[..n].to_vec());
        rest = &r[n..];
    }
    let now = Instant::from_secs(100);
    let mut burst = frames.clone();
    let mut refs: Vec<&mut [u8]> = burst.iter_mut().map(|f| f.as_mut_slice()).collect();
    let metas = vec![meta; refs.len()];
    let mut verdicts = vec![Verdict::Drop(knits_core::counters::DropReason::Internal); refs.len()];
    let (mut sa, mut sb) = (VecSink::default(), VecSink::default());
    let n = a.sw.process_burst(
        port,
        now,
        &mut refs,
        &metas,
        &mut verdicts,
        &mut sa,
        &mut NoMeter,
    );
    assert_eq!(n, frames.len());
    for (i, f) in frames.iter_mut().enumerate() {
        let v = b.sw.process(port, now, f, meta, &mut sb, &mut NoMeter);
        assert_eq!(v, verdicts[i], "verdict of frame {i}");
        assert_eq!(*f, burst[i], "bytes of frame {i}");
    }
    assert_eq!(sa.frames, sb.frames, "generated frames");
    assert_eq!(
        format!("{:?}", a.sw.counters()),
        format!("{:?}", b.sw.counters()),
        "counters"
    );
    assert_eq!(a.sw.flow_count(), b.sw.flow_count());
    assert_eq!(a.sw.session_count(), b.sw.session_count());
}
