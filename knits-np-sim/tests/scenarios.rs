//! Each named scenario through the real switch: the verdicts are the expected ones.

use knits_core::counters::DropReason;
use knits_np_sim::workload::{Report, Scenario, Spec, generate};

fn run(s: Scenario, f: impl Fn(&mut Spec)) -> Report {
    let mut spec = Spec::scenario(s);
    spec.connections = 150;
    spec.concurrency = 16;
    spec.occupancy = 0.1;
    spec.flow_capacity = 4096;
    spec.response_bytes = (500, 4000);
    f(&mut spec);
    let (traces, report) = generate(&spec).unwrap();
    eprintln!("{s}: {report:#?}");
    assert_eq!(traces.packets.len() as u64, report.packets);
    assert!(
        report.packets > 2000,
        "{s}: only {} packets",
        report.packets
    );
    assert_eq!(
        report.bad_checksums, 0,
        "{s}: the switch sent frames with bad checksums"
    );
    assert_eq!(report.stalled, 0, "{s}: connections stalled");
    assert_eq!(
        report.completed, spec.connections as u64,
        "{s}: not every connection completed"
    );
    report
}

#[test]
fn forward_routes_without_drops() {
    let r = run(Scenario::Forward, |_| {});
    assert_eq!(r.total_drops(), 0);
    assert_eq!(r.handoffs_requested, 0);
}

#[test]
fn nat_sprays_without_drops() {
    let r = run(Scenario::Nat, |_| {});
    assert_eq!(r.total_drops(), 0);
    assert_eq!(r.handoffs_requested, 0);
}

#[test]
fn knits_without_handoff() {
    let r = run(Scenario::Knits, |_| {});
    assert_eq!(r.total_drops(), 0);
    assert_eq!(r.handoffs_requested, 0);
}

#[test]
fn handoff_1_is_accepted_every_time() {
    let r = run(Scenario::Handoff1, |_| {});
    assert_eq!(r.handoffs_requested, 150);
    assert_eq!(r.handoffs_accepted, 150);
    assert!(r.handoffs_refused.is_empty());
    assert_eq!(r.drops(DropReason::UnknownFlow), 0);
    assert_eq!(r.drops(DropReason::OutOfWindow), 0);
    assert!(r.verdicts.get("local:control").copied().unwrap_or(0) >= 150);
}

#[test]
fn handoff_2_is_accepted_every_time() {
    let r = run(Scenario::Handoff2, |_| {});
    assert_eq!(r.handoffs_requested, 300);
    assert_eq!(r.handoffs_accepted, 300);
    assert!(r.handoffs_refused.is_empty());
    assert_eq!(r.drops(DropReason::UnknownFlow), 0);
}

#[test]
fn min_size_frames_are_60_bytes() {
    let mut spec = Spec::scenario(Scenario::Forward);
    spec.connections = 50;
    spec.min_frames = true;
    spec.request_bytes = 6;
    spec.response_bytes = (6, 60);
    spec.flow_capacity = 1024;
    let (t, r) = generate(&spec).unwrap();
    assert_eq!(r.completed, 50);
    assert!(
        t.packets.iter().all(|p| p.len == 60),
        "not all minimum size"
    );
}

#[test]
fn same_seed_same_workload() {
    let mut spec = Spec::scenario(Scenario::Handoff1);
    spec.connections = 40;
    spec.flow_capacity = 1024;
    let (a, ra) = generate(&spec).unwrap();
    let (b, rb) = generate(&spec).unwrap();
    assert_eq!(a.packets, b.packets);
    assert_eq!(a.recs, b.recs);
    assert_eq!(ra.verdicts, rb.verdicts);
    spec.seed = 2;
    let (c, _) = generate(&spec).unwrap();
    assert_ne!(a.packets, c.packets);
}
