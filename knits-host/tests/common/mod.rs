//! Shared by the end-to-end tests: the root check and its visible skip.

#![allow(dead_code)]

/// True when the test may run. Without CAP_NET_ADMIN it prints a visible skip and returns
/// false, or panics when KNITS_REQUIRE_ROOT=1 (as CI sets it).
pub fn root_or_skip(test: &str) -> bool {
    if knits_host::netns::have_net_admin() {
        return true;
    }
    if std::env::var("KNITS_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: needs root (CAP_NET_ADMIN) and KNITS_REQUIRE_ROOT=1 is set");
    }
    // Straight to fd 2: the test harness captures print!/eprint! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: needs root (CAP_NET_ADMIN): {test}"
    );
    false
}
