//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! check functions on stable, so every seed and every regression input found by the fuzzer stays
//! a test. The check logic is `knits_testkit::fuzz`, which the fuzz targets call too. See
//! docs/fuzzing.md.
//!
//! To rewrite the seed files after changing the seed generator:
//! `cargo test -p knits-core --test fuzz_corpus -- --ignored write_seeds`.

use knits_testkit::fuzz as checks;

use std::fs;
use std::path::{Path, PathBuf};

use knits_core::counters::LocalKind;
use knits_core::wire::control::ReplyCode;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn replay(target: &str) {
    let check = checks::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, f)| *f)
        .expect("a known target");
    run_corpus(target, 1, check);
}

/// Runs every file of `target`'s corpus (at least `min` of them) through `check`.
fn run_corpus(target: &str, min: usize, check: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= min, "too few inputs in {}", dir.display());
    for f in &files {
        let data = fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "{target}: {} fails its check", f.display());
    }
}

/// The burst target's corpus (its seeds are bursts made of the pipeline seeds, one file per
/// port and starting state).
#[test]
fn corpus_burst() {
    run_corpus("burst", 8, checks::check_burst);
}

#[test]
fn corpus_pipeline() {
    replay("pipeline");
}

#[test]
fn corpus_stateful() {
    replay("stateful");
}

#[test]
fn corpus_control() {
    replay("control");
}

#[test]
fn corpus_tcp_options() {
    replay("tcp_options");
}

#[test]
fn corpus_flow_table() {
    replay("flow_table");
}

#[test]
fn corpus_checksum() {
    replay("checksum");
}

/// Runs one input: `KNITS_FUZZ_TARGET=stateful KNITS_FUZZ_INPUT=path cargo test -p knits-core
/// --test fuzz_corpus one_input -- --nocapture` (prints the decoded ops of a stateful input);
/// with `KNITS_FUZZ_UNGUARDED=1` the spoof guard is off (see `checks::SPOOF_GUARD`).
#[test]
fn one_input() {
    let (Ok(target), Ok(path)) = (
        std::env::var("KNITS_FUZZ_TARGET"),
        std::env::var("KNITS_FUZZ_INPUT"),
    ) else {
        return;
    };
    if std::env::var_os("KNITS_FUZZ_UNGUARDED").is_some() {
        checks::SPOOF_GUARD.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let data = fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if target == "stateful" {
        for line in checks::describe_stateful(&data) {
            println!("{line}");
        }
    }
    let check = checks::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, f)| *f)
        .expect("a known target");
    check(&data);
}

/// Every generated seed is committed, byte for byte (so the corpus and the generator agree).
#[test]
fn seeds_are_committed() {
    for (target, name, bytes) in checks::seeds() {
        let f = corpus_dir(target).join(format!("seed-{name}"));
        let got = fs::read(&f)
            .unwrap_or_else(|e| panic!("{}: {e} (run the ignored write_seeds test)", f.display()));
        assert_eq!(
            got,
            bytes,
            "{} is stale (run the ignored write_seeds test)",
            f.display()
        );
    }
}

