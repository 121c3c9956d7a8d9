//! A shard's links to the other shards: the rings that carry frames to their owner, the
//! eventfds that wake it, the link state they share, and the sum of their snapshots.
//!
//! With N > 1 shards each one is an event loop ([`crate::runtime`]) with its own core. A frame
//! read by one shard may belong to another ([`crate::steer`]): it goes through a bounded
//! channel per shard pair (dropped and counted when full), with an eventfd to wake the owner.
//! ARP goes to shard 0, and a copy turned into a reply to every other shard, so that each
//! learns the neighbours without answering twice (and without counting or capturing the copy).
//! A hand-off request waits for the end of its round ([`crate::runtime`], `run_deferred`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use knits_core::config::{Config, PortId};

use crate::stats::{ShardSnapshot, Snapshot};
use crate::steer::{Steer, arp_as_reply, is_arp_copy, steer};
use crate::vnet;

/// Most shards.
pub const MAX_SHARDS: usize = 4;
/// Frames one shard may have queued for another (each holds up to 64 KiB only while queued).
pub const RING: usize = 1024;
/// Frames taken from one ring per wake-up.
const RING_DRAIN: usize = 256;

/// A frame on its way to its owner: the port it was read from, virtio-net header and frame.
type Moved = (PortId, Vec<u8>);

/// A shard's view of the others.
pub(crate) struct ShardCtx {
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
    /// The links of `n` shards over `ports` ports, by shard id, and the figures they keep.
    pub(crate) fn mesh(
        n: usize,
        ports: usize,
        config: Config,
    ) -> io::Result<(Vec<ShardCtx>, Arc<Vec<ShardStats>>)> {
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
        let config = Arc::new(config);
        let ctxs = tx
            .into_iter()
            .zip(rx)
            .enumerate()
            .map(|(id, (tx, rx))| ShardCtx {
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
            })
            .collect();
        Ok((ctxs, stats))
    }

    /// This shard's id.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    fn shards(&self) -> usize {
        self.tx.len()
    }

    /// The eventfd that wakes this shard.
    pub(crate) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wakes[self.id].as_fd()
    }

    /// Counts a frame this shard's core was given.
    pub(crate) fn count_processed(&self) {
        self.stats[self.id]
            .processed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `b` (virtio-net header + frame, read from `port`) away when another shard owns it
    /// or it is a hand-off request (deferred to the end of the round); else says whether this
    /// shard handles it as a copy that only teaches its core (an ARP copy of a shard other
    /// than 0, turned into a reply in place). `None`: taken away.
    pub(crate) fn take(&mut self, port: PortId, b: &mut [u8]) -> Option<bool> {
        let frame = b.get(vnet::HDR_LEN..)?;
        match steer(&self.config, port, frame, self.shards() as u32) {
            Steer::Shard(s) | Steer::Control(s) if s as usize != self.id => {
                self.hand_over(s as usize, port, b.to_vec());
                None
            }
            Steer::Shard(_) => Some(false),
            Steer::Control(_) => {
                // After what is queued before it (see `run_deferred`).
                self.deferred.push((port, b.to_vec()));
                None
            }
            Steer::Arp => {
                let me = self.id;
                for s in (0..self.shards()).filter(|&s| s != me) {
                    let mut copy = b.to_vec();
                    if s != 0 {
                        arp_as_reply(&mut copy[vnet::HDR_LEN..]);
                    }
                    self.hand_over(s, port, copy);
                }
                if self.id != 0 {
                    arp_as_reply(&mut b[vnet::HDR_LEN..]);
                    Some(true)
                } else {
                    Some(false)
                }
            }
        }
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

    /// What the other shards handed over, as (port, header + frame, is a copy); hand-off
    /// requests among them are deferred. The wake-up is reset first, so a frame handed over
    /// after this wakes the loop again; when the rings held more than one round takes, the
    /// loop wakes itself to come back after the ports had their turn.
    pub(crate) fn receive(&mut self) -> Vec<(PortId, Vec<u8>, bool)> {
        let mut v = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid buffer from an eventfd we hold.
        unsafe {
            libc::read(self.wakes[self.id].as_raw_fd(), v.as_mut_ptr().cast(), 8);
        }
        let mut frames = Vec::new();
        let mut more = false;
        for rx in self.rx.iter().flatten() {
            for _ in 0..RING_DRAIN {
                match rx.try_recv() {
                    Ok(f) => frames.push(f),
                    Err(_) => break,
                }
            }
            more |= frames.len() >= RING_DRAIN;
        }
        if more {
            self.pending_wake[self.id] = true;
        }
        let mut here = Vec::with_capacity(frames.len());
        for (port, data) in frames {
            let mut copy = false;
            if let Some(f) = data.get(vnet::HDR_LEN..) {
                let st = steer(&self.config, port, f, self.shards() as u32);
                if matches!(st, Steer::Control(_)) {
                    self.deferred.push((port, data));
                    continue;
                }
                copy = is_arp_copy(self.id, st);
            }
            here.push((port, data, copy));
        }
        here
    }

    /// True when hand-off requests wait for the end of the round.
    pub(crate) fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The hand-off requests waiting, in the order they came.
    pub(crate) fn take_deferred(&mut self) -> Vec<(PortId, Vec<u8>)> {
        std::mem::take(&mut self.deferred)
    }

    /// Wakes the shards this one handed frames to since the last call.
    pub(crate) fn flush_wakes(&mut self) {
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

    /// Tells the other shards that `port`'s link went down or came back.
    pub(crate) fn set_link(&self, port: usize, up: bool) {
        if let Some(l) = self.links.get(port) {
            l.store(u8::from(!up), Ordering::Relaxed);
        }
    }

    /// True when a shard found `port`'s link down.
    pub(crate) fn link_down(&self, port: usize) -> bool {
        self.links
            .get(port)
            .is_some_and(|l| l.load(Ordering::Relaxed) != 0)
    }

    /// Publishes this shard's snapshot `own`, then sums every shard's latest into `shared`,
    /// holding its lock so that the last merge sees every shard's last publication.
    pub(crate) fn publish(&self, own: Snapshot, shared: &Mutex<Snapshot>) {
        if let Some(slot) = self.slots.get(self.id)
            && let Ok(mut g) = slot.lock()
        {
            *g = own;
        }
        if let Ok(mut g) = shared.lock() {
            let parts: Vec<(Snapshot, ShardCounts)> = self
                .slots
                .iter()
                .zip(self.stats.iter())
                .map(|(slot, st)| {
                    let part = slot.lock().map(|p| p.clone()).unwrap_or_default();
                    (part, st.counts())
                })
                .collect();
            *g = merge_shards(&parts);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
