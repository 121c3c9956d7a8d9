//! Meter traces: what the real knits-core code path did for each packet, in order.
//!
//! [`TraceMeter`] implements [`Meter`] and appends one [`Rec`] per hook call. A [`TraceSet`] holds
//! the records of many packets in one arena, with the facts the timing model needs about each
//! packet (length, flow for ordering, what the switch decided).

use knits_core::meter::{Meter, Step};
use serde::Serialize;

/// The metered operations, in the order of [`Meter`]'s methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Op {
    /// A step was entered.
    Step,
    /// Header bytes read.
    BytesRead,
    /// Flow-table buckets probed.
    TableProbe,
    /// Flow-table entries read or written.
    TableEntry,
    /// Header bytes rewritten.
    BytesRewritten,
    /// Checksum words.
    ChecksumWords,
    /// TCP option bytes walked.
    OptionBytes,
    /// A frame generated (n = its length).
    Generated,
    /// A counter incremented.
    Counter,
    /// Bytes through the keyed MAC.
    MacBytes,
}

impl Op {
    /// All operations, in index order.
    pub const ALL: [Op; 10] = [
        Op::Step,
        Op::BytesRead,
        Op::TableProbe,
        Op::TableEntry,
        Op::BytesRewritten,
        Op::ChecksumWords,
        Op::OptionBytes,
        Op::Generated,
        Op::Counter,
        Op::MacBytes,
    ];

    /// The name used in machine descriptions (`[ops]` keys) and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Step => "step",
            Op::BytesRead => "bytes_read",
            Op::TableProbe => "table_probe",
            Op::TableEntry => "table_entry",
            Op::BytesRewritten => "bytes_rewritten",
            Op::ChecksumWords => "checksum_words",
            Op::OptionBytes => "option_bytes",
            Op::Generated => "generated",
            Op::Counter => "counter",
            Op::MacBytes => "mac_bytes",
        }
    }
}

/// One meter record: in `step`, operation `op` counted `n` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// The step the record belongs to (index into [`Step::ALL`]).
    pub step: u8,
    /// The operation.
    pub op: Op,
    /// Items counted (1 for a step entry or a counter).
    pub n: u32,
}

/// A [`Meter`] that appends every record to a vector.
#[derive(Debug, Default)]
pub struct TraceMeter {
    step: u8,
    /// The records so far.
    pub recs: Vec<Rec>,
}

impl TraceMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops the records, keeping the allocation.
    pub fn clear(&mut self) {
        self.recs.clear();
        self.step = 0;
    }

    #[inline]
    fn push(&mut self, op: Op, n: u32) {
        self.recs.push(Rec {
            step: self.step,
            op,
            n,
        });
    }
}

/// Index of a step in [`Step::ALL`].
pub fn step_index(s: Step) -> u8 {
    Step::ALL.iter().position(|x| *x == s).unwrap_or(0) as u8
}

impl Meter for TraceMeter {
    fn step(&mut self, step: Step) {
        self.step = step_index(step);
        self.push(Op::Step, 1);
    }
    fn bytes_read(&mut self, n: u32) {
        self.push(Op::BytesRead, n);
    }
    fn table_probe(&mut self, n: u32) {
        self.push(Op::TableProbe, n);
    }
    fn table_entry(&mut self, n: u32) {
        self.push(Op::TableEntry, n);
    }
    fn bytes_rewritten(&mut self, n: u32) {
        self.push(Op::BytesRewritten, n);
    }
    fn checksum_words(&mut self, n: u32) {
        self.push(Op::ChecksumWords, n);
    }
    fn option_bytes(&mut self, n: u32) {
        self.push(Op::OptionBytes, n);
    }
    fn generated(&mut self, len: u32) {
        self.push(Op::Generated, len);
    }
    fn counter(&mut self) {
        self.push(Op::Counter, 1);
    }
    fn mac_bytes(&mut self, n: u32) {
        self.push(Op::MacBytes, n);
    }
}

