//! The deterministic end-to-end proof of the splice (issue "Proof").
//!
//! smoltcp TCP stacks play the client (switch port 0) and the nodes A, B, C (198.19.N.2 on ports
//! 1-3), joined through [`Switch::process`] by in-memory links on a virtual millisecond clock.
//! Every host has its own ISN seed (chosen so that streams cross 2^32), window scale (receive
//! buffer size) and timestamp clock (offsets near the 2^32 wrap). A scripted proxy on each node
//! performs the hand-off steps: it waits until its response bytes are acknowledged, opens c2,
//! asks the switch (signed UDP control request, retried every 50 ms), forwards the bytes it read
//! but did not consume, copies c1 to c2 until the switch fakes the client's FIN, then closes c2
//! and c1. A node that receives a handed-off connection serves it like any other and may hand it
//! off again.
//!
//! Every run checks:
//! - the client receives every response once, in order, byte for byte, from the right node
//!   (the one its request names, unless the hand-off was refused or rolled back);
//! - every request is served once (twice only when a hand-off was rolled back after its target
//!   had read it; that answer never reaches the client);
//! - every frame delivered to a host has correct IPv4 and TCP checksums, acknowledges nothing
//!   its receiver did not send, carries SACK edges inside the receiver's sent range, a TSecr that
//!   echoes the receiver's own clock and a TSval in the clock domain of the peer it believes it
//!   talks to (monotonic too, when the links do not reorder), and no timestamp or SACK option
//!   on a connection whose SYNs did not negotiate it;
//! - no RST hits a live (synchronized) connection, except the two ends of the new leg of a
//!   rolled-back hand-off; the client never sees one;
//! - the run goes on until every host socket is closed or in TIME-WAIT (so late retransmissions
//!   must still be answered), the switch's table is empty within its TIME-WAIT of the last one
//!   closing, and no entry leaves it by idle expiry. Exempt on a faulty network only: both ends
//!   of a leg to a hung target, and a target's idle end of a rolled-back leg whose one RST was
//!   lost (no packet of it reaches the switch again).
//!
//! The hosts behave as real stacks where smoltcp does not: a host holds one connection per
//! 4-tuple and rejects a late duplicate SYN (smoltcp would hand it to a second listener), but a
//! new SYN that Linux's TIME-WAIT accepts (RFC 6191) ends the TIME-WAIT and opens the tuple
//! again. A client without SACK is one whose SYNs lose the option on its link (smoltcp always
//! offers it).
//!
//! Then golden-packet tests pin the exact bytes of each packet of paper IV.B the switch fakes,
//! with sequence numbers and timestamps across the 2^32 wrap, and a deterministic proptest runs
//! random schedules. `KNITS_E2E_SEED` / `KNITS_E2E_CASES` explore more schedules,
//! `KNITS_E2E_TRACE=1` prints every frame, `KNITS_E2E_SUMMARY=1` the switch's counters and state.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;

use knits_core::config::{Config, Timeouts};
use knits_core::counters::{Counters, DropReason, FlowEvent, Generated};
use knits_core::meter::NoMeter;
use knits_core::splice::SessionSlot;
use knits_core::switch::{FrameMeta, Storage, Switch, Verdict};
use knits_core::table::{FlowSlot, IndexSlot};
use knits_core::time::Duration;
use knits_core::wire::control::{self, Endpoint, Key, Reply, ReplyCode, RequestRepr};
use knits_testkit::frames::{Ipv4Frame, TcpFrame, arp_request, flags_of};
use knits_testkit::sink::VecSink;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpAddress, IpCidr,
    IpEndpoint, IpProtocol, Ipv4Address, Ipv4Packet, TcpPacket, TcpRepr,
};

const KEY: Key = *b"knits-e2e-key-01";
/// Client (0) and nodes A, B, C (1..=3). Host `h` sits behind switch port `h`.
const HOSTS: usize = 4;
const VIP: Ipv4Address = Ipv4Address::new(198, 18, 0, 10);
const CONTROL_SRC_PORT: u16 = 7000;
/// The switch's TIME-WAIT in these tests.
const TIME_WAIT_MS: u64 = 10_000;

// ------------------------------------------------------------------------------------------------
// The virtual clock and the hosts' timestamp clocks.

thread_local! {
    static NOW_MS: Cell<u64> = const { Cell::new(0) };
    static TS_OFF: Cell<[u32; HOSTS]> = const { Cell::new([0; HOSTS]) };
}

fn now_ms() -> u64 {
    NOW_MS.with(|c| c.get())
}

/// Host `h`'s TCP timestamp clock: virtual milliseconds plus the host's offset.
fn ts_of(h: usize) -> u32 {
    (now_ms() as u32).wrapping_add(TS_OFF.with(|c| c.get())[h])
}

fn tsgen<const H: usize>() -> u32 {
    ts_of(H)
}

const TSGEN: [fn() -> u32; HOSTS] = [tsgen::<0>, tsgen::<1>, tsgen::<2>, tsgen::<3>];

// ------------------------------------------------------------------------------------------------
// Addresses.

fn host_ip(h: usize) -> Ipv4Address {
    if h == 0 {
        Ipv4Address::new(198, 18, 0, 2)
    } else {
        Ipv4Address::new(198, 19, h as u8, 2)
    }
}

fn host_gw(h: usize) -> Ipv4Address {
    if h == 0 {
        Ipv4Address::new(198, 18, 0, 1)
    } else {
        Ipv4Address::new(198, 19, h as u8, 1)
    }
}

fn host_mac(h: usize) -> EthernetAddress {
    EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x10, h as u8])
}

fn node_of(ip: Ipv4Address) -> Option<usize> {
    let o = ip.octets();
    (o[0] == 198 && o[1] == 19 && o[3] == 2 && (1..HOSTS as u8).contains(&o[2]))
        .then_some(o[2] as usize)
}

// ------------------------------------------------------------------------------------------------
// smoltcp's ISN generator, inverted: the interface seed that makes the first TCP connection of a
// fresh interface (a connect or an accept) start at a chosen ISN. smoltcp draws one number for the
// IPv4 ident at creation, then one per ISN, from sPCG32 (src/rand.rs). Each run checks the SYNs it
// sees against the ISN asked for, so a change in smoltcp shows up as a failure, not as a silently
// weaker test.

const PCG_M: u64 = 0xbb2e_fcec_3c39_611d;
const PCG_A: u64 = 0x7590_ef39;

fn inv_mod_2_64(m: u64) -> u64 {
    let mut x = m;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

fn pcg_out(s: u64) -> u32 {
    let shift = 29 - (s >> 61);
    (s >> shift) as u32
}

/// A seed whose second draw is `isn` (and whose first draw, the ident, is not zero).
fn seed_for_isn(isn: u32, salt: u64) -> u64 {
    let inv = inv_mod_2_64(PCG_M);
    for k in 0..64u64 {
        let top = (isn >> 29) as u64; // choose s>>61 == top, so shift = 29 - top
        let shift = 29 - top;
        let low = (salt.wrapping_add(k).wrapping_mul(0x9e37_79b9)) & ((1u64 << shift) - 1);
        let mid = (isn as u64) << shift; // bits shift..shift+32
        let s2 = (top << 61) | (mid & ((1u64 << 61) - 1)) | low;
        if pcg_out(s2) != isn {
            continue;
        }
        let s1 = s2.wrapping_sub(PCG_A).wrapping_mul(inv);
        let seed = s1.wrapping_sub(PCG_A).wrapping_mul(inv);
        let n = pcg_out(s1);
        if (n ^ (n >> 16)) as u16 != 0 {
            return seed;
        }
    }
    panic!("no seed for ISN {isn:#x}");
}

// ------------------------------------------------------------------------------------------------
// The request protocol: "GET <node> <size> <id>\n"; the response is "R <id> <size> <node>\n"
// followed by `size` bytes derived from the id and the offset.

fn body_byte(id: u32, j: u64) -> u8 {
    let x = ((id as u64) << 40 ^ j).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8
}

/// A request body byte (distinct from the response bytes of the same id).
fn upload_byte(id: u32, j: u64) -> u8 {
    body_byte(!id, j)
}

/// The request bytes: the line, with ` close` (the server closes the connection after the
/// response, as HTTP's `Connection: close`) and ` body=<n>` (an upload of n bytes follows the
/// line) when asked for.
fn request_bytes(r: &Req, id: u32) -> Vec<u8> {
    let mut line = format!("GET {} {} {id}", r.target, r.size);
    if r.close {
        line.push_str(" close");
    }
    if r.body > 0 {
        let _ = write!(line, " body={}", r.body);
    }
    line.push('\n');
    let mut b = line.into_bytes();
    b.extend((0..r.body as u64).map(|j| upload_byte(id, j)));
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Req {
    target: u8,
    size: u32,
    /// Sent only after every earlier response has arrived (else pipelined).
    wait: bool,
    /// The server closes the connection after this response (the last request only).
    close: bool,
    /// Bytes uploaded after the request line (the node reads and checks them).
    body: u32,
}

/// A parsed request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    /// Bytes of the line, newline included.
    len: usize,
    target: u8,
    size: u32,
    id: u32,
    close: bool,
    body: u32,
}

fn parse_request(buf: &[u8]) -> Option<Result<Line, String>> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&buf[..nl])
        .map_err(|_| format!("request is not text: {:?}", &buf[..nl]));
    let line = match line {
        Ok(l) => l,
        Err(e) => return Some(Err(e)),
    };
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() < 4 || f[0] != "GET" {
        return Some(Err(format!("bad request line {line:?}")));
    }
    let (mut close, mut body) = (false, Some(0));
    for x in &f[4..] {
        match (*x, x.strip_prefix("body=")) {
            ("close", _) => close = true,
            (_, Some(n)) => body = n.parse().ok(),
            _ => body = None,
        }
    }
    match (f[1].parse(), f[2].parse(), f[3].parse(), body) {
        (Ok(target), Ok(size), Ok(id), Some(body)) => Some(Ok(Line {
            len: nl + 1,
            target,
            size,
            id,
            close,
            body,
        })),
        _ => Some(Err(format!("bad request line {line:?}"))),
    }
}

// ------------------------------------------------------------------------------------------------
// Scenario parameters.

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Per 10 000 frames, on every link in both directions.
    loss: u32,
    dup: u32,
    reorder: u32,
    /// A reordered frame is held back 1..=max_delay ms.
    max_delay: u64,
    /// Targeted: the first n hand-off requests, replies, and segments of forwarded bytes (data
    /// from an old node on a new leg) are lost.
    drop_first: [u32; 3],
}

impl Faults {
    fn any(&self) -> bool {
        self.loss + self.dup + self.reorder + self.drop_first.iter().sum::<u32>() > 0
    }
}

/// How a node's proxy treats connections handed to it by another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Never answers: its frames on such connections are dropped (a hung target).
    Mute,
    /// Resets such a connection when the forwarded bytes arrive, before acknowledging them.
    Reset,
}

#[derive(Debug, Clone, Default)]
struct ConnSpec {
    /// When the connection opens: virtual ms, or ms after connection `after` has finished.
    start_ms: u64,
    reqs: Vec<Req>,
    /// Client port (default 40000 + 7 x index). Two connections may share one, one after the
    /// other (`after`): the tuple is reused.
    lport: Option<u16>,
    /// Opens `start_ms` after this (earlier) connection has finished.
    after: Option<usize>,
    /// The client closes its write side (FIN) right after its last request is out, and reads
    /// the responses half-closed.
    half_close: bool,
}

#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    faults: Faults,
    conns: Vec<ConnSpec>,
    modes: [Mode; HOSTS],
    /// ISN of each host's first connection.
    isn: [u32; HOSTS],
    ts_off: [u32; HOSTS],
    /// Receive buffer of accepted (and client) sockets: sets the window scale.
    rx_in: [usize; HOSTS],
    /// Receive buffer of the sockets a node opens for c2.
    rx_out: [usize; HOSTS],
    tx: [usize; HOSTS],
    /// Give up (and fail) after this much virtual time.
    deadline_ms: u64,
    /// The client's SYNs offer timestamps (else its sockets run without them).
    client_ts: bool,
    /// The client's SYNs offer SACK. smoltcp always offers it, so without it the client's
    /// link removes the option from its SYNs (NOPs), and every peer takes the client for a
    /// host without SACK.
    client_sack: bool,
    /// Delayed ACK of every host's sockets: None for smoltcp's default (10 ms), Some(0) for
    /// none.
    ack_delay_ms: Option<u64>,
    /// The switch's hand-off time-out, if not the tests' 1 s (the default is 5 s).
    handoff_ms: Option<u64>,
    /// Removes closed sockets (and a node's finished connections) as the run goes, so that
    /// long runs stay small. Off by default: it changes the order in which hosts send, and
    /// with it the fault schedule of a seed.
    reap: bool,
}

impl Params {
    fn new(seed: u64, conns: Vec<ConnSpec>) -> Params {
        Params {
            seed,
            faults: Faults::default(),
            conns,
            modes: [Mode::Normal; HOSTS],
            // Client data, node responses and the legs' SYN-ACKs all cross 2^32.
            isn: [0xffff_fff0, 0xffff_f000, 0xffff_ffff, 0xfff0_0000],
            // Four clock domains far apart; node C's clock wraps 4 s into the run.
            ts_off: [0x1000_0000, 0x7fff_0000, 0xc000_1234, 0xffff_f000],
            // Window shifts 3, 0, 2, 5 on accepted sockets; 1, 4, 0 on the sockets opened for c2.
            rx_in: [256 << 10, 32 << 10, 128 << 10, 1 << 20],
            rx_out: [0, 64 << 10, 512 << 10, 16 << 10],
            tx: [16 << 10, 64 << 10, 48 << 10, 96 << 10],
            deadline_ms: 120_000,
            client_ts: true,
            client_sack: true,
            ack_delay_ms: None,
            handoff_ms: None,
            reap: false,
        }
    }
}

fn script(targets: &[(u8, u32)]) -> Vec<Req> {
    targets
        .iter()
        .map(|&(target, size)| Req {
            target,
            size,
            wait: true,
            ..Req::default()
        })
        .collect()
}

fn pipelined(targets: &[(u8, u32)]) -> Vec<Req> {
    targets
        .iter()
        .map(|&(target, size)| Req {
            target,
            size,
            wait: false,
            ..Req::default()
        })
        .collect()
}

fn request_id(conn: usize, i: usize) -> u32 {
    (conn as u32 + 1) * 1000 + i as u32
}

// ------------------------------------------------------------------------------------------------
// Deterministic randomness.

#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

// ------------------------------------------------------------------------------------------------
// An in-memory Ethernet device.

#[derive(Debug, Default)]
struct Dev {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxTok(Vec<u8>);
struct TxTok<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Dev {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxTok, TxTok<'_>)> {
        let f = self.rx.pop_front()?;
        Some((RxTok(f), TxTok(&mut self.tx)))
    }
    fn transmit(&mut self, _: Instant) -> Option<TxTok<'_>> {
        Some(TxTok(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct Host {
    iface: Interface,
    dev: Dev,
    sockets: SocketSet<'static>,
}

impl Host {
    fn new(h: usize, seed: u64) -> Host {
        let mut dev = Dev::default();
        let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(host_mac(h)));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, Instant::from_millis(0));
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(host_ip(h)), 24))
                .unwrap()
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(host_gw(h))
            .unwrap();
        Host {
            iface,
            dev,
            sockets: SocketSet::new(vec![]),
        }
    }
}

fn tcp_socket(h: usize, rx: usize, tx: usize, cfg: SockCfg) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; rx]),
        tcp::SocketBuffer::new(vec![0; tx]),
    );
    s.set_tsval_generator(cfg.ts.then_some(TSGEN[h]));
    match cfg.ack_delay_ms {
        None => {}
        Some(0) => s.set_ack_delay(None),
        Some(ms) => s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(ms))),
    }
    s
}

// ------------------------------------------------------------------------------------------------
// The client: one smoltcp socket per scripted connection, verifying every response byte.

type Key4 = (Ipv4Address, u16, Ipv4Address, u16);

#[derive(Debug)]
struct ClientConn {
    idx: usize,
    spec: ConnSpec,
    lport: u16,
    sock: Option<SocketHandle>,
    out: Vec<u8>,
    out_pos: usize,
    queued: usize,
    line: Vec<u8>,
    /// Response being received: (id, size, node, bytes of body received).
    cur: Option<(u32, u64, u8, u64)>,
    got: usize,
    served_by: Vec<u8>,
    /// The client's FIN is queued (half-close, before the responses are in).
    fin_sent: bool,
    closed: bool,
    done: bool,
    done_at: Option<u64>,
}

/// Socket settings of a host.
#[derive(Debug, Clone, Copy)]
struct SockCfg {
    ts: bool,
    ack_delay_ms: Option<u64>,
}

struct ClientApp {
    conns: Vec<ClientConn>,
    rx: usize,
    tx: usize,
    cfg: SockCfg,
    errors: Vec<String>,
}

impl ClientApp {
    fn step(&mut self, now: u64, host: &mut Host) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.done {
                continue;
            }
            if c.sock.is_none() {
                let start = match c.spec.after {
                    None => Some(c.spec.start_ms),
                    Some(j) => self.conns[j].done_at.map(|t| t + c.spec.start_ms),
                };
                if start.is_some_and(|t| now >= t) {
                    let mut s = tcp_socket(0, self.rx, self.tx, self.cfg);
                    s.connect(host.iface.context(), (IpAddress::Ipv4(VIP), 80), c.lport)
                        .unwrap();
                    self.conns[i].sock = Some(host.sockets.add(s));
                }
                continue;
            }
            let c = &mut self.conns[i];
            let h = c.sock.unwrap();
            let s = host.sockets.get_mut::<tcp::Socket>(h);
            let st = s.state();
            if c.closed {
                if matches!(st, tcp::State::TimeWait | tcp::State::Closed) {
                    c.done = true;
                    c.done_at = Some(now);
                }
                continue;
            }
            if st == tcp::State::Closed && (c.got > 0 || c.out_pos > 0) {
                self.errors.push(format!(
                    "client conn {}: connection closed (reset) after {} responses",
                    c.idx, c.got
                ));
                c.done = true;
                c.done_at = Some(now);
                continue;
            }
            while c.queued < c.spec.reqs.len() && (!c.spec.reqs[c.queued].wait || c.got >= c.queued)
            {
                let r = c.spec.reqs[c.queued];
                c.out.extend(request_bytes(&r, request_id(c.idx, c.queued)));
                c.queued += 1;
            }
            if s.can_send() && c.out_pos < c.out.len() {
                c.out_pos += s.send_slice(&c.out[c.out_pos..]).unwrap();
            }
            let all_out = c.queued == c.spec.reqs.len() && c.out_pos == c.out.len();
            if c.spec.half_close && all_out && !c.fin_sent {
                // Shuts down its write side: the FIN follows the last request at once.
                s.close();
                c.fin_sent = true;
            }
            while s.can_recv() {
                let errors = &mut self.errors;
                let spec = &c.spec;
                let (idx, got, cur, line, served_by) =
                    (c.idx, &mut c.got, &mut c.cur, &mut c.line, &mut c.served_by);
                s.recv(|buf| {
                    for &b in buf.iter() {
                        client_byte(idx, spec, got, cur, line, served_by, b, errors);
                    }
                    (buf.len(), ())
                })
                .unwrap();
            }
            let all_in = c.got == c.spec.reqs.len();
            let server_closes = c.spec.reqs.last().is_some_and(|r| r.close);
            let eof = matches!(st, tcp::State::CloseWait) && !s.can_recv();
            if c.fin_sent {
                // Half-closed: the server's FIN ends it (TIME-WAIT, or CLOSED after it).
                if st == tcp::State::TimeWait {
                    if !all_in {
                        self.errors.push(format!(
                            "client conn {}: server closed after {} of {} responses",
                            c.idx,
                            c.got,
                            c.spec.reqs.len()
                        ));
                    }
                    c.closed = true;
                }
            } else if all_in && all_out && (!server_closes || eof) {
                // With `close`, the server closes first (the client answers its FIN).
                s.close();
                c.closed = true;
            } else if eof {
                self.errors.push(format!(
                    "client conn {}: server closed after {} of {} responses",
                    c.idx,
                    c.got,
                    c.spec.reqs.len()
                ));
                s.close();
                c.closed = true;
            }
        }
    }

    fn all_done(&self) -> bool {
        self.conns.iter().all(|c| c.done)
    }
}

