//! Real clients (issue "Real clients: hand-off under ordinary client behaviour"): what ordinary
//! clients send every day, through the switch on TAPs and real Linux TCP on the client and the
//! nodes. Each case failed before the switch and the proxy learned it:
//!
//! 1. a client port reused right after a handed-off `Connection: close` exchange;
//! 2. a reused port whose first connection was not handed off, then is;
//! 3. a keep-alive connection that moves on every request, and refused hand-offs, with the
//!    flow and session tables flat;
//! 4. clients without TCP timestamps or SACK (no such option ever reaches them);
//! 5. a client that half-closes after its request;
//! 6. sustained hand-offs leave no TIME-WAIT per hand-off on the nodes;
//! 7. a control message from the client side is counted as `control_wrong_port`.
//!
//! Needs root; prints a visible skip otherwise (and fails when KNITS_REQUIRE_ROOT=1). Every
//! body byte is checked against `knits_proxy::content`.

mod common;
#[path = "common/raw.rs"]
mod raw;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use knits_core::counters::{DropReason, FlowEvent};
use knits_core::wire::control::ReplyCode;
use knits_host::cluster::{Cluster, ClusterConfig, TimeoutsMs};
use knits_host::faults::FaultConfig;
use knits_host::stats::Snapshot;
use socket2::{Domain, Protocol, Socket, Type};

use common::up;
use raw::{PacketSocket, in_netns};

fn config(stem: &str) -> ClusterConfig {
    ClusterConfig {
        // Long enough that a reused port meets its old connection still in TIME-WAIT.
        timeouts: TimeoutsMs {
            time_wait_ms: Some(60_000),
            ..Default::default()
        },
        ..common::config(stem)
    }
}

/// Runs `f` in the client namespace; when it fails, the switch's counters are printed with
/// the failure.
fn client<T: Send>(c: &Cluster, f: impl FnOnce() -> T + Send) -> T {
    let r = in_netns(&c.client_ns, || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    });
    match r {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{msg}\n{}", settled(c).table());
        }
    }
}

/// The counters once the switch has published (every 100 ms).
fn settled(c: &Cluster) -> Snapshot {
    std::thread::sleep(Duration::from_millis(300));
    c.snapshot()
}

fn sysctl(ns: &str, kv: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", kv])
        .status()
        .expect("sysctl");
    assert!(st.success(), "sysctl {kv} in {ns}");
}

fn event(s: &Snapshot, e: FlowEvent) -> u64 {
    s.core.event_count(e)
}

fn code(s: &Snapshot, r: ReplyCode) -> u64 {
    s.core.handoffs[r.index()]
}

/// A connection to the VIP from `port` (0: any), retried while the old connection on the same
/// port is still closing on the client (LAST-ACK).
fn connect(vip: SocketAddr, port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_nodelay(true).unwrap();
        let bound = s
            .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
            .is_ok();
        // A reused port must connect within one SYN round trip: the switch once black-holed
        // it for about 100 s.
        if bound
            && s.connect_timeout(&vip.into(), Duration::from_secs(3))
                .is_ok()
        {
            let t: TcpStream = s.into();
            t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "cannot connect from port {port} to {vip}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The object name of a `/obj/<name>?size=N` path.
fn object(path: &str) -> &str {
    let p = path.strip_prefix("/obj/").expect("an /obj/ path");
    p.split('?').next().unwrap()
}

/// The owner of the `i`-th of a series of new connections: round-robin spray lands connection
/// `i` on node `(i + phase) % 3 + 1`, so two of three owners here are another node.
fn owner(i: usize) -> usize {
    (2 * i) % 3 + 1
}

fn request(path: &str, close: bool) -> Vec<u8> {
    knits_host::http::request(path, "vip", close).into_bytes()
}

/// Reads one response (Content-Length framing, as the origin sends) and checks its body.
/// Returns the node that served it.
fn response(s: &mut TcpStream, path: &str, size: u64) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s
            .read(&mut b)
            .unwrap_or_else(|e| panic!("{path}: reading the head: {e}"));
        assert!(n == 1, "{path}: connection ended in the head");
        head.push(b[0]);
    }
    let h = knits_host::http::parse_head(&head).expect("response head");
    assert_eq!(h.status, 200, "{path}");
    assert_eq!(h.content_length, Some(size), "{path}");
    let mut body = vec![0u8; size as usize];
    s.read_exact(&mut body)
        .unwrap_or_else(|e| panic!("{path}: reading {size} body bytes: {e}"));
    knits_proxy::content::verify(object(path), 0, &body)
        .unwrap_or_else(|m| panic!("{path}: {m:?}"));
    h.header("x-knits-node").unwrap_or("?").to_string()
}

