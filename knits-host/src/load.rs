//! The load client: persistent, pipelined HTTP/1.1 connections that verify every body byte.
//!
//! Each connection runs on its own thread with blocking sockets: it writes up to `pipeline`
//! requests ahead, then one more each time a response completes. Bodies are checked on the fly
//! against [`knits_proxy::content`] (`GET /obj/<name>?size=N` is `N` bytes of object `<name>`).
//! When a namespace is given, each thread enters it with setns(2) before creating its socket, so
//! the client runs inside the cluster's client namespace while the process stays where it is.
//!
//! A request's phase comes from the `x-knits-node` header the origin sets: a request served by
//! another node than the one before it on the same connection is "during" a hand-off (its
//! latency includes the splice); requests before a connection's first hand-off are "before",
//! later ones "after".

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use knits_proxy::content::Verifier;

use crate::http::{self, ResponseParser, Step};

/// Header the origin uses to name the node that served.
pub const NODE_HEADER: &str = "x-knits-node";

/// One request of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Target, e.g. `/obj/n2/a?size=1000`.
    pub path: String,
}

impl Request {
    /// `GET /obj/<name>?size=<size>`.
    pub fn object(name: &str, size: u64) -> Request {
        Request {
            path: format!("/obj/{name}?size={size}"),
        }
    }

    /// An object owned by the node `k` places after the one that served the connection's first
    /// request (of `nodes`, numbered n1..nN): `/obj/{rel:k:nodes}/<suffix>?size=<size>`. The
    /// client resolves it once the first response names its node, so a script can plan hand-offs
    /// without knowing where the switch sprays the connection.
    pub fn relative(k: usize, nodes: usize, suffix: &str, size: u64) -> Request {
        Request {
            path: format!("/obj/{{rel:{k}:{nodes}}}/{suffix}?size={size}"),
        }
    }

    /// True for a path made by [`Request::relative`] that is not resolved yet.
    pub fn is_relative(&self) -> bool {
        self.path.contains("{rel:")
    }

    /// Resolves a relative path given the first node (`nX`); other paths stay as they are.
    pub fn resolve(&self, first: &str) -> Result<Request, String> {
        let Some(start) = self.path.find("{rel:") else {
            return Ok(self.clone());
        };
        let end = self.path[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or("unterminated {rel:")?;
        let mut it = self.path[start + 5..end]
            .split(':')
            .map(|v| v.parse::<usize>());
        let (Some(Ok(k)), Some(Ok(n))) = (it.next(), it.next()) else {
            return Err(format!("bad relative path {}", self.path));
        };
        let x: usize = first
            .strip_prefix('n')
            .and_then(|d| d.parse().ok())
            .filter(|&x| x >= 1 && n >= 1)
            .ok_or_else(|| format!("first node {first:?} is not nK"))?;
        let node = (x - 1 + k) % n + 1;
        Ok(Request {
            path: format!("{}n{node}{}", &self.path[..start], &self.path[end + 1..]),
        })
    }

    /// The object name and size the path asks for, when it is an object path.
    pub fn object_ref(&self) -> Option<(&str, u64)> {
        let rest = self.path.strip_prefix("/obj/")?;
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        let size = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("size="))?
            .parse()
            .ok()?;
        Some((name, size))
    }
}

/// Where a request stands relative to its connection's hand-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Before the connection's first hand-off.
    Before,
    /// Served by another node than the request before it: a hand-off happened for it.
    During,
    /// After a hand-off, on the same node as the request before it.
    After,
}

impl Phase {
    /// All phases.
    pub const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Microseconds from writing the request to the last body byte.
    pub latency_us: u64,
    /// Body bytes received and verified.
    pub bytes: u64,
    /// The node that served (from `x-knits-node`).
    pub node: Option<String>,
    /// Phase.
    pub phase: Phase,
}

/// One connection's results.
#[derive(Debug, Clone, Default)]
pub struct ConnReport {
    /// Completed requests, in order.
    pub requests: Vec<Outcome>,
    /// The first error, if the connection failed.
    pub error: Option<String>,
    /// Hand-offs the connection saw (changes of serving node).
    pub handoffs: usize,
}

