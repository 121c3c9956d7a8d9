//! Runs one packet class through the pipeline N times (default 100,000), for instruction
//! counting, which unlike time does not depend on what else the machine runs:
//!
//!     cargo build --release -p knits-core --example per_packet
//!     valgrind --tool=callgrind --toggle-collect='per_packet::measured' \
//!         target/release/examples/per_packet 100000 [CLASS]
//!
//! Every measured frame goes through `measured`, which does nothing but call
//! `Switch::process`: with `--toggle-collect` callgrind counts exactly the instructions of the
//! measured `process` calls (and the few of the call itself), not the set-up's, which also
//! calls `process` (a class such as `handoff` sets up one connection per measured frame).
//! `knits-np-sim calibrate` and `scripts/instructions.sh` do this for every class. The classes
//! (`knits_testkit::classes`, shared with the benchmarks and knits-np-sim):
//!
//! - `ack` (default): an established NATed flow's bare ACK, no options;
//! - `data`: the same flow's 1448-byte data segment (full checksum verified);
//! - `syn`: a new client connection's SYN, sprayed (a new tuple every time);
//! - `spliced`: a handed-off flow's bare ACK from the client, with timestamps and a SACK block;
//! - `handoff`: a node's hand-off request (control message), accepted and answered;
//! - `fakefin`: the target's ACK that confirms a hand-off, answered by faked frames;
//! - `arp`: an ARP request for the VIP, answered;
//! - `malformed`: a truncated IPv4 header, dropped;
//! - `ip-forward`: ICMP between two back-end nodes, routed plainly (60 bytes).
//!
//! `handoff` and `fakefin` set up one hand-off per measured frame: N at most 1,000, in a
//! switch of 1,024 session slots.

use knits_core::meter::NoMeter;
use knits_core::switch::{FrameMeta, Switch, Verdict};
use knits_core::time::Instant;
use knits_testkit::classes;
use knits_testkit::sink::Discard;

/// The measured call: callgrind's `--toggle-collect` counts only inside it.
#[inline(never)]
fn measured(sw: &mut Switch, port: u8, now: Instant, frame: &mut [u8]) -> Verdict {
    sw.process(
        port,
        now,
        frame,
        FrameMeta::FULL,
        &mut Discard,
        &mut NoMeter,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let class = args.next().unwrap_or_else(|| "ack".into());
    let mut run = classes::setup(&class, n).unwrap_or_else(|e| {
        eprintln!("per_packet: {e}");
        std::process::exit(2)
    });
    let mut buf = vec![0u8; run.max_len()];
    let mut first = None;
    let before = run.sw.counters().generated;
    for i in 0..n {
        let (port, f) = run.frame(i);
        let frame = &mut buf[..f.len()];
        frame.copy_from_slice(f);
        let v = measured(&mut run.sw, port, run.now, std::hint::black_box(frame));
        first.get_or_insert(v);
    }
    let c = run.sw.counters();
    let generated: Vec<_> = knits_core::counters::Generated::ALL
        .iter()
        .filter(|g| c.generated[g.index()] > before[g.index()])
        .map(|g| (g.name(), c.generated[g.index()] - before[g.index()]))
        .collect();
    let drops: Vec<_> = knits_core::counters::DropReason::ALL
        .iter()
        .filter(|r| c.drop_count(**r) > 0)
        .map(|r| (r.name(), c.drop_count(*r)))
        .collect();
    println!("{n} x {class}: first verdict {first:?}, generated {generated:?}, drops {drops:?}");
}
