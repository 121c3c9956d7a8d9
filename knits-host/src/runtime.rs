//! The switch's event loop on TAP ports.
//!
//! One thread, one epoll set over the port fds (level-triggered). Each wake-up reads at most
//! [`BATCH`] frames from each ready port and moves on, so a busy port cannot starve the others;
//! a frame is processed in place in the read buffer and written to its egress port with the same
//! virtio-net header. Every [`POLL_INTERVAL`] the core's timers run; every 100 ms a [`Snapshot`]
//! is published for the stats server.
//!
//! The loop drives anything that implements [`Core`] ([`crate::datapath`]): the knits-core switch
//! ([`crate::switch`]) or [`crate::bridge::Bridge`].
//!
//! Fault injection and capture sit at the link: frames read from a port pass its ingress
//! injector, then are recorded as "in" and processed; frames the core sends out are recorded as
//! "out", then pass the egress injector of their port. So the pcap holds exactly the core's
//! input and output, which the simulator can replay. Frames the delay fault holds back wait in
//! [`crate::held`]; the capture is [`crate::capture`].
//!
//! One loop runs the whole switch, or one of N shards ([`crate::shard_set`]): then it also
//! takes frames from, and hands frames to, the other shards through its `ShardCtx`
//! ([`crate::shard`]), and defers hand-off requests to the end of each round.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knits_core::config::PortId;
use knits_core::switch::BURST;
use knits_core::time::Instant;

use crate::capture::{self, Capture};
use crate::datapath::{Core, FrameSink, GENERATED_MAX, Outcome};
use crate::faults::{FaultConfig, Injector};
use crate::held::{Held, HeldFrames};
use crate::pcap::Direction;
use crate::shard::ShardCtx;
use crate::stats::{PortStats, Snapshot};
use crate::tap::{self, Tap};
use crate::vnet::{self, VnetHdr};

/// Frames read from one port before the loop looks at the others.
pub const BATCH: usize = 64;
/// How often the core's timers run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The epoll token of a shard's wake-up eventfd.
const WAKE_TOKEN: u64 = u64::MAX;

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

/// The running loop: ports, core, capture, held frames.
pub struct Runtime<C: Core> {
    core: C,
    ports: Vec<Port>,
    epoll: OwnedFd,
    pcap: Option<Capture>,
    held: HeldFrames,
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
                Some(Capture::Own(capture::open(path, &names)?))
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

    /// The loop; with `shard`, one of a [`crate::shard_set::ShardSet`].
    pub(crate) fn build(
        core: C,
        taps: Vec<Tap>,
        opts: &Options,
        snapshot: Arc<Mutex<Snapshot>>,
        pcap: Option<Capture>,
        shard: Option<ShardCtx>,
        start: std::time::Instant,
    ) -> io::Result<Runtime<C>> {
        // Fault streams: shard k uses its own (shard 0 the same as a single loop).
        let stream0 = shard.as_ref().map_or(0, |s| 2 * 64 * s.id() as u64);
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
                    sh.wake_fd().as_raw_fd(),
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
            held: HeldFrames::default(),
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
            if let Some(due) = self.held.next_due() {
                wake = wake.min(due);
            }
            let mut timeout = wake.saturating_duration_since(wall);
            if self.shard.as_ref().is_some_and(ShardCtx::has_deferred) {
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
            while let Some(h) = self.held.pop_due(wall) {
                self.release(h);
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
            Some(sh) => sh.publish(s, &self.snapshot),
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
        let due = std::time::Instant::now() + delay;
        self.held.hold(due, port, ingress, self.buf[..n].to_vec());
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
        let copy = match &mut self.shard {
            Some(sh) => match sh.take(port, b) {
                Some(copy) => copy,
                None => return,
            },
            None => false,
        };
        self.process_here(port, b, copy);
    }

    /// Runs this loop's core on one frame. A `copy` (an ARP copy of a shard other than 0, see
    /// [`crate::steer::is_arp_copy`]) is neither captured nor counted: shard 0 does both for the
    /// original.
    fn process_here(&mut self, port: PortId, b: &mut [u8], copy: bool) {
        let Some(hdr) = VnetHdr::parse(b) else { return };
        if let Some(sh) = &self.shard
            && !copy
        {
            sh.count_processed();
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
                let due = std::time::Instant::now() + delay;
                if d.duplicate {
                    self.held.hold(due, port, false, data.clone());
                }
                self.held.hold(due, port, false, data);
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

    /// Shards: processes what the other shards handed over ([`ShardCtx::receive`]).
    fn drain_rings(&mut self) {
        let Some(sh) = &mut self.shard else { return };
        for (port, mut data, copy) in sh.receive() {
            self.process_here(port, &mut data, copy);
        }
    }

    /// Shards: processes the hand-off requests of this shard, after whatever this shard's queue
    /// of their port and the rings hold now. A request must not overtake the new leg's
    /// handshake ACK, which the node sent before it but which may sit in this shard's queue or
    /// come from another shard (the proxy retries when it still does, see knits-proxy).
    fn run_deferred(&mut self) {
        let Some(sh) = &mut self.shard else { return };
        if !sh.has_deferred() {
            return;
        }
        let reqs = sh.take_deferred();
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
            let down = sh.link_down(i);
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

/// True for an Ethernet/IPv4/TCP frame with the RST flag.
pub fn is_tcp_rst(f: &[u8]) -> bool {
    if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 6 {
        return false;
    }
    let ihl = (f[14] & 0x0f) as usize * 4;
    f.get(14 + ihl + 13).is_some_and(|flags| flags & 0x04 != 0)
}
