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

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn::{Conn, CopyError, ReadHead};
use crate::framing::{
    BodyFraming, ChunkedDecoder, Limits, RequestHead, parse_response, simple_response,
};
use crate::metrics::Metrics;
use crate::sockopt::{connect_with_mss, idle_alive};
use crate::splice::{Pipe, PipePool, SpliceError, relay};

/// Limits on upstream response heads (more generous than on requests: the server is trusted).
pub const RESPONSE_LIMITS: Limits = Limits {
    max_header_bytes: 64 * 1024,
    max_headers: 256,
};
/// Idle upstream connections older than this are not reused.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Bytes asked per read of an upstream connection: enough for a response head and a small
/// body (4 KiB and its head) in one read; the rest of a larger body is spliced without entering
/// user space. (At 4 KiB a 4 KiB response needed a second round, spliced, for its last bytes.)
pub const UPSTREAM_READ: usize = 16 * 1024;
/// Chunk data runs at least this long are spliced; shorter ones are read with the framing.
pub const SPLICE_MIN: u64 = 4096;
/// Bytes asked per read of the next chunk-size line after a spliced chunk (the line and a
/// little data; the rest of the chunk is spliced again).
pub const CHUNK_LINE_READ: usize = 512;

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
    pipes: PipePool,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// Whether the proxy answers the request's `Expect: 100-continue` itself (it reads the body
/// before the response).
fn answers_continue(req: &RequestHead) -> bool {
    req.expect_continue && req.body != BodyFraming::Empty
}

/// The upstream connection a client connection keeps between its requests, so that a
/// keep-alive client's requests go over one upstream connection without passing through the
/// shared idle list (and its lock) and without the churn of a list smaller than the number of
/// clients. When the client connection ends (or is handed off), the connection goes back to the
/// idle list.
#[derive(Debug)]
pub struct Held<'a> {
    upstream: &'a Upstream,
    conn: Option<(Conn<TcpStream>, Instant)>,
}