fn expect_eof(s: &mut TcpStream, what: &str) {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => {}
        r => panic!("{what}: expected the end of the stream, got {r:?}"),
    }
}

/// One `Connection: close` exchange from `port`; returns the serving node.
fn close_exchange(vip: SocketAddr, port: u16, path: &str, size: u64) -> String {
    let mut s = connect(vip, port);
    s.write_all(&request(path, true)).unwrap();
    let node = response(&mut s, path, size);
    expect_eof(&mut s, path);
    node
}

fn assert_no_drops(s: &Snapshot, reasons: &[DropReason]) {
    for r in reasons {
        assert_eq!(s.core.drop_count(*r), 0, "{}\n{}", r.name(), s.table());
    }
}

/// 1 and 2: a client port reused at once after `Connection: close`, handed off or not, is
/// sprayed again, served, and can be handed off again.
#[test]
fn reused_client_ports() {
    if !common::root_or_skip("reused_client_ports") {
        return;
    }
    let c = up(config("cport"));
    let vip = c.vip();
    let start = settled(&c);
    let started = Instant::now();
    let (rounds, port) = (4u16, 45201u16);
    client(&c, || {
        // Every owner on the same port, again and again: two of three are hand-offs.
        for i in 0..3 * rounds as usize {
            let k = owner(i);
            let path = format!("/obj/n{k}/reuse-{i}?size=20000");
            let node = close_exchange(vip, port, &path, 20000);
            assert_eq!(node, format!("n{k}"), "{path}");
        }
    });
    let s = settled(&c);
    let conns = 3 * rounds as u64;
    // A SYN that a node refuses (the retiring first node may still hold the old connection
    // on the same tuple for a moment: it answers with an ACK, the client resets and resends)
    // is sprayed again: at least once per connection.
    assert!(
        s.core.sprayed.iter().sum::<u64>() - start.core.sprayed.iter().sum::<u64>() >= conns,
        "every reuse sprayed anew\n{}",
        s.table()
    );
    assert!(
        event(&s, FlowEvent::Reopened) >= conns - 1,
        "reopened {}\n{}",
        event(&s, FlowEvent::Reopened),
        s.table()
    );
    // Two of three would be hand-offs under plain round-robin; a SYN sprayed again shifts it.
    assert!(
        s.handoffs_accepted() >= rounds as u64,
        "hand-offs {}\n{}",
        s.handoffs_accepted(),
        s.table()
    );
    assert_eq!(code(&s, ReplyCode::NotEstablished), 0, "{}", s.table());
    assert_no_drops(&s, &[DropReason::ReuseRefused, DropReason::Internal]);
    // Without the fix each reuse waited for the client's SYN retries (1, 3, 7 s...).
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    // 2: first connection served where it landed (no owner), then the same port hands off.
    let port = 45202u16;
    client(&c, || {
        close_exchange(vip, port, "/obj/plain?size=1000", 1000);
        let mut s = connect(vip, port);
        for k in [1, 2, 3, 1, 2, 3] {
            let path = format!("/obj/n{k}/second?size=3000");
            s.write_all(&request(&path, false)).unwrap();
            assert_eq!(response(&mut s, &path, 3000), format!("n{k}"));
        }
    });
    let s2 = settled(&c);
    assert!(
        s2.handoffs_accepted() - s.handoffs_accepted() >= 5,
        "the reused tuple's connection hands off\n{}",
        s2.table()
    );
    assert_eq!(code(&s2, ReplyCode::NotEstablished), 0, "{}", s2.table());
}

