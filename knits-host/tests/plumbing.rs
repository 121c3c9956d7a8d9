//! The host plumbing without the switch: two namespaces joined by two TAPs and the event loop
//! running a plain two-port wire ([`Bridge`]). Real Linux TCP moves 8 MiB across, every byte
//! checked, with offloads on (TSO frames cross in one read/write) and off.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knits_host::bridge::Bridge;
use knits_host::faults::FaultConfig;
use knits_host::netns::{self, Guard};
use knits_host::runtime::{Options, Runtime};
use knits_host::stats::Snapshot;
use knits_host::tap::TapOptions;
use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng, SeedableRng};

const LEN: usize = 8 << 20;

fn pattern(buf: &mut [u8], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        let mut s = SplitMix64::seed_from_u64(((offset + i) / 8) as u64);
        *b = s.next_u64().to_le_bytes()[(offset + i) % 8];
    }
}

fn transfer(offloads: bool, faults: Option<FaultConfig>) -> Snapshot {
    let mut g = Guard::new(&netns::unique_prefix("tp")).unwrap();
    let a = g.add_namespace("a").unwrap();
    let b = g.add_namespace("b").unwrap();
    let opts = TapOptions {
        offloads,
        multi_queue: false,
    };
    let ta = g.attach_tap(&a, &a, "198.18.77.1/24", None, opts).unwrap();
    let tb = g.attach_tap(&b, &b, "198.18.77.2/24", None, opts).unwrap();
    let snap = Arc::new(Mutex::new(Snapshot::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rt = Runtime::new(
        Bridge::default(),
        vec![ta, tb],
        &Options { faults, pcap: None },
        snap.clone(),
    )
    .unwrap();
    let st = stop.clone();
    let sw = std::thread::spawn(move || rt.run(&st).map(|_| rt.publish()));

    let (tx, rx) = std::sync::mpsc::channel();
    let bn = b.clone();
    let server = std::thread::spawn(move || {
        netns::enter(&bn).unwrap();
        let l = TcpListener::bind("198.18.77.2:5000").unwrap();
        tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut off = 0;
        while off < LEN {
            let n = buf.len().min(LEN - off);
            pattern(&mut buf[..n], off);
            c.write_all(&buf[..n]).unwrap();
            off += n;
        }
    });
    rx.recv().unwrap();
    let an = a.clone();
    let client = std::thread::spawn(move || {
        netns::enter(&an).unwrap();
        let mut c = TcpStream::connect_timeout(
            &"198.18.77.2:5000".parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 256 * 1024];
        let mut want = vec![0u8; 256 * 1024];
        loop {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            pattern(&mut want[..n], got);
            assert_eq!(&buf[..n], &want[..n], "byte mismatch near offset {got}");
            got += n;
        }
        got
    });
    let got = client.join().unwrap();
    server.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    sw.join().unwrap().unwrap();
    assert_eq!(got, LEN);
    snap.lock().unwrap().clone()
}

#[test]
fn tcp_over_taps_offloads_on() {
    if !common::root_or_skip("tcp_over_taps_offloads_on") {
        return;
    }
    let s = transfer(true, None);
    assert!(
        s.ports[1].rx_gso > 0,
        "offloads on but no TSO frame crossed: {:?}",
        s.ports[1]
    );
}

#[test]
fn tcp_over_taps_offloads_off() {
    if !common::root_or_skip("tcp_over_taps_offloads_off") {
        return;
    }
    let s = transfer(false, None);
    assert_eq!(s.ports[1].rx_gso, 0);
    assert!(s.ports[1].rx_bytes / s.ports[1].rx_frames.max(1) <= 1514);
}

/// Loss, reordering, duplication and corruption on both TAPs: TCP recovers and every byte is
/// right (corrupted frames are dropped by the receivers' checksums, never delivered).
#[test]
fn tcp_over_taps_with_faults() {
    if !common::root_or_skip("tcp_over_taps_with_faults") {
        return;
    }
    let f = FaultConfig {
        loss: 0.01,
        reorder: 0.05,
        duplicate: 0.01,
        corrupt: 0.01,
        seed: 7,
        ..FaultConfig::default()
    };
    for offloads in [true, false] {
        let s = transfer(offloads, Some(f));
        let corrupted: u64 = s
            .ports
            .iter()
            .map(|p| p.faults_in.corrupted + p.faults_out.corrupted)
            .sum();
        assert!(corrupted > 0, "no corruption was injected: {s:?}");
    }
}