/// Writes the seed files (`--ignored write_seeds`); removes stale `seed-*` files.
#[test]
#[ignore]
fn write_seeds() {
    let seeds = checks::seeds();
    for (target, _) in checks::TARGETS {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        for e in fs::read_dir(&dir).expect("corpus directory") {
            let p = e.expect("entry").path();
            let stale = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
                && !seeds
                    .iter()
                    .any(|(t, n, _)| t == target && p.ends_with(format!("seed-{n}")));
            if stale {
                fs::remove_file(&p).expect("remove a stale seed");
            }
        }
    }
    for (target, name, bytes) in seeds {
        fs::write(corpus_dir(target).join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}

/// The scripted hand-off the seeds start from really hands off, completes and closes: the
/// stateful target's deep states are reachable from the corpus.
#[test]
fn scripted_handoff_completes() {
    let s = checks::handoff_script(0, checks::SYN_OPTS, checks::Stage::Closed);
    let c = s.h.sw.counters();
    assert_eq!(s.h.replies, vec![ReplyCode::Accepted]);
    assert_eq!(c.handoffs_completed, 1, "{c:?}");
    assert_eq!(c.handoffs_rolled_back, 0);
    assert_eq!(c.local[LocalKind::Control.index()], 1);
    let mut s = s;
    s.h.drain();
    assert_eq!(s.h.sw.flow_count(), 0);
}

/// An accepted hand-off whose target never answers is rolled back after the time-out.
#[test]
fn scripted_handoff_rolls_back() {
    let mut s = checks::handoff_script(0, checks::SYN_OPTS, checks::Stage::Accepted);
    s.h.tick(6_000, 1024);
    assert_eq!(s.h.sw.counters().handoffs_rolled_back, 1);
    assert_eq!(s.h.sw.session_count(), 0);
}

/// Each macro scenario (`checks::macro_scenarios`, committed as stateful seeds) reaches what it
/// is named after, so the fuzzer starts from tuple reuse, long hand-off chains, clients without
/// timestamps or SACK, half-closed clients and full tables.
#[test]
fn macro_scenarios_reach_their_states() {
    use knits_core::counters::{DropReason, FlowEvent};
    for (name, s) in checks::macro_scenarios() {
        let c = s.h.sw.counters();
        let ev = |e: FlowEvent| c.event_count(e);
        let accepted = c.handoffs[ReplyCode::Accepted.index()];
        let all =
            |n: u64| accepted == n && c.handoffs_completed == n && c.handoffs_rolled_back == 0;
        let reached = match name {
            "reuse-after-handoff" => all(2) && ev(FlowEvent::Reopened) == 1,
            "reuse-old-duplicate" => {
                c.drop_count(DropReason::ReuseRefused) == 1 && ev(FlowEvent::Reopened) == 0
            }
            "handoff-chain" => {
                all(20) && ev(FlowEvent::BindingRemoved) == 20 && ev(FlowEvent::LegReset) == 20
            }
            "client-without-timestamps" => all(2) && ev(FlowEvent::TsStripped) > 0,
            "client-without-sack" => all(2) && ev(FlowEvent::SackStripped) > 0,
            "options-incompatible" => {
                s.h.replies == [ReplyCode::OptionsIncompatible] && ev(FlowEvent::RoutedReset) == 1
            }
            "client-half-close" => all(1) && ev(FlowEvent::ClientFinPassed) == 1,
            "handoff-in-flight" => accepted == 2,
            "table-full-recycle" => ev(FlowEvent::TimeWaitRecycled) == 1,
            _ => panic!("{name}: no expectation"),
        };
        assert!(reached, "{name}: replies {:?}, {c:?}", s.h.replies);
        assert_eq!(s.h.sw.flow_count(), 0, "{name}: drained");
    }
}

/// Found by the stateful checks on a mutated `seed-handoff-accepted`: while a hand-off is
/// pending, the old node sends an RST carrying 40 bytes on the new leg, not at its snd_nxt. The
/// switch drops it (`out_of_window`) but has already moved the binding's `old_nxt` past the
/// bytes (and `old_ts`), so a dropped frame changed state, and the old node's real RST at its
/// snd_nxt is refused afterwards (no roll-back, no `leg_reset`).
#[test]
fn regress_old_node_rst_with_data_changes_nothing() {
    let mut s = checks::handoff_script(0, checks::SYN_OPTS, checks::Stage::Accepted);
    s.op(checks::Op::Seg(checks::SegOp {
        src: 3 | (checks::P_L1 << 3),
        dst: 4,
        flags: checks::F_ACK | checks::F_RST,
        len: 40,
        opts: 8,
        extra: 7,
        ..checks::SegOp::default()
    }));
    // The old node's own RST at its snd_nxt then rolls the hand-off back.
    s.op(checks::Op::Seg(checks::SegOp {
        src: 3 | (checks::P_L1 << 3),
        dst: 4,
        flags: checks::F_ACK | checks::F_RST,
        seq_mode: 2,
        seq_delta: 1,
        extra: 7,
        ..checks::SegOp::default()
    }));
    assert_eq!(s.h.sw.counters().handoffs_rolled_back, 1);
}