/// 3: a keep-alive connection whose every request goes to another node runs with the tables
/// flat; a pipelined one too; refused hand-offs (a node without timestamps cannot take a
/// client with them) cost the table nothing lasting.
#[test]
fn every_request_moves_with_the_tables_flat() {
    if !common::root_or_skip("every_request_moves_with_the_tables_flat") {
        return;
    }
    let c = up(config("cmove"));
    let vip = c.vip();
    let base = settled(&c).flows;
    let n = 600u64;
    let mut max_flows = 0;
    let mut max_sessions = 0;
    client(&c, || {
        let mut s = connect(vip, 0);
        for i in 0..n {
            let k = i % 3 + 1;
            let path = format!("/obj/n{k}/move-{i}?size=1000");
            s.write_all(&request(&path, false)).unwrap();
            assert_eq!(response(&mut s, &path, 1000), format!("n{k}"));
            if i % 50 == 0 {
                let snap = c.snapshot();
                max_flows = max_flows.max(snap.flows);
                max_sessions = max_sessions.max(snap.sessions);
            }
        }
    });
    let s = settled(&c);
    // One connection: its own entry, the current leg, old nodes' legs still being retired
    // (at most MAX_BINDINGS - 1) and a new leg not yet accepted (docs/protocol.md "Limits"):
    // 1 + 1 + (MAX_BINDINGS - 1) + 1. The last term is there when the history is full and the
    // proxy's new leg waits for a `too_many_hops` answer.
    let bound = base + knits_core::splice::MAX_BINDINGS + 2;
    assert!(
        max_flows <= bound,
        "flows peaked at {max_flows} (bound {bound})\n{}",
        s.table()
    );
    assert!(max_sessions <= 1, "sessions peaked at {max_sessions}");
    assert!(s.flows <= bound, "{}", s.table());
    assert!(
        s.handoffs_accepted() >= n - 2,
        "accepted {} of {n}\n{}",
        s.handoffs_accepted(),
        s.table()
    );
    // A client that moves on every request can outrun the retirement of old nodes by a few
    // round trips; the proxy then asks again a moment later (`too_many_hops` is counted for
    // each answer, how often depends on the machine's load), and every request still moved:
    // checked above, request by request, and by the accepted count.
    assert!(
        event(&s, FlowEvent::BindingRemoved) >= n - 9,
        "{}",
        s.table()
    );
    assert_no_drops(&s, &[DropReason::Internal, DropReason::TableFull]);

    // Pipelined: 50 requests over all owners in one write.
    let before = c.snapshot();
    client(&c, || {
        let mut s = connect(vip, 0);
        let paths: Vec<String> = (0..50)
            .map(|i| format!("/obj/n{}/pipe-{i}?size=5000", i % 3 + 1))
            .collect();
        let mut all = Vec::new();
        for p in &paths {
            all.extend(request(p, false));
        }
        s.write_all(&all).unwrap();
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(response(&mut s, p, 5000), format!("n{}", i % 3 + 1), "{p}");
        }
    });
    let s = settled(&c);
    assert!(
        s.flows <= before.flows + knits_core::splice::MAX_BINDINGS + 1,
        "a pipelined connection left {} flows\n{}",
        s.flows - before.flows,
        s.table()
    );

    // Refused hand-offs: n3 without timestamps cannot take a client with them.
    sysctl(&c.node_ns[2], "net.ipv4.tcp_timestamps=0");
    let before = c.snapshot();
    client(&c, || {
        for i in 0..120 {
            let path = format!("/obj/n3/refused-{i}?size=100");
            let mut s = connect(vip, 0);
            s.write_all(&request(&path, false)).unwrap();
            // Served by n3 when it landed there, else by the landing node after the refusal.
            let _ = response(&mut s, &path, 100);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = settled(&c);
    let refused =
        code(&s, ReplyCode::OptionsIncompatible) - code(&before, ReplyCode::OptionsIncompatible);
    assert!(refused >= 40, "refused {refused}\n{}", s.table());
    // Each refused leg was reset by its proxy and left the table at once; what is left is the
    // clients' own connections (120 in TIME-WAIT or open) and the one connection above.
    let routed_left = s.flows as i64 - 120 - before.flows as i64;
    assert!(
        routed_left <= knits_core::splice::MAX_BINDINGS as i64 + 1,
        "refused legs still hold {routed_left} entries\n{}",
        s.table()
    );
    assert!(
        event(&s, FlowEvent::RoutedReset) - event(&before, FlowEvent::RoutedReset) >= refused,
        "{}",
        s.table()
    );
}

/// Watches what the client receives from the VIP: counts TCP segments that carry a timestamp
/// option and segments that carry a SACK block.
struct OptionWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64, u64)>>,
}

