//! The node proxy: serves requests, and performs the hand-off steps for the ones another node
//! must serve.

use std::collections::HashMap;

use knits_core::wire::control::{self, Endpoint, Reply, ReplyCode, RequestRepr};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::client::ClientApp;
use crate::device::{Host, SockCfg, sock_state, tcp_socket};
use crate::net::{CONTROL_SRC_PORT, HOSTS, KEY, Key4, host_gw, host_ip, node_of};
use crate::params::{Mode, Params};
use crate::request::{Line, body_byte, parse_request, upload_byte};

#[derive(Debug)]
struct Resp {
    id: u32,
    hdr: Vec<u8>,
    total: u64,
    pos: u64,
}

impl Resp {
    pub(crate) fn new(id: u32, size: u32, node: usize) -> Resp {
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
pub(crate) enum St {
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
pub(crate) struct Conn {
    pub(crate) c1: SocketHandle,
    pub(crate) peer: IpEndpoint,
    from_node: bool,
    pub(crate) inbuf: Vec<u8>,
    pub(crate) consumed: u64,
    pub(crate) sent: u64,
    resp: Option<Resp>,
    force_local: bool,
    pub(crate) st: St,
    /// Sockets of this connection that must end closed (c1 and every c2 it opened).
    pub(crate) c2s: Vec<SocketHandle>,
    /// The 4-tuples (local, remote) of the new legs, in `c2s` order.
    legs: Vec<Key4>,
    handed_off: bool,
    rolled_back: u32,
    /// The request being answered asked the server to close afterwards.
    close_after: bool,
}

#[derive(Debug)]
pub(crate) struct NodeApp {
    pub(crate) me: usize,
    mode: Mode,
    listeners: Vec<SocketHandle>,
    pub(crate) conns: Vec<Conn>,
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
    pub(crate) served: Vec<u32>,
    pub(crate) muted: Vec<Key4>,
    /// Connections whose pure ACKs are dropped (Reset mode).
    pub(crate) silent_acks: Vec<Key4>,
    /// New legs this node saw reset by a roll-back (local, remote).
    pub(crate) rolled_back_legs: Vec<Key4>,
    /// New legs this node reset after the switch refused the hand-off (local, remote).
    pub(crate) refused_legs: Vec<Key4>,
    /// Connections from another node that were reset here (local, remote).
    pub(crate) reset_keys: Vec<Key4>,
    pub(crate) errors: Vec<String>,
    pub(crate) codes: Vec<ReplyCode>,
}

impl NodeApp {
    pub(crate) fn new(me: usize, p: &Params, host: &mut Host) -> NodeApp {
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

    pub(crate) fn step(&mut self, now: u64, host: &mut Host) {
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
                        tcp::State::Established => self.ask(c, c2, target, 0, now, host),
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
                            self.ask(c, c2, target, busy + 1, now, host);
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
                            self.request(c, c2, target, counter, busy, now, host);
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

    /// Asks the switch, under a new counter, to hand `c` off to `target` on the new leg `c2`;
    /// `busy` is how many `busy` replies came before.
    fn ask(
        &mut self,
        c: &mut Conn,
        c2: SocketHandle,
        target: u8,
        busy: u32,
        now: u64,
        host: &mut Host,
    ) {
        self.counter += 1;
        let counter = self.counter;
        self.request(c, c2, target, counter, busy, now, host);
    }

    /// Sends the request `counter` (again, when it is the one `c` waits on) and waits for its
    /// reply.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        c: &mut Conn,
        c2: SocketHandle,
        target: u8,
        counter: u64,
        busy: u32,
        now: u64,
        host: &mut Host,
    ) {
        self.send_request(c, c2, target, counter, host);
        c.st = St::Requesting {
            c2,
            target,
            counter,
            last_tx: now,
            busy,
        };
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

pub(crate) enum App {
    Client(ClientApp),
    Node(Box<NodeApp>),
}
