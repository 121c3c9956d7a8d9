//! A `no_std`, allocator-free program that links knits-core and pushes frames through the
//! pipeline: an ARP request for the VIP and a client SYN that is sprayed to a back-end.
//! Exit status 0 means both verdicts were as expected.
//!
//! Every input the switch sees (configuration, frames, ports, times, checksum kind, budgets)
//! passes through `black_box`, so the optimiser must keep every path a real input could take.
//! That makes the `panic-free` build a proof about all inputs, not about these two frames.
#![no_std]
#![no_main]

use core::hint::black_box;

use knits_core::config::Config;
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Sink, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Instant;
use managed::ManagedSlice;

struct CountSink(u32);

impl Sink for CountSink {
    fn emit(&mut self, _port: u8, frame: &[u8]) -> bool {
        self.0 += frame.len() as u32;
        true
    }
}

/// An ARP request from the client (02:00:00:00:00:02, 198.18.0.2) for the VIP 198.18.0.10.
const ARP: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06, //
    0, 1, 0x08, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x02, 198, 18, 0, 2, //
    0, 0, 0, 0, 0, 0, 198, 18, 0, 10,
];

fn run() -> i32 {
    let mut flows = [FlowSlot::default(); 16];
    let mut index = [IndexSlot::default(); 64];
    let mut sessions: [SessionSlot; 2] = core::array::from_fn(|_| SessionSlot::default());
    let storage = Storage {
        flows: ManagedSlice::Borrowed(&mut flows[..]),
        index: ManagedSlice::Borrowed(&mut index[..]),
        sessions: ManagedSlice::Borrowed(&mut sessions[..]),
    };
    let mut config = Config::cluster(2, [7; 16]);
    config.verify_checksums = false;
    let Ok(mut sw) = Switch::new(black_box(config), storage) else {
        return 10;
    };
    let mut sink = CountSink(0);
    let mut frame = black_box(ARP);
    let v = sw.process(
        black_box(0),
        black_box(Instant::from_millis(1)),
        &mut frame,
        black_box(FrameMeta::FULL),
        &mut sink,
        &mut NoMeter,
    );
    if !matches!(v, Verdict::Local(_)) || sink.0 != 42 {
        return 11;
    }
    // A SYN from the client to the VIP (checksums are not verified in this build).
    let mut syn = [0u8; 54];
    syn[..6].copy_from_slice(&[0x02, 0x4b, 0x4e, 0, 0, 0]);
    syn[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    syn[12..14].copy_from_slice(&[0x08, 0x00]);
    syn[14..34].copy_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 10,
    ]);
    syn[34..54].copy_from_slice(&[
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    let mut syn = black_box(syn);
    let syn_copy = syn;
    let Some(syn) = syn.get_mut(..black_box(54)) else {
        return 14;
    };
    let v = sw.process(
        black_box(0),
        black_box(Instant::from_millis(2)),
        syn,
        black_box(FrameMeta::FULL),
        &mut sink,
        &mut NoMeter,
    );
    // The first SYN is dropped for want of the back-end's MAC (an ARP request goes out), and
    // the flow is in the table.
    if sw.flow_count() != 1 || matches!(v, Verdict::Forward(_)) {
        return 12;
    }
    // The timer and link entry points: nothing is due yet, and no connection is reset when a
    // port without established flows goes down and comes back.
    sw.poll(black_box(Instant::from_millis(3)), black_box(64), &mut sink);
    if sw.set_port_up(black_box(2), black_box(false), &mut sink) != 0 {
        return 13;
    }
    sw.set_port_up(black_box(2), black_box(true), &mut sink);
    // The burst entry point: the SYN again (its retransmission) and the ARP request.
    let (mut a, mut b) = (black_box(syn_copy), black_box(ARP));
    let mut frames: [&mut [u8]; 2] = [&mut a[..], &mut b[..]];
    let metas = [black_box(FrameMeta::FULL); 2];
    let mut verdicts = [Verdict::Local(knits_core::counters::LocalKind::Arp); 2];
    let k = black_box(2);
    let n = sw.process_burst(
        black_box(0),
        black_box(Instant::from_millis(4)),
        frames.get_mut(..k).unwrap_or_default(),
        &metas,
        &mut verdicts,
        &mut sink,
        &mut NoMeter,
    );
    if n != 2 {
        return 15;
    }
    0
}

// The C library supplies the process entry (__libc_start_main) and memcpy/memset, as a firmware
// SDK's runtime would; nothing of Rust's std or alloc is linked.
#[link(name = "c")]
unsafe extern "C" {}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    run()
}

#[cfg(not(feature = "panic-free"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(feature = "panic-free")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe extern "C" {
        /// Deliberately undefined: referencing it makes the link fail.
        fn knits_core_has_a_reachable_panic() -> !;
    }
    unsafe { knits_core_has_a_reachable_panic() }
}
