//! The flow table: connection records in caller storage, a keyed open-addressing index that
//! finds a record from either direction's 4-tuple, and a budgeted expiry sweep.
//!
//! - Storage is two caller-provided slices ([`FlowSlot`]s and [`IndexSlot`]s, e.g. from
//!   `managed::ManagedSlice`), sized once. Nothing allocates; a full table is
//!   `Err(TableFull)` and nothing is evicted.
//! - The index is linear probing with backward-shift deletion (no tombstones), at most half full
//!   (two keys per flow, at least four index slots per flow), so an expected lookup probes about
//!   1.5 slots whatever the occupancy. The hash is NH (the almost-universal hash of UMAC,
//!   RFC 4418 section 5.2) over the 12-byte tuple, keyed with the caller's seed, then mixed: an
//!   attacker who does not know the seed cannot choose tuples that pile into one chain (two
//!   distinct tuples collide with probability about 2^-32 over the seed).
//! - [`FlowTable::sweep`] examines at most `budget` records per call and hands back the ones whose
//!   timeout has passed, so expiry costs a bounded amount of work per `poll`.

use managed::ManagedSlice;

use crate::config::PortId;
use crate::seq::SeqNumber;
use crate::time::Instant;

/// A flow direction's 4-tuple as it appears on the wire at the switch's ingress (TCP only).
#[derive(Debug, Clone, Copy, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowKey {
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// Field by field, as two words: the addresses as one 64-bit word and the ports as one 32-bit
/// word, compared without a branch per field (the lookup compares one key per probe).
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        ((a.0 ^ b.0) | ((a.1 ^ b.1) as u64)) == 0
    }
}

/// A key with its hash under one table's seed ([`FlowTable::hashed`]): a new connection's tuple
/// is hashed once for the lookup that misses and for the insert that follows.
#[derive(Debug, Clone, Copy)]
pub struct Hashed {
    key: FlowKey,
    h: u32,
}

impl Hashed {
    /// The key.
    pub const fn key(&self) -> &FlowKey {
        &self.key
    }
}

/// The same two words as [`PartialEq`] compares, so that equal keys hash alike.
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let (addrs, ports) = self.words();
        state.write_u64(addrs);
        state.write_u32(ports);
    }
}

impl FlowKey {
    /// The addresses and the ports as two words (native byte order: only for comparing and
    /// hashing).
    #[inline(always)]
    fn words(&self) -> (u64, u32) {
        let [a, b, c, d] = self.src;
        let [e, f, g, h] = self.dst;
        (
            u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
            (self.sport as u32) << 16 | self.dport as u32,
        )
    }
    /// The key of the opposite direction.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

/// Which way a packet travels on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Dir {
    /// From the side that sent the SYN (the client, or the node opening a routed connection).
    Orig = 0,
    /// From the side that answered with the SYN-ACK.
    Reply = 1,
}

impl Dir {
    /// The other direction.
    pub const fn other(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
    /// 0 or 1.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What the switch does with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlowKind {
    /// A free slot.
    #[default]
    Free,
    /// A client connection to the VIP, DNATed to a back-end (and possibly spliced).
    Nat,
    /// A connection between two nodes, routed unchanged (and possibly a hand-off leg).
    Routed,
}

/// TCP connection state as the switch tracks it (a coarse RFC 9293 view from the middle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TcpState {
    /// Only the originator's SYN was seen.
    #[default]
    SynSent,
    /// The SYN-ACK was seen.
    SynReceived,
    /// The originator acknowledged the SYN-ACK (or data flowed).
    Established,
    /// One side sent a FIN.
    FinWait,
    /// Both sides sent a FIN.
    Closing,
    /// Both FINs acknowledged, or a reset: the entry lingers for TIME-WAIT, then goes.
    TimeWait,
}

impl TcpState {
    /// Stable name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            TcpState::SynSent => "syn_sent",
            TcpState::SynReceived => "syn_received",
            TcpState::Established => "established",
            TcpState::FinWait => "fin_wait",
            TcpState::Closing => "closing",
            TcpState::TimeWait => "time_wait",
        }
    }
}

