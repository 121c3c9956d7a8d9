//! The whole command once, as small as it gets: the Direct topology (two namespaces, nginx, wrk),
//! one run of 1 s at 1 KiB serialized and the connections/s runs, then the files it writes; and
//! the same for the knits-l4 scenario (the switch's L4 service).
//! Needs root, wrk and nginx; prints a visible skip without them (and fails when
//! KNITS_REQUIRE_ROOT=1, as CI sets it). About 10 s.

mod common;

use std::path::Path;

use common::{bench_run, ready};

#[test]
fn quick_direct_run_writes_csv_markdown_and_plots() {
    if !ready("quick_direct_run_writes_csv_markdown_and_plots") {
        return;
    }
    let out = bench_run(
        "smoke",
        &[
            "--quick",
            "--only",
            "direct",
            "--sizes",
            "1k",
            "--runs",
            "1",
            "--seconds",
            "1",
            "--no-concurrent",
        ],
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).expect("runs.csv");
    let lines: Vec<&str> = runs.lines().collect();
    // Header, 1 serialized run, 1 request-sequence run, 2 connections/s runs (1 KiB, 64 KiB).
    assert_eq!(lines.len(), 5, "{runs}");
    let seq: Vec<&str> = lines[2].split(',').collect();
    assert_eq!(seq[1], "seq", "{runs}");
    // Two requests per connection: the client opened half as many connections as requests.
    let (requests, conns): (f64, f64) = (seq[4].parse().unwrap(), seq[18].parse().unwrap());
    assert!((conns - requests / 2.0).abs() < 1e-9, "{runs}");
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[0], "direct");
        let requests: u64 = f[4].parse().unwrap();
        assert!(requests > 0, "a run without a single response: {l}");
        assert_eq!((f[11], f[12]), ("0", "0"), "errors in {l}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| direct |"), "{md}");
    assert!(out.join("points.csv").exists());
    if Path::new(knits_bench::plot::FONTS[0]).exists() {
        assert!(out.join("fig6-throughput.svg").exists());
        assert!(out.join("fig8-connections.png").exists());
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The L4 scenario (issue 17): a cluster with `--service 5201:l4`, nginx on every node's port
/// 5201, wrk to VIP:5201 through the switch's NAT spray with no proxy: every run is answered,
/// without an error, and the switch accepts no hand-off. About 20 s.
#[test]
fn quick_knits_l4_run_is_answered_through_the_switch() {
    if !ready("quick_knits_l4_run_is_answered_through_the_switch") {
        return;
    }
    let out = bench_run(
        "smoke-l4",
        &[
            "--quick",
            "--only",
            "knits-l4",
            "--sizes",
            "1k",
            "--runs",
            "1",
            "--seconds",
            "1",
            "--no-concurrent",
        ],
    );
    let runs = std::fs::read_to_string(out.join("runs.csv")).expect("runs.csv");
    let lines: Vec<&str> = runs.lines().collect();
    // Header, serialized, request sequence, connections/s at 1 KiB and 64 KiB.
    assert_eq!(lines.len(), 5, "{runs}");
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f[0], "knits-l4");
        let requests: u64 = f[4].parse().unwrap();
        assert!(requests > 0, "a run without a single response: {l}");
        assert_eq!((f[11], f[12]), ("0", "0"), "errors in {l}");
        assert_eq!(f[19], "0", "hand-offs on the L4 service: {l}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(md.contains("| knits-l4 | 0 |"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}
