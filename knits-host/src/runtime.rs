//! The switch's event loop on TAP ports.
//!
//! One thread, one epoll set over the port fds (level-triggered). Each wake-up reads at most
//! [`BATCH`] frames from each ready port and moves on, so a busy port cannot starve the others;
//! a frame is processed in place in the read buffer and written to its egress port with the same
//! virtio-net header. Every [`POLL_INTERVAL`] the core's timers run; every 100 ms a [`Snapshot`]
//! is published for the stats server.
//!
//! The loop drives anything that implements [`Core`]: the knits-core switch (see
//! [`crate::switch`]) or [`Bridge`], a two-port wire used to test the host plumbing alone.
//!
//! Fault injection and capture sit at the link: frames read from a port pass its ingress
//! injector, then are recorded as "in" and processed; frames the core sends out are recorded as
//! "out", then pass the egress injector of their port. So the pcap holds exactly the core's
//! input and output, which the simulator can replay.
//!
//! # Shards (opt-in, [`ShardSet`])
//!
//! With N > 1 shards every port is a multi-queue TAP with one queue per shard, and each shard is
//! one such loop on a thread of its own with its own core (flow table, sessions, counters,
//! timers). A frame read by one shard may belong to another: [`steer`] names the owner from the
//! connection's ephemeral endpoint (docs/architecture.md, "Using both cores"), and frames for
//! another shard go through a bounded channel per shard pair (dropped and counted when full),
//! with an eventfd to wake the owner. Each shard writes to its own queue of the egress port.
//! ARP goes to shard 0, and a copy turned into a reply to every other shard, so that each
//! learns the neighbors without answering twice (and without counting or capturing the copy).
//! Capture is one writer behind a mutex; the snapshot is the sum of the shards', with each
//! shard's own figures beside it ([`Snapshot::shards`]).

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use knits_core::checksum;
use knits_core::config::{Config, PortId, PortRole};
use knits_core::spray::shard_of;
use knits_core::switch::BURST;
use knits_core::time::Instant;
use knits_core::wire::control;

use crate::faults::{FaultConfig, Injector};
use crate::pcap::{self, Direction};
use crate::stats::{PortStats, ShardSnapshot, Snapshot};
use crate::tap::{self, Tap};
use crate::vnet::{self, VnetHdr};

/// Frames read from one port before the loop looks at the others.
pub const BATCH: usize = 64;
/// How often the core's timers run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Table entries the core may examine per timer run.
pub const POLL_BUDGET: usize = 1024;
/// Longest frame the core generates.
pub const GENERATED_MAX: usize = 128;
/// Generated frames buffered between two drains.
pub const SINK_CAPACITY: usize = 64;

/// What the core decided for one frame (the host's view of the core's verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the (rewritten) frame on this port.
    Forward(PortId),
    /// The core consumed it (its replies, if any, are in the sink).
    Local,
    /// The core dropped it (and counted why).
    Drop,
}

/// Frames the core generates, kept until the loop writes them.
#[derive(Debug)]
pub struct FrameSink {
    frames: Vec<(PortId, usize, [u8; GENERATED_MAX])>,
}

impl Default for FrameSink {
    fn default() -> Self {
        FrameSink {
            frames: Vec::with_capacity(SINK_CAPACITY),
        }
    }
}

impl FrameSink {
    /// Queues a frame; false when full or longer than [`GENERATED_MAX`].
    pub fn push(&mut self, port: PortId, frame: &[u8]) -> bool {
        if self.frames.len() >= SINK_CAPACITY || frame.len() > GENERATED_MAX {
            return false;
        }
        let mut b = [0u8; GENERATED_MAX];
        b[..frame.len()].copy_from_slice(frame);
        self.frames.push((port, frame.len(), b));
        true
    }

    /// Frames queued.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// The packet logic the loop drives.
pub trait Core {
    /// Handles one frame received on `port`; may rewrite it in place and queue generated frames.
    fn process(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome;
    /// Handles a copy of a frame that another core handles and counts (a shard's copy of an ARP
    /// frame, turned into a reply so that it only teaches the neighbour): the core may learn
    /// from it, but its counters must not show it. The default counts it like any frame.
    fn teach(
        &mut self,
        port: PortId,
        now: Instant,
        frame: &mut [u8],
        csum: checksum::Kind,
        sink: &mut FrameSink,
    ) -> Outcome {
        self.process(port, now, frame, csum, sink)
    }
    /// Touches what handling `frame` will read (see `Switch::prefetch`), before a burst is
    /// handled frame by frame. The default does nothing.
    fn prefetch(&self, _frame: &[u8]) -> u32 {
        0
    }
    /// Runs timers.
    fn poll(&mut self, now: Instant, sink: &mut FrameSink);
    /// The link behind `port` went down (writes fail, or the device is gone) or came back.
    fn set_port_up(&mut self, _port: PortId, _up: bool, _sink: &mut FrameSink) {}
    /// Copies counters and occupancy into `snap` (ports and host figures are filled by the loop).
    fn snapshot(&self, snap: &mut Snapshot);
}

/// A two-port wire: every frame from port 0 goes out of port 1 and back. It tests TAPs, offloads,
/// faults and capture without the switch.
#[derive(Debug, Default)]
pub struct Bridge {
    /// Frames moved.
    pub frames: u64,
}

impl Core for Bridge {
    fn process(
        &mut self,
        port: PortId,
        _now: Instant,
        _frame: &mut [u8],
        _csum: checksum::Kind,
        _sink: &mut FrameSink,
    ) -> Outcome {
        self.frames += 1;
        match port {
            0 => Outcome::Forward(1),
            1 => Outcome::Forward(0),
            _ => Outcome::Drop,
        }
    }
    fn poll(&mut self, _now: Instant, _sink: &mut FrameSink) {}
    fn snapshot(&self, snap: &mut Snapshot) {
        snap.core.rx_frames[0] = self.frames;
    }
}

/// Options of the loop.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Fault injection on every port (both directions); `None` or all-zero rates: none.
    pub faults: Option<FaultConfig>,
    /// Write every frame in and out to this pcapng file.
    pub pcap: Option<PathBuf>,
}

struct Port {
    tap: Tap,
    /// The link is down (writes fail with EIO) or gone (the device was deleted).
    down: bool,
    /// The device is gone for good; its fd has left the epoll set.
    gone: bool,
    stats: PortStats,
    fault_in: Option<Injector>,
    fault_out: Option<Injector>,
}

/// A frame held back by the reorder fault.
struct Held {
    due: std::time::Instant,
    seq: u64,
    port: PortId,
    ingress: bool,
    data: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Earliest first in a max-heap.
        o.due.cmp(&self.due).then(o.seq.cmp(&self.seq))
    }
}

