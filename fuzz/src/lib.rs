//! Fuzz targets over knits-core. The check logic lives in [`checks`], which the corpus replay test
//! (`knits-core/tests/fuzz_corpus.rs`) includes by path, so the fuzzer and `cargo test` run the
//! same code on the same inputs. See docs/fuzzing.md.

pub mod burst;
pub mod checks;