/// A load run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Server address (the VIP and port).
    pub target: SocketAddr,
    /// Namespace to run the connections in.
    pub netns: Option<String>,
    /// One script per connection.
    pub scripts: Vec<Vec<Request>>,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Connections open at once (the rest wait).
    pub concurrency: usize,
    /// Inactivity limit per connection.
    pub timeout: Duration,
}

/// Live progress of a run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests completed.
    pub requests: AtomicU64,
    /// Body bytes verified.
    pub bytes: AtomicU64,
    /// Connections that failed.
    pub failed: AtomicU64,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per connection, in script order.
    pub conns: Vec<ConnReport>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Completed requests.
    pub fn requests(&self) -> usize {
        self.conns.iter().map(|c| c.requests.len()).sum()
    }

    /// Verified body bytes.
    pub fn bytes(&self) -> u64 {
        self.conns
            .iter()
            .flat_map(|c| &c.requests)
            .map(|r| r.bytes)
            .sum()
    }

    /// Connections with an error.
    pub fn failures(&self) -> Vec<(usize, &str)> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.error.as_deref().map(|e| (i, e)))
            .collect()
    }

    /// Connections by number of hand-offs seen: index = hand-offs.
    pub fn handoff_histogram(&self) -> Vec<usize> {
        let mut h = Vec::new();
        for c in &self.conns {
            if h.len() <= c.handoffs {
                h.resize(c.handoffs + 1, 0);
            }
            h[c.handoffs] += 1;
        }
        h
    }

    /// Sorted latencies (µs) of the requests in `phase` (all when `None`).
    pub fn latencies(&self, phase: Option<Phase>) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .conns
            .iter()
            .flat_map(|c| &c.requests)
            .filter(|r| phase.is_none_or(|p| r.phase == p))
            .map(|r| r.latency_us)
            .collect();
        v.sort_unstable();
        v
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "requests {} ok on {} connections ({} failed), {:.1} MiB verified in {:.2} s: {:.0} req/s, {:.1} MiB/s",
            self.requests(),
            self.conns.len(),
            self.failures().len(),
            self.bytes() as f64 / (1 << 20) as f64,
            secs,
            self.requests() as f64 / secs,
            self.bytes() as f64 / (1 << 20) as f64 / secs
        );
        let hist: Vec<String> = self
            .handoff_histogram()
            .iter()
            .enumerate()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(s, "connections by hand-offs seen: {}", hist.join(", "));
        let _ = writeln!(
            s,
            "  {:<8} {:>9} {:>10} {:>10} {:>10}",
            "phase", "requests", "p50 ms", "p99 ms", "max ms"
        );
        for p in Phase::ALL.iter().map(|p| Some(*p)).chain([None]) {
            let v = self.latencies(p);
            let _ = writeln!(
                s,
                "  {:<8} {:>9} {:>10.3} {:>10.3} {:>10.3}",
                p.map(Phase::name).unwrap_or("all"),
                v.len(),
                http::percentile(&v, 50.0) as f64 / 1000.0,
                http::percentile(&v, 99.0) as f64 / 1000.0,
                v.last().copied().unwrap_or(0) as f64 / 1000.0
            );
        }
        for (i, e) in self.failures().iter().take(5) {
            let _ = writeln!(s, "  connection {i} failed: {e}");
        }
        s
    }
}