/// The running loop: ports, core, capture, held frames.
pub struct Runtime<C: Core> {
    core: C,
    ports: Vec<Port>,
    epoll: OwnedFd,
    pcap: Option<Capture>,
    held: BinaryHeap<Held>,
    held_seq: u64,
    sink: FrameSink,
    start: std::time::Instant,
    offloads: bool,
    buf: Vec<u8>,
    /// A burst of frames read from one port, with their lengths (see `read_port`).
    rx: Vec<(Vec<u8>, usize)>,
    dup: Vec<u8>,
    snapshot: Arc<Mutex<Snapshot>>,
    shard: Option<ShardCtx>,
}

type PcapWriter = pcap::Writer<BufWriter<File>>;

/// The capture: the loop's own writer, or one shared by the shards.
enum Capture {
    Own(PcapWriter),
    Shared(Arc<Mutex<PcapWriter>>),
}

impl Capture {
    fn write(&mut self, port: PortId, dir: Direction, frame: &[u8]) {
        match self {
            Capture::Own(w) => {
                let _ = w.write(port as u32, now_us(), dir, frame);
            }
            Capture::Shared(m) => {
                if let Ok(mut w) = m.lock() {
                    let _ = w.write(port as u32, now_us(), dir, frame);
                }
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Capture::Own(w) => w.flush(),
            Capture::Shared(m) => match m.lock() {
                Ok(mut w) => w.flush(),
                Err(_) => Ok(()),
            },
        }
    }

    fn frames(&self) -> u64 {
        match self {
            Capture::Own(w) => w.frames,
            Capture::Shared(m) => m.lock().map(|w| w.frames).unwrap_or(0),
        }
    }
}

fn open_capture(path: &std::path::Path, names: &[String]) -> io::Result<PcapWriter> {
    let f = File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("pcap file {}: {e}", path.display())))?;
    pcap::Writer::new(BufWriter::with_capacity(1 << 20, f), names)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl<C: Core> Runtime<C> {
    /// A loop over `taps` (port id = index) driving `core`.
    pub fn new(
        core: C,
        taps: Vec<Tap>,
        opts: &Options,
        snapshot: Arc<Mutex<Snapshot>>,
    ) -> io::Result<Runtime<C>> {
        let pcap = match &opts.pcap {
            Some(path) => {
                let names: Vec<String> = taps.iter().map(|t| t.name().to_string()).collect();
                Some(Capture::Own(open_capture(path, &names)?))
            }
            None => None,
        };
        Self::build(
            core,
            taps,
            opts,
            snapshot,
            pcap,
            None,
            std::time::Instant::now(),
        )
    }

    fn build(
        core: C,
        taps: Vec<Tap>,
        opts: &Options,
        snapshot: Arc<Mutex<Snapshot>>,
        pcap: Option<Capture>,
        shard: Option<ShardCtx>,
        start: std::time::Instant,
    ) -> io::Result<Runtime<C>> {
        // Fault streams: shard k uses its own (shard 0 the same as a single loop).
        let stream0 = shard.as_ref().map_or(0, |s| 2 * 64 * s.id as u64);
        // SAFETY: epoll_create1 returns a new fd or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let faults = opts.faults.filter(|f| f.active());
        if let Some(f) = &faults {
            f.validate()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let offloads = taps.first().is_some_and(|t| t.options().offloads);
        let mut ports = Vec::new();
        for (i, tap) in taps.into_iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: registering a valid fd with a valid event struct.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    tap.as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            ports.push(Port {
                stats: PortStats {
                    name: tap.name().to_string(),
                    ..Default::default()
                },
                fault_in: faults.map(|f| Injector::new(f, stream0 + 2 * i as u64)),
                fault_out: faults.map(|f| Injector::new(f, stream0 + 2 * i as u64 + 1)),
                tap,
                down: false,
                gone: false,
            });
        }
        if let Some(sh) = &shard {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: WAKE_TOKEN,
            };
            // SAFETY: registering a valid fd with a valid event struct.
            let r = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    sh.wakes[sh.id].as_raw_fd(),
                    &mut ev,
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Runtime {
            core,
            ports,
            epoll,
            pcap,
            held: BinaryHeap::new(),
            held_seq: 0,
            sink: FrameSink::default(),
            start,
            offloads,
            buf: vec![0; tap::BUF_LEN],
            rx: (0..BURST).map(|_| (vec![0; tap::BUF_LEN], 0)).collect(),
            dup: Vec::new(),
            snapshot,
            shard,
        })
    }

    /// The core.
    pub fn core(&self) -> &C {
        &self.core
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    /// Runs until `stop` is set; then flushes the capture and publishes a last snapshot.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 16];
        let mut next_poll = std::time::Instant::now();
        let mut next_snap = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let wall = std::time::Instant::now();
            let mut wake = next_poll;
            if let Some(h) = self.held.peek() {
                wake = wake.min(h.due);
            }
            let mut timeout = wake.saturating_duration_since(wall);
            if self.shard.as_ref().is_some_and(|s| !s.deferred.is_empty()) {
                timeout = Duration::ZERO;
            }
            let ms = timeout
                .as_micros()
                .div_ceil(1000)
                .min(POLL_INTERVAL.as_millis()) as i32;
            // SAFETY: events is a valid array of the given length.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    ms,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut woken = false;
            for ev in events.iter().take(n as usize) {
                if ev.u64 == WAKE_TOKEN {
                    woken = true;
                    continue;
                }
                let port = ev.u64 as usize;
                self.read_port(port);
            }
            if self.shard.is_some() {
                if woken {
                    self.drain_rings();
                }
                self.run_deferred();
                self.sync_links();
            }
            let wall = std::time::Instant::now();
            while self.held.peek().is_some_and(|h| h.due <= wall) {
                if let Some(h) = self.held.pop() {
                    self.release(h);
                }
            }
            if wall >= next_poll {
                let now = self.now();
                self.core.poll(now, &mut self.sink);
                self.drain_sink();
                next_poll = wall + POLL_INTERVAL;
            }
            if wall >= next_snap {
                self.publish();
                next_snap = wall + Duration::from_millis(100);
            }
            if let Some(sh) = &mut self.shard {
                sh.flush_wakes();
            }
        }
        // Frames still held back are delivered (a stop is not a fault).
        while let Some(h) = self.held.pop() {
            self.release(h);
        }
        if let Some(p) = &mut self.pcap {
            p.flush()?;
        }
        self.publish();
        Ok(())
    }

    /// Publishes a snapshot now (also done every 100 ms while running).
    pub fn publish(&self) {
        let mut s = Snapshot::default();
        self.core.snapshot(&mut s);
        s.ports = self
            .ports
            .iter()
            .map(|p| {
                let mut st = p.stats.clone();
                st.faults_in = p.fault_in.as_ref().map(|f| f.stats).unwrap_or_default();
                st.faults_out = p.fault_out.as_ref().map(|f| f.stats).unwrap_or_default();
                st
            })
            .collect();
        s.pcap_frames = self.pcap.as_ref().map(Capture::frames).unwrap_or(0);
        s.uptime_s = self.start.elapsed().as_secs_f64();
        s.offloads = self.offloads;
        match &self.shard {
            None => {
                if let Ok(mut g) = self.snapshot.lock() {
                    *g = s;
                }
            }
            Some(sh) => {
                if let Some(slot) = sh.slots.get(sh.id)
                    && let Ok(mut g) = slot.lock()
                {
                    *g = s;
                }
                // Sum every shard's latest into the shared snapshot, holding its lock so that
                // the last merge sees every shard's last publication.
                if let Ok(mut g) = self.snapshot.lock() {
                    let parts: Vec<(Snapshot, ShardCounts)> = sh
                        .slots
                        .iter()
                        .zip(sh.stats.iter())
                        .map(|(slot, st)| {
                            let part = slot.lock().map(|p| p.clone()).unwrap_or_default();
                            (part, st.counts())
                        })
                        .collect();
                    *g = merge_shards(&parts);
                }
            }
        }
    }

    /// Reads up to [`BATCH`] frames from a ready port, [`knits_core::switch::BURST`] at a time:
    /// a burst is read whole, the core touches the table slots of all its frames
    /// ([`Core::prefetch`], so their cache misses overlap), then each frame is handled and its
    /// output sent before the next, as one by one.
    fn read_port(&mut self, port: usize) {
        let mut read = 0;
        while read < BATCH {
            let mut got = 0;
            let mut more = true;
            while got < BURST && read < BATCH {
                let Some(p) = self.ports.get_mut(port) else {
                    return;
                };
                let Some(buf) = self.rx.get_mut(got) else {
                    break;
                };
                match p.tap.recv(&mut buf.0) {
                    Ok(Some(n)) => {
                        buf.1 = n;
                        got += 1;
                        read += 1;
                    }
                    Ok(None) => {
                        more = false;
                        break;
                    }
                    Err(e) => {
                        p.stats.rx_errors += 1;
                        if e.kind() != io::ErrorKind::Interrupted {
                            // The device is gone (EBADFD after its link was deleted): a
                            // level-triggered epoll would report it readable forever, so it
                            // leaves the set once what was read is handled.
                            self.handle_burst(port, got);
                            self.port_gone(port);
                            return;
                        }
                        more = false;
                        break;
                    }
                }
            }
            self.handle_burst(port, got);
            if !more || got == 0 {
                return;
            }
        }
    }

    /// Handles the first `got` frames of `self.rx`, read from `port`.
    fn handle_burst(&mut self, port: usize, got: usize) {
        let mut acc = 0u32;
        for (b, n) in self.rx.iter().take(got) {
            if let Some(f) = b.get(vnet::HDR_LEN..*n) {
                acc ^= self.core.prefetch(f);
            }
        }
        std::hint::black_box(acc);
        for i in 0..got {
            let Some(slot) = self.rx.get_mut(i) else {
                break;
            };
            let n = slot.1;
            std::mem::swap(&mut self.buf, &mut slot.0);
            self.rx_frame(port, n);
            if let Some(slot) = self.rx.get_mut(i) {
                std::mem::swap(&mut self.buf, &mut slot.0);
            }
        }
    }

    /// One frame of `n` bytes (virtio-net header included) read from `port` into `self.buf`.
    fn rx_frame(&mut self, port: usize, n: usize) {
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        if p.down {
            p.down = false;
            if let Some(sh) = &self.shard {
                sh.set_link(port, true);
            }
            self.core.set_port_up(port as PortId, true, &mut self.sink);
            self.drain_sink();
        }
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        let Some(mut hdr) = VnetHdr::parse(&self.buf[..n]) else {
            p.stats.rx_errors += 1;
            return;
        };
        p.stats.rx_frames += 1;
        p.stats.rx_bytes += (n - vnet::HDR_LEN) as u64;
        if hdr.is_gso() {
            p.stats.rx_gso += 1;
        }
        if let Some(inj) = &mut p.fault_in {
            let d = inj.decide();
            if d.drop {
                return;
            }
            if d.corrupt {
                let (h, f) = self.buf[..n].split_at_mut(vnet::HDR_LEN);
                if inj.corrupt(&mut hdr, f) {
                    hdr.emit(h);
                }
            }
            if let Some(delay) = d.delay {
                self.hold(port as PortId, true, delay, n);
                if d.duplicate {
                    self.hold(port as PortId, true, delay + Duration::from_micros(50), n);
                }
                return;
            }
            if d.duplicate {
                self.dup.clear();
                self.dup.extend_from_slice(&self.buf[..n]);
                let mut copy = std::mem::take(&mut self.dup);
                self.process(port as PortId, &mut copy);
                self.dup = copy;
            }
        }
        let mut buf = std::mem::take(&mut self.buf);
        self.process(port as PortId, &mut buf[..n]);
        self.buf = buf;
    }

    fn hold(&mut self, port: PortId, ingress: bool, delay: Duration, n: usize) {
        self.held_seq += 1;
        self.held.push(Held {
            due: std::time::Instant::now() + delay,
            seq: self.held_seq,
            port,
            ingress,
            data: self.buf[..n].to_vec(),
        });
    }

    fn release(&mut self, mut h: Held) {
        if h.ingress {
            self.process(h.port, &mut h.data);
        } else {
            self.write_raw(h.port, &h.data);
        }
    }

    /// Runs the core on one frame (`b` = virtio-net header + frame) and sends what comes out.
    /// A shard first hands frames of another shard over.
    fn process(&mut self, port: PortId, b: &mut [u8]) {
        let mut copy = false;
        if let Some(sh) = &mut self.shard {
            let Some(frame) = b.get(vnet::HDR_LEN..) else {
                return;
            };
            match steer(&sh.config, port, frame, sh.shards() as u32) {
                Steer::Shard(s) | Steer::Control(s) if s as usize != sh.id => {
                    sh.hand_over(s as usize, port, b.to_vec());
                    return;
                }
                Steer::Shard(_) => {}
                Steer::Control(_) => {
                    // After what is queued before it (see `run_deferred`).
                    sh.deferred.push((port, b.to_vec()));
                    return;
                }
                Steer::Arp => {
                    let me = sh.id;
                    for s in (0..sh.shards()).filter(|&s| s != me) {
                        let mut copy = b.to_vec();
                        if s != 0 {
                            arp_as_reply(&mut copy[vnet::HDR_LEN..]);
                        }
                        sh.hand_over(s, port, copy);
                    }
                    if sh.id != 0 {
                        arp_as_reply(&mut b[vnet::HDR_LEN..]);
                        copy = true;
                    }
                }
            }
        }
        self.process_here(port, b, copy);
    }

    /// Runs this loop's core on one frame. A `copy` (an ARP copy of a shard other than 0, see
    /// [`is_arp_copy`]) is neither captured nor counted: shard 0 does both for the original.
    fn process_here(&mut self, port: PortId, b: &mut [u8], copy: bool) {
        let Some(hdr) = VnetHdr::parse(b) else { return };
        if let Some(sh) = &self.shard
            && !copy
        {
            sh.stats[sh.id].processed.fetch_add(1, Ordering::Relaxed);
        }
        if !copy && let Some(w) = &mut self.pcap {
            w.write(port, Direction::In, &b[vnet::HDR_LEN..]);
        }
        let now = self.now();
        let (frame, csum, sink) = (&mut b[vnet::HDR_LEN..], hdr.csum_kind(), &mut self.sink);
        let outcome = if copy {
            self.core.teach(port, now, frame, csum, sink)
        } else {
            self.core.process(port, now, frame, csum, sink)
        };
        if let Outcome::Forward(out) = outcome {
            self.send(out, b);
        }
        self.drain_sink();
    }

    fn drain_sink(&mut self) {
        if self.sink.is_empty() {
            return;
        }
        let frames = std::mem::take(&mut self.sink.frames);
        let mut b = [0u8; vnet::HDR_LEN + GENERATED_MAX];
        for (port, len, f) in &frames {
            b[vnet::HDR_LEN..vnet::HDR_LEN + len].copy_from_slice(&f[..*len]);
            self.send(*port, &mut b[..vnet::HDR_LEN + len]);
        }
        let mut frames = frames;
        frames.clear();
        self.sink.frames = frames;
    }

    /// Records and sends `b` (header + frame) on `port`, through its egress injector.
    fn send(&mut self, port: PortId, b: &mut [u8]) {
        if let Some(w) = &mut self.pcap {
            w.write(port, Direction::Out, &b[vnet::HDR_LEN..]);
        }
        let Some(p) = self.ports.get_mut(port as usize) else {
            return;
        };
        if let Some(inj) = &mut p.fault_out {
            let d = inj.decide();
            if d.drop {
                return;
            }
            if d.corrupt
                && let Some(mut hdr) = VnetHdr::parse(b)
            {
                let (h, f) = b.split_at_mut(vnet::HDR_LEN);
                if inj.corrupt(&mut hdr, f) {
                    hdr.emit(h);
                }
            }
            if let Some(delay) = d.delay {
                let data = b.to_vec();
                self.held_seq += 1;
                let due = std::time::Instant::now() + delay;
                if d.duplicate {
                    self.held.push(Held {
                        due,
                        seq: self.held_seq,
                        port,
                        ingress: false,
                        data: data.clone(),
                    });
                    self.held_seq += 1;
                }
                self.held.push(Held {
                    due,
                    seq: self.held_seq,
                    port,
                    ingress: false,
                    data,
                });
                return;
            }
            if d.duplicate {
                self.write_raw(port, b);
            }
        }
        self.write_raw(port, b);
    }

    fn write_raw(&mut self, port: PortId, b: &[u8]) {
        let Some(p) = self.ports.get_mut(port as usize) else {
            return;
        };
        match p.tap.send(b) {
            Ok(()) => {
                if is_tcp_rst(&b[vnet::HDR_LEN..]) {
                    p.stats.tx_rst += 1;
                }
                p.stats.tx_frames += 1;
                p.stats.tx_bytes += (b.len() - vnet::HDR_LEN) as u64;
            }
            Err(e) => {
                p.stats.tx_errors += 1;
                // EIO: the link is down. The switch resets the clients served behind it once;
                // the first frame read from the port again brings it back.
                if e.raw_os_error() == Some(libc::EIO) && !p.down {
                    p.down = true;
                    if let Some(sh) = &self.shard {
                        sh.set_link(port as usize, false);
                    }
                    self.core.set_port_up(port, false, &mut self.sink);
                    self.drain_sink();
                }
            }
        }
    }

    /// Shards: processes what the other shards handed over (the wake-up is reset first, so a
    /// frame handed over after the drain wakes the loop again).
    fn drain_rings(&mut self) {
        let Some(sh) = &mut self.shard else { return };
        let mut v = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid buffer from an eventfd we hold.
        unsafe {
            libc::read(sh.wakes[sh.id].as_raw_fd(), v.as_mut_ptr().cast(), 8);
        }
        let mut frames = Vec::new();
        let mut more = false;
        for rx in sh.rx.iter().flatten() {
            for _ in 0..RING_DRAIN {
                match rx.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            more |= frames.len() >= RING_DRAIN;
        }
        if more {
            // Not all taken: come back after the ports had their turn.
            sh.pending_wake[sh.id] = true;
        }
        for (port, mut data) in frames {
            let mut copy = false;
            if let Some(sh) = &mut self.shard
                && let Some(f) = data.get(vnet::HDR_LEN..)
            {
                let st = steer(&sh.config, port, f, sh.shards() as u32);
                if matches!(st, Steer::Control(_)) {
                    sh.deferred.push((port, data));
                    continue;
                }
                copy = is_arp_copy(sh.id, st);
            }
            self.process_here(port, &mut data, copy);
        }
    }

    /// Shards: processes the hand-off requests of this shard, after whatever this shard's queue
    /// of their port and the rings hold now. A request must not overtake the new leg's
    /// handshake ACK, which the node sent before it but which may sit in this shard's queue or
    /// come from another shard (the proxy retries when it still does, see knits-proxy).
    fn run_deferred(&mut self) {
        let Some(sh) = &mut self.shard else { return };
        if sh.deferred.is_empty() {
            return;
        }
        let reqs = std::mem::take(&mut sh.deferred);
        let mut ports: Vec<PortId> = reqs.iter().map(|r| r.0).collect();
        ports.dedup();
        for p in ports {
            self.read_port(p as usize);
        }
        self.drain_rings();
        // Requests read just now wait for the next round.
        for (port, mut data) in reqs {
            self.process_here(port, &mut data, false);
        }
    }

    /// Shards: follows link changes another shard saw.
    fn sync_links(&mut self) {
        let Some(sh) = &self.shard else { return };
        let mut changed = Vec::new();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let down = sh
                .links
                .get(i)
                .is_some_and(|l| l.load(Ordering::Relaxed) != 0);
            if down != p.down && !p.gone {
                p.down = down;
                changed.push((i as PortId, !down));
            }
        }
        for (port, up) in changed {
            self.core.set_port_up(port, up, &mut self.sink);
            self.drain_sink();
        }
    }

    /// Takes a port whose device has gone out of the epoll set and tells the switch.
    fn port_gone(&mut self, port: usize) {
        let Some(p) = self.ports.get_mut(port) else {
            return;
        };
        if p.gone {
            return;
        }
        p.gone = true;
        p.down = true;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both fds are valid; EPOLL_CTL_DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                p.tap.as_raw_fd(),
                &mut ev,
            );
        }
        self.core.set_port_up(port as PortId, false, &mut self.sink);
        self.drain_sink();
    }
}