impl OptionWatch {
    fn start(ns: &str, ifname: &str, vip: Ipv4Addr) -> OptionWatch {
        let sock = PacketSocket::open(ns, ifname).expect("packet socket");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut segs, mut ts, mut sack) = (0u64, 0u64, 0u64);
            let mut buf = vec![0u8; 70000];
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some((n, outgoing))) = sock.recv(&mut buf, Duration::from_millis(50)) else {
                    continue;
                };
                if outgoing {
                    continue;
                }
                let f = &buf[..n];
                if f.len() < 54 || f[12..14] != [8, 0] || f[23] != 6 || f[26..30] != vip.octets() {
                    continue;
                }
                let ihl = (f[14] & 15) as usize * 4;
                let t = 14 + ihl;
                let doff = (f[t + 12] >> 4) as usize * 4;
                segs += 1;
                let mut i = t + 20;
                while i < t + doff && i < f.len() {
                    match f[i] {
                        0 => break,
                        1 => i += 1,
                        k => {
                            if k == 8 {
                                ts += 1;
                            }
                            if k == 5 {
                                sack += 1;
                            }
                            let l = *f.get(i + 1).unwrap_or(&2) as usize;
                            i += l.max(2);
                        }
                    }
                }
            }
            (segs, ts, sack)
        });
        OptionWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Fetches every owner's objects over keep-alive connections; every body is checked. Under
/// loss a node may serve a request itself (its proxy hands off only once the client has
/// acknowledged everything it sent, and gives up waiting after a while), so the serving
/// node is not checked here.
fn fetch_all_owners(vip: SocketAddr, tag: &str, conns: usize) {
    for j in 0..conns {
        let mut s = connect(vip, 0);
        for (i, size) in [1000u64, 200_000, 1, 70_000, 3_000_000, 5]
            .iter()
            .enumerate()
        {
            let k = (i + j) % 3 + 1;
            let path = format!("/obj/n{k}/{tag}-{j}-{i}?size={size}");
            s.write_all(&request(&path, false)).unwrap();
            response(&mut s, &path, *size);
        }
    }
}

/// 4: clients without timestamps (or without SACK) are handed off to nodes with them, and no
/// timestamp (no SACK block) ever reaches them, also under loss, reordering and duplication.
#[test]
fn clients_without_timestamps_or_sack() {
    if !common::root_or_skip("clients_without_timestamps_or_sack") {
        return;
    }
    let mut cfg = config("copts");
    cfg.faults = FaultConfig {
        loss: 0.005,
        reorder: 0.02,
        duplicate: 0.01,
        seed: 11,
        ..FaultConfig::default()
    };
    let c = up(cfg);
    let vip = c.vip();
    let vip4 = match vip {
        SocketAddr::V4(v) => *v.ip(),
        _ => unreachable!(),
    };
    sysctl(&c.client_ns, "net.ipv4.tcp_timestamps=0");
    let w = OptionWatch::start(&c.client_ns, &c.client_ns, vip4);
    client(&c, || fetch_all_owners(vip, "nots", 6));
    let (segs, ts, _) = w.finish();
    let s = settled(&c);
    assert!(segs > 100, "watched {segs} segments");
    assert_eq!(
        ts, 0,
        "{ts} of {segs} segments to the client carried a timestamp"
    );
    assert!(s.handoffs_accepted() >= 18, "{}", s.table());
    assert_eq!(code(&s, ReplyCode::OptionsIncompatible), 0, "{}", s.table());
    assert!(event(&s, FlowEvent::TsStripped) > 0, "{}", s.table());
    assert_no_drops(&s, &[DropReason::Internal]);

    // SACK off (timestamps back on).
    sysctl(&c.client_ns, "net.ipv4.tcp_timestamps=1");
    sysctl(&c.client_ns, "net.ipv4.tcp_sack=0");
    let before = c.snapshot();
    let w = OptionWatch::start(&c.client_ns, &c.client_ns, vip4);
    client(&c, || fetch_all_owners(vip, "nosack", 6));
    let (segs, _, sack) = w.finish();
    let s = settled(&c);
    assert!(segs > 100, "watched {segs} segments");
    assert_eq!(
        sack, 0,
        "{sack} of {segs} segments to the client carried SACK"
    );
    assert!(
        s.handoffs_accepted() - before.handoffs_accepted() >= 18,
        "{}",
        s.table()
    );
    assert_no_drops(&s, &[DropReason::Internal]);
}

