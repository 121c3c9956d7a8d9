//! The flow table against a model map (differential).
//! See knits_fuzz::checks::check_flow_table and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_flow_table(data));