/// What the switch did with a packet, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Forwarded on a port.
    Forward,
    /// Handled by the switch (ARP, control message, absorbed teardown).
    Local,
    /// Dropped.
    Drop,
}

/// One packet's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketTrace {
    /// Ingress port.
    pub port: u8,
    /// Frame length in bytes.
    pub len: u16,
    /// Flow (per-flow order is restored by the completion unit); dense, `0..TraceSet::flows`.
    pub flow: u32,
    /// What the switch did.
    pub outcome: Outcome,
    /// Start of the records in [`TraceSet::recs`].
    pub start: u32,
    /// Number of records.
    pub count: u32,
    /// The packet class whose calibrated instructions it is charged (index into
    /// [`crate::calibration::CLASSES`]; `u8::MAX` = none: only the meter's op costs).
    pub class: u8,
}

/// The traces of a workload, replayed by the timing model.
#[derive(Debug, Clone, Default)]
pub struct TraceSet {
    /// Packets in arrival order.
    pub packets: Vec<PacketTrace>,
    /// All records, packets' ranges back to back.
    pub recs: Vec<Rec>,
    /// Number of distinct flows.
    pub flows: u32,
    /// Client connections the packets carry (for connections/s).
    pub connections: u64,
    /// Hand-offs accepted by the switch within these packets.
    pub handoffs: u64,
}

impl TraceSet {
    /// Appends a packet with the records of `meter`.
    pub fn push(&mut self, port: u8, len: usize, flow: u32, outcome: Outcome, meter: &TraceMeter) {
        let start = self.recs.len() as u32;
        self.recs.extend_from_slice(&meter.recs);
        self.packets.push(PacketTrace {
            port,
            len: len.min(u16::MAX as usize) as u16,
            flow,
            outcome,
            start,
            count: meter.recs.len() as u32,
            class: u8::MAX,
        });
        self.flows = self.flows.max(flow + 1);
    }

    /// The records of packet `i`.
    pub fn recs_of(&self, p: &PacketTrace) -> &[Rec] {
        &self.recs[p.start as usize..(p.start + p.count) as usize]
    }

    /// Sum of items per operation over all packets, divided by the packet count.
    pub fn mean_counts(&self) -> Vec<(Op, f64)> {
        let mut sum = [0u64; Op::ALL.len()];
        for r in &self.recs {
            sum[r.op as usize] += r.n as u64;
        }
        let n = self.packets.len().max(1) as f64;
        Op::ALL
            .iter()
            .map(|&op| (op, sum[op as usize] as f64 / n))
            .collect()
    }

    /// Mean frame length in bytes.
    pub fn mean_len(&self) -> f64 {
        let s: u64 = self.packets.iter().map(|p| p.len as u64).sum();
        s as f64 / self.packets.len().max(1) as f64
    }

    /// Packets per outcome.
    pub fn outcomes(&self) -> [u64; 3] {
        let mut o = [0u64; 3];
        for p in &self.packets {
            o[p.outcome as usize] += 1;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_records_in_order_with_steps() {
        let mut m = TraceMeter::new();
        m.step(Step::Parse);
        m.bytes_read(54);
        m.step(Step::Lookup);
        m.table_probe(2);
        m.counter();
        assert_eq!(
            m.recs,
            vec![
                Rec {
                    step: 0,
                    op: Op::Step,
                    n: 1
                },
                Rec {
                    step: 0,
                    op: Op::BytesRead,
                    n: 54
                },
                Rec {
                    step: 2,
                    op: Op::Step,
                    n: 1
                },
                Rec {
                    step: 2,
                    op: Op::TableProbe,
                    n: 2
                },
                Rec {
                    step: 2,
                    op: Op::Counter,
                    n: 1
                },
            ]
        );
        let mut t = TraceSet::default();
        t.push(1, 60, 3, Outcome::Forward, &m);
        assert_eq!(t.flows, 4);
        assert_eq!(t.recs_of(&t.packets[0]).len(), 5);
    }
}
