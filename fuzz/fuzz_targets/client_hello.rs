//! knits-proxy's ClientHello reader (the TLS listener's only parser of client bytes).
//! See knits_proxy::tls::hello::check_reader and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| knits_proxy::tls::hello::check_reader(data));
