//! The TCP option walker (against a reference walk) and the in-place rewriter.
//! See knits_fuzz::checks::check_tcp_options and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_fuzz::checks::check_tcp_options(data));
