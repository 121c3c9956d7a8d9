//! The KNITS test kit: what the tests, benchmarks and fuzz targets of the workspace share.
//!
//! - [`frames`]: Ethernet / IPv4 / TCP / UDP / ARP frames built with smoltcp's emitters, full
//!   checksums, every field settable (the golden, burst and splice tests, the benchmarks, the
//!   instruction-count example and the fuzz seeds build their inputs with it);
//! - [`sink`]: the [`knits_core::switch::Sink`]s of the tests: one that keeps every generated
//!   frame (and can refuse some), one that drops them;
//! - [`fuzz`]: the check functions of the cargo-fuzz targets in `fuzz/`, which the corpus replay
//!   test (`knits-core/tests/fuzz_corpus.rs`) runs on stable over the committed corpora.
//!
//! A dev-dependency only: nothing here reaches knits-core's normal or no_std build. The host
//! tests' raw frames (`knits-host/tests/common/raw.rs`) keep a builder of their own on purpose:
//! they check the switch with checksum code that shares nothing with smoltcp or knits-core.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod frames;
pub mod fuzz;
pub mod sink;