/// Most shards.
pub const MAX_SHARDS: usize = 4;
/// Frames one shard may have queued for another (each holds up to 64 KiB only while queued).
pub const RING: usize = 1024;
/// Frames taken from one ring per wake-up.
const RING_DRAIN: usize = 256;
/// The epoll token of a shard's wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;

/// Which shard owns a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steer {
    /// This shard's core handles it.
    Shard(u32),
    /// A hand-off request, for this shard.
    Control(u32),
    /// ARP: shard 0 answers; the others learn from a copy.
    Arp,
}

/// The owner shard of `frame` received on `port` (docs/architecture.md, "Using both cores").
/// TCP: the client's endpoint for traffic of the VIP (the source on the client port, the
/// destination when a node sends to the client side), the endpoint with the higher port (the
/// initiator's ephemeral one; ties: the higher address) between nodes. A hand-off request: the
/// held connection's peer it names, which is that connection's key. ARP: [`Steer::Arp`].
/// Everything else: shard 0.
pub fn steer(cfg: &Config, port: PortId, frame: &[u8], shards: u32) -> Steer {
    let zero = Steer::Shard(0);
    if shards <= 1 || frame.len() < 14 {
        return zero;
    }
    match [frame[12], frame[13]] {
        [0x08, 0x06] => return Steer::Arp,
        [0x08, 0x00] => {}
        _ => return zero,
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return zero;
    }
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let Some(l4) = ip.get(ihl..).filter(|_| ihl >= 20) else {
        return zero;
    };
    // Fragments (the core drops them) carry no ports after the first.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || l4.len() < 4 {
        return zero;
    }
    let src = [ip[12], ip[13], ip[14], ip[15]];
    let dst = [ip[16], ip[17], ip[18], ip[19]];
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let role = |p: Option<PortId>| p.and_then(|p| cfg.ports.get(p as usize)).map(|pc| pc.role);
    let from_client = role(Some(port)) == Some(PortRole::Client);
    match ip[9] {
        6 => {
            let (addr, p) = if from_client {
                (src, sport)
            } else if role(cfg.route(dst.into())) == Some(PortRole::Client) {
                (dst, dport)
            } else if (sport, src) > (dport, dst) {
                (src, sport)
            } else {
                (dst, dport)
            };
            Steer::Shard(shard_of(addr, p, shards))
        }
        17 if !from_client && dport == cfg.control_port => {
            match l4.get(8..).map(control::Request::new_checked) {
                Some(Ok(r)) => {
                    let e = r.held_peer();
                    Steer::Control(shard_of(e.addr, e.port, shards))
                }
                _ => zero,
            }
        }
        _ => zero,
    }
}

