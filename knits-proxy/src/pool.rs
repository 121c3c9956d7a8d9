//! Pre-connected new legs (c2), to take the TCP handshake out of the hand-off latency.
//!
//! The MSS rule (paper III.B step 4: c2 is opened with the MSS of c1) is kept by keying the pool
//! on (peer, MSS): a pooled leg was opened with exactly the MSS a hand-off asks for. The first
//! hand-off with a given MSS to a peer connects as usual and starts filling that key; later ones
//! take a ready leg. Legs are discarded when older than the maximum age (the peer's proxy closes
//! idle connections after its own idle limit, which must be longer) or found closed.
//!
//! Each pooled leg is a connection the switch tracks; the pool costs `size` flow-table entries
//! per peer and MSS.
//!
//! With a sharded switch a leg is only usable for held connections of its shard (see
//! [`crate::leg`]), so the key also holds the [`ShardBind`]: the pool keeps `size` legs per
//! (peer, MSS, shard), each connected from a source port in its shard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::leg::{ShardBind, connect_leg};
use crate::metrics::Metrics;
use crate::sockopt::{idle_alive, reset_close};

/// Most (peer, MSS) keys the pool keeps; hand-offs for further keys just connect.
pub const MAX_KEYS: usize = 64;

type PoolKey = (SocketAddr, u32, Option<ShardBind>);

/// The pool of pre-connected new legs.
#[derive(Debug)]
pub struct C2Pool {
    size: usize,
    max_age: Duration,
    connect_timeout: Duration,
    slots: Mutex<HashMap<PoolKey, VecDeque<(TcpStream, Instant)>>>,
    filling: Mutex<HashSet<PoolKey>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl C2Pool {
    /// A pool keeping `size` legs per (peer, MSS); starts its sweeper task.
    pub fn new(
        size: usize,
        max_age: Duration,
        connect_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let pool = Arc::new(C2Pool {
            size,
            max_age,
            connect_timeout,
            slots: Mutex::new(HashMap::new()),
            filling: Mutex::new(HashSet::new()),
            metrics,
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(max_age / 2).await;
                let Some(p) = weak.upgrade() else { return };
                let keys: Vec<PoolKey> = {
                    let mut slots = lock(&p.slots);
                    for q in slots.values_mut() {
                        // Old legs are reset, not closed: no TIME-WAIT per pooled leg.
                        for (s, t) in std::mem::take(q) {
                            if t.elapsed() < p.max_age && idle_alive(&s) {
                                q.push_back((s, t));
                            } else {
                                reset_close(s);
                            }
                        }
                    }
                    slots.keys().copied().collect()
                };
                for k in keys {
                    p.clone().refill_bound(k.0, k.1, k.2);
                }
            }
        });
        pool
    }

    /// Legs ready now for `peer` with `mss`.
    pub fn ready(&self, peer: SocketAddr, mss: u32) -> usize {
        self.ready_bound(peer, mss, None)
    }

    /// Takes a ready, live leg for `peer` opened with `mss` (see [`C2Pool::take_bound`]).
    pub fn take(self: &Arc<Self>, peer: SocketAddr, mss: u32) -> Option<TcpStream> {
        self.take_bound(peer, mss, None)
    }

    /// Tops the pool for (`peer`, `mss`) up to its size in the background.
    pub fn refill(self: Arc<Self>, peer: SocketAddr, mss: u32) {
        self.refill_bound(peer, mss, None)
    }

    /// Tops the pool for (`peer`, `mss`) up to its size and returns the legs ready.
    pub async fn fill(&self, peer: SocketAddr, mss: u32) -> usize {
        self.fill_bound(peer, mss, None).await
    }

    /// Legs ready now for `peer` with `mss` (from a port in `bind`'s shard, when given).
    pub fn ready_bound(&self, peer: SocketAddr, mss: u32, bind: Option<ShardBind>) -> usize {
        lock(&self.slots)
            .get(&(peer, mss, bind))
            .map_or(0, VecDeque::len)
    }

    /// Takes a ready, live leg for `peer` opened with `mss` (and in `bind`'s shard). The caller
    /// tops the pool up with [`C2Pool::refill_bound`] once its hand-off is past the latency-critical
    /// part, so that the refill's handshake does not compete with it.
    pub fn take_bound(
        self: &Arc<Self>,
        peer: SocketAddr,
        mss: u32,
        bind: Option<ShardBind>,
    ) -> Option<TcpStream> {
        let key = (peer, mss, bind);
        let got = {
            let mut slots = lock(&self.slots);
            if !slots.contains_key(&key) && slots.len() >= MAX_KEYS {
                return None;
            }
            let q = slots.entry(key).or_default();
            let mut got = None;
            while let Some((s, t)) = q.pop_front() {
                if t.elapsed() < self.max_age && idle_alive(&s) {
                    got = Some(s);
                    break;
                }
            }
            got
        };
        if got.is_some() {
            self.metrics.c2_pool_hits.fetch_add(1, Relaxed);
        } else {
            self.metrics.c2_pool_misses.fetch_add(1, Relaxed);
        }
        got
    }

    /// Gives back an unused leg (a refused hand-off's): kept when the pool for its key has
    /// room, else reset. It carries no byte, so the next hand-off can use it as new.
    pub fn put_back(&self, peer: SocketAddr, mss: u32, bind: Option<ShardBind>, s: TcpStream) {
        let key = (peer, mss, bind);
        let mut slots = lock(&self.slots);
        if slots.contains_key(&key) || slots.len() < MAX_KEYS {
            let q = slots.entry(key).or_default();
            if q.len() < self.size && idle_alive(&s) {
                q.push_back((s, Instant::now()));
                self.metrics.c2_pool_returned.fetch_add(1, Relaxed);
                return;
            }
        }
        drop(slots);
        reset_close(s);
    }

    /// Tops the pool for (`peer`, `mss`, `bind`) up to its size in the background.
    pub fn refill_bound(self: Arc<Self>, peer: SocketAddr, mss: u32, bind: Option<ShardBind>) {
        let key = (peer, mss, bind);
        if !lock(&self.filling).insert(key) {
            return;
        }
        tokio::spawn(async move {
            self.fill_bound(peer, mss, bind).await;
            lock(&self.filling).remove(&key);
        });
    }

    /// Tops the pool for (`peer`, `mss`, `bind`) up to its size and returns the legs ready.
    pub async fn fill_bound(&self, peer: SocketAddr, mss: u32, bind: Option<ShardBind>) -> usize {
        let key = (peer, mss, bind);
        loop {
            let have = self.ready_bound(peer, mss, bind);
            if have >= self.size {
                return have;
            }
            match connect_leg(peer, Some(mss), bind, self.connect_timeout).await {
                Ok(s) => {
                    let mut slots = lock(&self.slots);
                    if !slots.contains_key(&key) && slots.len() >= MAX_KEYS {
                        return 0;
                    }
                    let q = slots.entry(key).or_default();
                    if q.len() >= self.size {
                        // Another filler got there first; this leg is surplus.
                        return q.len();
                    }
                    q.push_back((s, Instant::now()));
                }
                Err(e) => {
                    tracing::debug!(%peer, mss, error = %e, "c2 pool connect failed");
                    return self.ready_bound(peer, mss, bind);
                }
            }
        }
    }
}