#[allow(clippy::too_many_arguments)]
fn client_byte(
    idx: usize,
    spec: &ConnSpec,
    got: &mut usize,
    cur: &mut Option<(u32, u64, u8, u64)>,
    line: &mut Vec<u8>,
    served_by: &mut Vec<u8>,
    b: u8,
    errors: &mut Vec<String>,
) {
    if errors.len() > 20 {
        return;
    }
    if let Some((id, size, _, pos)) = cur {
        let want = body_byte(*id, *pos);
        if b != want {
            errors.push(format!(
                "client conn {idx}: response {id} byte {pos} is {b:#x}, want {want:#x}"
            ));
        }
        *pos += 1;
        if *pos == *size {
            *cur = None;
            *got += 1;
        }
        return;
    }
    if b != b'\n' {
        line.push(b);
        if line.len() > 64 {
            errors.push(format!(
                "client conn {idx}: garbage instead of a response header: {:?}",
                String::from_utf8_lossy(line)
            ));
            line.clear();
        }
        return;
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    let f: Vec<&str> = text.split(' ').collect();
    let parsed = (f.len() == 4 && f[0] == "R").then(|| {
        (
            f[1].parse::<u32>().ok(),
            f[2].parse::<u64>().ok(),
            f[3].parse::<u8>().ok(),
        )
    });
    let Some((Some(id), Some(size), Some(node))) = parsed else {
        errors.push(format!("client conn {idx}: bad response header {text:?}"));
        return;
    };
    let Some(r) = spec.reqs.get(*got) else {
        errors.push(format!(
            "client conn {idx}: response {id} after the last one"
        ));
        return;
    };
    let want = request_id(idx, *got);
    if id != want || size != r.size as u64 {
        errors.push(format!(
            "client conn {idx}: response {id} ({size} bytes) where {want} ({} bytes) was due",
            r.size
        ));
    }
    served_by.push(node);
    if size == 0 {
        *got += 1;
    } else {
        *cur = Some((id, size, node, 0));
    }
}

// ------------------------------------------------------------------------------------------------
// The node proxy.

#[derive(Debug)]
struct Resp {
    id: u32,
    hdr: Vec<u8>,
    total: u64,
    pos: u64,
}

impl Resp {
    fn new(id: u32, size: u32, node: usize) -> Resp {
        let hdr = format!("R {id} {size} {node}\n").into_bytes();
        Resp {
            id,
            total: hdr.len() as u64 + size as u64,
            hdr,
            pos: 0,
        }
    }
    fn byte(&self, k: u64) -> u8 {
        if (k as usize) < self.hdr.len() {
            self.hdr[k as usize]
        } else {
            body_byte(self.id, k - self.hdr.len() as u64)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Serve,
    /// Hand-off step 1: waiting until every response byte on c1 is acknowledged.
    WaitAcked {
        target: u8,
    },
    /// Step 2: c2 is opening.
    Connecting {
        c2: SocketHandle,
        target: u8,
        since: u64,
    },
    /// Step 3: the request is out; retried every 50 ms.
    Requesting {
        c2: SocketHandle,
        target: u8,
        counter: u64,
        last_tx: u64,
        busy: u32,
    },
    /// Step 4: forwarding c1 to c2 until c1's EOF; `fwd` bytes of `inbuf` are on c2.
    Forwarding {
        c2: SocketHandle,
        fwd: usize,
    },
    /// c1 ended and c2's FIN is out: once the switch has acknowledged it (FIN-WAIT-2: the
    /// target has everything, the hand-off holds), c1 is closed and c2 reset, as knits-proxy
    /// does (SO_LINGER 0), so the node keeps no TIME-WAIT. c1 stays open until then: a
    /// half-closed client's EOF comes before the hand-off is confirmed, and if c2 is reset
    /// instead (roll-back) the node serves the request itself.
    Closing {
        c2: SocketHandle,
    },
    Done,
}

#[derive(Debug)]
struct Conn {
    c1: SocketHandle,
    peer: IpEndpoint,
    from_node: bool,
    inbuf: Vec<u8>,
    consumed: u64,
    sent: u64,
    resp: Option<Resp>,
    force_local: bool,
    st: St,
    /// Sockets of this connection that must end closed (c1 and every c2 it opened).
    c2s: Vec<SocketHandle>,
    /// The 4-tuples (local, remote) of the new legs, in `c2s` order.
    legs: Vec<Key4>,
    handed_off: bool,
    rolled_back: u32,
    /// The request being answered asked the server to close afterwards.
    close_after: bool,
}

#[derive(Debug)]
struct NodeApp {
    me: usize,
    mode: Mode,
    listeners: Vec<SocketHandle>,
    conns: Vec<Conn>,
    udp: SocketHandle,
    counter: u64,
    eport: u16,
    rx_in: usize,
    rx_out: usize,
    tx: usize,
    cfg: SockCfg,
    reap: bool,
    replies: HashMap<u64, ReplyCode>,
    /// (request id, conn peer) of every request served here.
    served: Vec<u32>,
    muted: Vec<Key4>,
    /// Connections whose pure ACKs are dropped (Reset mode).
    silent_acks: Vec<Key4>,
    /// New legs this node saw reset by a roll-back (local, remote).
    rolled_back_legs: Vec<Key4>,
    /// New legs this node reset after the switch refused the hand-off (local, remote).
    refused_legs: Vec<Key4>,
    /// Connections from another node that were reset here (local, remote).
    reset_keys: Vec<Key4>,
    errors: Vec<String>,
    codes: Vec<ReplyCode>,
}

impl NodeApp {
    fn new(me: usize, p: &Params, host: &mut Host) -> NodeApp {
        let mut u = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
        );
        u.bind(CONTROL_SRC_PORT).unwrap();
        let udp = host.sockets.add(u);
        NodeApp {
            me,
            mode: p.modes[me],
            listeners: vec![],
            conns: vec![],
            udp,
            counter: 0,
            eport: 49152 + (me as u16) * 1000,
            rx_in: p.rx_in[me],
            rx_out: p.rx_out[me],
            tx: p.tx[me],
            cfg: SockCfg {
                ts: true,
                ack_delay_ms: p.ack_delay_ms,
            },
            reap: p.reap,
            replies: HashMap::new(),
            served: vec![],
            muted: vec![],
            silent_acks: vec![],
            rolled_back_legs: vec![],
            refused_legs: vec![],
            reset_keys: vec![],
            errors: vec![],
            codes: vec![],
        }
    }

    fn step(&mut self, now: u64, host: &mut Host) {
        // Listeners: adopt the ones a SYN woke up, keep three listening.
        let mut i = 0;
        while i < self.listeners.len() {
            let h = self.listeners[i];
            let s = host.sockets.get_mut::<tcp::Socket>(h);
            if s.state() == tcp::State::Listen {
                i += 1;
                continue;
            }
            self.listeners.swap_remove(i);
            let Some(peer) = s.remote_endpoint() else {
                continue;
            };
            let IpAddress::Ipv4(pip) = peer.addr;
            let from_node = node_of(pip).is_some();
            if from_node && self.mode == Mode::Reset {
                // Acknowledge the forwarded bytes late, so the reset comes first.
                s.set_ack_delay(Some(smoltcp::time::Duration::from_millis(500)));
            }
            self.conns.push(Conn {
                c1: h,
                peer,
                from_node,
                inbuf: vec![],
                consumed: 0,
                sent: 0,
                resp: None,
                force_local: false,
                st: St::Serve,
                c2s: vec![],
                legs: vec![],
                handed_off: false,
                rolled_back: 0,
                close_after: false,
            });
        }
        while self.listeners.len() < 3 {
            let mut s = tcp_socket(self.me, self.rx_in, self.tx, self.cfg);
            s.listen(80).unwrap();
            self.listeners.push(host.sockets.add(s));
        }
        // Control replies.
        let u = host.sockets.get_mut::<udp::Socket>(self.udp);
        while let Ok((data, _)) = u.recv() {
            match Reply::new_checked(data) {
                Ok(r) if r.verify(&KEY) => {
                    self.replies.insert(r.counter(), r.code());
                }
                _ => self
                    .errors
                    .push(format!("node {}: bad control reply {data:?}", self.me)),
            }
        }
        let mut conns = std::mem::take(&mut self.conns);
        for c in &mut conns {
            self.step_conn(c, now, host);
        }
        if self.reap {
            // A finished connection whose sockets are all closed is gone, as in any stack.
            conns.retain(|c| {
                let closed = |h: &SocketHandle| {
                    sock_state(&host.sockets, *h).is_none_or(|s| s == tcp::State::Closed)
                };
                let gone = c.st == St::Done && closed(&c.c1) && c.c2s.iter().all(closed);
                if gone {
                    for h in std::iter::once(&c.c1).chain(&c.c2s) {
                        if sock_state(&host.sockets, *h).is_some() {
                            host.sockets.remove(*h);
                        }
                    }
                }
                !gone
            });
        }
        self.conns = conns;
    }

    fn step_conn(&mut self, c: &mut Conn, now: u64, host: &mut Host) {
        if c.st == St::Done {
            return;
        }
        if let St::Closing { c2 } = c.st {
            let s2 = host.sockets.get_mut::<tcp::Socket>(c2);
            match s2.state() {
                tcp::State::FinWait2 => s2.abort(),
                tcp::State::TimeWait => {}
                tcp::State::Closed => {
                    // Reset before its FIN was acknowledged: rolled back. Serve from the
                    // buffer (c1 is still open).
                    c.rolled_back += 1;
                    if let Some(k) = c.legs.last() {
                        self.rolled_back_legs.push(*k);
                    }
                    c.force_local = true;
                    c.st = St::Serve;
                    self.step_conn(c, now, host);
                    return;
                }
                _ => return,
            }
            host.sockets.get_mut::<tcp::Socket>(c.c1).close();
            c.st = St::Done;
            return;
        }
        let me = self.me;
        let s1 = host.sockets.get_mut::<tcp::Socket>(c.c1);
        if c.from_node && self.mode == Mode::Mute {
            // Hung once established: from here on its frames on this connection are dropped.
            // (The peer may already have closed its side within the same poll.)
            if !matches!(
                s1.state(),
                tcp::State::SynReceived | tcp::State::Listen | tcp::State::Closed
            ) {
                let IpAddress::Ipv4(pip) = c.peer.addr;
                let k = (host_ip(me), 80, pip, c.peer.port);
                if !self.muted.contains(&k) {
                    self.muted.push(k);
                }
            }
            return;
        }
        if c.from_node && self.mode == Mode::Reset && s1.state() == tcp::State::Established {
            // Never acknowledges what it is handed (its pure ACKs on this leg are dropped, see
            // `Fabric::round`), so its reset always precedes the switch's confirmation.
            let IpAddress::Ipv4(pip) = c.peer.addr;
            let k = (host_ip(me), 80, pip, c.peer.port);
            if !self.silent_acks.contains(&k) {
                self.silent_acks.push(k);
            }
        }
        if c.from_node && self.mode == Mode::Reset && s1.can_recv() {
            s1.abort();
            c.st = St::Done;
            return;
        }
        if s1.state() == tcp::State::Closed {
            if c.from_node && self.mode == Mode::Mute {
                c.st = St::Done;
                return;
            }
            if c.from_node {
                // The target's end of a rolled-back hand-off (checked against the counters),
                // or of a refused one whose new leg its node reset.
                let IpAddress::Ipv4(pip) = c.peer.addr;
                self.reset_keys.push((host_ip(me), 80, pip, c.peer.port));
            } else {
                self.errors.push(format!(
                    "node {me}: connection from {} reset in state {:?}",
                    c.peer, c.st
                ));
            }
            c.st = St::Done;
            return;
        }
        while s1.can_recv() {
            let inbuf = &mut c.inbuf;
            s1.recv(|b| {
                inbuf.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        let eof = s1.state() == tcp::State::CloseWait && !s1.can_recv();
        loop {
            match c.st {
                St::Serve => {
                    let s1 = host.sockets.get_mut::<tcp::Socket>(c.c1);
                    if let Some(r) = &mut c.resp {
                        if r.pos < r.total && s1.can_send() {
                            let n = s1
                                .send(|buf| {
                                    let n = (buf.len() as u64).min(r.total - r.pos) as usize;
                                    for (k, b) in buf[..n].iter_mut().enumerate() {
                                        *b = r.byte(r.pos + k as u64);
                                    }
                                    (n, n)
                                })
                                .unwrap();
                            r.pos += n as u64;
                            c.sent += n as u64;
                        }
                        if r.pos < r.total {
                            return;
                        }
                        c.resp = None;
                        if c.close_after {
                            // `Connection: close`: the server closes first, after the response.
                            s1.close();
                            c.st = St::Done;
                            return;
                        }
                    }
                    match parse_request(&c.inbuf) {
                        None => {
                            if eof {
                                if !c.inbuf.is_empty() {
                                    self.errors.push(format!(
                                        "node {me}: partial request at EOF: {:?}",
                                        String::from_utf8_lossy(&c.inbuf)
                                    ));
                                }
                                s1.close();
                                c.st = St::Done;
                            }
                            return;
                        }
                        Some(Err(e)) => {
                            self.errors
                                .push(format!("node {me}: conn from {}: {e}", c.peer));
                            c.inbuf.clear();
                            s1.abort();
                            c.st = St::Done;
                            return;
                        }
                        Some(Ok(l)) => {
                            let Line {
                                len,
                                target,
                                size,
                                id,
                                close,
                                body,
                            } = l;
                            if target as usize == me
                                || c.force_local
                                || !(1..HOSTS as u8).contains(&target)
                            {
                                // Served here, once the whole upload is in.
                                let end = len + body as usize;
                                if c.inbuf.len() < end {
                                    if eof {
                                        self.errors.push(format!(
                                            "node {me}: request {id}: {} of {body} upload bytes at EOF",
                                            c.inbuf.len() - len
                                        ));
                                        s1.close();
                                        c.st = St::Done;
                                    }
                                    return;
                                }
                                let bad = (0..body as u64)
                                    .find(|&j| c.inbuf[len + j as usize] != upload_byte(id, j));
                                if let Some(j) = bad {
                                    self.errors.push(format!(
                                        "node {me}: request {id}: upload byte {j} is {:#x}, want {:#x}",
                                        c.inbuf[len + j as usize],
                                        upload_byte(id, j)
                                    ));
                                }
                                c.force_local = false;
                                c.inbuf.drain(..end);
                                c.consumed += end as u64;
                                c.resp = Some(Resp::new(id, size, me));
                                c.close_after = close;
                                self.served.push(id);
                                continue;
                            }
                            c.st = St::WaitAcked { target };
                        }
                    }
                }
                St::WaitAcked { target } => {
                    let s1 = host.sockets.get_mut::<tcp::Socket>(c.c1);
                    if s1.send_queue() > 0 {
                        return;
                    }
                    let mut s = tcp_socket(me, self.rx_out, self.tx, self.cfg);
                    let lport = self.eport;
                    self.eport = self.eport.wrapping_add(1);
                    s.connect(
                        host.iface.context(),
                        (IpAddress::Ipv4(host_ip(target as usize)), 80),
                        (IpAddress::Ipv4(host_ip(me)), lport),
                    )
                    .unwrap();
                    let c2 = host.sockets.add(s);
                    c.c2s.push(c2);
                    c.legs
                        .push((host_ip(me), lport, host_ip(target as usize), 80));
                    c.st = St::Connecting {
                        c2,
                        target,
                        since: now,
                    };
                }
                St::Connecting { c2, target, since } => {
                    let s2 = host.sockets.get_mut::<tcp::Socket>(c2);
                    match s2.state() {
                        tcp::State::Established => {
                            self.counter += 1;
                            let counter = self.counter;
                            self.send_request(c, c2, target, counter, host);
                            c.st = St::Requesting {
                                c2,
                                target,
                                counter,
                                last_tx: now,
                                busy: 0,
                            };
                        }
                        tcp::State::Closed => {
                            c.force_local = true;
                            c.st = St::Serve;
                            continue;
                        }
                        _ if now - since > 10_000 => {
                            s2.abort();
                            c.force_local = true;
                            c.st = St::Serve;
                            continue;
                        }
                        _ => {}
                    }
                    return;
                }
                St::Requesting {
                    c2,
                    target,
                    counter,
                    last_tx,
                    busy,
                } => {
                    match self.replies.remove(&counter) {
                        Some(ReplyCode::Accepted) => {
                            self.codes.push(ReplyCode::Accepted);
                            c.st = St::Forwarding { c2, fwd: 0 };
                            continue;
                        }
                        Some(ReplyCode::Busy) if busy < 100 => {
                            self.codes.push(ReplyCode::Busy);
                            self.counter += 1;
                            let counter = self.counter;
                            self.send_request(c, c2, target, counter, host);
                            c.st = St::Requesting {
                                c2,
                                target,
                                counter,
                                last_tx: now,
                                busy: busy + 1,
                            };
                        }
                        Some(code) => {
                            self.codes.push(code);
                            if code == ReplyCode::RolledBack
                                && let Some(k) = c.legs.last()
                            {
                                self.rolled_back_legs.push(*k);
                            }
                            if let Some(k) = c.legs.last() {
                                self.refused_legs.push(*k);
                            }
                            // Refused: the new leg is reset (knits-proxy closes it with
                            // SO_LINGER 0), so it costs the switch's table nothing lasting.
                            host.sockets.get_mut::<tcp::Socket>(c2).abort();
                            c.force_local = true;
                            c.st = St::Serve;
                            continue;
                        }
                        None if now - last_tx >= 50 => {
                            self.send_request(c, c2, target, counter, host);
                            c.st = St::Requesting {
                                c2,
                                target,
                                counter,
                                last_tx: now,
                                busy,
                            };
                        }
                        None => {}
                    }
                    return;
                }
                St::Forwarding { c2, fwd } => {
                    let s2 = host.sockets.get_mut::<tcp::Socket>(c2);
                    if s2.state() == tcp::State::Closed {
                        // Rolled back: the switch reset the new leg. Serve from the buffer.
                        c.rolled_back += 1;
                        if let Some(k) = c.legs.last() {
                            self.rolled_back_legs.push(*k);
                        }
                        c.force_local = true;
                        c.st = St::Serve;
                        continue;
                    }
                    let mut fwd = fwd;
                    if fwd < c.inbuf.len() && s2.can_send() {
                        fwd += s2.send_slice(&c.inbuf[fwd..]).unwrap();
                    }
                    if eof && fwd == c.inbuf.len() {
                        s2.close();
                        c.handed_off = true;
                        c.st = St::Closing { c2 };
                        return;
                    }
                    c.st = St::Forwarding { c2, fwd };
                    return;
                }
                St::Closing { .. } => return,
                St::Done => return,
            }
        }
    }

    fn send_request(
        &mut self,
        c: &Conn,
        c2: SocketHandle,
        target: u8,
        counter: u64,
        host: &mut Host,
    ) {
        let s2 = host.sockets.get_mut::<tcp::Socket>(c2);
        let l2 = s2.local_endpoint().unwrap();
        let IpAddress::Ipv4(peer) = c.peer.addr;
        let IpAddress::Ipv4(l2a) = l2.addr;
        let req = RequestRepr {
            key_id: 1,
            counter,
            held_peer: Endpoint::new(peer.octets(), c.peer.port),
            held_local: Endpoint::new(host_ip(self.me).octets(), 80),
            new_local: Endpoint::new(l2a.octets(), l2.port),
            new_remote: Endpoint::new(host_ip(target as usize).octets(), 80),
            consumed: c.consumed,
            sent: c.sent,
        };
        let mut buf = [0u8; control::REQUEST_LEN];
        req.emit(&mut buf, &KEY).unwrap();
        let u = host.sockets.get_mut::<udp::Socket>(self.udp);
        let gw = IpEndpoint::new(IpAddress::Ipv4(host_gw(self.me)), control::DEFAULT_PORT);
        if u.send_slice(&buf, gw).is_err() {
            self.errors
                .push(format!("node {}: control socket full", self.me));
        }
    }
}

enum App {
    Client(ClientApp),
    Node(Box<NodeApp>),
}

// ------------------------------------------------------------------------------------------------
// Wire observations: what each host sent and what it was handed.

#[derive(Debug, Default, Clone, Copy)]
struct FlowObs {
    isn: Option<u32>,
    snd_max: Option<u32>,
    /// One past the highest sequence number the host received on this flow.
    rcv_max: Option<u32>,
    /// TSval - now of the first timestamp the host received on this flow: the peer's clock domain.
    dom: Option<u32>,
    last_tsval: Option<u32>,
    /// Whether the host's own SYN (or SYN-ACK) offered timestamps and SACK, and the peer's
    /// answer kept them: an option the host did not negotiate must never reach it (RFC 7323
    /// 3.2, RFC 2018).
    offer: Option<(bool, bool)>,
}

#[derive(Debug, Default)]
struct Obs {
    flows: HashMap<Key4, FlowObs>,
    /// RSTs delivered to the host, with the state of the socket they hit (None: no socket
    /// holds the connection any more).
    rst_rx: Vec<(u64, Key4, Option<tcp::State>, u32)>,
    rst_tx: usize,
    syn_isn: Vec<(Key4, u32)>,
    /// Connection-opening SYNs delivered to the host (4-tuple, sequence number).
    syns: Vec<(Key4, u32)>,
}

fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

struct Parsed<'a> {
    src: Ipv4Address,
    dst: Ipv4Address,
    tcp: TcpRepr<'a>,
    rst: bool,
    syn: bool,
    fin: bool,
}

fn parse_tcp(frame: &[u8]) -> Option<Result<Parsed<'_>, String>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = match Ipv4Packet::new_checked(eth.payload()) {
        Ok(ip) => ip,
        Err(_) => return Some(Err("bad IPv4 header".into())),
    };
    if !ip.verify_checksum() {
        return Some(Err("bad IPv4 checksum".into()));
    }
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let payload = &eth.payload()[20..ip.total_len() as usize];
    let tcp = match TcpPacket::new_checked(payload) {
        Ok(t) => t,
        Err(_) => return Some(Err("bad TCP header".into())),
    };
    if !tcp.verify_checksum(&src.into(), &dst.into()) {
        return Some(Err(format!(
            "bad TCP checksum {src}:{} -> {dst}:{}",
            tcp.src_port(),
            tcp.dst_port()
        )));
    }
    let (rst, syn, fin) = (tcp.rst(), tcp.syn(), tcp.fin());
    let payload: &[u8] = &eth.into_inner()[34..34 + payload.len()];
    let tcp = TcpPacket::new_unchecked(payload);
    match TcpRepr::parse(
        &tcp,
        &src.into(),
        &dst.into(),
        &ChecksumCapabilities::ignored(),
    ) {
        Ok(r) => Some(Ok(Parsed {
            src,
            dst,
            tcp: r,
            rst,
            syn,
            fin,
        })),
        Err(_) => Some(Err("unparsable TCP".into())),
    }
}

impl Obs {
    fn on_tx(&mut self, frame: &[u8]) {
        let Some(Ok(p)) = parse_tcp(frame) else {
            return;
        };
        let k = (p.src, p.tcp.src_port, p.dst, p.tcp.dst_port);
        let f = self.flows.entry(k).or_default();
        let seq = p.tcp.seq_number.0 as u32;
        if p.syn && p.tcp.ack_number.is_none() {
            // A new connection (maybe on a tuple used before): nothing of the old one counts.
            *f = FlowObs::default();
        }
        if p.syn {
            f.offer = Some((p.tcp.timestamp.is_some(), p.tcp.sack_permitted));
            f.isn = Some(seq);
            if !self.syn_isn.iter().any(|(kk, _)| *kk == k) {
                self.syn_isn.push((k, seq));
            }
        }
        let end = seq.wrapping_add(p.tcp.payload.len() as u32 + p.syn as u32 + p.fin as u32);
        if f.snd_max.is_none_or(|m| seq_gt(end, m)) {
            f.snd_max = Some(end);
        }
        if p.rst {
            self.rst_tx += 1;
        }
    }

    /// Checks a frame about to be delivered to host `h`.
    fn on_rx(&mut self, h: usize, now: u64, frame: &[u8], paws: bool, v: &mut Vec<String>) {
        let p = match parse_tcp(frame) {
            None => return,
            Some(Err(e)) => {
                v.push(format!("t={now} host {h}: {e}"));
                return;
            }
            Some(Ok(p)) => p,
        };
        let k = (p.dst, p.tcp.dst_port, p.src, p.tcp.src_port);
        let what = format!("t={now} host {h} flow {}:{}<-{}:{}", k.0, k.1, k.2, k.3);
        // Each RST once: a duplicate delivered before the host processed the first would
        // still find the connection live.
        let rseq = p.tcp.seq_number.0 as u32;
        if p.rst && !self.rst_rx.iter().any(|r| r.1 == k && r.3 == rseq) {
            self.rst_rx.push((now, k, None, rseq));
        }
        let f = self.flows.entry(k).or_default();
        if p.syn && p.tcp.ack_number.is_none() {
            // A new connection from the peer (on a tuple this host may have used before).
            *f = FlowObs::default();
        }
        if p.syn
            && p.tcp.ack_number.is_some()
            && let Some((ts, sack)) = &mut f.offer
        {
            // The answer to this host's SYN settles what was negotiated.
            *ts &= p.tcp.timestamp.is_some();
            *sack &= p.tcp.sack_permitted;
        }
        if let Some((ts, sack)) = f.offer
            && !p.syn
            && !p.rst
        {
            if !ts && p.tcp.timestamp.is_some() {
                v.push(format!(
                    "{what}: a timestamp option on a connection without timestamps"
                ));
            }
            if !sack && p.tcp.sack_ranges.iter().any(|r| r.is_some()) {
                v.push(format!(
                    "{what}: SACK blocks {:?} on a connection without SACK",
                    p.tcp.sack_ranges
                ));
            }
        }
        if !p.rst {
            let end = rseq.wrapping_add(p.tcp.payload.len() as u32 + p.syn as u32 + p.fin as u32);
            if f.rcv_max.is_none_or(|m| seq_gt(end, m)) {
                f.rcv_max = Some(end);
            }
        }
        if let (Some(a), Some(m)) = (p.tcp.ack_number, f.snd_max)
            && seq_gt(a.0 as u32, m)
            && !p.rst
        {
            v.push(format!(
                "{what}: ack {:#x} beyond everything sent ({m:#x})",
                a.0 as u32
            ));
        }
        if let (Some(isn), Some(m)) = (f.isn, f.snd_max) {
            for (l, r) in p.tcp.sack_ranges.iter().flatten() {
                for e in [*l, *r] {
                    if !seq_gt(e, isn) || seq_gt(e, m) {
                        v.push(format!(
                            "{what}: SACK edge {e:#x} outside ({isn:#x}, {m:#x}]"
                        ));
                    }
                }
            }
        }
        if let Some(ts) = p.tcp.timestamp {
            let rel = ts.tsval.wrapping_sub(now as u32);
            match f.dom {
                None => f.dom = Some(rel),
                Some(dom) => {
                    let d = rel.wrapping_sub(dom) as i32;
                    // Behind by at most the idle time of the old server; ahead by at most
                    // the client's idle time (a jump forward at a hand-off is harmless: PAWS
                    // only needs TSval not to go back); either is bounded by the run's length.
                    // A wrong mapping is off by the difference of two clock offsets (2^28 ms and
                    // more in the fixed scenarios).
                    let span = now as i32 + 1;
                    if !(-span..=span).contains(&d) {
                        v.push(format!(
                            "{what}: TSval {:#x} is {d} ms off the peer's clock",
                            ts.tsval
                        ));
                    }
                }
            }
            if paws
                && let Some(last) = f.last_tsval
                && seq_gt(last, ts.tsval)
            {
                v.push(format!(
                    "{what}: TSval went back from {last:#x} to {:#x}",
                    ts.tsval
                ));
            }
            if f.last_tsval.is_none_or(|l| seq_gt(ts.tsval, l)) {
                f.last_tsval = Some(ts.tsval);
            }
            if p.tcp.ack_number.is_some() && ts.tsecr != 0 && !p.syn {
                // Some value the host's clock put out since the run began (an echo may be
                // old: the most recent TSval received, RFC 7323 4.3, from a peer gone quiet).
                let e = ts_of(h).wrapping_sub(ts.tsecr) as i32;
                if !(0..=now as i32).contains(&e) {
                    v.push(format!(
                        "{what}: TSecr {:#x} is not an echo of the host's clock ({:#x}): {e}",
                        ts.tsecr,
                        ts_of(h)
                    ));
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The fabric: hosts, links with faults, the switch.

type Queue = BTreeMap<(u64, u64), Vec<u8>>;

/// Which targeted kind of `Faults::drop_first` a frame is: 0 a hand-off request (to the
/// switch), 1 a reply (from it), 2 forwarded bytes (data from a node's ephemeral port to
/// another node's port 80, on its way to the switch).
fn targeted_kind(down: bool, frame: &[u8]) -> Option<usize> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let l4 = ip.payload();
    match ip.next_header() {
        IpProtocol::Udp if l4.len() >= 8 => {
            let (sport, dport) = (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            );
            if !down && dport == control::DEFAULT_PORT {
                Some(0)
            } else if down && sport == control::DEFAULT_PORT {
                Some(1)
            } else {
                None
            }
        }
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(l4).ok()?;
            let data = l4.len() > t.header_len() as usize;
            let leg = node_of(ip.src_addr()).is_some() && node_of(ip.dst_addr()).is_some();
            (!down && data && leg && t.src_port() >= 49152 && t.dst_port() == 80).then_some(2)
        }
        _ => None,
    }
}

/// Removes the socket that holds connection `k` (local, remote) from the host.
fn remove_socket(sockets: &mut SocketSet<'_>, k: Key4) {
    let h = sockets.iter().find_map(|(h, s)| match s {
        smoltcp::socket::Socket::Tcp(t) => {
            let l = t.local_endpoint()?;
            let r = t.remote_endpoint()?;
            (l == IpEndpoint::new(IpAddress::Ipv4(k.0), k.1)
                && r == IpEndpoint::new(IpAddress::Ipv4(k.2), k.3))
            .then_some(h)
        }
        _ => None,
    });
    if let Some(h) = h {
        sockets.remove(h);
    }
}

/// The state of the socket `h`, if the host still has it.
fn sock_state(sockets: &SocketSet<'_>, h: SocketHandle) -> Option<tcp::State> {
    sockets.iter().find_map(|(x, s)| match s {
        smoltcp::socket::Socket::Tcp(t) if x == h => Some(t.state()),
        _ => None,
    })
}

/// Replaces a SACK-permitted option in a TCP SYN by two NOPs (checksums kept right): the
/// sender then looks, to everyone, like a host without SACK.
fn strip_sack_permitted(frame: &mut [u8]) {
    let Ok(ip) = Ipv4Packet::new_checked(&frame[14..]) else {
        return;
    };
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if ip.next_header() != IpProtocol::Tcp {
        return;
    }
    let end = 14 + ip.total_len() as usize;
    let mut t = TcpPacket::new_unchecked(&mut frame[34..end]);
    if !t.syn() {
        return;
    }
    let hl = t.header_len() as usize;
    let opts = t.options_mut();
    let mut i = 0;
    while i < hl - 20 {
        match opts[i] {
            0 => break,
            1 => i += 1,
            4 => {
                opts[i] = 1;
                opts[i + 1] = 1;
                i += 2;
            }
            _ => i += opts[i + 1].max(2) as usize,
        }
    }
    t.fill_checksum(&src.into(), &dst.into());
}

/// The state of the socket that holds connection `k` (local, remote), if one does.
fn socket_state(sockets: &SocketSet<'_>, k: Key4) -> Option<tcp::State> {
    sockets.iter().find_map(|(_, s)| match s {
        smoltcp::socket::Socket::Tcp(t) => {
            let l = t.local_endpoint()?;
            let r = t.remote_endpoint()?;
            (l == IpEndpoint::new(IpAddress::Ipv4(k.0), k.1)
                && r == IpEndpoint::new(IpAddress::Ipv4(k.2), k.3))
            .then(|| t.state())
        }
        _ => None,
    })
}

struct Fabric {
    p: Params,
    sw: Switch<'static>,
    hosts: Vec<Host>,
    apps: Vec<App>,
    up: Vec<Queue>,
    down: Vec<Queue>,
    qseq: u64,
    rng: Rng,
    obs: Vec<Obs>,
    violations: Vec<String>,
    lost: u64,
    /// Targeted drops done, per kind of `Faults::drop_first`.
    dropped: [u32; 3],
    verdicts: HashMap<String, u64>,
    trace: bool,
    /// SYNs that ended a host's TIME-WAIT on their tuple (see `round`).
    time_wait_recycled: u64,
    /// The most flows, sessions, and bindings in one session the switch held after any round
    /// of frames or any poll.
    max_flows: usize,
    max_sessions: usize,
    max_bindings: usize,
}

fn switch_config(seed: u64) -> Config {
    let mut c = Config::cluster(3, KEY);
    c.timeouts = Timeouts {
        syn: Duration::from_secs(10),
        established: Duration::from_secs(2 * 3600),
        transitory: Duration::from_secs(60),
        // Longer than the switch's own teardown of an old node (1 s fallback, eight faked FINs
        // 200 ms apart) plus a host's backed-off RTO: the session (all bindings) goes when the
        // client connection's TIME-WAIT ends, and an old node whose faked final ACK was lost
        // must still find it when it resends its FIN.
        time_wait: Duration::from_millis(TIME_WAIT_MS),
        routed_time_wait: Duration::from_millis(TIME_WAIT_MS),
        handoff: Duration::from_secs(1),
    };
    c.hash_seed = seed.to_le_bytes().repeat(2).try_into().unwrap();
    c
}

fn switch_storage() -> Storage<'static> {
    let flows = 256;
    Storage {
        flows: vec![FlowSlot::default(); flows].into(),
        index: vec![IndexSlot::default(); Storage::index_len_for(flows)].into(),
        sessions: vec![SessionSlot::default(); 32].into(),
    }
}

fn new_switch(seed: u64) -> Switch<'static> {
    Switch::new(switch_config(seed), switch_storage()).unwrap()
}

/// An ARP request from host `h` for its gateway: the switch learns the host's MAC from it (a
/// static-ARP start, so the first SYN to a node is not spent on address resolution).
fn arp_hello(h: usize) -> Vec<u8> {
    arp_request(host_mac(h), host_ip(h), host_gw(h))
}

impl Fabric {
    fn new(p: Params) -> Fabric {
        NOW_MS.with(|c| c.set(0));
        TS_OFF.with(|c| c.set(p.ts_off));
        let mut hosts: Vec<Host> = (0..HOSTS)
            .map(|h| Host::new(h, seed_for_isn(p.isn[h], p.seed.wrapping_add(h as u64))))
            .collect();
        let mut apps = vec![App::Client(ClientApp {
            conns: p
                .conns
                .iter()
                .enumerate()
                .map(|(idx, spec)| ClientConn {
                    idx,
                    spec: spec.clone(),
                    lport: spec.lport.unwrap_or(40000 + idx as u16 * 7),
                    sock: None,
                    out: vec![],
                    out_pos: 0,
                    queued: 0,
                    line: vec![],
                    cur: None,
                    got: 0,
                    served_by: vec![],
                    fin_sent: false,
                    closed: false,
                    done: false,
                    done_at: None,
                })
                .collect(),
            rx: p.rx_in[0],
            tx: p.tx[0],
            cfg: SockCfg {
                ts: p.client_ts,
                ack_delay_ms: p.ack_delay_ms,
            },
            errors: vec![],
        })];
        for (h, host) in hosts.iter_mut().enumerate().skip(1) {
            apps.push(App::Node(Box::new(NodeApp::new(h, &p, host))));
        }
        let mut f = Fabric {
            sw: {
                let mut c = switch_config(p.seed);
                if let Some(ms) = p.handoff_ms {
                    c.timeouts.handoff = Duration::from_millis(ms);
                }
                Switch::new(c, switch_storage()).unwrap()
            },
            hosts,
            apps,
            up: (0..HOSTS).map(|_| Queue::new()).collect(),
            down: (0..HOSTS).map(|_| Queue::new()).collect(),
            qseq: 0,
            rng: Rng(p.seed ^ 0x5eed_5eed_5eed_5eed | 1),
            obs: (0..HOSTS).map(|_| Obs::default()).collect(),
            violations: vec![],
            lost: 0,
            dropped: [0; 3],
            verdicts: HashMap::new(),
            trace: std::env::var_os("KNITS_E2E_TRACE").is_some(),
            time_wait_recycled: 0,
            max_flows: 0,
            max_sessions: 0,
            max_bindings: 0,
            p,
        };
        for h in 0..HOSTS {
            let mut sink = VecSink::default();
            let mut fr = arp_hello(h);
            f.sw.process(
                h as u8,
                Instant::from_millis(0),
                &mut fr,
                FrameMeta::FULL,
                &mut sink,
                &mut NoMeter,
            );
            for (port, fr) in sink.frames {
                f.hosts[port as usize].dev.rx.push_back(fr);
            }
        }
        f
    }

    /// Puts a frame on a link, through the fault injector.
    fn enqueue(&mut self, down: bool, h: usize, frame: Vec<u8>, now: u64) {
        let fl = self.p.faults;
        if let Some(kind) = targeted_kind(down, &frame)
            && self.dropped[kind] < fl.drop_first[kind]
        {
            self.dropped[kind] += 1;
            self.lost += 1;
            return;
        }
        if self.rng.below(10_000) < fl.loss as u64 {
            self.lost += 1;
            return;
        }
        let mut due = now;
        if self.rng.below(10_000) < fl.reorder as u64 {
            due += 1 + self.rng.below(fl.max_delay.max(1));
        }
        let dup = self.rng.below(10_000) < fl.dup as u64;
        let q = if down {
            &mut self.down[h]
        } else {
            &mut self.up[h]
        };
        self.qseq += 1;
        if dup {
            q.insert((due + self.rng.below(3), self.qseq), frame.clone());
            self.qseq += 1;
        }
        q.insert((due, self.qseq), frame);
    }

    fn pop_due(q: &mut Queue, now: u64) -> Option<Vec<u8>> {
        let (&k, _) = q.iter().next()?;
        if k.0 > now {
            return None;
        }
        q.remove(&k)
    }

    fn trace_frame(&self, what: &str, h: usize, frame: &[u8]) {
        if !self.trace {
            return;
        }
        if let Some(Ok(p)) = parse_tcp(frame) {
            let t = &p.tcp;
            eprintln!(
                "t={} {what} h{h} {}:{} > {}:{} {:?} seq={:#x} ack={:?} len={} win={} ts={:?} sack={:?}",
                now_ms(),
                p.src,
                t.src_port,
                p.dst,
                t.dst_port,
                t.control,
                t.seq_number.0 as u32,
                t.ack_number.map(|a| a.0 as u32),
                t.payload.len(),
                t.window_len,
                t.timestamp.map(|x| (x.tsval, x.tsecr)),
                t.sack_ranges
            );
        }
    }

    fn round(&mut self, now: u64) -> bool {
        let inst = Instant::from_millis(now as i64);
        let mut moved = false;
        for h in 0..HOSTS {
            let host = &mut self.hosts[h];
            host.iface.poll(inst, &mut host.dev, &mut host.sockets);
            match &mut self.apps[h] {
                App::Client(c) => c.step(now, host),
                App::Node(n) => n.step(now, host),
            }
            host.iface.poll(inst, &mut host.dev, &mut host.sockets);
        }
        // Hosts -> switch.
        for h in 0..HOSTS {
            while let Some(mut fr) = self.hosts[h].dev.tx.pop_front() {
                moved = true;
                if h == 0 && !self.p.client_sack {
                    strip_sack_permitted(&mut fr);
                }
                self.obs[h].on_tx(&fr);
                self.trace_frame("tx", h, &fr);
                if let App::Node(n) = &self.apps[h]
                    && !(n.muted.is_empty() && n.silent_acks.is_empty())
                    && let Some(Ok(p)) = parse_tcp(&fr)
                {
                    let k = (p.src, p.tcp.src_port, p.dst, p.tcp.dst_port);
                    let pure_ack = p.tcp.payload.is_empty() && !p.syn && !p.fin && !p.rst;
                    if n.muted.contains(&k) || pure_ack && n.silent_acks.contains(&k) {
                        continue;
                    }
                }
                self.enqueue(false, h, fr, now);
            }
        }
        let mut sink = VecSink::default();
        for h in 0..HOSTS {
            while let Some(mut fr) = Self::pop_due(&mut self.up[h], now) {
                moved = true;
                let v = self.sw.process(
                    h as u8,
                    inst,
                    &mut fr,
                    FrameMeta::FULL,
                    &mut sink,
                    &mut NoMeter,
                );
                if self.trace {
                    eprintln!("t={now}   switch h{h}: {v:?}");
                }
                // The core's non-panicking fallbacks must never be taken.
                assert_ne!(v, Verdict::Drop(DropReason::Internal), "t={now} h{h}");
                *self.verdicts.entry(format!("{v:?}")).or_default() += 1;
                if let Verdict::Forward(p) = v {
                    self.enqueue(true, p as usize, fr, now);
                }
            }
        }
        for (port, fr) in std::mem::take(&mut sink.frames) {
            self.trace_frame("gen", port as usize, &fr);
            self.enqueue(true, port as usize, fr, now);
        }
        self.sample();
        // Switch -> hosts.
        let paws = !self.p.faults.any();
        for h in 0..HOSTS {
            while let Some(fr) = Self::pop_due(&mut self.down[h], now) {
                moved = true;
                self.trace_frame("rx", h, &fr);
                // One connection per 4-tuple, as in any stack: smoltcp would hand a duplicated
                // SYN to a second listener on the port and open a second, half-open connection,
                // and, having freed the socket, would also accept a late duplicate after the
                // close that a real stack's TIME-WAIT rejects (RFC 6191).
                if let Some(Ok(p)) = parse_tcp(&fr)
                    && p.syn
                    && p.tcp.ack_number.is_none()
                {
                    let k = (p.dst, p.tcp.dst_port, p.src, p.tcp.src_port);
                    let syn = (k, p.tcp.seq_number.0 as u32);
                    let known = self.obs[h].syns.contains(&syn);
                    let held = socket_state(&self.hosts[h].sockets, k);
                    // A SYN that Linux's TIME-WAIT accepts (RFC 6191: its sequence number is
                    // past the old connection's, or its timestamp newer) ends the TIME-WAIT
                    // and opens a new connection; smoltcp's TIME-WAIT socket would swallow
                    // it, so it goes here, silently.
                    let reopens = held == Some(tcp::State::TimeWait)
                        && !known
                        && self.obs[h].flows.get(&k).is_some_and(|o| {
                            let seq = p.tcp.seq_number.0 as u32;
                            o.rcv_max.is_some_and(|m| seq_gt(seq, m))
                                || matches!(
                                    (p.tcp.timestamp, o.last_tsval),
                                    (Some(t), Some(l)) if seq_gt(t.tsval, l)
                                )
                        });
                    if reopens {
                        self.time_wait_recycled += 1;
                        remove_socket(&mut self.hosts[h].sockets, k);
                    } else if held.is_some() || known {
                        continue;
                    }
                    self.obs[h].syns.push(syn);
                }
                let rsts = self.obs[h].rst_rx.len();
                self.obs[h].on_rx(h, now, &fr, paws, &mut self.violations);
                if self.obs[h].rst_rx.len() > rsts {
                    let r = self.obs[h].rst_rx.last_mut().unwrap();
                    r.2 = socket_state(&self.hosts[h].sockets, r.1);
                }
                self.hosts[h].dev.rx.push_back(fr);
            }
        }
        moved
    }

    fn tick(&mut self, now: u64) {
        NOW_MS.with(|c| c.set(now));
        for _ in 0..500 {
            if !self.round(now) {
                break;
            }
        }
        let mut sink = VecSink::default();
        self.sw
            .poll(Instant::from_millis(now as i64), 256, &mut sink);
        for (port, fr) in sink.frames {
            self.trace_frame("gen", port as usize, &fr);
            self.enqueue(true, port as usize, fr, now);
        }
        self.sample();
    }

    /// Notes how much the switch holds (after every round and every poll).
    fn sample(&mut self) {
        self.max_flows = self.max_flows.max(self.sw.flow_count());
        self.max_sessions = self.max_sessions.max(self.sw.session_count());
        for i in 0..self.sw.session_capacity() {
            if let Some(s) = self.sw.session(i) {
                self.max_bindings = self.max_bindings.max(s.bindings.len());
            }
        }
    }

    /// The table holds nothing but plain legs to a hung target, which live as long as their
    /// other end keeps retransmitting.
    fn only_hung_legs_left(&self) -> bool {
        let hung: Vec<Key4> = self.nodes().flat_map(|n| n.muted.iter().copied()).collect();
        self.sw.session_count() == 0
            && self.sw.table().iter().all(|(_, fl)| {
                let k = fl.keys[1];
                hung.contains(&(
                    Ipv4Address::from_octets(k.src),
                    k.sport,
                    Ipv4Address::from_octets(k.dst),
                    k.dport,
                ))
            })
    }

    /// Every TCP socket of every host is closed, in TIME-WAIT or listening.
    fn hosts_quiet(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.sockets.iter().all(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => matches!(
                    t.state(),
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                ),
                _ => true,
            })
        })
    }

    fn client(&self) -> &ClientApp {
        match &self.apps[0] {
            App::Client(c) => c,
            App::Node(_) => unreachable!(),
        }
    }

    fn nodes(&self) -> impl Iterator<Item = &NodeApp> {
        self.apps.iter().filter_map(|a| match a {
            App::Node(n) => Some(&**n),
            App::Client(_) => None,
        })
    }

    fn summary(&self) -> String {
        let c = self.sw.counters();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "t={} flows={} sessions={} lost={}",
            now_ms(),
            self.sw.flow_count(),
            self.sw.session_count(),
            self.lost
        );
        for r in DropReason::ALL {
            if c.drop_count(*r) > 0 {
                let _ = write!(s, " drop.{}={}", r.name(), c.drop_count(*r));
            }
        }
        for g in Generated::ALL {
            if c.generated_count(*g) > 0 {
                let _ = write!(s, " gen.{}={}", g.name(), c.generated_count(*g));
            }
        }
        for code in ReplyCode::ALL {
            if c.handoffs[code.index()] > 0 {
                let _ = write!(s, " handoff.{}={}", code.name(), c.handoffs[code.index()]);
            }
        }
        let _ = writeln!(
            s,
            " completed={} rolled_back={} closed={} expired={}",
            c.handoffs_completed, c.handoffs_rolled_back, c.closed, c.expired
        );
        let _ = writeln!(s, "flows by state {:?}", self.sw.flows_by_state());
        for (i, f) in self.sw.table().iter() {
            let _ = writeln!(
                s,
                "  flow {i}: {:?} {:?} {:?} -> {:?} link={}",
                f.kind, f.state, f.keys[0].src, f.keys[0].dst, f.link
            );
        }
        for i in 0..self.sw.session_capacity() {
            if let Some(sess) = self.sw.session(i) {
                let _ = writeln!(
                    s,
                    "  session {i}: anchor {} hops {}",
                    sess.anchor, sess.hops
                );
                for b in &sess.bindings {
                    let _ = writeln!(s, "    {b:?}");
                }
            }
        }
        for c in &self.client().conns {
            let st = c.sock.and_then(|h| sock_state(&self.hosts[0].sockets, h));
            let _ = writeln!(
                s,
                "client conn {}: got {}/{} served_by {:?} closed {} done {} state {st:?}",
                c.idx,
                c.got,
                c.spec.reqs.len(),
                c.served_by,
                c.closed,
                c.done
            );
        }
        for n in self.nodes() {
            let _ = writeln!(
                s,
                "node {}: served {:?} codes {:?}",
                n.me, n.served, n.codes
            );
            for c in &n.conns {
                let st1 = sock_state(&self.hosts[n.me].sockets, c.c1);
                let st2: Vec<_> = c
                    .c2s
                    .iter()
                    .map(|h| sock_state(&self.hosts[n.me].sockets, *h))
                    .collect();
                let _ = writeln!(
                    s,
                    "  conn from {}: {:?} c1 {st1:?} c2 {st2:?} inbuf {} consumed {} sent {}",
                    c.peer,
                    c.st,
                    c.inbuf.len(),
                    c.consumed,
                    c.sent
                );
            }
        }
        let _ = writeln!(s, "verdicts {:?}", self.verdicts);
        s
    }
}

