//! A sequence of frames, hand-off requests and clock ticks; invariants after each step.
//! See knits_fuzz::checks::check_stateful and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_stateful(data));
