//! One frame on any port, through the whole pipeline of a fresh or warm switch.
//! See knits_fuzz::checks::check_pipeline and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_pipeline(data));
