//! The KNITS test kit: what the tests, benchmarks and fuzz targets of the workspace share.
//!
//! - [`frames`]: Ethernet / IPv4 / TCP / UDP / ARP frames built with smoltcp's emitters, full
//!   checksums, every field settable (the golden, burst and splice tests, the benchmarks, the
//!   instruction-count example and the fuzz seeds build their inputs with it);
//! - [`sink`]: the [`knits_core::switch::Sink`]s of the tests: one that keeps every generated
//!   frame (and can refuse some), one that drops them;
//! - [`classes`]: the packet classes of the instruction counts, the benchmarks and the
//!   simulator's calibration (a switch brought into a class's state, and the class's frames);
//! - [`fuzz`]: the check functions of the cargo-fuzz targets in `fuzz/`, which the corpus replay
//!   test (`knits-core/tests/fuzz_corpus.rs`) runs on stable over the committed corpora.
//!
//! Nothing here reaches knits-core's normal or no_std build: it is a dev-dependency of
//! knits-core and knits-host, and a dependency of the fuzz crate and of knits-np-sim (whose
//! calibration and replays run the packet classes). The host
//! tests' raw frames (`knits-host/tests/common/raw.rs`) keep a builder of their own on purpose:
//! they check the switch with checksum code that shares nothing with smoltcp or knits-core.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod classes;
pub mod frames;
pub mod fuzz;
pub mod sink;