/// Per-direction tracking flags.
pub mod dirflag {
    /// The SYN of this direction was seen.
    pub const SYN: u8 = 1 << 0;
    /// This direction's SYN offered SACK-permitted.
    pub const SACK_PERM: u8 = 1 << 1;
    /// This direction's SYN carried a timestamp option.
    pub const TS: u8 = 1 << 2;
    /// This direction's SYN carried a window-scale option.
    pub const WSCALE: u8 = 1 << 3;
    /// This direction sent a FIN (its sequence number is in `fin`).
    pub const FIN: u8 = 1 << 4;
    /// This direction's FIN was acknowledged by the other side.
    pub const FIN_ACKED: u8 = 1 << 5;
    /// This direction has sent at least one ACK.
    pub const ACKED: u8 = 1 << 6;
    /// The switch reset this direction's sender (the leg of a rolled-back hand-off) and stands
    /// in for the closed peer: further segments are answered with an RST (RFC 9293 3.10.7.1).
    pub const ABORTED: u8 = 1 << 7;
}

/// What the switch knows of one direction of a flow, in that direction's own sequence space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DirState {
    /// Initial sequence number of this direction.
    pub isn: SeqNumber,
    /// One past the highest sequence number this direction has sent (SYN and FIN count, so
    /// once [`dirflag::FIN`] is set the FIN's own sequence number is `nxt - 1`).
    pub nxt: SeqNumber,
    /// The highest acknowledgment this direction has sent (of the other direction's stream).
    pub ack: SeqNumber,
    /// Highest TSval this direction's sender put on the wire (before translation).
    pub ts_in: u32,
    /// The last window field this direction sent (unscaled, before translation).
    pub win: u16,
    /// MSS this direction's SYN announced (0 = none).
    pub mss: u16,
    /// Window-scale shift this direction announced in its SYN.
    pub wscale: u8,
    /// [`dirflag`] bits.
    pub flags: u8,
}

impl DirState {
    /// True when all the `f` flag bits are set.
    #[inline]
    pub const fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }
}

/// One tracked TCP connection (one leg): both directions' keys and state.
///
/// 88 bytes; with its share of the index (four 8-byte slots, the index being at most half full)
/// a connection costs 120 bytes of table memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FlowSlot {
    /// Orig-direction key (index 0) and reply-direction key (index 1), as seen at ingress.
    pub keys: [FlowKey; 2],
    /// Free, NAT or routed.
    pub kind: FlowKind,
    /// Connection state.
    pub state: TcpState,
    /// Ingress port of each direction.
    pub ports: [PortId; 2],
    /// For NAT flows, the back-end index the connection was sprayed to.
    pub backend: u8,
    /// In use: splice session index + 1 (0 = none). Free: the next free slot + 1 (0 = end).
    pub link: u32,
    /// Last time a packet of this flow was seen (or a timer moved its state), in milliseconds
    /// modulo 2^32; compared with wrapping arithmetic (see [`deadline_passed`]).
    pub last_ms: u32,
    /// Per-direction state, indexed by [`Dir::index`].
    pub dirs: [DirState; 2],
}

impl FlowSlot {
    /// True for a slot in use.
    pub const fn in_use(&self) -> bool {
        !matches!(self.kind, FlowKind::Free)
    }
    /// The session this flow belongs to, if any.
    pub const fn session(&self) -> Option<usize> {
        if self.link == 0 {
            None
        } else {
            Some(self.link as usize - 1)
        }
    }
    /// Both SYNs carried timestamps, so the option is in effect (RFC 7323 3.2).
    pub const fn ts_enabled(&self) -> bool {
        self.dirs[0].has(dirflag::TS) && self.dirs[1].has(dirflag::TS)
    }
    /// Both SYNs offered SACK-permitted, so SACK blocks may be sent (RFC 2018).
    pub const fn sack_enabled(&self) -> bool {
        self.dirs[0].has(dirflag::SACK_PERM) && self.dirs[1].has(dirflag::SACK_PERM)
    }
    /// The effective window-scale shift applied to window fields sent in direction `d`
    /// (RFC 7323 2.2: scaling is in effect only when both SYNs carried the option).
    pub const fn shift(&self, d: Dir) -> u8 {
        if self.dirs[0].has(dirflag::WSCALE) && self.dirs[1].has(dirflag::WSCALE) {
            let s = self.dirs[d.index()].wscale;
            if s > 14 { 14 } else { s }
        } else {
            0
        }
    }
}

