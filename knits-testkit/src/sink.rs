//! The tests' frame sinks.

use knits_core::config::PortId;
use knits_core::switch::Sink;

/// Keeps every frame the switch emits, with its port; can be told to refuse every n-th one
/// (the switch then counts a `sink_full` drop).
#[derive(Debug, Default)]
pub struct VecSink {
    /// The frames taken, in order.
    pub frames: Vec<(PortId, Vec<u8>)>,
    /// Refuse every n-th frame offered (0: never).
    pub refuse_every: u32,
    /// Frames offered so far.
    offered: u32,
    /// Frames refused so far.
    pub refused: u64,
}

impl VecSink {
    /// A sink that refuses every `n`-th frame offered (0: none).
    pub fn refusing_every(n: u32) -> Self {
        VecSink {
            refuse_every: n,
            ..VecSink::default()
        }
    }
}

impl Sink for VecSink {
    fn emit(&mut self, port: PortId, frame: &[u8]) -> bool {
        self.offered = self.offered.wrapping_add(1);
        if self.refuse_every != 0 && self.offered.is_multiple_of(self.refuse_every) {
            self.refused += 1;
            return false;
        }
        self.frames.push((port, frame.to_vec()));
        true
    }
}

/// Takes every frame and keeps none (benchmarks).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Sink for Discard {
    fn emit(&mut self, _: PortId, _: &[u8]) -> bool {
        true
    }
}