/// True when shard `id` handles a frame steered `st` as a copy: every ARP frame goes to shard 0,
/// which answers, captures and counts it, and a copy to every other shard, which only learns
/// from it. So a malformed ARP frame is one drop, not one per shard.
fn is_arp_copy(id: usize, st: Steer) -> bool {
    id != 0 && st == Steer::Arp
}

/// Turns an ARP request into a reply in place, so a shard that gets a copy learns the sender
/// without answering (shard 0 answers).
fn arp_as_reply(frame: &mut [u8]) {
    if let Some(op) = frame.get_mut(20..22) {
        op.copy_from_slice(&[0, 2]);
    }
}

/// The switch's snapshot from every shard's own (by shard id) and its loop's frame counts:
/// the sum of the shards, with each shard's figures in [`Snapshot::shards`].
fn merge_shards(parts: &[(Snapshot, ShardCounts)]) -> Snapshot {
    let mut sum = Snapshot::default();
    for (part, _) in parts {
        sum += part;
    }
    if let Some((first, _)) = parts.first() {
        sum.pcap_frames = first.pcap_frames;
        sum.offloads = first.offloads;
        sum.services = first.services.clone();
    }
    sum.shards = parts
        .iter()
        .map(|(part, n)| ShardSnapshot::of(part, n.processed, n.handed_over, n.ring_full))
        .collect();
    sum
}