// ------------------------------------------------------------------------------------------------
// Running a scenario and checking the invariants.

#[derive(Debug)]
struct Outcome {
    accepted: u64,
    completed: u64,
    rolled_back: u64,
    /// For each client connection, which node served each response.
    served_by: Vec<Vec<u8>>,
    /// Virtual time at which every client connection had finished.
    clients_done_ms: u64,
    /// Every reply code the nodes received (retransmitted answers once).
    codes: Vec<ReplyCode>,
    /// The switch's counters at the end.
    counters: Counters,
    /// The most flows, sessions, and bindings of one session after any round or poll.
    max_flows: usize,
    max_sessions: usize,
    max_bindings: usize,
    /// SYNs that ended a host's TIME-WAIT on their tuple.
    time_wait_recycled: u64,
    summary: String,
}

fn run(p: Params) -> Outcome {
    let deadline = p.deadline_ms;
    let mut f = Fabric::new(p);
    let mut now = 0;
    let mut clients_done_at = None;
    let mut drained_at = None;
    let mut quiet_at = None;
    loop {
        now += 1;
        f.tick(now);
        if clients_done_at.is_none() && f.client().all_done() {
            clients_done_at = Some(now);
        }
        if let Some(t) = clients_done_at {
            let empty = f.sw.flow_count() == 0 && f.sw.session_count() == 0;
            if empty && drained_at.is_none() {
                drained_at = Some(now);
            }
            // The last host socket of the run is closed (or in TIME-WAIT): the switch's
            // TIME-WAIT for the connections starts no later than this.
            if quiet_at.is_none() && f.hosts_quiet() {
                quiet_at = Some(now);
            }
            // Run on until every host is quiet too, so that a late retransmission (an old
            // node's FIN whose faked final ACK was lost) still has to be answered; 30 s
            // covers smoltcp's retransmission back-off.
            if empty && f.hosts_quiet() || now - t > TIME_WAIT_MS + 30_000 {
                break;
            }
        }
        let errs = f.client().errors.len()
            + f.nodes().map(|n| n.errors.len()).sum::<usize>()
            + f.violations.len();
        if now >= deadline || errs > 0 && clients_done_at.is_none() && now > 5000 {
            break;
        }
    }
    let mut problems = vec![];
    // The table is empty within TIME-WAIT (and 1 s of slack) after the last host socket
    // finished (which, with loss, may be long after the client did: a lost final ACK keeps the
    // server in LAST-ACK).
    let last_close = clients_done_at.max(quiet_at);
    match (last_close, drained_at) {
        (Some(t), Some(d)) if d <= t + TIME_WAIT_MS + 1000 => {}
        (Some(t), Some(d)) => problems.push(format!(
            "the table drained {} ms after the last host socket closed (TIME-WAIT is {TIME_WAIT_MS} ms)",
            d - t
        )),
        (Some(_), None) if f.only_hung_legs_left() => {}
        (Some(_), None) => problems.push(format!(
            "the table never drained: {} flows, {} sessions",
            f.sw.flow_count(),
            f.sw.session_count()
        )),
        (None, _) => {}
    }
    problems.extend(f.client().errors.iter().cloned());
    for n in f.nodes() {
        problems.extend(n.errors.iter().cloned());
    }
    problems.extend(f.violations.iter().take(20).cloned());
    if now >= deadline {
        problems.push(format!(
            "deadline: not finished after {deadline} virtual ms"
        ));
    }
    let c = f.sw.counters().clone();
    let rolled_back = c.handoffs_rolled_back;
    // RSTs that hit a live connection: never at the client, and at a node only on a
    // node-to-node leg of a rolled-back hand-off (both ends of the new leg are reset). An RST
    // that meets no socket or one in TIME-WAIT is a stack's answer to a duplicate after the
    // close, as on any network.
    // A refused hand-off's new leg is reset by its node, as knits-proxy does: its target sees
    // the RST, as intended.
    let refused: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.refused_legs.iter().copied())
        .collect();
    let mut leg_rsts = 0;
    for (h, o) in f.obs.iter().enumerate() {
        for (t, k, st, _) in &o.rst_rx {
            // Only synchronized connections count: a half-open one (SYN-RECEIVED after a
            // duplicated SYN met a second listener) is reset by its peer as on any network.
            // And LAST-ACK: a FIN resent after the peer's TIME-WAIT ended (smoltcp's is 10 s,
            // a FIN's fifth retransmission comes 31 s after the first) meets an RST on any
            // network; what the host sent before has arrived (its receiver checks).
            let live = st.is_some_and(|st| {
                !matches!(
                    st,
                    tcp::State::TimeWait
                        | tcp::State::SynSent
                        | tcp::State::SynReceived
                        | tcp::State::LastAck
                )
            });
            if !live || refused.contains(&(k.2, k.3, k.0, k.1)) {
                continue;
            }
            let node_leg = node_of(k.0).is_some() && node_of(k.2).is_some();
            if h == 0 || !node_leg || rolled_back == 0 {
                problems.push(format!(
                    "t={t} host {h} received an RST on {}:{} <- {}:{} in {st:?}",
                    k.0, k.1, k.2, k.3
                ));
            } else {
                leg_rsts += 1;
            }
        }
    }
    if leg_rsts > 2 * rolled_back {
        problems.push(format!(
            "{leg_rsts} RSTs on node legs for {rolled_back} roll-backs"
        ));
    }
    let resets: usize = f
        .nodes()
        .flat_map(|n| n.reset_keys.iter())
        .filter(|k| !refused.contains(&(k.2, k.3, k.0, k.1)))
        .count();
    if resets as u64 > rolled_back {
        problems.push(format!(
            "{resets} handed-off connections reset at their target for {rolled_back} roll-backs"
        ));
    }
    // The ISNs asked for are the ISNs used (first connection of each host).
    for (h, o) in f.obs.iter().enumerate() {
        if let Some((k, isn)) = o.syn_isn.first()
            && *isn != f.p.isn[h]
        {
            problems.push(format!("host {h}: first ISN {isn:#x} on {k:?}, asked for {:#x} (smoltcp's ISN generator changed?)", f.p.isn[h]));
        }
    }
    // Every request served exactly once; twice only when a hand-off was rolled back after its
    // target had read (and maybe answered) what it was handed, its answer never reaching the
    // client (which checks that it got each response exactly once).
    let mut served: HashMap<u32, usize> = HashMap::new();
    for n in f.nodes() {
        for id in &n.served {
            *served.entry(*id).or_default() += 1;
        }
    }
    for (ci, spec) in f.p.conns.iter().enumerate() {
        for i in 0..spec.reqs.len() {
            let id = request_id(ci, i);
            let n = served.remove(&id).unwrap_or(0);
            if n == 0 || n > 1 + rolled_back as usize {
                problems.push(format!("request {id} served {n} times"));
            }
        }
    }
    if !served.is_empty() {
        problems.push(format!("unknown requests served: {served:?}"));
    }
    // Every socket ends closed (or in TIME-WAIT), none half-open; except, on a faulty network,
    // the two ends of a leg to a hung target (the switch's one RST to it may be lost, and a node
    // that closes such a leg after a refusal, e.g. `not_established` when the leg's last
    // handshake ACK was reordered behind the request, waits for it forever: smoltcp never
    // gives up).
    let rolled_back_legs: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.rolled_back_legs.iter().copied())
        .collect();
    let hung: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.muted.iter().flat_map(|k| [*k, (k.2, k.3, k.0, k.1)]))
        .collect();
    for (h, host) in f.hosts.iter().enumerate() {
        for (_, s) in host.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(s) = s {
                let st = s.state();
                let k = s.local_endpoint().zip(s.remote_endpoint()).map(|(l, r)| {
                    let (IpAddress::Ipv4(la), IpAddress::Ipv4(ra)) = (l.addr, r.addr);
                    (la, l.port, ra, r.port)
                });
                if k.is_some_and(|k| hung.contains(&k)) && f.p.faults.any() {
                    continue;
                }
                // The target's end of a rolled-back leg whose one RST was lost while it had
                // nothing to send: no packet of it reaches the switch, which cannot tell it
                // again. Its application's idle time-out closes it.
                if st == tcp::State::Established
                    && f.p.faults.loss > 0
                    && k.is_some_and(|k| rolled_back_legs.contains(&(k.2, k.3, k.0, k.1)))
                {
                    continue;
                }
                if !matches!(
                    st,
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                ) {
                    problems.push(format!(
                        "host {h}: socket {:?} <-> {:?} left in {st}",
                        s.local_endpoint(),
                        s.remote_endpoint()
                    ));
                }
            }
        }
    }
    if c.expired != 0 {
        problems.push(format!(
            "{} flow entries left by idle expiry instead of closing",
            c.expired
        ));
    }
    let summary = f.summary();
    if std::env::var_os("KNITS_E2E_SUMMARY").is_some() {
        eprintln!("{summary}");
    }
    if !problems.is_empty() {
        panic!(
            "seed {}: {} problems:\n{}\n{summary}\nparams: {:?}",
            f.p.seed,
            problems.len(),
            problems.join("\n"),
            f.p
        );
    }
    Outcome {
        accepted: c.handoffs[ReplyCode::Accepted.index()],
        completed: c.handoffs_completed,
        rolled_back,
        served_by: f
            .client()
            .conns
            .iter()
            .map(|c| c.served_by.clone())
            .collect(),
        clients_done_ms: clients_done_at.unwrap_or(now),
        codes: f.nodes().flat_map(|n| n.codes.iter().copied()).collect(),
        counters: c,
        max_flows: f.max_flows,
        max_sessions: f.max_sessions,
        max_bindings: f.max_bindings,
        time_wait_recycled: f.time_wait_recycled,
        summary,
    }
}