/// One slot of the hash index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct IndexSlot {
    /// The key's full hash (its home slot is `hash & mask`).
    pub hash: u32,
    /// `(flow << 1 | dir) + 1`; 0 = empty.
    pub entry: u32,
}

/// The table has no free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TableFull;

/// Errors from constructing a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StorageError {
    /// No flow slots, more than 2^30, or an index that is not a power of two of at least four
    /// slots per flow.
    BadSize,
}

/// The flow table.
#[derive(Debug)]
pub struct FlowTable<'a> {
    flows: ManagedSlice<'a, FlowSlot>,
    index: ManagedSlice<'a, IndexSlot>,
    mask: u32,
    free_head: u32,
    used: usize,
    key: [u32; 4],
    sweep_cursor: usize,
}

/// Index slots needed for `flows` flow slots: the next power of two of at least `4 * flows`.
pub const fn index_len_for(flows: usize) -> usize {
    let want = if flows < 1 {
        4
    } else {
        flows.saturating_mul(4)
    };
    let mut n = 1usize;
    while n < want {
        n <<= 1;
    }
    n
}

impl<'a> FlowTable<'a> {
    /// A table over caller storage; every slot is reset. `seed` keys the hash.
    pub fn new(
        flows: ManagedSlice<'a, FlowSlot>,
        index: ManagedSlice<'a, IndexSlot>,
        seed: [u8; 16],
    ) -> Result<Self, StorageError> {
        let n = flows.len();
        let m = index.len();
        if n == 0 || n >= (1 << 30) || !m.is_power_of_two() || m < n.saturating_mul(4) {
            return Err(StorageError::BadSize);
        }
        let key = core::array::from_fn(|i| {
            u32::from_le_bytes([
                seed[4 * i],
                seed[4 * i + 1],
                seed[4 * i + 2],
                seed[4 * i + 3],
            ])
        });
        let mut t = FlowTable {
            flows,
            index,
            mask: (m - 1) as u32,
            free_head: 0,
            used: 0,
            key,
            sweep_cursor: 0,
        };
        t.clear();
        Ok(t)
    }

    /// Drops every flow.
    pub fn clear(&mut self) {
        let n = self.flows.len();
        for (i, f) in self.flows.iter_mut().enumerate() {
            *f = FlowSlot {
                link: if i + 1 < n { i as u32 + 2 } else { 0 },
                ..FlowSlot::default()
            };
        }
        for s in self.index.iter_mut() {
            *s = IndexSlot::default();
        }
        self.free_head = 1;
        self.used = 0;
        self.sweep_cursor = 0;
    }

    /// Flows in use.
    pub fn len(&self) -> usize {
        self.used
    }
    /// True when no flow is in use.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
    /// Flow capacity.
    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// The keyed hash of a 4-tuple: NH over the words (src, dst, ports, 0), then a multiply-xorshift
    /// finaliser so the low bits that pick the bucket depend on every input bit.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u32 {
        let (addrs, w2) = key.words();
        let (w0, w1) = (addrs as u32, (addrs >> 32) as u32);
        let k = &self.key;
        let nh = (w0.wrapping_add(k[0]) as u64)
            .wrapping_mul(w1.wrapping_add(k[1]) as u64)
            .wrapping_add((w2.wrapping_add(k[2]) as u64).wrapping_mul(k[3] as u64 | 1));
        let x = (nh ^ (nh >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        (x >> 32) as u32
    }

    /// Finds the flow and direction of a 4-tuple; `probes` receives the slots examined. Inlined
    /// into the caller (across crates too): the call itself cost a fifth of the lookup.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, probes: &mut u32) -> Option<(usize, Dir)> {
        self.lookup_hashed(&self.hashed(key), probes)
    }

