//! Fuzz targets over knits-core. The check logic lives in `knits_testkit::fuzz`, which the corpus
//! replay test (`knits-core/tests/fuzz_corpus.rs`) runs too, so the fuzzer and `cargo test` run
//! the same code on the same inputs. See docs/fuzzing.md.

pub use knits_testkit::fuzz as checks;

/// The burst target's check, under the path its target names.
pub mod burst {
    pub use knits_testkit::fuzz::check_burst;
}