/// Runs a scenario without faults and checks that every request was served by the node it named
/// and that the expected number of hand-offs happened and completed.
fn run_exact(p: Params, handoffs: u64) -> Outcome {
    let want: Vec<Vec<u8>> = p
        .conns
        .iter()
        .map(|c| c.reqs.iter().map(|r| r.target).collect())
        .collect();
    let o = run(p);
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_eq!(
        (o.accepted, o.completed, o.rolled_back),
        (handoffs, handoffs, 0),
        "hand-offs\n{}",
        o.summary
    );
    // Without loss nothing waits for a retransmission time-out (smoltcp's is at least 1 s).
    assert!(
        o.clients_done_ms < 1000,
        "took {} ms without faults\n{}",
        o.clients_done_ms,
        o.summary
    );
    o
}

// ------------------------------------------------------------------------------------------------
// Scenarios.

#[test]
fn zero_handoffs() {
    let p = Params::new(
        1,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 0), (1, 1), (1, 1460), (1, 100_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 0);
}

#[test]
fn one_handoff() {
    let p = Params::new(
        2,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 1000), (2, 50_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 1);
}

#[test]
fn two_handoffs() {
    let p = Params::new(
        3,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 10), (2, 3000), (3, 70_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 2);
}

#[test]
fn three_handoffs_back_to_the_first_node() {
    let p = Params::new(
        4,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 0), (2, 1), (3, 1460), (1, 20_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 3);
}

