//! Up to 32 frames on one port: `process_burst` against `process` one by one, from the same
//! state. See knits_fuzz::burst::check_burst and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::burst::check_burst(data));
