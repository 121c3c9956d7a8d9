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

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use knits_core::checksum;
use knits_core::config::PortId;
use knits_core::time::Instant;

use crate::faults::{FaultConfig, Injector};
use crate::pcap::{self, Direction};
use crate::stats::{PortStats, Snapshot};
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
    pcap: Option<pcap::Writer<BufWriter<File>>>,
    held: BinaryHeap<Held>,
    held_seq: u64,
    sink: FrameSink,
    start: std::time::Instant,
    offloads: bool,
    buf: Vec<u8>,
    dup: Vec<u8>,
    snapshot: Arc<Mutex<Snapshot>>,
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
                fault_in: faults.map(|f| Injector::new(f, 2 * i as u64)),
                fault_out: faults.map(|f| Injector::new(f, 2 * i as u64 + 1)),
                tap,
                down: false,
                gone: false,
            });
        }
        let pcap = match &opts.pcap {
            Some(path) => {
                let f = File::create(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("pcap file {}: {e}", path.display()))
                })?;
                let names: Vec<String> = ports.iter().map(|p| p.stats.name.clone()).collect();
                Some(pcap::Writer::new(
                    BufWriter::with_capacity(1 << 20, f),
                    &names,
                )?)
            }
            None => None,
        };
        Ok(Runtime {
            core,
            ports,
            epoll,
            pcap,
            held: BinaryHeap::new(),
            held_seq: 0,
            sink: FrameSink::default(),
            start: std::time::Instant::now(),
            offloads,
            buf: vec![0; tap::BUF_LEN],
            dup: Vec::new(),
            snapshot,
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
            let timeout = wake.saturating_duration_since(wall);
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
            for ev in events.iter().take(n as usize) {
                let port = ev.u64 as usize;
                self.read_port(port);
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
        s.pcap_frames = self.pcap.as_ref().map(|p| p.frames).unwrap_or(0);
        s.uptime_s = self.start.elapsed().as_secs_f64();
        s.offloads = self.offloads;
        if let Ok(mut g) = self.snapshot.lock() {
            *g = s;
        }
    }

    fn read_port(&mut self, port: usize) {
        for _ in 0..BATCH {
            let Some(p) = self.ports.get_mut(port) else {
                return;
            };
            let n = match p.tap.recv(&mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => return,
                Err(e) => {
                    p.stats.rx_errors += 1;
                    if e.kind() != io::ErrorKind::Interrupted {
                        // The device is gone (EBADFD after its link was deleted): a level-triggered
                        // epoll would report it readable forever, so it leaves the set.
                        self.port_gone(port);
                    }
                    return;
                }
            };
            if p.down {
                p.down = false;
                self.core.set_port_up(port as PortId, true, &mut self.sink);
                self.drain_sink();
            }
            let Some(p) = self.ports.get_mut(port) else {
                return;
            };
            let Some(mut hdr) = VnetHdr::parse(&self.buf[..n]) else {
                p.stats.rx_errors += 1;
                continue;
            };
            p.stats.rx_frames += 1;
            p.stats.rx_bytes += (n - vnet::HDR_LEN) as u64;
            if hdr.is_gso() {
                p.stats.rx_gso += 1;
            }
            if let Some(inj) = &mut p.fault_in {
                let d = inj.decide();
                if d.drop {
                    continue;
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
                    continue;
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
    fn process(&mut self, port: PortId, b: &mut [u8]) {
        let Some(hdr) = VnetHdr::parse(b) else { return };
        if let Some(w) = &mut self.pcap {
            let _ = w.write(port as u32, now_us(), Direction::In, &b[vnet::HDR_LEN..]);
        }
        let now = self.now();
        let outcome = self.core.process(
            port,
            now,
            &mut b[vnet::HDR_LEN..],
            hdr.csum_kind(),
            &mut self.sink,
        );
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
            let _ = w.write(port as u32, now_us(), Direction::Out, &b[vnet::HDR_LEN..]);
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
                    self.core.set_port_up(port, false, &mut self.sink);
                    self.drain_sink();
                }
            }
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
}