/// Figures of one shard, readable while it runs.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Frames this shard's core was given (its own and handed-over ones).
    pub processed: AtomicU64,
    /// Frames handed to another shard.
    pub handed_over: AtomicU64,
    /// Frames dropped because the other shard's ring was full.
    pub ring_full: AtomicU64,
}

/// A copy of [`ShardStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounts {
    /// Frames this shard's core was given.
    pub processed: u64,
    /// Frames handed to another shard.
    pub handed_over: u64,
    /// Frames dropped because a ring was full.
    pub ring_full: u64,
}

impl ShardStats {
    /// The figures now.
    pub fn counts(&self) -> ShardCounts {
        ShardCounts {
            processed: self.processed.load(Ordering::Relaxed),
            handed_over: self.handed_over.load(Ordering::Relaxed),
            ring_full: self.ring_full.load(Ordering::Relaxed),
        }
    }
}

type Moved = (PortId, Vec<u8>);

/// A shard's view of the others.
struct ShardCtx {
    id: usize,
    config: Arc<Config>,
    /// To shard i (`None` for this one).
    tx: Vec<Option<SyncSender<Moved>>>,
    /// From shard i (`None` for this one).
    rx: Vec<Option<Receiver<Moved>>>,
    /// Every shard's wake-up eventfd.
    wakes: Arc<Vec<OwnedFd>>,
    pending_wake: Vec<bool>,
    /// Hand-off requests waiting for the end of the round.
    deferred: Vec<Moved>,
    stats: Arc<Vec<ShardStats>>,
    /// Per port: 1 when a shard found the link down.
    links: Arc<Vec<AtomicU8>>,
    /// Every shard's latest snapshot.
    slots: Arc<Vec<Mutex<Snapshot>>>,
}

