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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::sockopt::{connect_with_mss, idle_alive};

/// Most (peer, MSS) keys the pool keeps; hand-offs for further keys just connect.
pub const MAX_KEYS: usize = 64;

type PoolKey = (SocketAddr, u32);

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
                        q.retain(|(s, t)| t.elapsed() < p.max_age && idle_alive(s));
                    }
                    slots.keys().copied().collect()
                };
                for k in keys {
                    p.clone().refill(k.0, k.1);
                }
            }
        });
        pool
    }

    /// Legs ready now for `peer` with `mss`.
    pub fn ready(&self, peer: SocketAddr, mss: u32) -> usize {
        lock(&self.slots).get(&(peer, mss)).map_or(0, VecDeque::len)
    }

    /// Takes a ready, live leg for `peer` opened with `mss`. The caller tops the pool up with
    /// [`C2Pool::refill`] once its hand-off is past the latency-critical part, so that the
    /// refill's handshake does not compete with it.
    pub fn take(self: &Arc<Self>, peer: SocketAddr, mss: u32) -> Option<TcpStream> {
        let got = {
            let mut slots = lock(&self.slots);
            if !slots.contains_key(&(peer, mss)) && slots.len() >= MAX_KEYS {
                return None;
            }
            let q = slots.entry((peer, mss)).or_default();
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

    /// Tops the pool for (`peer`, `mss`) up to its size in the background.
    pub fn refill(self: Arc<Self>, peer: SocketAddr, mss: u32) {
        if !lock(&self.filling).insert((peer, mss)) {
            return;
        }
        tokio::spawn(async move {
            self.fill(peer, mss).await;
            lock(&self.filling).remove(&(peer, mss));
        });
    }

    /// Tops the pool for (`peer`, `mss`) up to its size and returns the legs ready.
    pub async fn fill(&self, peer: SocketAddr, mss: u32) -> usize {
        loop {
            let have = self.ready(peer, mss);
            if have >= self.size {
                return have;
            }
            match connect_with_mss(peer, Some(mss), self.connect_timeout).await {
                Ok(s) => {
                    let mut slots = lock(&self.slots);
                    if !slots.contains_key(&(peer, mss)) && slots.len() >= MAX_KEYS {
                        return 0;
                    }
                    let q = slots.entry((peer, mss)).or_default();
                    if q.len() >= self.size {
                        // Another filler got there first; this leg is surplus.
                        return q.len();
                    }
                    q.push_back((s, Instant::now()));
                }
                Err(e) => {
                    tracing::debug!(%peer, mss, error = %e, "c2 pool connect failed");
                    return self.ready(peer, mss);
                }
            }
        }
    }
}