/// 5: a client that sends its request and half-closes is handed off: the target gets the
/// request and the end of the stream, the client the whole response and a clean close. Also a
/// request written a byte at a time.
#[test]
fn half_closed_and_byte_at_a_time_clients() {
    if !common::root_or_skip("half_closed_and_byte_at_a_time_clients") {
        return;
    }
    let c = up(config("chalf"));
    let vip = c.vip();
    client(&c, || {
        for i in 0..9 {
            let k = owner(i);
            let size = [0u64, 1, 100_000][i / 3];
            let path = format!("/obj/n{k}/half-{i}?size={size}");
            let mut s = connect(vip, 0);
            s.write_all(&request(&path, false)).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(response(&mut s, &path, size), format!("n{k}"), "{path}");
            expect_eof(&mut s, &path);
        }
        for i in 0..6 {
            let k = owner(i);
            let path = format!("/obj/n{k}/byte-{i}?size=30000");
            let mut s = connect(vip, 0);
            for b in request(&path, false) {
                s.write_all(&[b]).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(response(&mut s, &path, 30000), format!("n{k}"), "{path}");
        }
    });
    let s = settled(&c);
    // Two of three land elsewhere than their owner (round-robin spray).
    assert!(s.handoffs_accepted() >= 8, "{}", s.table());
    assert_eq!(code(&s, ReplyCode::NotEstablished), 0, "{}", s.table());
    assert!(event(&s, FlowEvent::ClientFinPassed) >= 4, "{}", s.table());
    assert_no_drops(&s, &[DropReason::Internal]);
}

/// TIME-WAIT sockets in a namespace whose remote port is 80: the legs a node opened.
fn leg_time_waits(ns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-Htan", "state", "time-wait"])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|peer| peer.ends_with(":80"))
        })
        .count()
}

/// 6: hand-offs one after another leave no TIME-WAIT per hand-off on the node that opened the
/// new leg (it resets the leg once its FIN is acknowledged), so its ephemeral ports last.
#[test]
fn sustained_handoffs_leave_no_time_wait_on_the_nodes() {
    if !common::root_or_skip("sustained_handoffs_leave_no_time_wait_on_the_nodes") {
        return;
    }
    let c = up(config("ctw"));
    let vip = c.vip();
    let n = 300;
    client(&c, || {
        for i in 0..n {
            let k = owner(i);
            let path = format!("/obj/n{k}/tw-{i}?size=2000");
            close_exchange(vip, 0, &path, 2000);
        }
    });
    let s = settled(&c);
    assert!(s.handoffs_accepted() >= 150, "{}", s.table());
    let tw: usize = c.node_ns.iter().map(|ns| leg_time_waits(ns)).sum();
    assert!(
        tw * 20 < s.handoffs_accepted() as usize,
        "{tw} node-opened legs in TIME-WAIT after {} hand-offs",
        s.handoffs_accepted()
    );
    assert!(
        event(&s, FlowEvent::LegReset) >= s.handoffs_accepted() - 3,
        "{}",
        s.table()
    );
}

/// 7: a control message from the client side is dropped as `control_wrong_port`, whichever
/// gateway it names, and never answered.
#[test]
fn control_from_the_client_side() {
    if !common::root_or_skip("control_from_the_client_side") {
        return;
    }
    let c = up(config("cctl"));
    let before = settled(&c);
    let answered = client(&c, || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let msg = [0u8; knits_core::wire::control::REQUEST_LEN];
        for gw in [Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 19, 1, 1)] {
            u.send_to(&msg, SocketAddrV4::new(gw, 7100)).unwrap();
        }
        let mut b = [0u8; 64];
        u.recv_from(&mut b).is_ok()
    });
    assert!(
        !answered,
        "a control message from the client side was answered"
    );
    let s = settled(&c);
    assert_eq!(
        s.core.drop_count(DropReason::ControlWrongPort)
            - before.core.drop_count(DropReason::ControlWrongPort),
        2,
        "{}",
        s.table()
    );
    assert_eq!(
        s.core.drop_count(DropReason::NoRoute) - before.core.drop_count(DropReason::NoRoute),
        0
    );
}