impl ShardCtx {
    fn shards(&self) -> usize {
        self.tx.len()
    }

    fn hand_over(&mut self, to: usize, port: PortId, data: Vec<u8>) {
        let st = &self.stats[self.id];
        match self.tx.get(to).and_then(Option::as_ref) {
            Some(tx) => match tx.try_send((port, data)) {
                Ok(()) => {
                    st.handed_over.fetch_add(1, Ordering::Relaxed);
                    self.pending_wake[to] = true;
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    st.ring_full.fetch_add(1, Ordering::Relaxed);
                }
            },
            None => {
                st.ring_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush_wakes(&mut self) {
        for (i, w) in self.pending_wake.iter_mut().enumerate() {
            if *w {
                *w = false;
                let one = 1u64.to_ne_bytes();
                // SAFETY: writing 8 bytes from a valid buffer to an eventfd we hold.
                unsafe {
                    libc::write(self.wakes[i].as_raw_fd(), one.as_ptr().cast(), 8);
                }
            }
        }
    }

    fn set_link(&self, port: usize, up: bool) {
        if let Some(l) = self.links.get(port) {
            l.store(u8::from(!up), Ordering::Relaxed);
        }
    }
}

/// N shards, each a loop on its own thread (module docs).
pub struct ShardSet {
    threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
    stats: Arc<Vec<ShardStats>>,
}

impl std::fmt::Debug for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSet")
            .field("shards", &self.threads.len())
            .finish()
    }
}

impl ShardSet {
    /// Starts one loop per core: `queues[k]` are shard k's queues of every port (port id =
    /// index), `config` is the switch configuration the steering follows. Runs until `stop`.
    pub fn start<C: Core + Send + 'static>(
        cores: Vec<C>,
        queues: Vec<Vec<Tap>>,
        config: Config,
        opts: &Options,
        snapshot: Arc<Mutex<Snapshot>>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<ShardSet> {
        let n = cores.len();
        if n == 0 || n > MAX_SHARDS || queues.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shards must be 1..={MAX_SHARDS}, with one queue set each"),
            ));
        }
        let ports = queues[0].len();
        let mut wakes = Vec::new();
        for _ in 0..n {
            // SAFETY: eventfd returns a new fd or -1.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh, owned descriptor.
            wakes.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let wakes = Arc::new(wakes);
        let mut tx: Vec<Vec<Option<SyncSender<Moved>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        let mut rx: Vec<Vec<Option<Receiver<Moved>>>> =
            (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                let (t, r) = std::sync::mpsc::sync_channel(RING);
                tx[from][to] = Some(t);
                rx[to][from] = Some(r);
            }
        }
        let stats: Arc<Vec<ShardStats>> = Arc::new((0..n).map(|_| ShardStats::default()).collect());
        let links: Arc<Vec<AtomicU8>> = Arc::new((0..ports).map(|_| AtomicU8::new(0)).collect());
        let slots: Arc<Vec<Mutex<Snapshot>>> =
            Arc::new((0..n).map(|_| Mutex::new(Snapshot::default())).collect());
        let pcap = match &opts.pcap {
            Some(path) => {
                let names: Vec<String> = queues[0].iter().map(|t| t.name().to_string()).collect();
                Some(Arc::new(Mutex::new(open_capture(path, &names)?)))
            }
            None => None,
        };
        let config = Arc::new(config);
        let start = std::time::Instant::now();
        let mut runtimes = Vec::new();
        for (id, ((core, taps), (tx, rx))) in cores
            .into_iter()
            .zip(queues)
            .zip(tx.into_iter().zip(rx))
            .enumerate()
        {
            let ctx = ShardCtx {
                id,
                config: config.clone(),
                tx,
                rx,
                wakes: wakes.clone(),
                pending_wake: vec![false; n],
                deferred: Vec::new(),
                stats: stats.clone(),
                links: links.clone(),
                slots: slots.clone(),
            };
            runtimes.push(Runtime::build(
                core,
                taps,
                opts,
                snapshot.clone(),
                pcap.clone().map(Capture::Shared),
                Some(ctx),
                start,
            )?);
        }
        let mut threads = Vec::new();
        for (id, mut rt) in runtimes.into_iter().enumerate() {
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("knits-shard{id}"))
                .spawn(move || rt.run(&stop))?;
            threads.push(t);
        }
        Ok(ShardSet { threads, stats })
    }

    /// Every shard's figures.
    pub fn stats(&self) -> Arc<Vec<ShardStats>> {
        self.stats.clone()
    }

    /// Waits for every shard to stop (after `stop` was set); the first error wins.
    pub fn join(self) -> io::Result<()> {
        let mut r = Ok(());
        for t in self.threads {
            let e = match t.join() {
                Ok(x) => x,
                Err(_) => Err(io::Error::other("a shard thread panicked")),
            };
            if r.is_ok() {
                r = e;
            }
        }
        r
    }
}

