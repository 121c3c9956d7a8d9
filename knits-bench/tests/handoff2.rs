//! KNITS-Handoff-2 through a real cluster: `knits-bench run` builds the knits-host cluster (3
//! nodes, every connection sprayed to node 1, nginx behind every proxy), runs the
//! KNITS-Handoff-2 scripts with wrk, and records the hand-offs the switch accepted during each
//! run (its counters). Every connection asks node 2 first and node 3 next, so the switch must
//! count two hand-offs per connection: exactly 2 for the one persistent connection of a
//! serialized run, and 2 per sequence of the request-sequence run (± the sequence open when
//! wrk stops). knits (node 1 only) must count none.
//!
//! Needs root, wrk and nginx; prints a visible skip without them (and fails when
//! KNITS_REQUIRE_ROOT=1, as CI sets it). About 20 s.

mod common;

use common::{bench_run, ready};

/// runs.csv as (scenario, measure, size, connections, switch hand-offs, requests) per run.
fn runs(csv: &str) -> Vec<(String, String, u64, f64, u64, u64)> {
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |n: &str| {
        head.iter()
            .position(|h| *h == n)
            .unwrap_or_else(|| panic!("no column {n} in {head:?}"))
    };
    let (s, m, z, c, h, r) = (
        col("scenario"),
        col("measure"),
        col("size_bytes"),
        col("connections"),
        col("switch_handoffs"),
        col("requests"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[s].to_string(),
                f[m].to_string(),
                f[z].parse().unwrap(),
                f[c].parse().unwrap(),
                f[h].parse().unwrap(),
                f[r].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn knits_handoff_2_moves_every_connection_twice() {
    if !ready("knits_handoff_2_moves_every_connection_twice") {
        return;
    }
    let out = bench_run(
        "h2",
        &[
            "--quick",
            "--only",
            "knits,knits-h2",
            "--sizes",
            "1k,64k",
            "--runs",
            "1",
            "--seconds",
            "1",
            "--seq-requests",
            "2",
            "--no-cps",
            "--no-concurrent",
        ],
    );
    let csv = std::fs::read_to_string(out.join("runs.csv")).expect("runs.csv");
    let rows = runs(&csv);
    // knits and knits-h2, serialized and in sequences, at two sizes, one run each.
    assert_eq!(rows.len(), 8, "{csv}");
    for (scenario, measure, size, conns, handoffs, requests) in &rows {
        let what = format!(
            "{scenario} {measure} {size} B: {handoffs} hand-offs, {conns} connections, {requests} requests\n{csv}"
        );
        assert!(*requests > 2, "the run carried no traffic: {what}");
        match (scenario.as_str(), measure.as_str()) {
            ("knits", _) => assert_eq!(*handoffs, 0, "node 1 owns every path: {what}"),
            ("knits-h2", "serial") => {
                // One persistent connection: n1 to n2 at its first request, n2 to n3 at its
                // second, and never again.
                assert_eq!(*conns, 1.0, "{what}");
                assert_eq!(*handoffs, 2, "two hand-offs on the one connection: {what}");
            }
            ("knits-h2", "seq") => {
                // Two requests per connection (n2, then n3 with Connection: close).
                assert!(*conns >= 5.0, "too few sequences to judge: {what}");
                let per = *handoffs as f64 / conns;
                assert!(
                    (*handoffs as f64 - 2.0 * conns).abs() <= 2.0,
                    "{per:.3} hand-offs per connection, not 2: {what}"
                );
            }
            _ => panic!("unexpected row: {what}"),
        }
    }
    let md = std::fs::read_to_string(out.join("results.md")).expect("results.md");
    assert!(
        !md.contains("client connections, expected"),
        "the report flags a run whose hand-offs do not match its scenario:\n{md}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
