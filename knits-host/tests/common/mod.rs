//! Shared by the end-to-end tests: the root check and its visible skip, and the wait for an
//! empty flow table.

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

/// Waits until the switch's table is empty (after the test TIME-WAIT); returns the snapshot.
pub fn wait_table_empty(
    c: &knits_host::cluster::Cluster,
    limit: std::time::Duration,
) -> knits_host::stats::Snapshot {
    let t = std::time::Instant::now();
    loop {
        let s = c.snapshot();
        if s.flows == 0 && s.sessions == 0 {
            return s;
        }
        assert!(
            t.elapsed() < limit,
            "flow table not empty {} s after the run:\n{}",
            limit.as_secs(),
            s.table()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