    /// `key` with its hash, for a lookup that may be followed by an insert of the same key.
    #[inline]
    pub fn hashed(&self, key: &FlowKey) -> Hashed {
        Hashed {
            key: *key,
            h: self.hash(key),
        }
    }

    /// [`FlowTable::lookup`] of a key hashed before.
    #[inline]
    pub fn lookup_hashed(&self, hk: &Hashed, probes: &mut u32) -> Option<(usize, Dir)> {
        let (key, h) = (&hk.key, hk.h);
        let mut i = h & self.mask;
        let mut n = 0u32;
        loop {
            n += 1;
            let Some(s) = self.index.get(i as usize) else {
                break;
            };
            if s.entry == 0 {
                break;
            }
            if s.hash == h {
                let e = s.entry - 1;
                let flow = (e >> 1) as usize;
                let dir = if e & 1 == 0 { Dir::Orig } else { Dir::Reply };
                if let Some(f) = self.flows.get(flow)
                    && f.keys[dir.index()] == *key
                {
                    *probes = n;
                    return Some((flow, dir));
                }
            }
            if n > self.mask {
                break;
            }
            i = (i + 1) & self.mask;
        }
        *probes = n;
        None
    }

    /// Reads the index slot a lookup of `key` starts at and the flow slot it names, and returns
    /// a value made from both (to be dropped by the caller). Nothing changes: a burst calls this
    /// for all its frames before it processes any, so that the memory accesses of independent
    /// lookups overlap instead of waiting one after another (see `Switch::process_burst`).
    #[inline]
    pub fn touch(&self, key: &FlowKey) -> u32 {
        let h = self.hash(key);
        let Some(s) = self.index.get((h & self.mask) as usize) else {
            return 0;
        };
        let flow = (s.entry.wrapping_sub(1) >> 1) as usize;
        let f = self.flows.get(flow).map_or(0, |f| f.last_ms);
        s.hash ^ f
    }

    /// Inserts a new flow with the two keys; returns its index. `Err(TableFull)` when no slot is
    /// free (nothing is evicted).
    pub fn insert(
        &mut self,
        kind: FlowKind,
        orig: FlowKey,
        reply: FlowKey,
        now_ms: u32,
    ) -> Result<usize, TableFull> {
        let (orig, reply) = (self.hashed(&orig), self.hashed(&reply));
        self.insert_hashed(kind, orig, reply, now_ms)
    }

    /// [`FlowTable::insert`] of keys hashed before (by [`FlowTable::hashed`] of this table), so
    /// that a new connection's tuples are hashed once for the lookups that precede the insert
    /// and the insert itself.
    pub fn insert_hashed(
        &mut self,
        kind: FlowKind,
        orig: Hashed,
        reply: Hashed,
        now_ms: u32,
    ) -> Result<usize, TableFull> {
        if self.free_head == 0 {
            return Err(TableFull);
        }
        let idx = (self.free_head - 1) as usize;
        let Some(slot) = self.flows.get_mut(idx) else {
            return Err(TableFull);
        };
        self.free_head = slot.link;
        // Every field named (a new one will not compile until it is set here): with
        // `..FlowSlot::default()` the record was built on the stack and copied.
        *slot = FlowSlot {
            keys: [orig.key, reply.key],
            kind,
            state: TcpState::SynSent,
            ports: [0; 2],
            backend: 0,
            link: 0,
            last_ms: now_ms,
            dirs: [DirState::default(); 2],
        };
        self.used += 1;
        self.index_insert(orig.h, ((idx as u32) << 1) + 1);
        self.index_insert(reply.h, ((idx as u32) << 1 | 1) + 1);
        Ok(idx)
    }

