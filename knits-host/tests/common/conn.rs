//! One verified client connection that a test steers: requests go one at a time, a request can
//! wait for the test's permission, the reading can be paced (so a transfer lasts while the test
//! attacks it), and every event is reported. Bodies are checked with knits_proxy::content.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use knits_host::http::{ResponseParser, Step};
use knits_proxy::content::Verifier;

/// Which node should serve a request (prefix policy of the cluster's proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// `/obj/any/...`: wherever the connection is now.
    Here,
    /// `/obj/nK/...`: node `k` places after the node the first request named (of `nodes`).
    After(usize),
}

/// One request.
#[derive(Debug, Clone)]
pub struct Req {
    pub on: On,
    pub size: u64,
}

impl Req {
    pub fn here(size: u64) -> Req {
        Req { on: On::Here, size }
    }
    pub fn after(k: usize, size: u64) -> Req {
        Req {
            on: On::After(k),
            size,
        }
    }
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected(SocketAddr),
    /// Request `i` went out.
    Sent(usize),
    /// Response `i` began; the node that serves it.
    Head(usize, String),
    /// Response `i` is complete and verified.
    Done(usize),
}

/// How a connection ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server closed (EOF), possibly in the middle of a response.
    Closed(String),
    /// The connection was reset.
    Reset(String),
    /// Nothing arrived for the inactivity limit.
    Timeout(String),
    /// Wrong bytes, a bad response, or anything the verifier or parser refused.
    Corrupt(String),
    /// Connect or other socket errors.
    Other(String),
}

impl Failure {
    /// True for an end a client can live with: a close or a reset.
    pub fn is_clean(&self) -> bool {
        matches!(self, Failure::Closed(_) | Failure::Reset(_))
    }
}

/// The end of a connection.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Responses completed and verified.
    pub done: usize,
    /// Body bytes verified (also of an incomplete response).
    pub bytes: u64,
    /// The node of each response that began.
    pub nodes: Vec<String>,
    pub failure: Option<Failure>,
    /// When the connection ended.
    pub ended: Instant,
    /// Time from connect to the end.
    pub elapsed: Duration,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Spec {
    pub ns: String,
    pub target: SocketAddr,
    pub nodes: usize,
    /// Object names are `<tag>r<i>`, so every connection has its own objects.
    pub tag: String,
    pub reqs: Vec<Req>,
    /// Requests that wait for [`Conn::go`] before they are sent.
    pub gated: BTreeSet<usize>,
    /// Read pace in bytes/s (0: as fast as possible); changeable while running.
    pub pace: u64,
    /// Inactivity limit.
    pub timeout: Duration,
}

impl Spec {
    pub fn new(ns: &str, target: SocketAddr, nodes: usize, tag: &str, reqs: Vec<Req>) -> Spec {
        Spec {
            ns: ns.to_string(),
            target,
            nodes,
            tag: tag.to_string(),
            reqs,
            gated: BTreeSet::new(),
            pace: 0,
            timeout: Duration::from_secs(15),
        }
    }
}

/// A running connection.
pub struct Conn {
    events: Receiver<Event>,
    go: Sender<()>,
    pace: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<Outcome>>,
    /// Events seen so far (by `wait_for`).
    pub log: Vec<Event>,
}

