//! The cost meter: what each pipeline step did to one packet.
//!
//! The pipeline calls these hooks as it works. The default [`NoMeter`] does nothing, so the calls
//! compile away; knits-np-sim implements [`Meter`] to turn the records into cycles on a model of a
//! network processor. Every count is of work the real code path did for this packet, never an
//! estimate typed in by hand.

/// The steps of the per-packet pipeline, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Step {
    /// Ethernet / IPv4 / TCP or UDP header views and the TCP option walk.
    Parse,
    /// Control message? ARP? routed packet? VIP traffic?
    Classify,
    /// Flow table search.
    Lookup,
    /// Spray, binding choice, splice state machine.
    Decide,
    /// Header rewrite and incremental checksum.
    Rewrite,
    /// Verdict, counters, generated frames.
    Verdict,
}

impl Step {
    /// All steps, in pipeline order.
    pub const ALL: [Step; 6] = [
        Step::Parse,
        Step::Classify,
        Step::Lookup,
        Step::Decide,
        Step::Rewrite,
        Step::Verdict,
    ];

    /// A short lower-case name, for reports.
    pub const fn name(self) -> &'static str {
        match self {
            Step::Parse => "parse",
            Step::Classify => "classify",
            Step::Lookup => "lookup",
            Step::Decide => "decide",
            Step::Rewrite => "rewrite",
            Step::Verdict => "verdict",
        }
    }
}

/// Receives a record of the work of each pipeline step. All methods default to doing nothing.
pub trait Meter {
    /// The pipeline enters `step`; the records that follow belong to it.
    #[inline(always)]
    fn step(&mut self, _step: Step) {}
    /// Header bytes read (parsed) by the current step.
    #[inline(always)]
    fn bytes_read(&mut self, _n: u32) {}
    /// Flow-table buckets probed (one memory read of the hash index each).
    #[inline(always)]
    fn table_probe(&mut self, _n: u32) {}
    /// Flow-table entries read or written (connection records, bindings).
    #[inline(always)]
    fn table_entry(&mut self, _n: u32) {}
    /// Header bytes rewritten in place.
    #[inline(always)]
    fn bytes_rewritten(&mut self, _n: u32) {}
    /// 16-bit words fed to a checksum computation or update.
    #[inline(always)]
    fn checksum_words(&mut self, _n: u32) {}
    /// TCP option bytes walked.
    #[inline(always)]
    fn option_bytes(&mut self, _n: u32) {}
    /// A frame of `len` bytes generated and handed to the sink.
    #[inline(always)]
    fn generated(&mut self, _len: u32) {}
    /// A counter incremented.
    #[inline(always)]
    fn counter(&mut self) {}
    /// A keyed MAC computed over `n` bytes (control messages).
    #[inline(always)]
    fn mac_bytes(&mut self, _n: u32) {}
}

/// A meter that records nothing and costs nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMeter;

impl Meter for NoMeter {}
