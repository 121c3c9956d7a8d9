//! What the root tests of knits-bench share: the preconditions (root, wrk, nginx) with a visible
//! skip, and one `knits-bench run` into a fresh output directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the test can run: root (CAP_NET_ADMIN), wrk and nginx. Otherwise it says why on
/// stderr ("SKIPPED: ..."), or fails when KNITS_REQUIRE_ROOT=1 (as CI sets it).
pub fn ready(test: &str) -> bool {
    let missing = if !knits_host::netns::have_net_admin() {
        Some("needs root (CAP_NET_ADMIN)".to_string())
    } else {
        [("/usr/bin/wrk", "wrk"), ("/usr/sbin/nginx", "nginx-light")]
            .into_iter()
            .find(|(p, _)| !Path::new(p).exists())
            .map(|(p, pkg)| format!("{p} is missing (apt-get install {pkg})"))
    };
    let Some(why) = missing else {
        return true;
    };
    if std::env::var("KNITS_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: {why}, and KNITS_REQUIRE_ROOT=1 is set");
    }
    // Straight to fd 2: the test harness captures print!/eprint! of passing tests.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}: {test}");
    false
}

/// Runs `knits-bench run <args> --out DIR` (DIR a fresh temporary directory named after `tag`),
/// asserts that it succeeded, and returns DIR.
pub fn bench_run(tag: &str, args: &[&str]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("knits-bench-{tag}-{}", std::process::id()));
    let st = Command::new(env!("CARGO_BIN_EXE_knits-bench"))
        .arg("run")
        .args(args)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("start knits-bench");
    assert!(st.success(), "knits-bench run failed: {st}");
    out
}
