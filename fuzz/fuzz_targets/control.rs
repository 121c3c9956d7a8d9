//! The control-message decoders and verifier, and requests into a switch.
//! See knits_fuzz::checks::check_control and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_control(data));
