//! Local serving: one request forwarded to the node's own web server over pooled keep-alive
//! connections, its body and the response body streamed, never held whole.
//!
//! The upstream connection belongs to the proxy and is always HTTP/1.1 persistent, whatever the
//! client's connection does; hop-by-hop fields are not forwarded (RFC 9110 section 7.6.1).
//! A request without a body that fails on a reused connection before any response byte (the
//! server closed it while idle) is retried once on a fresh connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::{Conn, CopyError, ReadHead};
use crate::framing::{BodyFraming, Limits, RequestHead, parse_response, simple_response};
use crate::metrics::Metrics;
use crate::sockopt::{connect_with_mss, idle_alive};

/// Limits on upstream response heads (more generous than on requests: the server is trusted).
pub const RESPONSE_LIMITS: Limits = Limits {
    max_header_bytes: 64 * 1024,
    max_headers: 256,
};
/// Idle upstream connections older than this are not reused.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Whether the client connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Read the next request.
    KeepAlive,
    /// Close the connection (the response said so, or it cannot continue).
    Close,
}

/// The node's web server and the idle connections to it.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    host: String,
    idle: Mutex<Vec<(Conn<TcpStream>, Instant)>>,
    max_idle: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

enum Attempt {
    /// Done; the client connection goes on or not.
    Done(Served),
    /// Nothing reached the client and nothing was consumed from it: try a fresh connection.
    Retry,
}

impl Upstream {
    /// An upstream at `addr`, keeping up to `max_idle` idle connections; `timeout` bounds
    /// connecting and each read.
    pub fn new(
        addr: SocketAddr,
        max_idle: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Upstream {
            addr,
            host: addr.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle,
            timeout,
            metrics,
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn checkout_idle(&self) -> Option<Conn<TcpStream>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((c, t)) = idle.pop() {
            if t.elapsed() < MAX_IDLE_AGE && idle_alive(c.get_ref()) {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, c: Conn<TcpStream>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((c, Instant::now()));
        }
    }

    async fn connect(&self) -> std::io::Result<Conn<TcpStream>> {
        self.metrics.upstream_connects.fetch_add(1, Relaxed);
        Ok(Conn::new(
            connect_with_mss(self.addr, None, self.timeout).await?,
        ))
    }

    /// Serves `req` (whose head is still the first thing in `client`'s buffer) through the
    /// upstream and relays the response.
    pub async fn serve<S>(&self, client: &mut Conn<S>, req: &RequestHead) -> Served
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        client.consume(req.head_len);
        let own_continue = req.expect_continue && req.body != BodyFraming::Empty;
        if own_continue
            && client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return Served::Close;
        }
        let head = req.encode_for_upstream(&self.host, own_continue);
        let mut fresh_only = false;
        loop {
            let (up, reused) = match if fresh_only {
                None
            } else {
                self.checkout_idle()
            } {
                Some(c) => (c, true),
                None => match self.connect().await {
                    Ok(c) => (c, false),
                    Err(e) => {
                        tracing::warn!(upstream = %self.addr, error = %e, "upstream connect failed");
                        return self.fail(client, req, 502, true).await;
                    }
                },
            };
            match self
                .attempt(client, req, &head, up, reused, own_continue)
                .await
            {
                Attempt::Done(s) => return s,
                Attempt::Retry => fresh_only = true,
            }
        }
    }

    async fn attempt<S>(
        &self,
        client: &mut Conn<S>,
        req: &RequestHead,
        head: &[u8],
        mut up: Conn<TcpStream>,
        reused: bool,
        own_continue: bool,
    ) -> Attempt
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let can_retry = reused && req.body == BodyFraming::Empty;
        if let Err(e) = up.write_all(head).await {
            if can_retry {
                return Attempt::Retry;
            }
            tracing::debug!(error = %e, "upstream write failed");
            return Attempt::Done(self.fail(client, req, 502, true).await);
        }
        match client
            .copy_body(req.body, &mut up, false, self.timeout)
            .await
        {
            Ok(_) => {}
            Err(CopyError::Write(e)) => {
                tracing::debug!(error = %e, "upstream failed while taking the request body");
                return Attempt::Done(self.fail(client, req, 502, false).await);
            }
            Err(e) => {
                // The client stopped sending its body, or sent a malformed one.
                tracing::debug!(error = %e, "request body incomplete");
                if matches!(e, CopyError::Chunk(_)) {
                    self.metrics.requests_bad.fetch_add(1, Relaxed);
                    let _ = client.write_all(&simple_response(400, true, &[])).await;
                }
                return Attempt::Done(Served::Close);
            }
        }
        let head_req = req.method.eq_ignore_ascii_case("HEAD");
        let resp = loop {
            let r = up
                .read_head(self.timeout, |b| {
                    parse_response(b, &RESPONSE_LIMITS, head_req)
                })
                .await;
            let resp = match r {
                Ok(ReadHead::Head(h)) => h,
                Ok(ReadHead::Closed) | Err(_) if can_retry => return Attempt::Retry,
                Ok(ReadHead::TimedOut) => {
                    return Attempt::Done(self.fail(client, req, 504, false).await);
                }
                other => {
                    tracing::debug!(result = ?other.map(|_| ()), "upstream response unusable");
                    return Attempt::Done(self.fail(client, req, 502, false).await);
                }
            };
            if (100..200).contains(&resp.status) {
                up.consume(resp.head_len);
                if resp.status == 101 {
                    return Attempt::Done(self.fail(client, req, 502, true).await);
                }
                // Interim responses go to HTTP/1.1 clients, except the 100 the proxy sent itself.
                let relay = !(own_continue && resp.status == 100)
                    && req.version == crate::framing::Version::Http11;
                if relay {
                    let interim = resp.encode_for_client(req, resp.relay_for(req));
                    if client.write_all(&interim).await.is_err() {
                        return Attempt::Done(Served::Close);
                    }
                }
                continue;
            }
            break resp;
        };
        let relay = resp.relay_for(req);
        let out = resp.encode_for_client(req, relay);
        up.consume(resp.head_len);
        if client.write_all(&out).await.is_err() {
            return Attempt::Done(Served::Close);
        }
        match up
            .copy_body(resp.body, client, relay.dechunk, self.timeout)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                // Part of the response is out: the only honest end is to close.
                if !matches!(e, CopyError::Write(_)) {
                    self.metrics.upstream_errors.fetch_add(1, Relaxed);
                }
                tracing::debug!(error = %e, "response body relay failed");
                return Attempt::Done(Served::Close);
            }
        }
        if resp.keep_alive && up.buffered().is_empty() {
            self.checkin(up);
        }
        Attempt::Done(if relay.close {
            Served::Close
        } else {
            Served::KeepAlive
        })
    }

    /// Answers `status` for a request the upstream could not serve. `close` when the request
    /// body was not (or not entirely) consumed, or the client asked to close.
    async fn fail<S>(
        &self,
        client: &mut Conn<S>,
        req: &RequestHead,
        status: u16,
        body_pending: bool,
    ) -> Served
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.metrics.upstream_errors.fetch_add(1, Relaxed);
        let close = !req.keep_alive || (body_pending && req.body != BodyFraming::Empty);
        if client
            .write_all(&simple_response(status, close, &[]))
            .await
            .is_err()
            || close
        {
            Served::Close
        } else {
            Served::KeepAlive
        }
    }
}