#[test]
fn pipelined_some_served_before_the_handoff() {
    let reqs = pipelined(&[
        (1, 100),
        (1, 0),
        (2, 5000),
        (2, 1),
        (3, 30_000),
        (3, 0),
        (1, 7),
    ]);
    let p = Params::new(
        5,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 3);
}

#[test]
fn responses_up_to_4_mib() {
    let reqs = script(&[(1, 4 << 20), (2, 0), (2, 4 << 20), (3, 1)]);
    let p = Params::new(
        6,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 2);
}

#[test]
fn concurrent_connections() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 100), (2, 2000), (3, 10)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 2,
            reqs: pipelined(&[(2, 0), (3, 40_000), (1, 5)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 3,
            reqs: script(&[(3, 64_000), (3, 1)]),
            ..ConnSpec::default()
        },
    ];
    let p = Params::new(7, conns);
    run_exact(p, 4);
}

fn faulty(loss: u32, dup: u32, reorder: u32) -> Faults {
    Faults {
        loss,
        dup,
        reorder,
        max_delay: 8,
        drop_first: [0; 3],
    }
}

#[test]
fn loss_reordering_duplication() {
    for seed in 10..14 {
        let reqs = script(&[(1, 3000), (2, 200_000), (3, 0), (1, 50_000)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

#[test]
fn pipelined_with_faults() {
    for seed in 20..23 {
        let reqs = pipelined(&[(1, 1), (2, 20_000), (2, 0), (3, 5000), (1, 1460)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(300, 300, 500);
        run(p);
    }
}

#[test]
fn large_responses_with_faults() {
    let reqs = script(&[(1, 4 << 20), (2, 1 << 20), (3, 0)]);
    let mut p = Params::new(
        40,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.faults = faulty(100, 100, 200);
    let o = run(p);
    assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
}

/// The first hand-off request, the first reply and the first segment of forwarded bytes are
/// lost: the node retries the request (same counter, same answer) and TCP resends the bytes.
#[test]
fn lost_control_messages_and_forwarded_bytes() {
    for drop_first in [[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 2, 1]] {
        let reqs = script(&[(1, 100), (2, 3000), (3, 1)]);
        let mut p = Params::new(
            50,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults.drop_first = drop_first;
        let o = run(p);
        // A lost forwarded segment comes back after smoltcp's 1 s RTO, as the switch's 1 s
        // hand-off time-out runs out: either outcome is correct.
        // (`handoffs[accepted]` counts answers: a retransmitted request is answered again.)
        assert!(o.accepted >= 2, "{drop_first:?}\n{}", o.summary);
        assert_eq!(
            o.completed + o.rolled_back,
            2,
            "{drop_first:?}\n{}",
            o.summary
        );
        if drop_first[2] == 0 {
            assert_eq!(
                o.served_by,
                vec![vec![1, 2, 3]],
                "{drop_first:?}\n{}",
                o.summary
            );
        }
    }
}

#[test]
fn target_never_answers() {
    let mut p = Params::new(
        30,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 500), (2, 3000), (1, 10)]),
            ..ConnSpec::default()
        }],
    );
    p.modes[2] = Mode::Mute;
    let o = run(p);
    // Node 1 served everything after the roll-back.
    assert_eq!(o.served_by, vec![vec![1, 1, 1]], "{}", o.summary);
    assert_eq!(
        (o.accepted, o.rolled_back, o.completed),
        (1, 1, 0),
        "{}",
        o.summary
    );
}

#[test]
fn target_resets() {
    let mut p = Params::new(
        31,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 500), (3, 3000), (1, 10)]),
            ..ConnSpec::default()
        }],
    );
    p.modes[3] = Mode::Reset;
    let o = run(p);
    assert_eq!(o.served_by, vec![vec![1, 1, 1]], "{}", o.summary);
    assert_eq!(
        (o.accepted, o.rolled_back, o.completed),
        (1, 1, 0),
        "{}",
        o.summary
    );
}

// ------------------------------------------------------------------------------------------------
// Tuple reuse, long hand-off chains, clients without options, half-closed clients.

/// `Connection: close` on the last request: the server closes first.
fn closing(mut reqs: Vec<Req>) -> Vec<Req> {
    if let Some(r) = reqs.last_mut() {
        r.close = true;
    }
    reqs
}

/// Which node each request names.
fn targets(p: &Params) -> Vec<Vec<u8>> {
    p.conns
        .iter()
        .map(|c| c.reqs.iter().map(|r| r.target).collect())
        .collect()
}

/// Every hand-off asked for was accepted (and answered busy at most), and each one
/// completed.
fn assert_all_accepted(o: &Outcome) {
    let refused: Vec<_> = o
        .codes
        .iter()
        .filter(|c| !matches!(c, ReplyCode::Accepted | ReplyCode::Busy))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{}", o.summary);
    assert_eq!(
        (o.completed, o.rolled_back),
        (o.accepted, 0),
        "hand-offs\n{}",
        o.summary
    );
}

/// Three connections from one client port, each handed off and closed by its server: the
/// next one opens 1 ms after the previous one ended (the switch still holds that one in
/// TIME-WAIT).
fn reuse_after_handoffs() -> Vec<ConnSpec> {
    let port = 41_000;
    vec![
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(1, 1000), (2, 5000)])),
            lport: Some(port),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(3, 100), (1, 2000), (2, 30_000)])),
            lport: Some(port),
            after: Some(0),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(2, 10), (3, 1460)])),
            lport: Some(port),
            after: Some(1),
            ..ConnSpec::default()
        },
    ]
}

/// A client connection is handed off and ends with the server's close; the client opens the
/// next one from the same port right away. The SYN's timestamp is newer, so the switch reopens
/// the tuple (RFC 6191), sprays it afresh, and the new connection is served and handed off
/// again, twice over. (A reopen while an old node is still being retired: see
/// `golden::a_reopened_tuple_still_retires_the_old_node`.)
#[test]
fn tuple_reuse_after_a_handoff() {
    let p = Params::new(60, reuse_after_handoffs());
    let want = targets(&p);
    let o = run(p);
    let c = &o.counters;
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_all_accepted(&o);
    assert!(o.accepted >= 4, "{}", o.summary);
    assert_eq!(c.event_count(FlowEvent::Reopened), 2, "{}", o.summary);
    assert_eq!(c.drop_count(DropReason::ReuseRefused), 0, "{}", o.summary);
}

/// The same tuple four times, each connection closed by its server: the first and third are
/// not handed off (so their node keeps the tuple in TIME-WAIT), the second and fourth are. The
/// fourth lands on the first one's node, whose TIME-WAIT takes the new SYN (as Linux does). A
/// reopened connection is tracked from its new handshake, so it is never refused as
/// `not_established`.
#[test]
fn tuple_reuse_after_a_plain_connection() {
    let port = 41_007;
    let plain = |after| ConnSpec {
        start_ms: 1,
        // Target 0: whichever node the connection was sprayed to serves it.
        reqs: closing(script(&[(0, 3000), (0, 10)])),
        lport: Some(port),
        after,
        ..ConnSpec::default()
    };
    let handed = |after, t: &[(u8, u32)]| ConnSpec {
        start_ms: 1,
        reqs: closing(script(t)),
        lport: Some(port),
        after,
        ..ConnSpec::default()
    };
    let conns = vec![
        plain(None),
        handed(Some(0), &[(1, 100), (3, 2000), (2, 10)]),
        plain(Some(1)),
        handed(Some(2), &[(3, 5), (2, 20_000), (1, 1)]),
    ];
    let p = Params::new(61, conns);
    let want = targets(&p);
    let o = run(p);
    let c = &o.counters;
    for i in [1, 3] {
        assert_eq!(o.served_by[i], want[i], "conn {i}\n{}", o.summary);
    }
    assert_all_accepted(&o);
    assert!(o.accepted >= 4, "{}", o.summary);
    assert_eq!(c.event_count(FlowEvent::Reopened), 3, "{}", o.summary);
    assert_eq!(c.drop_count(DropReason::ReuseRefused), 0, "{}", o.summary);
    assert!(
        o.time_wait_recycled >= 1,
        "no node took the SYN out of TIME-WAIT\n{}",
        o.summary
    );
}

/// Tuple reuse on a faulty network: every response arrives right and every hand-off ends
/// completed or rolled back.
#[test]
fn tuple_reuse_with_faults() {
    for seed in 62..65 {
        let port = 41_014;
        // The next connection 2.5 s after the previous one ended: every old node is retired
        // by then, even after lost FINs (a reopen cuts the retirement short, see
        // `golden::a_reopened_tuple_still_retires_the_old_node`), and the switch still holds
        // the tuple in TIME-WAIT.
        let conns = (0..3usize)
            .map(|i| ConnSpec {
                start_ms: if i == 0 { 1 } else { 2500 },
                reqs: closing(script(&[(1 + i as u8, 700), (3 - i as u8, 9000)])),
                lport: Some(port),
                after: i.checked_sub(1),
                ..ConnSpec::default()
            })
            .collect();
        let mut p = Params::new(seed, conns);
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
        assert!(
            o.counters.event_count(FlowEvent::Reopened) >= 1,
            "{}",
            o.summary
        );
    }
}

/// Hand-offs of one keep-alive connection: `KNITS_E2E_HANDOFFS`, else 1,000.
fn many_handoffs() -> usize {
    std::env::var("KNITS_E2E_HANDOFFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One keep-alive connection handed off on every request (1,000 times, owners 1 -> 2 -> 3 ->
/// 1 ...; each request waits for the previous response): every response comes from the node
/// it names, every hand-off is accepted and completes, and the switch holds the same few
/// entries throughout (retired bindings leave the history at once, their legs the table).
/// The hosts acknowledge at once (no delayed ACK).
#[test]
fn a_thousand_handoffs_on_one_connection() {
    thousand_handoffs(70, Some(0));
}

/// The same with smoltcp's delayed ACK (10 ms) on every host: the client moves on long before
/// an old node acknowledges the last request it was sent, so several old nodes are being
/// retired at once. Still no hand-off may be refused, and the history stays small.
#[test]
fn a_thousand_handoffs_with_delayed_acks() {
    thousand_handoffs(71, None);
}

fn thousand_handoffs(seed: u64, ack_delay_ms: Option<u64>) {
    let n = many_handoffs();
    let t: Vec<(u8, u32)> = (0..=n)
        .map(|i| (1 + (i % 3) as u8, [0, 1, 100, 1460, 3000, 20_000][i % 6]))
        .collect();
    let mut p = Params::new(
        seed,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&t),
            ..ConnSpec::default()
        }],
    );
    p.ack_delay_ms = ack_delay_ms;
    p.reap = true;
    p.deadline_ms = 600_000;
    let want = targets(&p);
    let t0 = std::time::Instant::now();
    let o = run(p);
    eprintln!(
        "{n} hand-offs: {} ms virtual, {:?} wall; at most {} flows, {} sessions, {} bindings",
        o.clients_done_ms,
        t0.elapsed(),
        o.max_flows,
        o.max_sessions,
        o.max_bindings
    );
    // The summary lists every request: only its first lines go into a failure message.
    let head = o.summary.lines().take(3).collect::<Vec<_>>().join("\n");
    let wrong: Vec<usize> = (0..want[0].len())
        .filter(|&i| o.served_by[0].get(i) != Some(&want[0][i]))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} responses from the wrong node (the first: request {})\n{head}",
        wrong.len(),
        want[0].len(),
        wrong[0]
    );
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &o.codes {
        *codes.entry(c.name()).or_default() += 1;
    }
    assert_eq!(
        (o.accepted, o.completed, o.rolled_back),
        (n as u64, n as u64, 0),
        "hand-offs; answers {codes:?}\n{head}"
    );
    let c = &o.counters;
    assert_eq!(c.event_count(FlowEvent::BindingRemoved), n as u64, "{head}");
    assert_eq!(c.event_count(FlowEvent::BindingForced), 0, "{head}");
    assert!(
        o.max_flows <= 4 && o.max_sessions <= 1,
        "the switch grew: {} flows, {} sessions, {} bindings\n{head}",
        o.max_flows,
        o.max_sessions,
        o.max_bindings
    );
}