impl Conn {
    /// Starts the connection on its own thread (inside the spec's namespace).
    pub fn start(spec: Spec) -> Conn {
        let (etx, erx) = channel();
        let (gtx, grx) = channel();
        let pace = Arc::new(AtomicU64::new(spec.pace));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = Live {
            pace: pace.clone(),
            bytes: bytes.clone(),
            stop: stop.clone(),
        };
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Outcome {
                done: 0,
                bytes: 0,
                nodes: Vec::new(),
                failure: None,
                ended: t0,
                elapsed: Duration::ZERO,
            };
            if let Err(e) = knits_host::netns::enter(&spec.ns) {
                out.failure = Some(Failure::Other(format!("enter {}: {e}", spec.ns)));
            } else if let Err(f) = drive(&spec, &etx, &grx, &live, &mut out) {
                out.failure = Some(f);
            }
            out.ended = Instant::now();
            out.elapsed = t0.elapsed();
            out
        });
        Conn {
            events: erx,
            go: gtx,
            pace,
            bytes,
            stop,
            thread: Some(thread),
            log: Vec::new(),
        }
    }

    /// Lets the next gated request go.
    pub fn go(&self) {
        let _ = self.go.send(());
    }

    /// Changes the read pace (0: unlimited).
    pub fn set_pace(&self, bytes_per_s: u64) {
        self.pace.store(bytes_per_s, Ordering::Relaxed);
    }

    /// Body bytes verified so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sends no further request once the current one is complete (the connection then ends
    /// without a failure).
    pub fn stop_after_current(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until an event matching `f` arrives (returns it), or fails after `limit`.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Result<Event, String> {
        if let Some(e) = self.log.iter().find(|e| f(e)) {
            return Ok(e.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.log.push(e.clone());
                    if f(&e) {
                        return Ok(e);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out; events so far: {:?}", self.log));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("connection ended; events: {:?}", self.log));
                }
            }
        }
    }

    /// The local address, once connected.
    pub fn local(&mut self, limit: Duration) -> Result<SocketAddr, String> {
        match self.wait_for(limit, |e| matches!(e, Event::Connected(_)))? {
            Event::Connected(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    /// True when the connection's thread has ended.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the end (opens every gate, unpaces) and returns the outcome.
    pub fn finish(mut self) -> Outcome {
        self.set_pace(0);
        for _ in 0..64 {
            self.go();
        }
        let t = self.thread.take().expect("joined once");
        let out = t.join().expect("connection thread panicked");
        while let Ok(e) = self.events.try_recv() {
            self.log.push(e);
        }
        out
    }
}

fn classify_io(what: String, e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => Failure::Reset(format!("{what}: {e}")),
        WouldBlock | TimedOut => Failure::Timeout(format!("{what}: {e}")),
        _ => Failure::Other(format!("{what}: {e}")),
    }
}

fn path_of(spec: &Spec, i: usize, first: Option<&str>) -> Result<(String, String), Failure> {
    let r = &spec.reqs[i];
    let owner = match r.on {
        On::Here => "any".to_string(),
        On::After(k) => {
            let x: usize = first
                .and_then(|f| f.strip_prefix('n'))
                .and_then(|d| d.parse().ok())
                .ok_or_else(|| Failure::Other("a relative request before the first".into()))?;
            format!("n{}", (x - 1 + k) % spec.nodes + 1)
        }
    };
    let name = format!("{owner}/{}r{i}", spec.tag);
    Ok((format!("/obj/{name}?size={}", r.size), name))
}

/// What the test can change or read while the connection runs.
struct Live {
    pace: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn drive(
    spec: &Spec,
    events: &Sender<Event>,
    gate: &Receiver<()>,
    live: &Live,
    out: &mut Outcome,
) -> Result<(), Failure> {
    let pace = &live.pace;
    let mut sock = TcpStream::connect_timeout(&spec.target, spec.timeout)
        .map_err(|e| classify_io(format!("connect {}", spec.target), &e))?;
    let local = sock
        .local_addr()
        .map_err(|e| Failure::Other(e.to_string()))?;
    let _ = events.send(Event::Connected(local));
    sock.set_read_timeout(Some(spec.timeout))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let host = spec.target.ip().to_string();
    let mut parser = ResponseParser::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut first: Option<String> = None;
    for i in 0..spec.reqs.len() {
        if spec.gated.contains(&i) {
            let _ = gate.recv();
        }
        if live.stop.load(Ordering::Relaxed) {
            break;
        }
        let (path, name) = path_of(spec, i, first.as_deref())?;
        sock.write_all(knits_host::http::request(&path, &host, false).as_bytes())
            .map_err(|e| classify_io(format!("writing request {i}"), &e))?;
        let _ = events.send(Event::Sent(i));
        let mut verifier = Verifier::new(&name, 0);
        let mut got = 0u64;
        let mut complete = false;
        while !complete {
            let p = pace.load(Ordering::Relaxed);
            let want = if p == 0 { buf.len() } else { 16 * 1024 };
            let n = match sock.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Failure::Closed(format!(
                        "server closed during response {i} after {got} of {} body bytes",
                        spec.reqs[i].size
                    )));
                }
                Ok(n) => n,
                Err(e) => return Err(classify_io(format!("reading response {i}"), &e)),
            };
            let mut at = 0;
            while at < n {
                let (used, step) = parser
                    .advance(&buf[at..n])
                    .map_err(|e| Failure::Corrupt(format!("response {i}: {e}")))?;
                at += used;
                match step {
                    Step::NeedMore => {}
                    Step::Head(h) => {
                        if h.status != 200 || h.content_length != Some(spec.reqs[i].size) {
                            return Err(Failure::Corrupt(format!(
                                "{path}: status {} length {:?}",
                                h.status, h.content_length
                            )));
                        }
                        let node = h.header("x-knits-node").unwrap_or("?").to_string();
                        if first.is_none() {
                            first = Some(node.clone());
                        }
                        out.nodes.push(node.clone());
                        let _ = events.send(Event::Head(i, node));
                    }
                    Step::Body(b) => {
                        verifier
                            .update(b)
                            .map_err(|m| Failure::Corrupt(format!("{path}: {m}")))?;
                        got += b.len() as u64;
                        out.bytes += b.len() as u64;
                        live.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                    }
                    Step::Done => {
                        if at < n {
                            return Err(Failure::Corrupt(format!(
                                "{} bytes after response {i}",
                                n - at
                            )));
                        }
                        complete = true;
                        out.done += 1;
                        let _ = events.send(Event::Done(i));
                    }
                }
            }
            if !complete && let Ok((_, Step::Done)) = parser.advance(&[]) {
                complete = true;
                out.done += 1;
                let _ = events.send(Event::Done(i));
            }
            if let Some(ns) = (n as u64 * 1_000_000_000).checked_div(p) {
                std::thread::sleep(Duration::from_nanos(ns));
            }
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
    Ok(())
}
