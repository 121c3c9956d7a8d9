//! The check logic of the KNITS fuzz targets, shared with the corpus replay test.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly, libFuzzer) call these functions, and
//! so does `knits-core/tests/fuzz_corpus.rs` (stable `cargo test`), which replays every file of
//! `fuzz/corpus/<target>/` through them. Inputs are decoded by a small fixed-layout reader
//! ([`Reader`]) rather than the `arbitrary` crate, so that the stable replay decodes a corpus file
//! exactly as the fuzzer did.
//!
//! Every `check_*` function takes the raw input bytes, never fails on any input by itself, and
//! panics (an `assert!`) when knits-core breaks an invariant. See docs/fuzzing.md.
//!
//! One module per target (`pipeline`, `burst`, `stateful`, `control`, `tcp_options`,
//! `flow_table`, `checksum`) over what they share: the input `reader`, the fuzzed `cluster`, its
//! `frame`s, the stateful target's `ops`, the `harness` that runs them and its `script`ed
//! scenarios; and the committed `seeds`. Everything public is re-exported here, so a target names
//! `knits_fuzz::checks::X` whatever module `X` lives in.

mod burst;
mod checksum;
mod cluster;
mod control;
mod flow_table;
mod frame;
mod harness;
mod ops;
mod pipeline;
mod reader;
mod script;
mod seeds;
mod stateful;
mod tcp_options;

pub use crate::frames::{F_ACK, F_FIN, F_PSH, F_RST, F_SYN};
pub use burst::*;
pub use checksum::*;
pub use cluster::*;
pub use control::*;
pub use flow_table::*;
pub use frame::*;
pub use harness::*;
pub use ops::*;
pub use pipeline::*;
pub use reader::*;
pub use script::*;
pub use seeds::*;
pub use stateful::*;
pub use tcp_options::*;

/// A check function: panics when knits-core breaks an invariant on this input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by corpus directory name, with their check function.
pub const TARGETS: &[(&str, Check)] = &[
    ("pipeline", check_pipeline),
    ("stateful", check_stateful),
    ("control", check_control),
    ("tcp_options", check_tcp_options),
    ("flow_table", check_flow_table),
    ("checksum", check_checksum),
];
