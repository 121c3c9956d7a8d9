//! The proxy: accepts connections on the service address and, per connection, reads each
//! request in turn and either serves it through the local upstream or hands the connection off
//! (paper IV.C: "holding on to the connection and processing each request individually and
//! in-order. When a request in the pipeline is not best handled on the local node, the proxy
//! application initiates a hand-off and forwards all remaining requests to the peer node").
//!
//! Requests on a connection are handled strictly one after the other: a response is written
//! completely before the next request is looked at, so pipelined responses keep their order,
//! and at a hand-off every earlier response is already on the wire. A connection handed to this
//! node by a peer is served the same way and may be handed off again.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::ProxyConfig;
use crate::conn::{Conn, ReadHead};
use crate::control::ControlClient;
use crate::framing::{HeadError, parse_request, simple_response};
use crate::handoff::{HandoffContext, Outcome, hand_off};
use crate::metrics::{FailReason, Metrics};
use crate::policy::{Decision, Dispatcher};
use crate::pool::C2Pool;
use crate::upstream::{Served, Upstream};

/// Longest a closing connection is drained so that the last response is not lost to a reset.
pub const LINGER: Duration = Duration::from_secs(2);

/// State shared by every connection of a proxy.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: ProxyConfig,
    /// The dispatch policy.
    pub dispatcher: Dispatcher,
    /// The local web server.
    pub upstream: Upstream,
    /// Hand-off machinery (absent without a switch).
    pub handoff: Option<HandoffContext>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// A bound proxy, ready to run.
#[derive(Debug)]
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<crate::tls::TlsListener>,
}

/// Binds a listening socket with a deep backlog.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(1024)
}

fn ctx_err(what: String) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Proxy {
    /// Binds the service address, the control socket and the metrics address (if any).
    /// Must run inside a tokio runtime.
    pub async fn bind(config: ProxyConfig) -> io::Result<Proxy> {
        let metrics = Metrics::new();
        let listener = listen(config.listen)
            .map_err(ctx_err(format!("cannot listen on {}", config.listen)))?;
        let handoff = match &config.switch {
            Some(sw) => {
                let control = ControlClient::bind(
                    sw,
                    config.timeouts.control_retry,
                    config.timeouts.control_total,
                    metrics.clone(),
                )
                .await
                .map_err(ctx_err(format!(
                    "cannot bind the control socket on {}",
                    sw.bind
                )))?;
                let pool = (config.c2_pool > 0).then(|| {
                    C2Pool::new(
                        config.c2_pool,
                        config.timeouts.pool_max_age,
                        config.timeouts.connect,
                        metrics.clone(),
                    )
                });
                Some(HandoffContext {
                    control,
                    pool,
                    timeouts: config.timeouts,
                    metrics: metrics.clone(),
                    shards: config.shards,
                })
            }
            None => None,
        };
        if let Some(addr) = config.metrics {
            let l = TcpListener::bind(addr)
                .await
                .map_err(ctx_err(format!("cannot serve metrics on {addr}")))?;
            tokio::spawn(crate::metrics::serve(l, metrics.clone()));
        }
        let upstream = Upstream::new(
            config.upstream,
            config.upstream_idle,
            config.timeouts.upstream,
            metrics.clone(),
        );
        let dispatcher = Dispatcher::new(config.node_id.clone(), config.policy.clone());
        let shared = Arc::new(Shared {
            config,
            dispatcher,
            upstream,
            handoff,
            metrics,
        });
        let tls = crate::tls::TlsListener::bind(&shared)?;
        Ok(Proxy {
            listener,
            shared,
            tls,
        })
    }

    /// The address the proxy accepts connections on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address TLS connections are accepted on, with a `[tls]` configuration.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The shared state (configuration, pool, control channel).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Accepts and serves connections until the task is dropped.
    pub async fn run(self) {
        let _tls = self.tls.map(crate::tls::TlsListener::spawn);
        loop {
            match self.listener.accept().await {
                Ok((stream, from)) => {
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        shared.metrics.connections_accepted.fetch_add(1, Relaxed);
                        shared.metrics.connections_open.fetch_add(1, Relaxed);
                        serve_connection(&shared, stream).await;
                        shared.metrics.connections_open.fetch_sub(1, Relaxed);
                        tracing::trace!(%from, "connection done");
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Serves one client connection (or one connection handed over by a peer) to its end.
pub async fn serve_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    if let Some(c1) = serve_requests(shared, Conn::new(stream)).await {
        close_gracefully(c1).await;
    }
}

/// Serves requests until the connection ends, is handed off, or must be closed (then it is
/// returned, after the upstream connection it held went back to the idle list: a closing
/// client does not keep one for its linger).
async fn serve_requests(shared: &Shared, mut c1: Conn<TcpStream>) -> Option<Conn<TcpStream>> {
    let limits = shared.config.limits;
    let m = &shared.metrics;
    let mut held = shared.upstream.hold();
    loop {
        let head = c1
            .read_head(shared.config.timeouts.client_idle, |b| {
                parse_request(b, &limits)
            })
            .await;
        let req = match head {
            Ok(ReadHead::Head(r)) => r,
            Ok(ReadHead::Closed) | Ok(ReadHead::Truncated) | Err(_) => return None,
            Ok(ReadHead::TimedOut) => {
                if !c1.buffered().is_empty() {
                    let _ = c1.write_all(&simple_response(408, true, &[])).await;
                }
                return Some(c1);
            }
            Ok(ReadHead::Bad(e)) => {
                match e {
                    HeadError::TooLarge | HeadError::TooManyHeaders => &m.requests_too_large,
                    HeadError::UnsupportedTransferCoding => &m.requests_unsupported,
                    _ => &m.requests_bad,
                }
                .fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "bad request");
                let _ = c1.write_all(&simple_response(e.status(), true, &[])).await;
                return Some(c1);
            }
        };
        if req.method.eq_ignore_ascii_case("CONNECT") {
            m.requests_unsupported.fetch_add(1, Relaxed);
            let _ = c1.write_all(&simple_response(501, true, &[])).await;
            return Some(c1);
        }

        if let (Decision::Peer(id), Some(ctx)) =
            (shared.dispatcher.decide(req.path()), &shared.handoff)
        {
            match shared.config.peer(id) {
                Some(peer) => {
                    if hand_off(ctx, &mut c1, peer).await == Outcome::HandedOff {
                        return None;
                    }
                }
                None => m.failed(FailReason::UnknownPeer),
            }
        }

        m.requests_local.fetch_add(1, Relaxed);
        match shared.upstream.serve(&mut c1, &req, &mut held).await {
            Served::KeepAlive => {}
            Served::Close => return Some(c1),
        }
    }
}

/// Closes after the last response: FIN first, then read and drop what the client still sends
/// (pipelined requests after a `Connection: close`) for a while, so that closing with unread
/// data does not reset the connection and destroy the response in flight.
async fn close_gracefully<S>(mut c: Conn<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if c.get_mut().shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut total = 0usize;
        while total < 1 << 20 {
            match c.get_mut().read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
