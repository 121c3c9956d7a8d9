//! Incremental against full checksums (differential).
//! See knits_fuzz::checks::check_checksum and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_checksum(data));