/// Runs `spec`; `progress` is updated as requests complete.
pub fn run(spec: &Spec, progress: Arc<Progress>) -> Report {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let scripts = Arc::new(spec.scripts.clone());
    let results: Arc<std::sync::Mutex<Vec<Option<ConnReport>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; spec.scripts.len()]));
    let workers = spec.concurrency.clamp(1, spec.scripts.len().max(1));
    let mut threads = Vec::new();
    for _ in 0..workers {
        let (next, scripts, results, progress) = (
            next.clone(),
            scripts.clone(),
            results.clone(),
            progress.clone(),
        );
        let (target, netns, pipeline, timeout) =
            (spec.target, spec.netns.clone(), spec.pipeline, spec.timeout);
        threads.push(std::thread::spawn(move || {
            if let Some(ns) = &netns
                && let Err(e) = crate::netns::enter(ns)
            {
                // Every connection of this worker fails with the reason.
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= scripts.len() {
                        return;
                    }
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(ConnReport {
                            error: Some(e.to_string()),
                            ..Default::default()
                        });
                    }
                }
            }
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= scripts.len() {
                    return;
                }
                let rep = connection(target, &scripts[i], pipeline, timeout, &progress);
                if rep.error.is_some() {
                    progress.failed.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(rep);
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let conns = results
        .lock()
        .map(|mut r| {
            r.drain(..)
                .map(|c| {
                    c.unwrap_or_else(|| ConnReport {
                        error: Some("worker died".into()),
                        ..Default::default()
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Report {
        conns,
        elapsed: start.elapsed(),
    }
}

/// Runs one connection's script.
pub fn connection(
    target: SocketAddr,
    script: &[Request],
    pipeline: usize,
    timeout: Duration,
    progress: &Progress,
) -> ConnReport {
    let mut rep = ConnReport::default();
    let mut local = None;
    if let Err(e) = drive(
        target,
        script,
        pipeline.max(1),
        timeout,
        progress,
        &mut rep,
        &mut local,
    ) {
        rep.error = Some(match local {
            Some(l) => format!("{e} (client {l})"),
            None => e,
        });
    }
    rep
}

fn drive(
    target: SocketAddr,
    script: &[Request],
    pipeline: usize,
    timeout: Duration,
    progress: &Progress,
    rep: &mut ConnReport,
    local: &mut Option<SocketAddr>,
) -> Result<(), String> {
    let mut sock = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("connect {target}: {e}"))?;
    *local = sock.local_addr().ok();
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let _ = sock.set_nodelay(true);
    let host = target.ip().to_string();
    let mut resolved: Vec<Request> = script.to_vec();
    // With relative requests, the first goes alone: its response names the node the
    // connection was sprayed to, which the others are relative to.
    let mut unresolved = script.iter().any(Request::is_relative);
    let mut sent_at: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut sent = 0;
    let mut parser = ResponseParser::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut current: Option<(usize, Verifier, u64, Option<String>, u16)> = None;
    let mut last_node: Option<String> = None;
    let mut handed_off = false;
    let mut done = 0;
    let send_more = |sock: &mut TcpStream,
                     sent: &mut usize,
                     sent_at: &mut std::collections::VecDeque<Instant>,
                     done: usize,
                     script: &[Request],
                     depth: usize|
     -> Result<(), String> {
        let mut batch = String::new();
        while *sent < script.len() && *sent < done + depth {
            batch.push_str(&http::request(&script[*sent].path, &host, false));
            sent_at.push_back(Instant::now());
            *sent += 1;
        }
        if !batch.is_empty() {
            sock.write_all(batch.as_bytes())
                .map_err(|e| format!("writing request {}: {e}", *sent))?;
        }
        Ok(())
    };
    send_more(
        &mut sock,
        &mut sent,
        &mut sent_at,
        done,
        &resolved,
        if unresolved { 1 } else { pipeline },
    )?;
    let script = &mut resolved;
    while done < script.len() {
        let n = match sock.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "server closed the connection after {done} of {} responses",
                    script.len()
                ));
            }
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(format!(
                    "response {done} ({}): nothing received for {} ms",
                    script[done].path,
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("reading response {done}: {e}")),
        };
        let mut at = 0;
        loop {
            let (used, step) = parser
                .advance(&buf[at..n])
                .map_err(|e| format!("response {done}: {e}"))?;
            at += used;
            match step {
                Step::NeedMore => {
                    if at >= n {
                        break;
                    }
                }
                Step::Head(h) => {
                    let req = &script[done];
                    let name = req
                        .object_ref()
                        .map(|(n, _)| n.to_string())
                        .unwrap_or_default();
                    if h.status != 200 {
                        return Err(format!("{} answered {} (want 200)", req.path, h.status));
                    }
                    if let Some((_, size)) = req.object_ref()
                        && h.content_length != Some(size)
                    {
                        return Err(format!(
                            "{}: Content-Length {:?}, want {size}",
                            req.path, h.content_length
                        ));
                    }
                    let node = h.header(NODE_HEADER).map(str::to_string);
                    current = Some((done, Verifier::new(&name, 0), 0, node, h.status));
                }
                Step::Body(b) => {
                    if let Some((i, v, got, _, _)) = &mut current {
                        if script[*i].object_ref().is_some() {
                            v.update(b)
                                .map_err(|m| format!("{}: {m}", script[*i].path))?;
                        }
                        *got += b.len() as u64;
                    }
                }
                Step::Done => {
                    let Some((i, _, got, node, _)) = current.take() else {
                        return Err("response ended before it began".into());
                    };
                    let t0 = sent_at.pop_front().unwrap_or_else(Instant::now);
                    let phase =
                        if i > 0 && node.is_some() && last_node.is_some() && node != last_node {
                            handed_off = true;
                            rep.handoffs += 1;
                            Phase::During
                        } else if handed_off {
                            Phase::After
                        } else {
                            Phase::Before
                        };
                    if node.is_some() {
                        last_node = node.clone();
                    }
                    rep.requests.push(Outcome {
                        latency_us: t0.elapsed().as_micros() as u64,
                        bytes: got,
                        node,
                        phase,
                    });
                    progress.requests.fetch_add(1, Ordering::Relaxed);
                    progress.bytes.fetch_add(got, Ordering::Relaxed);
                    done += 1;
                    if done == script.len() {
                        break;
                    }
                    if unresolved {
                        let first = last_node
                            .clone()
                            .ok_or("the first response named no node (x-knits-node)")?;
                        for r in script.iter_mut() {
                            *r = r.resolve(&first)?;
                        }
                        unresolved = false;
                    }
                    send_more(&mut sock, &mut sent, &mut sent_at, done, script, pipeline)?;
                }
            }
        }
    }
    if at_least_trailing_bytes(&parser) {
        return Err("bytes after the last response".into());
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
    Ok(())
}

fn at_least_trailing_bytes(p: &ResponseParser) -> bool {
    !p.idle()
}

/// A mixed workload over `nodes` back-ends: `conns` connections, each a persistent pipelined
/// script of `per_conn` requests. Connection `c` sees `c % (max_handoffs + 1)` hand-offs: it
/// starts with local objects (`/obj/any/...`, served where the connection was sprayed), then
/// walks through node-owned objects (`/obj/nK/...`). Sizes cycle through `sizes`.
pub fn mixed_scripts(
    conns: usize,
    per_conn: usize,
    nodes: usize,
    max_handoffs: usize,
    sizes: &[u64],
) -> Vec<Vec<Request>> {
    let mut out = Vec::new();
    let nodes = nodes.max(1);
    for c in 0..conns {
        let hops = c % (max_handoffs + 1);
        let mut v = Vec::new();
        // Split the script into hops + 1 segments: segment 0 local, segment k owned by a node.
        let segs = hops + 1;
        for r in 0..per_conn {
            let seg = (r * segs / per_conn.max(1)).min(segs - 1);
            let size = sizes
                .get((c * 7 + r) % sizes.len().max(1))
                .copied()
                .unwrap_or(1000);
            // Segment k lives k nodes after the one the connection was sprayed to, so
            // consecutive segments are on different nodes whatever the spray did.
            v.push(if seg == 0 || nodes == 1 {
                Request::object(&format!("any/c{c}r{r}"), size)
            } else {
                Request::relative(seg, nodes, &format!("c{c}r{r}"), size)
            });
        }
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_resolve() {
        let r = Request::relative(1, 3, "x", 5);
        assert!(r.is_relative());
        assert_eq!(r.resolve("n1").unwrap().path, "/obj/n2/x?size=5");
        assert_eq!(r.resolve("n3").unwrap().path, "/obj/n1/x?size=5");
        assert_eq!(
            Request::relative(2, 3, "x", 5).resolve("n3").unwrap().path,
            "/obj/n2/x?size=5"
        );
        assert!(r.resolve("zz").is_err());
        assert_eq!(
            Request::object("a", 1).resolve("n1").unwrap(),
            Request::object("a", 1)
        );
    }

    #[test]
    fn object_paths() {
        let r = Request::object("n2/abc", 1234);
        assert_eq!(r.path, "/obj/n2/abc?size=1234");
        assert_eq!(r.object_ref(), Some(("n2/abc", 1234)));
        assert_eq!(
            Request {
                path: "/other".into()
            }
            .object_ref(),
            None
        );
        assert_eq!(
            Request {
                path: "/obj/x?size=zz".into()
            }
            .object_ref(),
            None
        );
    }

    #[test]
    fn mixed_scripts_have_the_planned_hand_offs() {
        let s = mixed_scripts(6, 9, 3, 2, &[0, 100, 70000]);
        assert_eq!(s.len(), 6);
        for (c, script) in s.iter().enumerate() {
            assert_eq!(script.len(), 9);
            assert!(script[0].path.starts_with("/obj/any/"));
            for first in ["n1", "n2", "n3"] {
                let mut owners: Vec<String> = script
                    .iter()
                    .map(|r| {
                        r.resolve(first)
                            .unwrap()
                            .path
                            .replace("/obj/any/", &format!("/obj/{first}/"))
                            [5..7]
                            .to_string()
                    })
                    .collect();
                owners.dedup();
                assert_eq!(owners.len(), 1 + c % 3, "conn {c}: {owners:?}");
            }
        }
    }

    /// A local server answering pipelined requests with origin-like bodies: the client verifies
    /// them, and a wrong byte is caught with its offset.
    #[test]
    fn client_verifies_against_a_local_server() {
        fn serve(corrupt: bool) -> SocketAddr {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            std::thread::spawn(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                let mut nodes = ["n1", "n1", "n2", "n2", "n3"].iter().cycle();
                loop {
                    let mut line = String::new();
                    if std::io::BufRead::read_line(&mut r, &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    loop {
                        let mut h = String::new();
                        std::io::BufRead::read_line(&mut r, &mut h).unwrap();
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let (name, size) = Request { path }
                        .object_ref()
                        .map(|(n, s)| (n.to_string(), s))
                        .unwrap();
                    let mut body = vec![0u8; size as usize];
                    knits_proxy::content::fill(&name, 0, &mut body);
                    if corrupt && size > 10 {
                        body[10] ^= 1;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nx-knits-node: {}\r\n\r\n",
                        nodes.next().unwrap()
                    );
                    c.write_all(head.as_bytes()).unwrap();
                    c.write_all(&body).unwrap();
                }
            });
            addr
        }
        let script: Vec<Request> = (0..5)
            .map(|i| Request::object(&format!("x{i}"), [0, 5, 100_000, 1, 70_000][i]))
            .collect();
        let p = Progress::default();
        let rep = connection(serve(false), &script, 3, Duration::from_secs(5), &p);
        assert_eq!(rep.error, None);
        assert_eq!(rep.requests.len(), 5);
        assert_eq!(rep.handoffs, 2);
        let phases: Vec<Phase> = rep.requests.iter().map(|r| r.phase).collect();
        assert_eq!(
            phases,
            vec![
                Phase::Before,
                Phase::Before,
                Phase::During,
                Phase::After,
                Phase::During
            ]
        );
        assert_eq!(p.bytes.load(Ordering::Relaxed), 170_006);
        let rep = connection(serve(true), &script, 3, Duration::from_secs(5), &p);
        let e = rep.error.unwrap();
        assert!(e.contains("byte 10"), "{e}");
        let report = Report {
            conns: vec![connection(
                serve(false),
                &script,
                1,
                Duration::from_secs(5),
                &p,
            )],
            elapsed: Duration::from_secs(1),
        };
        let t = report.table();
        assert!(t.contains("requests 5 ok"), "{t}");
        assert!(t.contains("during"), "{t}");
    }
}
