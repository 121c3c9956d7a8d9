//! A synthetic hand-off workload written as pcapng, read back and replayed through a fresh
//! switch: the replay sees the same hand-offs and no drops.

use knits_np_sim::pcap;
use knits_np_sim::replay::{ReplaySpec, replay};
use knits_np_sim::workload::{KEY, Scenario, Spec, generate_with_capture};

#[test]
fn capture_write_read_replay() {
    let mut spec = Spec::scenario(Scenario::Handoff1);
    spec.connections = 30;
    spec.occupancy = 0.0;
    spec.flow_capacity = 1024;
    let (_, report, frames) = generate_with_capture(&spec).unwrap();
    assert_eq!(report.handoffs_accepted, 30);

    let list: Vec<(u16, u64, &[u8])> = frames
        .iter()
        .enumerate()
        .map(|(i, (p, f))| (*p as u16, 10 * i as u64, &f[..]))
        .collect();
    let path =
        std::env::temp_dir().join(format!("knits-np-sim-replay-{}.pcapng", std::process::id()));
    let mut file = std::fs::File::create(&path).unwrap();
    pcap::write(&mut file, spec.backends as u16 + 1, &list).unwrap();
    drop(file);
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);

    let read = pcap::read(&bytes).unwrap();
    assert_eq!(read.len(), frames.len());
    assert!(
        read.iter()
            .zip(&frames)
            .all(|(a, (p, f))| a.port == *p as u16 && a.data == *f)
    );

    let rs = ReplaySpec {
        backends: None,
        key: KEY,
        flow_capacity: 1024,
        all_directions: false,
    };
    let (traces, r) = replay(&bytes, &rs).unwrap();
    assert_eq!(traces.packets.len(), frames.len());
    assert_eq!(r.handoffs_accepted, 30, "{r:#?}");
    assert_eq!(r.total_drops(), 0, "{r:#?}");
    assert_eq!(r.completed, 30, "client connections opened");
}

#[test]
fn replay_of_garbage_is_an_error() {
    let rs = ReplaySpec {
        backends: None,
        key: KEY,
        flow_capacity: 64,
        all_directions: false,
    };
    let e = replay(b"not a capture at all", &rs).unwrap_err();
    assert!(e.0.contains("pcapng"), "{e}");
}
