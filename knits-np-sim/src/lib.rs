//! # knits-np-sim
//!
//! A cycle-counting model of a parallel network-processor pipeline that runs the real KNITS
//! switch core and estimates the packets per second a network processor would reach with it.
//!
//! ## Layers
//! - [`calibration`]: instructions per packet class and stage of the compiled core (callgrind),
//!   and the checked-in calibration file.
//! - [`machine`]: machine descriptions (TOML): engines, threads, clock, shared units, and the
//!   cost of each operation the knits-core [`Meter`](knits_core::meter::Meter) records.
//! - [`trace`]: a meter that records what the real code path did for each packet.
//! - [`model`]: the timing model, a discrete-event simulation that replays traces on a machine
//!   (the program builder, the event loop, the unit calendars and the results, one module each).
//! - [`hist`]: histograms for means and percentiles (`hdrhistogram` plus an exact sum).
//! - [`workload`]: synthetic workloads, real TCP exchanges through the real switch (the driver
//!   and wire, the hosts' small TCP, the requests and hand-offs, the frame builders);
//!   [`replay`] and [`pcap`]: the same from a pcapng capture (`pcap-file`); [`rng`]: how the
//!   seeded streams draw from `rand_xoshiro`'s SplitMix64.
//! - [`probe`]: clock, memory latencies and CPI of this machine, for the `cpu` preset;
//!   [`validate`]: the `cpu` preset's predictions beside criterion's measurements.
//! - [`report`], [`sweep`]: text/JSON reports, sweeps over engines or threads (CSV, SVG).
//!
//! docs/np-sim.md describes the model, the source of every machine number, and the measured
//! figures with the commands that made them.
//!
//! ## Panic contract
//! No input file (machine description, pcap) makes this crate panic; bad input is an error that
//! says what to fix.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// The packet classes and frame builders of knits-core's benchmarks and instruction counts: one
// set, so the model replays the frames that callgrind counted and criterion timed.
use knits_testkit::classes;

pub mod calibration;
pub mod hist;
pub mod machine;
pub mod model;
pub mod pcap;
pub mod probe;
pub mod replay;
pub mod report;
pub mod rng;
pub mod sweep;
pub mod trace;
pub mod validate;
pub mod workload;
