//! The TLS listener: per connection, read the ClientHello (never answering it), decide the
//! owner, and either hand the connection off to it through the switch or relay it to this
//! node's TLS server.
//!
//! Nothing is written to the client before the decision, so at the hand-off the response
//! anchor is 0 and SIOCOUTQ is empty at once; nothing of the stream was consumed, so the
//! hand-off forwards every byte read so far (the hello, and whatever followed it) on the new
//! leg, and the target's TLS server sees the stream from its first byte.
//!
//! A hand-off that the switch refuses, or does not answer, is tried again
//! (`handoff_attempts`, 2 by default). If it still fails, the connection is relayed to the local
//! TLS server only when that server holds a certificate for the name (`local_names`) or the
//! hello named none; otherwise the client gets a fatal `internal_error` alert and a FIN, and
//! the connection is counted (`refused_after_handoff`). A client is never shown a certificate
//! for a name other than the one it asked for.
//!
//! A connection whose first bytes are no ClientHello, or which sends nothing for the hello
//! time-out, is counted by reason and closed (or, with `on_error = "default"`, a bad hello is
//! sent to the default node as it is). Each connection has its own task and its own time-out:
//! none can stall another.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::Rejected;
use super::config::{OnError, TlsConfig};
use super::hello::{ClientHello, read_client_hello};
use crate::config::Peer;
use crate::conn::Conn;
use crate::handoff::{Outcome, hand_off};
use crate::metrics::FailReason;
use crate::policy::Decision;
use crate::proxy::{Shared, listen};

/// A bound TLS listener of a proxy.
#[derive(Debug)]
pub struct TlsListener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A running listener; dropping it stops accepting (connections already accepted go on).
#[derive(Debug)]
pub struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TlsListener {
    /// Binds `shared.config.tls`'s listen address; `None` without a `[tls]` configuration.
    pub fn bind(shared: &Arc<Shared>) -> io::Result<Option<TlsListener>> {
        let Some(tls) = &shared.config.tls else {
            return Ok(None);
        };
        let listener = listen(tls.listen).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {} (TLS): {e}", tls.listen),
            )
        })?;
        Ok(Some(TlsListener {
            listener,
            shared: shared.clone(),
        }))
    }

    /// The address TLS connections are accepted on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Runs the accept loop on a task of its own.
    pub fn spawn(self) -> Running {
        Running(tokio::spawn(self.run()))
    }

    /// Accepts and serves TLS connections until the task is dropped.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let m = &shared.metrics;
                        m.connections_accepted.fetch_add(1, Relaxed);
                        m.connections_open.fetch_add(1, Relaxed);
                        serve_tls_connection(&shared, stream).await;
                        m.connections_open.fetch_sub(1, Relaxed);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Serves one TLS connection: read the hello, decide, hand off or relay.
pub async fn serve_tls_connection(shared: &Shared, stream: TcpStream) {
    let Some(tls) = &shared.config.tls else {
        return;
    };
    let m = &shared.metrics;
    let tm = &m.tls;
    tm.connections.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    let mut c1 = Conn::new(stream);
    let mut sni = None;
    let owner = match read_hello(&mut c1, tls).await {
        Ok(h) => {
            tm.hellos.fetch_add(1, Relaxed);
            if h.sni.is_none() {
                tm.hellos_without_sni.fetch_add(1, Relaxed);
            }
            let owner = tls.routes.owner(h.sni.as_deref(), &h.alpn);
            tracing::trace!(sni = ?h.sni, alpn = ?h.alpn, records = h.records, owner, "ClientHello");
            sni = h.sni;
            owner
        }
        Err(r) => {
            tm.reject(r);
            tracing::debug!(reason = r.name(), "no usable ClientHello");
            match (tls.on_error, r) {
                (OnError::Default, Rejected::Hello(_)) => {
                    tm.sent_to_default.fetch_add(1, Relaxed);
                    tls.routes.default_owner()
                }
                _ => {
                    // Nothing was answered; a FIN tells the client as much as an alert would.
                    let _ = c1.get_mut().shutdown().await;
                    return;
                }
            }
        }
    };
    if let (Decision::Peer(id), Some(ctx)) = (tls.routes.as_decision(owner), &shared.handoff) {
        tm.to_peer.fetch_add(1, Relaxed);
        match shared.config.peer(id) {
            Some(p) => {
                let target = Peer {
                    id: p.id.clone(),
                    addr: tls.peer_addr(p),
                    weight: p.weight,
                };
                for attempt in 0..tls.handoff_attempts {
                    if attempt > 0 {
                        tm.handoff_retries.fetch_add(1, Relaxed);
                        tokio::time::sleep(RETRY_PAUSE * attempt).await;
                    }
                    if hand_off(ctx, &mut c1, &target).await == Outcome::HandedOff {
                        return;
                    }
                }
            }
            None => m.failed(FailReason::UnknownPeer),
        }
        // The owner could not take the connection. The local TLS server would present its own
        // certificate, which is right only for a name it holds (or when the hello named none);
        // for any other name the client would see a certificate for the wrong name, so it gets
        // a TLS alert instead, as from a server that cannot serve it now.
        if !tls.serves_locally(sni.as_deref()) {
            tm.refused_after_handoff.fetch_add(1, Relaxed);
            tracing::debug!(
                ?sni,
                owner = id,
                "hand-off failed; the name is not served here: alert and close"
            );
            let _ = c1.get_mut().write_all(&ALERT_INTERNAL_ERROR).await;
            let _ = c1.get_mut().shutdown().await;
            return;
        }
        tm.fallback_local.fetch_add(1, Relaxed);
    }
    tm.local.fetch_add(1, Relaxed);
    relay(c1, tls.upstream, shared).await;
}

/// Pause before hand-off attempt k+1, times k.
pub const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// A fatal `internal_error` alert (RFC 8446 6, RFC 5246 7.2) in a plaintext record: what a
/// server that cannot complete the handshake sends before any handshake message of its own.
pub const ALERT_INTERNAL_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// Reads until the buffer holds a complete ClientHello, within the hello time-out as a whole
/// (a client that trickles bytes gets no more time than one that sends nothing).
async fn read_hello(c1: &mut Conn<TcpStream>, tls: &TlsConfig) -> Result<ClientHello, Rejected> {
    let deadline = tokio::time::Instant::now() + tls.hello_timeout;
    loop {
        if let Some(h) = read_client_hello(c1.buffered(), &tls.limits).map_err(Rejected::Hello)? {
            return Ok(h);
        }
        match tokio::time::timeout_at(deadline, c1.fill()).await {
            Err(_) => return Err(Rejected::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Rejected::Closed),
            Ok(Ok(_)) => {}
        }
    }
}

/// Relays the connection, as TCP, to the local TLS server: the bytes read so far first.
async fn relay(c1: Conn<TcpStream>, upstream: SocketAddr, shared: &Shared) {
    let limit = shared.config.timeouts.connect;
    let mut up = match tokio::time::timeout(limit, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            shared.metrics.tls.upstream_errors.fetch_add(1, Relaxed);
            tracing::warn!(%upstream, error = %e, "cannot reach the local TLS server");
            return;
        }
        Err(_) => {
            shared.metrics.tls.upstream_errors.fetch_add(1, Relaxed);
            tracing::warn!(%upstream, "connecting to the local TLS server timed out");
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let (mut client, pending) = c1.into_parts();
    if up.write_all(&pending).await.is_err() {
        return;
    }
    // Both directions until both ends closed; a half-close is passed on.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
}