/// True for an Ethernet/IPv4/TCP frame with the RST flag.
pub fn is_tcp_rst(f: &[u8]) -> bool {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 6 {
        return false;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    f.get(14 + ihl + 13).is_some_and(|flags| flags & 0x04 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_is_bounded() {
        let mut s = FrameSink::default();
        assert!(!s.push(0, &[0; GENERATED_MAX + 1]));
        for _ in 0..SINK_CAPACITY {
            assert!(s.push(1, &[1; 60]));
        }
        assert!(!s.push(1, &[1; 60]));
        assert_eq!(s.len(), SINK_CAPACITY);
    }

    #[test]
    fn held_frames_come_out_earliest_first() {
        let t = std::time::Instant::now();
        let mut h = BinaryHeap::new();
        for (i, ms) in [5u64, 1, 3].iter().enumerate() {
            h.push(Held {
                due: t + Duration::from_millis(*ms),
                seq: i as u64,
                port: 0,
                ingress: true,
                data: vec![],
            });
        }
        let order: Vec<u64> = std::iter::from_fn(|| h.pop().map(|x| x.seq)).collect();
        assert_eq!(order, vec![1, 2, 0]);
    }
    /// An Ethernet/IPv4 frame with `proto` and the first bytes of its payload.
    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f.extend_from_slice(l4);
        f
    }

    fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[..2].copy_from_slice(&src.1.to_be_bytes());
        l4[2..4].copy_from_slice(&dst.1.to_be_bytes());
        ipv4(src.0, dst.0, 6, &l4)
    }

    #[test]
    fn steering_keeps_a_connection_and_its_splice_in_one_shard() {
        let cfg = Config::cluster(3, [0; 16]);
        let client = ([198, 18, 0, 2], 40_001);
        let vip = ([198, 18, 0, 10], 80);
        let n1 = ([198, 19, 1, 2], 80);
        let n2 = ([198, 19, 2, 2], 80);
        for shards in 2..=4u32 {
            let want = Steer::Shard(shard_of(client.0, client.1, shards));
            // VIP traffic: from the client, to the node (NAT'ed), back from the node.
            assert_eq!(steer(&cfg, 0, &tcp(client, vip), shards), want);
            assert_eq!(steer(&cfg, 1, &tcp(n1, client), shards), want);
            // The old node's new leg from a port in the client's shard, both directions.
            let port = (32768..)
                .find(|&p| shard_of(n1.0, p, shards) == shard_of(client.0, client.1, shards))
                .unwrap();
            let leg = ([198, 19, 1, 2], port);
            assert_eq!(steer(&cfg, 1, &tcp(leg, n2), shards), want);
            assert_eq!(steer(&cfg, 2, &tcp(n2, leg), shards), want);
            // The hand-off request names the held connection's peer: the client.
            let repr = control::RequestRepr {
                key_id: 1,
                counter: 7,
                held_peer: control::Endpoint::new(client.0, client.1),
                held_local: control::Endpoint::new(n1.0, 80),
                new_local: control::Endpoint::new(leg.0, leg.1),
                new_remote: control::Endpoint::new(n2.0, 80),
                consumed: 0,
                sent: 0,
            };
            let mut udp = vec![0u8; 8 + control::REQUEST_LEN];
            udp[2..4].copy_from_slice(&control::DEFAULT_PORT.to_be_bytes());
            repr.emit(&mut udp[8..], &[0; 16]).unwrap();
            let req = ipv4(n1.0, [198, 19, 1, 1], 17, &udp);
            assert_eq!(
                steer(&cfg, 1, &req, shards),
                Steer::Control(shard_of(client.0, client.1, shards))
            );
            // ARP everywhere, anything else to shard 0.
            let mut arp = vec![0u8; 42];
            arp[12..14].copy_from_slice(&[0x08, 0x06]);
            assert_eq!(steer(&cfg, 2, &arp, shards), Steer::Arp);
            assert_eq!(
                steer(&cfg, 1, &ipv4(n1.0, n2.0, 1, &[0; 8]), shards),
                Steer::Shard(0)
            );
            assert_eq!(steer(&cfg, 0, &[0u8; 10], shards), Steer::Shard(0));
        }
        // One shard: everything is shard 0.
        assert_eq!(steer(&cfg, 0, &tcp(client, vip), 1), Steer::Shard(0));
    }

    #[test]
    fn arp_copies_only_teach() {
        let mut f = vec![0u8; 42];
        f[20..22].copy_from_slice(&[0, 1]);
        arp_as_reply(&mut f);
        assert_eq!(&f[20..22], &[0, 2]);
        // Shard 0 handles and counts ARP; the others only learn from their copies.
        assert!(!is_arp_copy(0, Steer::Arp));
        assert!(is_arp_copy(1, Steer::Arp));
        assert!(!is_arp_copy(1, Steer::Shard(1)));
    }

    #[test]
    fn shard_snapshots_add_up() {
        let mut a = Snapshot::default();
        a.core.rx_frames[1] = 3;
        a.core.handoffs_completed = 2;
        a.flows = 5;
        a.flow_capacity = 8;
        a.ports = vec![PortStats {
            name: "p0".into(),
            rx_frames: 4,
            ..Default::default()
        }];
        let mut sum = Snapshot::default();
        sum += &a;
        sum += &a;
        assert_eq!(sum.core.rx_frames[1], 6);
        assert_eq!(sum.core.handoffs_completed, 4);
        assert_eq!((sum.flows, sum.flow_capacity), (10, 16));
        assert_eq!(sum.ports[0].name, "p0");
        assert_eq!(sum.ports[0].rx_frames, 8);
    }

    /// The switch's snapshot is the sum of the shards', and each shard's own figures (table,
    /// drops by reason, its loop's frame counts) are kept beside it, in shard order.
    #[test]
    fn merged_snapshot_keeps_each_shard() {
        use knits_core::counters::DropReason;
        let part = |flows: usize, drops: u64| {
            let mut s = Snapshot {
                flows,
                flow_capacity: 8192,
                sessions: flows / 2,
                session_capacity: 2048,
                ..Default::default()
            };
            s.core.drops[DropReason::TcpBadChecksum.index()] = drops;
            s.core.drops[DropReason::OutOfWindow.index()] = 1;
            s
        };
        let counts = |processed, handed_over, ring_full| ShardCounts {
            processed,
            handed_over,
            ring_full,
        };
        let sum = merge_shards(&[
            (part(6, 3), counts(100, 7, 0)),
            (part(4, 5), counts(90, 11, 2)),
        ]);
        assert_eq!((sum.flows, sum.flow_capacity), (10, 16384));
        assert_eq!(sum.sessions, 5);
        assert_eq!(sum.core.drop_count(DropReason::TcpBadChecksum), 8);
        assert_eq!(sum.shards.len(), 2);
        let (a, b) = (&sum.shards[0], &sum.shards[1]);
        assert_eq!(
            (a.processed, a.handed_over, a.lost, a.flows, a.sessions),
            (100, 7, 0, 6, 3)
        );
        assert_eq!(
            (b.processed, b.handed_over, b.lost, b.flows, b.sessions),
            (90, 11, 2, 4, 2)
        );
        assert_eq!((a.flow_capacity, b.session_capacity), (8192, 2048));
        assert_eq!(
            (a.total_drops(), b.total_drops()),
            (4, 6),
            "each shard's own drops"
        );
        assert_eq!(a.total_drops() + b.total_drops(), sum.core.total_drops());
        assert_eq!(b.drops[DropReason::TcpBadChecksum.index()], 5);
    }
}