impl Held<'_> {
    /// The held connection if it is young enough and still clean; a stale one is dropped.
    fn take_usable(&mut self) -> Option<Conn<TcpStream>> {
        let (c, t) = self.conn.take()?;
        (t.elapsed() < MAX_IDLE_AGE && idle_alive(c.get_ref())).then_some(c)
    }

    fn put(&mut self, c: Conn<TcpStream>) {
        self.conn = Some((c, Instant::now()));
    }

    /// Whether a connection is held now.
    pub fn is_holding(&self) -> bool {
        self.conn.is_some()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some((c, t)) = self.conn.take() {
            self.upstream.checkin(c, t);
        }
    }
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
            pipes: PipePool::new(max_idle),
            timeout,
            metrics,
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Idle pipes held now for splicing (two descriptors each).
    pub fn idle_pipes(&self) -> usize {
        self.pipes.idle_count()
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

    fn checkin(&self, c: Conn<TcpStream>, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push((c, since));
        }
    }

    /// A holder for the upstream connection of one client connection (see [`Held`]).
    pub fn hold(&self) -> Held<'_> {
        Held {
            upstream: self,
            conn: None,
        }
    }

    async fn connect(&self) -> std::io::Result<Conn<TcpStream>> {
        self.metrics.upstream_connects.fetch_add(1, Relaxed);
        let mut c = Conn::new(connect_with_mss(self.addr, None, self.timeout).await?);
        c.set_read_size(UPSTREAM_READ);
        Ok(c)
    }

    /// Serves `req` (whose head is still the first thing in `client`'s buffer) through the
    /// upstream and relays the response. The upstream connection is the one `held` keeps
    /// from the client's previous request if it is still usable, else an idle or a new one;
    /// a connection that stays usable after the response is kept in `held`.
    pub async fn serve(
        &self,
        client: &mut Conn<TcpStream>,
        req: &RequestHead,
        held: &mut Held<'_>,
    ) -> Served {
        client.consume(req.head_len);
        let own_continue = answers_continue(req);
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
                held.take_usable().or_else(|| self.checkout_idle())
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
            match self.attempt(client, req, &head, up, reused, held).await {
                Attempt::Done(s) => return s,
                Attempt::Retry => fresh_only = true,
            }
        }
    }

    async fn attempt(
        &self,
        client: &mut Conn<TcpStream>,
        req: &RequestHead,
        head: &[u8],
        mut up: Conn<TcpStream>,
        reused: bool,
        held: &mut Held<'_>,
    ) -> Attempt {
        let own_continue = answers_continue(req);
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
        match self
            .relay_response(&mut up, client, &out, resp.body, relay.dechunk)
            .await
        {
            Ok(()) => {}
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
            held.put(up);
        }
        Attempt::Done(if relay.close {
            Served::Close
        } else {
            Served::KeepAlive
        })
    }

    /// Writes the response head `head` to the client and relays the body framed as `body`
    /// from `up`: the bytes already read with the head go out with it in one vectored write,
    /// the rest of a sized or until-close body is spliced, and a chunked body has its chunk
    /// data spliced while only the chunk-size lines pass through the buffer (with `dechunk`,
    /// the lines are dropped). Falls back to copying when no pipe can be had.
    async fn relay_response(
        &self,
        up: &mut Conn<TcpStream>,
        client: &mut Conn<TcpStream>,
        head: &[u8],
        body: BodyFraming,
        dechunk: bool,
    ) -> Result<(), CopyError> {
        let len = match body {
            BodyFraming::Empty => return client.write_all(head).await.map_err(CopyError::Write),
            BodyFraming::Length(n) => Some(n),
            BodyFraming::UntilClose => None,
            BodyFraming::Chunked => return self.relay_chunked(up, client, head, dechunk).await,
        };
        let now = len.map_or(up.buffered().len(), |n| {
            (up.buffered().len() as u64).min(n) as usize
        });
        client
            .write_all_two(head, &up.buffered()[..now])
            .await
            .map_err(CopyError::Write)?;
        up.consume(now);
        let left = len.map(|n| n - now as u64);
        if left == Some(0) {
            return Ok(());
        }
        let Ok(mut pipe) = self.pipes.take() else {
            let rest = match left {
                Some(n) => BodyFraming::Length(n),
                None => BodyFraming::UntilClose,
            };
            return up
                .copy_body(rest, client, false, self.timeout)
                .await
                .map(|_| ());
        };
        self.splice(up, client, &mut pipe, left).await?;
        self.pipes.put(pipe);
        Ok(())
    }

    /// Splices `len` bytes (`None`: until close) from `up` to `client`, keeping the counts.
    async fn splice(
        &self,
        up: &mut Conn<TcpStream>,
        client: &mut Conn<TcpStream>,
        pipe: &mut Pipe,
        len: Option<u64>,
    ) -> Result<(), CopyError> {
        let mut n = 0u64;
        let r = relay(
            up.get_ref(),
            client.get_ref(),
            pipe,
            len,
            self.timeout,
            &mut n,
        )
        .await;
        client.note_sent(n);
        r.map_err(|e| match e {
            SpliceError::Read(e) => CopyError::Read(e),
            SpliceError::Write(e) => CopyError::Write(e),
            SpliceError::Truncated => CopyError::Truncated,
            SpliceError::TimedOut => CopyError::TimedOut,
        })
    }

    /// [`Upstream::relay_response`] for a chunked body.
    async fn relay_chunked(
        &self,
        up: &mut Conn<TcpStream>,
        client: &mut Conn<TcpStream>,
        head: &[u8],
        dechunk: bool,
    ) -> Result<(), CopyError> {
        let mut pipe: Option<Pipe> = None;
        let mut dec = ChunkedDecoder::new();
        // Bytes for the client not written yet (the head, then framing and short data).
        let mut out: Vec<u8> = head.to_vec();
        let mut after_splice = false;
        loop {
            while !up.buffered().is_empty() && !dec.is_done() {
                let step = dec.step(up.buffered()).map_err(CopyError::Chunk)?;
                let b = up.buffered();
                if dechunk {
                    out.extend_from_slice(&b[step.data.clone()]);
                } else {
                    out.extend_from_slice(&b[..step.consumed]);
                }
                up.consume(step.consumed);
            }
            if dec.is_done() {
                client.write_all(&out).await.map_err(CopyError::Write)?;
                if let Some(p) = pipe {
                    self.pipes.put(p);
                }
                return Ok(());
            }
            let run = dec.data_remaining();
            if run >= SPLICE_MIN
                && (pipe.is_some() || {
                    pipe = self.pipes.take().ok();
                    pipe.is_some()
                })
            {
                if !out.is_empty() {
                    client.write_all(&out).await.map_err(CopyError::Write)?;
                    out.clear();
                }
                let p = pipe.as_mut().expect("taken above");
                self.splice(up, client, p, Some(run)).await?;
                dec.skip_data(run);
                after_splice = true;
                continue;
            }
            // Framing (or a short run) is needed: send what is ready, then read.
            if !out.is_empty() {
                client.write_all(&out).await.map_err(CopyError::Write)?;
                out.clear();
            }
            let max = if after_splice {
                CHUNK_LINE_READ
            } else {
                crate::conn::READ_CHUNK
            };
            after_splice = false;
            match up.fill_at_most_within(max, self.timeout).await {
                Ok(0) => return Err(CopyError::Truncated),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(CopyError::TimedOut);
                }
                Err(e) => return Err(CopyError::Read(e)),
            }
        }
    }

    /// Answers `status` for a request the upstream could not serve. `close` when the request
    /// body was not (or not entirely) consumed, or the client asked to close.
    async fn fail(
        &self,
        client: &mut Conn<TcpStream>,
        req: &RequestHead,
        status: u16,
        body_pending: bool,
    ) -> Served {
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