/// A client without timestamps (its SYNs offer none), nodes with them: hand-offs are accepted,
/// and the targets' timestamps never reach the client (`run` checks every frame it is given).
#[test]
fn client_without_timestamps() {
    let reqs = script(&[(1, 1000), (2, 50_000), (3, 1), (1, 20_000)]);
    let mut p = Params::new(
        80,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.client_ts = false;
    let o = run_exact(p, 3);
    assert!(
        o.counters.event_count(FlowEvent::TsStripped) > 0,
        "{}",
        o.summary
    );
}

/// A client without SACK (the option is taken out of its SYNs on its link: smoltcp always
/// offers it), nodes with it; and a client with neither. Uploads under loss make the targets
/// send SACK blocks about the client's bytes on their legs: none may reach the client.
#[test]
fn client_without_sack_or_timestamps_with_faults() {
    let mut sack_stripped = 0;
    // The switch's default hand-off time-out (5 s): with the tests' 1 s, most of these
    // uploads are rolled back, and hang (`regression_rollback_after_the_target_acknowledged_
    // client_bytes`).
    for (seed, ts) in [(80, true), (84, false), (86, true), (90, false)] {
        let o = run(uploads_without_sack(seed, ts, Some(5000)));
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
        assert!(o.completed >= 1, "{}", o.summary);
        sack_stripped += o.counters.event_count(FlowEvent::SackStripped);
    }
    assert!(
        sack_stripped > 0,
        "no SACK block was ever on its way to the client"
    );
}

/// Uploads (30,000 bytes with every request) from a client without SACK, with timestamps or
/// not, on a faulty network.
fn uploads_without_sack(seed: u64, ts: bool, handoff_ms: Option<u64>) -> Params {
    let mut reqs = script(&[(1, 100), (2, 20_000), (3, 3000), (1, 0), (2, 1460)]);
    for r in &mut reqs {
        r.body = 30_000;
    }
    let mut p = Params::new(
        seed,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.client_sack = false;
    p.client_ts = ts;
    p.faults = faulty(300, 200, 400);
    p.handoff_ms = handoff_ms;
    p
}

/// Uploads whose hand-off is rolled back after the target's ACK of client bytes reached the
/// client: those bytes are lost, the old node waits for them forever (see
/// `golden::no_ack_from_a_pending_target_reaches_the_client`). Seed 82: request 1001 (its
/// 30,000-byte upload half in) hangs after the roll-back; the random schedule (no loss, only
/// duplication and reordering) hangs the same way on request 1001.
#[test]
fn regression_rollback_after_the_target_acknowledged_client_bytes() {
    run(uploads_without_sack(82, true, None));
    let conns = vec![
        ConnSpec {
            start_ms: 30,
            reqs: vec![
                Req {
                    target: 1,
                    size: 22425,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    body: 4927,
                    ..Req::default()
                },
                Req {
                    target: 3,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 2378,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 1,
                    ..Req::default()
                },
            ],
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 38,
            reqs: vec![
                Req {
                    target: 1,
                    size: 2567,
                    body: 3122,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 1460,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 1,
                    size: 1460,
                    wait: true,
                    ..Req::default()
                },
            ],
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    run(regression(
        17503363479917510540,
        (0, 175, 427),
        conns,
        [4148130509, 2088344064, 2033157721, 4070198046],
        [1417983243, 4285365716, 845028602, 1346255721],
    ));
}

/// A client without timestamps on a faulty network, pipelined.
#[test]
fn client_without_timestamps_with_faults() {
    for seed in 85..88 {
        let reqs = pipelined(&[(1, 1), (2, 20_000), (2, 0), (3, 5000), (1, 1460)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.client_ts = false;
        p.faults = faulty(300, 300, 500);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

/// A half-closed client: its FIN follows its requests at once, before the node decides. The
/// hand-off is accepted, the target gets the request and the FIN, the client the whole
/// response and a clean close (its socket ends in TIME-WAIT, the server's in CLOSED).
#[test]
fn half_closed_client() {
    let conns = vec![
        // One request for another node: the FIN arrives with it.
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(2, 30_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
        // Pipelined: the first node serves one, the FIN follows the one handed off.
        ConnSpec {
            start_ms: 3,
            reqs: pipelined(&[(3, 100), (3, 0), (1, 70_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    let p = Params::new(90, conns);
    let want = targets(&p);
    let o = run(p);
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_all_accepted(&o);
    assert!(o.accepted >= 2, "{}", o.summary);
    // Every hand-off came after the client's FIN, which went on each time.
    assert_eq!(
        o.counters.event_count(FlowEvent::ClientFinPassed),
        o.accepted,
        "{}",
        o.summary
    );
}

/// The old node of a half-closed client has the client's FIN already: it must not be sent
/// the FIN again and again after it has closed c1 (e90d1bd sent it 8 times, each answered by
/// the closed socket's RST, dropped as `out_of_window`, and retired the binding only when the
/// retries ran out: 24 faked FINs and 15 RSTs for this run's 3 hand-offs).
#[test]
fn half_closed_client_old_node_is_told_once() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(2, 30_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 3,
            reqs: pipelined(&[(3, 100), (3, 0), (1, 70_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    let o = run(Params::new(90, conns));
    let c = &o.counters;
    let fins = c.generated_count(Generated::FakeClientFin);
    let dropped = c.drop_count(DropReason::OutOfWindow);
    assert!(
        fins <= o.accepted && dropped == 0,
        "{fins} faked FINs and {dropped} frames dropped out of window for {} hand-offs\n{}",
        o.accepted,
        o.summary
    );
}

/// Half-closed clients on a faulty network, with uploads.
#[test]
fn half_closed_client_with_faults() {
    for seed in 91..94 {
        let mut reqs = pipelined(&[(1, 500), (2, 20_000)]);
        reqs[1].body = 5000;
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                half_close: true,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

// ------------------------------------------------------------------------------------------------
// Random schedules.

mod schedules {
    use super::*;
    use proptest::prelude::*;

    /// A request; with `uploads`, some carry a body.
    fn req(uploads: bool) -> impl Strategy<Value = Req> {
        let size = prop_oneof![
            Just(0u32),
            Just(1),
            1..3000u32,
            Just(1460),
            Just(2920),
            10_000..80_000u32
        ];
        let body = if uploads {
            prop_oneof![3 => Just(0u32), 1 => 1..20_000u32].boxed()
        } else {
            Just(0u32).boxed()
        };
        (1..=3u8, size, any::<bool>(), body).prop_map(|(target, size, wait, body)| Req {
            target,
            size,
            wait,
            body,
            ..Req::default()
        })
    }

    /// A connection; one in five half-closes after its last request.
    fn conn(uploads: bool) -> impl Strategy<Value = ConnSpec> {
        (
            1..40u64,
            prop::collection::vec(req(uploads), 1..=5),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(start_ms, reqs, half_close)| ConnSpec {
                start_ms,
                reqs,
                half_close,
                ..ConnSpec::default()
            })
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![8 => Just(Mode::Normal), 1 => Just(Mode::Mute), 1 => Just(Mode::Reset)]
    }

    prop_compose! {
        /// A schedule; the client offers timestamps and SACK three times in four (each).
        fn params(uploads: bool)(
            seed in any::<u64>(),
            conns in prop::collection::vec(conn(uploads), 1..=2),
            loss in prop_oneof![Just(0u32), 0..400u32],
            dup in prop_oneof![Just(0u32), 0..400u32],
            reorder in prop_oneof![Just(0u32), 0..600u32],
            isn in any::<[u32; HOSTS]>(),
            ts_off in any::<[u32; HOSTS]>(),
            m3 in mode(),
            client_ts in prop::bool::weighted(0.75),
            client_sack in prop::bool::weighted(0.75),
        ) -> Params {
            let mut p = Params::new(seed, conns);
            p.faults = Faults { loss, dup, reorder, max_delay: 8, drop_first: [0; 3] };
            p.isn = isn;
            p.ts_off = ts_off;
            p.modes[3] = m3;
            p.client_ts = client_ts;
            p.client_sack = client_sack;
            p
        }
    }

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    proptest! {
        // Deterministic: a fixed generator seed (KNITS_E2E_SEED to explore others, and
        // KNITS_E2E_CASES for more cases) and no regression file; schedules that found bugs
        // are kept below as named tests.
        #![proptest_config(ProptestConfig {
            cases: env("KNITS_E2E_CASES", 32) as u32,
            max_shrink_iters: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(env("KNITS_E2E_SEED", 0x4b4e_4954_5321)),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Any schedule (seeds, request mixes, fault rates, ISNs and clocks anywhere in 2^32, a
        /// hung or resetting node 3, clients without timestamps or SACK, half-closed clients):
        /// the invariants of `run` hold, hand-offs end completed or rolled back, and without
        /// faults or misbehaving nodes every request is served by the node it names.
        /// `KNITS_E2E_CASES=n` runs more cases.
        #[test]
        fn random_schedules(p in params(false)) {
            check_schedule(p)?;
        }

        /// The same with uploads (request bodies).
        #[test]
        #[ignore = "bug: uploads pipelined behind requests for other nodes, under loss and \
                    reordering with SACK: seed 1008772476160904294 stalls (the old node SACKed \
                    bytes it then never got past its faked FIN; the client does not resend them)"]
        fn random_schedules_with_uploads(p in params(true)) {
            check_schedule(p)?;
        }
    }

    fn check_schedule(p: Params) -> Result<(), TestCaseError> {
        let clean = !p.faults.any() && p.modes.iter().all(|m| *m == Mode::Normal);
        let want: Vec<Vec<u8>> = p
            .conns
            .iter()
            .map(|c| c.reqs.iter().map(|r| r.target).collect())
            .collect();
        let o = run(p);
        prop_assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
        if clean {
            // The only refusal on a clean network: a hand-off while the history is full of
            // old nodes still being retired (MAX_BINDINGS).
            let too_many = o
                .codes
                .iter()
                .filter(|c| **c == ReplyCode::TooManyHops)
                .count();
            let other = o.codes.iter().filter(|c| {
                !matches!(
                    c,
                    ReplyCode::Accepted | ReplyCode::Busy | ReplyCode::TooManyHops
                )
            });
            prop_assert_eq!(other.count(), 0, "{}", o.summary);
            let wrong: usize = o
                .served_by
                .iter()
                .zip(&want)
                .map(|(got, want)| got.iter().zip(want).filter(|(g, w)| g != w).count())
                .sum();
            prop_assert!(
                wrong <= too_many,
                "{} served by the wrong node\n{}",
                wrong,
                o.summary
            );
            prop_assert_eq!(o.rolled_back, 0, "{}", o.summary);
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Schedules that found bugs (kept as named cases; see the commit that fixed each).

fn regression(
    seed: u64,
    fl: (u32, u32, u32),
    conns: Vec<ConnSpec>,
    isn: [u32; 4],
    ts_off: [u32; 4],
) -> Params {
    let mut p = Params::new(seed, conns);
    p.faults = Faults {
        loss: fl.0,
        dup: fl.1,
        reorder: fl.2,
        max_delay: 8,
        drop_first: [0; 3],
    };
    p.isn = isn;
    p.ts_off = ts_off;
    p
}

fn reqs(r: &[(u8, u32, bool)]) -> Vec<Req> {
    r.iter()
        .map(|&(target, size, wait)| Req {
            target,
            size,
            wait,
            ..Req::default()
        })
        .collect()
}

const R_ISN: [u32; 4] = [2864330359, 3809036051, 3368126887, 647194767];
const R_TS: [u32; 4] = [1417050286, 113414520, 3077889127, 1579048041];

/// The old node's ACK of the last client bytes is lost: the faked FIN must follow its
/// rcv_nxt, and only the exact ACK of the FIN ends the retries (four hand-offs, five bindings).
#[test]
fn regression_faked_fin_after_lost_ack() {
    let r = reqs(&[
        (3, 2920, false),
        (1, 1, false),
        (3, 1460, false),
        (2, 0, true),
    ]);
    run(regression(
        4852341561069444890,
        (248, 132, 0),
        vec![ConnSpec {
            start_ms: 17,
            reqs: r,
            ..ConnSpec::default()
        }],
        R_ISN,
        R_TS,
    ));
}

/// An old node's faked final ACK is lost and it resends its FIN seconds later: the switch still
/// answers (TIME-WAIT outlasts the retransmission).
#[test]
fn regression_old_node_resends_its_fin() {
    let r = reqs(&[
        (3, 2920, false),
        (1, 1, false),
        (3, 1460, false),
        (2, 0, true),
    ]);
    run(regression(
        4852341561068893242,
        (248, 132, 0),
        vec![ConnSpec {
            start_ms: 5,
            reqs: r,
            ..ConnSpec::default()
        }],
        R_ISN,
        R_TS,
    ));
}

/// The client's RST (no ACK flag) after its close goes to the current server, not to the node
/// being retired.
#[test]
fn regression_client_rst_goes_to_the_current_server() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: reqs(&[(1, 68393, false), (3, 75267, true), (2, 1460, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 24,
            reqs: reqs(&[
                (3, 0, false),
                (3, 0, false),
                (3, 0, true),
                (3, 1, false),
                (3, 46877, true),
            ]),
            ..ConnSpec::default()
        },
    ];
    let isn = [1434609038, 4265146813, 2954594934, 4142866020];
    let ts = [782911181, 3627543693, 2458458993, 1641760704];
    run(regression(43246526622804288, (0, 373, 0), conns, isn, ts));
}

// ------------------------------------------------------------------------------------------------
// Golden packets: each packet of paper IV.B that the switch fakes, from a hand-off driven by
// hand-crafted frames whose sequence numbers and timestamps cross 2^32. The expected frames are
// built independently from what each receiver must see (smoltcp's Repr::emit for Ethernet and
// IPv4, smoltcp's TCP setters and option emitters for TCP, in the RFC 7323 appendix A layout
// NOP NOP TS) and compared byte for byte, checksums included.

mod golden {
    use super::*;
    use smoltcp::wire::{IpProtocol, TcpControl, TcpOption, TcpSeqNumber};

    const CLIENT: usize = 0;
    const A: usize = 1;
    const B: usize = 2;
    const CPORT: u16 = 40000;
    const APORT: u16 = 50000;

    // ISNs: the client's request, node A's response, A's forwarded bytes and B's SYN-ACK all
    // cross 2^32.
    const CI: u32 = 0xffff_fff8;
    const N1: u32 = 0xffff_fff5;
    const A2: u32 = 0xffff_fffd;
    const B2: u32 = 0xffff_ffff;
    // Window fields (client shift 7, A's shift 5 on c1 and 9 on c2, B's shift 3).
    const WC: u16 = 1000;
    const W1: u16 = 2000;
    const W1C2: u16 = 3000;
    const W2: u16 = 4000;

    fn sw_mac(port: usize) -> EthernetAddress {
        EthernetAddress([0x02, 0x4b, 0x4e, 0, 0, port as u8])
    }

    /// A frame as a host sends it to the switch.
    #[allow(clippy::too_many_arguments)]
    fn tcp_in(
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        control: TcpControl,
        seq: u32,
        ack: Option<u32>,
        win: u16,
        wscale: Option<u8>,
        ts: (u32, u32),
        payload: &[u8],
    ) -> Vec<u8> {
        let seg = (control, seq, ack, win, wscale);
        tcp_in_sack(h, src, dst, seg, ts, [None; 3], payload)
    }

    /// [`tcp_in`] with SACK blocks; `seg` is (control, seq, ack, window, window scale).
    fn tcp_in_sack(
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        seg: (TcpControl, u32, Option<u32>, u16, Option<u8>),
        ts: (u32, u32),
        sack_ranges: [Option<(u32, u32)>; 3],
        payload: &[u8],
    ) -> Vec<u8> {
        let syn = seg.0 == TcpControl::Syn;
        tcp_in_with(h, src, dst, seg, Some(ts), syn, sack_ranges, payload)
    }

    /// [`tcp_in_sack`] with the timestamp option and SACK-permitted as given.
    #[allow(clippy::too_many_arguments)]
    fn tcp_in_with(
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        seg: (TcpControl, u32, Option<u32>, u16, Option<u8>),
        ts: Option<(u32, u32)>,
        sack_permitted: bool,
        sack_ranges: [Option<(u32, u32)>; 3],
        payload: &[u8],
    ) -> Vec<u8> {
        let (control, seq, ack, win, wscale) = seg;
        let mut t = TcpFrame::new(src, dst);
        t.src_mac = host_mac(h);
        t.dst_mac = sw_mac(h);
        (t.flags, t.seq, t.ack) = (flags_of(control), seq, ack);
        t.win = win;
        t.ws = wscale;
        t.mss = (control == TcpControl::Syn).then_some(1460);
        t.sack_perm = sack_permitted;
        t.sack = sack_ranges;
        t.ts = ts;
        t.payload = payload.to_vec();
        t.build()
    }

    /// A segment the switch makes up, as receiver `h` on port `h` must get it.
    #[allow(clippy::too_many_arguments)]
    fn tcp_out(
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        seq: u32,
        ack: u32,
        fin: bool,
        rst: bool,
        win: u16,
        ts: Option<(u32, u32)>,
    ) -> Vec<u8> {
        let tcp_len = if ts.is_some() { 32 } else { 20 };
        // Pre-filled so that a field nobody wrote shows up.
        let l3 = Ipv4Frame {
            src_mac: sw_mac(h),
            dst_mac: host_mac(h),
            src: src.0,
            dst: dst.0,
            ttl: 64,
        };
        let mut b = l3.header(IpProtocol::Tcp, tcp_len, 0xa5);
        let mut t = TcpPacket::new_unchecked(&mut b[34..]);
        t.set_src_port(src.1);
        t.set_dst_port(dst.1);
        t.set_seq_number(TcpSeqNumber(seq as i32));
        t.set_ack_number(TcpSeqNumber(ack as i32));
        t.set_header_len(tcp_len as u8);
        t.clear_flags();
        t.set_ack(true);
        t.set_fin(fin);
        t.set_rst(rst);
        t.set_window_len(win);
        t.set_urgent_at(0);
        if let Some((tsval, tsecr)) = ts {
            let o = TcpOption::NoOperation.emit(t.options_mut());
            let o = TcpOption::NoOperation.emit(o);
            TcpOption::TimeStamp { tsval, tsecr }.emit(o);
        }
        t.fill_checksum(&src.0.into(), &dst.0.into());
        b
    }

    /// RFC 1071 over the pseudo-header and segment, computed here from scratch: 0 when the
    /// checksum field is right.
    fn rfc1071_residue(frame: &[u8]) -> u16 {
        let ip = &frame[14..34];
        let seg = &frame[34..];
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                sum += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
            }
        };
        add(&ip[12..20]);
        add(&[0, ip[9]]);
        add(&(seg.len() as u16).to_be_bytes());
        add(seg);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn assert_frame(what: &str, got: &(u8, Vec<u8>), port: usize, want: &[u8]) {
        assert_eq!(got.0 as usize, port, "{what}: port");
        assert_eq!(hex(&got.1), hex(want), "{what}: bytes");
        assert_eq!(rfc1071_residue(&got.1), 0, "{what}: TCP/UDP checksum");
        assert!(
            Ipv4Packet::new_checked(&got.1[14..])
                .unwrap()
                .verify_checksum(),
            "{what}: IPv4 checksum"
        );
    }

    /// Frames the switch generated, with their ports.
    type Made = Vec<(u8, Vec<u8>)>;

    struct Rig {
        sw: Switch<'static>,
        now: u64,
    }

    impl Rig {
        fn new() -> Rig {
            let mut sw = new_switch(1);
            let mut sink = VecSink::default();
            for h in [CLIENT, A, B] {
                let mut f = arp_hello(h);
                sw.process(
                    h as u8,
                    Instant::from_millis(0),
                    &mut f,
                    FrameMeta::FULL,
                    &mut sink,
                    &mut NoMeter,
                );
            }
            Rig { sw, now: 1 }
        }
        /// Sends a frame in on port `h`; returns the verdict, the frame after it and what the
        /// switch generated.
        fn send(&mut self, h: usize, mut f: Vec<u8>) -> (Verdict, Vec<u8>, Made) {
            self.now += 1;
            let mut sink = VecSink::default();
            let v = self.sw.process(
                h as u8,
                Instant::from_millis(self.now as i64),
                &mut f,
                FrameMeta::FULL,
                &mut sink,
                &mut NoMeter,
            );
            assert_ne!(v, Verdict::Drop(DropReason::Internal));
            (v, f, sink.frames)
        }
        /// Lets `ms` pass, polling every 10 ms; returns what the switch generated.
        fn wait(&mut self, ms: u64) -> Made {
            let mut made = vec![];
            for _ in 0..ms / 10 {
                self.now += 10;
                let mut sink = VecSink::default();
                self.sw
                    .poll(Instant::from_millis(self.now as i64), 64, &mut sink);
                made.extend(sink.frames);
            }
            made
        }
        fn pass(&mut self, h: usize, f: Vec<u8>, out: usize) -> Vec<(u8, Vec<u8>)> {
            let (v, _, made) = self.send(h, f);
            assert_eq!(v, Verdict::Forward(out as u8));
            made
        }
    }

    fn ep(h: usize, port: u16) -> (Ipv4Address, u16) {
        (host_ip(h), port)
    }
    const TC: [u32; 3] = [0xffff_fff0, 0xffff_fff5, 0x0000_0002];
    const T1: [u32; 7] = [
        0x7fff_fff0,
        0x7fff_fff8,
        0x7fff_fffa,
        0x7fff_fffb,
        0x8000_0001,
        0x8000_0005,
        0x8000_0006,
    ];
    const T2: [u32; 2] = [0xffff_fffe, 0x0000_0003];
    const R1: &[u8] = b"GET 1 5 1\n"; // consumed by A (10 bytes)
    const R2: &[u8] = b"GET 2 8 22\n"; // forwarded to B (11 bytes)
    const RESP1: &[u8] = b"R 1 5 1\nabcde\0\0\0"; // 16 bytes sent by A

    /// Client <-> A on c1 with one request served, c2 A -> B open, the hand-off accepted and A's
    /// unconsumed bytes forwarded. Returns the rig and the control reply.
    fn handed_off() -> (Rig, (u8, Vec<u8>)) {
        handed_off_with(ALL_OPTS)
    }

    /// What the client's SYN offers (A answers in kind; the leg A -> B has both), and
    /// whether the client's next bytes went ahead of a gap.
    #[derive(Debug, Clone, Copy)]
    struct ClientOpts {
        ts: bool,
        sack: bool,
        /// Before the hand-off, [`AHEAD`] reached A out of order, [`GAP`] bytes after R2 (the
        /// bytes in between were lost): A holds them but cannot read them, so never forwards
        /// them.
        ahead: bool,
        /// The client's FIN follows R2 at once (a half-closed client): A has it before the
        /// hand-off and forwards it behind R2.
        fin: bool,
    }

    const ALL_OPTS: ClientOpts = ClientOpts {
        ts: true,
        sack: true,
        ahead: false,
        fin: false,
    };

    /// The client's bytes after R2 that A never got ([`ClientOpts::ahead`]).
    const GAP: &[u8] = b"GET 2 1 4";
    /// The client's bytes after [`GAP`].
    const AHEAD: &[u8] = b"4\nGET 2 2 55\n";

    /// A frame on c1 (client <-> A), with the options the client negotiated.
    #[allow(clippy::too_many_arguments)]
    fn c1_in(
        o: ClientOpts,
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        control: TcpControl,
        seq: u32,
        ack: Option<u32>,
        win: u16,
        wscale: Option<u8>,
        ts: (u32, u32),
        payload: &[u8],
    ) -> Vec<u8> {
        let seg = (control, seq, ack, win, wscale);
        let syn = control == TcpControl::Syn;
        let ts = o.ts.then_some(ts);
        tcp_in_with(h, src, dst, seg, ts, syn && o.sack, [None; 3], payload)
    }

    /// [`handed_off`] with a client that offers only some options.
    fn handed_off_with(o: ClientOpts) -> (Rig, (u8, Vec<u8>)) {
        let mut r = Rig::new();
        let vip = (VIP, 80);
        let c = ep(CLIENT, CPORT);
        let a80 = ep(A, 80);
        let mut req = R1.to_vec();
        req.extend_from_slice(R2);
        r.pass(
            CLIENT,
            c1_in(
                o,
                CLIENT,
                c,
                vip,
                TcpControl::Syn,
                CI,
                None,
                WC,
                Some(7),
                (TC[0], 0),
                &[],
            ),
            A,
        );
        r.pass(
            A,
            c1_in(
                o,
                A,
                a80,
                c,
                TcpControl::Syn,
                N1,
                Some(CI.wrapping_add(1)),
                W1,
                Some(5),
                (T1[0], TC[0]),
                &[],
            ),
            CLIENT,
        );
        r.pass(
            CLIENT,
            c1_in(
                o,
                CLIENT,
                c,
                vip,
                if o.fin {
                    TcpControl::Fin
                } else {
                    TcpControl::Psh
                },
                CI.wrapping_add(1),
                Some(N1.wrapping_add(1)),
                WC,
                None,
                (TC[1], T1[0]),
                &req,
            ),
            A,
        );
        r.pass(
            A,
            c1_in(
                o,
                A,
                a80,
                c,
                TcpControl::Psh,
                N1.wrapping_add(1),
                Some(CI.wrapping_add(22 + o.fin as u32)),
                W1,
                None,
                (T1[1], TC[1]),
                RESP1,
            ),
            CLIENT,
        );
        r.pass(
            CLIENT,
            c1_in(
                o,
                CLIENT,
                c,
                vip,
                TcpControl::None,
                CI.wrapping_add(22 + o.fin as u32),
                Some(N1.wrapping_add(17)),
                WC,
                None,
                (TC[2], T1[1]),
                &[],
            ),
            A,
        );
        if o.ahead {
            // Out of order: A acknowledges R2's end again.
            let at = CI.wrapping_add(22 + GAP.len() as u32);
            r.pass(
                CLIENT,
                c1_in(
                    o,
                    CLIENT,
                    c,
                    vip,
                    TcpControl::Psh,
                    at,
                    Some(N1.wrapping_add(17)),
                    WC,
                    None,
                    (TC[2], T1[1]),
                    AHEAD,
                ),
                A,
            );
        }
        // c2: A:50000 -> B:80.
        let a2 = ep(A, APORT);
        let b80 = ep(B, 80);
        r.pass(
            A,
            tcp_in(
                A,
                a2,
                b80,
                TcpControl::Syn,
                A2,
                None,
                W1C2,
                Some(9),
                (T1[2], 0),
                &[],
            ),
            B,
        );
        r.pass(
            B,
            tcp_in(
                B,
                b80,
                a2,
                TcpControl::Syn,
                B2,
                Some(A2.wrapping_add(1)),
                W2,
                Some(3),
                (T2[0], T1[2]),
                &[],
            ),
            A,
        );
        r.pass(
            A,
            tcp_in(
                A,
                a2,
                b80,
                TcpControl::None,
                A2.wrapping_add(1),
                Some(B2.wrapping_add(1)),
                W1C2,
                None,
                (T1[3], T2[0]),
                &[],
            ),
            B,
        );
        // The hand-off request: consumed R1, sent RESP1.
        let ask = RequestRepr {
            key_id: 1,
            counter: 1,
            held_peer: Endpoint::new(host_ip(CLIENT).octets(), CPORT),
            held_local: Endpoint::new(host_ip(A).octets(), 80),
            new_local: Endpoint::new(host_ip(A).octets(), APORT),
            new_remote: Endpoint::new(host_ip(B).octets(), 80),
            consumed: R1.len() as u64,
            sent: RESP1.len() as u64,
        };
        let (v, _, made) = r.send(A, control_frame(&ask));
        assert_eq!(v, Verdict::Local(knits_core::counters::LocalKind::Control));
        assert_eq!(made.len(), 1);
        let reply = made[0].clone();
        // A forwards R2 on c2; it reaches B as sent but for the TSval, which is the newest B
        // has seen on the leg (T1[3]), not A's clock.
        // A half-closed client's FIN goes on behind it.
        let ctl = if o.fin {
            TcpControl::Fin
        } else {
            TcpControl::Psh
        };
        let fwd = tcp_in(
            A,
            a2,
            b80,
            ctl,
            A2.wrapping_add(1),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[4], T2[0]),
            R2,
        );
        let (v, out, made) = r.send(A, fwd);
        assert_eq!(v, Verdict::Forward(B as u8));
        assert!(made.is_empty());
        let mut want = tcp_in(
            A,
            a2,
            b80,
            ctl,
            A2.wrapping_add(1),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[3], T2[0]),
            R2,
        );
        retarget(&mut want, B, 63);
        assert_eq!(hex(&out), hex(&want), "forwarded request");
        (r, reply)
    }

    /// A frame as the switch forwards it out of port `h`: its MACs and a TTL one lower.
    fn retarget(f: &mut [u8], h: usize, ttl: u8) {
        let mut e = EthernetFrame::new_unchecked(&mut f[..]);
        e.set_src_addr(sw_mac(h));
        e.set_dst_addr(host_mac(h));
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_hop_limit(ttl);
        ip.fill_checksum();
    }

    fn control_frame(req: &RequestRepr) -> Vec<u8> {
        let mut msg = [0u8; control::REQUEST_LEN];
        req.emit(&mut msg, &KEY).unwrap();
        udp_frame(
            A,
            sw_mac(A),
            host_mac(A),
            (host_ip(A), CONTROL_SRC_PORT),
            (host_gw(A), control::DEFAULT_PORT),
            &msg,
            64,
        )
    }

    fn udp_frame(
        _h: usize,
        dst_mac: EthernetAddress,
        src_mac: EthernetAddress,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        payload: &[u8],
        ttl: u8,
    ) -> Vec<u8> {
        let l3 = Ipv4Frame {
            src_mac,
            dst_mac,
            src: src.0,
            dst: dst.0,
            ttl,
        };
        l3.udp((src.1, dst.1), payload)
    }

    #[test]
    fn control_reply_accepted() {
        let (r, reply) = handed_off();
        let mut msg = [0u8; control::REPLY_LEN];
        knits_core::wire::control::ReplyRepr {
            code: ReplyCode::Accepted,
            key_id: 1,
            counter: 1,
            hops: 1,
        }
        .emit(&mut msg, &KEY)
        .unwrap();
        let want = udp_frame(
            A,
            host_mac(A),
            sw_mac(A),
            (host_gw(A), control::DEFAULT_PORT),
            (host_ip(A), CONTROL_SRC_PORT),
            &msg,
            64,
        );
        assert_frame("control reply", &reply, A, &want);
        assert_eq!(r.sw.counters().handoffs[ReplyCode::Accepted.index()], 1);
    }

    /// Paper IV.B 1-5 in order, each faked packet byte for byte.
    #[test]
    fn faked_packets_of_a_handoff() {
        let (mut r, _) = handed_off();
        let c = ep(CLIENT, CPORT);
        let a80 = ep(A, 80);
        let a2 = ep(A, APORT);
        let b80 = ep(B, 80);
        let vip = (VIP, 80);
        // IV.B 2-3: B acknowledges R2 on its response. The response goes to the client,
        // translated; the switch fakes B's ACK to A, and (binding confirmed, A has acknowledged
        // everything it was sent) the client's FIN to A on c1.
        let resp = b"R 22 8 2";
        let f = tcp_in(
            B,
            b80,
            a2,
            TcpControl::Psh,
            B2.wrapping_add(1),
            Some(A2.wrapping_add(12)),
            W2,
            None,
            (T2[1], T1[3]),
            resp,
        );
        let (v, out, made) = r.send(B, f);
        assert_eq!(v, Verdict::Forward(CLIENT as u8));
        // Translated response: seq continues A's stream (N1 + 17), ack is the client's stream
        // end (CI + 22), the window is rescaled from B's shift 3 to A's shift 5 on c1, TSval is
        // B's clock mapped onto A's (A's newest on c1 minus B's newest on c2 at the hand-off:
        // T1[1] - T2[0]) and TSecr is A's clock mapped back onto the client's (T1[3] was
        // A's newest on c2, TC[2] the client's newest on c1).
        let tsval = T2[1].wrapping_add(T1[1].wrapping_sub(T2[0]));
        let tsecr = T1[3].wrapping_sub(T1[3].wrapping_sub(TC[2]));
        let mut want = tcp_in(
            B,
            vip,
            c,
            TcpControl::Psh,
            N1.wrapping_add(17),
            Some(CI.wrapping_add(22)),
            W2 >> 2,
            None,
            (tsval, tsecr),
            resp,
        );
        retarget(&mut want, CLIENT, 63);
        assert_eq!(hex(&out), hex(&want), "translated response");
        assert_eq!(made.len(), 2, "fake target ACK and fake client FIN");
        // IV.B 3: as B would have acknowledged R2 to A: B's next sequence as A knows it (no
        // data of B reached A), B's window, B's clock, echoing A's newest TSval on c2.
        let want = tcp_out(
            A,
            b80,
            a2,
            B2.wrapping_add(1),
            A2.wrapping_add(12),
            false,
            false,
            W2,
            Some((T2[1], T1[4])),
        );
        assert_frame("IV.B 3 fake target ACK", &made[0], A, &want);
        // IV.B 1: the client's FIN at A's rcv_nxt (CI + 22), acknowledging all A sent (N1 +
        // 17), the client's window and newest TSval, echoing A's newest on c1.
        let want = tcp_out(
            A,
            c,
            a80,
            CI.wrapping_add(22),
            N1.wrapping_add(17),
            true,
            false,
            WC,
            Some((TC[2], T1[1])),
        );
        assert_frame("IV.B 1 fake client FIN", &made[1], A, &want);
        // IV.B 1: A acknowledges the FIN and closes c1: both absorbed, a faked final ACK.
        let f = tcp_in(
            A,
            a80,
            c,
            TcpControl::Fin,
            N1.wrapping_add(17),
            Some(CI.wrapping_add(23)),
            W1,
            None,
            (T1[5], TC[2]),
            &[],
        );
        let (v, _, made) = r.send(A, f);
        assert_eq!(
            v,
            Verdict::Local(knits_core::counters::LocalKind::TeardownAbsorbed)
        );
        assert_eq!(made.len(), 1);
        let want = tcp_out(
            A,
            c,
            a80,
            CI.wrapping_add(23),
            N1.wrapping_add(18),
            false,
            false,
            WC,
            Some((TC[2], T1[5])),
        );
        assert_frame("IV.B 1 fake client final ACK", &made[0], A, &want);
        // IV.B 4: A closes c2 after R2: its FIN is absorbed, B (which acknowledged up to it)
        // "answers" with a FIN/ACK.
        let f = tcp_in(
            A,
            a2,
            b80,
            TcpControl::Fin,
            A2.wrapping_add(12),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[6], T2[1]),
            &[],
        );
        let (v, _, made) = r.send(A, f);
        assert_eq!(
            v,
            Verdict::Local(knits_core::counters::LocalKind::TeardownAbsorbed)
        );
        assert_eq!(made.len(), 1);
        let want = tcp_out(
            A,
            b80,
            a2,
            B2.wrapping_add(1),
            A2.wrapping_add(13),
            false,
            false,
            W2,
            Some((T2[1], T1[6])),
        );
        // An ACK of A's FIN without a FIN of B's own: A stays in FIN-WAIT-2 (no TIME-WAIT).
        assert_frame("IV.B 4 fake target ACK of A's FIN", &made[0], A, &want);
        // IV.B 5: A resets the leg (knits-proxy's SO_LINGER 0 close): absorbed, nothing
        // reaches B, and the leg counts as closed.
        let f = tcp_in(
            A,
            a2,
            b80,
            TcpControl::Rst,
            A2.wrapping_add(13),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[6], T2[1]),
            &[],
        );
        let (v, _, made) = r.send(A, f);
        assert_eq!(
            v,
            Verdict::Local(knits_core::counters::LocalKind::TeardownAbsorbed)
        );
        assert!(made.is_empty());
        let c = r.sw.counters();
        assert_eq!(c.handoffs_completed, 1);
        assert_eq!(c.event_count(knits_core::counters::FlowEvent::LegReset), 1);
        // Binding 0 left the history at once: the session holds only B's binding.
        assert_eq!(r.sw.session_count(), 1);
        assert_eq!(r.sw.session(0).map(|s| s.bindings.len()), Some(1));
        for (g, n) in [
            (Generated::FakeClientFin, 1),
            (Generated::FakeClientFinalAck, 1),
            (Generated::FakeTargetAck, 1),
            (Generated::FakeTargetFinAck, 1),
            (Generated::AbortReset, 0),
        ] {
            assert_eq!(c.generated_count(g), n, "{}", g.name());
        }
    }

    /// Roll-back: B resets the new leg before acknowledging; A and B each get an RST at their
    /// rcv_nxt, acknowledging what they sent; the client sees nothing.
    /// Found on the wire by knits-host/tests/translation.rs: right after a hand-off the client
    /// may D-SACK a duplicate of the old server's data in an ACK that the switch routes to the
    /// new server. That block is about data the new server never sent: it is removed, and the
    /// blocks about the new server's data are kept and translated.
    #[test]
    fn sack_blocks_about_the_old_servers_data_are_removed() {
        let (mut r, _) = handed_off();
        let start = N1.wrapping_add(17); // the new binding's first byte in the client's space
        let ack = tcp_in_sack(
            CLIENT,
            ep(CLIENT, CPORT),
            (VIP, 80),
            (TcpControl::None, CI.wrapping_add(22), Some(start), WC, None),
            (TC[2], T1[1]),
            [
                Some((N1.wrapping_add(1), start)),
                Some((start.wrapping_add(100), start.wrapping_add(200))),
                None,
            ],
            &[],
        );
        let (v, out, made) = r.send(CLIENT, ack);
        assert_eq!(v, Verdict::Forward(B as u8));
        assert!(made.is_empty());
        let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let caps = ChecksumCapabilities::default();
        let repr = TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps)
            .expect("the rewritten segment parses and its checksum is right");
        assert_eq!(
            repr.ack_number,
            Some(TcpSeqNumber(B2.wrapping_add(1) as i32))
        );
        let b_first = B2.wrapping_add(1);
        assert_eq!(
            repr.sack_ranges,
            [
                Some((b_first.wrapping_add(100), b_first.wrapping_add(200))),
                None,
                None
            ]
        );

        // The same D-SACK alone: the whole option goes, the segment stays valid.
        let ack = tcp_in_sack(
            CLIENT,
            ep(CLIENT, CPORT),
            (VIP, 80),
            (TcpControl::None, CI.wrapping_add(22), Some(start), WC, None),
            (TC[2], T1[1]),
            [Some((N1.wrapping_add(1), start)), None, None],
            &[],
        );
        let (v, out, _) = r.send(CLIENT, ack);
        assert_eq!(v, Verdict::Forward(B as u8));
        let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let repr = TcpRepr::parse(&tcp, &ip.src_addr().into(), &ip.dst_addr().into(), &caps)
            .expect("valid without its SACK option");
        assert_eq!(repr.sack_ranges, [None; 3]);
        assert!(repr.timestamp.is_some(), "the other options stay");
    }

    /// A TCP segment (ACK set, PSH as asked) with these exact option bytes, as host `h` sends
    /// it to the switch; [`retarget`] makes it what the switch forwards.
    #[allow(clippy::too_many_arguments)]
    fn tcp_raw(
        h: usize,
        src: (Ipv4Address, u16),
        dst: (Ipv4Address, u16),
        psh: bool,
        seq: u32,
        ack: u32,
        win: u16,
        opts: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let tcp_len = 20 + opts.len() + payload.len();
        let l3 = Ipv4Frame {
            src_mac: host_mac(h),
            dst_mac: sw_mac(h),
            src: src.0,
            dst: dst.0,
            ttl: 64,
        };
        let mut b = l3.header(IpProtocol::Tcp, tcp_len, 0xa5);
        let mut t = TcpPacket::new_unchecked(&mut b[34..]);
        t.set_src_port(src.1);
        t.set_dst_port(dst.1);
        t.set_seq_number(TcpSeqNumber(seq as i32));
        t.set_ack_number(TcpSeqNumber(ack as i32));
        t.set_header_len((20 + opts.len()) as u8);
        t.clear_flags();
        t.set_ack(true);
        t.set_psh(psh);
        t.set_window_len(win);
        t.set_urgent_at(0);
        t.options_mut().copy_from_slice(opts);
        t.payload_mut().copy_from_slice(payload);
        t.fill_checksum(&src.0.into(), &dst.0.into());
        b
    }

    /// The option bytes NOP NOP TS(tsval, tsecr) (RFC 7323 appendix A).
    fn ts_opt(tsval: u32, tsecr: u32) -> Vec<u8> {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&tsval.to_be_bytes());
        o.extend_from_slice(&tsecr.to_be_bytes());
        o
    }

    /// The option bytes NOP NOP SACK with these blocks (RFC 2018).
    fn sack_opt(blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut o = vec![1, 1, 5, 2 + 8 * blocks.len() as u8];
        for (l, r) in blocks {
            o.extend_from_slice(&l.to_be_bytes());
            o.extend_from_slice(&r.to_be_bytes());
        }
        o
    }

    /// A client without timestamps, handed off to B (whose leg has them): B's response reaches
    /// the client with its timestamp option turned into NOPs (all 12 option bytes, the
    /// header length kept), everything else translated as usual, checksums right.
    #[test]
    fn timestamps_are_stripped_towards_a_client_without_them() {
        let (mut r, reply) = handed_off_with(ClientOpts {
            ts: false,
            ..ALL_OPTS
        });
        assert_eq!(
            r.sw.counters().handoffs[ReplyCode::Accepted.index()],
            1,
            "a client without timestamps can go to a leg with them: {reply:?}"
        );
        let resp = b"R 22 8 2";
        let f = tcp_raw(
            B,
            ep(B, 80),
            ep(A, APORT),
            true,
            B2.wrapping_add(1),
            A2.wrapping_add(12),
            W2,
            &ts_opt(T2[1], T1[3]),
            resp,
        );
        let (v, out, _) = r.send(B, f);
        assert_eq!(v, Verdict::Forward(CLIENT as u8));
        // As in `faked_packets_of_a_handoff`: seq continues A's stream, ack is the client's
        // end, the window goes from B's shift 3 to A's shift 5; the option is 12 NOPs.
        let mut want = tcp_raw(
            B,
            (VIP, 80),
            ep(CLIENT, CPORT),
            true,
            N1.wrapping_add(17),
            CI.wrapping_add(22),
            W2 >> 2,
            &[1; 12],
            resp,
        );
        retarget(&mut want, CLIENT, 63);
        assert_frame(
            "B's response without its timestamp",
            &(CLIENT as u8, out),
            CLIENT,
            &want,
        );
        let c = r.sw.counters();
        assert_eq!(c.event_count(FlowEvent::TsStripped), 1);
        assert_eq!(c.event_count(FlowEvent::SackStripped), 0);
    }

    /// A client without SACK, handed off to B (whose leg has it): B acknowledges the forwarded
    /// request twice (a D-SACK of A's duplicate, RFC 2883) on its response; the SACK option
    /// reaches the client as NOPs (kind, length and the block: 10 bytes), the timestamp
    /// translated in place.
    #[test]
    fn a_sack_block_is_stripped_towards_a_client_without_sack() {
        let (mut r, _) = handed_off_with(ClientOpts {
            sack: false,
            ..ALL_OPTS
        });
        let resp = b"R 22 8 2";
        let mut opts = ts_opt(T2[1], T1[3]);
        opts.extend(sack_opt(&[(A2.wrapping_add(1), A2.wrapping_add(12))]));
        let f = tcp_raw(
            B,
            ep(B, 80),
            ep(A, APORT),
            true,
            B2.wrapping_add(1),
            A2.wrapping_add(12),
            W2,
            &opts,
            resp,
        );
        let (v, out, _) = r.send(B, f);
        assert_eq!(v, Verdict::Forward(CLIENT as u8));
        let tsval = T2[1].wrapping_add(T1[1].wrapping_sub(T2[0]));
        let tsecr = T1[3].wrapping_sub(T1[3].wrapping_sub(TC[2]));
        let mut opts = ts_opt(tsval, tsecr);
        opts.extend([1; 12]);
        let mut want = tcp_raw(
            B,
            (VIP, 80),
            ep(CLIENT, CPORT),
            true,
            N1.wrapping_add(17),
            CI.wrapping_add(22),
            W2 >> 2,
            &opts,
            resp,
        );
        retarget(&mut want, CLIENT, 63);
        assert_frame(
            "B's response without its SACK block",
            &(CLIENT as u8, out),
            CLIENT,
            &want,
        );
        let c = r.sw.counters();
        assert_eq!(c.event_count(FlowEvent::SackStripped), 1);
        assert_eq!(c.event_count(FlowEvent::TsStripped), 0);
    }

    /// The acknowledgment field of a frame, if it is TCP with ACK set.
    fn ack_of(f: &[u8]) -> Option<u32> {
        let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
        let t = TcpPacket::new_checked(ip.payload()).ok()?;
        t.ack().then(|| t.ack_number().0 as u32)
    }

    /// While a hand-off is pending, the client must not be told that the target has its bytes:
    /// if the hand-off is then rolled back they exist nowhere (protocol.md, "Roll-back": "its
    /// bytes that went to the target are not acknowledged and are retransmitted to the old
    /// node").
    ///
    /// A holds client bytes out of order ([`ClientOpts::ahead`]), so the hand-off stays
    /// pending until the target has those too. The client fills the gap; by sequence those
    /// bytes go to B, which acknowledges them (and R2). If that acknowledgment reaches the
    /// client and the hand-off then times out, the gap's bytes are gone: A never gets them, the
    /// client never sends them again, and the connection hangs for good (found by
    /// `client_without_sack_or_timestamps_with_faults`, seed 82, and by `random_schedules`,
    /// see `regression_rollback_after_the_target_acknowledged_client_bytes`).
    #[test]
    fn no_ack_from_a_pending_target_reaches_the_client() {
        let (mut r, _) = handed_off_with(ClientOpts {
            ahead: true,
            ..ALL_OPTS
        });
        let c = ep(CLIENT, CPORT);
        let vip = (VIP, 80);
        let (a2, b80) = (ep(A, APORT), ep(B, 80));
        let mut acked = CI.wrapping_add(22); // the most A acknowledged
        let mut to_client = vec![];
        // The gap's bytes: they end after the new binding's start, so they go to B.
        let f = tcp_in(
            CLIENT,
            c,
            vip,
            TcpControl::Psh,
            CI.wrapping_add(22),
            Some(N1.wrapping_add(17)),
            WC,
            None,
            (TC[2], T1[1]),
            GAP,
        );
        assert_eq!(r.send(CLIENT, f).0, Verdict::Forward(B as u8));
        // B acknowledges R2 and the gap's bytes (nothing of its own to send yet).
        let end = A2.wrapping_add(12 + GAP.len() as u32);
        let f = tcp_in(
            B,
            b80,
            a2,
            TcpControl::None,
            B2.wrapping_add(1),
            Some(end),
            W2,
            None,
            (T2[1], T1[3]),
            &[],
        );
        let (v, out, _) = r.send(B, f);
        if v == Verdict::Forward(CLIENT as u8) {
            to_client.push(out);
        }
        // A acknowledges nothing new; B goes quiet. The hand-off times out.
        let made = r.wait(1500);
        for (p, f) in made {
            if p as usize == CLIENT {
                to_client.push(f);
            }
        }
        let c = r.sw.counters();
        assert_eq!(c.handoffs_rolled_back, 1, "the hand-off was rolled back");
        for f in &to_client {
            if let Some(a) = ack_of(f) {
                assert!(
                    !seq_gt(a, acked),
                    "the client was told ack {a:#x}, past A's {acked:#x}, by a target that was \
                     then rolled back"
                );
                acked = a;
            }
        }
    }

    /// A half-closed client: its FIN reached A with R2, A forwards R2 and the FIN to B and
    /// closes c1 (its proxy has the client's EOF) before B has answered. Nothing may be faked
    /// to A before the hand-off is confirmed (protocol.md, "Retiring the old node", step 1): if
    /// the switch answers A's FIN with the client's final ACK and B then fails (roll-back), A
    /// has closed the connection for good, and the client's retransmitted request meets A's
    /// RST (found by `random_schedules` with a resetting node 3: seed 80361778950260544).
    #[test]
    fn no_final_ack_is_faked_while_the_handoff_is_pending() {
        let (mut r, _) = handed_off_with(ClientOpts {
            fin: true,
            ..ALL_OPTS
        });
        assert_eq!(
            r.sw.counters().event_count(FlowEvent::ClientFinPassed),
            1,
            "the client's FIN went on to B"
        );
        let f = tcp_in(
            A,
            ep(A, 80),
            ep(CLIENT, CPORT),
            TcpControl::Fin,
            N1.wrapping_add(17),
            Some(CI.wrapping_add(23)),
            W1,
            None,
            (T1[5], TC[2]),
            &[],
        );
        let (v, _, made) = r.send(A, f);
        let c = r.sw.counters();
        assert_eq!(c.handoffs_completed, 0);
        assert_eq!(
            c.generated_count(Generated::FakeClientFinalAck),
            0,
            "A's FIN ({v:?}) was answered while B had not confirmed: {} frames",
            made.len()
        );
    }

    /// Found by the fuzz target's option check: an old node whose binding has left the history
    /// resends its FIN on c1, a connection without timestamps, but puts a timestamp on it (its
    /// own fault). The switch's answer (`late_fin_ack`) echoes it, so the switch itself sends a
    /// timestamp on a connection that did not negotiate them (RFC 7323 3.2: "MUST NOT").
    #[test]
    fn a_late_fin_ack_carries_no_timestamp_on_a_connection_without_them() {
        let (mut r, _) = handed_off_with(ClientOpts {
            ts: false,
            ..ALL_OPTS
        });
        let (c, a80, a2, b80) = (ep(CLIENT, CPORT), ep(A, 80), ep(A, APORT), ep(B, 80));
        let resp = b"R 22 8 2";
        let f = tcp_in(
            B,
            b80,
            a2,
            TcpControl::Psh,
            B2.wrapping_add(1),
            Some(A2.wrapping_add(12)),
            W2,
            None,
            (T2[1], T1[3]),
            resp,
        );
        assert_eq!(r.send(B, f).0, Verdict::Forward(CLIENT as u8));
        // A closes c1 (no timestamps there) and the leg (with them), then resets the leg.
        let fin1 = |ts: Option<(u32, u32)>| {
            let seg = (
                TcpControl::Fin,
                N1.wrapping_add(17),
                Some(CI.wrapping_add(23)),
                W1,
                None,
            );
            tcp_in_with(A, a80, c, seg, ts, false, [None; 3], &[])
        };
        r.send(A, fin1(None));
        let f = tcp_in(
            A,
            a2,
            b80,
            TcpControl::Fin,
            A2.wrapping_add(12),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[6], T2[1]),
            &[],
        );
        r.send(A, f);
        let f = tcp_in(
            A,
            a2,
            b80,
            TcpControl::Rst,
            A2.wrapping_add(13),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[6], T2[1]),
            &[],
        );
        r.send(A, f);
        assert_eq!(r.sw.session(0).map(|s| s.bindings.len()), Some(1));
        // A resends its FIN on c1, with a timestamp option.
        let (_, _, made) = r.send(A, fin1(Some((T1[6], 0))));
        assert_eq!(made.len(), 1, "answered");
        let Some(Ok(p)) = parse_tcp(&made[0].1) else {
            panic!("a TCP answer");
        };
        assert_eq!(p.tcp.timestamp, None, "no timestamp on c1");
    }

    /// A SYN that reopens a closed tuple must not cut short the retirement of an old node of
    /// the connection that closed (protocol.md, "Limits": the session's bindings go with the
    /// client connection's TIME-WAIT, which must outlast the retirement; a reopen ends that
    /// TIME-WAIT at once).
    ///
    /// B confirms the hand-off, the faked FIN to A is lost, the connection closes between the
    /// client and B, and the client reuses its port at once. The switch reopens the tuple
    /// (`reopened`) and ends the session with A's binding: A never hears of the end of its
    /// connection, keeps c1 (the client's very tuple) and c2 open for good, and refuses any
    /// later connection on that tuple sprayed to it (found by `tuple_reuse_after_a_handoff`
    /// with the hosts' delayed ACK).
    #[test]
    fn a_reopened_tuple_still_retires_the_old_node() {
        let (mut r, _) = handed_off();
        let c = ep(CLIENT, CPORT);
        let vip = (VIP, 80);
        let (a80, a2, b80) = (ep(A, 80), ep(A, APORT), ep(B, 80));
        let resp = b"R 22 8 2";
        // B confirms on its response; the faked client FIN to A (made[1]) is lost.
        let f = tcp_in(
            B,
            b80,
            a2,
            TcpControl::Psh,
            B2.wrapping_add(1),
            Some(A2.wrapping_add(12)),
            W2,
            None,
            (T2[1], T1[3]),
            resp,
        );
        let (v, _, made) = r.send(B, f);
        assert_eq!(v, Verdict::Forward(CLIENT as u8));
        assert_eq!(made.len(), 2, "fake target ACK and fake client FIN");
        let tsb = T2[1].wrapping_add(T1[1].wrapping_sub(T2[0]));
        let s_end = N1.wrapping_add(17 + resp.len() as u32);
        // The client acknowledges, B closes (`Connection: close`), the client closes, B
        // acknowledges: both FINs acknowledged, the connection is in TIME-WAIT.
        let steps = [
            (
                CLIENT,
                (c, vip),
                TcpControl::None,
                CI.wrapping_add(22),
                s_end,
                (TC[2], tsb),
            ),
            (
                B,
                (b80, a2),
                TcpControl::Fin,
                B2.wrapping_add(9),
                A2.wrapping_add(12),
                (T2[1], T1[3]),
            ),
            (
                CLIENT,
                (c, vip),
                TcpControl::Fin,
                CI.wrapping_add(22),
                s_end.wrapping_add(1),
                (TC[2], tsb),
            ),
            (
                B,
                (b80, a2),
                TcpControl::None,
                B2.wrapping_add(10),
                A2.wrapping_add(13),
                (T2[1], T1[3]),
            ),
        ];
        for (h, (src, dst), ctl, seq, ack, ts) in steps {
            let f = tcp_in(h, src, dst, ctl, seq, Some(ack), WC, None, ts, &[]);
            let (v, _, _) = r.send(h, f);
            assert!(matches!(v, Verdict::Forward(_)), "{ctl:?} from {h}: {v:?}");
        }
        // At once a new connection from the same port, with a newer timestamp.
        let syn = tcp_in(
            CLIENT,
            c,
            vip,
            TcpControl::Syn,
            CI.wrapping_add(1_000_000),
            None,
            WC,
            Some(7),
            (TC[2].wrapping_add(50), 0),
            &[],
        );
        // The switch resets A's legs when the SYN ends the session (`reset_retiring`), or keeps
        // retiring A: either way A hears of it.
        let (v, _, made_now) = r.send(CLIENT, syn);
        let mut made = r.wait(3000);
        made.extend(made_now);
        let told = made.iter().any(|(p, f)| {
            let Some(Ok(t)) = parse_tcp(f) else {
                return false;
            };
            *p as usize == A
                && t.dst == a80.0
                && t.tcp.dst_port == 80
                && t.tcp.src_port == CPORT
                && (t.fin || t.rst)
        });
        assert!(
            told || matches!(v, Verdict::Drop(_)),
            "the SYN reopened the tuple ({v:?}, reopened {}) and A, still being retired, \
             was never told again",
            r.sw.counters().event_count(FlowEvent::Reopened)
        );
    }

    /// Found on the wire by knits-host/tests/translation.rs: a duplicate of the target's
    /// SYN-ACK on the new leg after the hand-off was translated and reached the client.
    #[test]
    fn a_late_syn_ack_of_the_new_leg_never_reaches_the_client() {
        let (mut r, _) = handed_off();
        let syn_ack = tcp_in(
            B,
            ep(B, 80),
            ep(A, APORT),
            TcpControl::Syn,
            B2,
            Some(A2.wrapping_add(1)),
            W2,
            Some(3),
            (T2[0], T1[2]),
            &[],
        );
        let (v, _, made) = r.send(B, syn_ack);
        assert_eq!(v, Verdict::Drop(DropReason::LegHandshake));
        assert!(made.is_empty());
    }

    #[test]
    fn rollback_resets() {
        let (mut r, _) = handed_off();
        let a2 = ep(A, APORT);
        let b80 = ep(B, 80);
        let mut f = tcp_in(
            B,
            b80,
            a2,
            TcpControl::Rst,
            B2.wrapping_add(1),
            None,
            0,
            None,
            (T2[1], T1[3]),
            &[],
        );
        // An RST carries no timestamp here (smoltcp's emit adds it; strip to a bare RST).
        f.truncate(34 + 20);
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_total_len(40);
            ip.fill_checksum();
            let mut t = TcpPacket::new_unchecked(&mut f[34..]);
            t.set_header_len(20);
            t.fill_checksum(&host_ip(B).into(), &host_ip(A).into());
        }
        let (v, _, made) = r.send(B, f);
        assert_eq!(
            v,
            Verdict::Local(knits_core::counters::LocalKind::TeardownAbsorbed)
        );
        assert_eq!(made.len(), 2);
        let want = tcp_out(
            A,
            b80,
            a2,
            B2.wrapping_add(1),
            A2.wrapping_add(12),
            false,
            true,
            0,
            None,
        );
        assert_frame("roll-back RST to A", &made[0], A, &want);
        let want = tcp_out(
            B,
            a2,
            b80,
            A2.wrapping_add(12),
            B2.wrapping_add(1),
            false,
            true,
            0,
            None,
        );
        assert_frame("roll-back RST to B", &made[1], B, &want);
        assert_eq!(r.sw.counters().handoffs_rolled_back, 1);
        assert_eq!(r.sw.session_count(), 0, "back to a plain NAT connection");
        // That RST to A was lost: A retransmits R2 on c2. The switch answers for the closed
        // leg (RFC 9293 3.10.7.1): an RST at A's rcv_nxt (its ACK field), acknowledging R2;
        // nothing reaches B.
        let f = tcp_in(
            A,
            a2,
            b80,
            TcpControl::Psh,
            A2.wrapping_add(1),
            Some(B2.wrapping_add(1)),
            W1C2,
            None,
            (T1[5], T2[0]),
            R2,
        );
        let (v, _, made) = r.send(A, f);
        assert_eq!(
            v,
            Verdict::Local(knits_core::counters::LocalKind::TeardownAbsorbed)
        );
        assert_eq!(made.len(), 1);
        let want = tcp_out(
            A,
            b80,
            a2,
            B2.wrapping_add(1),
            A2.wrapping_add(12),
            false,
            true,
            0,
            None,
        );
        assert_frame(
            "RST answering the old node on the rolled-back leg",
            &made[0],
            A,
            &want,
        );
    }
}

/// The old node's ACKs of the last client bytes and its duplicate ACKs are all lost: the faked
/// FIN at its last seen ACK is ignored, so a retry goes at the end of what it was delivered.
#[test]
fn regression_faked_fin_at_the_end_of_what_was_delivered() {
    let conns = vec![ConnSpec {
        start_ms: 21,
        reqs: reqs(&[
            (3, 0, false),
            (2, 30696, false),
            (1, 13161, true),
            (1, 35108, false),
            (3, 1460, true),
        ]),
        ..ConnSpec::default()
    }];
    run(regression(
        10663311309538500138,
        (382, 324, 0),
        conns,
        [772926164, 4269852760, 2616335014, 2265053739],
        [3167549670, 3003652454, 2784488620, 1906940610],
    ));
}

/// A duplicated roll-back RST is counted once; the hung target is rolled back three times.
#[test]
fn regression_hung_target_three_rollbacks() {
    let conns = vec![
        ConnSpec {
            start_ms: 6,
            reqs: reqs(&[(2, 1277, true)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 19,
            reqs: reqs(&[
                (3, 0, true),
                (2, 40788, true),
                (3, 0, true),
                (3, 1, true),
                (2, 21799, true),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        3353240908778568366,
        (0, 215, 0),
        conns,
        [3042860906, 325838363, 3822503455, 3886510461],
        [2719974233, 1857171294, 1794428651, 3050750441],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// A roll-back RST to the old node is lost while the target is hung: the switch answers the old
/// node's retransmissions on the dead leg with an RST, so it learns of the roll-back and serves.
#[test]
fn regression_rollback_rst_lost_with_a_hung_target() {
    let mut p = regression(
        8658180500338102478,
        (392, 60, 304),
        vec![ConnSpec {
            start_ms: 14,
            reqs: reqs(&[(3, 2920, true), (3, 0, true), (1, 2920, false)]),
            ..ConnSpec::default()
        }],
        [1575902548, 1015153485, 4074660267, 3988367367],
        [96915959, 3459175915, 1352097237, 858490041],
    );
    p.modes[3] = Mode::Mute;
    run(p);
    let conns = vec![
        ConnSpec {
            start_ms: 13,
            reqs: reqs(&[(3, 1, false), (1, 75041, false), (3, 36448, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 10,
            reqs: reqs(&[
                (1, 1460, true),
                (3, 1460, false),
                (2, 72048, false),
                (1, 65200, false),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        73398193433327730,
        (382, 0, 345),
        conns,
        [2716747419, 4244031387, 1870496340, 331533355],
        [3192775342, 120355464, 1168396269, 496575657],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// A node closes its new leg to a hung target right after a refusal: both ends stay half
/// closed (the hung node never closes), which is the hung node's doing, not the switch's.
#[test]
fn regression_refused_leg_to_a_hung_target() {
    let mut p = regression(
        10452091865657170166,
        (371, 0, 0),
        vec![ConnSpec {
            start_ms: 24,
            reqs: reqs(&[(2, 0, true), (3, 0, true), (2, 1, false), (2, 2835, true)]),
            ..ConnSpec::default()
        }],
        [1247577016, 3459373474, 1273294963, 163561861],
        [2090957966, 233051460, 381437973, 3592900906],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// Two nodes' requests carry the same counter; one hand-off is rolled back: the other node's
/// retransmitted request still gets its own answer (`accepted`), not `rolled_back`.
#[test]
fn regression_rollback_answer_is_per_node() {
    let conns = vec![
        ConnSpec {
            start_ms: 14,
            reqs: reqs(&[(2, 2920, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 35,
            reqs: reqs(&[
                (3, 2920, false),
                (3, 2920, true),
                (3, 0, true),
                (1, 2920, false),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        6578455471563085016,
        (311, 0, 0),
        conns,
        [3905183828, 2267613003, 303520373, 809657432],
        [4098314723, 3968215687, 3162998393, 1000938504],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// The roll-back RST to the target is lost while the target has nothing to send.
#[test]
fn regression_rollback_rst_lost_to_an_idle_target() {
    let conns = vec![
        ConnSpec {
            start_ms: 30,
            reqs: reqs(&[(1, 1, true)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 20,
            reqs: reqs(&[(2, 1460, true), (1, 0, true)]),
            ..ConnSpec::default()
        },
    ];
    run(regression(
        6513767423951122740,
        (374, 0, 0),
        conns,
        [1900428047, 514099141, 521655952, 1404281231],
        [3469898627, 130488326, 63123189, 3365869222],
    ));
}

/// A pipelined connection through three nodes under duplication and reordering: a duplicated
/// ACK of the old node's FIN must not reach it beyond what it sent.
#[test]
fn regression_pipelined_three_owners_duplicated() {
    run(regression(
        2800603809224719110,
        (0, 267, 480),
        vec![ConnSpec {
            start_ms: 2,
            reqs: reqs(&[(2, 0, false), (3, 0, false), (1, 2920, true)]),
            ..ConnSpec::default()
        }],
        [4155852664, 1122624270, 703924019, 4173971543],
        [3178226211, 2519543189, 93988925, 698532420],
    ));
}

/// An upload whose tail was lost on the way to the old node, with the client's FIN behind it:
/// the old node must be closed at its own rcv_nxt (past the splice point), not at the client's
/// FIN, which it never gets (the client resends the tail to the target).
#[test]
fn regression_upload_tail_lost_at_the_old_node() {
    let mut p = regression(
        657658598317238044,
        (135, 0, 446),
        vec![ConnSpec {
            start_ms: 36,
            reqs: vec![
                Req {
                    target: 3,
                    size: 80,
                    wait: true,
                    close: false,
                    body: 0,
                },
                Req {
                    target: 3,
                    size: 2920,
                    wait: true,
                    close: false,
                    body: 0,
                },
                Req {
                    target: 1,
                    size: 1,
                    wait: false,
                    close: false,
                    body: 19226,
                },
            ],
            lport: None,
            after: None,
            half_close: true,
        }],
        [1137656696, 1795110129, 3696644080, 2023203993],
        [3201721333, 1278148474, 196441879, 922755113],
    );
    p.client_sack = false;
    run(p);
}
