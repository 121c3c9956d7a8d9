//! The node's side of the hand-off control channel (knits-core `wire::control`): one UDP socket
//! shared by all hand-offs of the process, per-node counters, retransmission, and replies
//! matched to their request by counter.
//!
//! Counters start from the wall clock in microseconds, so a restarted proxy does not reuse the
//! counters of its previous run (the switch refuses a reused counter as a replay), and grow by
//! one per request. Retransmissions of a request carry the same bytes, counter included.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use knits_core::wire::control::{Key, REQUEST_LEN, Reply, ReplyRepr, RequestRepr};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SwitchConfig;
use crate::metrics::Metrics;

/// Why no reply was obtained.
#[derive(Debug)]
pub enum ControlError {
    /// No valid reply within the total time (after `attempts` transmissions).
    TimedOut {
        /// Transmissions made.
        attempts: u32,
    },
    /// The request could not be encoded (never happens with a correct buffer size).
    Encode,
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::TimedOut { attempts } => {
                write!(f, "no reply after {attempts} transmissions")
            }
            ControlError::Encode => write!(f, "request could not be encoded"),
        }
    }
}

impl std::error::Error for ControlError {}

/// A reply and how many transmissions it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The switch's reply (tag verified, counter matched).
    pub reply: ReplyRepr,
    /// Transmissions of the request (1 = no retransmission).
    pub attempts: u32,
}

type Waiters = Mutex<HashMap<u64, oneshot::Sender<ReplyRepr>>>;

struct Inner {
    sock: UdpSocket,
    switch: SocketAddr,
    key: Key,
    key_id: u8,
    counter: AtomicU64,
    waiters: Waiters,
    retry: Duration,
    total: Duration,
    metrics: Arc<Metrics>,
}

/// The control channel to the switch.
pub struct ControlClient {
    inner: Arc<Inner>,
    receiver: JoinHandle<()>,
}

impl core::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ControlClient")
            .field("switch", &self.inner.switch)
            .field("key_id", &self.inner.key_id)
            .finish_non_exhaustive()
    }
}

/// A counter start that a restart does not repeat: microseconds since the Unix epoch.
pub fn initial_counter() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
        .unwrap_or(1)
}

impl ControlClient {
    /// Binds the control socket and starts the reply receiver.
    pub async fn bind(
        cfg: &SwitchConfig,
        retry: Duration,
        total: Duration,
        metrics: Arc<Metrics>,
    ) -> io::Result<Self> {
        let sock = UdpSocket::bind(cfg.bind).await?;
        let inner = Arc::new(Inner {
            sock,
            switch: cfg.control,
            key: cfg.key,
            key_id: cfg.key_id,
            counter: AtomicU64::new(initial_counter()),
            waiters: Mutex::new(HashMap::new()),
            retry,
            total,
            metrics,
        });
        let receiver = tokio::spawn(receive(inner.clone()));
        Ok(ControlClient { inner, receiver })
    }

    /// The control socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.sock.local_addr()
    }

    /// The key id requests are signed with.
    pub fn key_id(&self) -> u8 {
        self.inner.key_id
    }

    /// A fresh counter.
    pub fn next_counter(&self) -> u64 {
        self.inner.counter.fetch_add(1, Relaxed)
    }

    /// Sends `repr` (its key id and counter are filled in here), retransmitting every retry
    /// interval until a reply with the same counter and a valid tag arrives or the total time
    /// passes.
    pub async fn request(&self, mut repr: RequestRepr) -> Result<Answer, ControlError> {
        let inner = &self.inner;
        repr.counter = self.next_counter();
        repr.key_id = inner.key_id;
        let mut msg = [0u8; REQUEST_LEN];
        repr.emit(&mut msg, &inner.key)
            .ok_or(ControlError::Encode)?;
        let (tx, mut rx) = oneshot::channel();
        lock(&inner.waiters).insert(repr.counter, tx);
        let _guard = WaiterGuard {
            waiters: &inner.waiters,
            counter: repr.counter,
        };
        let deadline = tokio::time::Instant::now() + inner.total;
        let mut attempts = 0u32;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ControlError::TimedOut { attempts });
            }
            attempts += 1;
            if attempts > 1 {
                inner.metrics.control_retransmits.fetch_add(1, Relaxed);
            }
            if let Err(e) = inner.sock.send_to(&msg, inner.switch).await {
                tracing::debug!(counter = repr.counter, error = %e, "control send failed; will retry");
            }
            let wait = inner.retry.min(deadline - now);
            match tokio::time::timeout(wait, &mut rx).await {
                Ok(Ok(reply)) => return Ok(Answer { reply, attempts }),
                Ok(Err(_)) => return Err(ControlError::TimedOut { attempts }),
                Err(_) => {}
            }
        }
    }
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a waiter when its request finishes or is cancelled.
struct WaiterGuard<'a> {
    waiters: &'a Waiters,
    counter: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(self.waiters).remove(&self.counter);
    }
}

/// Receives replies and hands each to the request with its counter. A reply is authentic when
/// its tag verifies under the key; anything else is counted and dropped.
async fn receive(inner: Arc<Inner>) {
    let mut buf = [0u8; 256];
    loop {
        let (n, from) = match inner.sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors (port unreachable from an earlier send) surface here; keep going.
                tracing::trace!(error = %e, "control receive error");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let Ok(reply) = Reply::new_checked(&buf[..n]) else {
            inner.metrics.control_ignored.fetch_add(1, Relaxed);
            tracing::debug!(%from, len = n, "malformed control reply ignored");
            continue;
        };
        if reply.key_id() != inner.key_id || !reply.verify(&inner.key) {
            inner.metrics.control_ignored.fetch_add(1, Relaxed);
            tracing::warn!(%from, "control reply with a bad tag ignored");
            continue;
        }
        let repr = ReplyRepr::parse(&reply);
        match lock(&inner.waiters).remove(&repr.counter) {
            Some(tx) => {
                let _ = tx.send(repr);
            }
            None => {
                inner.metrics.control_ignored.fetch_add(1, Relaxed);
                tracing::debug!(
                    counter = repr.counter,
                    code = repr.code.name(),
                    "late or unknown control reply"
                );
            }
        }
    }
}