    fn index_insert(&mut self, h: u32, entry: u32) {
        let mut i = h & self.mask;
        // At most half full by construction, so an empty slot exists.
        for _ in 0..=self.mask {
            if let Some(s) = self.index.get_mut(i as usize)
                && s.entry == 0
            {
                *s = IndexSlot { hash: h, entry };
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn index_remove(&mut self, key: &FlowKey, entry: u32) {
        let h = self.hash(key);
        let mut i = h & self.mask;
        let mut found = None;
        for _ in 0..=self.mask {
            let Some(s) = self.index.get(i as usize) else {
                return;
            };
            if s.entry == 0 {
                break;
            }
            if s.entry == entry {
                found = Some(i);
                break;
            }
            i = (i + 1) & self.mask;
        }
        let Some(mut hole) = found else { return };
        // Backward-shift deletion: pull later members of the cluster into the hole when their
        // home slot does not lie cyclically in (hole, j].
        let mut j = hole;
        for _ in 0..=self.mask {
            j = (j + 1) & self.mask;
            let Some(&s) = self.index.get(j as usize) else {
                return;
            };
            if s.entry == 0 {
                break;
            }
            let home = s.hash & self.mask;
            let dist_home = j.wrapping_sub(home) & self.mask;
            let dist_hole = j.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                if let Some(d) = self.index.get_mut(hole as usize) {
                    *d = s;
                }
                hole = j;
            }
        }
        if let Some(d) = self.index.get_mut(hole as usize) {
            *d = IndexSlot::default();
        }
    }

    /// Removes a flow and its two keys. Removing a free slot does nothing.
    pub fn remove(&mut self, idx: usize) {
        let Some(f) = self.flows.get(idx) else { return };
        if !f.in_use() {
            return;
        }
        let keys = f.keys;
        self.index_remove(&keys[0], ((idx as u32) << 1) + 1);
        self.index_remove(&keys[1], ((idx as u32) << 1 | 1) + 1);
        if let Some(f) = self.flows.get_mut(idx) {
            *f = FlowSlot {
                link: self.free_head,
                ..FlowSlot::default()
            };
        }
        self.free_head = idx as u32 + 1;
        self.used -= 1;
    }

    /// The flow at `idx`.
    #[inline]
    pub fn get(&self, idx: usize) -> Option<&FlowSlot> {
        self.flows.get(idx).filter(|f| f.in_use())
    }

    /// The flow at `idx`, mutably.
    #[inline]
    pub fn get_mut(&mut self, idx: usize) -> Option<&mut FlowSlot> {
        self.flows.get_mut(idx).filter(|f| f.in_use())
    }

    /// Examines up to `budget` slots from where the last call stopped and calls `expired` for
    /// each flow in use whose `deadline(flow)` (ms, modulo 2^32) has passed at `now_ms`. Returns
    /// slots examined. The callback decides what to do (usually [`FlowTable::remove`] afterwards).
    pub fn sweep(
        &mut self,
        now_ms: u32,
        budget: usize,
        mut deadline: impl FnMut(&FlowSlot) -> u32,
        mut expired: impl FnMut(usize),
    ) -> usize {
        let n = self.flows.len();
        let todo = budget.min(n);
        for _ in 0..todo {
            let i = self.sweep_cursor;
            self.sweep_cursor = if i + 1 >= n { 0 } else { i + 1 };
            if let Some(f) = self.flows.get(i)
                && f.in_use()
                && deadline_passed(deadline(f), now_ms)
            {
                expired(i);
            }
        }
        todo
    }

    /// Iterates over the flows in use with their indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &FlowSlot)> {
        self.flows.iter().enumerate().filter(|(_, f)| f.in_use())
    }
}

/// Milliseconds of an [`Instant`] as the table stores them: modulo 2^32 (a 49-day cycle; every
/// timeout is far shorter, and comparisons wrap).
#[inline]
pub fn millis(now: Instant) -> u32 {
    now.total_millis() as u32
}

/// True when the wrapping millisecond `deadline` is at or before `now` (deadlines less than 24
/// days away compare correctly across the wrap).
#[inline]
pub const fn deadline_passed(deadline: u32, now: u32) -> bool {
    (now.wrapping_sub(deadline) as i32) >= 0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::vec;
    use std::vec::Vec;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            src: i.to_be_bytes(),
            dst: [198, 18, 0, 10],
            sport: (i % 60000) as u16,
            dport: 80,
        }
    }

    fn table(n: usize) -> FlowTable<'static> {
        FlowTable::new(
            vec![FlowSlot::default(); n].into(),
            vec![IndexSlot::default(); index_len_for(n)].into(),
            [9; 16],
        )
        .unwrap()
    }

    #[test]
    fn flow_slot_is_at_most_88_bytes() {
        assert!(
            core::mem::size_of::<FlowSlot>() <= 88,
            "{}",
            core::mem::size_of::<FlowSlot>()
        );
        assert_eq!(core::mem::size_of::<IndexSlot>(), 8);
    }

    #[test]
    fn both_directions_find_the_flow() {
        let mut t = table(4);
        let k = key(1);
        let i = t.insert(FlowKind::Nat, k, k.reversed(), 0).unwrap();
        let mut p = 0;
        assert_eq!(t.lookup(&k, &mut p), Some((i, Dir::Orig)));
        assert_eq!(t.lookup(&k.reversed(), &mut p), Some((i, Dir::Reply)));
        assert_eq!(t.lookup(&key(2), &mut p), None);
    }

    #[test]
    fn full_table_is_an_error_and_nothing_is_evicted() {
        let mut t = table(3);
        for i in 0..3 {
            t.insert(FlowKind::Routed, key(i), key(i).reversed(), 0)
                .unwrap();
        }
        assert_eq!(
            t.insert(FlowKind::Routed, key(9), key(9).reversed(), 0),
            Err(TableFull)
        );
        let mut p = 0;
        for i in 0..3 {
            assert!(t.lookup(&key(i), &mut p).is_some());
        }
        t.remove(1);
        assert!(
            t.insert(FlowKind::Routed, key(9), key(9).reversed(), 0)
                .is_ok()
        );
    }

    #[test]
    fn bad_storage_sizes_are_refused() {
        let bad = FlowTable::new(
            vec![FlowSlot::default(); 4].into(),
            vec![IndexSlot::default(); 8].into(),
            [0; 16],
        );
        assert_eq!(bad.err(), Some(StorageError::BadSize));
        let bad = FlowTable::new(
            Vec::<FlowSlot>::new().into(),
            vec![IndexSlot::default(); 8].into(),
            [0; 16],
        );
        assert_eq!(bad.err(), Some(StorageError::BadSize));
    }

    #[test]
    fn sweep_is_bounded_and_wraps() {
        let mut t = table(10);
        for i in 0..10 {
            t.insert(FlowKind::Routed, key(i), key(i).reversed(), i)
                .unwrap();
        }
        let mut seen = Vec::new();
        assert_eq!(t.sweep(4, 3, |f| f.last_ms, |i| seen.push(i)), 3);
        assert_eq!(seen, vec![0, 1, 2]);
        seen.clear();
        assert_eq!(t.sweep(4, 100, |f| f.last_ms, |i| seen.push(i)), 10);
        assert_eq!(seen, vec![3, 4, 0, 1, 2]);
    }

    proptest! {
        /// Differential test against a HashMap model over random insert/remove sequences.
        #[test]
        fn matches_a_model_map(ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..300)) {
            let mut t = table(16);
            let mut model: HashMap<u32, usize> = HashMap::new();
            for (ins, k) in ops {
                if ins {
                    if model.contains_key(&k) { continue; }
                    match t.insert(FlowKind::Routed, key(k), key(k).reversed(), 0) {
                        Ok(i) => { model.insert(k, i); }
                        Err(TableFull) => prop_assert_eq!(model.len(), 16),
                    }
                } else if let Some(i) = model.remove(&k) {
                    t.remove(i);
                }
                prop_assert_eq!(t.len(), model.len());
                let mut p = 0;
                for k in 0..40u32 {
                    let got = t.lookup(&key(k), &mut p).map(|(i, _)| i);
                    prop_assert_eq!(got, model.get(&k).copied());
                    let got = t.lookup(&key(k).reversed(), &mut p);
                    prop_assert_eq!(got, model.get(&k).map(|&i| (i, Dir::Reply)));
                }
            }
        }
    }
}
